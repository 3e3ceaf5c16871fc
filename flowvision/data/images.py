"""Image files, read by one policy: every folder of images flowvision reads goes through here.

    checked = check_images(paths, skip_bad=cfg.skip_bad_images, where="ImageNet val at /d/val")
    paths = [paths[i] for i in checked.keep]     # checked.skipped: "n01/x.jpg (empty file)", ... for the record
    image = read_image(path)                     # PIL RGB: the loader of every image data set

A file is *usable* when it is a regular file once links are followed (a FIFO, a device, a socket, a
folder, a link loop or a dangling link is not, and is never opened: a FIFO cannot block a run), is not
empty, can be opened, holds an image format PIL knows, has at most ``PIL.Image.MAX_IMAGE_PIXELS``
pixels (PIL's decompression-bomb limit, 89,478,485 unless changed) and is whole: a JPEG ends with its
end-of-image marker and a PNG with its IEND chunk, or else it must decode completely (a JPEG with
padding after its marker still reads); any other format is decoded completely.

The policy, for target data and the images forgetting is measured on: a bad file stops the run before
anything is computed, with one line naming the first bad files and their count; with
``skip_bad_images`` the run goes on without them, and the run record lists which were left out (they
change the data, so they join the data's fingerprint and every stage key after it).

Cost: the check reads each file's header and last 64 bytes, no pixels, except for files that need a
full decode to be judged.
"""
from __future__ import annotations

import errno
import os
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from ..core.errors import UserError

if TYPE_CHECKING:
    from PIL import Image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's


def walk_files(folder: Path, where: str, seen: Optional[dict] = None) -> list[Path]:
    """Every file below ``folder`` (any depth, sorted by path; hidden files and folders skipped), each file
    once. Symbolic links are followed, as torchvision's ImageFolder follows them, but a folder reached again
    (a link back into one of its own ancestors: a loop) is a one-line UserError naming it, never walked
    round until the path is too long; a folder reached again by another way (two links to one folder) is
    walked once; a file reached by several paths (links, hard links) is listed once, under the first in
    sorted order. ``seen`` ((device, inode) -> path), shared between calls, carries that
    over several folders (a caller that must tell which folder a file was first seen in reads it). A link
    that leads nowhere is listed (the image check names it). ``where``: what the folder is, for the message."""
    seen = {} if seen is None else seen
    out: list[Path] = []
    walked: set = set()  # folders already walked (reached again through a link: their files are listed)

    def walk(path: Path, ancestors: frozenset) -> None:
        try:
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except OSError as e:
            raise UserError(f"{where}: {path} cannot be listed ({e.strerror}); make it readable or remove it") from None
        for entry in entries:
            if entry.name.startswith("."):
                continue
            child = Path(entry.path)
            try:
                st = os.stat(child)
            except OSError:
                out.append(child)  # a dangling link or one that leads to itself: named by the image check
                continue
            node = (st.st_dev, st.st_ino)
            if stat.S_ISDIR(st.st_mode):
                if node in ancestors:
                    raise UserError(f"{where}: {child} is a symlink loop (it leads back into a folder above it); "
                                    "remove the link") from None
                if node not in walked:
                    walked.add(node)
                    walk(child, ancestors | {node})
            elif node not in seen:
                seen[node] = child
                out.append(child)

    top = os.stat(folder)
    walk(Path(folder), frozenset({(top.st_dev, top.st_ino)}))
    return out


def cut(names: Sequence[str], k: int = 3) -> str:
    """'a, b, c and 977 more': long lists in messages are cut."""
    names = list(names)
    return ", ".join(names[:k]) + (f" and {len(names) - k} more" if len(names) > k else "")


@dataclass(frozen=True)
class CheckedImages:
    """What ``check_images`` found. keep: positions (ascending) of the usable files in the list it was
    given; skipped: ``"<path> (<reason>)"`` for every file left out (only with ``skip_bad``)."""

    keep: list
    skipped: list = field(default_factory=list)


class UnreadableImage(UserError):
    """A file that passed the check but does not decode (changed since, or damaged inside its data).

    Raised in a DataLoader worker, it reaches the main process rebuilt by torch from the worker's
    traceback text (``ExceptionWrapper.reraise`` calls the class with that text): the last line, our
    message, is what is kept, so the CLI still prints one line."""

    def __init__(self, message: str):
        if "Traceback" in message:
            message = message.rstrip().splitlines()[-1].split(": ", 1)[-1]
        super().__init__(message)


