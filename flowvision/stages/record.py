"""The run record: what ``result.json`` holds, written by the pipeline, read by tables, plots, the
demo report and the tests. One typed schema with a version; accuracies are fractions.

    rec = RunRecord(run_id=..., dataset="cifar10", ..., target_acc=0.91)    # the pipeline
    rec, notes = read_record(path)                                          # everything that reads

A record written by an older flowvision lacks some fields: it is read with those fields at their
defaults (None) and a note that names them, never a KeyError. A field of the wrong type (a
hand-edited file), a NaN or infinite number, text longer than ``MAX_TEXT`` or a value nested deeper
than ``MAX_DEPTH`` is treated the same way (inside ``wise`` and the other dict and list fields, a NaN or
infinity becomes None, with a note). Only the identity fields are required. A file that is not a
regular file or is larger than ``MAX_RECORD_BYTES`` is not read at all (ValueError): every reader
(tables, plots, the ledger, the cache command) skips it with a warning that names it.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from ..core.identity import config_id, keyed_values
from ..core.files import git_sha, read_json_file, versions
from ..core.registry import PAPER_SPLITS

if TYPE_CHECKING:
    from .store import Run

SCHEMA_VERSION = 9  # 3: protocol, best_epochs, hparams_note; 4: agreement and KL, hardest 10%, label noise, deterministic,
#                     amp, channels_last; 5: config (every field that can change a number, but the seed), dogs_split,
#                     split_overlap; 6: WiSE-FT points carry source_images and source_subset; config's amp may be
#                     None (auto), amp says what ran; 7: EWC and LwF knobs, the Fisher's largest and mean entry;
#                     8: precision (fp32 | bf16 | fp16), tf32 (CUDA runs), hard10_note (why Table 5's number is absent);
#                     9: pull, l2sp_beta, term_scale, wise_keys, val_split and selection (what settings are chosen on)


@dataclass
class RunRecord:
    # identity (required)
    run_id: str
    dataset: str
    model: str
    method: str
    seed: int
    target_acc: float
    # what ran
    schema_version: int = SCHEMA_VERSION
    config_id: Optional[str] = None        # the run's hash without the seed: seeds of one configuration share it
    config: Optional[dict] = None          # what config_id hashes: every field that can change a number, but the seed
    created: Optional[str] = None          # ISO 8601, UTC
    protocol: Optional[str] = None         # clean | paper (registry.PROTOCOLS); records before schema 3 are clean
    best_epochs: dict = field(default_factory=dict)  # paper protocol: stage -> the epoch kept (best test accuracy)
    dogs_split: Optional[str] = None       # stanford_dogs under the paper protocol: per-stage | single (before schema 5: single)
    # stanford_dogs under the paper protocol: per training stage that ran, its split ("probe": linear_probing.py's and
    # standard_ft.py's, "round1": FLOW_ft.py's, "round2": FLOW_taskspecific_ft.py's), its sizes, and the share of its
    # test images an earlier stage trained on: {stage: {split, n_train, n_test, seen: {stage: share, "any": share}}}
    split_overlap: dict = field(default_factory=dict)
    hparams_note: Optional[str] = None     # e.g. ResNet-50: "ResNet-18 hyper-parameters (... not published)"
    sweep: Optional[str] = None            # "frontier": a sweep point off its method's defaults (not pooled in tables)
    weights: Optional[str] = None          # timm tag, "file:<name>@<digest>" or "demo:<hash>"
    synthetic: Optional[bool] = None
    weighting: Optional[str] = None
    tau_rule: Optional[str] = None         # as asked: "median", "p25", "paper", "0.5"; None without FLOW weights
    tau: Optional[float] = None            # the number it resolved to
    normalize: Optional[str] = None
    regularizer: Optional[str] = None
    l2sp_lambda: Optional[float] = None
    l2sp_beta: Optional[float] = None      # L2-SP's plain L2 (weight decay) on what the pull does not cover
    pull: Optional[str] = None             # ℓ2-SP and EWC: proximal | gradient (config.RunConfig.pull)
    term_scale: Optional[str] = None       # FLOW with a pull or LwF: whether that term was scaled by the mean weight
    wise_keys: Optional[str] = None        # WiSE-FT: shared | all (what it interpolated)
    val_split: Optional[float] = None      # the share of the training images held out to choose settings on
    # with val_split: {"target_val", "source_select_before/after", "source_report_before/after", "agreement_select",
    # "agreement_report", "n_val", "n_select", "n_report", "wise": {α: the same}} (stages.measuring.select)
    selection: Optional[dict] = None
    ewc_lambda: Optional[float] = None     # on the Fisher scaled to max 1 (train.EWC); Kirkpatrick's λ = ewc_lambda / ewc_fisher_max
    ewc_fisher_max: Optional[float] = None   # the largest raw Fisher entry over the pulled tensors
    ewc_fisher_mean: Optional[float] = None  # the mean raw Fisher entry over them (how heavy the tail is: max / mean)
    ewc_samples: Optional[int] = None      # images and label draws per image the Fisher was averaged over
    ewc_draws: Optional[int] = None
    distill: Optional[str] = None          # none | lwf
    lwf_lambda: Optional[float] = None
    lwf_temperature: Optional[float] = None
    lwf_parts: Optional[str] = None        # whose source outputs the distillation keeps (checks.LWF_PARTS)
    lwf_targets: Optional[str] = None      # how the teacher's targets were made: "online" (each augmented batch)
    head_init: Optional[str] = None
    refit: Optional[bool] = None
    finetune: Optional[bool] = None
    epochs: Optional[int] = None
    lr: Optional[float] = None
    wise_alpha: Optional[float] = None
    restore: Optional[str] = None          # which parts the forgetting model takes from the source
    task_specific: Optional[str] = None    # the rule that was applied: head | head+bn | head+norms (models.FAMILIES)
    # numbers (fractions)
    source_acc_before: Optional[float] = None
    source_acc_after: Optional[float] = None
    source_drop: Optional[float] = None
    source_top5_before: Optional[float] = None
    source_top5_after: Optional[float] = None
    # label-free forgetting, against the pre-trained model's predictions on the same images
    source_agreement: Optional[float] = None  # share of images whose top-1 class is the pre-trained model's
    source_kl: Optional[float] = None         # mean KL(p_pretrained || p_after), nats
    # Table 5: accuracy on the hardest 10% of the test samples, ranked by the pre-trained (probe) model's loss
    hard10_acc: Optional[float] = None
    hard10_n: Optional[int] = None            # how many test samples that is
    hard10_note: Optional[str] = None         # why hard10_acc is absent (a standalone standard fine-tuning trains no probe)
    wise: list = field(default_factory=list)  # [{alpha, target_acc, source_acc_after, source_top5_after,
    #                                              source_agreement, source_kl, source_drop, hard10_acc,
    #                                              source_images, source_subset: measured on wise_subset images}]
    weight_stats: Optional[dict] = None
    # tasks that know their wrong training labels (synthetic): FLOW's weights on them (audit.noise_audit)
    label_noise: Optional[dict] = None
    # what was measured on what
    source_eval_name: Optional[str] = None  # "IN-1K val", "shapes val": how tables and plots name the source accuracy
    source_eval: Optional[str] = None       # exactly which images and transform, e.g. "imagenet-val:subset(5000), official transform"
    source_eval_classes: Optional[int] = None  # classes present among the source images (None: unlabelled)
    source_eval_images: Optional[int] = None   # images the source numbers are measured on
    source_eval_partial: Optional[bool] = None  # True: a subset of the classes (e.g. a labelled sample folder)
    target_data: Optional[dict] = None      # the target data set: name, split rule, counts found, path
    # provenance
    device: Optional[str] = None            # e.g. "cuda:0 (NVIDIA H200)", "cpu"
    deterministic: Optional[bool] = None    # deterministic algorithms were on
    amp: Optional[bool] = None              # autocast ran in training and evaluation (decided for the device:
    channels_last: Optional[bool] = None    # config.speed_defaults; the config says "auto" (None) unless set)
    # what training and evaluation computed in: fp32 | bf16 (autocast) | fp16 (autocast and a gradient scaler, on GPUs
    # without bf16 units); FLOW's loss pass, Table 5's probe test pass and EWC's Fisher are fp32 whatever this says
    precision: Optional[str] = None
    tf32: Optional[dict] = None             # CUDA: the TF32 settings that ran, {"convolutions": bool, "matmul": bool};
    #                                         None on the CPU, which has no TF32
    stages: dict = field(default_factory=dict)        # stage -> computed | cached
    stage_keys: dict = field(default_factory=dict)    # stage -> key
    stage_seconds: dict = field(default_factory=dict)
    wall_seconds: Optional[float] = None
    git_sha: Optional[str] = None
    versions: dict = field(default_factory=dict)
    source_info: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(RunRecord)}
REQUIRED = tuple(name for name, f in FIELDS.items()
                 if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
_HINTS = typing.get_type_hints(RunRecord)
# The fields a table has one column for (dict fields are flattened to "field.key" columns instead).
COLUMNS = tuple(name for name in FIELDS if _HINTS[name] is not dict and _HINTS[name] != Optional[dict])


MAX_RECORD_BYTES = 4 << 20  # records are tens of KB
MAX_DEPTH = 8               # the deepest field of a record (wise: a list of dicts) is 3 levels
MAX_TEXT = 4096             # characters of one text value


def _fits(value, hint) -> bool:
    """Whether a JSON value fits a field's type (int fits float; bool fits neither; a float is finite,
    text is at most MAX_TEXT characters, a dict or list at most MAX_DEPTH levels deep)."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is typing.Union:
        return value is None or any(_fits(value, a) for a in args if a is not type(None))
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str) and len(value) <= MAX_TEXT
    return isinstance(value, hint) and _depth(value) <= MAX_DEPTH


