"""Files: atomic writes, checked files, content hashes for stage caching, and the provenance
every result carries.

A *checked* file (stage outputs, training checkpoints, the demo model) is one header line of JSON,
saying what the file is (e.g. stage name and key) with the length and sha256 of the payload, then
the payload written by torch.save. Reading it verifies all three before torch.load sees a byte, so a
truncated, zero-filled or swapped file is found (``DamagedFile``) instead of trusted.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import stat
import subprocess
import tempfile
import time
from pathlib import Path

from .errors import UserError


_UMASK = os.umask(0)
os.umask(_UMASK)


TMP_SUFFIX = ".tmp"


def make_folder(folder: Path) -> Path:
    """mkdir -p, with a one-line UserError when a part of the path is a file or cannot be written."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"cannot make folder {folder}: a part of that path is a file; choose another folder") from None
    except PermissionError:
        raise UserError(f"cannot make folder {folder}: permission denied; choose a folder you can write") from None
    except OSError as e:
        raise UserError(f"cannot make folder {folder}: {e.strerror}") from None
    return folder


def not_a_link(path: Path, what: str) -> Path:
    """``path`` itself when it is not a symbolic link (it need not exist); a one-line UserError naming the
    link and where it points otherwise. flowvision creates, removes and renames only inside the folders it
    owns: a link planted at such a path would carry the write (or the removal) somewhere else."""
    path = Path(path)
    if path.is_symlink():
        raise UserError(f"{path} ({what}) is a symbolic link to {os.readlink(path)}: flowvision does not write "
                        "through links; remove the link (its target is left as it is) and run this again")
    return path


def owned_folder(folder: Path, what: str, below: Path | None = None) -> Path:
    """``folder`` made (mkdir -p) for a command's own files: a run folder, the stage store, an export, figures,
    a decoded cache. Neither it nor any folder between ``below`` (a folder the user chose, e.g. the results
    folder, which may itself be a link) and it may be a symbolic link (``not_a_link``): a link there would
    carry every write and removal into the folder it points to. A file in the way is a one-line UserError."""
    folder = Path(folder)
    parts = folder.relative_to(below).parts if below is not None else (folder.name,)
    base = Path(below) if below is not None else folder.parent
    for part in parts:
        base = not_a_link(base / part, what)
        make_folder(base)
    return not_a_link(folder, what)  # made by another process meanwhile: still no link


def file_lock(path: Path, what: str):
    """A ``filelock.FileLock`` on the lock file ``path``, refused (``not_a_link``) when ``path`` is a symbolic
    link: filelock 3.x opens its file with O_TRUNC, truncating whatever a link there points to (4.3 refuses
    the link with ELOOP, a traceback). Taking it when the file cannot be made (a folder that cannot be
    written) is a one-line UserError."""
    return _GuardedLock(str(not_a_link(Path(path), what)))


class _GuardedLock:
    """A FileLock whose acquisition turns an OSError (the lock's folder cannot be written, a link put there
    meanwhile) into a UserError naming the lock file; ``timeout`` as FileLock's. As FileLock's, ``acquire``
    returns what releases it on leaving a ``with``, and ``with lock:`` acquires and releases."""

    def __init__(self, path: str):
        from filelock import FileLock

        self.path, self.lock = path, FileLock(path)

    def acquire(self, timeout: float = -1) -> "_Held":
        try:
            self.lock.acquire(timeout=timeout)
        except OSError as e:
            if isinstance(e, TimeoutError):  # filelock.Timeout: the caller's to handle
                raise
            raise UserError(f"cannot take the lock {self.path}: {e.strerror or e}; choose a folder you can "
                            "write, or remove what is at that path") from None
        return _Held(self)

    def release(self) -> None:
        self.lock.release()

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class _Held:
    """What ``_GuardedLock.acquire`` returns: leaving a ``with`` on it releases the lock."""

    def __init__(self, lock: _GuardedLock):
        self.lock = lock

    def __enter__(self) -> _GuardedLock:
        return self.lock

    def __exit__(self, *exc) -> None:
        self.lock.release()


