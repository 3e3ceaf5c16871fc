"""A folder of the user's own images as a target data set: ``--dataset folder:PATH``.

    task = load_folder_task("folder:/home/me/birds", image_size=224, cache_dir=Path("~/.cache/flowvision"))

Two layouts, told apart by the folder's sub-folders:

    PATH/train/<class>/*  and  PATH/test/<class>/*   the user's own split (``val/`` when there is no
                                                     ``test/``); the same class folders in both
    PATH/<class>/*                                   a seeded, stratified split: per class the
                                                     ``split_ratio`` share (rounded, at least one image
                                                     each side) with the smallest sha1 of seed/path
                                                     trains, the rest tests; written once beside the
                                                     data as ``flowvision-split-seed<S>-r<R>.json``
                                                     (as Caltech-101's) and reused, never silently redone

Class names are the folder names, in sorted order (labels 0..K-1, as torchvision's ImageFolder);
images are files with one of torchvision's image suffixes at any depth below a class folder (hidden
files and folders are skipped, other files ignored and counted), opened as torchvision's loader opens
them (PIL, ``convert("RGB")``: greyscale, RGBA, palette and 16-bit images become RGB the same way, and
EXIF orientation is not applied, as in torchvision's and timm's loaders). They go through the
Caltech-101 recipe (``crop_jitter``: RandomResizedCrop, flip, ColorJitter; test Resize(256),
CenterCrop(224)) with ImageNet mean/std, by the decoded cache and device augmentation like any real set.

The data set's identity is ``fingerprint``: a hash of every image's path relative to PATH, size and
modification time. It keys the task stage (so a changed, added or removed image re-keys every stage
that read the data) and the decoded caches, and the run record keeps it. The folder is checked before
anything is trained: every structural problem (no folder, one class, a class without images, train/
and test/ with different classes, a symlink loop, one file in two class folders or on both sides) is one
UserError naming the path; every file counts once (``images.walk_files``); every image is decoded once
per fingerprint (``image_problem``; a marker under ``<cache_dir>/checked/`` records what it found), and
an empty, non-regular or undecodable one is a UserError naming it, or with ``skip_bad_images`` is left
out and recorded. A written split file is checked against the folder (``splits.split_problem``).
Importing this module does not import torch: ``--dry-run`` and ``data status`` scan folders with it.
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import stat
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from ..core.distributed import usable_cores
from ..core.errors import UserError
from ..core.registry import folder_path
from .real import TWO_SPLITS, make_task
from .splits import hash_rank, saved_split, split_file_candidates
from .specs import IMAGENET_MEAN, IMAGENET_STD, RealSpec

if TYPE_CHECKING:
    from .base import TaskData

# torchvision.datasets.folder.IMG_EXTENSIONS, spelled out so that scanning a folder needs no torch
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
RECIPE = "crop_jitter"          # Caltech-101's: photos of any size and aspect
SPLIT_FOLDERS = ("train", "test", "val")
LAYOUTS = {"split": "train/ and test/ class folders", "classes": "class folders, seeded stratified split"}
HOW = ("lay it out as PATH/<class>/<image> (a seeded split is made) or PATH/train/<class>/<image> and "
       "PATH/test/<class>/<image>")


@dataclass(frozen=True)
class Listing:
    """What a folder holds, found without opening an image. ``train``/``test``: (path relative to
    ``root``, label) sorted by path; ``test`` is None for the class-folder layout (split later)."""

    root: Path
    layout: str                  # "split" | "classes" (LAYOUTS)
    classes: tuple
    train: tuple
    test: Optional[tuple]
    fingerprint: str
    test_folder: Optional[str] = None   # "test" | "val" in the split layout
    ignored: int = 0                    # files below class folders without an image suffix
    ignored_example: Optional[str] = None

    @property
    def images(self) -> list[str]:
        return [rel for rel, _ in self.train + (self.test or ())]


def _problem(where: Path, what: str) -> UserError:
    return UserError(f"folder data set {where}: {what}")


def _walk(folder: Path, root: Path, seen: dict, found: list, ignored: list) -> None:
    """Every non-hidden file below ``folder`` (``images.walk_files``: symbolic links followed, as ImageFolder
    does; a loop is a UserError; a file reached by several paths counts once), by path. ``seen`` is shared by
    every class folder of the listing: a file that is also an image of another class folder, or of the
    other side of the split, is a UserError naming both paths (one image, one class, one side)."""
    from .images import walk_files

    mine: dict = {}
    for path in walk_files(folder, f"folder data set {root}", mine):
        try:
            st = os.stat(path)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise _problem(path, "is a symlink loop; remove the link") from None
            what = "is a broken symbolic link" if path.is_symlink() else f"cannot be read ({e.strerror})"
            raise _problem(path, f"{what}; fix or remove it") from None
        node = (st.st_dev, st.st_ino)
        if node in seen:
            raise _problem(root, f"{path.relative_to(root)} and {seen[node].relative_to(root)} are the same file "
                                 "(a link, or a hard link): an image belongs to one class and one side of the split; "
                                 "remove one")
        seen[node] = path
        (found if path.suffix.lower() in IMAGE_SUFFIXES else ignored).append(path)


def _class_folders(folder: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    except OSError as e:
        raise _problem(folder, f"cannot be listed ({e.strerror})") from None


def image_problem(path: Path, decode: bool = True) -> Optional[str]:
    """Why the file at ``path`` cannot be a training image, or None. Without opening it: it must be a
    regular file (never a FIFO: reading one would wait forever) and not empty. With ``decode``: the one
    judge of every image flowvision reads (``images.image_problem``: it opens, is under PIL's
    decompression-bomb limit, and decodes in full, so a truncated JPEG fails here, not mid-epoch)."""
    try:
        st = os.stat(path)
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if st.st_size == 0:
        return "is empty (0 bytes)"
    if not decode:
        return None
    from .images import image_problem as decode_problem

    return decode_problem(path)


def _images_of(root: Path, classes: list[str], base: Path, need: int, seen: dict) -> tuple[list, list]:
    """(path relative to root, label) of every image under ``base/<class>``; a class folder with fewer
    than ``need`` images is a UserError. ``seen``: the files of the listing so far (``_walk``)."""
    samples, ignored = [], []
    for label, name in enumerate(classes):
        found: list = []
        top = base / name
        _walk(top, root, seen, found, ignored)
        if len(found) < need:
            held = "no image" if not found else f"{len(found)} image"
            raise _problem(top, f"class folder holds {held} ({', '.join(IMAGE_SUFFIXES)}); "
                                + ("add images or remove the folder" if need == 1 else
                                   f"a seeded split needs at least {need} per class (one trains, one tests): "
                                   "add images, or give train/ and test/ folders"))
        samples += [(p.relative_to(root).as_posix(), label) for p in found]
    return sorted(samples), ignored


def _bad_images(root: Path, bad: list) -> UserError:
    path, why = bad[0]
    more = f" (and {len(bad) - 1} more bad image files)" if len(bad) > 1 else ""
    return UserError(f"folder data set {root}: {path} {why}{more}; fix or remove it")


def scan(root: Path, files: bool = True) -> Listing:
    """The layout, classes and image files of the folder at ``root``; any structural problem is a
    one-line UserError naming the path, and so (``files``) is an image file that is empty or no regular file
    (no image is opened: see ``check_images``, which also judges those, and may leave them out)."""
    root = Path(root)
    if not root.exists() and not root.is_symlink():
        raise _problem(root, f"does not exist; {HOW}")
    if not root.is_dir():
        raise _problem(root, f"is not a folder; pass the folder that holds the class folders ({HOW})")
    top = _class_folders(root)
    test_folder = next((f for f in ("test", "val") if f in top), None)
    if "train" in top or test_folder:
        if "train" not in top or test_folder is None:
            raise _problem(root, f"holds {'train/' if 'train' in top else test_folder + '/'} but no "
                                 f"{'test/ or val/' if 'train' in top else 'train/'}; {HOW}")
        others = [f for f in top if f not in SPLIT_FOLDERS]
        if others:
            raise _problem(root, f"holds train/ and {test_folder}/ beside other folders ({others[0]!r}); {HOW}")
        classes = _class_folders(root / "train")
        test_classes = _class_folders(root / test_folder)
        if classes != test_classes:
            only_train = sorted(set(classes) - set(test_classes))
            only_test = sorted(set(test_classes) - set(classes))
            diff = (f"{only_train[0]!r} is only in train/" if only_train else f"{only_test[0]!r} is only in "
                    f"{test_folder}/")
            raise _problem(root, f"train/ and {test_folder}/ hold different class folders ({diff}); give both "
                                 "the same class names")
        _check_count(root / "train", classes)
        seen: dict = {}
        train, ignored = _images_of(root, classes, root / "train", 1, seen)
        test, ignored_test = _images_of(root, classes, root / test_folder, 1, seen)
        layout, ignored = "split", ignored + ignored_test
    else:
        classes = top
        _check_count(root, classes)
        train, ignored = _images_of(root, classes, root, 2, {})
        test, layout = None, "classes"
    bad = [(p, why) for p in (root / rel for rel, _ in train + (test or [])) if (why := image_problem(p, decode=False))]
    if bad and files:
        raise _bad_images(root, bad)
    return Listing(root=root, layout=layout, classes=tuple(classes), train=tuple(train),
                   test=tuple(test) if test is not None else None,
                   fingerprint=fingerprint(root, [rel for rel, _ in train + (test or [])]),
                   test_folder=test_folder if layout == "split" else None, ignored=len(ignored),
                   ignored_example=str(ignored[0]) if ignored else None)


def _check_count(where: Path, classes: list[str]) -> None:
    if not classes:
        raise _problem(where, f"holds no class folder; {HOW}")
    if len(classes) == 1:
        raise _problem(where, f"holds one class folder ({classes[0]!r}); a classifier needs at least 2 classes")


def fingerprint(root: Path, rels: list[str]) -> str:
    """A hash of the images' paths relative to ``root``, sizes and modification times (16 hex)."""
    h = hashlib.sha256()
    for rel in sorted(rels):
        st = os.stat(root / rel)
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def check_images(listing: Listing, cache_dir: Path, workers: Optional[int] = None,
                 skip_bad: bool = False) -> tuple[Listing, list[str]]:
    """Decode every image of ``listing`` once (``image_problem``), on ``workers`` threads. A bad one is a
    UserError naming it, or with ``skip_bad`` (``skip_bad_images``) it is left out: -> (the listing without
    the bad images, re-checked and re-fingerprinted; ``"<path> (<reason>)"`` for each left out). Done once per
    folder and fingerprint: a marker under ``<cache_dir>/checked/`` says what this listing decoded to."""
    from concurrent.futures import ThreadPoolExecutor

    from ..core.files import atomic_write_json, owned_folder, read_json_file, stable_hash

    checked = owned_folder(Path(cache_dir) / "checked", "the checked-images markers", below=Path(cache_dir))
    marker = checked / f"{stable_hash(str(listing.root), listing.fingerprint)[:16]}.json"
    try:
        held = read_json_file(marker, 1 << 24)
        bad = [(listing.root / rel, why) for rel, why in held.get("bad", [])]
    except (OSError, ValueError, AttributeError, TypeError):  # none yet, or not one flowvision wrote: check again
        paths = [listing.root / rel for rel in listing.images]
        with ThreadPoolExecutor(workers or min(8, usable_cores())) as pool:  # PIL decodes without holding the GIL
            problems = list(pool.map(image_problem, paths))
        bad = [(p, why) for p, why in zip(paths, problems) if why]
        atomic_write_json(marker, {"folder": str(listing.root), "fingerprint": listing.fingerprint,
                                   "images": len(paths), "bad": [[p.relative_to(listing.root).as_posix(), why]
                                                                  for p, why in bad]})
    if not bad:
        return listing, []
    if not skip_bad or len(bad) == len(listing.images):
        raise _bad_images(listing.root, bad)
    return _without(listing, {p.relative_to(listing.root).as_posix() for p, _ in bad}), [
        f"{p.relative_to(listing.root).as_posix()} ({why})" for p, why in bad]


