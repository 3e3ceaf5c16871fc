"""One run as a chain of declared stages (DESIGN.md, "One run"):

    task, source, source_data -> source_eval
    probe -> losses -> weights -> finetune -> refit -> final -> target_eval, forgetting, wise
    source, task -> fisher -> finetune           (EWC only: the pre-trained model's diagonal Fisher)

Each stage below declares the config fields it reads and the stages it needs; its cache key is
derived from that declaration (``stages``), so a run re-reads what it has, resumes what was cut,
and shares stages with other runs (ft and wiseft share one fine-tuning; a τ sweep shares one probe
and one loss pass). Which stages a run reaches follows from its method's knobs.

The protocol (``clean`` | ``paper``) is read by the stages it changes: ``paper`` keeps the best
*test* epoch at the probe, fine-tuning and refit (one test pass per epoch), weights FLOW online,
takes τ's quantile over training-transform losses, and splits Stanford Dogs as the official code:
with ``dogs_split=per-stage`` the task carries one split per official script and each training stage
reads its own (``stage_split``); the evaluations read the split of the stage that trained the reported
model last.
Importing this module does not import torch (``flowvision finetune --dry-run`` plans with it).
This file is the stage list and nothing else: the stages' computations are ``training``'s and
``measuring``'s, the run folder and its files ``run.py``'s, the record's assembly ``record.py``'s, the
sample audit ``audit.py``'s.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..core.config import RunConfig
from ..core.registry import is_folder
from ..core.registry import PAPER_SPLITS
from ..methods import forgetting, source
from . import measuring, training
from .store import Run, Stage, Store


# ---- resources: what a run loads from outside (keys follow what was found) -----------------------
def _task(i):
    from ..data import load_task

    return load_task(i.cfg)


def _task_reads(cfg) -> tuple:
    common = ("dataset", "image_size", "data_seed", "augment", "data_path")
    paper_split = cfg.dataset in PAPER_SPLITS and cfg.protocol == "paper"
    return (common + ("val_split",) + (("n_train", "n_test") if cfg.synthetic else ())
            + (("protocol",) if cfg.dataset in PAPER_SPLITS else ()) + (("dogs_split",) if paper_split else ())
            + (("split_ratio",) if is_folder(cfg.dataset) else ()))


def _source(i):
    return source.load_source(i.cfg, i.hw)


def _source_data(i):
    return forgetting.eval_set(i.cfg)


STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("task", _task, reads=_task_reads, uses=("data_root", "cache_dir", "skip_bad_images"), cached=False,
          fingerprint=lambda task: task.info, doc="the target data set"),
    Stage("source", _source, reads=source.reads, uses=("cache_dir",), hardware=True, cached=False,
          fingerprint=lambda src: src.key, doc="the pre-trained model"),
    Stage("source_data", _source_data, reads=forgetting.reads, uses=("imagenet", "source_eval_dir", "cache_dir", "skip_bad_images"),
          cached=False, fingerprint=lambda data: data.fingerprint, doc="the images forgetting is measured on"),
    Stage("source_eval", measuring.source_eval, needs=("source", "source_data"), hardware=True, version=2,
          doc="source accuracy and predictions of the pre-trained model"),
    Stage("probe", training.probe, reads=("probe_epochs", "probe_lr", "probe_bn_train", "protocol", *training.OPTIM),
          needs=("source", "task"), hardware=True, load=training.trained(training.target_shaped, "probe"), doc="linear probe"),
    Stage("losses", training.losses, reads=training.losses_reads, needs=("probe", "task"), hardware=True,
          full_precision=True, doc="per-sample losses of the probe model"),
    Stage("weights", training.weights, reads=training.weights_reads,
          needs=training.weights_needs, cached=False, doc="τ and the FLOW weights"),
    Stage("fisher", training.fisher, reads=training.fisher_reads, needs=("source", "task"), hardware=True,
          full_precision=True, doc="EWC: the pre-trained model's diagonal Fisher on the target images"),
    Stage("finetune", training.finetune, reads=training.finetune_reads, needs=training.finetune_needs, hardware=True, resumable=True,
          version=training.finetune_version, load=training.trained(training.target_shaped, "finetune"), doc="fine-tuning of every parameter"),
    Stage("refit", training.refit, reads=("refit_epochs", "refit_lr", "protocol", *training.OPTIM), needs=("finetune", "source", "task"),
          hardware=True, load=training.trained(training.target_shaped, "refit"), doc="head refit (Appendix B)"),
    Stage("final", lambda i: next(iter(i.up.values())), reads=("finetune", "refit", "refit_epochs"),
          needs=training.final_needs, cached=False,
          doc="the model the run reports"),
    Stage("target_eval", measuring.target_eval, needs=("final", "task"), hardware=True, version=2,
          doc="target accuracy and per-sample correctness"),
    Stage("probe_test", measuring.probe_test, needs=("probe", "task"), hardware=True, full_precision=True,
          doc="pre-trained (probe) loss of every test sample"),
    Stage("forgetting", measuring.forgetting, reads=measuring.forgetting_reads, needs=measuring.forgetting_needs,
          hardware=True, version=2, doc="source accuracy, agreement and KL after fine-tuning"),
    Stage("wise", measuring.wise, reads=measuring.wise_reads,
          needs=("final", "source", "task", "source_data", "target_eval", "forgetting", "source_eval"),
          hardware=True, version=4, doc="WiSE-FT points"),
    Stage("select", measuring.select, reads=measuring.select_reads,
          needs=("final", "task", "source", "source_data", "source_eval"), hardware=True,
          doc="held-out and selection-half numbers (val_split): what settings are chosen on"),
    Stage("hard", measuring.hard, reads=("wise_alphas", "wise_alpha"),
          needs=lambda cfg: ("probe_test", "target_eval", "final") + (("wise",) if measuring.wise_alphas(cfg) else ()),
          cached=False, doc="accuracy on the hardest 10% of test samples (Table 5)"),
)}


def targets(cfg: RunConfig, hard: Optional[bool] = None) -> tuple:
    """The stages one run reports; everything else is reached through their needs. Table 5's hardest 10 %
    (``hard``: its probe and a test pass of it) where ``hard``, or, when None, where ``measures_hard`` says so
    from the config alone (``hard_target`` also looks in the store)."""
    hard = measures_hard(cfg) if hard is None else hard
    return (("source_eval", "target_eval", "forgetting") + (("weights",) if cfg.weighting != "uniform" else ())
            + (("wise",) if measuring.wise_alphas(cfg) else ()) + (("hard",) if hard else ())
            + (("select",) if cfg.val_split > 0 else ()))


def reached(cfg: RunConfig, names) -> set:
    """Every stage ``names`` need, themselves included."""
    seen, stack = set(), list(names)
    while stack:
        name = stack.pop()
        if name not in seen:
            seen.add(name)
            stack += STAGES[name].needs_for(cfg)
    return seen


def trains_probe(cfg: RunConfig) -> bool:
    """Whether the run's own stages need the linear probe (its head, FLOW's losses, or it is the model)."""
    return "probe" in reached(cfg, targets(cfg, hard=False))


def measures_hard(cfg: RunConfig) -> bool:
    """Table 5's number from the config alone: ``hard10`` true or false says; none (auto) where the run trains the
    probe anyway. A standalone standard fine-tuning (ft, wiseft, l2sp, ewc) trains none, as the official
    ``standard_ft.py``: its probe and the test pass of it would be work for that one column."""
    return cfg.hard10 if cfg.hard10 is not None else trains_probe(cfg)


def with_shared_probe(cfgs: list) -> list:
    """A grid's configs with ``hard10`` on (where it is auto) when one of them trains the probe anyway: its runs
    share that probe (a seed's is computed once, whichever runs first), so Table 5's number costs each standard
    fine-tuning one test pass, and no cell misses it for having run before the FLOW cell."""
    import dataclasses

    if not any(trains_probe(cfg) for cfg in cfgs):
        return list(cfgs)
    return [dataclasses.replace(cfg, hard10=True) if cfg.hard10 is None else cfg for cfg in cfgs]


def hard_target(r: Run) -> bool:
    """``measures_hard``, and under auto also where the probe (or its test pass) is already in the store: a grid's
    FLOW run or an earlier run computed it, so the number costs one test pass at most. Needs the loading stages'
    values (their fingerprints key the probe)."""
    cfg = r.cfg
    if cfg.hard10 is not None or trains_probe(cfg):
        return measures_hard(cfg)
    from ..core import distributed

    found = {name: STAGES[name].fingerprint(r[name]) for name in ("task", "source", "source_data")}
    keys = plan(cfg, found, hard=True)
    cached = any(keys.get(name) and r.store.path(name, keys[name]).exists() for name in ("probe", "probe_test"))
    return bool(distributed.broadcast(cached))  # under torchrun rank 0's answer: every process runs the same stages


def plan(cfg: RunConfig, fingerprints: dict, hard: Optional[bool] = None) -> dict:
    """stage -> key for every stage this config reaches (``targets``), computed from the declarations alone;
    ``fingerprints`` stands in for what the loading stages (task, source, source_data) would find.
    A loading stage missing from ``fingerprints`` (not known without loading) has key None, and so
    has every stage downstream of it."""
    from .store import check_declarations, plan_keys

    check_declarations(STAGES, cfg)
    return plan_keys(STAGES, cfg, targets(cfg, hard), fingerprints)


def grid_plan(cfg: RunConfig) -> dict:
    """Stage keys for comparing the runs of one grid (which stages they share): every loading stage's
    fingerprint stands in as one value, so two runs get the same key exactly where their declared
    fields agree. Not the keys a run will use (those follow what the loading stages find)."""
    return plan(cfg, {name: "grid" for name, stage in STAGES.items() if stage.fingerprint})


def start(cfg: RunConfig) -> Run:
    """A Run over this config's stages with the target data loaded first (a missing data set is
    reported before any model is loaded or trained) and the source model's cheap checks done."""
    from ..core.hardware import start as start_hardware

    r = Run(cfg, STAGES, Store(Path(cfg.results_dir) / "cache"))
    r.device = start_hardware(cfg)
    r["task"]
    source.preflight(cfg)
    return r
