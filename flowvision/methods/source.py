"""The source (pre-trained) model. Where its forgetting is measured is ``forgetting``'s concern.

Two kinds of source, one interface:
  demo      a timm ResNet trained once with Adam on the synthetic ``shapes`` task and cached
            (the offline stand-in for ImageNet pre-training).
  timm      ImageNet-1K weights pinned by full tag (``resnet18`` means ``resnet18.tv_in1k``, the
            weights timm 0.4.12 — the official code's — loaded for ``resnet18``), from a local file
            (``--weights``) or the local Hugging Face cache.
Weights are always read as tensors (safetensors, or torch.load with weights_only=True): loading a
checkpoint never executes code. Before a model takes them, every tensor it holds as floating point
must be floating point in the file and every floating-point value finite (``check_numbers``): an
integer copy would load as zeros, and NaN weights fail later where they look like a learning rate's fault.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.config import MODEL_TAGS, RunConfig, default_cache_dir
from ..core.errors import UserError
from ..core.files import file_digest, stable_hash

if TYPE_CHECKING:  # torch and timm load with a model, not with this module (the dry run reads demo_path)
    from torch import nn


@dataclass
class Source:
    key: str            # what the pre-trained numbers depend on: "demo:<hash>", a timm tag, "file:<name>@<digest>"
    model: nn.Module    # pre-trained model with its own head and BatchNorms (CPU; never modified)
    info: dict          # recorded in result.json (e.g. the demo model's training accuracy)


# ---- demo -----------------------------------------------------------------------------------------
DEMO_READS = ("model", "demo_arch", "demo_epochs", "demo_lr", "demo_batch_size", "demo_n_train", "demo_n_test",
              "image_size", "data_seed")
# The names a field had when cached demo models were first keyed (the source task's val size was then
# read from n_test): the recipe keeps them, so those files stay valid.
RECIPE_NAMES = {"demo_n_test": "n_test"}


def reads(cfg) -> tuple:
    """The config fields the source model depends on (the ``source`` stage's declaration)."""
    return DEMO_READS if cfg.model == "demo" else ("model", "weights")


DEMO_VERSION = 4  # bump when demo training changes (3: per-sample augmentation draws; 4: fused Adam on 2 threads)
# The demo model always trains with this many torch threads, whatever OMP_NUM_THREADS says: the CPU's
# rounding depends on the thread count, and one key must name one model. Two because the demo is sized
# for 2 cores, which the source model (trained before any run can start) then keeps busy.
DEMO_THREADS = 2


def demo_key(cfg: RunConfig) -> str:
    """The demo source's identity in stage keys and records: 'demo:<hash of its recipe>'."""
    return f"demo:{stable_hash(demo_recipe(cfg))[:8]}"


def file_key(path: Path) -> str:
    """A weights file's identity in stage keys and records: 'file:<name>@<digest>'."""
    return f"file:{path.name}@{file_digest(path)}"


def demo_recipe(cfg: RunConfig) -> dict:
    """What the demo model is a function of: its declared fields and whether bf16 autocast trained it
    (the key of its cached file)."""
    return {"task": "shapes", "version": DEMO_VERSION, "amp": cfg.amp,
            **{RECIPE_NAMES.get(f, f): getattr(cfg, f) for f in DEMO_READS}}


def demo_path(cfg: RunConfig) -> Path:
    """Where the demo model for ``cfg`` is cached: <cache_dir>/demo/<hash of its recipe>.pt."""
    return Path(cfg.cache_dir or default_cache_dir()) / "demo" / f"{stable_hash(demo_recipe(cfg))}.pt"


def demo_source(cfg: RunConfig, hw, build: bool = True) -> Source:
    """Train (once) or load the demo source model; cached under cfg.cache_dir/demo/<hash>.pt. With
    ``build=False`` it is only read: a model that is not cached is a UserError, never trained."""
    import torch

    from . import models
    from ..data.synthetic import SOURCE_TASK, SPECS, load_synthetic_task
    from .evaluate import predict
    from ..core.hardware import torch_threads
    from ..core.cache import load_or_compute, read_cached
    from .train import Schedule, train

    preflight(cfg)
    recipe = demo_recipe(cfg)
    key = stable_hash(recipe)
    path = demo_path(cfg)
    torch.manual_seed(cfg.data_seed)
    model = models.create(cfg.demo_arch, SPECS[SOURCE_TASK].num_classes)

    def compute():  # the source task's images are drawn only to train (every run after loads the model)
        task = load_synthetic_task(SOURCE_TASK, seed=cfg.data_seed, image_size=cfg.image_size,
                                   n_train=cfg.demo_n_train, n_test=cfg.demo_n_test, augment=True)
        cpu = hw.device.type == "cpu"
        with torch_threads(DEMO_THREADS if cpu else None):
            rows = train(model, task.train, Schedule(epochs=cfg.demo_epochs, lr=cfg.demo_lr,
                                                     batch_size=cfg.demo_batch_size, optimizer="adam",
                                                     weight_decay=0.0),
                         seed=cfg.data_seed, hw=hw,
                         desc=f"demo source model (shapes{f', {DEMO_THREADS} threads' if cpu else ''})")
            acc = predict(model, task.test, hw=hw, desc="demo source model: val").acc
        model.cpu()
        return {"model": model.state_dict(), "info": {"demo_recipe": recipe, "demo_train_acc": rows[-1]["acc"],
                                                      "demo_val_acc": acc}}
    if build:
        saved, _ = load_or_compute(path, {"demo_model": key}, compute, "the demo model")
    else:
        saved = read_cached(path, {"demo_model": key}, f"the demo model {demo_key(cfg)}",
                       "rerun a run that uses it (it trains it again)")
    model.load_state_dict(saved["model"])
    info = saved["info"]
    model.cpu().eval()
    return Source(key=demo_key(cfg), model=model, info=dict(info, demo_model_file=str(path)))


# ---- timm / ImageNet -------------------------------------------------------------------------------
def resolve_tag(model: str) -> str:
    """'resnet18' -> 'resnet18.tv_in1k' (the paper's weights); a full tag stays as it is."""
    return MODEL_TAGS.get(model, model)


def read_weights_file(path: Path) -> dict:
    """A state dict (names -> tensors) from .safetensors or .pth/.pt/.bin, read without executing
    code; any file that is not one is a one-line UserError."""
    if not path.is_file():
        raise UserError(f"weights file {path} does not exist; pass --weights PATH to a .safetensors or .pth file")
    if path.suffix not in (".safetensors", ".pth", ".pt", ".bin"):
        raise UserError(f"weights file {path}: unknown format '{path.suffix}'; use .safetensors or .pth")
    if path.stat().st_size == 0:
        raise UserError(f"weights file {path} is empty")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            import torch

            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 — a user's file: every way it can fail to parse is the same answer
        import pickle

        if isinstance(e, (KeyError, EOFError, pickle.UnpicklingError)):
            # a text file and a pickle of arbitrary objects fail alike in the weights-only reader
            reason = "it is not a torch file of tensors: another format, or objects that would need code to load"
        else:
            reason = (str(e).splitlines() or [type(e).__name__])[0][:80]
        raise UserError(f"weights file {path} cannot be read as tensors ({reason}); save it as a state dict "
                        "or .safetensors") from None
    for wrapper in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    import torch

    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise UserError(f"weights file {path} does not hold a state dict (names mapped to tensors); "
                        "save model.state_dict() or a .safetensors file")
    return state


def check_numbers(state: dict, own: dict, path: Path, arch: str) -> None:
    """Every tensor that ``own`` (the model's state dict) holds as floating point is floating point in
    ``state``, and every floating-point value of ``state`` is finite; a UserError naming the first
    tensor that is not (counters such as ``num_batches_tracked`` stay integers)."""
    import torch

    for key, value in state.items():
        target = own.get(key)
        if target is not None and target.is_floating_point() and not value.is_floating_point():
            raise UserError(f"weights file {path}: tensor '{key}' holds {str(value.dtype).replace('torch.', '')}, not "
                            f"floating-point numbers as {arch}'s does (an integer or quantised copy would load as other "
                            "numbers); export the float weights")
        if value.is_floating_point():
            bad = int((~torch.isfinite(value)).sum())
            if bad:
                raise UserError(f"weights file {path}: tensor '{key}' holds {bad} NaN or infinite value"
                                f"{'s' if bad > 1 else ''} of {value.numel()}; the weights are damaged, use a sound copy")


def _load_checked(model: nn.Module, state: dict, path: Path, arch: str) -> None:
    """Load every tensor of ``state`` into ``model`` or say which key does not fit, which is not
    floating point or which holds a NaN or infinity (``check_numbers``)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        first = (wrong or missing or unexpected)[0]
        raise UserError(f"weights file {path} does not fit {arch}: {len(missing)} missing, {len(unexpected)} "
                        f"unexpected, {len(wrong)} wrongly shaped tensors (first: {first}); is it a {arch} checkpoint?")
    check_numbers(state, own, path, arch)
    model.load_state_dict(state)


def hub_reachable(timeout: float = 2.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("FLOWVISION_OFFLINE") == "1":
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def model_tag(model: str) -> tuple[str, str]:
    """(tag, architecture) of a model name, e.g. 'resnet18' -> ('resnet18.tv_in1k', 'resnet18');
    a UserError when timm does not know the architecture."""
    from . import models

    tag = resolve_tag(model)
    arch = tag.split(".")[0]
    if not models.is_arch(arch):
        raise UserError(f"unknown model '{model}'; use demo, resnet18, resnet50 or a timm name/tag "
                        "such as resnet18.tv_in1k (see timm.list_models())")
    return tag, arch


def preflight(cfg: RunConfig) -> None:
    """The checks that cost no load: a known architecture and, for timm models, an existing weights file."""
    from . import models

    if cfg.model != "demo":
        check_model(cfg)
    elif not models.is_arch(cfg.demo_arch):
        raise UserError(f"demo_arch '{cfg.demo_arch}' is not a timm architecture; e.g. resnet18 (see timm.list_models())")


def check_model(cfg: RunConfig) -> tuple[str, str]:
    """Cheap checks before anything is loaded: a known timm architecture, an existing weights file.
    Returns (tag, architecture)."""
    tag, arch = model_tag(cfg.model)
    if cfg.weights and not Path(cfg.weights).expanduser().is_file():
        raise UserError(f"weights file {cfg.weights} does not exist; pass --weights PATH to a .safetensors or .pth file")
    return tag, arch


def pretrained_model(cfg: RunConfig, download: bool = True) -> tuple[nn.Module, str]:
    """The pre-trained timm model for cfg.model (+ cfg.weights) and its identity key.

    Order: a local file (--weights); <cache_dir>/weights/<tag>.safetensors (a file copied from the
    model hub, ``where_from``); the tag's file in the local Hugging Face cache; a download when the
    hub answers within 2 s (never without ``download``: a command that only reads, export, writes no
    cache). Otherwise a UserError that says where to put the file, in seconds rather than after a minute
    of retries.
    """
    import timm

    tag, arch = check_model(cfg)
    if cfg.weights:
        path = Path(cfg.weights).expanduser()
        state = read_weights_file(path)
        model = timm.create_model(tag, pretrained=False)
        _load_checked(model, state, path, arch)
        return model, file_key(path)
    try:
        model = timm.create_model(tag, pretrained=False)
    except RuntimeError as e:
        raise UserError(f"model '{cfg.model}': {str(e).splitlines()[0]}") from None
    full_tag = f"{arch}.{model.pretrained_cfg.get('tag')}"
    hub_id = model.pretrained_cfg.get("hf_hub_id")
    copied = weights_folder(cfg) / f"{full_tag}.safetensors"
    cached = copied if copied.is_file() else None
    if hub_id and cached is None:
        from huggingface_hub import try_to_load_from_cache

        for name in ("model.safetensors", "pytorch_model.bin"):
            hit = try_to_load_from_cache(hub_id, name)
            if isinstance(hit, str):
                cached = Path(hit)
                break
    if cached is not None:
        _load_checked(model, read_weights_file(cached), cached, arch)
        return model, full_tag
    if not download:
        raise UserError(f"the weights {full_tag} are not here (not in {copied.parent} nor the Hugging Face cache), "
                        f"and reading a run downloads nothing: {where_from(full_tag, hub_id, copied)}")
    if not hub_reachable():
        raise UserError(f"no weights for {full_tag} here and the model hub cannot be reached: "
                        f"{where_from(full_tag, hub_id, copied)}")
    return timm.create_model(full_tag, pretrained=True), full_tag


def weights_folder(cfg) -> Path:
    """Where copied weight files are looked for: <cache_dir>/weights/<tag>.safetensors."""
    return Path(cfg.cache_dir or default_cache_dir()).expanduser() / "weights"


def where_from(full_tag: str, hub_id, local: Path) -> str:
    """What to bring to an offline machine for ``full_tag``: the hub repository and file, and where
    it goes here."""
    if not hub_id:
        return f"pass --weights PATH (a .safetensors or .pth file for {full_tag.split('.')[0]})"
    return (f"on a machine with internet download the file model.safetensors of the model-hub repository {hub_id} "
            f"(https://huggingface.co/{hub_id}/blob/main/model.safetensors) and copy it to {local}, "
            "or pass --weights PATH to it")


def load_source(cfg: RunConfig, hw, build: bool = True) -> Source:
    """The pre-trained model for cfg.model: the demo model (trained once, cached; only read with
    ``build=False``) or timm weights (read, never written)."""
    if cfg.model == "demo":
        return demo_source(cfg, hw, build)
    model, key = pretrained_model(cfg, download=build)
    return Source(key=key, model=model.eval(), info={"weights": key})
