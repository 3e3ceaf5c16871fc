"""One run, stage by stage, each stage handing the next a file (DESIGN.md, "One run").

    source model -> source accuracy -> probe -> losses, τ, weights -> fine-tune -> head refit
                 -> target accuracy -> forgetting (shared from fine-tuned, head/BN from source) -> record

Every stage's output lives in ``<results>/cache/<stage>-<hash>.*``, the hash taken over exactly the
inputs that decide it (upstream hashes included). A finished stage is loaded, never recomputed:
re-running a run costs only the final evaluations' reads, runs that share a stage share its file
(ft and wiseft share one fine-tuning; a τ sweep shares one probe and one loss pass), and a killed
run resumes, mid-fine-tuning from its last finished epoch.
"""
from __future__ import annotations

import copy
import csv
import io
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from . import models
from .config import RunConfig, write_yaml
from .data import load_task
from .evaluate import predict
from .hardware import Hardware, resolve_device
from .records import atomic_save, atomic_write_json, atomic_write_text, git_sha, stable_hash, versions
from .source import Source, load_source
from .train import L2SP, OnlineWeights, Schedule, StaticWeights, train
from .weighting import flow_weights, parse_tau, weight_stats


# Bump when a stage's code changes what it computes or the format of its file: old entries are then
# simply not found (they live in the previous version's folder) instead of being served as current.
STAGE_VERSION = 1


class Stages:
    """Content-addressed stage outputs in one folder, with what was computed vs. loaded and how long."""

    def __init__(self, folder: Path):
        self.folder = folder / f"v{STAGE_VERSION}"
        self.status: dict[str, str] = {}
        self.seconds: dict[str, float] = {}

    def path(self, name: str, key: str) -> Path:
        return self.folder / f"{name}-{key}.pt"

    def get(self, label: str, name: str, key: str, compute):
        """Load ``<name>-<key>.pt`` or run ``compute()`` (-> a dict of tensors/values) and save it."""
        path = self.path(name, key)
        t0 = time.time()
        if path.exists():
            value = torch.load(path, map_location="cpu", weights_only=True)
            self.status[label] = "cached"
        else:
            value = compute()
            atomic_save(value, path)
            self.status[label] = "computed"
        self.seconds[label] = round(self.seconds.get(label, 0.0) + time.time() - t0, 3)
        return value


def _numbers(cfg: RunConfig) -> dict:
    """The config keys that can change a result (not paths, device or speed switches)."""
    return {k: v for k, v in cfg.to_dict().items()
            if k not in ("results_dir", "cache_dir", "device", "num_workers", "compile", "channels_last",
                         "data_root", "imagenet")}


def run_id(cfg: RunConfig) -> str:
    """<dataset>-<model>-<method>-s<seed>-<hash of everything that can change a number>."""
    return f"{cfg.dataset}-{model_slug(cfg)}-{cfg.method}-s{cfg.seed}-{stable_hash(_numbers(cfg))[:8]}"


def config_id(cfg: RunConfig) -> str:
    """Like run_id's hash but without the seed: runs that differ only in seed share it."""
    return stable_hash({k: v for k, v in _numbers(cfg).items() if k != "seed"})[:8]


def model_slug(cfg: RunConfig) -> str:
    return Path(cfg.model).name.replace(".", "_")


def hardware(cfg: RunConfig) -> Hardware:
    return Hardware(resolve_device(cfg.device), amp=cfg.amp, channels_last=cfg.channels_last,
                    compile=cfg.compile, num_workers=cfg.num_workers)


def _eval_stage(stages: Stages, label: str, key: str, model, dataset, hw, desc: str) -> dict:
    def compute():
        p = predict(model, dataset, batch_size=256, hw=hw, desc=desc)
        return {"acc": p.acc, "acc5": p.acc5, "n": len(dataset)}
    out = stages.get(label, "eval", key, compute)
    model.cpu()
    return out


@dataclass
class Context:
    """What every stage of one run reads: config, hardware, stage cache, target task, source."""

    cfg: RunConfig
    hw: Hardware
    stages: Stages
    task: object
    src: Source
    data_key: str
    train_key: dict


