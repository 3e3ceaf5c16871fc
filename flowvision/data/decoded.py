"""Decode once: a split's images as one uint8 array file, memory-mapped, reused by every run.

Decoding a JPEG and resizing it costs 1-2 ms of one core; reading the same pixels from a memory-mapped
uint8 array about 0.01 ms (``flowvision bench --data`` on one core of a 2-core machine, docs/speed.md:
517-776 vs 93,000-117,000 images/s). So each split is decoded once, by a DataLoader using every
core, at the size its recipe *starts* from, and what is random (crops, flips, colour jitter) or cheap
(normalisation) runs batched on the device (``data/device.py``):

    recipe              stored per image                       device, train / eval
    resize (CIFAR)      the original 32 x 32                   resize to s, flip / resize to s
    resize_square       Resize((s, s)): the eval pixels        flip / —
    square_crop_jitter  Resize((256, 256)) (scaled with s)     RandomCrop(s), flip, jitter / CenterCrop(s)
    crop_jitter         Resize(256) + CenterCrop(256)          RandomResizedCrop(s) of that square, flip,
                                                               jitter / CenterCrop(s)
    IN-1K val           Resize(256) + CenterCrop(224)                —

Every resize here runs on the decoded uint8 tensor (torchvision's antialiased bilinear tensor resize),
as ``forgetting.official_imagenet_transform`` does on the PIL path too, so the IN-1K pixels equal that
transform's exactly (tested). The official code and the PIL path of the target data sets resize the
PIL image instead: the same geometry (then a centre crop of a centre crop, the same crop when the two
margins are even, as at 224 px), with pixels that differ by at most one level (of 255; tested) on a
small share of the values. Measured on 20 real ImageNet photos (foolbox's), 0.004–0.011 % of the values
per recipe; on 35 generated photo-like images with hard edges, 0.15–2.4 % (docs/protocols.md).
One difference is deliberate and bounded: for ``crop_jitter`` sets (Caltech-101, DTD, Pets) RandomResizedCrop draws from the central
256 x 256 square of the image resized to 256 on its shorter side, not from the whole original image,
so crops never reach the ends of a long side (at most (w/h - 1)/2 of it on each side).

A cache lives in ``<cache_dir>/decoded/<key>/`` (images.npy, labels.npy, header.json); its key is
derived from what it is made of: the data set's files (paths, sizes, modification times), the split,
the recipe, the image size, the stored size and the format, so a changed folder gives a new cache.
The header carries that identity, the key, the shape and the sha256 of both arrays; before use every
one is verified against what the run asked for (its identity, its key, its image count and stored
shape) and both arrays against their checksums. A cache that fails any of it (damaged, or another
split's files copied in) is moved aside with one warning and rebuilt, the rule stage files follow.

The checksums are computed once: a cache whose arrays matched them gets a stamp (``verified.json``) of what
the file system says of those arrays (size, inode, modification and change times, in ns) and of its header's
bytes. A later run that finds the stamp equal to the files skips the hashing (IN-1K val's cache is 7.5 GB:
the full hash is tens of seconds per run); any write to an array changes its times (the change time cannot
be set back), and a copied file has another inode, so the full hash runs again. ``flowvision cache --verify``
hashes every cache in full whatever its stamp says (``verify_all``).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from ..core.files import DamagedFile, TMP_SUFFIX, make_folder, stable_hash
from ..core.distributed import usable_cores

FORMAT = 2  # 2: the header carries the cache's identity and key


def folder_fingerprint(folder: Path) -> str:
    """A hash of every file under ``folder``: relative path, size and modification time (of the link
    itself where a link leads nowhere: a loop or a dangling link is a file list entry, not an error)."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            try:
                st = path.stat()
            except OSError:
                st = path.lstat()
            h.update(f"{path.relative_to(folder).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


class Decoded(Dataset):
    """A decoded split: ``images`` (N, 3, H, W) uint8 (memory-mapped), ``labels`` (N,) int64;
    yields ``(uint8 tensor (3, H, W), label)``."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return torch.from_numpy(np.array(self.images[i])), int(self.labels[i])  # a copy: the map is read-only


def _plain(value):
    """``value`` as its JSON round trip (tuples become lists): how a header holds it."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _read(folder: Path, key: str, identity: dict, shape: list) -> Decoded:
    """The cache in ``folder`` after checking that it is the one asked for (key, identity, shape:
    [N, 3, H, W]) and that both arrays are whole; DamagedFile naming the first mismatch otherwise."""
    header_path = folder / "header.json"
    try:
        header = json.loads(header_path.read_text())
    except (OSError, ValueError, RecursionError):
        raise DamagedFile(header_path, "its header is missing or damaged") from None
    if not isinstance(header, dict):
        raise DamagedFile(header_path, "its header is not a JSON object")
    if header.get("format") != FORMAT:
        raise DamagedFile(header_path, f"it is of format {header.get('format')!r}, not {FORMAT}")
    held = header.get("identity")
    if held != _plain(identity):
        diff = next((k for k in sorted(_plain(identity)) if not isinstance(held, dict) or held.get(k) != _plain(identity)[k]),
                    "identity")
        shown = held.get(diff) if isinstance(held, dict) else held
        raise DamagedFile(header_path, f"it holds {diff} {str(shown)[:60]!r}, the run asked for "
                                       f"{str(_plain(identity).get(diff))[:60]!r}")
    if header.get("key") != key:
        raise DamagedFile(header_path, f"it holds the cache {header.get('key')!r}, not {key!r}")
    if header.get("shape") != list(shape):
        raise DamagedFile(header_path, f"it holds images of shape {header.get('shape')}, the run asked for {list(shape)}")
    _check_arrays(folder, header)
    try:
        images = np.load(folder / "images.npy", mmap_mode="r")
        labels = np.load(folder / "labels.npy")
    except (OSError, ValueError) as e:
        raise DamagedFile(folder / "images.npy", f"it cannot be read as an array ({str(e)[:60]})") from None
    if list(images.shape) != header.get("shape") or images.dtype != np.uint8 or labels.shape != (len(images),):
        raise DamagedFile(folder / "images.npy", "its shape does not match its header")
    return Decoded(images, labels)


STAMP = "verified.json"
ARRAYS = ("images", "labels")


def _stamp(folder: Path) -> dict:
    """What the file system says of the arrays now, and the header's digest: equal to a stamp written after a full
    check, nothing was written to them since (``_check_arrays``)."""
    out = {"header": hashlib.sha256((folder / "header.json").read_bytes()).hexdigest()}
    for name in ARRAYS:
        st = (folder / f"{name}.npy").stat()
        out[name] = [st.st_size, st.st_ino, st.st_dev, st.st_mtime_ns, st.st_ctime_ns]
    return out


def _check_arrays(folder: Path, header: dict, full: bool = False) -> None:
    """Both arrays against the header: their sizes always; their sha256 unless the stamp of an earlier full check
    still matches the files (or ``full``). DamagedFile naming the first that fails. A full check that passes
    writes the stamp (where the folder is writable)."""
    for name in ARRAYS:
        path = folder / f"{name}.npy"
        if not path.is_file() or path.stat().st_size != header.get(f"{name}_bytes"):
            raise DamagedFile(path, "missing or of the wrong size")
    try:
        now, held = _stamp(folder), json.loads((folder / STAMP).read_text())
    except (OSError, ValueError, RecursionError):
        now, held = None, None
    if not full and now is not None and held == now:
        return
    for name in ARRAYS:
        path = folder / f"{name}.npy"
        if _sha256(path) != header.get(f"{name}_sha256"):
            raise DamagedFile(path, "its checksum does not match its header")
    _write_stamp(folder)


def _write_stamp(folder: Path) -> None:
    from ..core.files import atomic_write_text

    try:
        atomic_write_text(folder / STAMP, json.dumps(_stamp(folder)))
    except OSError:
        pass  # a read-only cache: every run hashes it, as before stamps


def verify_all(cache_dir: Path) -> list[dict]:
    """``flowvision cache --verify``: every decoded cache under ``cache_dir`` checked in full (its header, its key
    against its folder's name, both arrays' sizes and sha256, whatever the stamp says); a damaged one is moved
    aside, as a run would. -> [{"key", "bytes", "ok", "reason"}], by key."""
    from filelock import FileLock

    from ..core.files import move_aside

    rows = []
    root = Path(cache_dir) / "decoded"
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink()) if root.is_dir() else []:
        if ".damaged-" in folder.name or not (folder / "header.json").exists():
            continue
        size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
        with FileLock(str(folder) + ".lock"):
            try:
                header = json.loads((folder / "header.json").read_text())
                if not isinstance(header, dict) or header.get("key") != folder.name:
                    raise DamagedFile(folder / "header.json", f"it holds the cache {header.get('key')!r}"
                                      if isinstance(header, dict) else "its header is not a JSON object")
                _check_arrays(folder, header, full=True)
                rows.append({"key": folder.name, "bytes": size, "ok": True, "reason": None})
            except (OSError, ValueError, RecursionError, DamagedFile) as err:
                reason = err.reason if isinstance(err, DamagedFile) else "its header is missing or damaged"
                move_aside(DamagedFile(folder, reason))
                rows.append({"key": folder.name, "bytes": size, "ok": False, "reason": reason})
    return rows


