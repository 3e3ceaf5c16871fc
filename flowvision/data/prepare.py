"""The archives that no library downloads, unpacked into the folders the loaders read: one call each.

    prepare_imagenet(Path("ILSVRC2012_img_val.tar"), Path("ILSVRC2012_devkit_t12.tar.gz"), Path("/d/imagenet/val"))
    prepare_dogs(Path("images.tar"), Path("lists.tar"), Path("/d"))    # -> /d/stanford_dogs/
    prepare_cars(Path("stanford-car-dataset-by-classes-folder.zip"), Path("/d"))   # -> /d/stanford_cars/

The contract, the same for the three:

* an archive is read as a stream, one member at a time (a tar of any compression; Cars also a zip):
  never a second full copy in memory, and nothing extracted that is not the data set's;
* everything is written into a hidden sibling of the destination (``.<name>.partial/<name>``), checked
  there, and renamed into place only when the check passes, so the destination either does not exist or
  is complete. The check is the one ``data status`` makes (``fetch.status_row``), after, for ImageNet,
  the counts the devkit declares (the real devkit: 50,000 images, 50 for each of 1000 classes);
* a destination that is already complete is left as it is (``already``: a no-op); one that exists and is
  not complete is never touched;
* nothing is written, renamed or removed through a symbolic link: a link planted at the staging folder,
  the lock or an incomplete destination is a one-line UserError naming it, and its target is untouched;
* what is placed is checked before it is placed: a member larger than its kind ever is (``MAX_BYTES``: an
  image, a list or devkit file) is refused before a byte of it is written, so a few MB of archive cannot
  decompress into GBs; every image decodes (``images.image_problem``; the bad ones are named); every split
  holds images (an empty train list is refused by the same check ``data status`` makes);
* a damaged, cut-short or wrong archive, a devkit that is not the val set's, a member whose name is too
  long for the file system, a full disk or a data root that cannot be written: one-line UserError, and the
  partial folder is removed.
"""
from __future__ import annotations

import contextlib
import re
import tarfile
import zipfile
import zlib
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator, Optional

from ..core.errors import UserError
from ..core.files import make_folder, not_a_link, remove_tree, writing
from .fetch import status_row
from .images import IMAGE_EXTENSIONS
from .specs import data_folder

CHUNK = 1 << 20
# The largest a member of each kind ever is, with room to spare: the largest JPEG of ImageNet, Stanford Dogs or
# Cars is a few MB, the devkit's meta.mat 2 MB and its ground truth 0.3 MB, a Dogs list under 1 MB.
MAX_BYTES = {"image": 64 << 20, "list": 32 << 20}
VAL_NAME = re.compile(r"(?:\./)?(ILSVRC2012_val_(\d{8})\.JPEG)")
GROUND_TRUTH, META = "data/ILSVRC2012_validation_ground_truth.txt", "data/meta.mat"
# What reading a damaged archive raises: tarfile's and zipfile's errors, a gzip/bz2/xz stream cut short
# or corrupt (EOFError, zlib.error, OSError), a zip member whose CRC is wrong (BadZipFile).
_DAMAGED = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError)


# ---------------------------------------------------------------------------------- the mechanism
def _archive(path: Path, what: str) -> Path:
    path = Path(path).expanduser().absolute()
    if not path.is_file():
        raise UserError(f"{what} {path} not found: give the path of the downloaded file")
    return path


def _damaged(archive: Path, e: BaseException) -> UserError:
    return UserError(f"{archive.name} is damaged, cut short or not a tar/zip archive "
                     f"({type(e).__name__}: {str(e) or 'no detail'}): download it again")


def members(archive: Path) -> Iterator[tuple[str, object, int]]:
    """(name, readable file, its size as the archive declares it) of every regular file in ``archive``, in
    archive order, one at a time (each readable only until the next is asked for). A zip is read through its index; anything else as a tar
    stream (any compression), which must end with its end-of-archive marker: a tar cut short between two
    members is found here, not only by the counts. (A tar whose last member is a zip can look like a zip
    at its end: the tar is tried first.)"""
    try:
        if not tarfile.is_tarfile(archive) and zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    if not info.is_dir():
                        with zf.open(info) as f:
                            yield info.filename, f, info.file_size
            return
        with open(archive, "rb") as raw, tarfile.open(fileobj=raw, mode="r|*") as tar:
            for member in tar:
                if member.isfile():
                    yield member.name, tar.extractfile(member), member.size
            # The stream ended at a zero block (the marker) only if a whole block was read past the last
            # header's start; a tar cut at or inside a header ends the loop quietly otherwise.
            if tar.fileobj.tell() - tar.offset != tarfile.BLOCKSIZE:
                raise tarfile.ReadError("it ends before its end-of-archive marker")
    except _DAMAGED as e:
        raise _damaged(archive, e) from None


