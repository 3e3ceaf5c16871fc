"""The ImageNet-1K validation set, read for the forgetting measurement.

    tf = imagenet_transform(model.pretrained_cfg)       # e.g. Resize(256) + CenterCrop(224)
    val = load_imagenet_eval(Path("/d/imagenet/val"), tf, subset=5000)
    describe(val)  # 'imagenet-val:subset(5000)' -> result.json "source_eval"

The folder is an ImageFolder of 1000 synset folders (``n01440764/ ... n15075141/``) holding the
50,000 validation JPEGs; the caller resolves it from ``--imagenet`` / ``FLOWVISION_IMAGENET``.
Labels follow the *model's* class order (timm's ImageNet-1K synsets unless ``expected_classes``
says otherwise): each image is labelled with the position of its folder's name in that list, so the
folder's own sort order never matters, and a folder set that differs from the model's classes (a
missing, extra or misnamed folder, a flat unsorted val folder) is a UserError naming the first
mismatch. A count other than 50,000 proceeds with a warning (accuracy is then not comparable
with the paper's), kept on the returned data set and also issued as a Python warning.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable, Optional, Sequence

from torchvision.datasets import ImageFolder

from ..errors import UserError
from .base import Indexed
from .real import hash_rank

N_VAL = 50_000
LAYOUT_HELP = ("pass --imagenet DIR (or set FLOWVISION_IMAGENET) to the ILSVRC2012 validation set sorted "
               "into 1000 synset folders (n01440764/ ... n15075141/, 50 JPEGs each; e.g. with the "
               "common valprep.sh script)")


class ImageNetCountWarning(UserWarning):
    """The val folder does not hold the 50,000 images of the official set."""


def imagenet_synsets() -> list[str]:
    """timm's ImageNet-1K class order: 1000 WordNet ids, the order of every ``*_in1k`` head."""
    from timm.data import ImageNetInfo

    return list(ImageNetInfo("imagenet-1k").label_names())


def imagenet_transform(pretrained_cfg: dict) -> Callable:
    """The eval transform the weights were made for (input size, crop_pct, interpolation, mean/std),
    from a timm ``pretrained_cfg``; ``resnet18.tv_in1k`` gives Resize(256) + CenterCrop(224), bilinear,
    as in the official code."""
    from timm.data import create_transform, resolve_data_config

    cfg = dict(pretrained_cfg)
    if not cfg:
        raise ValueError("imagenet_transform needs a non-empty timm pretrained_cfg")
    return create_transform(**resolve_data_config(pretrained_cfg=cfg), is_training=False)


class _ClassListFolder(ImageFolder):
    """ImageFolder whose class indices are given (the model's order), not the sorted folder names."""

    def __init__(self, root: str, classes: Sequence[str], transform=None):
        self._given_classes = list(classes)
        super().__init__(root, transform=transform)

    def find_classes(self, directory):
        return self._given_classes, {c: i for i, c in enumerate(self._given_classes)}


class ImageNetEval(Indexed):
    """The val set (or a subset) as ``(image, label, index)``; label = the model's class index.

    root: the folder; n_found: images found there; subset: the requested subset size or None;
    warnings: one line per oddity (e.g. a count other than 50,000), for the run record.
    """

    def __init__(self, base, indices, *, root: Path, n_found: int, subset: Optional[int],
                 warnings_: list[str]):
        super().__init__(base, indices)
        self.root, self.n_found, self.subset, self.warnings = root, n_found, subset, warnings_


def describe(ds: ImageNetEval) -> str:
    """The ``source_eval`` string of result.json: ``imagenet-val(50000)`` or ``imagenet-val:subset(5000)``."""
    if ds.subset is not None and len(ds) < ds.n_found:
        return f"imagenet-val:subset({len(ds)})"
    return f"imagenet-val({len(ds)})"


def check_classes(root: Path, expected: Sequence[str]) -> None:
    """UserError unless the class folders under ``root`` are exactly ``expected`` (in any order)."""
    if not root.is_dir():
        raise UserError(f"ImageNet val not found at {root}: {LAYOUT_HELP}")
    # hidden folders (.ipynb_checkpoints, ...) hold no classes; labels come from names, so skip them
    found = sorted(e.name for e in root.iterdir() if e.is_dir() and not e.name.startswith("."))
    if not found:
        raise UserError(f"ImageNet val at {root} has no class folders (the raw val archive is flat): "
                        f"{LAYOUT_HELP}")
    expected_set, found_set = set(expected), set(found)
    if found_set != expected_set:
        extra = [f for f in found if f not in expected_set]
        missing = [e for e in expected if e not in found_set]
        parts = [f"{len(found)} class folders, expected {len(expected)}"]
        if extra:
            parts.append(f"first unexpected folder {extra[0]!r}")
        if missing:
            parts.append(f"first missing {missing[0]!r}")
        raise UserError(f"ImageNet val at {root} does not match the model's classes "
                        f"({'; '.join(parts)}): {LAYOUT_HELP}")


def balanced_subset(samples: Sequence[tuple[str, int]], n_classes: int, subset: int, seed: int,
                    root: Path) -> list[int]:
    """Indices (ascending) of ``subset`` samples, ``subset // n_classes`` per class and one more for
    ``subset % n_classes`` classes, chosen by a seeded hash of each path: the same on every machine,
    and a smaller subset is contained in a larger one with the same seed."""
    per, rem = divmod(subset, n_classes)
    extra = set(sorted(range(n_classes), key=lambda c: hash_rank(seed, f"class/{c}"))[:rem])
    by_class: dict[int, list[tuple[str, int]]] = {}
    for i, (path, label) in enumerate(samples):
        by_class.setdefault(label, []).append((hash_rank(seed, Path(path).relative_to(root).as_posix()), i))
    chosen = []
    for label, ranked in by_class.items():
        chosen += [i for _, i in sorted(ranked)[:per + (label in extra)]]
    return sorted(chosen)


def load_imagenet_eval(root: Path, transform, *, subset: Optional[int] = None, seed: int = 0,
                       expected_classes: Optional[list[str]] = None) -> ImageNetEval:
    """The ImageNet-1K val set under ``root``; images go through ``transform`` (None: PIL images).

    expected_classes: the model's output classes in order (default: timm's 1000 synsets).
    subset: N -> a seeded class-balanced subset of N images (N/1000 per class).
    """
    root = Path(root)
    expected = list(expected_classes) if expected_classes is not None else imagenet_synsets()
    check_classes(root, expected)
    if subset is not None and subset < 1:
        raise UserError(f"ImageNet subset must be ≥ 1, got {subset}")
    try:
        base = _ClassListFolder(str(root), expected, transform=transform)
    except FileNotFoundError as e:  # a synset folder without images
        raise UserError(f"ImageNet val at {root} is incomplete ({str(e).splitlines()[0]}): "
                        f"{LAYOUT_HELP}") from None
    n = len(base.samples)
    notes = []
    if n != N_VAL:
        notes.append(f"ImageNet val at {root} holds {n} images, not {N_VAL}: "
                     f"source accuracy is not comparable with the paper's")
        warnings.warn(notes[-1], ImageNetCountWarning, stacklevel=2)
    indices = None
    if subset is not None and subset < n:
        indices = balanced_subset(base.samples, len(expected), subset, seed, root)
    return ImageNetEval(base, indices, root=root, n_found=n, subset=subset, warnings_=notes)
