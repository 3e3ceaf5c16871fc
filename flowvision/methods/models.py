"""timm models and the Appendix-B split into shared and task-specific parts.

For a ResNet the classification head and every BatchNorm (affine weight and bias, running mean and
variance, batch counter) are *task-specific*; every other tensor (the conv weights) is *shared*.
Forgetting is measured on a model whose shared tensors come from the fine-tuned network and whose
task-specific tensors are the pre-trained ones, restored exactly (``forgetting.measured_model``).

The paper defines the split for ResNets only. Other timm families declare theirs in ``FAMILIES``
(keyed by timm's model class): BatchNorm nets (ResNet, EfficientNet with timm's BatchNormAct2d,
RegNet) keep the Appendix-B rule, head + every BatchNorm; LayerNorm nets (ConvNeXt, ViT) keep only
the head, since a LayerNorm holds no statistics of the data and its affine parameters are ordinary
learned weights. ``task_specific=head+norms`` asks for every normalisation layer too, ``head`` for
the head alone, on any family.

The split is found by module type (any ``_BatchNorm`` subclass, and the module timm reports as the
classifier), not by matching key names as the official code does ('bn', 'downsample.1', 'fc'),
so it also holds for timm variants whose BatchNorms are named differently.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..core.checks import TASK_SPECIFIC_RULES


def create(arch: str, num_classes: int, **kwargs) -> nn.Module:
    """A timm model, randomly initialised unless kwargs ask for pretrained weights."""
    import timm

    return timm.create_model(arch, num_classes=num_classes, **kwargs)


def is_arch(name: str) -> bool:
    """Whether timm knows the architecture ``name`` (e.g. 'resnet18'; no weight tag)."""
    import timm

    return name in timm.list_models()


def head_prefix(model: nn.Module) -> str:
    """Module name of the classification head (e.g. 'fc' for a timm ResNet)."""
    head = model.get_classifier()
    for name, module in model.named_modules():
        if module is head:
            return name
    raise ValueError(f"{type(model).__name__}: classifier module not found among its modules")


def head_keys(model: nn.Module) -> set[str]:
    """State-dict keys of the classification head."""
    prefix = head_prefix(model) + "."
    return {key for key in model.state_dict() if key.startswith(prefix)}


# TASK_SPECIFIC_RULES (config's task_specific): what besides the head the forgetting model takes
# back from the source: auto | head | head+bn | head+norms.
# The rule ``auto`` stands for, per timm model class. A class not listed gets head+bn when it holds
# a BatchNorm and head otherwise (the record names the rule that was applied).
FAMILIES = {"ResNet": "head+bn", "EfficientNet": "head+bn", "RegNet": "head+bn", "MobileNetV3": "head+bn",
            "ConvNeXt": "head", "VisionTransformer": "head"}
NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)


def family_rule(model: nn.Module, rule: str = "auto") -> str:
    """The rule that applies to ``model``: ``rule`` itself unless it is 'auto', else its family's."""
    if rule not in TASK_SPECIFIC_RULES:
        raise ValueError(f"task_specific rule {rule!r}; one of {TASK_SPECIFIC_RULES}")
    if rule != "auto":
        return rule
    family = type(model).__name__
    if family in FAMILIES:
        return FAMILIES[family]
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    return "head+bn" if has_bn else "head"


def _module_keys(model: nn.Module, kinds: tuple) -> set[str]:
    prefixes = [name + "." for name, m in model.named_modules() if isinstance(m, kinds)]
    return {key for key in model.state_dict() if any(key.startswith(p) for p in prefixes)}


def task_specific_keys(model: nn.Module, rule: str = "auto") -> set[str]:
    """State-dict keys of the head plus, by the family's rule (``family_rule``), every BatchNorm
    (Appendix B: weight, bias, running mean/var, batch counter) or every normalisation layer."""
    applied = family_rule(model, rule)
    keys = head_keys(model)
    if applied == "head+bn":
        keys |= _module_keys(model, (nn.modules.batchnorm._BatchNorm,))
    elif applied == "head+norms":
        keys |= _module_keys(model, NORMS)
    return keys


def split_state(model: nn.Module, rule: str = "auto") -> tuple[dict, dict]:
    """-> (shared, task_specific) dicts of the model's state tensors (not copies)."""
    specific = task_specific_keys(model, rule)
    state = model.state_dict()
    return ({k: v for k, v in state.items() if k not in specific},
            {k: v for k, v in state.items() if k in specific})


def clone_state(model: nn.Module) -> dict:
    """A detached CPU copy of the full state dict."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def copy_tensors(dst: nn.Module, src: nn.Module, skip: set[str]) -> None:
    """Copy every state tensor of ``src`` into ``dst`` except the keys in ``skip`` (which keep
    dst's values); the two must share every copied key and shape."""
    dst_state = dst.state_dict()
    for key, value in src.state_dict().items():
        if key in skip:
            continue
        if key not in dst_state or dst_state[key].shape != value.shape:
            raise ValueError(f"tensor {key} does not fit the source model; architectures differ")
        dst_state[key].copy_(value)


def with_new_head(source: nn.Module, num_classes: int, seed: int) -> nn.Module:
    """Same backbone (shared tensors and BatchNorms), a fresh randomly initialised head of
    ``num_classes`` outputs (nn.Linear's default init, as the official code's new ``fc``)."""
    model = copy.deepcopy(source)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.reset_classifier(num_classes)
    return model


def interpolate_shared(source: nn.Module, finetuned: nn.Module, alpha: float, rule: str = "auto") -> nn.Module:
    """WiSE-FT on the shared tensors: θ = (1-α)·θ_source + α·θ_finetuned; head and BN stay the
    fine-tuned model's (the target side). α = 1 is the fine-tuned model, α = 0 the pre-trained
    backbone. Integer buffers are taken from the fine-tuned model. The BN running statistics are
    not re-estimated for the interpolated conv weights, so target accuracy at 0 < α < 1 is that
    of the plain interpolation (forgetting uses the source's BN, restored exactly, in any case)."""
    model = copy.deepcopy(finetuned)
    src_shared, _ = split_state(source, rule)
    state = model.state_dict()
    for key, theta0 in src_shared.items():
        if state[key].is_floating_point():
            # (1-α)·a + α·b rather than lerp: exact at α = 0 and α = 1.
            state[key].copy_((1 - alpha) * theta0.to(state[key].dtype) + alpha * state[key])
    return model