def prepare(cfg: RunConfig, with_eval: bool = True) -> Context:
    """Load the target task and the source model (with its forgetting evaluation set unless
    ``with_eval`` is False), and the keys every stage hashes."""
    hw = hardware(cfg)
    task = load_task(cfg)  # first: a missing data set is reported before any model is loaded or trained
    src = load_source(cfg, hw, with_eval)
    data_key = stable_hash(task.info, cfg.augment)
    train_key = dict(batch_size=cfg.batch_size, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                     amp=cfg.amp, seed=cfg.seed, data=data_key)
    return Context(cfg, hw, Stages(Path(cfg.results_dir) / "cache"), task, src, data_key, train_key)


def probe_stage(ctx: Context):
    """The new head trained on the frozen pre-trained backbone (BN statistics adapt when
    probe_bn_train, as in the official code). -> (model, key, per-epoch rows)."""
    cfg, src, task = ctx.cfg, ctx.src, ctx.task
    key = stable_hash("probe", src.key, ctx.train_key, cfg.probe_epochs, cfg.probe_lr, cfg.probe_bn_train)

    def compute():
        m = models.with_new_head(src.model, task.num_classes, cfg.seed)
        r = train(m, task.train, Schedule(cfg.probe_epochs, cfg.probe_lr, cfg.batch_size, momentum=cfg.momentum,
                                          weight_decay=cfg.weight_decay, cosine=False, head_only=True,
                                          bn_train=cfg.probe_bn_train),
                  seed=cfg.seed * 10 + 1, hw=ctx.hw, desc="probe")
        return {"model": models.clone_state(m), "rows": r}
    saved = ctx.stages.get("probe", "probe", key, compute)
    probe = models.with_new_head(src.model, task.num_classes, cfg.seed)
    probe.load_state_dict(saved["model"])
    return probe, key, saved["rows"]


def losses_stage(ctx: Context, probe, probe_key: str):
    """Per-sample losses of the probe model over the training set with eval transforms, one pass
    (Algorithm 1's f_i(θ*)). -> (losses (N,), labels (N,)), by sample index."""
    def compute():
        p = predict(probe, ctx.task.train_eval, hw=ctx.hw, desc="losses (probe model)")
        return {"losses": p.losses, "labels": p.labels}
    saved = ctx.stages.get("losses", "losses", stable_hash("losses", probe_key), compute)
    probe.cpu()
    return saved["losses"], saved["labels"]