def _bounded(name: str, size: int, kind: str, archive: Path) -> None:
    """A member declared larger than its kind ever is (``MAX_BYTES``) is refused before it is read."""
    if size > MAX_BYTES[kind]:
        raise UserError(f"{archive.name} holds {name[:120]!r} of {size / 2**20:,.0f} MiB, more than any {kind} file "
                        f"of the data set ({MAX_BYTES[kind] >> 20} MiB at most): it is not the archive it should be "
                        "(or a decompression bomb); nothing was put in place")


def _copy(src, path: Path, archive: Path, kind: str = "image") -> None:
    """``src`` (a member being read) into the new file ``path``, at most ``MAX_BYTES[kind]`` of it (a member
    whose data outgrow what its header declared is refused too): a read error is a damaged archive, a write
    error a full disk, a name too long or a folder that cannot be written (``files.write_failure``)."""
    written = 0
    if len(path.name.encode()) > 255 or len(str(path).encode()) > 4000:  # what Linux file systems take
        raise UserError(f"{archive.name} holds a member named {path.name[:60]!r}… ({len(path.name.encode())} bytes), "
                        "too long for a file name: it is not the archive it should be; nothing was put in place")
    with writing(path), open(path, "wb") as out:
        while True:
            try:
                chunk = src.read(CHUNK)
            except _DAMAGED as e:
                raise _damaged(archive, e) from None
            if not chunk:
                break
            written += len(chunk)
            _bounded(path.name, written, kind, archive)
            out.write(chunk)


def _safe(*parts: str) -> bool:
    """Every part a plain file or folder name (no '', '.', '..', no separator): a member cannot write
    outside the folder it is sorted into."""
    return all(p not in ("", ".", "..") and "/" not in p and "\\" not in p for p in parts)


@contextlib.contextmanager
def _staging(dest: Path) -> Iterator[Path]:
    """A new folder ``.<name>.partial/<name>`` beside ``dest`` to write into, under a lock; removed,
    whatever happens, unless ``_place`` moved it into place. A ``.partial`` of an interrupted earlier
    run is removed first (the lock says no other run is writing it)."""
    from filelock import FileLock, Timeout

    parent = make_folder(dest.parent)
    lock = FileLock(str(not_a_link(parent / f".{dest.name}.prepare.lock", "the lock of data prepare")))
    partial = not_a_link(parent / f".{dest.name}.partial", "the staging folder of data prepare")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise UserError(f"another `flowvision data prepare` is writing {dest}: wait for it to end") from None
    except OSError as e:
        raise UserError(f"cannot make the lock of data prepare in {parent} ({e.strerror or e}); choose a data "
                        "root you can write") from None
    try:
        remove_tree(partial, "the staging folder of an interrupted data prepare")
        yield make_folder(partial / dest.name)
    finally:
        try:
            remove_tree(partial, "the staging folder of data prepare")
        finally:
            lock.release()


def _place(stage: Path, dest: Path) -> None:
    """The checked folder ``stage`` becomes ``dest`` in one rename (an empty ``dest`` folder gives way;
    ``_existing`` has refused a link there)."""
    with writing(dest):
        if dest.is_dir() and not any(dest.iterdir()):
            dest.rmdir()
        stage.rename(dest)


def _existing(dest: Path, complete: Callable[[], Optional[str]]) -> bool:
    """True when ``dest`` is already complete (``complete()`` returns None, else why not); False when it
    does not exist or is an empty folder; a UserError when it holds something incomplete. Asked under
    ``_staging``'s lock, so that no other run places the folder between this check and ``_place``."""
    if dest.is_symlink():  # a complete folder behind a link is read, never written: nothing to do
        if dest.is_dir() and any(dest.iterdir()) and complete() is None:
            return True
        not_a_link(dest, "the destination")
    if not dest.exists() or (dest.is_dir() and not any(dest.iterdir())):
        return False
    if not dest.is_dir():
        raise UserError(f"{dest} is a file, not a folder: choose another destination (nothing was changed)")
    problem = complete()
    if problem is None:
        return True
    raise UserError(f"{dest} exists but is not complete ({problem}): move it away or delete it, then run "
                    f"this again (nothing was changed)")


