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
This file is the stage list and nothing else: the run folder and its files are ``run.py``'s, the
record's assembly ``record.py``'s, the sample audit ``audit.py``'s.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import forgetting, source
from .config import RunConfig
from .data.real import PAPER_SPLITS
from .registry import is_folder
from .stages import Run, Stage, Store
from .weighting import applied_weighting, check_weights, flow_weights, is_paper_tau, parse_tau

if TYPE_CHECKING:
    from torch import nn

OPTIM = ("batch_size", "momentum", "weight_decay", "seed")  # every training stage reads these


@dataclass
class Trained:
    """A trained model stage's value: the model (CPU), its per-epoch rows and the name of the split it
    trained on (``stage_split``)."""

    model: nn.Module
    rows: list
    split: str = "probe"


def _saved(model: nn.Module, rows: list) -> dict:
    from . import models

    return {"model": models.clone_state(model), "rows": rows}


def _trained(template, stage: str):
    """Stage ``load``: a saved {"model", "rows"} as a Trained shaped like ``template(inputs)``."""
    def load(saved, i) -> Trained:
        model = template(i)
        model.load_state_dict(saved["model"])
        return Trained(model, saved["rows"], stage_split(stage, i.cfg))
    return load


# ---- which split each stage reads -----------------------------------------------------------------
def stage_split(stage: str, cfg) -> str:
    """The split a training stage reads where the task carries one per official script (Stanford Dogs,
    paper protocol, dogs_split=per-stage; ``data.real.STAGE_SPLITS``), else the task's one split: the
    probe and standard fine-tuning share linear_probing.py's, FLOW's fine-tuning (round 1) and refit
    (round 2) each have their own. The loss pass reads round 1's, the training set whose τ it gives
    (the official temperature script drew a fourth split and used only its training part)."""
    if stage == "finetune":
        return "round1" if cfg.weighting != "uniform" else "probe"
    return {"probe": "probe", "losses": "round1", "refit": "round2"}[stage]


def training_splits(cfg: RunConfig) -> list:
    """[(stage, split)]: the training stages this config reaches, in the order they train."""
    stages = ["probe"] + (["finetune"] if cfg.finetune else []) + (["refit"] if _refits(cfg) else [])
    return [(name, stage_split(name, cfg)) for name in stages]


def _final_task(i):
    """The task as split for the reported model's last training stage: its test set is the run's."""
    return i["task"].of_split(i["final"].split)


def _target_shaped(i) -> nn.Module:
    from . import models

    return models.with_new_head(i["source"].model, i["task"].num_classes, 0)


# ---- resources: what a run loads from outside (keys follow what was found) -----------------------
def _task(i):
    from .data import load_task

    return load_task(i.cfg)


def _task_reads(cfg) -> tuple:
    common = ("dataset", "image_size", "data_seed", "augment", "data_path")
    paper_split = cfg.dataset in PAPER_SPLITS and cfg.protocol == "paper"
    return (common + (("n_train", "n_test") if cfg.synthetic else ())
            + (("protocol",) if cfg.dataset in PAPER_SPLITS else ()) + (("dogs_split",) if paper_split else ())
            + (("split_ratio",) if is_folder(cfg.dataset) else ()))


def _source(i):
    return source.load_source(i.cfg, i.hw)


def _source_data(i):
    return forgetting.eval_set(i.cfg)


# ---- checkpoint selection (paper protocol) -------------------------------------------------------------
def _selector(i, task):
    """The paper protocol's checkpoint rule, as the official code: after every epoch the target *test*
    accuracy (one pass over the test set of the stage's own split, ``task``), the best epoch kept. None
    under the clean protocol (the last epoch: no checkpoint is chosen on test data)."""
    if i.cfg.protocol != "paper":
        return None
    from .evaluate import predict

    return lambda m: predict(m, task.test, hw=i.hw, desc="test accuracy (epoch selection)").acc


