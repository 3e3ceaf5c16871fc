"""Foreign checkpoints -> timm ``.safetensors``, by order, every tensor checked.

    flowvision import-weights efficientnet-lite0-57934424.pth --arch tf_efficientnet_lite0 --out lite0.safetensors
    flowvision finetune --model tf_efficientnet_lite0 --weights lite0.safetensors ...

A checkpoint written by another library names its tensors its own way (``_blocks.0._bn1.weight``
for timm's ``blocks.0.0.bn1.weight``) but, for the same architecture, holds the same tensors in the
same module order. The i-th tensor of the file is mapped to the i-th tensor of timm's state dict,
and the mapping is refused unless it is certain:

- the same number of tensors (an extra or a missing tensor shifts every later pair);
- for every pair, the same shape, the same kind of number (float / integer), and the same last
  name part (``weight``, ``bias``, ``running_mean``, ``running_var``, ``num_batches_tracked``):
  a weight paired with a bias or running statistic means the orders differ;
- an order to map by: a ``.safetensors`` file stores its tensors sorted by name, not in module
  order, so it is mapped only when its names already are timm's.

A mapping that passes loads strictly into the timm model (``load_state_dict(strict=True)``) before
the file is written; the written file holds exactly the source's tensors under timm's names, every
floating-point value finite (``source.check_numbers``). ``--out`` is a new ``.safetensors`` file or
one this command wrote before; a folder or any other existing file there is refused before anything
is read.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..core.errors import UserError


def _leaf(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def map_by_order(foreign: dict, own: dict, source: str, arch: str) -> dict:
    """timm name -> foreign tensor, pairing the i-th tensors of ``foreign`` and ``own`` (timm's state
    dict); a UserError naming the first pair that makes the mapping uncertain."""
    if len(foreign) != len(own):
        more, fewer = ("more", "extra") if len(foreign) > len(own) else ("fewer", "missing")
        raise UserError(f"{source} holds {len(foreign)} tensors, {arch} has {len(own)}: {abs(len(foreign) - len(own))} "
                        f"{more} ({fewer} tensors shift every pair after them); is it a {arch} checkpoint?")
    mapped = {}
    for i, ((theirs, value), (ours, target)) in enumerate(zip(foreign.items(), own.items())):
        problem = None
        if tuple(value.shape) != tuple(target.shape):
            problem = f"shape {tuple(value.shape)} vs {tuple(target.shape)}"
        elif value.is_floating_point() != target.is_floating_point() or (
                not value.is_floating_point() and value.dtype != target.dtype):
            problem = f"dtype {value.dtype} vs {target.dtype}"
        elif _leaf(theirs) != _leaf(ours):
            problem = f"a '{_leaf(theirs)}' paired with a '{_leaf(ours)}'"
        if problem:
            raise UserError(f"{source}: tensor {i} '{theirs}' does not map onto {arch}'s '{ours}' ({problem}); "
                            "the checkpoint is not this architecture in timm's order, nothing was written")
        mapped[ours] = value.to(target.dtype) if value.is_floating_point() else value
    return mapped


def check_out(out: Path) -> None:
    """``--out`` names a new .safetensors file, or one import-weights wrote (its metadata says how it
    was mapped): a folder or any other existing file there is a UserError, so nothing is overwritten."""
    if out.suffix != ".safetensors":
        raise UserError(f"--out {out}: write a .safetensors file")
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give the name of a new .safetensors file")
    if out.exists() or out.is_symlink():
        try:
            from safetensors import safe_open

            with safe_open(str(out), "pt") as f:
                ours = "mapped_by" in (f.metadata() or {})
        except Exception:  # noqa: BLE001 — any file safetensors cannot open is not one we wrote
            ours = False
        if not ours:
            raise UserError(f"--out {out} exists and is not a file import-weights wrote; choose a new name "
                            "(or remove it yourself)")
    for parent in out.parents:  # the nearest folder that exists must take a new file
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"--out {out}: {parent} is a file, not a folder; choose another place")
            if not os.access(parent, os.W_OK):
                raise UserError(f"--out {out}: cannot write into {parent}; choose a folder you can write")
            break


def import_weights(path: Path, arch: str, out: Path) -> dict:
    """Write ``out`` (.safetensors): the checkpoint at ``path`` under timm's names for ``arch``.
    Returns {"tensors", "renamed", "out", "arch"}."""
    import timm
    from safetensors.torch import save

    from ..core.files import atomic_write_bytes
    from .models import is_arch
    from .source import check_numbers, read_weights_file

    path, out = Path(path).expanduser(), Path(out).expanduser()
    if not is_arch(arch):
        raise UserError(f"--arch {arch} is not a timm architecture (see timm.list_models()); "
                        "e.g. tf_efficientnet_lite0")
    check_out(out)
    foreign = read_weights_file(path)
    model = timm.create_model(arch, pretrained=False)
    own = model.state_dict()
    by_name = set(foreign) == set(own)
    if by_name:
        mapped = {k: foreign[k] for k in own}  # already timm's names: map by name
        for key in own:
            if tuple(foreign[key].shape) != tuple(own[key].shape):
                raise UserError(f"{path}: tensor '{key}' has shape {tuple(foreign[key].shape)}, {arch} "
                                f"expects {tuple(own[key].shape)}; nothing was written")
    elif path.suffix == ".safetensors":
        raise UserError(f"{path}: a .safetensors file keeps its tensors sorted by name, not in module order, so "
                        "another library's names cannot be mapped by order; import the .pth/.bin it came from")
    else:
        mapped = map_by_order(foreign, own, str(path), arch)
    check_numbers(mapped, own, path, arch)
    model.load_state_dict(mapped, strict=True)
    atomic_write_bytes(out, save({k: v.contiguous() for k, v in mapped.items()},
                                 metadata={"arch": arch, "source": path.name, "mapped_by": "name" if by_name else "order"}))
    return {"tensors": len(mapped), "renamed": 0 if by_name else sum(a != b for a, b in zip(foreign, mapped)),
            "out": str(out), "arch": arch}
