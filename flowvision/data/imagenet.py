"""The ImageNet-1K validation set, read for the forgetting measurement.

    tf = imagenet_transform(model.pretrained_cfg)       # e.g. Resize(256) + CenterCrop(224)
    val = load_imagenet_eval(Path("/d/imagenet/val"), tf, subset=5000)
    describe(val)  # 'imagenet-val:subset(5000)' -> result.json "source_eval"

The folder is an ImageFolder of 1000 synset folders (``n01440764/ ... n15075141/``) holding the
50,000 validation JPEGs; the caller resolves it from ``--imagenet`` / ``FLOWVISION_IMAGENET``.
Labels follow the *model's* class order (timm's ImageNet-1K synsets unless ``expected_classes``
says otherwise): each image is labelled with the position of its folder's name in that list, so the
folder's own sort order never matters, and a folder that is not one of the model's classes (an
extra or misnamed folder, a flat unsorted val folder) is a UserError naming the first mismatch.
A folder holding only some of the classes (a labelled sample, e.g. ``flowvision data sample-photos``)
is accepted with a warning: the model still chooses among all its classes, and accuracy is over the
classes present. A partial folder or a count other than 50,000 proceeds with a warning (accuracy is
then not comparable with the paper's), kept on the returned data set and also issued as a Python
warning.

Any other folder of images (no synset folders) is read unlabelled by ``load_image_folder``: on it,
forgetting is the agreement and KL against the pre-trained model's predictions.

Every image file is checked before use (``images.check_images``): a bad one stops the run in one line,
or with ``skip_bad`` is left out, named in a warning and in ``skipped``.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable, Optional, Sequence

from torchvision.datasets import ImageFolder

from ..core.errors import UserError
from .base import Indexed
from .images import IMAGE_EXTENSIONS, IMAGE_SUFFIXES, CheckedImages, ImageFiles, check_images, cut, read_image, walk_files  # noqa: F401 (cut: part of this module's API)
from .splits import hash_rank
from .synsets import LAYOUT_HELP, SOURCE_EVAL_HELP, check_classes, class_folders, folder_what, imagenet_synsets, is_synset_folder, layout_help

N_VAL = 50_000


class ImageNetCountWarning(UserWarning):
    """The val folder does not hold the 50,000 images (or all 1000 classes) of the official set."""


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
    """ImageFolder over the given ``present`` class folders, labelled by their position in
    ``classes`` (the model's order), not by the sorted folder names."""

    def __init__(self, root: str, classes: Sequence[str], present: Sequence[str], transform=None):
        index = {c: i for i, c in enumerate(classes)}
        self._given = (list(present), {c: index[c] for c in present})
        super().__init__(root, transform=transform, loader=read_image)

    def keep(self, checked: CheckedImages) -> None:
        """Only the samples ``checked`` found usable."""
        self.samples = [self.samples[i] for i in checked.keep]
        self.imgs, self.targets = self.samples, [label for _, label in self.samples]

    def find_classes(self, directory):
        return self._given

    def make_dataset(self, directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False):
        """ImageFolder's samples, each file once (``images.walk_files``): a link loop in a class folder is one
        line naming it, not a walk round the loop that lists the same images dozens of times; a file reached
        through several links in one class folder counts once, one reached from two class folders (two labels)
        is a UserError naming both. FileNotFoundError for a class folder without an image, as torchvision's.
        In torchvision's order (sorted folders, then sorted names in each)."""
        samples, empty, owner = [], [], {}
        for name in sorted(class_to_idx):
            mine: dict = {}
            found = sorted((p for p in walk_files(Path(directory) / name, f"the images at {directory}", mine)
                            if p.name.lower().endswith(IMAGE_EXTENSIONS)), key=lambda p: (str(p.parent), p.name))
            for node, path in mine.items():
                if node in owner:
                    raise UserError(f"the images at {directory}: {path} and {owner[node]} are the same file (a link) "
                                    "under two class folders, so it has two labels; remove one")
                owner[node] = path
            samples += [(str(p), class_to_idx[name]) for p in found]
            empty += [] if found else [name]
        if empty and not allow_empty:
            raise FileNotFoundError(f"Found no valid file for the classes {', '.join(empty)}")
        return samples


class ImageNetEval(Indexed):
    """The val set (or a subset) as ``(image, label, index)``; label = the model's class index.

    root: the folder; n_found: usable images found there; subset: the requested subset size or None;
    warnings: one line per oddity (e.g. a count other than 50,000), for the run record; skipped:
    the unreadable files left out (``skip_bad``), as ``"<path> (<reason>)"``.
    """

    def __init__(self, base, indices, *, root: Path, n_found: int, subset: Optional[int],
                 warnings_: list[str], n_classes: Optional[int] = None, partial: bool = False,
                 skipped: Sequence[str] = ()):
        super().__init__(base, indices)
        self.root, self.n_found, self.subset, self.warnings = root, n_found, subset, warnings_
        self.n_classes, self.partial, self.skipped = n_classes, partial, list(skipped)


def describe(ds: ImageNetEval) -> str:
    """The ``source_eval`` string of result.json: ``imagenet-val(50000)``, ``imagenet-val:subset(5000)``
    or, for a folder with some of the classes, ``imagenet-partial(20 images, 20 classes)``."""
    if ds.n_classes is None:
        return f"images({len(ds)}, unlabelled)"
    if ds.partial:
        return f"imagenet-partial({len(ds)} images, {ds.n_classes} classes)"
    if ds.subset is not None and len(ds) < ds.n_found:
        return f"imagenet-val:subset({len(ds)})"
    return f"imagenet-val({len(ds)})"


def balanced_subset(samples: Sequence[tuple[str, int]], subset: int, seed: int, root: Optional[Path] = None) -> list[int]:
    """Indices (ascending) of ``subset`` samples, ``subset // k`` per class present (k of them) and
    one more for ``subset % k`` classes, chosen by a seeded hash of each path (relative to ``root``; None:
    the names as given): the same on every machine, and a smaller subset is contained in a larger one
    with the same seed."""
    by_class: dict[int, list[tuple[str, int]]] = {}
    for i, (path, label) in enumerate(samples):
        name = path if root is None else Path(path).relative_to(root).as_posix()
        by_class.setdefault(label, []).append((hash_rank(seed, name), i))
    per, rem = divmod(subset, len(by_class))
    extra = set(sorted(by_class, key=lambda c: hash_rank(seed, f"class/{c}"))[:rem])
    chosen = []
    for label, ranked in by_class.items():
        chosen += [i for _, i in sorted(ranked)[:per + (label in extra)]]
    return sorted(chosen)


def load_imagenet_eval(root: Path, transform, *, subset: Optional[int] = None, seed: int = 0,
                       expected_classes: Optional[list[str]] = None, skip_bad: bool = False,
                       flag: str = "--imagenet") -> ImageNetEval:
    """The ImageNet-1K val set under ``root``; images go through ``transform`` (None: PIL images).

    expected_classes: the model's output classes in order (default: timm's 1000 synsets).
    subset: N -> a seeded class-balanced subset of N images (N/1000 per class).
    skip_bad: leave unreadable image files out (named in a warning) instead of stopping.
    flag: the option that named the folder (--imagenet or --source-eval), for the messages.
    """
    root = Path(root)
    expected = list(expected_classes) if expected_classes is not None else imagenet_synsets()
    present = check_classes(root, expected, flag)
    if subset is not None and subset < 1:
        raise UserError(f"ImageNet subset must be ≥ 1, got {subset}")
    try:
        base = _ClassListFolder(str(root), expected, present, transform=transform)
    except FileNotFoundError:  # synset folders without images; torchvision's message lists every one
        empty = [c for c in present if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in (root / c).rglob("*"))]
        raise UserError(f"{folder_what(root, flag)} is incomplete ({len(empty)} class folders hold no image: "
                        f"{cut(empty)}): {layout_help(flag)}") from None
    checked = check_images([p for p, _ in base.samples], skip_bad=skip_bad, where=folder_what(root, flag), root=root)
    base.keep(checked)
    n = len(base.samples)
    partial = len(present) < len(expected)
    notes = [_skipped_note(checked.skipped, root)] if checked.skipped else []
    if partial:
        notes.append(f"ImageNet folder at {root} holds {len(present)} of the {len(expected)} classes and {n} "
                     f"images: accuracy over these classes only (the model still chooses among all "
                     f"{len(expected)}), not comparable with the paper's")
    elif n != N_VAL:
        notes.append(f"ImageNet val at {root} holds {n} images, not {N_VAL}: "
                     f"source accuracy is not comparable with the paper's")
    for note in notes:
        warnings.warn(note, ImageNetCountWarning, stacklevel=2)
    indices = None
    if subset is not None and subset < n:
        indices = balanced_subset(base.samples, subset, seed, root)
    return ImageNetEval(base, indices, root=root, n_found=n, subset=subset, warnings_=notes,
                        n_classes=len(present), partial=partial, skipped=checked.skipped)


