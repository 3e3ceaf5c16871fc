"""The paper's real target data sets: where their files live, their splits and their transforms.

    task = load_real_task("cifar10", Path("data"), image_size=224)   # -> TaskData
    task.train[0]  # (image (3, 224, 224) float32, label, index 0)

Every data set lives in its own folder ``<root>/<name>/`` (the layouts are in ``REAL_TASKS``, one
spec per name in ``registry.REAL_DATASETS``;
``flowvision data status`` prints them) and is read with torchvision's class for it where one exists,
else ``ImageFolder``. Nothing here downloads (see ``fetch.py``); missing or incomplete files are a
``UserError`` whose one line names the data set, the path looked at and the fix.
Importing this module does not import torch: the specs are plain data for the config and the CLI.

Transforms follow the official code (``vision/FLOW_ft.py``) at ``image_size`` = 224; a smaller
``image_size`` scales every size in the recipe (256 -> round(image_size * 256 / 224)) so tests run
at 16-32 px. ``augment=False`` gives the training split the eval transforms.

Deliberate differences from the official code:

* Stanford Dogs uses its official train/test lists (12,000 / 8,580 images), not a random 80/20 split
  of all images whose test part kept the training augmentation. The lists are read from
  ``train_list.txt``/``test_list.txt`` (one path relative to ``Images/`` per line) when present, else
  from the Stanford ``train_list.mat``/``test_list.mat`` (this needs scipy). Its transforms are the
  official ones for dogs (as for Stanford Cars: Resize((256, 256)), RandomCrop(224), flip, ColorJitter).
* Under ``protocol="paper"`` Stanford Dogs is split as the official code splits it: one ImageFolder
  of all 20,580 images, 80 % train / 20 % test at random (16,464 / 4,116), the test part read with the
  *training* transforms (the official test set is a view of the same augmented data set). The
  official ``random_split`` draws from whatever RNG state its script had reached, so its exact split
  cannot be recovered; ours is seeded (``data_seed``) by a hash of each path, the same on every
  machine and run. Each official script reached a different RNG state (it builds a different number
  of models first), so the linear probe (with standard FT), FLOW round 1 and round 2 each drew their
  own split, and about 80 % of a later script's test images were an earlier one's training images.
  ``dogs_split="per-stage"`` draws one split per script (``STAGE_SPLITS``; the probe's is the single
  split), ``"single"`` one split for every stage; ``seen_shares`` measures the overlap.
  ``PAPER_SPLITS`` names the data sets whose split the protocol changes.
* Caltech-101 has no official split; the official code read a pre-made train/test ImageFolder whose
  origin is not given. We use the standard Caltech-101 protocol: 30 training images per class, the
  rest for testing (3,060 / 6,084 images), chosen by a seeded hash of each file name, written once
  to a JSON index file and reused, so every run and machine sees the same split. Like the official
  code we keep ``BACKGROUND_Google`` as a class: 102 classes. The paper protocol uses this split
  too: the official pre-made train/test folders are of unknown origin and cannot be rebuilt.
* Flowers-102 trains on torchvision's ``train`` + ``val`` splits (2,040 images) and tests on ``test``,
  as the official code does; DTD likewise trains on ``train1`` + ``val1`` and tests on ``test1``
  (the official DTD entry could not run). DTD and Oxford-IIIT Pets, which the official code does not
  configure, use the Caltech recipe (RandomResizedCrop, flip, ColorJitter(0.2, 0.2, 0.2); test
  Resize(256), CenterCrop(224)) with ImageNet mean/std; Pets trains on ``trainval``.
* CIFAR files are checked for presence and parsed, not md5-hashed at every load (torchvision hashes
  180 MB each time); ``flowvision data download`` checks the archive's md5 when it fetches it.

Every other data set is a list of image files: torchvision's class for it finds them and their labels,
then each file is checked (``images.check_images``) and read by ``images.read_image`` (the pixels
torchvision's own loader gives). An unreadable file stops the run in one line, or with ``skip_bad``
is left out and listed in ``info["skipped_images"]``.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError
from ..registry import DOGS_SPLITS, PAPER_SPLITS, REAL_DATASETS, check_dataset, is_real  # noqa: F401 (API)

if TYPE_CHECKING:
    from .base import TaskData

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# The official code's CIFAR statistics (FLOW_ft.py), kept to the digits it used.
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)

CALTECH_TRAIN_PER_CLASS = 30
PAPER_TRAIN_FRACTION = 0.8          # the official Stanford Dogs split: int(0.8 * N) train, the rest test
# The official scripts whose Stanford Dogs splits differ (dogs_split="per-stage"), by the name of the split:
# the probe's is also standard FT's (the two scripts build the same models before splitting).
STAGE_SPLITS = {"probe": "linear_probing.py, standard_ft.py", "round1": "FLOW_ft.py",
                "round2": "FLOW_taskspecific_ft.py"}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's


@dataclass(frozen=True)
class RealSpec:
    """One real data set: class count, transform recipe, normalisation, files and split."""

    num_classes: int
    recipe: str          # "resize" | "resize_square" | "crop_jitter" | "square_crop_jitter"
    mean: tuple
    std: tuple
    layout: str          # the files expected under <root>/<name>/
    split: str           # how train/test are defined (recorded in TaskData.info)
    downloadable: bool   # torchvision can fetch it (`flowvision data download`)
    sizes: tuple = (0, 0)  # (train, test) images of the official split (the cost model's N)


_SPECS: dict[str, RealSpec] = {
    "cifar10": RealSpec(10, "resize", CIFAR10_MEAN, CIFAR10_STD,
                        "cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}",
                        "official train (50000) / test (10000)", True, sizes=(50000, 10000)),
    "cifar100": RealSpec(100, "resize", CIFAR100_MEAN, CIFAR100_STD,
                         "cifar-100-python/{train,test,meta}",
                         "official train (50000) / test (10000)", True, sizes=(50000, 10000)),
    "flowers102": RealSpec(102, "resize_square", IMAGENET_MEAN, IMAGENET_STD,
                           "flowers-102/{jpg/image_*.jpg,imagelabels.mat,setid.mat}",
                           "official train+val (2040) / test (6149)", True, sizes=(2040, 6149)),
    "caltech101": RealSpec(102, "crop_jitter", IMAGENET_MEAN, IMAGENET_STD,
                           "101_ObjectCategories/<class>/*.jpg (102 folders incl. BACKGROUND_Google)",
                           f"seeded {CALTECH_TRAIN_PER_CLASS} per class train / rest test, saved as JSON",
                           True, sizes=(3060, 6084)),
    "stanford_cars": RealSpec(196, "square_crop_jitter", IMAGENET_MEAN, IMAGENET_STD,
                              "train/<class>/*.jpg and test/<class>/*.jpg (196 class folders each)",
                              "train/ and test/ folders (8144 / 8041)", False, sizes=(8144, 8041)),
    "stanford_dogs": RealSpec(120, "square_crop_jitter", IMAGENET_MEAN, IMAGENET_STD,
                              "Images/<breed>/*.jpg plus train_list.txt/test_list.txt "
                              "(or train_list.mat/test_list.mat)",
                              "official train_list (12000) / test_list (8580)", False, sizes=(12000, 8580)),
    "dtd": RealSpec(47, "crop_jitter", IMAGENET_MEAN, IMAGENET_STD,
                    "dtd/{images/<class>/*.jpg,labels/train1.txt,val1.txt,test1.txt}",
                    "partition 1: train1+val1 (3760) / test1 (1880)", True, sizes=(3760, 1880)),
    "oxford_pets": RealSpec(37, "crop_jitter", IMAGENET_MEAN, IMAGENET_STD,
                            "oxford-iiit-pet/{images/*.jpg,annotations/trainval.txt,test.txt}",
                            "official trainval (3680) / test (3669)", True, sizes=(3680, 3669)),
}
REAL_TASKS: dict[str, RealSpec] = {name: _SPECS[name] for name in REAL_DATASETS}  # the registry's order


def data_folder(name: str, root: Path) -> Path:
    """``<root>/<name>``: the one folder a data set's files live in."""
    return Path(root) / name


