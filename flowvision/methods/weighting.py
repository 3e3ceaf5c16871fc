"""FLOW weights as a pure function of per-sample losses (no models, no data).

    w_i = exp(-f_i(θ*) / τ)          f_i(θ*): loss of training sample i under the pre-trained model

τ comes from a rule (a number, ``median``, a percentile ``pNN``, ``paper``: ``core.tau``); ``flow_weights``
applies it and returns τ beside the weights. ``weighted_loss`` is a batch's FLOW loss from its logits;
``reduce_losses`` the same reduction of per-sample losses the training loop has already computed. These are the
functions ``flowvision.flow_weights`` and ``flowvision.weighted_loss`` name, and the stages' own.

Two normalisations of the weighted batch loss:
  ``mean``  (default, the official code): mean_i(w_i · ℓ_i) over the batch. Small weights shrink the
            effective learning rate as well as re-weighting samples.
  ``sum``   Σ w_i ℓ_i / Σ w_i: a weighted average; only the relative weights matter, so the step size
            stays that of plain fine-tuning. Computed as a softmax of -loss/τ, which stays finite when
            every weight in the batch underflows to 0.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, Optional, Union

from ..core.errors import UserError
from ..core.tau import TauRule, parse_tau

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


class FlowWeights(NamedTuple):
    """``flow_weights``'s answer: ``weights, tau = flow_weights(losses)``."""

    weights: torch.Tensor  # (N,) exp(-losses / τ), the losses' dtype and device, in (0, 1] for losses ≥ 0
    tau: float             # τ in the losses' unit (nats), resolved from its rule


def flow_weights(losses: torch.Tensor, tau: Union[float, str, TauRule] = "median") -> FlowWeights:
    """FLOW's weights w_i = exp(-f_i / τ) of per-sample losses, and τ.

    losses: (N,) pre-trained per-sample losses in nats (``per_sample_losses``), one per training sample by
    index. tau: a number > 0 (in nats), ``"median"`` (the paper's choice: the median of the losses, by linear
    interpolation, so the mean of the two middle losses when N is even) or a percentile ``"pNN"`` (``"p25"``),
    the rules of ``flowvision finetune --tau`` (``core.tau``). -> ``FlowWeights(weights (N,), tau)``: the
    weights in (0, 1] (1 for a zero loss, 1/e at a loss of τ) and the τ they used. A rule that gives τ ≤ 0
    (most losses 0) is a UserError."""
    rule = tau if isinstance(tau, TauRule) else parse_tau(tau)
    value = rule.resolve(losses)
    return FlowWeights((-losses / value).exp(), value)


def weighted_loss(logits: torch.Tensor, targets: torch.Tensor, weights: Optional[torch.Tensor],
                  normalize: str = "mean") -> torch.Tensor:
    """A batch's FLOW loss: the cross-entropy of each sample weighted by its FLOW weight, reduced to a scalar.

    logits: (B, C) in any float dtype (the cross-entropy is computed in fp32, as the training loop does, so
    bf16 autocast logits lose nothing here); targets: (B,) int64 class indices, or (B, C) class probabilities
    (mixup's soft targets); weights: (B,) the batch's weights (``flow_weights(...).weights[indices]``), or
    None for the plain mean; on any device (they are moved to the logits'). normalize: ``"mean"`` (the official
    code's): mean_b(w_b · ℓ_b), so small weights also shrink the step; ``"sum"``: Σ w_b ℓ_b / Σ w_b, a weighted
    average (NaN if every weight of the batch is 0). -> a 0-dim fp32 tensor in nats, differentiable in ``logits``."""
    import torch.nn.functional as F

    per_sample = F.cross_entropy(logits.float(), targets, reduction="none")
    if weights is not None:
        weights = weights.to(per_sample.device, per_sample.dtype, non_blocking=True)
    return reduce_losses(per_sample, weights, normalize)


def reduce_losses(per_sample: torch.Tensor, weights: Optional[torch.Tensor], normalize: str = "mean",
                  ref_losses: Optional[torch.Tensor] = None, tau: Optional[float] = None) -> torch.Tensor:
    """Reduce a batch of per-sample losses (B,) to a scalar (``weighted_loss`` from its logits).

    weights: (B,) FLOW weights, or None for plain (uniform) mean.
    For ``sum`` normalisation pass ``ref_losses`` (B,) and ``tau`` instead of (or as well as) weights:
    Σ w ℓ / Σ w is computed as Σ softmax(-ref/τ) ℓ, exact and finite even when all w underflow.
    """
    if weights is None and ref_losses is None:
        return per_sample.mean()
    if normalize == "mean":
        if weights is None:
            weights = (-ref_losses / tau).exp()
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
