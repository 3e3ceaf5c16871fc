"""Run folders read back: the one reader of ``<results>/runs/<run id>/`` for every command that looks at
one (status, table, plot, the demo's report, frontier's figures, the cache command, export).

    for run_dir, record, notes in records(results_dir): ...    # every readable result.json, the rest skipped
    rows = read_states(results_dir)                              # where each run is (status)
    record, cfg = finished(run_dir)                              # one finished run, or a one-line UserError

What it promises, for every file it reads (``result.json``, ``state.json``, ``config.yaml``): the file is
opened only when it is a regular file (a FIFO, a device or a folder is never opened, so nothing waits
for ever) of at most its size cap, and what it holds has the types its schema says (``record.from_dict``,
``runstate.check_state``, ``config.read_run_config``). A reader of many runs skips a folder whose file
breaks any of that with one warning naming the file (``skip``: once per file and process); the reader of
one run (``finished``, export's) refuses it in one line naming the file.
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Optional

from ..core.errors import UserError
from ..core.files import read_json_file
from .record import MAX_RECORD_BYTES, RunRecord, from_dict
from .runstate import MAX_STATE_BYTES, STALE_S, STATE_FILE, check_state

RESULT, CONFIG = "result.json", "config.yaml"
_SAID: set = set()  # files already named in a warning by this process


def run_folders(results_dir: Path) -> list[Path]:
    """The run folders under ``<results_dir>/runs``, sorted by name (hidden entries and files left out)."""
    try:
        entries = list(os.scandir(Path(results_dir) / "runs"))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(Path(e.path) for e in entries if not e.name.startswith(".") and e.is_dir())


def skip(path: Path, err: BaseException, what: str = "") -> None:
    """One warning naming ``path`` and why it is skipped (``what``: what skipping it means), once per file and
    process (a command that reads the runs twice names a bad file once)."""
    from rich.markup import escape

    from ..core.console import console

    if path in _SAID:
        return
    _SAID.add(path)
    reason = (str(err).splitlines() or [type(err).__name__])[0][:120] or type(err).__name__
    console.print(f"[yellow]warning:[/] skipping {escape(str(path))} ({escape(reason)}){what}", highlight=False,
                  soft_wrap=True)


def read_record(run_dir: Path) -> tuple[RunRecord, list[str]]:
    """``run_dir``'s result.json through the record schema -> (record, notes on fields it could not use);
    FileNotFoundError when there is none, OSError or ValueError (naming why) when it cannot be a record."""
    path = Path(run_dir) / RESULT
    return from_dict(read_json_file(path, MAX_RECORD_BYTES), str(path))


def records(results_dir: Path, what: str = "") -> list[tuple[Path, RunRecord, list[str]]]:
    """(run folder, record, notes) of every run folder with a result.json that is a record, by folder name;
    a folder without one (a run not finished) is left out, one whose file cannot be a record is skipped with
    one warning (``skip``; ``what`` says what that means for the caller)."""
    out = []
    for run_dir in run_folders(results_dir):
        try:
            record, notes = read_record(run_dir)
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            skip(run_dir / RESULT, e, what)
            continue
        out.append((run_dir, record, notes))
    return out


def read_config_values(run_dir: Path) -> Optional[dict]:
    """The mapping in ``run_dir``'s config.yaml as written (keys unchecked), or None when there is none or it
    cannot be one (not a regular file, too large, not YAML: ``config.read_config_file``'s checks)."""
    from ..core.config import read_config_file

    try:
        return read_config_file(Path(run_dir) / CONFIG)
    except UserError:
        return None


def read_state(run_dir: Path, strict: bool = False) -> Optional[dict]:
    """A run folder's state, or None when it has none. A file that cannot be one is skipped with one
    warning (None), or with ``strict`` a one-line UserError naming it."""
    path = Path(run_dir) / STATE_FILE
    try:
        return check_state(read_json_file(path, MAX_STATE_BYTES))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        if strict:
            raise UserError(f"{path} cannot be a run's state ({str(e).splitlines()[0][:120] if str(e) else type(e).__name__}); "
                            "rerun the run to write it again") from None
        skip(path, e)
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_states(results_dir: Path) -> list[dict]:
    """One row per run folder: run_id, dataset, model, method, seed, status (done | running | failed |
    waiting | stale | incomplete), where (stage and epoch), error, host, age_s (since the last update)."""
    rows = []
    here = socket.gethostname()
    for run_dir in run_folders(results_dir):
        state = read_state(run_dir) or {}
        row = {k: state.get(k) for k in ("dataset", "model", "method", "seed", "host", "error")}
        row["run_id"] = run_dir.name
        row["age_s"] = time.time() - state["updated"] if state.get("updated") else None
        status = state.get("status")
        if (run_dir / RESULT).exists() and status != "running":
            status = "done"
        elif status == "running":
            where = state.get("stage") or ""
            if state.get("epoch"):
                where += f", epoch {state['epoch']} of {state['epochs']}"
            row["where"] = where
            if state.get("host") == here and state.get("pid") and not _alive(state["pid"]):
                status = "failed"
                row["error"] = (f"process {state['pid']} stopped during {where or 'start-up'}; "
                                "run again to resume")
            elif state.get("host") != here and row["age_s"] is not None and row["age_s"] > STALE_S:
                status = "stale"
        elif status is None:
            status = "incomplete"  # a folder from before state files, or one whose state file was removed
        row["status"] = status
        row.setdefault("where", None)
        rows.append(row)
    return rows


def finished(run_dir: Path):
    """(RunRecord, RunConfig) of the finished run in ``run_dir`` (given as a path from anywhere, "." too), or
    a one-line UserError naming the file that makes it not one: no folder, no result.json (then what its
    state says), a result.json or state.json that cannot be read as one, a config.yaml that is not the
    record's."""
    from ..core.config import read_run_config
    from ..core.identity import run_id

    run_dir = Path(run_dir).absolute()
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is not a run folder (no such folder); pass a folder under <results>/runs/")
    result = run_dir / RESULT
    try:
        record, _ = read_record(run_dir)
    except FileNotFoundError:
        state = read_state(run_dir, strict=True)
        if state is None:
            raise UserError(f"{run_dir} holds no result.json: not a finished flowvision run folder; pass a "
                            "folder under <results>/runs/") from None
        where = f"stage {state.get('stage')}" if state.get("stage") else "not started"
        raise UserError(f"run {run_dir.name} is not finished (state: {state.get('status')}, {where}); finish it "
                        "with its command (it resumes), then export") from None
    except (OSError, ValueError) as e:
        raise UserError(f"{result} cannot be read as a run record ({str(e)[:120] or type(e).__name__}); rerun the "
                        "run to write it again") from None
    if not os.path.lexists(run_dir / CONFIG):
        raise UserError(f"run {run_dir.name} has no config.yaml; rerun the run to write it again")
    cfg = read_run_config(run_dir / CONFIG)  # a FIFO, a folder, megabytes, no mapping: one line naming it
    if run_id(cfg) != record.run_id:
        raise UserError(f"{run_dir / CONFIG} is not the config of run {record.run_id} (it gives "
                        f"{run_id(cfg)}); rerun the run to write its files again")
    return record, cfg