def fix_hint(name: str, root: Path) -> str:
    """What the user should run to get ``name`` under ``root`` (part of every missing-data message)."""
    if REAL_TASKS[name].downloadable:
        return f"run `flowvision data download {name} --data-root {root}`"
    return (f"see `flowvision data status --data-root {root}` for where to get it and the "
            f"`flowvision data prepare {name}` command that unpacks it")


def _missing(name: str, root: Path, detail: str = "") -> UserError:
    where = data_folder(name, root)
    extra = f" ({detail})" if detail else ""
    return UserError(f"{name} not found under {where}{extra}: {fix_hint(name, root)}")


def _incomplete(name: str, root: Path, detail: str) -> UserError:
    return UserError(f"{name} under {data_folder(name, root)} is incomplete or corrupted ({detail}): "
                     f"fix or delete it, then {fix_hint(name, root)}")


# ----------------------------------------------------------------------------------- transforms
def build_transforms(name: str, image_size: int = 224, augment: bool = True):
    """(train, eval) transforms for ``name``: PIL image -> (3, image_size, image_size) float32."""
    spec = REAL_TASKS[name]
    return recipe_pil_transforms(spec.recipe, spec.mean, spec.std, image_size, augment)


def recipe_pil_transforms(recipe: str, mean, std, image_size: int = 224, augment: bool = True):
    """(train, eval) per-sample transforms of a recipe (``RealSpec.recipe``) at ``image_size``,
    normalised with ``mean``/``std``; ``augment=False``: the eval transform for both."""
    import torch
    from torchvision.transforms import v2

    from .decoded import scaled

    s, big = image_size, scaled(256, image_size)
    jitter = v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2)
    if recipe == "resize":                      # CIFAR: square 32-px images, so Resize(s) is s x s
        train, test = [v2.Resize(s), v2.RandomHorizontalFlip()], [v2.Resize(s)]
    elif recipe == "resize_square":             # flowers: squash to s x s
        train, test = [v2.Resize((s, s)), v2.RandomHorizontalFlip()], [v2.Resize((s, s))]
    elif recipe == "crop_jitter":               # caltech101, dtd, oxford_pets, folders of the user's images
        train = [v2.RandomResizedCrop(s), v2.RandomHorizontalFlip(), jitter]
        test = [v2.Resize(big), v2.CenterCrop(s)]
    elif recipe == "square_crop_jitter":        # stanford_cars, stanford_dogs
        train = [v2.Resize((big, big)), v2.RandomCrop(s), v2.RandomHorizontalFlip(), jitter]
        test = [v2.Resize((big, big)), v2.CenterCrop(s)]
    else:
        raise ValueError(f"unknown recipe {recipe!r}")
    tail = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    eval_tf = v2.Compose(test + tail)
    return (v2.Compose(train + tail) if augment else eval_tf), eval_tf


