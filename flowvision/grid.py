"""`flowvision reproduce`: a grid of runs (model × data sets × methods × seeds), one after another.

Each cell is an ordinary run (config from configs/, the same pipeline); a cell whose result.json
exists is skipped, and cells share cached stages, so an interrupted grid resumes where it stopped.
"""
from __future__ import annotations

import shlex
import time
from pathlib import Path

from . import config
from .console import console, progress


def grid(model: str, datasets: list[str], methods: list[str], seeds: list[int], overrides: dict) -> list:
    """-> [(RunConfig, command line)] for every cell; bad names fail before anything runs."""
    from .errors import UserError

    if "seed" in overrides:
        raise UserError("'seed' cannot be set with --set in a grid; use --seeds N (seeds 0..N-1)")
    cells = []
    for dataset in datasets:
        for method in methods:
            for seed in seeds:
                cfg = config.resolve(dataset, model, method, dict(overrides, seed=seed))
                extra = " ".join(f"--set {shlex.quote(f'{k}={v}')}" for k, v in overrides.items())
                cmd = f"flowvision finetune --dataset {dataset} --model {model} --method {method} --seed {seed}"
                cells.append((cfg, f"{cmd} {extra}".strip()))
    return cells


def result_path(cfg) -> Path:
    from .pipeline import run_id

    return Path(cfg.results_dir) / "runs" / run_id(cfg) / "result.json"


def reproduce(cells: list, dry_run: bool = False) -> dict:
    """Run every cell not yet finished; -> counts of done / skipped / failed and the failures."""
    from .errors import UserError
    from .pipeline import run

    todo = [(cfg, cmd) for cfg, cmd in cells if not result_path(cfg).exists()]
    summary = {"cells": len(cells), "skipped": len(cells) - len(todo), "ran": 0, "failed": [], "seconds": 0.0}
    if dry_run:
        summary["todo"] = [cmd for _, cmd in todo]
        return summary
    t0 = time.time()
    with progress() as bar:
        task = bar.add_task("reproduce", total=len(todo), info="")
        for cfg, cmd in todo:
            bar.update(task, info=f"{cfg.dataset} {cfg.method} seed {cfg.seed}")
            try:
                run(cfg)
                summary["ran"] += 1
            except UserError as e:  # one cell's missing data must not stop the rest of the grid
                console.print(f"[red]failed[/]: {cmd}: {e}", highlight=False)
                summary["failed"].append((cmd, str(e)))
            bar.advance(task)
    summary["seconds"] = round(time.time() - t0, 1)
    return summary
