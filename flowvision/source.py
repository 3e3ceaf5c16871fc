"""The source (pre-trained) model and the data set its forgetting is measured on.

Two kinds of source, one interface:
  demo      a timm ResNet trained once with Adam on the synthetic ``shapes`` task and cached
            (the offline stand-in for ImageNet pre-training); forgetting is measured on shapes' val split.
  timm      ImageNet-1K weights pinned by full tag (``resnet18`` means ``resnet18.tv_in1k``, the
            weights timm 0.4.12 — the official code's — loaded for ``resnet18``), from a local file
            (``--weights``) or the local Hugging Face cache; forgetting is measured on IN-1K val.
Weights are always read as tensors (safetensors, or torch.load with weights_only=True): loading a
checkpoint never executes code.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from torch import nn
from torch.utils.data import Dataset

from . import models
from .config import MODEL_TAGS, RunConfig, default_cache_dir
from .errors import UserError
from .records import atomic_save, file_digest, stable_hash


@dataclass
class Source:
    key: str            # what the pre-trained numbers depend on: "demo:<hash>", a timm tag, "file:<name>@<digest>"
    model: nn.Module    # pre-trained model with its own head and BatchNorms (CPU; never modified)
    eval_set: Dataset   # where forgetting is measured; yields (image, label, index)
    eval_desc: str      # e.g. "shapes:val(1000)", "imagenet-val(50000)"
    eval_key: str       # everything the source accuracy depends on besides the model: which images, how transformed
    info: dict          # recorded in result.json (e.g. the demo model's training accuracy)


# ---- demo -----------------------------------------------------------------------------------------
def demo_recipe(cfg: RunConfig) -> dict:
    return {"arch": cfg.demo_arch, "task": "shapes", "epochs": cfg.demo_epochs, "lr": cfg.demo_lr,
            "batch_size": cfg.demo_batch_size, "n_train": cfg.demo_n_train, "n_test": cfg.n_test, "image_size": cfg.image_size,
            "data_seed": cfg.data_seed, "version": 1}


def demo_source(cfg: RunConfig, hw) -> Source:
    """Train (once) or load the demo source model; cached under cfg.cache_dir/demo/<hash>.pt."""
    import torch

    from .data.synthetic import SOURCE_TASK, load_synthetic_task
    from .evaluate import predict
    from .train import Schedule, train

    if not models.is_arch(cfg.demo_arch):
        raise UserError(f"demo_arch '{cfg.demo_arch}' is not a timm architecture; e.g. resnet18 (see timm.list_models())")
    recipe = demo_recipe(cfg)
    key = stable_hash(recipe)
    path = Path(cfg.cache_dir or default_cache_dir()) / "demo" / f"{key}.pt"
    task = load_synthetic_task(SOURCE_TASK, seed=cfg.data_seed, image_size=cfg.image_size,
                               n_train=cfg.demo_n_train, n_test=cfg.n_test, augment=True)
    torch.manual_seed(cfg.data_seed)
    model = models.create(cfg.demo_arch, task.num_classes)
    if path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(saved["model"])
        info = saved["info"]
    else:
        rows = train(model, task.train, Schedule(epochs=cfg.demo_epochs, lr=cfg.demo_lr, batch_size=cfg.demo_batch_size,
                                                 optimizer="adam", weight_decay=0.0),
                     seed=cfg.data_seed, hw=hw, desc="demo source model (shapes)")
        acc = predict(model, task.test, hw=hw, desc="demo source model: val").acc
        info = {"demo_recipe": recipe, "demo_train_acc": rows[-1]["acc"], "demo_val_acc": acc}
        model.cpu()
        atomic_save({"model": model.state_dict(), "info": info}, path)
    model.cpu().eval()
    return Source(key=f"demo:{key[:8]}", model=model, eval_set=task.test, eval_desc=f"shapes:val({len(task.test)})",
                  eval_key=stable_hash(task.info), info=dict(info, demo_model_file=str(path)))


# ---- timm / ImageNet -------------------------------------------------------------------------------
def resolve_tag(model: str) -> str:
    """'resnet18' -> 'resnet18.tv_in1k' (the paper's weights); a full tag stays as it is."""
    return MODEL_TAGS.get(model, model)


def read_weights_file(path: Path) -> dict:
    """A state dict from .safetensors or .pth/.pt/.bin, read without executing code."""
    if not path.is_file():
        raise UserError(f"weights file {path} does not exist; pass --weights PATH to a .safetensors or .pth file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if path.suffix in (".pth", ".pt", ".bin"):
        import pickle

        import torch

        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError) as e:
            raise UserError(f"weights file {path} is not a plain tensor checkpoint ({str(e).splitlines()[0][:80]}); "
                            "save it as a state dict or .safetensors") from None
        for wrapper in ("state_dict", "model", "state_dict_ema"):
            if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
                state = state[wrapper]
        return state
    raise UserError(f"weights file {path}: unknown format '{path.suffix}'; use .safetensors or .pth")


def _load_checked(model: nn.Module, state: dict, path: Path, arch: str) -> None:
    """Load every tensor of ``state`` into ``model`` or say which key does not fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        first = (wrong or missing or unexpected)[0]
        raise UserError(f"weights file {path} does not fit {arch}: {len(missing)} missing, {len(unexpected)} "
                        f"unexpected, {len(wrong)} wrongly shaped tensors (first: {first}); is it a {arch} checkpoint?")
    model.load_state_dict(state)


def _hub_reachable(timeout: float = 2.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("FLOWVISION_OFFLINE") == "1":
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def check_model(cfg: RunConfig) -> tuple[str, str]:
    """Cheap checks before anything is loaded: a known timm architecture, an existing weights file.
    Returns (tag, architecture)."""
    tag = resolve_tag(cfg.model)
    arch = tag.split(".")[0]
    if not models.is_arch(arch):
        raise UserError(f"unknown model '{cfg.model}'; use demo, resnet18, resnet50 or a timm name/tag "
                        "such as resnet18.tv_in1k (see timm.list_models())")
    if cfg.weights and not Path(cfg.weights).expanduser().is_file():
        raise UserError(f"weights file {cfg.weights} does not exist; pass --weights PATH to a .safetensors or .pth file")
    return tag, arch


def pretrained_model(cfg: RunConfig) -> tuple[nn.Module, str]:
    """The pre-trained timm model for cfg.model (+ cfg.weights) and its identity key.

    Order: a local file (--weights); the tag's file in the local Hugging Face cache; a download
    when the hub answers within 2 s. Otherwise a UserError that says where to put the file, in
    seconds rather than after a minute of retries.
    """
    import timm

    tag, arch = check_model(cfg)
    if cfg.weights:
        path = Path(cfg.weights).expanduser()
        state = read_weights_file(path)
        model = timm.create_model(tag, pretrained=False)
        _load_checked(model, state, path, arch)
        return model, f"file:{path.name}@{file_digest(path)}"
    try:
        model = timm.create_model(tag, pretrained=False)
    except RuntimeError as e:
        raise UserError(f"model '{cfg.model}': {str(e).splitlines()[0]}") from None
    full_tag = f"{arch}.{model.pretrained_cfg.get('tag')}"
    hub_id = model.pretrained_cfg.get("hf_hub_id")
    cached = None
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        for name in ("model.safetensors", "pytorch_model.bin"):
            hit = try_to_load_from_cache(hub_id, name)
            if isinstance(hit, str):
                cached = Path(hit)
                break
    if cached is not None:
        _load_checked(model, read_weights_file(cached), cached, arch)
        return model, full_tag
    if not _hub_reachable():
        raise UserError(f"no weights for {full_tag} here and the model hub cannot be reached: pass --weights "
                        f"PATH (a .safetensors or .pth file for {arch}), or on a machine with internet run "
                        f"`python -c \"import timm; timm.create_model('{full_tag}', pretrained=True)\"` and copy "
                        "~/.cache/huggingface/hub here")
    return timm.create_model(full_tag, pretrained=True), full_tag


def imagenet_root(cfg: RunConfig) -> Path:
    from .data.fetch import resolve_imagenet

    root = resolve_imagenet(cfg.imagenet)
    if root is None:
        raise UserError("forgetting is measured on ImageNet-1K val: pass --imagenet PATH (an ImageFolder of 1000 "
                        "synset folders) or set FLOWVISION_IMAGENET; `flowvision data status` shows the layout")
    return root


def official_imagenet_transform():
    """The official code's IN-1K evaluation: bilinear Resize(256), CenterCrop(224), ImageNet mean/std.
    The paper's 79.02% for ResNet-50 fits this transform, not timm's bicubic default for ram_in1k."""
    import torch
    from torchvision.transforms import v2

    return v2.Compose([v2.PILToTensor(), v2.Resize(256, interpolation=v2.InterpolationMode.BILINEAR, antialias=True),
                       v2.CenterCrop(224), v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])


def timm_source(cfg: RunConfig, with_eval: bool = True) -> Source:
    """The pre-trained timm model and, when ``with_eval``, the IN-1K val set its forgetting is measured on."""
    import warnings

    from .console import console
    from .data.imagenet import check_classes, describe, imagenet_synsets, imagenet_transform, load_imagenet_eval

    check_model(cfg)
    if not with_eval:
        model, key = pretrained_model(cfg)
        return Source(key=key, model=model.eval(), eval_set=None, eval_desc="", eval_key="", info={"weights": key})
    root = imagenet_root(cfg)
    check_classes(root, imagenet_synsets())  # before the weights: a wrong folder costs no load
    model, key = pretrained_model(cfg)
    transform = (official_imagenet_transform() if cfg.imagenet_transform == "official"
                 else imagenet_transform(model.pretrained_cfg))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the count warning is printed below, once, without a file:line
        eval_set = load_imagenet_eval(root, transform, subset=cfg.imagenet_subset, seed=cfg.data_seed)
    for note in eval_set.warnings:
        console.print(f"[yellow]warning:[/] {note}", highlight=False)
    eval_key = stable_hash(str(root.resolve()), eval_set.n_found, cfg.imagenet_subset, cfg.data_seed,
                           cfg.imagenet_transform, repr(transform))
    return Source(key=key, model=model.eval(), eval_set=eval_set,
                  eval_desc=f"{describe(eval_set)}, {cfg.imagenet_transform} transform", eval_key=eval_key,
                  info={"weights": key, "imagenet_root": str(root), "imagenet_warnings": list(eval_set.warnings)})


def load_source(cfg: RunConfig, hw, with_eval: bool = True) -> Source:
    """The source model; ``with_eval=False`` skips the forgetting evaluation set (the sample audit)."""
    return demo_source(cfg, hw) if cfg.model == "demo" else timm_source(cfg, with_eval)
