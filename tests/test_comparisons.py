"""Baselines on equal terms: the ℓ2-SP/EWC pull as a proximal step (stable at any lr·λ), a FLOW combination's
pull and distillation scaled as its weighted task loss, LwF's `training` student starting where its teacher is,
WiSE-FT's all-keys interpolation, and settings chosen on held-out images (val_split)."""
import copy
import math

import pytest
import torch

from flowvision.core import config, knobs
from flowvision.data.base import hold_out
from flowvision.data.synthetic import load_synthetic_task
from flowvision.methods import models
from flowvision.methods.regularizers import EWC, L2SP, LwF
from flowvision.methods.train import Schedule, StaticWeights, train
from flowvision.stages.run import run as run_one


@pytest.fixture(scope="module")
def task():
    return load_synthetic_task("gratings", image_size=16, n_train=32, n_test=16, augment=True)


def _pair(lam: float, pull: str, kind=L2SP):
    torch.manual_seed(0)
    model = models.create("test_resnet", 8)
    reference = {k: v + 0.1 for k, v in models.clone_state(model).items()}
    fisher = {k: torch.rand_like(v) for k, v in model.named_parameters()}
    reg = kind(model, reference, lam, pull=pull) if kind is L2SP else kind(model, reference, fisher, lam, pull=pull)
    return model, reg


@pytest.mark.parametrize("kind", [L2SP, EWC])
def test_the_proximal_pull_is_the_gradient_pull_to_first_order_and_stable_at_any_lr_lambda(kind):
    """One step of the pull alone (no task loss, plain SGD): the gradient form moves θ − θ_source by (1 − lr·λ·w),
    the proximal one by 1/(1 + lr·λ·w). At lr·λ = 1e-3 the two agree to O((lr·λ)²); at lr·λ = 5 the gradient
    form overshoots the source by 4× (and diverges step by step), the proximal one lands at a sixth of the way."""
    for strength, close in ((1e-3, True), (5.0, False)):
        (a, grad), (_, prox) = _pair(1.0, "gradient", kind), _pair(1.0, "proximal", kind)
        opt = torch.optim.SGD(a.parameters(), lr=strength)
        opt.zero_grad()
        grad().backward()
        opt.step()
        prox.proximal(strength)
        gaps = [((p - ref).abs().max().item(), (q - ref2).abs().max().item())
                for (p, ref), (q, ref2) in zip(grad.pairs, prox.pairs)]
        if close:
            assert all(math.isclose(g, h, rel_tol=1e-3, abs_tol=1e-7) for g, h in gaps)
        else:
            assert max(g for g, _ in gaps) > 0.1 * 3.9 and max(h for _, h in gaps) <= 0.1 / 1 + 1e-6
            assert all(h <= 0.1 for _, h in gaps)  # never past the source, never further than it was


def test_a_pull_at_lambda_zero_leaves_the_weights_bit_for_bit():
    model, reg = _pair(0.0, "proximal", EWC)
    before = copy.deepcopy(model.state_dict())
    reg.proximal(0.05)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.slow  # two EWC runs of 3 epochs and a Fisher pass: ~15 s on 2 shared cores
def test_an_absurd_ewc_lambda_trains_with_the_proximal_pull_and_diverges_with_the_gradient_one(tiny):
    """lr 0.05 with λ = 10⁶ (the stiffest entry's lr·λ = 5·10⁴): the gradient pull multiplies that entry's distance
    from the source by about −5·10⁴ a step and the loss overflows in the third epoch; the proximal pull (the default)
    keeps it at the source and trains through. (At the demo's size λ = 100, the frontier's largest, takes more steps
    than a test can afford to diverge; `flowvision frontier --set lr=0.05` runs it.)"""
    from flowvision.core.errors import Diverged

    sets = dict(tiny, lr=0.05, ewc_lambda=1e6, ewc_samples=6, epochs=3)
    done = run_one(config.resolve("gratings", "demo", "ewc", sets))
    assert done["pull"] == "proximal" and 0 <= done["target_acc"] <= 1
    with pytest.raises(Diverged, match="the gradient pull is unstable past lr·λ ≈ 3.8: --set pull=proximal"):
        run_one(config.resolve("gratings", "demo", "ewc", dict(sets, pull="gradient")))