WISE_NUMBERS = ("target_acc", "source_acc_after", "source_top5_after", "source_agreement", "source_kl",
                "source_drop", "hard10_acc")


def _shaped(key: str, value) -> bool:
    """Whether a field's value has the shape its readers rely on (beyond its type): every WiSE-FT
    point is an object with a finite ``alpha`` and numbers (or null) for its metrics."""
    if key != "wise":
        return True
    return all(isinstance(p, dict) and _fits(p.get("alpha"), float)
               and all(p.get(m) is None or _fits(p[m], float) or isinstance(p[m], float) for m in WISE_NUMBERS)
               for p in value)


def _why(value, hint) -> str:
    """Why a value does not fit its field (``_fits`` or ``_shaped`` is False)."""
    if isinstance(value, list) and _fits(value, hint):
        return "wrong shape"
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN or infinite"
    if isinstance(value, str) and len(value) > MAX_TEXT and _fits(value[:MAX_TEXT], hint):
        return "too long"
    if isinstance(value, (dict, list)) and _depth(value) > MAX_DEPTH and _fits(type(value)(), hint):
        return "nested too deeply"
    return "wrong type"


def _depth(value, level: int = 0) -> int:
    """How deep dicts and lists nest in ``value`` (descending no further than MAX_DEPTH + 1)."""
    if level > MAX_DEPTH or not isinstance(value, (dict, list)):
        return level
    items = value.values() if isinstance(value, dict) else value
    return max((_depth(v, level + 1) for v in items), default=level + 1)


