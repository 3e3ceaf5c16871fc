"""The real target data sets as plain data: each one's class count, transform recipe, normalisation, the
files expected under ``<root>/<name>/`` and its official split (``REAL_TASKS``, one spec per name in
``registry.REAL_DATASETS``; ``flowvision data status`` prints them), and the one-line errors a missing or
damaged data set gives. Importing this module does not import torch: the config, the dry run and the CLI
read it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..core.errors import UserError
from ..core.registry import REAL_DATASETS

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


SPECS: dict[str, RealSpec] = {
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

REAL_TASKS: dict[str, RealSpec] = {name: SPECS[name] for name in REAL_DATASETS}  # the registry's order


def data_folder(name: str, root: Path) -> Path:
    """``<root>/<name>``: the one folder a data set's files live in."""
    return Path(root) / name


def fix_hint(name: str, root: Path) -> str:
    """What the user should run to get ``name`` under ``root`` (part of every missing-data message)."""
    if REAL_TASKS[name].downloadable:
        return f"run `flowvision data download {name} --data-root {root}`"
    return (f"see `flowvision data status --data-root {root}` for where to get it and the "
            f"`flowvision data prepare {name}` command that unpacks it")


def missing(name: str, root: Path, detail: str = "") -> UserError:
    where = data_folder(name, root)
    extra = f" ({detail})" if detail else ""
    return UserError(f"{name} not found under {where}{extra}: {fix_hint(name, root)}")


def incomplete(name: str, root: Path, detail: str) -> UserError:
    return UserError(f"{name} under {data_folder(name, root)} is incomplete or corrupted ({detail}): "
                     f"fix or delete it, then {fix_hint(name, root)}")