def _without(listing: Listing, gone: set) -> Listing:
    """``listing`` without the images ``gone`` (paths relative to its root): each class still holds what its
    layout needs (one image each side of a given split, two to split), else a UserError naming the class."""
    need = {"split": 1, "classes": 2}[listing.layout]
    sides = [listing.train] + ([listing.test] if listing.test is not None else [])
    kept = [tuple((rel, label) for rel, label in side if rel not in gone) for side in sides]
    for side, rels in zip(sides, kept):
        counts = Counter(label for _, label in rels)
        short = sorted(label for label in {label for _, label in side} if counts[label] < need)
        if short:
            raise _problem(listing.root, f"class {listing.classes[short[0]]!r} keeps fewer than {need} usable image"
                                         f"{'s' if need > 1 else ''} once the unreadable ones are left out "
                                         "(skip_bad_images); fix or replace them")
    return dataclasses.replace(listing, train=kept[0], test=kept[1] if len(kept) > 1 else None,
                               fingerprint=fingerprint(listing.root, [rel for side in kept for rel, _ in side]))


# ---- the split ---------------------------------------------------------------------------------------
def stratified_split(listing: Listing, ratio: float, seed: int) -> dict:
    """The split of a class-folder layout: per class, round(ratio × n) images (at least one, at most
    n − 1) with the smallest seeded hash of their path train, the rest test."""
    by_class: dict[int, list[str]] = {}
    for rel, label in listing.train:
        by_class.setdefault(label, []).append(rel)
    train = set()
    for rels in by_class.values():
        k = min(max(1, round(ratio * len(rels))), len(rels) - 1)
        train.update(sorted(rels, key=lambda r: hash_rank(seed, r))[:k])
    return {"dataset": "folder", "seed": seed, "ratio": ratio,
            "rule": f"per class round({ratio:g} × n) images train (sha1 of seed/path), the rest test",
            "classes": list(listing.classes),
            "train": [r for r, _ in listing.train if r in train],
            "test": [r for r, _ in listing.train if r not in train]}


