"""flowvision: reproduce and extend the vision experiments of FLOW
("Upweighting Easy Samples in Fine-Tuning Mitigates Forgetting", ICML 2025).

    flowvision demo                                   # offline demo, synthetic tasks, ~4 min on 2 cores
    flowvision finetune --dataset gratings --model demo --method flow
    flowvision finetune --dataset cifar10 --model resnet18 --tau 1.0

From your own training loop (docs/api.md; the CLI's stages call these same functions):

    from flowvision import per_sample_losses, flow_weights, weighted_loss, measured_model, forgetting, L2SP, EWC, LwF

The names load on first use (PEP 562), so ``import flowvision`` and ``flowvision --help`` import no torch.
Their types are in ``__init__.pyi``.
"""

__version__ = "0.1.0"

# name -> the module under flowvision that defines it. Strings, not imports: the package root stands on the
# lowest floor (docs/architecture.md) and imports nothing until a name is asked for.
_PUBLIC = {
    "per_sample_losses": "methods.evaluate",
    "flow_weights": "methods.weighting",
    "weighted_loss": "methods.weighting",
    "measured_model": "methods.forgetting",
    "forgetting": "methods.forgetting",
    "L2SP": "methods.regularizers",
    "EWC": "methods.regularizers",
    "LwF": "methods.regularizers",
}
__all__ = list(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'flowvision' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{_PUBLIC[name]}"), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__))
