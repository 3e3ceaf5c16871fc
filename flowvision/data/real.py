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
  machine and run. ``PAPER_SPLITS`` names the data sets whose split the protocol changes.
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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError
from ..registry import REAL_DATASETS, check_dataset, is_real  # noqa: F401 (is_real: part of this module's API)

if TYPE_CHECKING:
    from .base import TaskData

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# The official code's CIFAR statistics (FLOW_ft.py), kept to the digits it used.
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)

CALTECH_TRAIN_PER_CLASS = 30
PAPER_SPLITS = ("stanford_dogs",)   # data sets whose split differs under protocol="paper"
PAPER_TRAIN_FRACTION = 0.8          # the official Stanford Dogs split: int(0.8 * N) train, the rest test


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
    return f"see `flowvision data status --data-root {root}` for the manual steps"


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
    import torch
    from torchvision.transforms import v2

    from .decoded import scaled

    spec = REAL_TASKS[name]
    s, big = image_size, scaled(256, image_size)
    jitter = v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2)
    if spec.recipe == "resize":                 # CIFAR: square 32-px images, so Resize(s) is s x s
        train, test = [v2.Resize(s), v2.RandomHorizontalFlip()], [v2.Resize(s)]
    elif spec.recipe == "resize_square":        # flowers: squash to s x s
        train, test = [v2.Resize((s, s)), v2.RandomHorizontalFlip()], [v2.Resize((s, s))]
    elif spec.recipe == "crop_jitter":          # caltech101, dtd, oxford_pets
        train = [v2.RandomResizedCrop(s), v2.RandomHorizontalFlip(), jitter]
        test = [v2.Resize(big), v2.CenterCrop(s)]
    elif spec.recipe == "square_crop_jitter":   # stanford_cars, stanford_dogs
        train = [v2.Resize((big, big)), v2.RandomCrop(s), v2.RandomHorizontalFlip(), jitter]
        test = [v2.Resize((big, big)), v2.CenterCrop(s)]
    else:
        raise ValueError(f"unknown recipe {spec.recipe!r}")
    tail = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(spec.mean, spec.std)]
    eval_tf = v2.Compose(test + tail)
    return (v2.Compose(train + tail) if augment else eval_tf), eval_tf


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


def paper_split(relpaths: list[str], seed: int) -> tuple[list[int], list[int]]:
    """The official code's Stanford Dogs split, seeded: int(0.8 N) positions train, the rest test,
    in a random order fixed by ``seed`` and the paths alone (not by the listing order or an RNG)."""
    order = sorted(range(len(relpaths)), key=lambda i: hash_rank(seed, relpaths[i]))
    n_train = int(PAPER_TRAIN_FRACTION * len(relpaths))
    return sorted(order[:n_train]), sorted(order[n_train:])


def _dogs(name: str, root: Path, protocol: str = "clean", seed: int = 0):
    from torch.utils.data import Subset

    folder = data_folder(name, root)
    if not folder.is_dir():
        raise _missing(name, root)
    images = _image_folder(name, root, folder / "Images")
    _check_classes(name, root, images.classes)
    if protocol == "paper":
        train, test = paper_split(_relpaths(images), seed)
        return Subset(images, train), Subset(images, test), {
            "split": f"paper protocol: seeded random 80/20 of all images ({len(train)} / {len(test)}, "
                     f"seed {seed}), test read with the training transforms"}
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


def split_file_candidates(folder: Path, seed: int) -> list[Path]:
    """Where the Caltech split index lives: next to the data, else (read-only data) in the cache."""
    from ..config import default_cache_dir

    key = hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:10]
    return [folder / f"flowvision-split-seed{seed}.json",
            default_cache_dir() / "splits" / f"caltech101-{key}-seed{seed}.json"]


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