def split_files(listing: Listing, ratio: float, seed: int) -> list[Path]:
    return split_file_candidates(listing.root, seed, prefix="folder", suffix=f"-r{ratio:g}")


def splits(listing: Listing, ratio: float, seed: int, write: bool = True) -> tuple[list, list, dict]:
    """(train, test) as (path relative to root, label) lists, and what the record says of the split.
    The class-folder layout's split is read from its split file, or made and written (``write``)."""
    if listing.layout == "split":
        return list(listing.train), list(listing.test), {
            "split": f"train/ and {listing.test_folder}/ folders"}
    label = dict(listing.train)
    if not write:
        split, path = stratified_split(listing, ratio, seed), None
    else:
        split, path = saved_split("folder data set", listing.root, split_files(listing, ratio, seed),
                                  [rel for rel, _ in listing.train], list(listing.classes),
                                  lambda: stratified_split(listing, ratio, seed))
    info = {"split": f"seeded stratified split, {ratio:g} of each class trains (seed {seed})",
            "split_file": str(path) if path else None}
    return [(r, label[r]) for r in split["train"]], [(r, label[r]) for r in split["test"]], info


# ---- the task ----------------------------------------------------------------------------------------
class FolderImages:
    """``(PIL RGB image, label)`` for a list of (path relative to ``root``, label), with the class
    names (``classes``) of the labels."""

    def __init__(self, root: Path, samples: list, classes: tuple):
        self.root, self.samples, self.classes = Path(root), list(samples), list(classes)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        from .images import read_image

        rel, label = self.samples[i]
        return read_image(self.root / rel), label


