"""Trade-off frontiers: is FLOW better than simply fine-tuning less?

    flowvision frontier --dataset gratings --model demo --dry-run   # the runs, what is left, how long
    flowvision frontier --dataset gratings --model demo             # then a PNG and two tables
    flowvision frontier --dataset gratings --methods ft,flow        # FT (lr × epochs) and FLOW (τ) only

One point per method cannot answer a sceptic: standard FT with a smaller learning rate, fewer epochs
or WiSE-FT's α also trades target accuracy for source accuracy. This sweeps each method's own knob
through the ordinary pipeline (the same cached stages, ordinary run folders):

    FT            learning rate × epochs          (default: the config's lr × 0.1, 0.3, 1; 1 and the config's epochs)
    ℓ2-SP         λ, at FT's lr and epochs        (default: the config's l2sp_lambda × 0.1, 1, 10)
    WiSE-FT       α over the config's wise_alphas (one fine-tuning: the FT run at the config's lr and epochs)
    FLOW          τ over quantiles of the probe's losses (default: p10, p25, median, p75, p90)
    FLOW+WiSE-FT  α, on the FLOW run at the config's τ
    LwF           its λ (lwf_lambda; default 0, 0.1, 0.3, 1, 3, 10: Li & Hoiem's 1 in the middle; λ = 0 is LP-FT)
    EWC           its λ (ewc_lambda, on the Fisher scaled to max 1; default 0, 0.1, 1, 10, 100; λ = 0 is FT)
    LP            once per seed: the anchor every front includes (with the pre-trained model)

The ℓ2 baseline is swept because its default strength (l2sp_lambda = 0.01) is not a published
number (``config.RunConfig``): judged at one arbitrary λ it would be judged at a guess.

It then plots target accuracy against source accuracy with each method's Pareto front (``stats``); on
unlabelled source images (``--source-eval`` photos) the source axis is the label-free measure instead,
the agreement with the pre-trained model's top-1 class (the pre-trained model is at 100 %). Every front
includes the same two anchors, the pre-trained model and the linear probe (one ``lp`` run per seed), and
its area is measured above chance (``fronts``); the summary names each method's best setting by the
paper's Average, whether it sits at its grid's edge (then the best is a bound: the grid could go
further), the target accuracy each method reaches at a fixed source drop, and a table pairs every method
with FT seed by seed. A run that diverges is recorded as such (its state file says why), marked in the
figure and the summary, and the sweep goes on. Runs off a method's defaults carry ``sweep="frontier"``
in their record, so ``flowvision table`` does not pool them with the method's own runs.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import pandas as pd

from ..core import config
from ..core.console import console, plural

METHODS = ("ft", "l2sp", "wiseft", "flow", "flow+wiseft", "lwf", "ewc")
LABELS = {"lp": "LP (anchor)", "ft": "FT (lr × epochs)", "l2sp": "ℓ2-SP (λ)", "wiseft": "WiSE-FT (α)", "flow": "FLOW (τ)",
          "flow+wiseft": "FLOW+WiSE-FT (α)", "lwf": "LwF (λ)", "ewc": "EWC (λ)"}
LR_SCALES = (0.1, 0.3, 1.0)
L2SP_SCALES = (0.1, 1.0, 10.0)
TAUS = ("p10", "p25", "median", "p75", "p90")
# The baselines swept over their own strength λ: method -> (config field, default values; None: the
# config's own value × L2SP_SCALES)
LAMBDAS = {"l2sp": ("l2sp_lambda", None), "lwf": ("lwf_lambda", (0.0, 0.1, 0.3, 1.0, 3.0, 10.0)),
           "ewc": ("ewc_lambda", (0.0, 0.1, 1.0, 10.0, 100.0))}
SWEEP = "frontier"


def check_methods(methods: Optional[Sequence[str]]) -> tuple:
    """The frontier's methods to sweep, in ``METHODS`` order (None: all of them); a name it does not sweep is a
    UserError naming the ones it does."""
    from ..core.errors import UserError, did_you_mean

    if methods is None:
        return METHODS
    wrong = [m for m in methods if m not in METHODS]
    if wrong or not methods:
        raise UserError(f"--methods {','.join(methods)!r}: "
                        + (f"'{wrong[0]}' is not swept here{did_you_mean(wrong[0], METHODS)}; " if wrong else "none given; ")
                        + f"choose among {', '.join(METHODS)}")
    return tuple(m for m in METHODS if m in methods)


def sweep(dataset: str, model: str, overrides: dict, seeds: Sequence[int] = (0,),
          lrs: Optional[Sequence[float]] = None, epochs: Optional[Sequence[int]] = None,
          taus: Optional[Sequence[str]] = None, lambdas: Optional[dict] = None,
          methods: Optional[Sequence[str]] = None) -> list:
    """-> [RunConfig]: every run of the sweep (see the module docstring) for ``methods`` (None: every method of
    ``METHODS``) and the LP anchor; a run whose numbers are its method's defaults is the method's ordinary run
    (no ``sweep`` tag), any other is tagged."""
    from ..core.identity import run_id

    chosen = check_methods(methods) + ("lp",)
    cfgs = []

    def add(method: str, seed: int, **knobs):
        if method not in chosen:
            return
        default = config.resolve(dataset, model, method, dict(overrides, seed=seed))
        cfg = config.resolve(dataset, model, method, dict(overrides, seed=seed, **knobs))
        if run_id(cfg) != run_id(default):
            cfg = config.resolve(dataset, model, method, dict(overrides, seed=seed, sweep=SWEEP, **knobs))
        cfgs.append(cfg)

    for seed in seeds:
        add("lp", seed)
        ft = config.resolve(dataset, model, "ft", dict(overrides, seed=seed))
        for lr in lrs or [round(ft.lr * s, 12) for s in LR_SCALES]:
            for ep in epochs or sorted({1, ft.epochs}):
                add("ft", seed, lr=lr, epochs=ep)
        add("wiseft", seed)
        for tau in taus or TAUS:
            add("flow", seed, tau=tau)
        add("flow+wiseft", seed)
        for method, (field, values) in LAMBDAS.items():
            if values is None:
                own = getattr(config.resolve(dataset, model, method, dict(overrides, seed=seed)), field)
                values = [round(own * s, 12) for s in L2SP_SCALES]
            for lam in (lambdas or {}).get(method) or values:
                add(method, seed, **{field: lam})
    return cfgs


def source_measure(records: Sequence[dict]) -> str:
    """The record field the source axis shows: source accuracy, or on unlabelled source images (no
    accuracy) the agreement with the pre-trained model's top-1 class."""
    return "source_acc_after" if any(r["source_acc_after"] is not None for r in records) else "source_agreement"