def remove_file(path: Path, what: str) -> None:
    """Unlink ``path`` (a link as a link; gone already is fine); a removal that fails is a one-line UserError
    naming it, not ignored."""
    try:
        Path(path).unlink(missing_ok=True)
    except OSError as e:
        raise UserError(f"cannot remove {path} ({what}): {e.strerror or e}; remove it by hand and run this "
                        "again") from None


def remove_tree(path: Path, what: str) -> None:
    """Remove the folder (or file) ``path`` that flowvision made, links inside it as links (never what they
    point to); a link at ``path`` itself is refused (``not_a_link``), and a removal that fails is a one-line
    UserError naming what is left, not ignored."""
    import shutil

    path = not_a_link(path, what)
    try:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    except OSError as e:
        raise UserError(f"cannot remove {path} ({what}): {e.strerror or e}; remove it by hand and run this "
                        "again") from None


def _atomic(path: Path, write, size: int = 0) -> None:
    """Write through a temporary file in the same folder, then rename: a killed process leaves
    either the old file or the new one, never half of one. A full disk or an unwritable folder is a
    UserError naming the folder; the temporary file is removed."""
    path = not_a_link(Path(path), "a file flowvision writes")  # os.replace would swap the link for the file
    make_folder(path.parent)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
        with os.fdopen(fd, "wb") as f:
            write(f)
        shareable(tmp)
        os.replace(tmp, path)
    except OSError as e:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
        error = write_failure(e, path, size)
        if error is None:
            raise
        raise error from None
    except BaseException:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_failure(e: OSError, path: Path, size: int = 0) -> UserError | None:
    """The UserError for an OSError met while writing ``path`` (a full disk, a folder that cannot be
    written, a folder in the way), None for any other (a bug, raised as it is). ``size``: the bytes the
    write needed, when known, for the message."""
    path = Path(path)
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        need = f" (this file needs {size / 2**20:.1f} MiB)" if size else ""
        return UserError(f"no space left on the disk of {path.parent} while writing {path.name}{need}; "
                         "free space there (e.g. `flowvision cache --prune`) and run again")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT):  # ENOENT: /proc takes no new file
        return UserError(f"cannot write into {path.parent}: {e.strerror}; choose a folder you can write")
    if e.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
        return UserError(f"cannot write {path}: a folder of that name is in the way; choose another name")
    if e.errno == errno.ENAMETOOLONG:
        return UserError(f"cannot write {str(path)[:120]}…: its name ({len(path.name.encode())} bytes) or path is "
                         "too long for the file system; choose a shorter name or folder")
    if e.errno == errno.ENOTDIR:
        return UserError(f"cannot write {path}: a part of that path is a file, not a folder; choose another folder")
    if e.errno == errno.ELOOP:
        return UserError(f"cannot write {path}: a symbolic link on that path leads in a loop or is refused; "
                         "remove the link")
    return None


@contextlib.contextmanager
def writing(path: Path, size: int = 0):
    """Around writes to ``path``: an OSError ``write_failure`` knows becomes its UserError."""
    try:
        yield
    except OSError as e:
        error = write_failure(e, path, size)
        if error is None:
            raise
        raise error from None


def shareable(path) -> None:
    """Give a file the mode the umask allows (0666 & ~umask): mkstemp, and libraries that write through
    it, make 0600, and results are meant to be shared."""
    os.chmod(path, 0o666 & ~_UMASK)


def remove_orphans(folder: Path, names: list[str]) -> int:
    """Remove the temporary files that writers of ``folder/<name>`` left when they were killed; the
    caller holds the lock every such writer holds, so none of them is alive. -> how many."""
    removed = 0
    for name in names:
        for tmp in Path(folder).glob(f".{name}.*{TMP_SUFFIX}"):
            remove_file(tmp, "a temporary file a killed writer left")
            removed += 1
    return removed