def timm_eval_config(recipe: str, image_size: int, mean, std) -> dict:
    """The eval transform of ``recipe`` (``recipe_pil_transforms``) in the terms of timm's data config,
    so that timm's ``create_transform`` rebuilds it from an exported config.json: Resize(big) +
    CenterCrop(s) is crop_pct = s / big with crop_mode 'center', Resize((big, big)) + CenterCrop(s) the
    same with 'squash'; the 'resize' recipes (and the synthetic tasks, already s × s) crop nothing.
    timm resizes to floor(s / crop_pct): the crop_pct written is one for which that is ``big``."""
    import math

    from .decoded import scaled

    s, big = image_size, scaled(256, image_size)
    crop_pct, mode = {"resize": (1.0, "center"), "resize_square": (1.0, "squash"), "synthetic": (1.0, "center"),
                      "crop_jitter": (None, "center"), "square_crop_jitter": (None, "squash")}[recipe]
    if crop_pct is None:
        crop_pct = next(c for c in (round(s / big, 4), s / big, s / (big + 0.5)) if math.floor(s / c) == big)
    return {"input_size": (3, s, s), "interpolation": "bilinear", "crop_pct": crop_pct, "crop_mode": mode,
            "mean": tuple(mean), "std": tuple(std)}


class Transformed:
    """``(image, label)`` data set -> ``(transform(image), label)``; lets train and train_eval share
    one loaded split (same samples, same order) with different transforms."""

    def __init__(self, base, transform):
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        image, label = self.base[i]
        return self.transform(image), label