MEASURES = {"source_acc_after": "source accuracy", "source_agreement": "agreement with the pre-trained top-1"}


def seed_points(records: Sequence[dict], failed: Sequence[tuple] = ()) -> pd.DataFrame:
    """One row per run and setting (a WiSE-FT run gives one per α): method, setting, order, seed, source,
    target, average (percent), the knobs the setting was swept over (``knobs``: ((name, value), ...), for
    ``fronts.at_edge``), the selection Average (``select_average``) and ``diverged``. ``failed``: (RunConfig,
    error) of the runs that diverged: a row each, without numbers. ``source`` is ``source_measure``'s field.

    A run with held-out images (``val_split``: its record's ``selection``) is chosen on them and reported apart:
    ``select_average`` is the mean of its held-out target accuracy and its source measure on the selection half of
    the source images, and ``source`` is that measure on the other half (``validated``: True). Without them both
    are the test numbers (``validated``: False), and the summary says the choice was made on what it reports."""
    rows, measure = [], source_measure(records) if records else "source_acc_after"
    halves = {"source_acc_after": ("source_select_after", "source_report_after"),
              "source_agreement": ("agreement_select", "agreement_report")}[measure]

    def row(r, setting, order, knobs, point, sel):
        source, chosen = point[measure], point["target_acc"]
        validated = sel is not None
        if validated:
            source = sel[halves[1]]
            select_average = 50.0 * (sel[halves[0]] + sel["target_val"])
        rows.append({"method": r["method"], "setting": setting, "order": order, "seed": r["seed"],
                     "source": source, "target": chosen, "knobs": tuple(knobs), "diverged": False,
                     "select_average": select_average if validated else math.nan, "validated": validated})

    for r in records:
        sel = r.get("selection")
        if r["method"] in ("wiseft", "flow+wiseft"):
            for p in r["wise"]:
                row(r, f"α={p['alpha']:g}", p["alpha"], [("α", p["alpha"])], p, sel["wise"][f"{p['alpha']:g}"] if sel else None)
        elif r["method"] == "ft":
            row(r, f"lr={r['lr']:g}, {r['epochs']} ep", r["lr"] * r["epochs"], [("lr", r["lr"]), ("epochs", r["epochs"])],
                r, sel)
        elif r["method"] in LAMBDAS:
            lam = r[LAMBDAS[r["method"]][0]]
            row(r, f"λ={lam:g}", lam, [("λ", lam)], r, sel)
        elif r["method"] == "lp":
            row(r, "probe", 0.0, [], r, sel)
        else:
            row(r, f"τ={r['tau_rule']}", r["tau"], [("τ", tau_rank(r["tau_rule"], r["tau"]))], r, sel)
    for cfg, _ in failed:
        rows.append({"method": cfg.method, "setting": setting(cfg), "order": math.nan, "seed": cfg.seed,
                     "source": math.nan, "target": math.nan, "knobs": (), "diverged": True,
                     "select_average": math.nan, "validated": cfg.val_split > 0})
    df = pd.DataFrame(rows, columns=["method", "setting", "order", "seed", "source", "target", "knobs", "diverged",
                                     "select_average", "validated"])
    df[["source", "target"]] = df[["source", "target"]].astype(float) * 100.0
    df["average"] = (df["source"] + df["target"]) / 2
    df["select_average"] = df["select_average"].astype(float).where(df["validated"], df["average"])
    return df


