"""A small cost model of a grid: images through the model per stage, and GPU-hours at stated rates.

    flowvision reproduce --model resnet18 --dry-run      # ... and "estimate: 23 GPU-hours on one A6000 ..."

Every stage a grid reaches is counted once per key (the stages runs share are computed once), with
the number of images it pushes through the model:

    probe, refit          epochs x N_train forward passes (the backbone is frozen: inference speed)
    finetune              epochs x N_train training steps (+ the same again at inference speed for
                          online weights, which run the probe model on every batch, and again for LwF,
                          whose targets are the pre-trained model's outputs on every batch)
    losses                N_train at inference speed
    fisher                EWC: ewc_samples (default N_train) images at inference speed (the label draws),
                          and samples x ewc_draws per-sample gradients at training speed (a lower bound:
                          a per-sample gradient costs more than its share of a batch's step)
    target_eval           N_test;  source_eval, forgetting: the source images (50,000 for IN-1K val)
    wise                  N_test + source images for every α whose evaluation is not reused

The rates are assumptions unless measured: ``A6000`` holds round numbers for one A6000 at 224 px in
fp32 (not measured by flowvision; ResNet-18 roughly 1,200 training and 4,000 inference images/s,
ResNet-50 roughly 400 and 1,300). `flowvision bench --image-size 224` on your GPU gives the training
rate to use instead (``--set`` nothing: pass ``rates=`` to :func:`estimate`).
"""
from __future__ import annotations

A6000 = {"resnet18": {"train": 1200.0, "eval": 4000.0}, "resnet50": {"train": 400.0, "eval": 1300.0}}
IN1K_VAL = 50_000


def _sizes(cfg) -> tuple[int, int]:
    """(N_train, N_test) of a run's target data set: the official counts of a real set, the
    configured or default sizes of a synthetic one, the images a folder holds (0 when it cannot be read)."""
    from .registry import is_folder, is_synthetic

    if is_folder(cfg.dataset):
        from .data.folder import folder_status

        row = folder_status(cfg.dataset, cfg.split_ratio, cfg.data_seed)
        return row["n_train"] or 0, row["n_test"] or 0

    if is_synthetic(cfg.dataset):
        from .data.synthetic import SPECS

        spec = SPECS[cfg.dataset]
        return cfg.n_train or spec.n_train, cfg.n_test or spec.n_test
    from .data.real import REAL_TASKS

    return REAL_TASKS[cfg.dataset].sizes


def stage_images(name: str, cfg) -> tuple[float, float]:
    """(training images, inference images) one computation of stage ``name`` pushes through the model."""
    n_train, n_test = _sizes(cfg)
    source = (cfg.imagenet_subset or IN1K_VAL) if cfg.model != "demo" else (cfg.n_test or 1000)
    if name == "probe":
        return 0.0, cfg.probe_epochs * n_train
    if name == "refit":
        return 0.0, cfg.refit_epochs * n_train
    if name == "finetune":
        online = cfg.weighting == "flow-online" or cfg.protocol == "paper"
        passes = (online and cfg.weighting != "uniform") + (cfg.distill == "lwf")
        return cfg.epochs * n_train, cfg.epochs * n_train * passes
    if name == "fisher":
        n = min(cfg.ewc_samples or n_train, n_train)
        return n * cfg.ewc_draws, n
    if name == "losses":
        return 0.0, n_train
    if name == "target_eval":
        return 0.0, n_test
    if name in ("source_eval", "forgetting"):
        return 0.0, source
    if name == "wise":
        from .pipeline import wise_alphas

        fresh = [a for a in wise_alphas(cfg) if a not in (0.0, 1.0)]
        return 0.0, len(fresh) * (n_test + source) + (n_test if 0.0 in wise_alphas(cfg) else 0)
    return 0.0, 0.0


def estimate(cfgs: list, rates: dict | None = None) -> dict:
    """GPU-hours of a grid, each stage key counted once. -> {"hours", "train_images", "eval_images",
    "rates": the rates used per model, "assumed": whether any rate is an assumption}."""
    from .pipeline import grid_plan

    assumed = not rates
    rates = dict(A6000, **(rates or {}))
    seen, train, evals, seconds = set(), 0.0, 0.0, 0.0
    for cfg in cfgs:
        arch = cfg.model.split(".")[0]
        rate = rates.get(arch, rates["resnet50"])
        for name, key in grid_plan(cfg).items():
            if (name, key) in seen or name == "forgetting" and not cfg.finetune:
                continue  # computed once per grid; a linear probe's forgetting reuses the source evaluation
            seen.add((name, key))
            t, e = stage_images(name, cfg)
            train, evals = train + t, evals + e
            seconds += t / rate["train"] + e / rate["eval"]
    used = {cfg.model.split(".")[0] for cfg in cfgs}
    return {"hours": seconds / 3600, "train_images": train, "eval_images": evals,
            "rates": {m: rates.get(m, rates["resnet50"]) for m in used}, "assumed": assumed}