# ---- probe, losses, weights -------------------------------------------------------------------------
def _probe(i):
    """The new head trained on the frozen pre-trained backbone; BN statistics adapt when
    probe_bn_train, as in the official code."""
    from . import models
    from .train import Schedule, train

    cfg = i.cfg
    task = i["task"].of_split(stage_split("probe", cfg))
    m = models.with_new_head(i["source"].model, task.num_classes, cfg.seed)
    rows = train(m, task.train, Schedule(cfg.probe_epochs, cfg.probe_lr, cfg.batch_size, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay, cosine=False, head_only=True,
                                         bn_train=cfg.probe_bn_train),
                 seed=cfg.seed * 10 + 1, hw=i.hw, select=_selector(i, task), desc="probe")
    return _saved(m, rows)


def _losses(i):
    """Per-sample losses of the probe model over the training set, one pass in index order
    (Algorithm 1's f_i(θ*)): losses (N,), labels (N,), by sample index. Clean protocol: eval
    transforms. Paper protocol: the training transforms, as the official temperature script
    (augmentation draws seeded by the run seed)."""
    import torch

    from .evaluate import predict

    probe = i["probe"].model
    task = i["task"].of_split(stage_split("losses", i.cfg))
    draws = i.cfg.seed * 10 + 4 if i.cfg.protocol == "paper" else 0
    if i.cfg.protocol == "paper":
        torch.manual_seed(draws)  # device-side draws; host-side ones come from (draws, index)
        data, desc = task.train, "losses (probe model, training transforms)"
    else:
        data, desc = task.train_eval, "losses (probe model)"
    p = predict(probe, data, hw=i.hw, desc=desc, draw_seed=draws)
    probe.cpu()
    return {"losses": p.losses, "labels": p.labels}


def _losses_reads(cfg) -> tuple:
    return ("protocol",) + (("seed",) if cfg.protocol == "paper" else ())


def _tau_rule(cfg):
    return parse_tau(cfg.tau, cfg.paper_tau if is_paper_tau(cfg.tau) else None)


def _weights(i):
    """τ from its rule (a quantile of the probe's losses, or a number) and, where the losses exist,
    every training sample's weight. Cheap and pure: recomputed on every run, never stored."""
    rule = _tau_rule(i.cfg)
    saved = i.up.get("losses")
    losses = saved["losses"] if saved else None
    tau = rule.resolve(losses) if rule.kind == "quantile" else rule.value
    weights = flow_weights(losses, tau) if losses is not None else None
    if weights is not None and applied_weighting(i.cfg) == "flow":
        check_weights(weights, losses, tau, i.cfg.normalize)
    return {"rule": rule.text, "tau": tau, "losses": losses, "labels": saved["labels"] if saved else None,
            "weights": weights}


def _weights_reads(cfg) -> tuple:
    return ("weighting", "protocol", "tau") + (("paper_tau",) if is_paper_tau(cfg.tau) else ()) + (
        ("normalize",) if applied_weighting(cfg) == "flow" else ())


def _weights_needs(cfg) -> tuple:
    # static weights need every sample's loss; online weights need them only to resolve a quantile τ
    return ("losses",) if applied_weighting(cfg) == "flow" or _tau_rule(cfg).kind == "quantile" else ()


# ---- EWC's Fisher ---------------------------------------------------------------------------------------
def _fisher(i):
    """EWC's diagonal Fisher of the pre-trained model (its own head and BatchNorms, eval mode, fp32) on the
    target training images under eval transforms, labels drawn from its own source-task predictions
    (``evaluate.fisher_diagonal``): {"fisher": parameter name -> tensor, "n", "draws", "order", "labels"}. Keyed by what it
    reads: the source model, the target data, ``ewc_samples`` and ``ewc_draws`` — not λ, not the seed
    (its subset and draws are seeded by a constant), so every λ and seed of a configuration shares it.
    (It is a hardware stage, so ``amp`` is in its key too, though the pass runs in fp32.)"""
    from .evaluate import fisher_diagonal

    task = i["task"]  # the images the fine-tuning it anchors trains on: with one split per stage, its own
    task = task.of_split(stage_split("finetune", i.cfg)) if i.cfg.dogs_split == "per-stage" else task
    model = copy.deepcopy(i["source"].model)
    return fisher_diagonal(model, task.train_eval, samples=i.cfg.ewc_samples, draws=i.cfg.ewc_draws, hw=i.hw)