def source_before(record: dict, measure: str) -> float:
    """The pre-trained model's source measure in percent, as ``seed_points`` reports the source axis: on the report
    half of the source images where the run held images out, else on all of them (agreement: 100 by definition)."""
    if measure != "source_acc_after":
        return 100.0
    sel = record.get("selection")
    return 100.0 * (sel["source_report_before"] if sel else record["source_acc_before"])


def tau_rank(rule: str, tau: float) -> float:
    """Where a τ rule sits in its grid: a percentile's NN (median 50), else τ itself."""
    rule = str(rule)
    if rule == "median":
        return 50.0
    if rule.startswith("p"):
        try:
            return float(rule[1:])
        except ValueError:
            pass
    return float(tau)


def points(seed_pts: pd.DataFrame) -> pd.DataFrame:
    """One row per method × setting of ``seed_points`` (diverged runs left out), mean over seeds: method,
    setting, order, source, target, average (percent), their sample std over seeds (``source_std`` …; NaN
    for one seed), n_seeds, seeds."""
    df = seed_pts[~seed_pts["diverged"]]
    out = (df.groupby(["method", "setting"], sort=False)
           .agg(order=("order", "mean"), source=("source", "mean"), target=("target", "mean"),
                average=("average", "mean"), source_std=("source", "std"), target_std=("target", "std"),
                n_seeds=("seed", "nunique"), seeds=("seed", lambda s: " ".join(map(str, sorted(s)))))
           .reset_index())
    return out


# A WiSE-FT sweep's α = 1 is the fine-tuned run it starts from: the same model as that method's point.
WISE_BASE = {"wiseft": "ft", "flow+wiseft": "flow"}


