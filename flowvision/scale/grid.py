"""`flowvision reproduce`: a grid of runs (model × data sets × methods × seeds).

Each cell is an ordinary run (config from configs/, the same pipeline); a cell whose result.json
exists is skipped, and cells share cached stages, so an interrupted grid resumes where it stopped.
This module says *what* the grid is (its cells, which stages they share, the order to run them in,
whether their inputs are there); launch.py says *where* the cells run (this process, one worker per
GPU or CPU slot, Slurm jobs).

Which cells share a stage follows from the stage keys (``pipeline.plan``), not from method names:
ft and wiseft share one fine-tuning, the FLOW variants and lp share one probe and one loss pass, a τ
sweep shares its probe and losses. The keys are planned without loading anything (each loading
stage's key stands on its declared fields), which is exact for deciding *which cells share*.
"""
from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Optional

from ..core import config
from ..core.console import console, progress


def grid(model: Optional[str], datasets: list[str], methods: list[str], seeds: list[int], overrides: dict) -> list:
    """-> [(RunConfig, command line)] for every cell; bad names fail before anything runs. ``model``: one
    model or several, comma-separated (``resnet18,resnet50``: the grid of each, one after the other); None:
    each data set's default, as for one run (``registry.default_model``, applied by ``config.resolve``)."""
    from ..core.errors import UserError

    if "seed" in overrides:
        raise UserError("'seed' cannot be set with --set in a grid; use --seeds N (seeds 0..N-1)")
    from ..stages.pipeline import with_shared_probe

    models = [m.strip() for m in model.split(",") if m.strip()] if model else [None]
    if model is not None and not models:
        raise UserError(f"--model {model!r} names no model; e.g. --model resnet18 or --model resnet18,resnet50")
    extra = " ".join(f"--set {shlex.quote(f'{k}={v}')}" for k, v in overrides.items())
    cells = []
    for name in models:
        for dataset in datasets:
            for method in methods:
                for seed in seeds:
                    cfg = config.resolve(dataset, name, method, dict(overrides, seed=seed))
                    cmd = (f"flowvision finetune --dataset {shlex.quote(cfg.dataset)} --model {cfg.model} "
                           f"--method {method} --seed {seed}")
                    cells.append((cfg, f"{cmd} {extra}".strip()))
    shared = with_shared_probe([cfg for cfg, _ in cells])  # Table 5's number for every cell (hard10 is no id field)
    return [(cfg, cmd + (" --set hard10=true" if cfg.hard10 and "hard10" not in overrides else ""))
            for cfg, (_, cmd) in zip(shared, cells)]


def result_path(cfg) -> Path:
    from ..core.identity import run_id

    return Path(cfg.results_dir) / "runs" / run_id(cfg) / "result.json"


def todo(cells: list) -> list:
    return [(cfg, cmd) for cfg, cmd in cells if not result_path(cfg).exists()]


# ---- shared stages and the order ---------------------------------------------------------------------
def stored_keys(cfg) -> dict:
    """stage -> planned key for every cached stage this cell reaches (what it would store or load)."""
    from ..stages.pipeline import STAGES, grid_plan

    return {name: key for name, key in grid_plan(cfg).items() if STAGES[name].cached}


def _per_target(cfg) -> set:
    """The stages that depend on the target task (what links cells into groups; the source
    evaluation is shared by every cell of a model and would make the whole grid one group)."""
    from ..stages.pipeline import STAGES

    reached, stack = set(), ["task"]
    downstream = {name: {n for n, s in STAGES.items() if name in s.needs_for(cfg)} for name in STAGES}
    while stack:
        for n in downstream[stack.pop()] - reached:
            reached.add(n)
            stack.append(n)
    return reached


def order(cells: list, keys: list[dict]) -> list[int]:
    """Cell indices, those that share the most stages with other cells first: they compute what the
    others then load, so the others start once it is on disk (stable within ties: grid order)."""
    counts: dict = {}
    for k in keys:
        for item in k.items():
            counts[item] = counts.get(item, 0) + 1
    shared = [sum(counts[item] - 1 for item in k.items()) for k in keys]
    return sorted(range(len(cells)), key=lambda i: -shared[i])


def groups(cells: list, keys: list[dict]) -> list[list[int]]:
    """Cells linked by a shared per-target stage, as lists of indices in ``order``; groups that share
    nothing can run on different machines without waiting for each other."""
    parent = list(range(len(cells)))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict = {}
    for i, ((cfg, _), k) in enumerate(zip(cells, keys)):
        per_target = _per_target(cfg)
        for item in k.items():
            if item[0] in per_target:
                parent[root(i)] = root(owner.setdefault(item, i))
    out: dict = {}
    for i in order(cells, keys):
        out.setdefault(root(i), []).append(i)
    return list(out.values())


# ---- inputs ------------------------------------------------------------------------------------------
def check_inputs(cells: list) -> list[str]:
    """What is missing before anything starts, one line each: data sets, weights, the ImageNet folder, each
    checked once over the grid (``stages.inputs``: the run's own checks). Loads no model, decodes no image."""
    from ..stages.inputs import check_inputs as checked

    return checked(cfg for cfg, _ in cells)


# ---- this process ------------------------------------------------------------------------------------
def reproduce(cells: list, dry_run: bool = False) -> dict:
    """Run every cell not yet finished, in this process, in ``order``; -> counts of done / skipped /
    failed and the failures."""
    from ..core.errors import UserError
    from ..stages.run import run

    left = todo(cells)
    summary = {"cells": len(cells), "skipped": len(cells) - len(left), "ran": 0, "failed": [], "seconds": 0.0}
    if dry_run:
        summary["todo"] = [cmd for _, cmd in left]
        return summary
    t0 = time.time()
    with progress() as bar:
        task = bar.add_task("reproduce", total=len(left), info="", unit="run")
        for i in order(left, [stored_keys(cfg) for cfg, _ in left]):
            cfg, cmd = left[i]
            bar.update(task, info=f"{cfg.dataset} {cfg.method} seed {cfg.seed}")
            try:
                run(cfg)
                summary["ran"] += 1
            except UserError as e:  # one cell's missing data must not stop the rest of the grid
                console.print(f"[red]failed[/]: {cmd}: {e}", highlight=False, soft_wrap=True)
                summary["failed"].append((cmd, str(e)))
            bar.advance(task)
    summary["seconds"] = round(time.time() - t0, 1)
    return summary