def _decodes(stage: Path, made_from: str) -> None:
    """Every image placed in ``stage`` decodes (``images.image_problem``, on threads: it reads a file's header
    and end, and decodes in full only what it cannot judge so); the bad ones are named, nothing is placed."""
    from concurrent.futures import ThreadPoolExecutor

    from ..core.distributed import usable_cores
    from .images import cut, image_problem

    paths = sorted(p for p in stage.rglob("*") if p.name.lower().endswith(IMAGE_EXTENSIONS) and p.is_file())
    with ThreadPoolExecutor(min(8, usable_cores())) as pool:  # PIL decodes without holding the GIL
        problems = list(pool.map(image_problem, paths))
    bad = [f"{p.relative_to(stage).as_posix()} ({why})" for p, why in zip(paths, problems) if why]
    if bad:
        raise UserError(f"{made_from}: {len(bad)} of the {len(paths)} images cannot be read ({cut(bad)}), so nothing "
                        "was put in place; download the archive again")


def _checked(name: str, root: Path, imagenet: Optional[Path] = None, made_from: str = "") -> dict:
    """The ``data status`` row of ``name``, or the UserError of its problem (``made_from``: the archives
    that were unpacked into the partial folder checked, for the message)."""
    row = status_row(name, root, imagenet=imagenet)
    if not row["found"] and made_from:  # ``root`` is the staging folder, removed on the way out: not named
        import re

        problem = re.sub(r"[;,]? ?(see |run )?`flowvision [^`]*`[^;]*", "", row["problem"].replace(str(root), "the archive"))
        raise UserError(f"{made_from} did not make a complete {name}, so nothing was put in place (what was "
                        f"unpacked is removed): {problem}")
    if not row["found"]:
        raise UserError(row["problem"])
    return row


# ---------------------------------------------------------------------------------- ImageNet val
def read_devkit(devkit: Path) -> list[str]:
    """The synset of every val image, by file number: ``labels[i]`` is the WordNet id of
    ILSVRC2012_val_{i+1:08d}.JPEG. From ILSVRC2012_devkit_t12.tar.gz: data/ILSVRC2012_validation_ground_truth.txt
    (one ILSVRC2012_ID per line; 50,000 lines, 50 per class, in the real devkit) through data/meta.mat's
    synsets (ILSVRC2012_ID -> WNID of the leaf synsets, num_children == 0: 1000 of them).

    Parsed as torchvision's ``parse_devkit_archive`` parses it; its two parsers are nested inside that
    function, which also insists on the official archive's md5 and writes a meta.bin beside it, so they
    cannot be called on their own (nor on a devkit of a few classes)."""
    import io

    import numpy as np
    from scipy.io import loadmat

    from .imagenet import imagenet_synsets

    devkit = _archive(devkit, "devkit")
    found = {}
    for name, f, size in members(devkit):
        for want in (GROUND_TRUTH, META):
            if name == want or name.endswith("/" + want):
                _bounded(name, size, "list", devkit)
                try:
                    found[want] = f.read(MAX_BYTES["list"] + 1)
                except _DAMAGED as e:
                    raise _damaged(devkit, e) from None
                _bounded(name, len(found[want]), "list", devkit)
    missing = [w for w in (GROUND_TRUTH, META) if w not in found]
    if missing:
        raise UserError(f"{devkit.name} is not the ILSVRC2012 devkit (no {missing[0]} in it): pass "
                        f"ILSVRC2012_devkit_t12.tar.gz")
    try:
        synsets = np.atleast_1d(loadmat(io.BytesIO(found[META]), squeeze_me=True)["synsets"])
        leaf = np.atleast_1d(synsets["num_children"]) == 0
        index = {int(i): str(w) for i, w in zip(np.atleast_1d(synsets["ILSVRC2012_ID"])[leaf],
                                                np.atleast_1d(synsets["WNID"])[leaf], strict=True)}
    except (ValueError, KeyError, TypeError, IndexError, OSError) as e:
        raise UserError(f"{devkit.name}: {META} is not the ILSVRC2012 synset list ({type(e).__name__}: {e}): "
                        f"pass ILSVRC2012_devkit_t12.tar.gz") from None
    try:
        ids = [int(line) for line in found[GROUND_TRUTH].decode().split()]
    except (ValueError, UnicodeDecodeError):
        raise UserError(f"{devkit.name}: {GROUND_TRUTH} is not one class number per line: the devkit is "
                        f"damaged; download it again") from None
    unknown = sorted(set(ids) - set(index))
    if not ids or unknown:
        raise UserError(f"{devkit.name}: {GROUND_TRUTH} "
                        + (f"names class {unknown[0]}, which {META} does not list" if ids else "is empty")
                        + ": the devkit is damaged; download it again")
    labels = [index[i] for i in ids]
    foreign = sorted(set(labels) - set(imagenet_synsets()))
    if foreign:
        raise UserError(f"{devkit.name} labels images with {foreign[0]}, not an ImageNet-1K class: pass "
                        f"ILSVRC2012_devkit_t12.tar.gz")
    return labels


