"""The paper's real target data sets: where their files live, their splits and their transforms.

    task = load_real_task("cifar10", Path("data"), image_size=224)   # -> TaskData
    task.train[0]  # (image (3, 224, 224) float32, label, index 0)

Every data set lives in its own folder ``<root>/<name>/`` (its spec: ``specs.REAL_TASKS``) and is read
by its loader (``loaders``), split where it has no split of its own (``splits``) and transformed by its
recipe (``recipes``, or batched on the device: ``device``). This module puts them together into the task.
Importing this module does not import torch.

Transforms follow the official code (``vision/FLOW_ft.py``) at ``image_size`` = 224; a smaller
``image_size`` scales every size in the recipe (256 -> round(image_size * 256 / 224)) so tests run
at 16-32 px. ``augment=False`` gives the training split the eval transforms.

Every other data set is a list of image files: torchvision's class for it finds them and their labels,
then each file is checked (``images.check_images``) and read by ``images.read_image`` (the pixels
torchvision's own loader gives). An unreadable file stops the run in one line, or with ``skip_bad``
is left out and listed in ``info["skipped_images"]``.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.registry import DOGS_SPLITS, PAPER_SPLITS
from .loaders import load_real_splits, paper_dogs
from .recipes import Transformed, recipe_pil_transforms
from .specs import REAL_TASKS, data_folder

if TYPE_CHECKING:
    from .base import TaskData


def image_samples(ds) -> list | None:
    """``(path, label)`` of every image of a torchvision split, in its order; None when its images
    are not files (CIFAR's arrays). Knows ImageFolder, Subset and ConcatDataset of them, and the
    file lists of Flowers102 and DTD (``_image_files``) and OxfordIIITPet (``_images``)."""
    from torch.utils.data import ConcatDataset, Subset

    if isinstance(ds, Subset):
        inner = image_samples(ds.dataset)
        return None if inner is None else [inner[i] for i in ds.indices]
    if isinstance(ds, ConcatDataset):
        parts = [image_samples(d) for d in ds.datasets]
        return None if any(p is None for p in parts) else [s for p in parts for s in p]
    if hasattr(ds, "samples"):
        return [(str(p), int(label)) for p, label in ds.samples]
    files = getattr(ds, "_image_files", None) or getattr(ds, "_images", None)
    if files is not None:
        return [(str(p), int(label)) for p, label in zip(files, ds._labels, strict=True)]
    return None


def _checked_files(name: str, root: Path, pools: dict, skip_bad: bool) -> tuple[dict, dict, list]:
    """Each pool of image files as an ``ImageFiles`` of its usable files (``images.check_images``, over all
    pools at once); -> (pools, kept, skipped), ``kept``: pool -> the positions it kept. Pools that are not
    files (CIFAR's arrays) stay as they are."""
    from .images import ImageFiles, check_images

    samples = {k: image_samples(ds) for k, ds in pools.items()}
    if any(s is None for s in samples.values()):
        return pools, {k: None for k in pools}, []
    every = [s for k in pools for s in samples[k]]
    checked = check_images([p for p, _ in every], skip_bad=skip_bad, where=f"{name} under {data_folder(name, root)}",
                           root=data_folder(name, root))
    keep, out, kept, start = set(checked.keep), {}, {}, 0
    for k in pools:
        kept[k] = [i for i in range(len(samples[k])) if start + i in keep]
        out[k] = ImageFiles([samples[k][i] for i in kept[k]])
        start += len(samples[k])
    return out, kept, checked.skipped


def _kept_positions(positions, kept):
    """Positions into a pool, renumbered into the pool with only its ``kept`` files (None: the whole pool)."""
    if positions is None or kept is None:
        return positions
    new = {old: i for i, old in enumerate(kept)}
    return [new[p] for p in positions if p in new]


def load_real_task(name: str, root: Path, *, image_size: int = 224, augment: bool = True,
                   seed: int = 0, data_path: str = "pil", cache_dir: Path | None = None,
                   protocol: str = "clean", dogs_split: str = DOGS_SPLITS[0], skip_bad: bool = False) -> "TaskData":
    """The task ``name`` read from ``<root>/<name>/``, with the official split and transforms.

    train / train_eval: the same samples in the same order (indices 0..N-1), with the training /
    eval transforms; test: eval transforms. ``data_path`` "pil": images come out as
    (3, image_size, image_size) float32 through per-sample PIL transforms (the reference); "device":
    each split is decoded once into a uint8 cache under ``cache_dir`` (``data/decoded.py``) and the
    recipe runs batched on the device (each split's ``batch_transform``).
    ``seed`` picks the split where the data set has none (caltech101; stanford_dogs under the paper
    protocol); keep it fixed (0) across runs so that different training seeds share one split.
    ``protocol="paper"``: the official split where it differs (``PAPER_SPLITS``), its test part
    read with the training transforms as the official code does; ``dogs_split`` "per-stage" gives the
    task the official scripts' other splits too (``TaskData.splits``: "round1", "round2"; the task
    itself is the probe's split), all views of one set of images, decoded once.
    ``skip_bad``: leave unreadable image files out (listed in ``info["skipped_images"]``) instead of
    stopping with a UserError that names them.
    """
    root = Path(root)
    # The official split: one pool of all images, each split a pair of position lists into it, and the
    # test part read with the training transforms (the official test set is a view of the augmented set).
    paper = protocol == "paper" and name in PAPER_SPLITS
    if paper:
        images, splits, extra = paper_dogs(name, root, seed, dogs_split)
        pools = {"all": images}
        parts = {split: (("all", train), ("all", test)) for split, (train, test) in splits.items()}
    else:
        train_base, test_base, extra = load_real_splits(name, root, seed=seed, protocol=protocol)
        pools, parts = {"train": train_base, "test": test_base}, TWO_SPLITS
    pools, kept, skipped = _checked_files(name, root, pools, skip_bad)
    if skipped:  # only then: a folder without a bad file keeps the fingerprint (and the stage keys) it had
        from rich.markup import escape

        from ..core.console import console
        from .images import cut

        parts = {split: tuple((pool, _kept_positions(positions, kept[pool])) for pool, positions in part)
                 for split, part in parts.items()}
        extra = {**extra, "skipped_images": skipped}
        console.print(f"[yellow]warning:[/] left out {len(skipped)} unreadable images of {name} (skip_bad_images): "
                      f"{escape(cut(skipped))}", highlight=False, soft_wrap=True)
    spec = REAL_TASKS[name]
    info = {"dataset": name, "path": str(data_folder(name, root)), "split": spec.split, "recipe": spec.recipe,
            "n_train": _size(pools, parts["probe"][0]), "n_test": _size(pools, parts["probe"][1]),
            "image_size": image_size, "augment": augment, "data_path": data_path, **extra}
    files = None
    if data_path == "device":  # the decoded caches' key: a listing of every file (the PIL path reads none)
        from .decoded import folder_fingerprint

        files = folder_fingerprint(data_folder(name, root))
    return make_task(name, spec, pools, parts, info, files=files, extra=extra, image_size=image_size,
                     augment=augment, data_path=data_path, cache_dir=cache_dir, official_test=paper)


TWO_SPLITS = {"probe": (("train", None), ("test", None))}  # a train pool and a test pool, every stage shares them


def _size(pools: dict, part) -> int:
    pool, positions = part
    return len(pools[pool]) if positions is None else len(positions)


def make_task(name: str, spec, pools: dict, parts: dict, info: dict, *, files, extra: dict, image_size: int,
              augment: bool, data_path: str, cache_dir, official_test: bool = False) -> "TaskData":
    """The TaskData of untransformed ``(PIL image, label)`` data sets with ``spec``'s recipe, normalisation
    and class count, by either data path (see ``load_real_task``). ``pools``: name -> data set;
    ``parts``: split -> ((pool, positions or None: all), (pool, positions)) for its train and test part;
    the split "probe" is the task itself, any other goes to ``TaskData.splits`` (``TWO_SPLITS``: one train
    and one test pool). ``info`` gets the decoded caches' keys. ``files`` (the fingerprint of the files the
    pools read; device path) and ``extra`` (what else decides the pools' contents) key the decoded caches.
    ``official_test``: the test parts get the training transforms (the paper protocol's Stanford Dogs)."""
    from .base import HOST_DRAWS, Indexed, TaskData

    if data_path == "device":
        from .decoded import decoded, stored
        from .device import recipe_transforms

        native = None
        if spec.recipe == "resize":
            w, h = next(iter(pools.values()))[0][0].size
            native = (h, w)
        store = stored(spec.recipe, image_size, native)
        arrays = {}
        for pool, base in pools.items():
            identity = {"dataset": name, "split": pool, "recipe": spec.recipe, "image_size": image_size,
                        "files": files, "n": len(base),
                        "extra": {} if pool == "all" else extra}  # "all": every image, whatever the split
            arrays[pool], info[f"decoded_{pool}"] = decoded(base, store.prepare, store.size, identity, cache_dir,
                                                            f"decoding {name} {pool} ({len(base)} images)")
        train_x, eval_x = recipe_transforms(spec.recipe, image_size, spec.mean, spec.std)
        train_x = train_x if augment else eval_x

        def view(part, transform):
            return Indexed(arrays[part[0]], indices=part[1], batch_transform=transform)
    else:
        info["draws"] = HOST_DRAWS
        train_x, eval_x = recipe_pil_transforms(spec.recipe, spec.mean, spec.std, image_size, augment)

        def view(part, transform):
            return Indexed(Transformed(pools[part[0]], transform), indices=part[1])

    def task(train, test) -> TaskData:
        return TaskData(name=name, num_classes=spec.num_classes, train=view(train, train_x),
                        train_eval=view(train, eval_x), test=view(test, train_x if official_test else eval_x),
                        info=info)

    tasks = {split: task(*part) for split, part in parts.items()}
    return replace(tasks.pop("probe"), splits=tasks)