def read_json_file(path: Path, limit: int):
    """The JSON value in ``path``, read only when it is a regular file of at most ``limit`` bytes (a
    FIFO is never opened, megabytes are never parsed); ValueError naming what is wrong otherwise,
    OSError when it cannot be read. NaN and Infinity parse (as Python's json does): callers check."""
    if not stat.S_ISREG(os.stat(path).st_mode):  # a device is never opened
        raise ValueError("not a regular file")
    with os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as f:
        st = os.fstat(f.fileno())  # what was opened, should the path have changed since
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("not a regular file")
        if st.st_size > limit:
            raise ValueError(f"{st.st_size / 2**20:.1f} MiB, more than such a file ever holds ({limit / 2**20:g} MiB)")
        data = f.read(limit + 1)
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("nested too deeply to be JSON flowvision wrote") from None


def atomic_write_stream(path: Path, write) -> None:
    """``write(f)`` (e.g. a figure's ``savefig``) into a binary file object, saved to ``path`` atomically, as
    the other atomic writers: never through a link at ``path``, never half a file."""
    _atomic(path, write)


def atomic_write_text(path: Path, text: str) -> None:
    _atomic(path, lambda f: f.write(text.encode()))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic(path, lambda f: f.write(data), size=len(data))


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


_MAGIC = b"FLOWVISION-CHECKED 1\n"


class DamagedFile(Exception):
    """A checked file that is truncated, altered, or not what it should be."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = Path(path), reason


def save_checked(obj, path: Path, what: dict) -> None:
    """torch.save ``obj`` atomically as a checked file; ``what`` (e.g. {"stage": ..., "key": ...})
    goes into its header and must match on reading."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    payload = buf.getvalue()
    header = json.dumps({**what, "bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()},
                        sort_keys=True).encode()
    _atomic(path, lambda f: (f.write(_MAGIC), f.write(header + b"\n"), f.write(payload)), size=len(payload))


def load_checked(path: Path, what: dict):
    """The object in a checked file, after verifying its header, length, checksum and ``what``;
    DamagedFile otherwise. Tensors and plain values only (weights_only): loading runs no code."""
    import pickle

    import torch

    path = Path(path)
    data = path.read_bytes()
    if not data.startswith(_MAGIC):
        raise DamagedFile(path, "not a flowvision checked file (damaged, or written by an older version)")
    end = data.find(b"\n", len(_MAGIC))
    try:
        header = json.loads(data[len(_MAGIC):end]) if end > 0 else None
    except ValueError:
        header = None
    if not isinstance(header, dict):
        raise DamagedFile(path, "its header is damaged")
    payload = data[end + 1:]
    if header.get("bytes") != len(payload):
        raise DamagedFile(path, f"truncated or extended: {len(payload)} bytes, the header says {header.get('bytes')}")
    if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        raise DamagedFile(path, "its checksum does not match its contents")
    for key, value in what.items():
        if header.get(key) != value:
            raise DamagedFile(path, f"it holds {key} {header.get(key)!r}, not {value!r} (a file under the wrong name)")
    try:
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        raise DamagedFile(path, f"its contents cannot be read ({str(e).splitlines()[0][:80]})") from None


def move_aside(err: DamagedFile) -> Path:
    """Rename a damaged file out of the way (kept for inspection) and say so in one line."""
    from .console import console

    aside = err.path.with_name(f"{err.path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        os.replace(err.path, aside)
    except FileNotFoundError:  # another process moved it first
        return aside
    console.print(f"[yellow]warning:[/] {err.path.name} was damaged ({err.reason}); moved to {aside.name}, "
                  "recomputing", highlight=False, soft_wrap=True)
    return aside


def stable_hash(*parts) -> str:
    """16 hex digits of sha256 over the JSON of ``parts`` (keys sorted): the cache key of a stage."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def git_sha() -> str | None:
    """The checkout's commit (with '-dirty' when it has uncommitted changes), or None outside git."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=5).stdout.strip()
        if not sha:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict:
    import timm
    import torch
    import torchvision

    from .. import __version__

    return {"flowvision": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "timm": timm.__version__}