def _skipped_note(skipped: list[str], root: Path) -> str:
    return (f"left out {len(skipped)} unreadable image{'s' if len(skipped) > 1 else ''} under {root} "
            f"(skip_bad_images): {cut(skipped)}")


def load_image_folder(root: Path, transform, skip_bad: bool = False) -> ImageNetEval:
    """Every image under ``root`` (any depth, sorted; every entry with an image suffix that is not a
    folder, so that a FIFO or a device named ``x.jpg`` is named, not silently passed over), unlabelled
    (label -1): the images that agreement and KL are measured on when no labels are at hand."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"source evaluation folder {root} does not exist; pass --source-eval DIR (a folder of images)")
    paths = [p for p in walk_files(root, f"source images at {root}") if p.suffix.lower() in IMAGE_SUFFIXES]
    if not paths:
        raise UserError(f"source evaluation folder {root} holds no image ({', '.join(IMAGE_SUFFIXES)}); "
                        "pass --source-eval DIR (a folder of images)")
    checked = check_images(paths, skip_bad=skip_bad, where=f"source images at {root}", root=root)
    paths = [paths[i] for i in checked.keep]
    return ImageNetEval(ImageFiles([(p, -1) for p in paths], transform), None, root=root, n_found=len(paths),
                        subset=None, warnings_=[_skipped_note(checked.skipped, root)] if checked.skipped else [],
                        n_classes=None, partial=False, skipped=checked.skipped)


# ---- a labelled sample of real photos, from a package -----------------------------------------------
def foolbox_photos() -> Path:
    """The folder of foolbox's 20 ImageNet photos (``imagenet_XX_<label>.jpg``), found without
    importing foolbox (installed with --no-deps, only its data folder is used)."""
    import importlib.util

    spec = importlib.util.find_spec("foolbox")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data" if spec and spec.submodule_search_locations else None
    if folder is None or not any(folder.glob("imagenet_*.jpg")):
        raise UserError("foolbox's sample photos are not installed: `pip install --no-deps foolbox==3.3.4` "
                        "(`make install` does it)")
    return folder


def build_sample_folder(out: Path, photos: Optional[Path] = None) -> dict:
    """Copy ``imagenet_XX_<label>.jpg`` photos (default: foolbox's) into ``out/<synset>/``, the synset
    of each label taken from timm's ImageNet class order: a partial val folder for --imagenet or
    --source-eval. -> {"folder", "images", "classes"}."""
    import re
    import shutil

    from ..core.files import make_folder

    photos = Path(photos) if photos is not None else foolbox_photos()
    synsets = imagenet_synsets()
    files = sorted(photos.glob("imagenet_*_*.jpg"))
    if not files:
        raise UserError(f"no imagenet_XX_<label>.jpg photos in {photos}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file, not a folder; choose a new folder for the sample")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} is not empty; choose a new folder for the sample")
    classes = set()
    for path in files:
        label = int(re.fullmatch(r"imagenet_\d+_(\d+)\.jpg", path.name).group(1))
        if not 0 <= label < len(synsets):
            raise UserError(f"{path.name}: label {label} is not an ImageNet-1K class index (0–{len(synsets) - 1})")
        shutil.copyfile(path, make_folder(out / synsets[label]) / path.name)
        classes.add(label)
    return {"folder": str(out), "images": len(files), "classes": len(classes)}
