"""Cached files: the one way a value that costs a computation is kept on disk and shared.

    value, status = load_or_compute(path, {"stage": "probe", "key": key}, compute, "stage probe")

The file is a checked file (``files.save_checked``: its header says what it is, its length and checksum
are verified before a byte is trusted) written under an inter-process lock on its path, so two processes
asking for the same value compute it once. The stage store (``stages.store``) keys its files by derived
stage keys; the demo model (``methods.source``) is cached the same way. ``read_cached`` only reads: for the
commands that look at what a run made (export), never computing.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from . import distributed
from .errors import UserError
from .files import DamagedFile, load_checked, move_aside, remove_file, remove_orphans, save_checked


def load_or_compute(path: Path, what: dict, compute: Callable[[], Any], label: str,
                    checkpoint: Optional[Path] = None) -> tuple[Any, str]:
    """The one way a cached file is read or made: under an inter-process lock on ``path`` (an OS
    lock, released if its holder dies), load it if it verifies, else compute, save and return it.
    -> (value, "cached" | "computed"). A damaged file is moved aside and recomputed; a second
    process asking for the same file waits for the first and then loads. ``checkpoint`` (the
    computation's partial state) is removed once the file is saved.

    Under several processes (``distributed``) rank 0 alone holds the lock and writes; the
    computation runs on every process (it is shared between them) and the others read rank 0's file
    after a barrier, so every process goes on with the same value. A process other than rank 0 that
    works alone (inside ``distributed.rank0_first``) only reads the file rank 0 wrote."""
    if distributed.active():
        return _load_or_compute_shared(path, what, compute, label, checkpoint)
    if not distributed.is_main():
        return _read_only(path, what), "cached"
    return _load_or_compute(path, what, compute, label, checkpoint)


def read_cached(path: Path, what: dict, label: str, fix: str):
    """A stored file read and verified, never computed (the commands that read what a run made: export).
    A file that is gone or damaged is a one-line UserError naming it, ending in ``fix``."""
    if not path.is_file():
        raise UserError(f"{label} is gone ({path}; pruned or moved?): {fix}")
    try:
        return load_checked(path, what)
    except (OSError, DamagedFile) as e:
        reason = e.reason if isinstance(e, DamagedFile) else e.strerror
        raise UserError(f"{label} is damaged ({path.name}: {reason}): {fix}") from None


def _acquire(path: Path, label: str):
    """The lock of ``path``, taken; the folder it lives in (the stage store's, the demo models') and the file
    itself are never symbolic links (``files.owned_folder``), so nothing is written or moved through one."""
    from filelock import Timeout

    from .console import console
    from .files import file_lock, not_a_link, owned_folder

    owned_folder(path.parent, f"the folder of {label}")
    not_a_link(path, label)
    lock = file_lock(Path(f"{path}.lock"), f"the lock of {label}")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        console.print(f"[yellow]waiting[/] for another run computing {label} ({path.name})", highlight=False)
        lock.acquire()
    return lock


def _read_only(path: Path, what: dict):
    """A file rank 0 has written, read by another rank (which never writes, moves or locks a file)."""
    try:
        return load_checked(path, what)
    except (OSError, DamagedFile) as e:
        raise RuntimeError(f"{path}: rank 0 should have written this file before the other ranks read it ({e})") from None


def _load_or_compute_shared(path: Path, what: dict, compute: Callable[[], Any], label: str,
                            checkpoint: Optional[Path]) -> tuple[Any, str]:
    main = distributed.is_main()
    value, lock = None, _acquire(path, label) if main else None
    try:
        if main:
            value = _load_sound(path, what, checkpoint)
        if distributed.broadcast(value is not None):
            status = "cached"
        else:
            value, status = compute(), "computed"
            if main:
                _store(value, path, what, checkpoint)
            distributed.barrier()  # rank 0's file is there
        if not main:
            value = _read_only(path, what)
        distributed.barrier()  # every rank has read it before another process may take the lock
        return value, status
    finally:
        if lock is not None:
            lock.release()


def _load_or_compute(path: Path, what: dict, compute: Callable[[], Any], label: str,
                     checkpoint: Optional[Path]) -> tuple[Any, str]:
    lock = _acquire(path, label)
    try:
        value = _load_sound(path, what, checkpoint)
        if value is not None:
            return value, "cached"
        value = compute()
        _store(value, path, what, checkpoint)
        return value, "computed"
    finally:
        lock.release()


def _load_sound(path: Path, what: dict, checkpoint: Optional[Path]):
    """Under the path's lock: the file's value if it verifies, else None (a damaged file moved aside).
    Whoever wrote a temporary file for this path held this lock and is gone: such files are removed."""
    remove_orphans(path.parent, [path.name] + ([checkpoint.name] if checkpoint is not None else []))
    if path.exists():
        try:
            return load_checked(path, what)
        except DamagedFile as err:
            move_aside(err)
    return None


def _store(value, path: Path, what: dict, checkpoint: Optional[Path]) -> None:
    """Under the path's lock: save the value; its computation's partial checkpoint is then spent."""
    save_checked(value, path, what)
    if checkpoint is not None:
        remove_file(checkpoint, "a spent training checkpoint")