def _build(folder: Path, source: Dataset, prepare: Callable, size: tuple, workers: int, desc: str,
           key: str, identity: dict) -> None:
    """Decode every ``(PIL image, label)`` of ``source`` through ``prepare`` (-> uint8 (3, H, W) of
    ``size``) into ``folder``; the header is written last, so a killed build is never taken as done."""
    from torch.utils.data import DataLoader

    from ..core.console import progress
    from ..core.files import atomic_write_text

    make_folder(folder)
    n = len(source)
    tmp = folder / f".images.npy.{os.getpid()}{TMP_SUFFIX}"
    images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, 3, *size))
    labels = np.empty(n, dtype=np.int64)
    loader = DataLoader(_Prepared(source, prepare), batch_size=64, num_workers=workers, shuffle=False)
    start = 0
    with progress() as bar:
        task = bar.add_task(desc, total=n, info=f"{workers} workers", unit="image")
        for x, y in loader:
            images[start:start + len(y)] = x.numpy()
            labels[start:start + len(y)] = y.numpy()
            start += len(y)
            bar.advance(task, len(y))
    images.flush()
    del images
    os.replace(tmp, folder / "images.npy")
    np.save(folder / "labels.npy", labels)
    header = {"format": FORMAT, "key": key, "identity": _plain(identity), "shape": [n, 3, *size], "what": desc}
    for name in ("images", "labels"):
        path = folder / f"{name}.npy"
        header[f"{name}_bytes"], header[f"{name}_sha256"] = path.stat().st_size, _sha256(path)
    atomic_write_text(folder / "header.json", json.dumps(header, indent=1))
    _write_stamp(folder)  # the checksums were just taken from these files


