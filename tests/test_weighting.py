import math

import pytest
import torch

from flowvision.core.errors import UserError
from flowvision.core.tau import parse_tau
from flowvision.methods.weighting import flow_weights, reduce_losses, weight_stats, weighted_loss


def test_weights_match_hand_computed_values():
    losses = torch.tensor([0.0, math.log(2), math.log(4)])
    assert torch.allclose(flow_weights(losses, 1.0).weights, torch.tensor([1.0, 0.5, 0.25]))
    assert torch.allclose(flow_weights(losses, 2.0).weights, torch.tensor([1.0, 2 ** -0.5, 0.5]))
    # smaller τ sharpens: the hard sample's weight falls from 0.25 to 0.0625
    assert flow_weights(losses, 0.5).weights[2].item() == pytest.approx(0.0625)


def test_flow_weights_resolve_the_clis_tau_rules_and_say_which_tau():
    losses = torch.tensor([1.0, 2.0, 3.0, 10.0])
    weights, tau = flow_weights(losses)  # median: the mean of the two middle losses, not torch.median's lower one
    assert tau == pytest.approx(2.5) and torch.allclose(weights, torch.exp(-losses / 2.5))
    assert flow_weights(losses, "p25").tau == pytest.approx(1.75) and flow_weights(losses, 0.5).tau == 0.5
    by_rule = flow_weights(losses, parse_tau("p25"))  # the stages pass the parsed rule
    assert by_rule.tau == flow_weights(losses, "p25").tau and torch.equal(by_rule.weights, flow_weights(losses, "p25").weights)
    with pytest.raises(UserError, match="tau"):
        flow_weights(losses, "paper")  # the official τ needs a model and a data set: the CLI's rule only


def test_tau_rules():
    losses = torch.tensor([1.0, 2.0, 3.0, 10.0])
    assert parse_tau("median").resolve(losses) == pytest.approx(2.5)  # mean of the two middle losses
    assert parse_tau("p50").resolve(losses) == pytest.approx(2.5)
    assert parse_tau("p25").resolve(losses) == pytest.approx(1.75)   # linear interpolation at 0.75
    assert parse_tau("0.1041").resolve(losses) == pytest.approx(0.1041)
    assert parse_tau(2).resolve(losses) == 2.0


@pytest.mark.parametrize("bad", ["0", "-1", "abc", "p0", "p100", "pxx", "nan", "inf", ""])
def test_bad_tau_is_a_user_error(bad):
    with pytest.raises(UserError, match="tau"):
        parse_tau(bad)


def test_quantile_tau_of_zero_losses_is_refused():
    with pytest.raises(UserError, match="τ = 0"):
        parse_tau("median").resolve(torch.zeros(5))


def test_both_normalisations_by_hand():
    per_sample = torch.tensor([1.0, 2.0, 3.0])
    w = torch.tensor([1.0, 0.5, 0.25])
    assert reduce_losses(per_sample, w, "mean").item() == pytest.approx((1 + 1 + 0.75) / 3)
    assert reduce_losses(per_sample, w, "sum").item() == pytest.approx(2.75 / 1.75)
    assert reduce_losses(per_sample, None).item() == pytest.approx(2.0)
    # from reference losses and τ: the same numbers
    ref = torch.tensor([0.0, math.log(2), math.log(4)])
    assert reduce_losses(per_sample, None, "mean", ref_losses=ref, tau=1.0).item() == pytest.approx(2.75 / 3)
    assert reduce_losses(per_sample, None, "sum", ref_losses=ref, tau=1.0).item() == pytest.approx(2.75 / 1.75)


def test_weighted_loss_from_logits_is_the_weighted_cross_entropy_in_fp32():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.bfloat16)
    y, w = torch.tensor([0, 0, 1]), torch.tensor([1.0, 0.5, 0.25], dtype=torch.float64)
    ce = torch.nn.functional.cross_entropy(logits.float(), y, reduction="none")
    for normalize, expected in (("mean", (w.float() * ce).mean()), ("sum", (w.float() * ce).sum() / w.sum().float())):
        value = weighted_loss(logits, y, w, normalize)
        assert value.dtype == torch.float32 and value.item() == pytest.approx(expected.item(), rel=1e-6)
    assert weighted_loss(logits, y, None).item() == pytest.approx(ce.mean().item())


def test_sum_normalisation_stays_finite_when_every_weight_underflows():
    ref = torch.tensor([5000.0, 5001.0])
    assert float(flow_weights(ref, 1.0).weights.sum()) == 0.0
    value = reduce_losses(torch.tensor([1.0, 3.0]), None, "sum", ref_losses=ref, tau=1.0)
    assert torch.isfinite(value) and value.item() == pytest.approx((1 + 3 / math.e) / (1 + 1 / math.e))


def test_weight_stats():
    s = weight_stats(torch.ones(10))
    assert s["ess_frac"] == pytest.approx(1.0) and s["std"] == 0.0
    s = weight_stats(torch.tensor([1.0, 0.0, 0.0, 0.0]))
    assert s["ess_frac"] == pytest.approx(0.25) and s["max"] == 1.0 and s["median"] == 0.0
