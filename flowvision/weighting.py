"""FLOW weights as a pure function of per-sample losses (no models, no data).

    w_i = exp(-f_i(θ*) / τ)          f_i(θ*): loss of training sample i under the pre-trained model

τ is a positive number, ``paper`` (the official run script's number for the model and data set),
``median`` (the paper's and the official code's choice: the median of the
pre-trained losses) or a percentile ``pNN`` (``p25``: the 25th percentile). Percentiles use linear
interpolation, so ``median`` == ``p50`` == the mean of the two middle losses when N is even.

Two normalisations of the weighted batch loss:
  ``mean``  (default, the official code): mean_i(w_i · ℓ_i) over the batch. Small weights shrink the
            effective learning rate as well as re-weighting samples.
  ``sum``   Σ w_i ℓ_i / Σ w_i: a weighted average; only the relative weights matter, so the step size
            stays that of plain fine-tuning. Computed as a softmax of -loss/τ, which stays finite when
            every weight in the batch underflows to 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import UserError, did_you_mean

if TYPE_CHECKING:  # torch is imported where tensors are used: parsing τ (a CLI check) stays instant
    import torch

NORMALIZATIONS = ("mean", "sum")
MIN_TAU = 1e-6
# With mean(w·ℓ), weights this small scale every step down by as much: fine-tuning would not move.
MIN_USEFUL_WEIGHT = 1e-6


def check_weights(weights: torch.Tensor, losses: torch.Tensor, tau: float, normalize: str) -> None:
    """A UserError when the weights would make fine-tuning silently meaningless: every weight
    below MIN_USEFUL_WEIGHT under mean normalisation (under 'sum' only relative weights matter)."""
    if normalize == "mean" and float(weights.max()) < MIN_USEFUL_WEIGHT:
        raise UserError(f"τ = {tau:.3g} makes every FLOW weight < {MIN_USEFUL_WEIGHT:g} (the smallest pre-trained loss "
                        f"is {float(losses.min()):.3g}): fine-tuning would not move; use a larger τ, 'median', "
                        "or --set normalize=sum")


@dataclass(frozen=True)
class TauRule:
    """How τ is chosen: ``kind`` is 'value' (τ = value) or 'quantile' (τ = quantile `value` of the losses)."""

    kind: str
    value: float
    text: str

    def resolve(self, losses: torch.Tensor) -> float:
        """losses: (N,) pre-trained per-sample losses -> τ > 0."""
        import torch

        if self.kind == "value":
            return self.value
        tau = float(torch.quantile(losses.double().flatten(), self.value))
        if not tau > 0:
            raise UserError(
                f"τ rule '{self.text}' gives τ = {tau:g} (the pre-trained losses are ~0 there); "
                "use a higher percentile or a number, e.g. --tau p75 or --tau 0.1")
        return tau


def applied_weighting(cfg) -> str:
    """The weighting that runs: the paper protocol computes FLOW weights online, as the official code
    (the probe model's loss on every augmented batch); otherwise ``cfg.weighting``."""
    return "flow-online" if cfg.weighting == "flow" and cfg.protocol == "paper" else cfg.weighting


FAR_FROM_PAPER_TAU = 3.0  # a τ beyond this factor of the official one (either way) is another recipe


def far_from_paper_tau(tau: float | None, paper_tau: float | None, dataset: str) -> str | None:
    """One line when ``tau`` is more than FAR_FROM_PAPER_TAU times the official run script's τ for the
    data set (``paper_tau``), or less than its inverse: the run then follows the official recipe in
    everything but its weighting. None when it is close, or no official τ is known."""
    if tau is None or paper_tau is None or 1 / FAR_FROM_PAPER_TAU <= tau / paper_tau <= FAR_FROM_PAPER_TAU:
        return None
    return (f"τ = {tau:.4g} is {tau / paper_tau:.2g}× the official τ for {dataset} ({paper_tau:.4g}, the official "
            f"run script's): its FLOW weights differ from the official recipe's")


def is_paper_tau(spec) -> bool:
    """Whether a τ rule is 'paper' (the official run script's number, from the config's paper_tau)."""
    return str(spec).strip().lower() == "paper"


def parse_tau(spec, paper_tau: float | None = None) -> TauRule:
    """'median' | 'pNN' (0 < NN < 100) | a positive number | 'paper' (= ``paper_tau``, the rule's text
    stays 'paper' so records say where the number came from) -> TauRule; anything else is a UserError."""
    text = str(spec).strip().lower()
    if is_paper_tau(text):
        if paper_tau is None:
            raise UserError("--tau paper: no official τ is known for this model and data set; "
                            "use a number, 'median' or a percentile like p25")
        return TauRule("value", parse_tau(paper_tau).value, "paper")
    if text == "median":
        return TauRule("quantile", 0.5, "median")
    if text.startswith("p"):
        try:
            pct = float(text[1:])
        except ValueError:
            pct = float("nan")
        if not 0 < pct < 100:
            raise UserError(f"--tau {spec!s}: a percentile is p1..p99, e.g. p25; or use 'median' or a number > 0")
        return TauRule("quantile", pct / 100.0, text)
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"--tau {spec!s} is not understood{did_you_mean(text, ('median', 'paper'))}: use a number > 0, "
                        "'median' or a percentile like p25") from None
    if not (value > 0 and math.isfinite(value)):
        raise UserError(f"--tau {spec!s}: τ must be a finite number > 0 (or 'median', or a percentile like p25)")
    if value < MIN_TAU:
        raise UserError(f"--tau {spec!s}: below {MIN_TAU:g}, exp(-loss/τ) is 0 for every loss above ~1e-4, so no "
                        "sample would count; the official τ values are 0.02–0.66")
    return TauRule("value", value, text)


