"""Optional experiment tracking: ``--log tensorboard`` or ``--log wandb`` (``log`` in the config).

Off by default; neither package is a dependency (``pip install 'flowvision[log]'`` brings
tensorboard). What a run logs, from the process that writes its run folder (rank 0 under torchrun):

- every epoch of the training stages (probe, finetune, refit): ``<stage>/loss`` (the optimised,
  weighted loss), ``<stage>/ce``, ``<stage>/acc``, ``<stage>/lr`` and, under the paper protocol,
  ``<stage>/test_acc``, against the stage's epoch. A stage loaded from the store (shared with another
  run) or resumed logs its earlier epochs when it is there, so each run shows all of its curves;
- the final metrics (``final/target_acc``, ``final/source_acc_after``, ``final/source_drop``, τ, ...)
  and the WiSE-FT points (``wise/*`` against α in percent).

TensorBoard writes event files into the run folder, ``runs/<run-id>/tensorboard/`` (``tensorboard
--logdir results/runs`` shows every run by its id); wandb logs a run named by the run id into the
project ``$WANDB_PROJECT`` (default ``flowvision``), its local files under the run folder
(``WANDB_MODE=offline`` for a machine without network).
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ..core.config import write_yaml
from ..core.checks import check_log

EPOCH_KEYS = ("loss", "ce", "acc", "lr", "test_acc")
FINAL_KEYS = ("target_acc", "source_acc_before", "source_acc_after", "source_drop", "source_top5_after",
              "source_agreement", "source_kl", "tau", "wall_seconds")


class TensorBoard:
    def __init__(self, run_dir: Path, cfg, run_id: str):
        from torch.utils.tensorboard import SummaryWriter


        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))
        self.writer.add_text("config", "    " + write_yaml(cfg).replace("\n", "\n    "))

    def epoch(self, stage: str, row: dict) -> None:
        for key in EPOCH_KEYS:
            if row.get(key) is not None:
                self.writer.add_scalar(f"{stage}/{key}", row[key], row["epoch"])

    def final(self, metrics: dict, wise: list) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(f"final/{key}", value, 0)
        for point in wise:
            for key in ("target_acc", "source_acc_after"):
                if point.get(key) is not None:
                    self.writer.add_scalar(f"wise/{key}", point[key], round(point["alpha"] * 100))

    def close(self) -> None:
        self.writer.close()


class WandB:
    def __init__(self, run_dir: Path, cfg, run_id: str):
        import wandb

        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "flowvision"), name=run_id, id=run_id,
                              resume="allow", dir=str(run_dir), config=cfg.to_dict())
        for prefix in ("probe", "finetune", "refit"):
            self.run.define_metric(f"{prefix}/*", step_metric=f"{prefix}/epoch")
        self.run.define_metric("wise/*", step_metric="wise/alpha")

    def epoch(self, stage: str, row: dict) -> None:
        self.run.log({f"{stage}/epoch": row["epoch"],
                      **{f"{stage}/{k}": row[k] for k in EPOCH_KEYS if row.get(k) is not None}})

    def final(self, metrics: dict, wise: list) -> None:
        self.run.summary.update({f"final/{k}": v for k, v in metrics.items()})
        for point in wise:
            self.run.log({"wise/alpha": point["alpha"], **{f"wise/{k}": point[k] for k in ("target_acc", "source_acc_after")
                                                           if point.get(k) is not None}})

    def close(self) -> None:
        self.run.finish()


class Tracker:
    """One run's logger: each (stage, epoch) is logged once, whether it arrives live from the training
    loop or with a stage that was loaded or resumed."""

    def __init__(self, backend):
        self.backend, self.logged = backend, set()

    def rows(self, stage: str, rows: list) -> None:
        for row in rows:
            if (stage, row["epoch"]) not in self.logged:
                self.logged.add((stage, row["epoch"]))
                self.backend.epoch(stage, row)

    def final(self, record: dict) -> None:
        metrics = {k: record[k] for k in FINAL_KEYS if isinstance(record.get(k), (int, float))}
        self.backend.final(metrics, record.get("wise") or [])


@contextlib.contextmanager
def opened(name: str, run_dir: Path, cfg, run_id: str):
    """The run's Tracker while it runs (None with log 'none'); closed (files flushed) however it ends."""
    if name == "none":
        yield None
        return
    check_log(name)
    backend = (TensorBoard if name == "tensorboard" else WandB)(run_dir, cfg, run_id)
    try:
        yield Tracker(backend)
    finally:
        backend.close()