# ------------------------------------------------------------------------------- split helpers
def hash_rank(seed: int, key: str) -> str:
    """A stable pseudo-random sort key (same on every machine and library version)."""
    return hashlib.sha1(f"{seed}/{key}".encode()).hexdigest()


def _image_folder(name: str, root: Path, folder: Path):
    """ImageFolder of ``folder`` (untransformed); missing folder or class without images -> UserError."""
    from torchvision.datasets import ImageFolder

    if not folder.is_dir():
        raise _missing(name, root, f"no folder {folder}")
    try:
        return ImageFolder(str(folder))
    except FileNotFoundError as e:  # no class folders, or a class folder without images
        raise _incomplete(name, root, str(e).splitlines()[0]) from None


def _relpaths(folder_ds) -> list[str]:
    base = Path(folder_ds.root)
    return [Path(p).relative_to(base).as_posix() for p, _ in folder_ds.samples]


def _check_classes(name: str, root: Path, classes, other=None) -> None:
    n = REAL_TASKS[name].num_classes
    if len(classes) != n:
        raise _incomplete(name, root, f"{len(classes)} classes, expected {n}")
    if other is not None and list(other) != list(classes):
        diff = sorted(set(classes) ^ set(other))
        raise _incomplete(name, root, "train and test classes differ"
                                      + (f", e.g. {diff[0]!r}" if diff else " in order"))


# ---------------------------------------------------------------------------------- per data set
def _cifar(name: str, root: Path):
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if name == "cifar10" else CIFAR100
    folder = data_folder(name, root)
    files = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    missing = [f for f in files if not (folder / cls.base_folder / f).is_file()]
    if len(missing) == len(files):
        raise _missing(name, root)
    if missing:
        raise _incomplete(name, root, f"{cls.base_folder}/{missing[0]} missing")

    def load(train: bool):
        # Presence is checked above; torchvision would md5 all 180 MB on every load (and reject
        # generated test files). Instance attributes shadow the class lists for this object only.
        ds = cls.__new__(cls)
        ds.train_list = [[f, None] for f, _ in cls.train_list]
        ds.test_list = [[f, None] for f, _ in cls.test_list]
        ds.meta = {**cls.meta, "md5": None}
        try:
            cls.__init__(ds, str(folder), train=train, download=False)
        except (OSError, EOFError, ValueError, KeyError, RuntimeError, pickle.UnpicklingError) as e:
            raise _incomplete(name, root, f"cannot parse the batch files: {type(e).__name__}: {e}") from None
        return ds

    train, test = load(True), load(False)
    _check_classes(name, root, train.classes)
    return train, test, {}


def _flowers(name: str, root: Path):
    from torch.utils.data import ConcatDataset
    from torchvision.datasets import Flowers102

    folder = data_folder(name, root)
    if not (folder / "flowers-102").is_dir():
        raise _missing(name, root)
    try:
        parts = {s: Flowers102(str(folder), split=s, download=False) for s in ("train", "val", "test")}
    except RuntimeError:  # torchvision: jpg/ missing or a .mat file missing / wrong md5
        raise _incomplete(name, root, "flowers-102/jpg, imagelabels.mat or setid.mat missing or "
                                      "not the official files") from None
    except ImportError:
        raise UserError("flowers102 needs scipy to read imagelabels.mat and setid.mat: "
                        "pip install scipy") from None
    return ConcatDataset([parts["train"], parts["val"]]), parts["test"], {}