def flow_weights(losses: torch.Tensor, tau: float) -> torch.Tensor:
    """losses: (N,) -> weights (N,) = exp(-losses / τ), in (0, 1] for non-negative losses."""
    return (-losses / tau).exp()


def weighted_loss(per_sample: torch.Tensor, weights: torch.Tensor | None, normalize: str = "mean",
                  ref_losses: torch.Tensor | None = None, tau: float | None = None) -> torch.Tensor:
    """Reduce a batch of per-sample losses (B,) to a scalar.

    weights: (B,) FLOW weights, or None for plain (uniform) mean.
    For ``sum`` normalisation pass ``ref_losses`` (B,) and ``tau`` instead of (or as well as) weights:
    Σ w ℓ / Σ w is computed as Σ softmax(-ref/τ) ℓ, exact and finite even when all w underflow.
    """
    if weights is None and ref_losses is None:
        return per_sample.mean()
    if normalize == "mean":
        if weights is None:
            weights = flow_weights(ref_losses, tau)
        return (weights * per_sample).mean()
    if normalize == "sum":
        if ref_losses is not None:
            p = (-ref_losses / tau).softmax(dim=0)
        else:
            p = weights / weights.sum()
        return (p * per_sample).sum()
    raise ValueError(f"unknown normalisation {normalize!r}")


def weight_stats(weights: torch.Tensor) -> dict:
    """Summary of a weight vector (N,): mean, std, min, max, median and the effective sample size
    fraction ess_frac = (Σw)² / (N Σw²) — 1 for uniform weights, small when few samples dominate."""
    w = weights.double()
    n = w.numel()
    ess = float(w.sum() ** 2 / (n * (w ** 2).sum())) if float((w ** 2).sum()) > 0 else 0.0
    return {
        "mean": float(w.mean()), "std": float(w.std()) if n > 1 else 0.0,
        "min": float(w.min()), "max": float(w.max()), "median": float(w.quantile(0.5)),
        "ess_frac": ess,
    }