def run(cfg: RunConfig) -> dict:
    """Run (or resume, or re-read) one configuration; write its run folder; return result.json's dict."""
    t_start = time.time()
    run_dir = Path(cfg.results_dir) / "runs" / run_id(cfg)
    ctx = prepare(cfg)  # data and source first: a missing data set leaves no half-made run folder
    atomic_write_text(run_dir / "config.yaml", write_yaml(cfg))
    hw, stages, task, src, data_key, train_key = ctx.hw, ctx.stages, ctx.task, ctx.src, ctx.data_key, ctx.train_key
    rid = run_dir.name

    before = _eval_stage(stages, "source_eval_before", stable_hash("source", src.key, src.eval_key, cfg.amp), src.model,
                         src.eval_set, hw, "source accuracy (pre-trained)")

    rows: list[dict] = []
    probe = probe_key = None
    if cfg.head_init == "probe" or cfg.weighting != "uniform" or not cfg.finetune:
        probe, probe_key, probe_rows = probe_stage(ctx)
        rows += probe_rows

    # -- τ and weights from the probe's losses (an online run with a numeric τ needs no loss pass)
    tau = losses = None
    if cfg.weighting != "uniform":
        rule = parse_tau(cfg.tau)
        if rule.kind == "quantile" or cfg.weighting == "flow":
            losses, loss_labels = losses_stage(ctx, probe, probe_key)
        tau = rule.resolve(losses) if rule.kind == "quantile" else rule.value

    # -- fine-tune all parameters (or stop at the probe for linear probing)
    if cfg.finetune:
        start_key = probe_key if cfg.head_init == "probe" else stable_hash("random-head", src.key, cfg.seed,
                                                                           task.num_classes)
        weights_from = probe_key if cfg.weighting != "uniform" else None  # FLOW weights come from the probe
        ft_key = stable_hash("finetune", start_key, weights_from, train_key, cfg.epochs, cfg.lr, cfg.weighting,
                             cfg.normalize, None if tau is None else repr(float(tau)), cfg.regularizer,
                             cfg.l2sp_lambda if cfg.regularizer == "l2sp" else None)

        def compute_finetune():
            m = (copy.deepcopy(probe) if cfg.head_init == "probe"
                 else models.with_new_head(src.model, task.num_classes, cfg.seed))
            weigher = None
            if cfg.weighting == "flow":
                weigher = StaticWeights(losses, tau)
            elif cfg.weighting == "flow-online":
                weigher = OnlineWeights(hw.prepare(copy.deepcopy(probe)), tau)
            reg = None
            if cfg.regularizer == "l2sp":
                reg = L2SP(m, {k: v.to(hw.device) for k, v in models.clone_state(src.model).items()}, cfg.l2sp_lambda)
            r = train(m, task.train, Schedule(cfg.epochs, cfg.lr, cfg.batch_size, momentum=cfg.momentum,
                                              weight_decay=cfg.weight_decay, cosine=True),
                      seed=cfg.seed * 10 + 2, hw=hw, weigher=weigher, normalize=cfg.normalize, regularizer=reg,
                      checkpoint=stages.path("finetune", ft_key).with_suffix(".partial.pt"), desc="finetune")
            return {"model": models.clone_state(m), "rows": r}
        saved = stages.get("finetune", "finetune", ft_key, compute_finetune)
        stages.path("finetune", ft_key).with_suffix(".partial.pt").unlink(missing_ok=True)
        final = models.with_new_head(src.model, task.num_classes, cfg.seed)
        final.load_state_dict(saved["model"])
        rows += saved["rows"]
        final_key = ft_key
        # -- Appendix-B stage 2: refit the task-specific head on the frozen fine-tuned backbone, plain loss
        if cfg.refit and cfg.refit_epochs > 0:
            refit_key = stable_hash("refit", ft_key, train_key, cfg.refit_epochs, cfg.refit_lr)

            def compute_refit():
                r = train(final, task.train, Schedule(cfg.refit_epochs, cfg.refit_lr, cfg.batch_size,
                                                      momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                                                      cosine=False, head_only=True, bn_train=True),
                          seed=cfg.seed * 10 + 3, hw=hw, desc="refit head")
                return {"model": models.clone_state(final), "rows": r}
            saved = stages.get("refit", "refit", refit_key, compute_refit)
            final.load_state_dict(saved["model"])
            rows += saved["rows"]
            final_key = refit_key
    else:
        final, final_key = probe, probe_key
    final.cpu()

    # -- evaluation: target accuracy, and source accuracy with the source head/BN restored exactly
    def evaluate_model(model, key: str, label: str) -> dict:
        tgt = _eval_stage(stages, f"target_eval{label}", stable_hash("target", key, data_key), model, task.test, hw,
                          f"target accuracy{label}")
        fm = models.forgetting_model(src.model, model)
        after = _eval_stage(stages, f"source_eval_after{label}", stable_hash("source-after", key, src.eval_key),
                            fm, src.eval_set, hw, f"source accuracy (after){label}")
        return {"target_acc": tgt["acc"], "source_acc_after": after["acc"], "source_top5_after": after["acc5"],
                "source_drop": before["acc"] - after["acc"]}

    headline = evaluate_model(final, final_key, "")
    wise = []
    alphas = sorted(set(cfg.wise_alphas) | ({cfg.wise_alpha} if cfg.wise_alpha is not None else set()))
    for alpha in alphas:
        m = models.interpolate_shared(src.model, final, alpha)
        wise.append({"alpha": alpha, **evaluate_model(m, stable_hash("wise", final_key, alpha), f" α={alpha:g}")})
    if cfg.wise_alpha is not None:
        headline = {k: v for k, v in next(w for w in wise if w["alpha"] == cfg.wise_alpha).items() if k != "alpha"}

    result = {
        "run_id": rid, "config_id": config_id(cfg), "dataset": cfg.dataset, "model": cfg.model, "weights": src.key, "method": cfg.method,
        "seed": cfg.seed, "synthetic": cfg.synthetic, "weighting": cfg.weighting,
        "tau_rule": cfg.tau if cfg.weighting != "uniform" else None, "tau": tau, "normalize": cfg.normalize,
        "regularizer": cfg.regularizer, "l2sp_lambda": cfg.l2sp_lambda if cfg.regularizer == "l2sp" else None,
        "head_init": cfg.head_init, "refit": cfg.refit, "finetune": cfg.finetune, "epochs": cfg.epochs,
        "lr": cfg.lr, "wise_alpha": cfg.wise_alpha,
        "target_acc": headline["target_acc"], "source_acc_before": before["acc"],
        "source_acc_after": headline["source_acc_after"], "source_drop": headline["source_drop"],
        "source_top5_before": before["acc5"], "source_top5_after": headline["source_top5_after"],
        "source_eval": src.eval_desc, "target_data": str(task.info),
        "weight_stats": weight_stats(flow_weights(losses, tau)) if losses is not None else None,
        "wise": wise, "stages": stages.status, "stage_seconds": stages.seconds,
        "wall_seconds": round(time.time() - t_start, 3), "git_sha": git_sha(), "versions": versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "source_info": src.info,
    }
    _write_summary(run_dir / "summary.csv", rows)
    if losses is not None:
        _write_weights(run_dir / "weights.csv", losses, flow_weights(losses, tau), loss_labels)
    atomic_write_json(run_dir / "result.json", result)
    result["run_dir"] = str(run_dir)
    return result