def _finite(value):
    """``value`` with every NaN or infinite float inside it replaced by None -> (value, how many)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None, 1
    if isinstance(value, dict):
        pairs = [(k, _finite(v)) for k, v in value.items()]
        return {k: v for k, (v, _) in pairs}, sum(n for _, (_, n) in pairs)
    if isinstance(value, list):
        pairs = [_finite(v) for v in value]
        return [v for v, _ in pairs], sum(n for _, n in pairs)
    return value, 0


def source_eval_name(desc: Optional[str]) -> Optional[str]:
    """The name of a source evaluation from its description (records older than the field)."""
    if not desc:
        return None
    if desc.startswith("imagenet"):
        return "IN-1K val"
    return desc.split(":")[0] + " val"


def from_dict(obj, where: str = "record") -> tuple[RunRecord, list[str]]:
    """-> (record, notes). ValueError when ``obj`` is not a record (not an object, an identity
    field missing or of the wrong type); notes name fields that were missing, of the wrong type,
    or unknown to this schema."""
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    missing = [k for k in REQUIRED if k not in obj]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    wrong = [k for k in REQUIRED if not _fits(obj[k], _HINTS[k])]
    if wrong:
        raise ValueError(f"{', '.join(f'{k}={str(obj[k])[:40]!r}' for k in wrong)}: wrong type, not a finite "
                         "number, or too long")
    values, notes = {}, []
    absent = [k for k in FIELDS if k not in obj and k != "schema_version"]
    bad = [k for k in FIELDS if k in obj and not (_fits(obj[k], _HINTS[k]) and _shaped(k, obj[k]))]
    cleaned = []
    for key in FIELDS:
        if key in obj and key not in bad:
            values[key], n = _finite(obj[key])
            cleaned += [key] if n else []
    values.setdefault("schema_version", 1)  # schema 1 had no version field
    if values["schema_version"] < 3:  # before protocols existed every run was a clean one
        values.setdefault("protocol", "clean")
        absent = [k for k in absent if k not in ("protocol", "best_epochs", "hparams_note")]
    if values["schema_version"] < 5:  # before dogs_split a paper-protocol Dogs run had one split for every stage
        if values.get("dataset") in PAPER_SPLITS and values.get("protocol") == "paper":
            values.setdefault("dogs_split", "single")
        absent = [k for k in absent if k not in ("dogs_split", "split_overlap")]
    if values["schema_version"] < 8:  # before precision was recorded amp said it: bf16 or fp32; tf32 was not recorded
        if values.get("amp") is not None:
            values.setdefault("precision", "bf16" if values["amp"] else "fp32")
        absent = [k for k in absent if k not in ("precision", "tf32", "hard10_note")]
    if values.get("source_eval_name") is None and values.get("source_eval"):
        values["source_eval_name"] = source_eval_name(values["source_eval"])
        absent = [k for k in absent if k != "source_eval_name"]
    if absent:
        notes.append(f"{where} (schema {values['schema_version']}) has no {', '.join(absent)}: shown as unknown")
    for why in ("wrong type", "wrong shape", "NaN or infinite", "too long", "nested too deeply"):
        named = [k for k in bad if _why(obj[k], _HINTS[k]) == why]
        if named:
            notes.append(f"{where}: ignored {', '.join(named)} ({why})")
    if cleaned:
        notes.append(f"{where}: NaN or infinite numbers inside {', '.join(cleaned)} shown as unknown")
    return RunRecord(**values), notes


def read_record(path: Path) -> tuple[RunRecord, list[str]]:
    """Read ``result.json``; OSError/ValueError (with the reason) when it cannot be a record."""
    return from_dict(read_json_file(path, MAX_RECORD_BYTES), str(path))


def write_record(path: Path, record: RunRecord) -> None:
    from ..core.files import atomic_write_json

    atomic_write_json(path, record.to_dict())


# ---- a finished run's record ----------------------------------------------------------------------------
TRAINED = ("probe", "finetune", "refit")  # the training stages: summary.csv lists their epochs, best_epochs their pick
HARD10_ABSENT = ("not measured: this run trains no linear probe, whose test losses rank the samples (as the official "
                 "standard_ft.py); --set hard10=true measures it, and a grid with a FLOW run shares its probe")


def make_record(r: Run, rid: str, t_start: float) -> RunRecord:
    """The run record from a finished Run: the headline numbers (a WiSE-FT point when the method
    reports one), the knobs that ran, what was measured on what, and provenance."""
    import time

    from ..core.hardware import precision_name, tf32_state
    from ..core.knobs import used as knob_used
    from ..methods import models
    from .audit import label_noise
    from ..methods.weighting import applied_weighting, weight_stats

    cfg = r.cfg
    before, after, tgt = r["source_eval"], r["forgetting"], r["target_eval"]
    hard = r.values.get("hard")
    wise = [dict(p, source_drop=_drop(before["acc"], p["source_acc_after"]),
                 hard10_acc=hard["wise"].get(p["alpha"]) if hard else None)
            for p in r.values.get("wise", {}).get("points", [])]
    headline = {"target_acc": tgt["acc"], "source_acc_after": after["acc"], "source_top5_after": after["acc5"],
                "source_agreement": after["agreement"], "source_kl": after["kl"],
                "hard10_acc": hard["acc"] if hard else None}
    if cfg.wise_alpha is not None:
        point = next(p for p in wise if p["alpha"] == cfg.wise_alpha)
        headline = {k: point[k] for k in headline}
    w = r.values.get("weights")
    fisher = r.values.get("fisher")
    ewc = cfg.regularizer == "ewc"
    lwf = cfg.distill == "lwf"
    src, data = r["source"], r["source_data"]
    from ..methods.train import selected_epoch

    best = {name: selected_epoch(r[name].rows) for name in TRAINED if name in r.values}
    return RunRecord(
        run_id=rid, config_id=config_id(r.configured), config=keyed_values(r.configured), created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        dataset=cfg.dataset, model=cfg.model, weights=src.key, method=cfg.method, seed=cfg.seed,
        protocol=cfg.protocol, best_epochs={k: v for k, v in best.items() if v is not None},
        dogs_split=cfg.dogs_split, split_overlap=split_overlap(r["task"], cfg),
        hparams_note=cfg.hparams_note, sweep=cfg.sweep,
        synthetic=cfg.synthetic, weighting=applied_weighting(cfg), tau_rule=w["rule"] if w else None,
        tau=w["tau"] if w else None, normalize=cfg.normalize if w else None, regularizer=cfg.regularizer,
        l2sp_lambda=cfg.l2sp_lambda if cfg.regularizer == "l2sp" else None, head_init=cfg.head_init,
        l2sp_beta=cfg.l2sp_beta if cfg.regularizer == "l2sp" else None,
        pull=cfg.pull if cfg.regularizer in ("l2sp", "ewc") else None,
        term_scale=cfg.term_scale if knob_used("term_scale", cfg) else None,
        wise_keys=cfg.wise_keys if wise else None, val_split=cfg.val_split or None, selection=r.values.get("select"),
        ewc_lambda=cfg.ewc_lambda if ewc else None, ewc_samples=fisher["n"] if fisher else None,
        ewc_draws=fisher["draws"] if fisher else None,
        **_fisher_scale(fisher["fisher"] if fisher else None, r, cfg.task_specific),
        distill=cfg.distill, lwf_lambda=cfg.lwf_lambda if lwf else None,
        lwf_temperature=cfg.lwf_temperature if lwf else None, lwf_targets="online" if lwf else None,
        lwf_parts=cfg.lwf_parts if lwf else None,
        refit=cfg.refit, finetune=cfg.finetune, epochs=cfg.epochs, lr=cfg.lr, wise_alpha=cfg.wise_alpha,
        restore=cfg.restore, task_specific=models.family_rule(src.model, cfg.task_specific), **headline,
        source_acc_before=before["acc"], source_drop=_drop(before["acc"], headline["source_acc_after"]),
        source_top5_before=before["acc5"], wise=wise, hard10_n=hard["n"] if hard else None,
        weight_stats=weight_stats(w["weights"]) if w and w["weights"] is not None else None,
        label_noise=label_noise(w, r["task"].noisy),
        source_eval_name=data.name, source_eval=data.desc, source_eval_classes=data.n_classes,
        source_eval_images=data.n_images, source_eval_partial=data.partial, target_data=target_data(r["task"]),
        device=r.device, deterministic=cfg.deterministic, amp=cfg.amp, channels_last=cfg.channels_last,
        precision=precision_name(cfg.amp, cfg.amp_dtype), tf32=tf32_state() if str(r.device).startswith("cuda") else None,
        hard10_note=None if hard else HARD10_ABSENT, stages=r.status, stage_keys=r.keys, stage_seconds=r.seconds,
        wall_seconds=round(time.time() - t_start, 3), git_sha=git_sha(), versions=versions(),
        source_info={**src.info, **data.info})


def split_overlap(task, cfg) -> dict:
    """``data.real.seen_shares`` for the run's training stages, on a task whose splits index one pool of
    images (Stanford Dogs under the paper protocol); {} for any other task."""
    if cfg.dogs_split is None:
        return {}
    from ..data.splits import seen_shares
    from .training import training_splits

    positions = {name: (part.train.indices, part.test.indices) for name, part in {"probe": task, **task.splits}.items()}
    return seen_shares(training_splits(cfg), positions)
def _fisher_scale(fisher: Optional[dict], r: Run, rule: str) -> dict:
    """The raw Fisher's largest and mean entry over the tensors EWC pulled (``train.EWC`` scales by the
    largest); None without a Fisher."""
    if fisher is None:
        return {"ewc_fisher_max": None, "ewc_fisher_mean": None}
    from ..methods import models
    from ..methods.regularizers import fisher_max

    model = r["finetune"].model
    shared, _ = models.split_state(model, rule)
    names = [name for name, _ in model.named_parameters() if name in shared]
    count = sum(fisher[name].numel() for name in names)
    return {"ewc_fisher_max": fisher_max(fisher, names),
            "ewc_fisher_mean": sum(float(fisher[name].double().sum()) for name in names) / max(count, 1)}


def _drop(before, after):
    """Source accuracy lost, or None on images without labels."""
    return None if before is None or after is None else before - after


def target_data(task) -> dict:
    """The target data set as the record shows it: its description, the counts actually found, and how a
    training epoch ends (``base.LAST_BATCH``)."""
    from ..data.base import LAST_BATCH

    info = task.info if isinstance(task.info, dict) else {"description": str(task.info)}
    return {"name": task.name, **info, "n_train": len(task.train), "n_test": len(task.test),
            "num_classes": task.num_classes, "last_batch": LAST_BATCH}