def plot(pts: pd.DataFrame, source_before: float, title: str, path: Path, measure: str = "source_acc_after",
         source: str = "", chance_target: Optional[float] = None, diverged: Sequence[str] = ()) -> Path:
    """Source (x: ``measure``, on the images ``source`` names) vs target (y) accuracy: every setting's mean over
    seeds (error bars: ± 1 std over seeds, said under the legend), each method's Pareto front of the means —
    with the anchors every front shares: the linear probe (``lp`` rows) and the pre-trained model (at
    ``chance_target``) — as a staircase, every point labelled in a column beside the axes
    (``plots.label_points``: no two labels overlap), the pre-trained source value inside the axes, and the
    settings that diverged (``diverged``: 'EWC λ=100, seed 0') listed under the figure. A WiSE-FT α = 1 point
    is the run its sweep starts from: where that run's own method is drawn it is not drawn again (its front
    still reaches it), and the α sweeps use hollow markers, so points that coincide (every α = 0 is the
    pre-trained backbone) stay visible."""
    import textwrap

    from matplotlib.figure import Figure

    from .plots import DPI, FONT, include, label_points, method_style, save_figure
    from ..core.stats import pareto_front

    n = len(pts)
    fig = Figure(figsize=(8.0, max(6.0, 0.14 * n + 2.2)), dpi=DPI)
    ax = fig.add_axes([0.09, 0.24, 0.55, 0.68])  # fixed: the label column and the legend have their room
    xs, ys, labels, colors = [], [], [], []
    present = set(pts["method"])
    lp = pts[pts["method"] == "lp"]
    shared = list(zip(lp["source"], lp["target"])) + ([(source_before, chance_target)] if chance_target is not None else [])
    for method in [m for m in METHODS if m in present]:
        own = pts[pts["method"] == method].reset_index(drop=True)
        look = method_style(method)
        seeds = int(own["n_seeds"].max())
        shown = own[~((own["setting"] == "α=1") & (WISE_BASE.get(method) in present))]
        ax.errorbar(shown["source"], shown["target"], xerr=shown["source_std"].fillna(0) if seeds > 1 else None,
                    yerr=shown["target_std"].fillna(0) if seeds > 1 else None, ls="none", marker=look["marker"], ms=4.5,
                    alpha=0.8, color=look["color"], mfc="none" if method in WISE_BASE else look["color"], capsize=1.5,
                    lw=0.6, label=f"{LABELS[method]}, {seeds} seed{'s' if seeds != 1 else ''}")
        xy = list(zip(own["source"], own["target"])) + shared
        front = sorted(xy[i] for i in pareto_front(xy))
        ax.step([x for x, _ in front], [y for _, y in front], where="pre", color=look["color"], lw=1.4)
        short = LABELS[method].split(" (")[0]
        for _, row in shown.iterrows():
            xs.append(row["source"]), ys.append(row["target"]), colors.append(look["color"])
            labels.append(f"{short} {row['setting']}")
    if len(lp):
        ax.plot(lp["source"], lp["target"], marker="s", ms=5, color="black", ls="none", label="linear probe (anchor)")
    if chance_target is not None:
        ax.plot([source_before], [chance_target], marker="*", ms=7, color="black", ls="none",
                label="pre-trained model: target at chance (anchor)")
    ax.axvline(source_before, color="grey", ls="--", lw=0.8, label=f"pre-trained {MEASURES[measure]}")
    include(ax, "x", source_before)
    on = f" on {source}" if source else ""
    ax.set_xlabel(f"{MEASURES[measure]}{on} after fine-tuning (%)  → forgets less", fontsize=FONT + 1)
    ax.set_ylabel("target accuracy (%)", fontsize=FONT + 1)
    ax.set_title(title, fontsize=FONT + 2)
    ax.tick_params(labelsize=FONT)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=FONT, loc="upper left", bbox_to_anchor=(0.0, -0.1), ncols=2, alignment="left",
              title=textwrap.fill("points: mean over seeds; error bars: ± 1 std over seeds (none for one seed); lines: "
                                  "each method's Pareto front, the two anchors included; a WiSE-FT α = 1 is its "
                                  "fine-tuned run's point", 100),
              title_fontsize=FONT - 1)
    if diverged:
        fig.text(0.09, 0.02, "diverged (no point): " + "; ".join(diverged), fontsize=FONT, color="red", wrap=True)
    label_points(ax, xs, ys, labels, colors)
    return save_figure(fig, Path(path))


def setting(cfg) -> str:
    """A sweep run's point as ``seed_points`` names it ('lr=0.003, 3 ep', 'λ=10', 'τ=p25'), from its config; a
    WiSE-FT run: its α values."""
    if cfg.method in ("wiseft", "flow+wiseft"):
        return "α=" + ",".join(f"{a:g}" for a in cfg.wise_alphas)
    if cfg.method == "ft":
        return f"lr={cfg.lr:g}, {cfg.epochs} ep"
    if cfg.method in LAMBDAS:
        return f"λ={getattr(cfg, LAMBDAS[cfg.method][0]):g}"
    if cfg.method == "lp":
        return "probe"
    return f"τ={cfg.tau}"


