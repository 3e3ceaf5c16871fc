"""Getting the data: where the data root is, what is there, and fetching what torchvision can.

    root = resolve_data_root(None)        # --data-root, else $FLOWVISION_DATA, else ./data
    data_status(root)                     # one dict per data set: found, counts, how to get it
    download("cifar10", root)             # torchvision's downloader into <root>/cifar10/

cifar10, cifar100, flowers102, dtd, oxford_pets and caltech101 download with torchvision (which
checks each archive's md5). Stanford Cars (torchvision's URL is dead), Stanford Dogs and ImageNet
are downloaded by hand and unpacked by ``flowvision data prepare`` (``prepare.py``); for them
``download`` raises a UserError naming where to get them and that command.
A network failure is a one-line UserError, never a traceback, and a download never waits forever
(a socket timeout applies while it runs).
"""
from __future__ import annotations

import os
import socket
import warnings
from pathlib import Path
from typing import Optional, Sequence

from ..core.errors import UserError
from ..core.registry import REAL_DATASETS, check_dataset
from .loaders import load_real_splits
from .specs import REAL_TASKS, data_folder

DEFAULT_DATA_ROOT = "./data"
SOCKET_TIMEOUT_S = 60

# Where each downloadable archive comes from (what torchvision fetches), for manual fetching.
SOURCES = {
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    "flowers102": "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/ (102flowers.tgz, imagelabels.mat, "
                  "setid.mat)",
    "dtd": "https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz",
    "oxford_pets": "https://www.robots.ox.ac.uk/~vgg/data/pets/data/ (images.tar.gz, annotations.tar.gz)",
    "caltech101": "https://data.caltech.edu/records/mzrjq-6wc02/files/caltech-101.zip (then extract "
                  "101_ObjectCategories.tar.gz)",
}
MANUAL_ONLY = (*(name for name, spec in REAL_TASKS.items() if not spec.downloadable), "imagenet")


def resolve_data_root(cli_value: Optional[str]) -> Path:
    """``--data-root`` if given, else ``$FLOWVISION_DATA``, else ``./data`` (made absolute)."""
    value = cli_value or os.environ.get("FLOWVISION_DATA") or DEFAULT_DATA_ROOT
    return Path(value).expanduser().absolute()


def resolve_imagenet(cli_value: Optional[str]) -> Optional[Path]:
    """``--imagenet`` if given, else ``$FLOWVISION_IMAGENET``, else None (not configured)."""
    value = cli_value or os.environ.get("FLOWVISION_IMAGENET")
    return Path(value).expanduser().absolute() if value else None


def how_to_get(name: str, root: Path) -> str:
    """The exact command that puts ``name`` in place (for the three that come as archives from elsewhere:
    where to get them, then the ``flowvision data prepare`` command that unpacks and checks them)."""
    if name == "stanford_cars":
        return ("download Stanford Cars sorted by class (torchvision's source is gone; e.g. the Kaggle copy "
                "'stanford-car-dataset-by-classes-folder', one archive holding train/<class>/ and "
                f"test/<class>/), then `flowvision data prepare stanford_cars --archive FILE --data-root {root}`")
    if name == "stanford_dogs":
        return ("download images.tar and lists.tar from http://vision.stanford.edu/aditya86/ImageNetDogs/, "
                "then `flowvision data prepare stanford_dogs --images images.tar --lists lists.tar "
                f"--data-root {root}`")
    if name == "imagenet":
        return ("download ILSVRC2012_img_val.tar and ILSVRC2012_devkit_t12.tar.gz from https://image-net.org "
                "(login needed), then `flowvision data prepare imagenet --val-tar ILSVRC2012_img_val.tar "
                "--devkit ILSVRC2012_devkit_t12.tar.gz --out DIR` and pass --imagenet DIR "
                "(or set FLOWVISION_IMAGENET)")
    return f"flowvision data download {name} --data-root {root}"


def status_row(name: str, root: Path, imagenet: Optional[Path] = None) -> dict:
    """What ``data status`` shows for one data set under ``root`` (for "imagenet": the val folder
    ``imagenet``): name, found, path, n_train, n_test, classes (None when not found), how_to_get, problem (why
    not found, or a note; None when all is well). The same check reads it for every caller."""
    if name == "imagenet":
        return _imagenet_row(imagenet, root)
    row = {"name": name, "found": False, "path": str(data_folder(name, root)), "n_train": None,
           "n_test": None, "how_to_get": how_to_get(name, root), "problem": None}
    try:
        train, test, _ = load_real_splits(name, root)
    except UserError as e:
        row["problem"] = str(e)
        return row
    row.update(found=True, n_train=len(train), n_test=len(test), classes=REAL_TASKS[name].num_classes)
    return row