def _dtd(name: str, root: Path):
    from torch.utils.data import ConcatDataset
    from torchvision.datasets import DTD

    if not (data_folder(name, root) / "dtd").is_dir():
        raise _missing(name, root)
    try:
        parts = {s: DTD(str(root), split=s, partition=1, download=False) for s in ("train", "val", "test")}
    except (OSError, ValueError) as e:
        raise _incomplete(name, root, f"{type(e).__name__}: {e}") from None
    # DTD derives its classes from each split file: a truncated file would shift the labels.
    _check_classes(name, root, parts["train"].classes, parts["test"].classes)
    _check_classes(name, root, parts["train"].classes, parts["val"].classes)
    return ConcatDataset([parts["train"], parts["val"]]), parts["test"], {}


def _pets(name: str, root: Path):
    from torchvision.datasets import OxfordIIITPet

    folder = data_folder(name, root)
    if not (folder / "oxford-iiit-pet").is_dir():
        raise _missing(name, root)
    try:
        train, test = (OxfordIIITPet(str(folder), split=s, download=False) for s in ("trainval", "test"))
    except RuntimeError:
        raise _incomplete(name, root, "oxford-iiit-pet/images or annotations missing") from None
    except (OSError, ValueError) as e:
        raise _incomplete(name, root, f"{type(e).__name__}: {e}") from None
    _check_classes(name, root, train.classes)
    return train, test, {}


def _cars(name: str, root: Path):
    folder = data_folder(name, root)
    if not folder.is_dir():
        raise _missing(name, root)
    train = _image_folder(name, root, folder / "train")
    test = _image_folder(name, root, folder / "test")
    _check_classes(name, root, train.classes, test.classes)
    return train, test, {}


def _read_list(name: str, root: Path, folder: Path, split: str) -> list[str]:
    """Stanford Dogs list ``split`` (train|test): paths relative to Images/, from .txt or .mat."""
    txt, mat = folder / f"{split}_list.txt", folder / f"{split}_list.mat"
    if txt.is_file():
        lines = [ln.strip() for ln in txt.read_text().splitlines()]
        paths = [ln for ln in lines if ln and not ln.startswith("#")]
    elif mat.is_file():
        try:
            from scipy.io import loadmat
        except ImportError:
            raise UserError(f"stanford_dogs: reading {mat} needs scipy: pip install scipy, or write "
                            f"{txt.name} with one path relative to Images/ per line "
                            f"(e.g. n02085620-Chihuahua/n02085620_5927.jpg)") from None
        try:
            paths = [str(p) for p in loadmat(str(mat), squeeze_me=True)["file_list"]]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise _incomplete(name, root, f"cannot read {mat.name}: {e}") from None
    else:
        raise _missing(name, root, f"no {txt.name} or {mat.name}")
    return [p[len("Images/"):] if p.startswith("Images/") else p for p in paths]


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


def _dogs_images(name: str, root: Path):
    """Stanford Dogs' ImageFolder of every image under Images/ (untransformed), its classes checked."""
    folder = data_folder(name, root)
    if not folder.is_dir():
        raise _missing(name, root)
    images = _image_folder(name, root, folder / "Images")
    _check_classes(name, root, images.classes)
    return images


def _paper_dogs(name: str, root: Path, seed: int, dogs_split: str):
    """(ImageFolder of all images, paper_splits(...), extra info) for the paper protocol."""
    images = _dogs_images(name, root)
    splits = paper_splits(_relpaths(images), seed, dogs_split)
    n_train, n_test = (len(p) for p in splits["probe"])
    drawn = "one draw per official script" if len(splits) > 1 else "one draw for every stage"
    return images, splits, {
        "split": f"paper protocol: seeded random 80/20 of all images ({n_train} / {n_test}, seed {seed}, {drawn}), "
                 f"test read with the training transforms", "dogs_split": dogs_split}


