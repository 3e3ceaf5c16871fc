"""timm models and the Appendix-B split into shared and task-specific parts.

For a ResNet the classification head and every BatchNorm (affine weight and bias, running mean and
variance, batch counter) are *task-specific*; every other tensor (the conv weights) is *shared*.
Forgetting is measured on a model whose shared tensors come from the fine-tuned network and whose
task-specific tensors are the pre-trained ones, restored exactly (``forgetting.measured_model``).

The split is found by module type (any ``_BatchNorm`` subclass, and the module timm reports as the
classifier), not by matching key names as the official code does ('bn', 'downsample.1', 'fc'),
so it also holds for timm variants whose BatchNorms are named differently.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


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


def task_specific_keys(model: nn.Module) -> set[str]:
    """State-dict keys of the head and of every BatchNorm (Appendix B)."""
    prefixes = [name for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    return head_keys(model) | {key for key in model.state_dict() if any(key.startswith(p + ".") for p in prefixes)}


def split_state(model: nn.Module) -> tuple[dict, dict]:
    """-> (shared, task_specific) dicts of the model's state tensors (not copies)."""
    specific = task_specific_keys(model)
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


def interpolate_shared(source: nn.Module, finetuned: nn.Module, alpha: float) -> nn.Module:
    """WiSE-FT on the shared tensors: θ = (1-α)·θ_source + α·θ_finetuned; head and BN stay the
    fine-tuned model's (the target side). α = 1 is the fine-tuned model, α = 0 the pre-trained
    backbone. Integer buffers are taken from the fine-tuned model. The BN running statistics are
    not re-estimated for the interpolated conv weights, so target accuracy at 0 < α < 1 is that
    of the plain interpolation (forgetting uses the source's BN, restored exactly, in any case)."""
    model = copy.deepcopy(finetuned)
    src_shared, _ = split_state(source)
    state = model.state_dict()
    for key, theta0 in src_shared.items():
        if state[key].is_floating_point():
            # (1-α)·a + α·b rather than lerp: exact at α = 0 and α = 1.
            state[key].copy_((1 - alpha) * theta0.to(state[key].dtype) + alpha * state[key])
    return model