class _Prepared(Dataset):
    def __init__(self, source, prepare):
        self.source, self.prepare = source, prepare

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i):
        image, label = self.source[i]
        x = self.prepare(image)
        return x, int(label)


def decoded(source: Dataset, prepare: Callable, size: tuple, identity: dict, cache_dir: Path,
            desc: str, workers: Optional[int] = None) -> tuple[Decoded, str]:
    """The decoded cache of ``source`` (built once, under a lock): -> (Decoded, key). ``identity``
    says what the split is made of (data set, split, recipe, image size, files fingerprint, count);
    with ``size`` and FORMAT it is the cache's key, and the header must hold it (``_read``)."""
    from ..core.files import file_lock, move_aside, owned_folder, remove_tree

    key = stable_hash("decoded", FORMAT, identity, list(size))
    folder = Path(cache_dir) / "decoded" / key
    shape = [len(source), 3, *size]
    owned_folder(folder.parent, "the decoded caches", below=Path(cache_dir))  # never written through a link
    with file_lock(Path(f"{folder}.lock"), "the lock of a decoded cache"):
        if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
            move_aside(DamagedFile(folder, "a file where the cache's folder should be"))
        elif (folder / "header.json").exists():
            try:
                return _read(folder, key, identity, shape), key
            except DamagedFile as err:
                move_aside(DamagedFile(folder, err.reason))
        elif folder.exists():  # a build that was killed: nothing in it is trusted
            for leftover in folder.iterdir():
                remove_tree(leftover, "a file of a decoded cache whose build was killed")
        workers = min(8, usable_cores()) if workers is None else workers
        _build(folder, source, prepare, size, workers, desc, key, identity)
        return _read(folder, key, identity, shape), key


def scaled(size: int, image_size: int) -> int:
    """A size of the 224-px recipe at ``image_size`` (e.g. 256 -> 18 at 16 px)."""
    return max(1, round(image_size * size / 224))


@dataclass(frozen=True)
class Stored:
    """How a recipe's images are stored: a PIL -> uint8 (3, H, W) function and its size."""

    prepare: Callable
    size: tuple


def stored(recipe: str, image_size: int, native: Optional[tuple] = None) -> Stored:
    """What ``recipe`` stores per image at ``image_size`` (see the module docstring); ``native`` is
    the (H, W) every image of a 'resize' data set already has."""
    from torchvision.transforms import v2


    s, big = image_size, scaled(256, image_size)
    if recipe == "resize":
        steps, size = [], native
    elif recipe == "resize_square":
        steps, size = [v2.Resize((s, s))], (s, s)
    elif recipe == "square_crop_jitter":
        steps, size = [v2.Resize((big, big))], (big, big)
    elif recipe == "crop_jitter":
        steps, size = [v2.Resize(big), v2.CenterCrop(big)], (big, big)
    elif recipe == "imagenet":
        steps, size = [v2.Resize(256, interpolation=v2.InterpolationMode.BILINEAR, antialias=True),
                       v2.CenterCrop(224)], (224, 224)
    else:
        raise ValueError(f"unknown recipe {recipe!r}")
    return Stored(v2.Compose([v2.PILToTensor(), *steps, _Check(size)]), size)


class _Check:
    """Last step of a storing transform: RGB, and the stored size (a data set whose images differ in
    size under a 'resize' recipe cannot be stored as one array)."""

    def __init__(self, size):
        self.size = tuple(size)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 1:
            x = x.expand(3, -1, -1)
        elif x.shape[0] == 4:
            x = x[:3]
        if tuple(x.shape[1:]) != self.size:
            raise ValueError(f"an image of size {tuple(x.shape[1:])} where {self.size} was expected")
        return x.contiguous()