def _dogs(name: str, root: Path):
    from torch.utils.data import Subset

    folder = data_folder(name, root)
    images = _dogs_images(name, root)
    position = {p: i for i, p in enumerate(_relpaths(images))}
    splits = {}
    for split in ("train", "test"):
        paths = _read_list(name, root, folder, split)
        absent = [p for p in paths if p not in position]
        if absent:
            raise _incomplete(name, root, f"{len(absent)} images of {split}_list not under Images/, "
                                          f"e.g. {absent[0]}")
        splits[split] = [position[p] for p in paths]
    if set(splits["train"]) & set(splits["test"]):
        raise _incomplete(name, root, "train_list and test_list share images")
    return Subset(images, splits["train"]), Subset(images, splits["test"]), {}


def caltech_split(images, seed: int) -> dict:
    """The Caltech-101 split of an ImageFolder: per class the ``CALTECH_TRAIN_PER_CLASS`` files with
    the smallest seeded hash train (at most all but one, so every class is tested), the rest test."""
    all_rels = _relpaths(images)
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
    from ..config import default_cache_dir

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


def _caltech(name: str, root: Path, seed: int):
    from torch.utils.data import Subset

    folder = data_folder(name, root)
    categories = folder / "101_ObjectCategories"
    if not categories.is_dir():
        raise _missing(name, root, "no 101_ObjectCategories/")
    images = _image_folder(name, root, categories)
    _check_classes(name, root, images.classes)
    split, split_path = saved_split(name, categories, split_file_candidates(folder, seed), _relpaths(images),
                                    list(images.classes), lambda: caltech_split(images, seed))
    position = {p: i for i, p in enumerate(_relpaths(images))}
    train = Subset(images, [position[p] for p in split["train"]])
    test = Subset(images, [position[p] for p in split["test"]])
    return train, test, {"split_file": str(split_path)}


_LOADERS = {"cifar10": _cifar, "cifar100": _cifar, "flowers102": _flowers, "dtd": _dtd,
            "oxford_pets": _pets, "stanford_cars": _cars, "stanford_dogs": _dogs}


def load_real_splits(name: str, root: Path, *, seed: int = 0, protocol: str = "clean"):
    """(train, test, extra_info): untransformed ``(PIL image, label)`` data sets for ``name``;
    ``protocol`` matters only for the data sets in ``PAPER_SPLITS`` (whose paper split here is the
    probe's, which every stage shares under ``dogs_split="single"``)."""
    check_dataset(name, REAL_DATASETS)
    root = Path(root)
    if not data_folder(name, root).is_dir():  # before torchvision is imported (~6 s): data status stays instant
        raise _missing(name, root)
    if name == "caltech101":
        return _caltech(name, root, seed)
    if name in PAPER_SPLITS and protocol == "paper":
        from torch.utils.data import Subset

        images, splits, extra = _paper_dogs(name, root, seed, "single")
        train, test = splits["probe"]
        return Subset(images, train), Subset(images, test), extra
    return _LOADERS[name](name, root)


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
        images, splits, extra = _paper_dogs(name, root, seed, dogs_split)
        pools = {"all": images}
        parts = {split: (("all", train), ("all", test)) for split, (train, test) in splits.items()}
    else:
        train_base, test_base, extra = load_real_splits(name, root, seed=seed, protocol=protocol)
        pools, parts = {"train": train_base, "test": test_base}, TWO_SPLITS
    pools, kept, skipped = _checked_files(name, root, pools, skip_bad)
    if skipped:  # only then: a folder without a bad file keeps the fingerprint (and the stage keys) it had
        from rich.markup import escape

        from ..console import console
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
