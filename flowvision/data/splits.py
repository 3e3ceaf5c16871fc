"""Splits that flowvision draws itself, each the same on every machine and run: the paper protocol's Stanford
Dogs split (one per official script, ``paper_splits``) and what share of a stage's test images an earlier
stage trained on (``seen_shares``); Caltech-101's 30 images per class (``caltech_split``); and the file a
split is written to once and checked against the images on every later read (``saved_split``), which own
image folders use too. Every draw is a seeded hash of each path (``hash_rank``), never an RNG's state.
"""
from __future__ import annotations

import hashlib
import os
from collections import Counter
from pathlib import Path

from ..core.errors import UserError
from ..core.registry import DOGS_SPLITS
from .images import IMAGE_EXTENSIONS
from .specs import CALTECH_TRAIN_PER_CLASS, PAPER_TRAIN_FRACTION, STAGE_SPLITS


def hash_rank(seed: int, key: str) -> str:
    """A stable pseudo-random sort key (same on every machine and library version)."""
    return hashlib.sha1(f"{seed}/{key}".encode()).hexdigest()


def relpaths(folder_ds) -> list[str]:
    base = Path(folder_ds.root)
    return [Path(p).relative_to(base).as_posix() for p, _ in folder_ds.samples]


def paper_split(relpaths: list[str], seed: int, draw: str = "probe") -> tuple[list[int], list[int]]:
    """The official code's Stanford Dogs split, seeded: int(0.8 N) positions train, the rest test,
    in a random order fixed by ``seed``, ``draw`` (a name in ``STAGE_SPLITS``: each is an independent
    draw) and the paths alone (not by the listing order or an RNG)."""
    salt = "" if draw == "probe" else f"{draw}/"
    order = sorted(range(len(relpaths)), key=lambda i: hash_rank(seed, salt + relpaths[i]))
    n_train = int(PAPER_TRAIN_FRACTION * len(relpaths))
    return sorted(order[:n_train]), sorted(order[n_train:])


def paper_splits(relpaths: list[str], seed: int, dogs_split: str) -> dict[str, tuple[list[int], list[int]]]:
    """{split name: (train positions, test positions)}: one per official script (``STAGE_SPLITS``) for
    ``dogs_split="per-stage"``, the probe's alone for ``"single"``."""
    if dogs_split not in DOGS_SPLITS:
        raise ValueError(f"dogs_split must be one of {DOGS_SPLITS}, got {dogs_split!r}")
    names = STAGE_SPLITS if dogs_split == "per-stage" else ("probe",)
    return {name: paper_split(relpaths, seed, name) for name in names}


def seen_shares(order: list[tuple[str, str]], splits: dict) -> dict:
    """What each training stage was tested on that an earlier one trained on. ``order``: the run's
    training stages in the order they train, each with the split it reads, [(stage, split name)];
    ``splits``: {split name: (train positions, test positions)}, positions into one list of images; a
    split not drawn separately is the probe's (dogs_split="single").
    -> {stage: {"split", "n_train", "n_test", "seen": {earlier stage: the share (0..1) of this stage's
    test images that stage trained on, "any": by any earlier stage (with two or more)}}}."""
    out, trained = {}, []
    for stage, name in order:
        name = name if name in splits else "probe"
        train, test = splits[name]
        tested = set(test)
        seen = {earlier: len(tested & images) / len(test) for earlier, images in trained}
        if len(trained) > 1:
            seen["any"] = len(tested & set().union(*(images for _, images in trained))) / len(test)
        out[stage] = {"split": name, "n_train": len(train), "n_test": len(test), "seen": seen}
        trained.append((stage, set(train)))
    return out


def folder_relpaths(folder: Path) -> list[str]:
    """The images of an ImageFolder tree, relative to ``folder``, in ImageFolder's order, listed
    without importing torch (``--dry-run`` draws the Stanford Dogs splits from it)."""
    rels = []
    for cls in sorted(e.name for e in os.scandir(folder) if e.is_dir()):
        for dirpath, _, names in sorted(os.walk(folder / cls, followlinks=True)):
            rels += [(Path(dirpath) / n).relative_to(folder).as_posix() for n in sorted(names)
                     if n.lower().endswith(IMAGE_EXTENSIONS)]
    return rels


def caltech_split(images, seed: int) -> dict:
    """The Caltech-101 split of an ImageFolder: per class the ``CALTECH_TRAIN_PER_CLASS`` files with
    the smallest seeded hash train (at most all but one, so every class is tested), the rest test."""
    all_rels = relpaths(images)
    by_class: dict[int, list[str]] = {}
    for rel, (_, label) in zip(all_rels, images.samples, strict=True):
        by_class.setdefault(label, []).append(rel)
    train = set()
    for rels in by_class.values():
        k = min(CALTECH_TRAIN_PER_CLASS, len(rels) - 1)
        train.update(sorted(rels, key=lambda r: hash_rank(seed, r))[:k])
    return {"dataset": "caltech101", "seed": seed,
            "rule": f"{CALTECH_TRAIN_PER_CLASS} images per class train (sha1 of seed/path), rest test",
            "classes": list(images.classes),
            "train": [r for r in all_rels if r in train], "test": [r for r in all_rels if r not in train]}


