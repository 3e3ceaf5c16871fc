"""Trade-off frontiers: is FLOW better than simply fine-tuning less?

    flowvision frontier --dataset gratings --model demo     # ~14 fine-tunings, then a PNG and a table

One point per method cannot answer a sceptic: standard FT with a smaller learning rate, fewer epochs
or WiSE-FT's α also trades target accuracy for source accuracy. This sweeps each method's own knob
through the ordinary pipeline (the same cached stages, ordinary run folders):

    FT            learning rate × epochs          (default: the config's lr × 0.1, 0.3, 1; 1 and the config's epochs)
    ℓ2-SP         λ, at FT's lr and epochs        (default: the config's l2sp_lambda × 0.1, 1, 10)
    WiSE-FT       α over the config's wise_alphas (one fine-tuning: the FT run at the config's lr and epochs)
    FLOW          τ over quantiles of the probe's losses (default: p10, p25, median, p75, p90)
    FLOW+WiSE-FT  α, on the FLOW run at the config's τ

The ℓ2 baseline is swept because its default strength (l2sp_lambda = 0.01) is not a published
number (``config.RunConfig``): judged at one arbitrary λ it would be judged at a guess.

It then plots target accuracy against source accuracy with each method's Pareto front (``stats``). The
table gives the area each front dominates (from the origin, in percent of the 100 × 100 square: a
front that is better everywhere has the larger area) and the paper's "Average", mean(source acc,
target acc), at each method's best point. Runs off a method's defaults carry ``sweep="frontier"``
in their record, so ``flowvision table`` does not pool them with the method's own runs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import pandas as pd

from . import config
from .console import console

METHODS = ("ft", "l2sp", "wiseft", "flow", "flow+wiseft")
LABELS = {"ft": "FT (lr × epochs)", "l2sp": "ℓ2-SP (λ)", "wiseft": "WiSE-FT (α)", "flow": "FLOW (τ)",
          "flow+wiseft": "FLOW+WiSE-FT (α)"}
LR_SCALES = (0.1, 0.3, 1.0)
L2SP_SCALES = (0.1, 1.0, 10.0)
TAUS = ("p10", "p25", "median", "p75", "p90")
SWEEP = "frontier"


def sweep(dataset: str, model: str, overrides: dict, seeds: Sequence[int] = (0,),
          lrs: Optional[Sequence[float]] = None, epochs: Optional[Sequence[int]] = None,
          taus: Optional[Sequence[str]] = None, l2sp_lambdas: Optional[Sequence[float]] = None) -> list:
    """-> [RunConfig]: every run of the sweep (see the module docstring); a run whose numbers are its
    method's defaults is the method's ordinary run (no ``sweep`` tag), any other is tagged."""
    from .config import run_id

    cfgs = []

    def add(method: str, seed: int, **knobs):
        default = config.resolve(dataset, model, method, dict(overrides, seed=seed))
        cfg = config.resolve(dataset, model, method, dict(overrides, seed=seed, **knobs))
        if run_id(cfg) != run_id(default):
            cfg = config.resolve(dataset, model, method, dict(overrides, seed=seed, sweep=SWEEP, **knobs))
        cfgs.append(cfg)

    for seed in seeds:
        ft = config.resolve(dataset, model, "ft", dict(overrides, seed=seed))
        for lr in lrs or [round(ft.lr * s, 12) for s in LR_SCALES]:
            for ep in epochs or sorted({1, ft.epochs}):
                add("ft", seed, lr=lr, epochs=ep)
        l2sp = config.resolve(dataset, model, "l2sp", dict(overrides, seed=seed))
        for lam in l2sp_lambdas or [round(l2sp.l2sp_lambda * s, 12) for s in L2SP_SCALES]:
            add("l2sp", seed, l2sp_lambda=lam)
        add("wiseft", seed)
        for tau in taus or TAUS:
            add("flow", seed, tau=tau)
        add("flow+wiseft", seed)
    return cfgs


def points(records: Sequence[dict]) -> pd.DataFrame:
    """One row per method × setting (mean over seeds): method, setting, source, target, average (percent),
    seeds; from run records (each FT or FLOW run is one point, a WiSE-FT run one point per α)."""
    rows = []
    for r in records:
        if r["method"] in ("wiseft", "flow+wiseft"):
            for p in r["wise"]:
                rows.append({"method": r["method"], "setting": f"α={p['alpha']:g}", "order": p["alpha"],
                             "source": p["source_acc_after"], "target": p["target_acc"], "seed": r["seed"]})
        elif r["method"] == "l2sp":
            rows.append({"method": "l2sp", "setting": f"λ={r['l2sp_lambda']:g}", "order": r["l2sp_lambda"],
                         "source": r["source_acc_after"], "target": r["target_acc"], "seed": r["seed"]})
        elif r["method"] == "ft":
            rows.append({"method": "ft", "setting": f"lr={r['lr']:g}, {r['epochs']} ep",
                         "order": r["lr"] * r["epochs"], "source": r["source_acc_after"], "target": r["target_acc"],
                         "seed": r["seed"]})
        else:
            rows.append({"method": r["method"], "setting": f"τ={r['tau_rule']} ({r['tau']:.3g})", "order": r["tau"],
                         "source": r["source_acc_after"], "target": r["target_acc"], "seed": r["seed"]})
    df = pd.DataFrame(rows)
    out = (df.groupby(["method", "setting"], sort=False)
           .agg(order=("order", "mean"), source=("source", "mean"), target=("target", "mean"),
                seeds=("seed", lambda s: " ".join(map(str, sorted(s)))))
           .reset_index())
    out[["source", "target"]] *= 100.0
    out["average"] = (out["source"] + out["target"]) / 2
    return out


def summary(pts: pd.DataFrame) -> pd.DataFrame:
    """Per method: points, front points, dominated area (percent of the 100 × 100 square, from the
    origin), and the best point by the paper's Average with its source and target accuracy."""
    from .stats import dominated_area, pareto_front

    rows = []
    for method in [m for m in METHODS if m in set(pts["method"])]:
        own = pts[pts["method"] == method].reset_index(drop=True)
        xy = list(zip(own["source"], own["target"]))
        front = pareto_front(xy)
        best = own.loc[own["average"].idxmax()]
        rows.append({"method": LABELS[method], "points": len(own), "on front": len(front),
                     "dominated area (%)": round(dominated_area([xy[i] for i in front]) / 100.0, 2),
                     "best Average": round(best["average"], 2), "at": best["setting"],
                     "source acc there": round(best["source"], 2), "target acc there": round(best["target"], 2)})
    return pd.DataFrame(rows)