def _write_summary(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    cols = ["stage", "epoch", "loss", "ce", "acc", "lr", "seconds", "data_seconds"]
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _write_weights(path: Path, losses: torch.Tensor, weights: torch.Tensor, labels) -> None:
    buf = io.StringIO()
    buf.write("index,label,loss,weight\n")
    for i in range(len(losses)):
        buf.write(f"{i},{int(labels[i])},{float(losses[i]):.6g},{float(weights[i]):.6g}\n")
    atomic_write_text(path, buf.getvalue())


def audit(cfg: RunConfig, k: int = 16) -> dict:
    """The sample audit: probe -> losses -> FLOW weights (the same cached stages a run uses), then a
    contact sheet of the k most up- and down-weighted training samples and per-class mean weights.
    Writes ``<results>/audit/<dataset>-<model>-s<seed>/{samples.png, per_class.csv, weights.csv}``."""
    import pandas as pd

    from .audit import sample_audit
    from .data import class_names, display_image

    ctx = prepare(cfg, with_eval=False)  # the audit measures no forgetting: no ImageNet needed
    probe, probe_key, _ = probe_stage(ctx)
    losses, labels = losses_stage(ctx, probe, probe_key)
    rule = parse_tau(cfg.tau)
    tau = rule.resolve(losses)
    weights = flow_weights(losses, tau)
    tau_tag = cfg.tau.replace(".", "_")
    folder = Path(cfg.results_dir) / "audit" / f"{cfg.dataset}-{model_slug(cfg)}-tau_{tau_tag}-s{cfg.seed}"
    _write_weights(folder / "weights.csv", losses, weights, labels)
    frame = pd.DataFrame({"index": range(len(losses)), "label": labels.numpy(), "loss": losses.numpy(),
                          "weight": weights.numpy()})
    per_class = sample_audit(frame, lambda i: display_image(ctx.task, i), class_names(ctx.task), k,
                             folder / "samples.png")
    atomic_write_text(folder / "per_class.csv", per_class.to_csv(index=False))
    return {"folder": str(folder), "png": str(folder / "samples.png"), "per_class": per_class, "tau": tau,
            "tau_rule": cfg.tau, "weight_stats": weight_stats(weights)}