def _fisher_reads(cfg) -> tuple:
    # with one split per stage the fine-tuning's split follows its weighting (``stage_split``)
    return ("ewc_samples", "ewc_draws", "dogs_split") + (("weighting",) if cfg.dogs_split == "per-stage" else ())


# ---- fine-tuning and the Appendix-B refit -------------------------------------------------------------
def _finetune(i):
    from . import models
    from .train import EWC, L2SP, LwF, OnlineWeights, Schedule, StaticWeights, train

    cfg, hw = i.cfg, i.hw
    task = i["task"].of_split(stage_split("finetune", cfg))
    m = (copy.deepcopy(i["probe"].model) if cfg.head_init == "probe"
         else models.with_new_head(i["source"].model, task.num_classes, cfg.seed))
    weigher = None
    if applied_weighting(cfg) == "flow":
        weigher = StaticWeights(i["weights"]["losses"], i["weights"]["tau"])
    elif applied_weighting(cfg) == "flow-online":
        weigher = OnlineWeights(hw.prepare(copy.deepcopy(i["probe"].model)), i["weights"]["tau"])
    reg = None
    if cfg.regularizer in ("l2sp", "ewc"):
        reference = {k: v.to(hw.device) for k, v in models.clone_state(i["source"].model).items()}
        reg = (L2SP(m, reference, cfg.l2sp_lambda, cfg.task_specific) if cfg.regularizer == "l2sp"
               else EWC(m, reference, i["fisher"]["fisher"], cfg.ewc_lambda, cfg.task_specific))
    distill = None
    if cfg.distill == "lwf":  # the teacher and its head: the pre-trained model itself (Appendix B's source parts)
        rule = cfg.task_specific if cfg.lwf_parts == "source" else "auto"  # read (and keyed) only where it counts
        distill = LwF(hw.place(copy.deepcopy(i["source"].model)), cfg.lwf_lambda, cfg.lwf_temperature,
                      cfg.lwf_parts, rule)
    rows = train(m, task.train, Schedule(cfg.epochs, cfg.lr, cfg.batch_size, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay, cosine=True),
                 seed=cfg.seed * 10 + 2, hw=hw, weigher=weigher,
                 normalize=cfg.normalize if weigher is not None else "mean", regularizer=reg, distill=distill,
                 select=_selector(i, task), checkpoint=i.checkpoint, desc="finetune")
    return _saved(m, rows)


def _finetune_reads(cfg) -> tuple:
    reads = ("epochs", "lr", *OPTIM, "protocol", "weighting", "head_init", "regularizer", "distill")
    reads += ("normalize",) if cfg.weighting != "uniform" else ()
    reads += {"l2sp": ("l2sp_lambda", "task_specific"), "ewc": ("ewc_lambda", "task_specific")}.get(cfg.regularizer, ())
    if cfg.distill == "lwf":  # through the pre-trained parts, the rule says which parts those are
        reads += ("lwf_lambda", "lwf_temperature", "lwf_parts") + (("task_specific",) if cfg.lwf_parts == "source" else ())
    return tuple(dict.fromkeys(reads))


def _finetune_needs(cfg) -> tuple:
    needs = ("source", "task")
    needs += ("probe",) if cfg.head_init == "probe" or applied_weighting(cfg) == "flow-online" else ()
    needs += ("fisher",) if cfg.regularizer == "ewc" else ()
    return needs + (("weights",) if cfg.weighting != "uniform" else ())