def _imagenet_row(imagenet: Optional[Path], root: Path) -> dict:
    row = {"name": "imagenet", "found": False, "path": str(imagenet) if imagenet else None,
           "n_train": None, "n_test": None, "how_to_get": how_to_get("imagenet", root), "problem": None}
    if imagenet is None:
        row["problem"] = "no ImageNet folder given (--imagenet DIR or FLOWVISION_IMAGENET)"
        return row
    from .synsets import check_classes, imagenet_synsets

    try:
        check_classes(imagenet, imagenet_synsets())  # a missing or misnamed folder costs no torch import
        from .imagenet import load_imagenet_eval

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the count note is reported in the row instead
            val = load_imagenet_eval(imagenet, None)
    except UserError as e:
        row["problem"] = str(e)
        return row
    row.update(found=True, n_test=len(val), classes=val.n_classes, problem="; ".join(val.warnings) or None)
    return row


def data_status(root: Path, imagenet: Optional[Path] = None, folders: Sequence[str] = ()) -> list[dict]:
    """One dict per data set (the eight targets, each ``folder:PATH`` of ``folders``, then the ImageNet
    val set):
    name, found, path, n_train, n_test (None when not found), how_to_get, problem (why not found,
    or a note; None when all is well). Reads every split once (CIFAR: ~1 s); for caltech101 this
    computes and saves the split file if there is none yet."""
    from ..core.registry import folder_dataset, folder_path, is_folder
    from .folder import folder_status

    wrong = [name for name in folders if not is_folder(name)]
    if wrong:
        raise UserError(f"--dataset {wrong[0]}: give a folder of your own images as folder:PATH (the registered "
                        "data sets are listed anyway)")
    root = Path(root)
    rows = [status_row(name, root) for name in REAL_DATASETS]
    rows += [folder_status(folder_dataset(folder_path(name))) for name in folders]
    return rows + [_imagenet_row(imagenet, root)]


def _fetch(name: str, root: Path) -> None:
    """torchvision's downloader for ``name``, placing the files as ``real.py`` expects them."""
    from torchvision import datasets as tvd

    folder = str(data_folder(name, root))
    if name == "cifar10":
        tvd.CIFAR10(folder, train=True, download=True)
    elif name == "cifar100":
        tvd.CIFAR100(folder, train=True, download=True)
    elif name == "flowers102":
        tvd.Flowers102(folder, split="test", download=True)
    elif name == "oxford_pets":
        tvd.OxfordIIITPet(folder, download=True)
    elif name == "dtd":            # torchvision adds the dtd/ folder itself
        tvd.DTD(str(root), download=True)
    elif name == "caltech101":     # torchvision adds the caltech101/ folder itself
        tvd.Caltech101(str(root), download=True)
    else:
        raise ValueError(name)


def download(name: str, root: Path) -> dict:
    """Download ``name`` into ``<root>/<name>/`` (a no-op when the files are there and intact) and
    return its status row. Stanford Cars/Dogs and ImageNet: UserError naming the archives and the
    ``flowvision data prepare`` command."""
    import http.client
    import urllib.error

    root = Path(root)
    if name in MANUAL_ONLY:
        raise UserError(f"{name} cannot be downloaded automatically; {how_to_get(name, root)}")
    check_dataset(name, REAL_DATASETS)
    folder = data_folder(name, root)
    created = [p for p in (root, folder) if not p.exists()]
    manual = f"{SOURCES[name]} -> extract so that {folder}/{REAL_TASKS[name].layout} exists"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the data root {root} ({e.strerror}): choose another with "
                        f"--data-root or FLOWVISION_DATA") from None
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(SOCKET_TIMEOUT_S)  # urllib has no timeout of its own: never hang
    try:
        _fetch(name, root)
    except ImportError:
        pass  # flowers102 parses .mat files with scipy after the download; the check below says so
    except urllib.error.URLError as e:
        raise UserError(f"could not download {name}: {e.reason}; check your network or fetch it "
                        f"manually: {manual}") from None
    except (OSError, RuntimeError, http.client.HTTPException) as e:  # timeouts, refused, bad md5
        raise UserError(f"could not download {name}: {type(e).__name__}: {str(e) or 'no detail'}; "
                        f"check your network or fetch it manually: {manual}") from None
    finally:
        socket.setdefaulttimeout(previous_timeout)
        for path in reversed(created):  # leave no empty folder behind after a failed download
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()
    row = status_row(name, root)
    if not row["found"]:
        raise UserError(row["problem"])
    return row