def load_folder_task(name: str, *, image_size: int = 224, augment: bool = True, seed: int = 0,
                     split_ratio: float = 0.8, data_path: str = "pil", cache_dir: Path,
                     skip_bad: bool = False) -> "TaskData":
    """The task of ``folder:PATH`` (see the module docstring): the folder scanned and checked, its
    split read or made, its images through the Caltech-101 recipe by either data path
    (``real.make_task``). ``seed`` (data_seed) and ``split_ratio`` decide the class-folder layout's
    split; ``cache_dir`` holds the decoded caches and the checked-images markers. ``skip_bad``: leave
    unreadable images out (listed in ``info["skipped_images"]``; they change the fingerprint, so every key
    after it) instead of stopping with a UserError that names them."""
    from rich.markup import escape

    from ..core.console import console
    from ..core.files import stable_hash
    from .images import cut

    listing, skipped = check_images(scan(Path(folder_path(name)), files=False), cache_dir, skip_bad=skip_bad)
    if skipped:
        console.print(f"[yellow]warning:[/] left out {len(skipped)} unreadable images of {name} (skip_bad_images): "
                      f"{escape(cut(skipped))}", highlight=False, soft_wrap=True)
    train, test, split_info = splits(listing, split_ratio, seed)
    spec = RealSpec(len(listing.classes), RECIPE, IMAGENET_MEAN, IMAGENET_STD, LAYOUTS[listing.layout],
                    split_info["split"], False, sizes=(len(train), len(test)))
    info = {"dataset": name, "path": str(listing.root), "layout": LAYOUTS[listing.layout], **split_info,
            "recipe": RECIPE, "fingerprint": listing.fingerprint, "classes": list(listing.classes),
            "n_train": len(train), "n_test": len(test), "image_size": image_size, "augment": augment,
            "data_path": data_path, "ignored_files": listing.ignored, **({"skipped_images": skipped} if skipped else {})}
    extra = {"split": stable_hash(train, test)}  # which images each split holds: keys the decoded caches
    pools = {"train": FolderImages(listing.root, train, listing.classes),
             "test": FolderImages(listing.root, test, listing.classes)}
    return make_task(name, spec, pools, TWO_SPLITS, info, files=listing.fingerprint, extra=extra,
                     image_size=image_size, augment=augment, data_path=data_path, cache_dir=Path(cache_dir))


def folder_status(name: str, ratio: float = 0.8, seed: int = 0) -> dict:
    """One row of ``flowvision data status`` for ``folder:PATH``: found, counts, the problem (the
    UserError's line) when it cannot be used. Opens no image and writes nothing."""
    row = {"name": name, "found": False, "path": folder_path(name), "n_train": None, "n_test": None,
           "classes": None, "layout": None, "fingerprint": None, "problem": None,
           "how_to_get": f"{HOW} under {folder_path(name)}"}
    try:
        listing = scan(Path(folder_path(name)))
        existing = next((p for p in split_files(listing, ratio, seed) if os.path.lexists(p)), None)
        train, test, _ = splits(listing, ratio, seed, write=existing is not None)
    except UserError as e:
        row["problem"] = str(e)
        return row
    row.update(found=True, n_train=len(train), n_test=len(test), classes=len(listing.classes),
               layout=LAYOUTS[listing.layout], fingerprint=listing.fingerprint)
    if listing.ignored:
        row["problem"] = f"{listing.ignored} files without an image suffix ignored, e.g. {listing.ignored_example}"
    return row