def _caltech(name: str, root: Path, seed: int):
    from torch.utils.data import Subset

    folder = data_folder(name, root)
    categories = folder / "101_ObjectCategories"
    if not categories.is_dir():
        raise _missing(name, root, "no 101_ObjectCategories/")
    images = _image_folder(name, root, categories)
    _check_classes(name, root, images.classes)
    candidates = split_file_candidates(folder, seed)
    existing = next((p for p in candidates if p.is_file()), None)
    if existing is not None:
        split_path = existing
        try:
            split = json.loads(existing.read_text())
            listed = set(split["train"]) | set(split["test"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UserError(f"caltech101 split file {existing} is unreadable ({type(e).__name__}): "
                            f"delete it to compute the split again") from None
        on_disk = set(_relpaths(images))
        if listed != on_disk or split.get("classes") != list(images.classes):
            raise UserError(f"caltech101 split file {existing} does not match the images under "
                            f"{categories} ({len(on_disk - listed)} new, {len(listed - on_disk)} gone): "
                            f"delete it to compute a new split")
    else:
        split = caltech_split(images, seed)
        split_path = next((p for p in candidates if _write_json_atomic(p, split)), None)
        if split_path is None:
            raise UserError(f"cannot write the caltech101 split file to {candidates[0]} or "
                            f"{candidates[1]}: make one of them writable (or set FLOWVISION_CACHE)")
    position = {p: i for i, p in enumerate(_relpaths(images))}
    train = Subset(images, [position[p] for p in split["train"]])
    test = Subset(images, [position[p] for p in split["test"]])
    return train, test, {"split_file": str(split_path)}


_LOADERS = {"cifar10": _cifar, "cifar100": _cifar, "flowers102": _flowers, "dtd": _dtd,
            "oxford_pets": _pets, "stanford_cars": _cars, "stanford_dogs": _dogs}


def load_real_splits(name: str, root: Path, *, seed: int = 0, protocol: str = "clean"):
    """(train, test, extra_info): untransformed ``(PIL image, label)`` data sets for ``name``;
    ``protocol`` matters only for the data sets in ``PAPER_SPLITS``."""
    check_dataset(name, REAL_DATASETS)
    root = Path(root)
    if name == "caltech101":
        return _caltech(name, root, seed)
    if name in PAPER_SPLITS:
        return _LOADERS[name](name, root, protocol, seed)
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


def _checked_files(name: str, root: Path, splits: dict, skip_bad: bool) -> tuple[dict, list]:
    """Each split of image files as an ``ImageFiles`` of its usable files (``images.check_images``,
    over all splits at once); -> (splits, skipped). Splits that are not files stay as they are."""
    from .images import ImageFiles, check_images

    samples = {k: image_samples(ds) for k, ds in splits.items()}
    if any(s is None for s in samples.values()):
        return splits, []
    every = [s for k in splits for s in samples[k]]
    checked = check_images([p for p, _ in every], skip_bad=skip_bad, where=f"{name} under {data_folder(name, root)}",
                           root=data_folder(name, root))
    keep, out, start = set(checked.keep), {}, 0
    for k in splits:
        n = len(samples[k])
        out[k] = ImageFiles([s for i, s in enumerate(samples[k], start) if i in keep])
        start += n
    return out, checked.skipped


def load_real_task(name: str, root: Path, *, image_size: int = 224, augment: bool = True,
                   seed: int = 0, data_path: str = "pil", cache_dir: Path | None = None,
                   protocol: str = "clean", skip_bad: bool = False) -> "TaskData":
    """The task ``name`` read from ``<root>/<name>/``, with the official split and transforms.

    train / train_eval: the same samples in the same order (indices 0..N-1), with the training /
    eval transforms; test: eval transforms. ``data_path`` "pil": images come out as
    (3, image_size, image_size) float32 through per-sample PIL transforms (the reference); "device":
    each split is decoded once into a uint8 cache under ``cache_dir`` (``data/decoded.py``) and the
    recipe runs batched on the device (each split's ``batch_transform``).
    ``seed`` picks the split where the data set has none (caltech101; stanford_dogs under the paper
    protocol); keep it fixed (0) across runs so that different training seeds share one split.
    ``protocol="paper"``: the official split where it differs (``PAPER_SPLITS``), its test part
    read with the training transforms as the official code does.
    ``skip_bad``: leave unreadable image files out (listed in ``info["skipped_images"]``) instead of
    stopping with a UserError that names them.
    """
    from .base import Indexed, TaskData

    train_base, test_base, extra = load_real_splits(name, root, seed=seed, protocol=protocol)
    bases, skipped = _checked_files(name, Path(root), {"train": train_base, "test": test_base}, skip_bad)
    train_base, test_base = bases["train"], bases["test"]
    if skipped:  # only then: a folder without a bad file keeps the fingerprint (and the stage keys) it had
        from rich.markup import escape

        from ..console import console
        from .images import cut

        extra = {**extra, "skipped_images": skipped}
        console.print(f"[yellow]warning:[/] left out {len(skipped)} unreadable images of {name} (skip_bad_images): "
                      f"{escape(cut(skipped))}", highlight=False, soft_wrap=True)
    spec = REAL_TASKS[name]
    info = {"dataset": name, "path": str(data_folder(name, Path(root))), "split": spec.split,
            "recipe": spec.recipe,
            "n_train": len(train_base), "n_test": len(test_base), "image_size": image_size,
            "augment": augment, "data_path": data_path, **extra}
    official_test = protocol == "paper" and name in PAPER_SPLITS  # the official test part: training transforms
    if data_path == "device":
        from .decoded import decoded, folder_fingerprint, stored
        from .device import recipe_transforms

        native = None
        if spec.recipe == "resize":
            w, h = train_base[0][0].size
            native = (h, w)
        store = stored(spec.recipe, image_size, native)
        files = folder_fingerprint(data_folder(name, Path(root)))
        splits = {}
        for split, base in (("train", train_base), ("test", test_base)):
            identity = {"dataset": name, "split": split, "recipe": spec.recipe, "image_size": image_size,
                        "files": files, "n": len(base), "extra": extra}
            splits[split], info[f"decoded_{split}"] = decoded(base, store.prepare, store.size, identity, cache_dir,
                                                             f"decoding {name} {split} ({len(base)} images)")
        train_b, eval_b = recipe_transforms(spec.recipe, image_size, spec.mean, spec.std)
        train_b = train_b if augment else eval_b
        return TaskData(name=name, num_classes=spec.num_classes,
                        train=Indexed(splits["train"], batch_transform=train_b),
                        train_eval=Indexed(splits["train"], batch_transform=eval_b),
                        test=Indexed(splits["test"], batch_transform=train_b if official_test else eval_b),
                        info=info)
    train_tf, eval_tf = build_transforms(name, image_size, augment)
    return TaskData(name=name, num_classes=spec.num_classes,
                    train=Indexed(Transformed(train_base, train_tf)),
                    train_eval=Indexed(Transformed(train_base, eval_tf)),
                    test=Indexed(Transformed(test_base, train_tf if official_test else eval_tf)), info=info)
