"""What the stage store holds, read against the run records: ``flowvision cache`` and ``--prune``.

A stage file is an *output* when some ``results/runs/*/result.json`` names its key; everything else
in the store (an audit's stages, a deleted run's, a partial checkpoint, a damaged or temporary file)
is what pruning may remove. It sits above the record schema and the stage store it reads.
"""
from __future__ import annotations

from pathlib import Path

from ..stages.runfolder import records
from ..stages.store import STORE_VERSION


def _referenced(results_dir: Path) -> set:
    """File names of the stage outputs some run record refers to. A file that cannot be a record is
    skipped with one warning naming it (the stage files only it named count as unreferenced)."""
    names = set()
    for _, record, _ in records(results_dir, "; the stage files only it names count as unreferenced"):
        names |= {f"{stage}-{key}.pt" for stage, key in record.stage_keys.items()}
    return names


def store_files(results_dir: Path) -> list[dict]:
    """Every file in the stage store: path, stage, bytes, and ``kind``: output (referenced by a run
    record), unreferenced (an output no record names: an audit's, or a deleted run's), partial (a
    training checkpoint), damaged (moved aside), temporary (a killed writer's) or lock."""
    folder = Path(results_dir) / "cache" / f"v{STORE_VERSION}"
    referenced = _referenced(results_dir)
    rows = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if not path.is_file():
            continue
        name = path.name
        if name.endswith(".lock"):
            kind = "lock"
        elif name.startswith("."):
            kind = "temporary"
        elif ".damaged-" in name:
            kind = "damaged"
        elif name.endswith(".partial.pt"):
            kind = "partial"
        else:
            kind = "output" if name in referenced else "unreferenced"
        rows.append({"path": path, "stage": name.lstrip(".").split("-")[0], "kind": kind,
                     "bytes": path.stat().st_size})
    return rows


def prune(results_dir: Path, dry_run: bool = True) -> list[dict]:
    """Remove every store file that is not a referenced output (-> the rows removed, or that would
    be with ``dry_run``). A file whose stage lock another process holds is left alone, so pruning
    beside a running run never takes what it is computing."""
    from filelock import Timeout

    from ..core.files import file_lock, remove_file

    gone = []
    for row in store_files(results_dir):
        if row["kind"] == "output":
            continue
        path = row["path"]
        if dry_run or row["kind"] == "lock":  # locks are tiny and may be held: never removed
            gone += [row] if row["kind"] != "lock" else []
            continue
        owner = path.name.lstrip(".").split(".partial.pt")[0].split(".pt")[0] + ".pt"
        lock = file_lock(Path(str(path.parent / owner) + ".lock"), "the lock of a stage file")
        try:
            with lock.acquire(timeout=0):
                remove_file(path, f"a {row['kind']} file of the stage store")
                gone.append(row)
        except Timeout:
            continue
    return gone