def _open_regular(path: str):
    """A binary file object for ``path`` when it is a regular file; -> (file, None) or (None, reason).
    stat() comes first, so a device or FIFO is never opened; the open is non-blocking and the opened
    file is checked again (a FIFO put in its place in between cannot block either)."""
    try:
        st = os.stat(path)
    except OSError as e:
        return None, {errno.ELOOP: "a link loop", errno.ENOENT: "a dangling link, or gone"}.get(e.errno, e.strerror or type(e).__name__)
    if not stat.S_ISREG(st.st_mode):
        return None, f"not a regular file ({_kind(st.st_mode)})"
    if st.st_size == 0:
        return None, "empty file"
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        return None, f"cannot be opened: {e.strerror}"
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None, "not a regular file"
    return os.fdopen(fd, "rb"), None


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a file"


def _whole(f, fmt: str) -> bool:
    """Whether the file ends as a complete JPEG or PNG does (cheap: its last 64 bytes)."""
    f.seek(0, os.SEEK_END)
    f.seek(max(0, f.tell() - 64))
    tail = f.read()
    if fmt == "JPEG":
        return tail.rstrip(b"\0").endswith(b"\xff\xd9")
    if fmt == "PNG":
        return tail.endswith(b"IEND\xaeB`\x82")
    return False


def image_problem(path) -> Optional[str]:
    """Why the file at ``path`` is not a usable image (see the module docstring), or None."""
    from PIL import Image

    f, reason = _open_regular(os.fspath(path))
    if f is None:
        return reason
    with f, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # judged below, against the limit itself
        try:
            image = Image.open(f)
            w, h = image.size
            limit = Image.MAX_IMAGE_PIXELS
            if limit and w * h > limit:
                return f"{w}×{h} pixels, over PIL's decompression-bomb limit of {limit:,}"
            if _whole(f, image.format):
                return None
            f.seek(0)
            Image.open(f).load()
        except Image.DecompressionBombError:
            return f"over PIL's decompression-bomb limit of {Image.MAX_IMAGE_PIXELS:,} pixels"
        except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, MemoryError) as e:
            text = str(e).splitlines()[0] if str(e) else type(e).__name__
            if "cannot identify image file" in text:
                return "not an image PIL can read"
            return "cut short" if "truncated" in text.lower() else f"cannot be decoded: {text[:80]}"
    return None


def check_images(paths: Sequence, *, skip_bad: bool, where: str, root: Optional[Path] = None) -> CheckedImages:
    """Check every file in ``paths`` (``image_problem``) before a run reads any of them.

    where: what the files are, for the message ("ImageNet val at /d/val"); root: paths are named
    relative to it in messages and the record. Every file bad and ``skip_bad`` or not, or some file
    bad without ``skip_bad``: a one-line UserError naming the first bad files and the count."""
    keep, bad = [], []
    for i, path in enumerate(paths):
        problem = image_problem(path)
        if problem is None:
            keep.append(i)
        else:
            shown = Path(path).relative_to(root).as_posix() if root is not None and Path(path).is_relative_to(root) else str(path)
            bad.append(f"{shown} ({problem})")
    if not bad:
        return CheckedImages(keep)
    first = cut(bad)
    if not keep:
        raise UserError(f"none of the {len(bad)} images in {where} can be read: {first}; fix or replace them")
    if not skip_bad:
        raise UserError(f"{len(bad)} of {len(paths)} images in {where} cannot be read: {first}; fix or remove them, "
                        "or add --set skip_bad_images=true to go on without them (the run record lists them)")
    return CheckedImages(keep, bad)


def read_image(path) -> "Image.Image":
    """The image at ``path`` as PIL RGB, the pixels torchvision's default loader gives; a file that is
    not a regular file or does not decode is an ``UnreadableImage`` naming it."""
    from PIL import Image

    f, reason = _open_regular(os.fspath(path))
    if f is None:
        raise UnreadableImage(f"image {path} cannot be read ({reason}); it changed after the check, fix or "
                              "remove it and run again")
    with f:
        try:
            return Image.open(f).convert("RGB")
        except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
            text = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UnreadableImage(f"image {path} cannot be decoded ({text[:80]}); it is damaged inside its data: "
                                  "fix or remove it and run again") from None


class ImageFiles:
    """``(path, label)`` pairs as a data set of ``(PIL RGB image, label)``, read by ``read_image``;
    ``transform`` (when given) is applied to the image."""

    def __init__(self, samples: Sequence, transform=None):
        self.samples = [(str(p), int(label)) for p, label in samples]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        image = read_image(path)
        return (self.transform(image) if self.transform is not None else image), label