def plan(cfgs: list) -> dict:
    """What ``frontier --dry-run`` says of a sweep: {"runs": n, "finished": n, "by_method": {label: [settings, one
    per seed-free point]}, "seeds": [...]}."""
    from ..scale.grid import result_path

    by_method: dict = {}
    for cfg in cfgs:
        points = by_method.setdefault(LABELS[cfg.method], [])
        if setting(cfg) not in points:
            points.append(setting(cfg))
    return {"runs": len(cfgs), "finished": sum(result_path(cfg).exists() for cfg in cfgs), "by_method": by_method,
            "seeds": sorted({cfg.seed for cfg in cfgs})}


def frontier(dataset: str, model: str, overrides: dict, seeds: Sequence[int] = (0,), cfgs: Optional[list] = None,
             **knobs) -> dict:
    """Run the sweep (``cfgs``, else ``sweep``'s for ``knobs``; cached stages: a rerun only re-reads), write
    ``<results>/frontier/<dataset>-<model>/{frontier.png, points.csv, summary.csv, comparisons.csv}`` and return
    {"points", "summary", "comparisons", "png", "folder", "runs", "diverged", "seconds", "source_before", "measure"}.
    A run whose loss stops being finite (``errors.Diverged``) is recorded as diverged and the sweep goes on."""
    import time

    from ..core.errors import Diverged
    from ..core.files import atomic_write_text, owned_folder
    from ..core.identity import model_slug
    from ..core.registry import dataset_slug
    from ..stages.run import run
    from . import fronts

    cfgs = cfgs if cfgs is not None else sweep(dataset, model, overrides, seeds, **knobs)
    folder = Path(cfgs[0].results_dir) / "frontier" / f"{dataset_slug(cfgs[0].dataset)}-{model_slug(cfgs[0])}"
    owned_folder(folder, "the frontier folder", below=Path(cfgs[0].results_dir))  # before the runs: no link there
    t0, records, failed = time.time(), [], []
    for i, cfg in enumerate(cfgs):
        lam = f", λ {getattr(cfg, LAMBDAS[cfg.method][0]):g}" if cfg.method in LAMBDAS else ""
        console.print(f"[bold]frontier run {i + 1} of {len(cfgs)}[/]: {cfg.method}, lr {cfg.lr:g}, "
                      f"{plural(cfg.epochs, 'epoch')}, τ {cfg.tau if cfg.weighting != 'uniform' else '—'}{lam}, "
                      f"seed {cfg.seed}", highlight=False)
        try:
            records.append(run(cfg))
        except Diverged as e:  # recorded in the run's state file; the sweep goes on without the point
            console.print(f"[yellow]diverged:[/] {e}", highlight=False, soft_wrap=True)
            failed.append((cfg, str(e)))
    if not records:
        raise Diverged(f"every run of the sweep diverged (first: {failed[0][1]})")
    seed_pts = seed_points(records, failed)
    pts = points(seed_pts)
    from .labels import source_label

    measure = source_measure(records)
    source = source_label(records[0].get("source_eval_name"), records[0].get("source_eval"))
    before = {r["seed"]: source_before(r, measure) for r in records}
    chance = fronts.chance_levels(records, measure)
    table, compared = fronts.summary(seed_pts, before, chance, LABELS, ("lp",) + METHODS)
    diverged = [f"{LABELS[c.method].split(' (')[0]} {setting(c)}, seed {c.seed}" for c, _ in failed]
    mean_before = sum(before.values()) / len(before)
    seeds_text = ", ".join(map(str, seeds))
    png = plot(pts, mean_before, f"{dataset_slug(cfgs[0].dataset)} / {model}: trade-off frontiers (seed{'s' if len(seeds) > 1 else ''} "
                                 f"{seeds_text})", folder / "frontier.png", measure, source, chance[1], diverged)
    atomic_write_text(folder / "points.csv", pts.round(4).to_csv(index=False))
    atomic_write_text(folder / "summary.csv", table.to_csv(index=False))
    atomic_write_text(folder / "comparisons.csv", compared.to_csv(index=False))
    return {"points": pts, "summary": table, "comparisons": compared, "png": str(png), "folder": str(folder),
            "runs": [r["run_dir"] for r in records], "diverged": diverged, "seconds": time.time() - t0,
            "source_before": mean_before, "measure": f"{MEASURES[measure]} on {source}", "chance": chance}