def _sort_val(val_tar: Path, labels: list[str], stage: Path) -> Counter:
    """Each val image of ``val_tar`` into ``stage/<its synset>/`` -> images per synset."""
    from ..core.console import progress

    seen: set[int] = set()
    counts: Counter = Counter()
    with progress() as bar:
        task = bar.add_task("sorting ImageNet val", total=len(labels), info="")
        for name, f, size in members(val_tar):
            match = VAL_NAME.fullmatch(name)
            if match is None:
                raise UserError(f"{val_tar.name} is not the ILSVRC2012 validation archive: it holds {name!r}, "
                                f"not ILSVRC2012_val_NNNNNNNN.JPEG files; pass ILSVRC2012_img_val.tar")
            number = int(match.group(2))
            if not 1 <= number <= len(labels):
                raise UserError(f"{val_tar.name} holds image {number}, but the devkit labels images 1 to "
                                f"{len(labels)}: the two archives do not belong together")
            if number in seen:
                raise UserError(f"{val_tar.name} holds {match.group(1)} twice: it is not the ILSVRC2012 "
                                f"validation archive; pass ILSVRC2012_img_val.tar")
            seen.add(number)
            _bounded(name, size, "image", val_tar)
            synset = labels[number - 1]
            folder = stage / synset
            if not counts[synset]:
                make_folder(folder)
            _copy(f, folder / match.group(1), val_tar)
            counts[synset] += 1
            bar.advance(task)
    return counts


def _count_problem(counts: Counter, declared: Counter) -> Optional[str]:
    """Why the images per synset differ from what the devkit declares, or None."""
    if counts == declared:
        return None
    short = sorted(s for s in declared if counts[s] != declared[s])
    example = short[0] if short else next(iter(set(counts) - set(declared)))
    return (f"{sum(counts.values()):,} of the {sum(declared.values()):,} images the devkit labels; {len(short)} "
            f"classes differ, e.g. {example} holds {counts[example]} of {declared[example]}")