def split_file_candidates(folder: Path, seed: int, prefix: str = "caltech101", suffix: str = "") -> list[Path]:
    """Where a split index lives: next to the data (``flowvision-split-seed<seed><suffix>.json``),
    else (read-only data) in the cache, named by ``prefix`` and a hash of the folder's path."""
    from ..core.config import default_cache_dir

    key = hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:10]
    return [folder / f"flowvision-split-seed{seed}{suffix}.json",
            default_cache_dir() / "splits" / f"{prefix}-{key}-seed{seed}{suffix}.json"]


MAX_SPLIT_BYTES = 256 << 20  # a split of IN-1K train's 1.28 M paths is ~60 MB


def _write_split(path: Path, split: dict) -> bool:
    """Write ``split`` to ``path`` atomically; False (nothing left behind) when its folder cannot be written.
    Never through a link: a link at the file, or at the cache's ``splits`` folder, is a one-line UserError."""
    from ..core.files import atomic_write_json, not_a_link

    not_a_link(path, "a split file")
    not_a_link(path.parent, "the folder of a split file")
    try:
        atomic_write_json(path, split)
    except UserError:
        return False
    return True


def split_problem(split, on_disk: list[str], classes: list[str]) -> str | None:
    """Why a split file's contents are not a split of the images ``on_disk`` (paths relative to the data
    folder, the first part of each its class folder) into ``classes``, or None: two lists of paths, each path
    once, on one side only, every image on disk listed and no other, every class with a training image, and a
    test side that is not empty."""
    if not isinstance(split, dict) or not all(isinstance(split.get(k), list) and all(isinstance(r, str) for r in split[k])
                                              for k in ("train", "test")):
        return "it is not an object with a train and a test list of paths"
    train, test = split["train"], split["test"]
    for side, rels in (("train", train), ("test", test)):
        dup = next((r for r, n in Counter(rels).items() if n > 1), None)
        if dup is not None:
            return f"it lists {dup} twice in {side}"
    both = sorted(set(train) & set(test))
    if both:
        return f"it lists {both[0]} in both train and test{f' (and {len(both) - 1} more)' if len(both) > 1 else ''}"
    here, listed = set(on_disk), set(train) | set(test)
    if listed != here:
        new, gone = sorted(here - listed), sorted(listed - here)
        return (f"it does not match the images on disk ({len(new)} new, {len(gone)} gone, e.g. "
                f"{(new or gone)[0]})")
    if split.get("classes") != list(classes):
        return "its classes are not the class folders on disk"
    untrained = sorted(set(classes) - {r.split("/")[0] for r in train})
    if untrained:
        return f"no image of class {untrained[0]!r} is in train (every class needs one to be learnt)"
    if not test:
        return "its test side is empty"
    return None


def saved_split(name: str, where: Path, candidates: list[Path], on_disk: list[str], classes: list[str],
                compute) -> tuple[dict, Path]:
    """A split written once and reused: -> ({"train": [relpath, ...], "test": [...], ...}, its file).
    The first existing file of ``candidates`` is read and must be a split of exactly the images ``on_disk``
    (paths relative to ``where``) into ``classes`` (``split_problem``); with none, ``compute()`` makes the
    split and it is written to the first candidate that can be written. A file that is unreadable, stale or
    edited into something that is no split is a UserError naming it and the first problem: a split never
    changes silently (an image moving from test to train would make runs incomparable), and a split that
    trains on a test image or never on a class is not run. Deleting the file asks for a new one."""
    from ..core.files import not_a_link, read_json_file

    # a FIFO, a device or a link that leads nowhere counts as there (never read, never replaced); a folder in
    # the way does not (the next place is tried)
    existing = next((p for p in candidates if os.path.lexists(p) and not p.is_dir()), None)
    if existing is not None and not existing.exists():
        not_a_link(existing, "a split file")  # a link that leads nowhere: nothing is written through it
    if existing is None:
        split = compute()
        path = next((p for p in candidates if _write_split(p, split)), None)
        if path is None:
            raise UserError(f"cannot write the {name} split file to {candidates[0]} or "
                            f"{candidates[1]}: make one of them writable (or set FLOWVISION_CACHE)")
        return split, path
    try:
        split = read_json_file(existing, MAX_SPLIT_BYTES)
    except (OSError, ValueError) as e:
        raise UserError(f"{name} split file {existing} is unreadable ({str(e)[:80] or type(e).__name__}): "
                        "delete it to compute the split again") from None
    problem = split_problem(split, on_disk, classes)
    if problem:
        raise UserError(f"{name} split file {existing} is not a split of the images under {where}: {problem}; "
                        "fix it, or delete it to compute a new split")
    return split, existing
