"""Appendix B: head and every BatchNorm are task-specific; forgetting uses the source's, exactly."""
import pytest
import torch

from flowvision.methods import models


def _randomise(model, seed):
    """Give every tensor (running statistics included) distinct random values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.1)
            else:
                t.fill_(int(torch.randint(1, 100, (1,), generator=g)))
    return model


def test_task_specific_keys_of_a_timm_resnet():
    m = models.create("resnet18", 10)
    keys = models.task_specific_keys(m)
    for k in ("fc.weight", "fc.bias", "bn1.weight", "bn1.running_mean", "bn1.running_var",
              "bn1.num_batches_tracked", "layer1.0.bn2.bias", "layer2.0.downsample.1.weight",
              "layer4.1.bn1.running_var"):
        assert k in keys, k
    for k in ("conv1.weight", "layer1.0.conv1.weight", "layer2.0.downsample.0.weight", "layer4.1.conv2.weight"):
        assert k not in keys, k
    n_bn = sum(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules())
    assert len(keys) == 2 + 5 * n_bn


def test_new_head_keeps_backbone_and_is_seeded():
    source = _randomise(models.create("resnet18", 10), 0)
    a, b = models.with_new_head(source, 3, seed=5), models.with_new_head(source, 3, seed=5)
    assert torch.equal(a.fc.weight, b.fc.weight) and a.fc.out_features == 3
    assert not torch.equal(a.fc.weight, models.with_new_head(source, 3, seed=6).fc.weight)
    assert torch.equal(a.layer3[0].conv1.weight, source.layer3[0].conv1.weight)
    assert torch.equal(a.bn1.running_mean, source.bn1.running_mean)


def test_wiseft_alpha_one_is_finetuned_and_alpha_zero_is_pretrained_exactly():
    source = _randomise(models.create("resnet18", 10), 0)
    finetuned = _randomise(models.with_new_head(source, 4, seed=0), 1)
    specific = models.task_specific_keys(finetuned)
    one, zero, half = (models.interpolate_shared(source, finetuned, a) for a in (1.0, 0.0, 0.5))
    src, ft = source.state_dict(), finetuned.state_dict()
    for key in ft:
        assert torch.equal(one.state_dict()[key], ft[key]), key
        if key in specific:
            assert torch.equal(zero.state_dict()[key], ft[key]), key  # head/BN stay the target's
        else:
            assert torch.equal(zero.state_dict()[key], src[key]), key
            assert torch.allclose(half.state_dict()[key], (src[key] + ft[key]) / 2), key


# ---- the task-specific rule per timm family ------------------------------------------------------------
# Expected task-specific keys written as the official code writes its rule, by key name, for each
# family: an independent statement of what the module-type split must find.
FAMILY_CASES = [
    # (architecture, rule asked, rule applied, key-name pattern of the task-specific tensors)
    ("resnet18", "auto", "head+bn", r"^fc\.|bn|downsample\.1\."),       # the official code's rule
    ("test_efficientnet", "auto", "head+bn", r"^classifier\.|(^|\.)bn\d\."),  # BatchNormAct2d
    ("regnetx_002", "auto", "head+bn", r"^head\.fc\.|\.bn\."),
    ("mobilenetv3_small_050", "auto", "head+bn", r"^classifier\.|(^|\.)bn\d\."),
    ("test_convnext", "auto", "head", r"^head\.fc\."),
    ("test_convnext", "head+norms", "head+norms", r"^head\.fc\.|(^|\.)norm\.|^stem\.1\.|downsample\.0\."),
    ("test_vit", "auto", "head", r"^head\."),
    ("test_vit", "head+norms", "head+norms", r"^head\.|(^|\.)norm\d?\."),
    ("resnet18", "head", "head", r"^fc\."),
]


@pytest.mark.parametrize("arch,rule,applied,pattern", FAMILY_CASES)
def test_task_specific_rule_per_family_and_the_forgetting_model_tensor_by_tensor(arch, rule, applied, pattern):
    import re

    import flowvision

    source = _randomise(models.create(arch, 10), 0)
    before = models.clone_state(source)
    expected = {k for k in before if re.search(pattern, k)}
    assert models.family_rule(source, rule) == applied
    assert models.task_specific_keys(source, rule) == expected
    assert len(expected) < len(before)

    finetuned = _randomise(models.with_new_head(source, 4, seed=0), 1)
    measured = flowvision.measured_model(finetuned, source, rule)  # the public name
    ft = finetuned.state_dict()
    for key, value in measured.state_dict().items():
        if key in expected:
            assert torch.equal(value, before[key]), key
        else:
            assert torch.equal(value, ft[key]) and not torch.equal(value, before[key]), key
    assert measured.get_classifier().out_features == 10


def test_every_declared_family_has_a_case_above():
    """``flowvision.measured_model`` is Appendix B for every family ``models.FAMILIES`` names: each is checked."""
    import timm

    checked = {type(timm.create_model(arch, num_classes=2)).__name__ for arch, rule, _, _ in FAMILY_CASES
               if rule == "auto"}
    assert set(models.FAMILIES) <= checked, sorted(set(models.FAMILIES) - checked)


def test_a_family_not_declared_follows_its_norm_layers():
    from torch import nn

    class Plain(nn.Module):  # a classifier timm does not know: no family entry
        def __init__(self, norm):
            super().__init__()
            self.body, self.norm, self.fc = nn.Linear(4, 4), norm, nn.Linear(4, 3)

        def get_classifier(self):
            return self.fc

    assert models.family_rule(Plain(nn.BatchNorm1d(4))) == "head+bn"
    assert models.family_rule(Plain(nn.LayerNorm(4))) == "head"
    assert models.task_specific_keys(Plain(nn.LayerNorm(4)), "head+norms") == {
        "fc.weight", "fc.bias", "norm.weight", "norm.bias"}


def test_the_demo_model_is_one_model_whatever_the_callers_thread_count(tmp_path, tiny):
    """The CPU's rounding depends on the torch thread count (this tiny model, trained on 1 and on 3
    threads, ends with different weights), so the demo model trains on DEMO_THREADS whatever the caller
    runs with: one recipe key, one model, and the caller's count is back afterwards."""
    import hashlib

    import torch

    from flowvision.core import config
    from flowvision.core.hardware import CPU, torch_threads
    from flowvision.methods.source import demo_source

    digests = []
    for n in (1, 3):
        cfg = config.resolve("gratings", "demo", "flow", dict(tiny, demo_epochs=1, demo_n_train=32,
                                                              cache_dir=str(tmp_path / f"cache-{n}")))
        with torch_threads(n):
            model = demo_source(cfg, CPU).model
            assert torch.get_num_threads() == n
        digests.append(hashlib.sha256(b"".join(t.numpy().tobytes() for t in model.state_dict().values())).digest())
    assert digests[0] == digests[1]
