"""Splits that flowvision draws itself, each the same on every machine and run: the paper protocol's Stanford
Dogs split (one per official script, ``paper_splits``) and what share of a stage's test images an earlier
stage trained on (``seen_shares``); Caltech-101's 30 images per class (``caltech_split``); and the file a
split is written to once and checked against the images on every later read (``saved_split``), which own
image folders use too. Every draw is a seeded hash of each path (``hash_rank``), never an RNG's state.
"""
from __future__ import annotations

import hashlib
import json
import os
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


def _write_json_atomic(path: Path, obj: dict) -> bool:
    """Write ``obj`` to ``path`` via a temporary file; False (and nothing left behind) on failure."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(obj, indent=1))
        os.replace(tmp, path)  # a concurrent reader never sees half a file
        return True
    except OSError:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        return False


def saved_split(name: str, where: Path, candidates: list[Path], on_disk: list[str], classes: list[str],
                compute) -> tuple[dict, Path]:
    """A split written once and reused: -> ({"train": [relpath, ...], "test": [...], ...}, its file).
    The first existing file of ``candidates`` is read and must list exactly the images ``on_disk``
    (paths relative to ``where``) and ``classes``; with none, ``compute()`` makes the split and it is
    written to the first candidate that can be written. A file that is unreadable or stale is a
    UserError: a split never changes silently (an image moving from test to train would make runs
    incomparable)."""
    existing = next((p for p in candidates if p.is_file()), None)
    if existing is None:
        split = compute()
        path = next((p for p in candidates if _write_json_atomic(p, split)), None)
        if path is None:
            raise UserError(f"cannot write the {name} split file to {candidates[0]} or "
                            f"{candidates[1]}: make one of them writable (or set FLOWVISION_CACHE)")
        return split, path
    try:
        split = json.loads(existing.read_text())
        listed = set(split["train"]) | set(split["test"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{name} split file {existing} is unreadable ({type(e).__name__}): "
                        f"delete it to compute the split again") from None
    here = set(on_disk)
    if listed != here or split.get("classes") != list(classes):
        raise UserError(f"{name} split file {existing} does not match the images under "
                        f"{where} ({len(here - listed)} new, {len(listed - here)} gone): "
                        f"delete it to compute a new split")
    return split, existing