def _refit(i):
    """Appendix B, stage 2: the task-specific head retrained on the frozen fine-tuned backbone with
    the plain loss (BN in train mode, as the official round 2)."""
    from .train import Schedule, train

    cfg = i.cfg
    task = i["task"].of_split(stage_split("refit", cfg))
    m = copy.deepcopy(i["finetune"].model)
    rows = train(m, task.train, Schedule(cfg.refit_epochs, cfg.refit_lr, cfg.batch_size, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay, cosine=False, head_only=True, bn_train=True),
                 seed=cfg.seed * 10 + 3, hw=i.hw, select=_selector(i, task), desc="refit head")
    return _saved(m, rows)


def _refits(cfg) -> bool:
    return cfg.finetune and cfg.refit and cfg.refit_epochs > 0


def _final_needs(cfg) -> tuple:
    return ("refit",) if _refits(cfg) else ("finetune",) if cfg.finetune else ("probe",)


# ---- evaluations ---------------------------------------------------------------------------------------
def _target_eval(i):
    """Target accuracy, and every test sample's top-1 correctness (N,) bool for Table 5, on the test set
    of the reported model's split."""
    from .evaluate import accuracy

    return accuracy(i["final"].model, _final_task(i).test, i.hw, "target accuracy", keep_correct=True)


def _probe_test(i):
    """Table 5's difficulty: the pre-trained model's loss on every test sample, i.e. the linear probe
    (pre-trained backbone, head fitted to the task; Algorithm 1's θ*), eval transforms, by index:
    losses (N,) float32. One inference pass, shared by every method of a seed through the probe's key
    (standard FT uses no probe otherwise; it is trained for this table). A task with a split per
    official script gets the losses on every split's test set, under "splits" (the reported model may
    end on any of them)."""
    from .evaluate import predict

    probe, task = i["probe"].model, i["task"]
    p = predict(probe, task.test, hw=i.hw, desc="test losses (probe model)")
    splits = {}
    for name, part in task.splits.items():
        q = predict(probe, part.test, hw=i.hw, desc=f"test losses (probe model, split {name})")
        splits[name] = {"losses": q.losses, "labels": q.labels}
    probe.cpu()
    return {"losses": p.losses, "labels": p.labels, "splits": splits}


def _hard(i):
    """Accuracy on the hardest 10% of the test samples (highest probe loss; evaluate.hard_accuracy)
    of the reported model, and of every WiSE-FT point. Cheap and pure: recomputed, never stored."""
    from .evaluate import hard_accuracy

    test = i["probe_test"]
    losses = test.get("splits", {}).get(i["final"].split, test)["losses"]  # the reported model's test set
    out = hard_accuracy(losses, i["target_eval"]["correct"])
    wise = i.up.get("wise")
    out["wise"] = ({p["alpha"]: hard_accuracy(losses, c)["acc"] for p, c in zip(wise["points"], wise["target_correct"])}
                   if wise else {})
    return out


def _source_eval(i):
    """Source accuracy of the pre-trained model and its log-probabilities on every source image
    (N × classes float32: 200 MB for the full IN-1K val), the reference for agreement and KL."""
    from .evaluate import accuracy

    return accuracy(i["source"].model, i["source_data"].dataset, i.hw, "source accuracy (pre-trained)",
                    keep_logprobs=True)


def _forgetting(i):
    """Source accuracy of the measured model, and the label-free pair: agreement with the pre-trained
    model's top-1 class and the mean KL(pre-trained || measured)."""
    from .evaluate import accuracy

    if "final" not in i.up:  # see _forgetting_needs
        return _unchanged(i["source_eval"])
    m = forgetting.measured_model(i["source"].model, i["final"].model, i.cfg.restore, _rule(i.cfg))
    return accuracy(m, i["source_data"].dataset, i.hw, "source accuracy (after)",
                    reference=i["source_eval"]["logprobs"])


def _unchanged(before: dict) -> dict:
    """The forgetting evaluation of a measured model that *is* the pre-trained one: its own
    evaluation, agreement 1 and KL 0 exactly, without a second pass."""
    return {**{k: before[k] for k in ("acc", "acc5", "n", "n_labelled")}, "agreement": 1.0, "kl": 0.0,
            "reused": "source_eval"}