def _folder_counts(folder: Path) -> Counter:
    return Counter({d.name: sum(1 for f in d.iterdir() if f.is_file())
                    for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")})


def prepare_imagenet(val_tar: Path, devkit: Path, out: Path) -> dict:
    """ILSVRC2012_img_val.tar sorted into ``out/<synset>/ILSVRC2012_val_NNNNNNNN.JPEG`` by the devkit's
    labels, the folder ``--imagenet`` reads. -> the ``data status`` row of ``out`` with ``already``
    (True: ``out`` was complete, nothing was done), ``classes`` and ``devkit_note`` (None for the official
    devkit, by torchvision's record of its md5; else a line saying that the labels are the given devkit's)."""
    from torchvision.datasets.imagenet import ARCHIVE_META
    from torchvision.datasets.utils import check_integrity

    val_tar = _archive(val_tar, "ImageNet val archive")
    out = Path(out).expanduser().absolute()
    labels = read_devkit(devkit)
    declared = Counter(labels)
    official = check_integrity(str(Path(devkit).expanduser()), ARCHIVE_META["devkit"][1])
    result = {"classes": len(declared), "devkit_note": None if official else (
        f"{Path(devkit).name} is not the official {ARCHIVE_META['devkit'][0]} (its md5 differs from "
        f"torchvision's record): the images are sorted by its labels")}
    with _staging(out) as stage:
        if _existing(out, lambda: _count_problem(_folder_counts(out), declared)):
            return {**_checked("imagenet", out.parent, out), **result, "already": True}
        problem = _count_problem(_sort_val(val_tar, labels, stage), declared)
        if problem:
            raise UserError(f"{val_tar.name} holds {problem}: it is cut short or not the val set of this "
                            f"devkit; download it again (nothing was written to {out})")
        _decodes(stage, val_tar.name)
        _checked("imagenet", out.parent, stage, made_from=f"{val_tar.name} and {Path(devkit).name}")
        _place(stage, out)
    return {**_checked("imagenet", out.parent, out), **result, "already": False}


# ---------------------------------------------------------------------------------- Stanford Dogs, Cars
def _prepare(name: str, root: Path, fill: Callable[[Path], None], made_from: str) -> dict:
    """``<root>/<name>/`` filled by ``fill(stage)`` from the archives ``made_from`` and checked as
    ``data status`` checks it -> its row with ``already``."""
    root = Path(root).expanduser().absolute()
    dest = data_folder(name, root)
    with _staging(dest) as stage:
        if _existing(dest, lambda: status_row(name, root)["problem"]):
            return {**_checked(name, root), "already": True}
        fill(stage)
        _decodes(stage, made_from)
        _checked(name, stage.parent, made_from=made_from)
        _place(stage, dest)
    return {**_checked(name, root), "already": False}


def prepare_dogs(images: Path, lists: Path, root: Path) -> dict:
    """Stanford Dogs' images.tar (Images/<breed>/*.jpg) and lists.tar (file_list.mat, train_list.mat,
    test_list.mat) into ``<root>/stanford_dogs/`` -> its ``data status`` row with ``already``."""
    images, lists = _archive(images, "Stanford Dogs images.tar"), _archive(lists, "Stanford Dogs lists.tar")

    def fill(stage: Path) -> None:
        for name, f, size in members(images):
            parts = PurePosixPath(name[2:] if name.startswith("./") else name).parts
            if len(parts) != 3 or parts[0] != "Images" or not _safe(*parts):
                hint = " (is it lists.tar?)" if name.endswith(".mat") else ""
                raise UserError(f"{images.name} is not Stanford Dogs' images.tar: it holds {name!r}, not "
                                f"Images/<breed>/<image>{hint}")
            _bounded(name, size, "image", images)
            _copy(f, make_folder(stage.joinpath(*parts[:2])) / parts[2], images)
        got = set()
        for name, f, size in members(lists):
            base = name[2:] if name.startswith("./") else name
            if "/" in base or not base.endswith(".mat") or not _safe(base):
                raise UserError(f"{lists.name} is not Stanford Dogs' lists.tar: it holds {name!r}, not "
                                f"train_list.mat, test_list.mat and file_list.mat")
            _bounded(name, size, "list", lists)
            _copy(f, stage / base, lists, "list")
            got.add(base)
        missing = sorted({"train_list.mat", "test_list.mat"} - got)
        if missing:
            raise UserError(f"{lists.name} is not Stanford Dogs' lists.tar: no {missing[0]} in it")

    return _prepare("stanford_dogs", root, fill, f"{images.name} and {lists.name}")


def prepare_cars(archive: Path, root: Path) -> dict:
    """A Stanford Cars archive sorted by class (``[...]/train/<class>/<image>`` and
    ``[...]/test/<class>/<image>``, e.g. Kaggle's 'stanford-car-dataset-by-classes-folder', whose images sit
    under car_data/car_data/) into ``<root>/stanford_cars/{train,test}/<class>/`` -> its ``data status`` row
    with ``already``. Other files in it (the CSV annotations) are left out."""
    archive = _archive(archive, "Stanford Cars archive")

    def fill(stage: Path) -> None:
        prefixes = set()
        for name, f, size in members(archive):
            parts = PurePosixPath(name).parts
            if len(parts) < 3 or parts[-3] not in ("train", "test") or not name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            prefixes.add(parts[:-3])
            if len(prefixes) > 1:
                a, b = sorted("/".join(p) or "." for p in prefixes)[:2]
                raise UserError(f"{archive.name} holds two train/test trees ({a}/ and {b}/): give an archive "
                                f"with one")
            if not _safe(*parts[-2:]):
                raise UserError(f"{archive.name} holds {name!r}, which cannot be a class folder's image")
            _bounded(name, size, "image", archive)
            _copy(f, make_folder(stage.joinpath(*parts[-3:-1])) / parts[-1], archive)
        if not prefixes:
            raise UserError(f"{archive.name} is not Stanford Cars sorted by class: no train/<class>/<image> "
                            f"or test/<class>/<image> in it")

    return _prepare("stanford_cars", root, fill, archive.name)
