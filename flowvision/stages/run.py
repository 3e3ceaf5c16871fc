"""One run's orchestration: the run folder and its files around the stage list (``pipeline``).

    from flowvision.stages.run import run
    record = run(cfg)        # results/runs/<run id>/{config.yaml, summary.csv, weights.csv, result.json, state.json}

``run`` resolves the stages a config reaches (``pipeline.targets``), in order, through the stage store:
a finished stage is re-read, a cut one resumes, a shared one is computed once. Around them it keeps
the run folder: ``state.json`` says where the run is (``runstate``), ``summary.csv`` grows by a row
after every training epoch, a tracker (``trackers``) gets the epochs when ``log`` is set, and at the
end ``result.json`` (``record.make_record``) and ``weights.csv`` are written. Under torchrun every
process calls ``run``; rank 0 writes.
"""
from __future__ import annotations

import contextlib
import csv
import io
import time
from pathlib import Path
from typing import Callable, Optional

from ..core.config import RunConfig, write_yaml
from ..core.identity import run_id
from ..core.files import atomic_write_text
from .inputs import require_inputs
from .pipeline import hard_target, start, targets
from .record import TRAINED, make_record, write_record
from .store import Run


def run(cfg: RunConfig, on_stage: Optional[Callable[[str, str], None]] = None) -> Optional[dict]:
    """Run (or resume, or re-read) one configuration; write its run folder; return result.json's dict.
    While it runs, the folder's state.json says where it is (runstate), and summary.csv grows by a
    row after every training epoch; with ``log`` set, a tracker (trackers.py) gets every epoch and
    the final metrics; ``on_stage(name, "start" | "done")`` hears of every stage (gpu-check times them).
    Under torchrun every process calls this: they share the stages' work (``distributed``), rank 0
    writes the files and returns the dict, the other ranks return None."""
    from ..core import distributed

    with distributed.session(cfg.device, cfg.batch_size):
        if not distributed.is_main():
            _follow(cfg)
            return None
        return _run(cfg, on_stage)


def _follow(cfg: RunConfig) -> None:
    """A rank other than 0: the stages rank 0 resolves, in the same order, writing nothing."""
    require_inputs(cfg)  # as rank 0 does: every rank stops on a missing input, none waits for the others
    r = start(cfg)
    r["source_data"], r["source"]
    for name in targets(cfg, hard_target(r)):
        r[name]


def _run(cfg: RunConfig, listener: Optional[Callable[[str, str], None]] = None) -> dict:
    from . import runstate, trackers
    from .audit import write_weights

    t_start = time.time()
    run_dir = Path(cfg.results_dir) / "runs" / run_id(cfg)
    state = runstate.RunState(run_dir, cfg)
    with runstate.tracking(state):
        def heard(name, event):  # the state file, and whoever else listens
            state.stage(name, event)
            if listener is not None:
                listener(name, event)

        require_inputs(cfg)  # every missing input named at once, before any work (not the first one met)
        r = start(cfg)
        r.on_stage = heard
        r["source_data"], r["source"]  # the evaluation images first: a wrong ImageNet folder costs no weight load
        with _run_folder(run_dir):
            atomic_write_text(run_dir / "config.yaml", write_yaml(cfg))  # only once data and source have loaded
        with trackers.opened(cfg.log, run_dir, cfg, run_dir.name) as tracker:
            def on_epoch(desc, rows):
                _epoch_summary(r, run_dir, state.data["stage"], rows)
                if tracker is not None and state.data["stage"] in TRAINED:
                    tracker.rows(state.data["stage"], rows)

            def on_stage(name, event):
                heard(name, event)
                if tracker is not None and event == "done" and name in TRAINED:  # loaded or resumed epochs too
                    tracker.rows(name, r[name].rows)

            state.on_epoch, r.on_stage = on_epoch, on_stage
            for name in targets(cfg, hard_target(r)):
                r[name]
            record = make_record(r, run_dir.name, t_start)
            with _run_folder(run_dir):
                _write_summary(run_dir / "summary.csv", _trained_rows(r))
                w = r.values.get("weights")
                if w and w["weights"] is not None:
                    write_weights(run_dir / "weights.csv", w["losses"], w["weights"], w["labels"], r["task"].noisy)
                write_record(run_dir / "result.json", record)
            if tracker is not None:
                tracker.final(record.to_dict())
    return dict(record.to_dict(), run_dir=str(run_dir))



def _trained_rows(r: Run) -> list:
    return [row for name in TRAINED if name in r.values for row in r[name].rows]


def _epoch_summary(r: Run, run_dir: Path, stage: str, rows: list) -> None:
    """summary.csv after an epoch of a training stage: the finished stages' rows, then this one's so far
    (a long fine-tuning shows its progress in the run folder, not only at the end)."""
    if stage not in TRAINED:
        return  # e.g. the demo model's pre-training inside the source stage
    with _run_folder(run_dir):
        _write_summary(run_dir / "summary.csv", _trained_rows(r) + rows)


@contextlib.contextmanager
def _run_folder(run_dir: Path):
    """Writes into a run folder, one process at a time; temporary files a killed writer left there
    are removed first (whoever wrote them held this lock and is gone)."""
    from ..core.files import file_lock, owned_folder, remove_orphans

    owned_folder(run_dir, "the run folder", below=run_dir.parent.parent)  # no link at runs/ or runs/<run id>
    with file_lock(run_dir / ".lock", "the run folder's lock"):
        remove_orphans(run_dir, RUN_FILES)
        yield


RUN_FILES = ["config.yaml", "summary.csv", "weights.csv", "result.json", "state.json"]


def _write_summary(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    cols = ["stage", "epoch", "loss", "ce", "acc", "test_acc", "lr", "seconds", "data_seconds"]
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())