@pytest.mark.parametrize("pull", ["gradient", "proximal"])
def test_flow_with_a_pull_scales_it_as_its_weighted_task_loss(task, pull):
    """With every FLOW weight w (constant pre-trained losses), mean(w·ℓ) is w·mean(ℓ): FLOW+ℓ2-SP with the pull
    scaled alike (term_scale=weights) trains exactly as plain ℓ2-SP at learning rate lr·w (no weight decay: it is
    not the loss's), the pull included; unscaled it would weigh the pull 1/w times more."""
    torch.manual_seed(1)
    base = models.create("test_resnet", 8)
    reference = {k: v + 0.05 for k, v in models.clone_state(base).items()}
    n, tau, c = len(task.train), 0.5, 0.3
    w = math.exp(-c / tau)
    runs = []
    for lr, weigher in ((0.05, StaticWeights(torch.full((n,), c), tau)), (0.05 * w, None)):
        m = copy.deepcopy(base)
        reg = L2SP(m, reference, 2.0, pull=pull)
        train(m, task.train, Schedule(epochs=1, lr=lr, batch_size=16, weight_decay=0.0), seed=4, weigher=weigher,
              regularizer=reg, scale_terms=True)
        runs.append(m)
    for (k, a), b in zip(runs[0].state_dict().items(), runs[1].state_dict().values()):
        if a.is_floating_point():
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), k


def test_which_runs_read_term_scale_pull_and_wise_keys():
    for method, reads in (("flow", ()), ("l2sp", ("pull",)), ("flow+l2sp", ("pull", "term_scale")),
                          ("flow+lwf", ("term_scale",)), ("lwf", ()), ("wiseft", ("wise_keys",)), ("ft", ())):
        cfg = config.resolve("gratings", "demo", method)
        assert tuple(f for f in ("pull", "term_scale", "wise_keys") if knobs.used(f, cfg)) == reads, method


def test_lwfs_training_student_starts_where_its_teacher_is(task):
    """Before the first step the `training` student (the network's own BatchNorms in training mode) gives the
    teacher's source outputs: the teacher sees the same batch statistics, so the distillation's gradient is zero
    (it was not: the teacher used its running statistics), and the teacher's running statistics stay put."""
    torch.manual_seed(2)
    source = models.create("test_resnet", 10)
    student = models.with_new_head(source, 8, 0)
    lwf = LwF(copy.deepcopy(source), 1.0, 2.0, parts="training")
    running = {k: v.clone() for k, v in lwf.source.state_dict().items() if "running" in k}
    net = lwf.student(student).train()
    x = torch.stack([task.train_eval[i][0] for i in range(8)])
    _, source_logits = net(x)
    lwf(x, source_logits).backward()
    grads = [p.grad.abs().max().item() for p in student.parameters() if p.grad is not None]
    assert grads and max(grads) < 1e-6
    assert all(torch.equal(v, lwf.source.state_dict()[k]) for k, v in running.items())
    assert not lwf.source.training  # the teacher is back in eval mode


def test_wise_keys_all_interpolates_the_batchnorms_too():
    torch.manual_seed(3)
    source = models.create("test_resnet", 8)
    tuned = copy.deepcopy(source)
    with torch.no_grad():
        for k, v in tuned.state_dict().items():
            if v.is_floating_point():
                v.add_(1.0)
    bn = next(k for k in source.state_dict() if k.endswith("running_mean"))
    shared = models.interpolate_shared(source, tuned, 0.5, "auto").state_dict()[bn]
    every = models.interpolate_shared(source, tuned, 0.5, "head").state_dict()[bn]
    assert torch.equal(shared, tuned.state_dict()[bn])  # the fine-tuned BatchNorm statistics kept
    assert torch.allclose(every, source.state_dict()[bn] + 0.5)


def test_held_out_images_are_seeded_disjoint_and_never_trained_on(task):
    held = hold_out(task, 0.25, seed=5)
    assert (len(held.train), len(held.val)) == (24, 8) and len(held.train_eval) == 24
    again = hold_out(task, 0.25, seed=5)
    assert held.val.indices == again.val.indices and hold_out(task, 0.25, seed=6).val.indices != held.val.indices
    assert not set(held.val.indices) & set(held.train.indices) and held.train.indices == held.train_eval.indices
    assert [held.train[i][2] for i in range(3)] == [0, 1, 2]  # the training samples renumbered: weights index them
    assert task.noisy is None or len(held.noisy) == 24


def test_a_run_with_val_split_records_what_it_is_chosen_on_apart_from_what_it_reports(tiny):
    r = run_one(config.resolve("gratings", "demo", "flow", dict(tiny, val_split=0.25)))
    sel = r["selection"]
    assert r["val_split"] == 0.25 and sel["n_val"] == 12 and r["target_data"]["n_train"] == 36
    assert sel["n_select"] + sel["n_report"] == r["source_eval_images"] and abs(sel["n_select"] - sel["n_report"]) <= 1
    for key in ("target_val", "source_select_after", "source_report_after", "source_select_before", "agreement_select"):
        assert 0 <= sel[key] <= 1, key
    plain = run_one(config.resolve("gratings", "demo", "flow", tiny))
    assert plain["selection"] is None and plain["stage_keys"]["probe"] != r["stage_keys"]["probe"]
