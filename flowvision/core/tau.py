"""τ, the temperature of FLOW's weights w_i = exp(-f_i(θ*) / τ), as a person writes it (``--tau``): a
positive number, ``paper`` (the official run script's number for the model and data set), ``median`` (the
paper's and the official code's choice: the median of the pre-trained losses) or a percentile ``pNN``
(``p25``: the 25th percentile). Percentiles use linear interpolation, so ``median`` == ``p50`` == the mean
of the two middle losses when N is even.

The rule's syntax is checked with the config (it is a config value); resolving a quantile rule needs the
losses (``TauRule.resolve``). Importing this module does not import torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import UserError, did_you_mean

if TYPE_CHECKING:
    import torch

MIN_TAU = 1e-6


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
