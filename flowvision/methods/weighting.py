"""FLOW weights as a pure function of per-sample losses (no models, no data).

    w_i = exp(-f_i(θ*) / τ)          f_i(θ*): loss of training sample i under the pre-trained model

τ comes from a rule (a number, ``median``, a percentile ``pNN``, ``paper``: ``core.tau``).

Two normalisations of the weighted batch loss:
  ``mean``  (default, the official code): mean_i(w_i · ℓ_i) over the batch. Small weights shrink the
            effective learning rate as well as re-weighting samples.
  ``sum``   Σ w_i ℓ_i / Σ w_i: a weighted average; only the relative weights matter, so the step size
            stays that of plain fine-tuning. Computed as a softmax of -loss/τ, which stays finite when
            every weight in the batch underflows to 0.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.errors import UserError

if TYPE_CHECKING:  # torch is imported where tensors are used: the dry run plans with this module
    import torch

# With mean(w·ℓ), weights this small scale every step down by as much: fine-tuning would not move.
MIN_USEFUL_WEIGHT = 1e-6


def check_weights(weights: torch.Tensor, losses: torch.Tensor, tau: float, normalize: str) -> None:
    """A UserError when the weights would make fine-tuning silently meaningless: every weight
    below MIN_USEFUL_WEIGHT under mean normalisation (under 'sum' only relative weights matter)."""
    if normalize == "mean" and float(weights.max()) < MIN_USEFUL_WEIGHT:
        raise UserError(f"τ = {tau:.3g} makes every FLOW weight < {MIN_USEFUL_WEIGHT:g} (the smallest pre-trained loss "
                        f"is {float(losses.min()):.3g}): fine-tuning would not move; use a larger τ, 'median', "
                        "or --set normalize=sum")


def applied_weighting(cfg) -> str:
    """The weighting that runs: the paper protocol computes FLOW weights online, as the official code
    (the probe model's loss on every augmented batch); otherwise ``cfg.weighting``."""
    return "flow-online" if cfg.weighting == "flow" and cfg.protocol == "paper" else cfg.weighting


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