def _rule(cfg) -> str:
    """The task_specific rule, read only where the restore rule uses it."""
    return cfg.task_specific if cfg.restore == "task-specific" else "auto"


def _forgetting_reads(cfg) -> tuple:
    return ("restore", "finetune") + (("task_specific",) if cfg.restore == "task-specific" else ())


def _forgetting_needs(cfg) -> tuple:
    # Linear probing trains the head alone (and, in train mode, moves BatchNorm statistics): when the
    # restore rule takes the head and every BatchNorm back, the measured model *is* the pre-trained
    # one, so its evaluation is reused rather than repeated. A head-only rule keeps the probe's
    # BatchNorm statistics, so it is measured.
    if not cfg.finetune and cfg.restore == "task-specific" and cfg.task_specific != "head":
        return ("source_eval",)
    return ("final", "source", "source_data", "source_eval")


def wise_alphas(cfg) -> list:
    return sorted(set(cfg.wise_alphas) | ({cfg.wise_alpha} if cfg.wise_alpha is not None else set()))


def _wise(i):
    """WiSE-FT points: for each α, target and source accuracy of the interpolated model. α = 1 is the
    fine-tuned model exactly and, with the task-specific parts restored, α = 0 measures the
    pre-trained model exactly: those evaluations are reused, not repeated. Every other point but the
    reported α measures source accuracy on a seeded class-balanced subset of ``wise_subset`` images when
    the source set is larger (a curve's shape, not a table's number: 10,000 of IN-1K's 50,000 images);
    each point records how many images it was measured on."""
    from . import models
    from .evaluate import accuracy

    points, correct = [], []
    sub = forgetting.subset(i["source_data"], i.cfg.wise_subset, i.cfg.data_seed)
    for alpha in wise_alphas(i.cfg):
        m = models.interpolate_shared(i["source"].model, i["final"].model, alpha, i.cfg.task_specific)
        tgt = i["target_eval"] if alpha == 1 else accuracy(m, _final_task(i).test, i.hw, f"target accuracy α={alpha:g}",
                                                           keep_correct=True)
        correct.append(tgt["correct"])
        if alpha == 1:
            src = i["forgetting"]
        elif alpha == 0 and i.cfg.restore == "task-specific":
            src = _unchanged(i["source_eval"])
        else:
            images, reference = ((sub[0], i["source_eval"]["logprobs"][sub[1]]) if sub and alpha != i.cfg.wise_alpha
                                 else (i["source_data"].dataset, i["source_eval"]["logprobs"]))
            src = accuracy(forgetting.measured_model(i["source"].model, m, i.cfg.restore, _rule(i.cfg)),
                           images, i.hw, f"source accuracy (after) α={alpha:g}", reference=reference)
        points.append({"alpha": alpha, "target_acc": tgt["acc"], "source_acc_after": src["acc"],
                       "source_top5_after": src["acc5"], "source_agreement": src["agreement"],
                       "source_kl": src["kl"], "source_images": src["n"],
                       "source_subset": src["n"] < i["source_data"].n_images})
    return {"points": points, "target_correct": correct}  # correct: (N,) bool per point, for Table 5


STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("task", _task, reads=_task_reads, uses=("data_root", "cache_dir", "skip_bad_images"), cached=False,
          fingerprint=lambda task: task.info, doc="the target data set"),
    Stage("source", _source, reads=source.reads, uses=("cache_dir",), hardware=True, cached=False,
          fingerprint=lambda src: src.key, doc="the pre-trained model"),
    Stage("source_data", _source_data, reads=forgetting.reads, uses=("imagenet", "source_eval_dir", "cache_dir", "skip_bad_images"),
          cached=False, fingerprint=lambda data: data.fingerprint, doc="the images forgetting is measured on"),
    Stage("source_eval", _source_eval, needs=("source", "source_data"), hardware=True, version=2,
          doc="source accuracy and predictions of the pre-trained model"),
    Stage("probe", _probe, reads=("probe_epochs", "probe_lr", "probe_bn_train", "protocol", *OPTIM),
          needs=("source", "task"), hardware=True, load=_trained(_target_shaped, "probe"), doc="linear probe"),
    Stage("losses", _losses, reads=_losses_reads, needs=("probe", "task"), hardware=True,
          doc="per-sample losses of the probe model"),
    Stage("weights", _weights, reads=_weights_reads,
          needs=_weights_needs, cached=False, doc="τ and the FLOW weights"),
    Stage("fisher", _fisher, reads=_fisher_reads, needs=("source", "task"), hardware=True,
          doc="EWC: the pre-trained model's diagonal Fisher on the target images"),
    Stage("finetune", _finetune, reads=_finetune_reads, needs=_finetune_needs, hardware=True, resumable=True,
          load=_trained(_target_shaped, "finetune"), doc="fine-tuning of every parameter"),
    Stage("refit", _refit, reads=("refit_epochs", "refit_lr", "protocol", *OPTIM), needs=("finetune", "source", "task"),
          hardware=True, load=_trained(_target_shaped, "refit"), doc="head refit (Appendix B)"),
    Stage("final", lambda i: next(iter(i.up.values())), reads=("finetune", "refit", "refit_epochs"),
          needs=_final_needs, cached=False,
          doc="the model the run reports"),
    Stage("target_eval", _target_eval, needs=("final", "task"), hardware=True, version=2,
          doc="target accuracy and per-sample correctness"),
    Stage("probe_test", _probe_test, needs=("probe", "task"), hardware=True,
          doc="pre-trained (probe) loss of every test sample"),
    Stage("forgetting", _forgetting, reads=_forgetting_reads, needs=_forgetting_needs,
          hardware=True, version=2, doc="source accuracy, agreement and KL after fine-tuning"),
    Stage("wise", _wise, reads=("wise_alphas", "wise_alpha", "restore", "task_specific", "wise_subset", "data_seed"),
          needs=("final", "source", "task", "source_data", "target_eval", "forgetting", "source_eval"),
          hardware=True, version=4, doc="WiSE-FT points"),
    Stage("hard", _hard, reads=("wise_alphas", "wise_alpha"),
          needs=lambda cfg: ("probe_test", "target_eval", "final") + (("wise",) if wise_alphas(cfg) else ()),
          cached=False, doc="accuracy on the hardest 10% of test samples (Table 5)"),
)}


def targets(cfg: RunConfig) -> tuple:
    """The stages one run reports; everything else is reached through their needs."""
    return (("source_eval", "target_eval", "forgetting") + (("weights",) if cfg.weighting != "uniform" else ())
            + (("wise",) if wise_alphas(cfg) else ()) + ("hard",))


def plan(cfg: RunConfig, fingerprints: dict) -> dict:
    """stage -> key for every stage this config reaches, computed from the declarations alone;
    ``fingerprints`` stands in for what the loading stages (task, source, source_data) would find.
    A loading stage missing from ``fingerprints`` (not known without loading) has key None, and so
    has every stage downstream of it."""
    from .stages import check_declarations, plan_keys

    check_declarations(STAGES, cfg)
    return plan_keys(STAGES, cfg, targets(cfg), fingerprints)


def grid_plan(cfg: RunConfig) -> dict:
    """Stage keys for comparing the runs of one grid (which stages they share): every loading stage's
    fingerprint stands in as one value, so two runs get the same key exactly where their declared
    fields agree. Not the keys a run will use (those follow what the loading stages find)."""
    return plan(cfg, {name: "grid" for name, stage in STAGES.items() if stage.fingerprint})


def start(cfg: RunConfig) -> Run:
    """A Run over this config's stages with the target data loaded first (a missing data set is
    reported before any model is loaded or trained) and the source model's cheap checks done."""
    from .hardware import start as start_hardware

    r = Run(cfg, STAGES, Store(Path(cfg.results_dir) / "cache"))
    r.device = start_hardware(cfg)
    r["task"]
    source.preflight(cfg)
    return r
