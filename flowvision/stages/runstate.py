"""The per-run state file: where a run is, readable from any node that shares the results folder.

    results/runs/<run-id>/state.json
    {"status": "running", "stage": "finetune", "epoch": 2, "epochs": 3, "done": ["task", ...],
     "error": null, "host": "node07", "pid": 4711, "updated": 1718000000.0, ...}

status: waiting (queued by a launcher), running, done, failed (with the one-line error). A run whose
holder was killed cannot say so itself: ``read_states`` reports a "running" run whose process is gone
from this host as failed, and one on another host whose file has not changed for ``STALE_S`` as
possibly stale. The launchers read ``done`` (the stages finished so far) to start a run that shares a
stage only once that stage is on disk.

The pipeline makes one ``RunState`` active while a run is in progress; the training loop reports each
finished epoch through ``console.epoch_done`` without knowing which run it serves.

This module writes the state; ``runfolder`` reads it back (``read_state``, ``read_states``), as it reads
every file of a run folder: only a regular file of at most ``MAX_STATE_BYTES`` holding a JSON object whose
fields have their types (``check_state``: ``FIELD_TYPES``; text is cut to ``MAX_TEXT`` characters). Any
other file (hand-edited, written by something else, megabytes of error text) is skipped with one
warning naming it, and its run shows as incomplete.
"""
from __future__ import annotations

import contextlib
import math
import os
import socket
import time
from pathlib import Path
from typing import Callable, Optional

from ..core.files import atomic_write_json

STATE_FILE = "state.json"
STALE_S = 15 * 60  # no update for this long (epochs and stages update it) on another host: maybe gone
MAX_STATE_BYTES = 1 << 20  # a state file is under 1 KB
MAX_TEXT = 500             # characters of a text field shown (an error is one line)
STATUSES = ("waiting", "running", "done", "failed")
FIELD_TYPES = {"run_id": str, "dataset": str, "model": str, "method": str, "seed": int, "status": str,
               "stage": str, "epoch": int, "epochs": int, "done": list, "error": str, "host": str, "pid": int,
               "updated": float}


class RunState:
    """The state file of one run folder; every change rewrites it atomically."""

    def __init__(self, run_dir: Path, cfg):
        self.path = Path(run_dir) / STATE_FILE
        self.data = {"run_id": Path(run_dir).name, "dataset": cfg.dataset, "model": cfg.model,
                     "method": cfg.method, "seed": cfg.seed, "status": "waiting", "stage": None, "epoch": None,
                     "epochs": None, "done": [], "error": None, "host": None, "pid": None, "updated": None}
        self.on_epoch: Optional[Callable[[str, list], None]] = None

    def write(self, **changes) -> None:
        from ..core.files import owned_folder

        run_dir = self.path.parent
        owned_folder(run_dir, "the run folder", below=run_dir.parent.parent)  # no link at runs/ or runs/<run id>
        self.data.update(changes, updated=time.time())
        atomic_write_json(self.path, self.data)

    def start(self) -> None:
        self.write(status="running", stage=None, epoch=None, epochs=None, done=[], error=None,
                   host=socket.gethostname(), pid=os.getpid())

    def stage(self, name: str, event: str) -> None:
        """``Run``'s hook: a stage started ("start") or its value is there ("done")."""
        if event == "start":
            self.write(stage=name, epoch=None, epochs=None)
        elif name not in self.data["done"]:
            self.write(done=self.data["done"] + [name])

    def discard_if_empty(self) -> bool:
        """Remove the run folder when it holds nothing but this state file (a run stopped by its input
        before it wrote anything: missing data, no GPU for --device cuda), so that no run is left behind
        as failed for ever; -> whether it did. A folder holding anything else is kept."""
        folder = self.path.parent
        try:
            if {e.name for e in os.scandir(folder)} != {STATE_FILE}:
                return False
            self.path.unlink()
            folder.rmdir()
        except OSError:  # another process wrote into it meanwhile: it stays, with its state
            return False
        return True

    def epoch(self, desc: str, rows: list, epochs: int) -> None:
        self.write(epoch=rows[-1]["epoch"], epochs=epochs)
        if self.on_epoch is not None:
            self.on_epoch(desc, rows)


@contextlib.contextmanager
def tracking(state: RunState):
    """While a run is in progress: the state says running, then done, or failed with the error's
    first line (an interrupted run says so, and that running it again resumes it). A user error before
    the run wrote anything into its folder removes the folder instead (``discard_if_empty``). The
    training loop's epochs reach the state through ``console.epoch_done``."""
    from ..core.console import epochs_to
    from ..core.errors import UserError

    state.start()
    try:
        with epochs_to(state.epoch):
            yield state
    except KeyboardInterrupt:
        state.write(status="failed", error=f"interrupted during {state.data['stage']}; run again to resume")
        raise
    except UserError as e:
        if not state.discard_if_empty():  # the error itself is printed; an empty folder says nothing more
            state.write(status="failed", error=str(e).splitlines()[0])
        raise
    except Exception as e:
        state.write(status="failed", error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        raise
    else:
        state.write(status="done", stage=None, epoch=None, epochs=None)


def check_state(state) -> dict:
    """``state`` with every field of its type (None allowed) and text cut; ValueError naming the
    first field that is not."""
    if not isinstance(state, dict):
        raise ValueError("not a JSON object")
    out = dict(state)
    for key, kind in FIELD_TYPES.items():
        value = state.get(key)
        if value is None:
            continue
        fits = (isinstance(value, (int, float)) and math.isfinite(value) if kind is float else isinstance(value, kind))
        if not fits or isinstance(value, bool):
            raise ValueError(f"its field {key} is {type(value).__name__}, not {kind.__name__}")
        if kind is str:
            out[key] = value if len(value) <= MAX_TEXT else value[:MAX_TEXT] + "…"
        if key == "pid" and not 0 < value < 2 ** 31:
            raise ValueError(f"its pid {value} is not a process id")
    if out.get("status") is not None and out["status"] not in STATUSES:
        raise ValueError(f"its status {out['status']!r} is not one of {', '.join(STATUSES)}")
    if out.get("done") is not None and not all(isinstance(s, str) and len(s) < 100 for s in out["done"]):
        raise ValueError("its field done is not a list of stage names")
    return out
