"""The training stages of one run, as the stage list (``pipeline.STAGES``) names them: the linear probe,
the loss pass and FLOW's weights, EWC's Fisher, the fine-tuning and the Appendix-B head refit. Each is a
compute function of the stage's inputs (``store.Inputs``) with the functions that declare what it reads
and needs; what they train with is ``methods``'s.

The protocol (``clean`` | ``paper``) is read by the stages it changes: ``paper`` keeps the best *test*
epoch at the probe, fine-tuning and refit (``selector``), weights FLOW online and takes τ's quantile over
training-transform losses; under Stanford Dogs' per-stage splits each stage reads its own (``stage_split``).
Importing this module does not import torch.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..core.config import RunConfig
from ..core.knobs import read_by
from ..core.tau import is_paper_tau, parse_tau
from ..methods.weighting import applied_weighting, check_weights, flow_weights

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


def saved(model: nn.Module, rows: list) -> dict:
    from ..methods import models

    return {"model": models.clone_state(model), "rows": rows}


def trained(template, stage: str):
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
    stages = ["probe"] + (["finetune"] if cfg.finetune else []) + (["refit"] if refits(cfg) else [])
    return [(name, stage_split(name, cfg)) for name in stages]


def final_task(i):
    """The task as split for the reported model's last training stage: its test set is the run's."""
    return i["task"].of_split(i["final"].split)


def target_shaped(i) -> nn.Module:
    from ..methods import models

    return models.with_new_head(i["source"].model, i["task"].num_classes, 0)


# ---- checkpoint selection (paper protocol) -------------------------------------------------------------
def selector(i, task):
    """The paper protocol's checkpoint rule, as the official code: after every epoch the target *test*
    accuracy (one pass over the test set of the stage's own split, ``task``), the best epoch kept. None
    under the clean protocol (the last epoch: no checkpoint is chosen on test data)."""
    if i.cfg.protocol != "paper":
        return None
    from ..methods.evaluate import predict

    return lambda m: predict(m, task.test, hw=i.hw, desc="test accuracy (epoch selection)").acc


# ---- probe, losses, weights -------------------------------------------------------------------------
def probe(i):
    """The new head trained on the frozen pre-trained backbone; BN statistics adapt when
    probe_bn_train, as in the official code."""
    from ..methods import models
    from ..methods.train import Schedule, train

    cfg = i.cfg
    task = i["task"].of_split(stage_split("probe", cfg))
    m = models.with_new_head(i["source"].model, task.num_classes, cfg.seed)
    rows = train(m, task.train, Schedule(cfg.probe_epochs, cfg.probe_lr, cfg.batch_size, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay, cosine=False, head_only=True,
                                         bn_train=cfg.probe_bn_train),
                 seed=cfg.seed * 10 + 1, hw=i.hw, select=selector(i, task), desc="probe")
    return saved(m, rows)


def losses(i):
    """Per-sample losses of the probe model over the training set, one pass in index order
    (Algorithm 1's f_i(θ*)): losses (N,), labels (N,), by sample index. Clean protocol: eval
    transforms. Paper protocol: the training transforms, as the official temperature script
    (augmentation draws seeded by the run seed). In fp32 whatever the training precision (the stage is
    ``full_precision``): τ and every weight are exponentials of these numbers, which bf16 logits would move."""
    import torch

    from ..methods.evaluate import per_sample_losses

    probe = i["probe"].model
    task = i["task"].of_split(stage_split("losses", i.cfg))
    draws = i.cfg.seed * 10 + 4 if i.cfg.protocol == "paper" else 0
    if i.cfg.protocol == "paper":
        torch.manual_seed(draws)  # device-side draws; host-side ones come from (draws, index)
        data, desc = task.train, "losses (probe model, training transforms)"
    else:
        data, desc = task.train_eval, "losses (probe model)"
    losses, labels = per_sample_losses(probe, data, device=i.hw, seed=draws, return_labels=True, desc=desc)
    probe.cpu()
    return {"losses": losses, "labels": labels}


def losses_reads(cfg) -> tuple:
    return ("protocol",) + (("seed",) if cfg.protocol == "paper" else ())


def tau_rule(cfg):
    return parse_tau(cfg.tau, cfg.paper_tau if is_paper_tau(cfg.tau) else None)


def weights(i):
    """τ from its rule (a quantile of the probe's losses, or a number) and, where the losses exist,
    every training sample's weight. Cheap and pure: recomputed on every run, never stored."""
    rule = tau_rule(i.cfg)
    saved = i.up.get("losses")
    losses = saved["losses"] if saved else None
    # without the losses (online weights at a number τ) only τ is needed; a quantile rule always has them
    weights, tau = flow_weights(losses, rule) if losses is not None else (None, rule.value)
    if weights is not None and applied_weighting(i.cfg) == "flow":
        check_weights(weights, losses, tau, i.cfg.normalize)
    return {"rule": rule.text, "tau": tau, "losses": losses, "labels": saved["labels"] if saved else None,
            "weights": weights}


def weights_reads(cfg) -> tuple:
    return ("weighting", "protocol", "tau") + (("paper_tau",) if is_paper_tau(cfg.tau) else ()) + (
        ("normalize",) if applied_weighting(cfg) == "flow" else ())


def weights_needs(cfg) -> tuple:
    # static weights need every sample's loss; online weights need them only to resolve a quantile τ
    return ("losses",) if applied_weighting(cfg) == "flow" or tau_rule(cfg).kind == "quantile" else ()


# ---- EWC's Fisher ---------------------------------------------------------------------------------------
def fisher(i):
    """EWC's diagonal Fisher of the pre-trained model (its own head and BatchNorms, eval mode, fp32) on the
    target training images under eval transforms, labels drawn from its own source-task predictions
    (``evaluate.fisher_diagonal``): {"fisher": parameter name -> tensor, "n", "draws", "order", "labels"}. Keyed by what it
    reads: the source model, the target data, ``ewc_samples`` and ``ewc_draws`` — not λ, not the seed
    (its subset and draws are seeded by a constant), so every λ and seed of a configuration shares it.
    It runs in fp32 whatever ``amp`` says, and is keyed so (``full_precision``): amp on and off share it."""
    from ..methods.evaluate import fisher_diagonal

    task = i["task"]  # the images the fine-tuning it anchors trains on: with one split per stage, its own
    task = task.of_split(stage_split("finetune", i.cfg)) if i.cfg.dogs_split == "per-stage" else task
    model = copy.deepcopy(i["source"].model)
    return fisher_diagonal(model, task.train_eval, samples=i.cfg.ewc_samples, draws=i.cfg.ewc_draws, hw=i.hw)


def fisher_reads(cfg) -> tuple:
    # with one split per stage the fine-tuning's split follows its weighting (``stage_split``)
    return read_by("fisher") + ("dogs_split",) + (("weighting",) if cfg.dogs_split == "per-stage" else ())


# ---- fine-tuning and the Appendix-B refit -------------------------------------------------------------
def finetune(i):
    from ..methods import models
    from ..methods.train import OnlineWeights, Schedule, StaticWeights, train
    from ..methods.regularizers import EWC, L2SP, LwF

    cfg, hw = i.cfg, i.hw
    task = i["task"].of_split(stage_split("finetune", cfg))
    m = (copy.deepcopy(i["probe"].model) if cfg.head_init == "probe"
         else models.with_new_head(i["source"].model, task.num_classes, cfg.seed))
    weigher = None
    if applied_weighting(cfg) == "flow":
        weigher = StaticWeights(i["weights"]["losses"], i["weights"]["tau"])
    elif applied_weighting(cfg) == "flow-online":
        weigher = OnlineWeights(hw.prepare(copy.deepcopy(i["probe"].model)), i["weights"]["tau"])
    reg, decay = None, None
    if cfg.regularizer in ("l2sp", "ewc"):
        hw.place(m)  # the pulls hold the model's parameters and put their tensors where those are
        reference = models.clone_state(i["source"].model)
        reg = (L2SP(m, reference, cfg.l2sp_lambda, cfg.task_specific, cfg.pull) if cfg.regularizer == "l2sp"
               else EWC(m, reference, i["fisher"]["fisher"], cfg.ewc_lambda, cfg.task_specific, cfg.pull))
        if cfg.regularizer == "l2sp":  # L2-SP's β on what the pull does not cover, no decay on what it does
            decay = {name: 0.0 if name in reg.names else cfg.l2sp_beta for name, _ in m.named_parameters()}
    distill = None
    if cfg.distill == "lwf":  # the teacher and its head: the pre-trained model itself (Appendix B's source parts)
        rule = cfg.task_specific if cfg.lwf_parts == "source" else "auto"  # read (and keyed) only where it counts
        distill = LwF(hw.place(copy.deepcopy(i["source"].model)), cfg.lwf_lambda, cfg.lwf_temperature,
                      cfg.lwf_parts, rule)
    rows = train(m, task.train, Schedule(cfg.epochs, cfg.lr, cfg.batch_size, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay, cosine=True),
                 seed=cfg.seed * 10 + 2, hw=hw, weigher=weigher,
                 normalize=cfg.normalize if weigher is not None else "mean", regularizer=reg, distill=distill,
                 scale_terms=weigher is not None and (reg is not None or distill is not None) and cfg.term_scale == "weights",
                 decay=decay, select=selector(i, task), checkpoint=i.checkpoint, desc="finetune")
    return saved(m, rows)


def finetune_version(cfg) -> int:
    """2 where LwF's teacher runs under the training autocast (it ran in fp32 beside autocast steps before); 3 (4
    with autocast) where LwF's ``training`` student is distilled from a teacher that sees the batch statistics it
    does (``regularizers.batch_statistics``; the teacher used its running statistics before); 1 elsewhere: the only
    fine-tunings whose numbers those changes move."""
    if cfg.distill == "lwf" and cfg.lwf_parts == "training":
        return 4 if cfg.amp else 3
    return 2 if cfg.distill == "lwf" and cfg.amp else 1


def finetune_reads(cfg) -> tuple:
    reads = ("epochs", "lr", *OPTIM, "protocol", "weighting", "head_init", "regularizer", "distill")
    reads += read_by("finetune", cfg)  # the method's own knobs that are on (core.knobs)
    # the pull acts on the shared tensors, and LwF through the pre-trained parts: the rule says which those are
    pulls = cfg.regularizer in ("l2sp", "ewc") or (cfg.distill == "lwf" and cfg.lwf_parts == "source")
    return reads + (("task_specific",) if pulls else ())


def finetune_needs(cfg) -> tuple:
    needs = ("source", "task")
    needs += ("probe",) if cfg.head_init == "probe" or applied_weighting(cfg) == "flow-online" else ()
    needs += ("fisher",) if cfg.regularizer == "ewc" else ()
    return needs + (("weights",) if cfg.weighting != "uniform" else ())


def refit(i):
    """Appendix B, stage 2: the task-specific head retrained on the frozen fine-tuned backbone with
    the plain loss (BN in train mode, as the official round 2)."""
    from ..methods.train import Schedule, train

    cfg = i.cfg
    task = i["task"].of_split(stage_split("refit", cfg))
    m = copy.deepcopy(i["finetune"].model)
    rows = train(m, task.train, Schedule(cfg.refit_epochs, cfg.refit_lr, cfg.batch_size, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay, cosine=False, head_only=True, bn_train=True),
                 seed=cfg.seed * 10 + 3, hw=i.hw, select=selector(i, task), desc="refit head")
    return saved(m, rows)


def refits(cfg) -> bool:
    return cfg.finetune and cfg.refit and cfg.refit_epochs > 0


def final_needs(cfg) -> tuple:
    return ("refit",) if refits(cfg) else ("finetune",) if cfg.finetune else ("probe",)