def plot(pts: pd.DataFrame, source_before: float, title: str, path: Path) -> Path:
    """Target vs source accuracy, every point and each method's Pareto front as a staircase."""
    from matplotlib.figure import Figure

    from .plots import save_figure, method_style
    from .stats import pareto_front

    fig = Figure(figsize=(6.4, 4.8), dpi=120, layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    for method in [m for m in METHODS if m in set(pts["method"])]:
        own = pts[pts["method"] == method].reset_index(drop=True)
        look = method_style(method)
        ax.scatter(own["source"], own["target"], s=22, alpha=0.55, color=look["color"], marker=look["marker"],
                   label=f"{LABELS[method]}")
        front = own.loc[pareto_front(list(zip(own["source"], own["target"])))]
        ax.step(front["source"], front["target"], where="pre", color=look["color"], lw=1.4)
        ax.plot(front["source"], front["target"], ls="none", marker=look["marker"], color=look["color"], ms=6)
        for _, row in own.iterrows():
            ax.annotate(row["setting"], (row["source"], row["target"]), fontsize=5, color=look["color"],
                        xytext=(3, 2), textcoords="offset points")
    ax.axvline(source_before, color="grey", ls="--", lw=0.8)
    ax.text(source_before, ax.get_ylim()[0], " pre-trained", fontsize=6, color="grey", rotation=90, va="bottom")
    ax.set_xlabel("source accuracy after fine-tuning (%)  → forgets less", fontsize=8)
    ax.set_ylabel("target accuracy (%)", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    return save_figure(fig, Path(path))


def frontier(dataset: str, model: str, overrides: dict, seeds: Sequence[int] = (0,), **knobs) -> dict:
    """Run the sweep (cached stages: a rerun only re-reads), write
    ``<results>/frontier/<dataset>-<model>/{frontier.png, points.csv, summary.csv}`` and return
    {"points", "summary", "png", "folder", "runs", "seconds"}."""
    import time

    from .files import atomic_write_text
    from .config import model_slug
    from .run import run

    cfgs = sweep(dataset, model, overrides, seeds, **knobs)
    t0, records = time.time(), []
    for i, cfg in enumerate(cfgs):
        console.print(f"[bold]frontier run {i + 1}/{len(cfgs)}[/]: {cfg.method}, lr {cfg.lr:g}, {cfg.epochs} epochs, "
                      f"τ {cfg.tau if cfg.weighting != 'uniform' else '—'}"
                      + (f", λ {cfg.l2sp_lambda:g}" if cfg.regularizer == "l2sp" else "") + f", seed {cfg.seed}",
                      highlight=False)
        records.append(run(cfg))
    pts = points(records)
    table = summary(pts)
    folder = Path(cfgs[0].results_dir) / "frontier" / f"{dataset}-{model_slug(cfgs[0])}"
    before = 100.0 * records[0]["source_acc_before"]
    seeds_text = ", ".join(map(str, seeds))
    png = plot(pts, before, f"{dataset} / {model}: trade-off frontiers (seed{'s' if len(seeds) > 1 else ''} "
                            f"{seeds_text})", folder / "frontier.png")
    atomic_write_text(folder / "points.csv", pts.round(4).to_csv(index=False))
    atomic_write_text(folder / "summary.csv", table.to_csv(index=False))
    return {"points": pts, "summary": table, "png": str(png), "folder": str(folder),
            "runs": [r["run_dir"] for r in records], "seconds": time.time() - t0, "source_before": before}
