"""Figures from the run folders: PNGs under ``results/figures/`` (matplotlib, Agg, no pyplot state).

    flowvision plot             # make_all("results", "results/figures")

Four views, each a pure function of the runs frame from ``runs.load_runs``:
  tradeoff_<model>.png                 target acc (x) vs source acc after fine-tuning (y), per method,
                                       mean ± std over seeds, one panel per data set
  weights_<model>.png                  histogram of the FLOW weights in each run's weights.csv
  tau_<model>_<dataset>_<method>.png   τ sweep: τ (log x) vs source drop (left) and target acc (right)
  wise_<model>.png                     WiSE-FT: target vs source acc along α, α=0 and α=1 marked
A figure without data is skipped with a logged warning that says which runs it needs.
Figures have a fixed pixel size (no tight bounding box): a panel is PANEL_INCHES × DPI.
"""
from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Optional

import pandas as pd
from matplotlib.figure import Figure

from flowvision.registry import PAPER_METHODS
from flowvision.runs import dedupe_runs, load_runs, summarise

log = logging.getLogger(__name__)

DPI = 160
PANEL_INCHES = (3.0, 2.4)   # one panel: 480 × 384 px
MAX_COLS = 3
MARKERS = "osD^vPX*<>ph"


def method_style(method: str) -> dict:
    """The same colour and marker for a method in every figure."""
    order = list(PAPER_METHODS)
    i = order.index(method) if method in order else len(order) + sum(map(ord, method)) % 5
    return {"color": f"C{i % 10}", "marker": MARKERS[i % len(MARKERS)]}


def _grid(n_panels: int):
    """A figure of n panels, at most MAX_COLS per row; returns (figure, list of axes)."""
    cols = min(MAX_COLS, n_panels)
    rows = math.ceil(n_panels / cols)
    fig = Figure(figsize=(PANEL_INCHES[0] * cols, PANEL_INCHES[1] * rows), dpi=DPI, layout="constrained")
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(n_panels)]
    for ax in axes:
        ax.tick_params(labelsize=6)
    return fig, axes


def _label_axes(ax, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=8)
    ax.set_xlabel(xlabel, fontsize=7)
    ax.set_ylabel(ylabel, fontsize=7)


def save_figure(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name))


def _label(method: str, rule: str, several: bool) -> str:
    return f"{method} τ={rule or 'none'}" if several else method


def _source_name(runs: pd.DataFrame, model: str, dataset: str) -> str:
    """How the runs of one panel name their source evaluation (the record's source_eval_name,
    e.g. 'IN-1K val' or 'shapes val'); 'source' when the records do not say."""
    here = runs[(runs["model"] == model) & (runs["dataset"] == dataset)]
    names = sorted(set(here["source_eval_name"].dropna().astype(str))) if "source_eval_name" in here else []
    return " / ".join(names) or "source"


def _nan0(value) -> float:
    return 0.0 if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _ready(runs: pd.DataFrame) -> pd.DataFrame:
    return dedupe_runs(runs) if len(runs) else runs


# ---------------------------------------------------------------------------------- trade-off
def tradeoff(runs: pd.DataFrame, out_dir: Path) -> list:
    """Per model: one panel per data set, target acc (x) vs source acc after fine-tuning (y),
    one marker per method (and τ rule), error bars = std over seeds, dashed line = pre-trained."""
    summ = summarise(runs).dropna(subset=["target_acc_mean", "source_acc_after_mean"])
    if summ.empty:
        log.warning("skipping trade-off figure: no run has both target_acc and source_acc_after")
        return []
    paths = []
    for model, per_model in summ.groupby("model", sort=True):
        datasets = sorted(set(per_model["dataset"]))
        fig, axes = _grid(len(datasets))
        for ax, dataset in zip(axes, datasets):
            panel = per_model[per_model["dataset"] == dataset]
            several = panel.groupby("method")["tau_rule"].transform("nunique") > 1
            variant = panel.groupby("method").cumcount()  # τ rules of one method: same colour, own marker
            for (_, row), tag, k in zip(panel.iterrows(), several, variant):
                look = method_style(row["method"])
                marker = MARKERS[(MARKERS.index(look["marker"]) + k) % len(MARKERS)]
                ax.errorbar(row["target_acc_mean"], row["source_acc_after_mean"],
                            xerr=_nan0(row["target_acc_std"]), yerr=_nan0(row["source_acc_after_std"]),
                            linestyle="none", markersize=5, capsize=2, color=look["color"], marker=marker,
                            label=_label(row["method"], row["tau_rule"], tag))
            before = panel["source_acc_before_mean"].dropna()
            if len(before):
                ax.axhline(before.mean(), color="grey", linestyle="--", linewidth=0.8, label="pre-trained")
            _label_axes(ax, dataset, "target acc (%)", f"{_source_name(runs, model, dataset)} acc after (%)")
            ax.legend(fontsize=5, loc="center left", bbox_to_anchor=(1.0, 0.5))  # outside: points stay visible
        paths.append(save_figure(fig, Path(out_dir) / f"tradeoff_{_safe(model)}.png"))
    return paths


# ------------------------------------------------------------------------------- FLOW weights
def _read_weights(run_dir: str) -> Optional[pd.Series]:
    path = Path(run_dir) / "weights.csv"
    if not path.is_file():
        return None
    try:
        weights = pd.read_csv(path)["weight"].astype(float)
    except (OSError, ValueError, KeyError) as err:
        log.warning("skipping unreadable weights file %s (%s)", path, err)
        return None
    return weights


def weight_histograms(runs: pd.DataFrame, out_dir: Path) -> list:
    """Per model: one panel per data set, a step histogram of the per-sample weights of each
    method × τ rule (the lowest seed's weights.csv: seeds differ only through the probe)."""
    runs = _ready(runs)
    found = []
    if len(runs):
        for (model, dataset, method, rule), group in runs.sort_values("seed").groupby(
                ["model", "dataset", "method", "tau_rule"], sort=True):
            for row in group.itertuples():
                weights = _read_weights(row.run_dir) if isinstance(row.run_dir, str) else None
                if weights is not None and len(weights):
                    found.append((model, dataset, method, rule, row.tau, weights))
                    break
    if not found:
        log.warning("skipping weight histograms: no run folder has a weights.csv (FLOW runs write one)")
        return []
    paths = []
    for model in sorted({f[0] for f in found}):
        mine = [f for f in found if f[0] == model]
        datasets = sorted({f[1] for f in mine})
        fig, axes = _grid(len(datasets))
        for ax, dataset in zip(axes, datasets):
            for _, _, method, rule, tau, weights in (f for f in mine if f[1] == dataset):
                tau_text = "" if tau is None or pd.isna(tau) else f" ({float(tau):.3g})"
                ax.hist(weights, bins=30, histtype="step", color=method_style(method)["color"],
                        label=f"{method} τ={rule or 'none'}{tau_text}")
            _label_axes(ax, dataset, "weight", "training samples")
            ax.legend(fontsize=5)
        paths.append(save_figure(fig, Path(out_dir) / f"weights_{_safe(model)}.png"))
    return paths


# ----------------------------------------------------------------------------------- τ sweep
def tau_sweeps(runs: pd.DataFrame, out_dir: Path) -> list:
    """One figure per model × dataset × method run at two or more τ rules: the resolved τ (mean
    over seeds) on a log x axis, source drop (left axis) and target acc (right axis), mean ± std
    over seeds; standard fine-tuning (τ → ∞) as dashed lines when its runs exist."""
    runs = _ready(runs)
    paths = []
    if len(runs):
        with_tau = runs[pd.to_numeric(runs["tau"], errors="coerce") > 0]
        for (model, dataset, method), group in with_tau.groupby(["model", "dataset", "method"], sort=True):
            if group["tau_rule"].nunique() < 2:
                continue
            points = summarise(group).set_index("tau_rule")
            points["tau"] = group.groupby("tau_rule")["tau"].apply(lambda t: float(pd.to_numeric(t).mean()))
            points = points.sort_values("tau")
            fig = Figure(figsize=PANEL_INCHES, dpi=DPI, layout="constrained")
            ax = fig.add_subplot()
            right = ax.twinx()
            ax.errorbar(points["tau"], points["source_drop_mean"], yerr=points["source_drop_std"].fillna(0),
                        color="C3", marker="o", markersize=4, capsize=2, label="source drop")
            right.errorbar(points["tau"], points["target_acc_mean"], yerr=points["target_acc_std"].fillna(0),
                           color="C0", marker="s", markersize=4, capsize=2, label="target acc")
            for rule, row in points.iterrows():
                ax.annotate(rule, (row["tau"], row["source_drop_mean"]), fontsize=5,
                            textcoords="offset points", xytext=(2, 3))
            ft = summarise(runs[(runs["model"] == model) & (runs["dataset"] == dataset) & (runs["method"] == "ft")])
            if len(ft):
                ax.axhline(ft["source_drop_mean"].iloc[0], color="C3", linestyle="--", linewidth=0.8)
                right.axhline(ft["target_acc_mean"].iloc[0], color="C0", linestyle="--", linewidth=0.8)
            ax.set_xscale("log")
            ax.set_xlabel("τ", fontsize=7)
            ax.set_ylabel(f"{_source_name(runs, model, dataset)} drop (%)", color="C3", fontsize=7)
            right.set_ylabel("target acc (%)", color="C0", fontsize=7)
            ax.set_title(f"{model} {dataset} {method} (dashed: ft)", fontsize=7)
            for axis in (ax, right):
                axis.tick_params(labelsize=6)
            paths.append(save_figure(fig, Path(out_dir) / f"tau_{_safe(model)}_{_safe(dataset)}_{_safe(method)}.png"))
    if not paths:
        log.warning("skipping τ sweep: no model/dataset/method was run at two or more τ values")
    return paths


# -------------------------------------------------------------------------------------- WiSE-FT
def _wise_points(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs' result["wise"] lists, long: model, dataset, method, tau_rule, seed, alpha, accs (%)."""
    rows = []
    for run in runs.itertuples():
        if not isinstance(run.wise, list):
            continue
        for point in run.wise:
            rows.append({"model": run.model, "dataset": run.dataset, "method": run.method,
                         "tau_rule": run.tau_rule, "seed": run.seed, "alpha": float(point["alpha"]),
                         "target_acc": 100.0 * float(point["target_acc"]),
                         "source_acc_after": 100.0 * float(point["source_acc_after"])})
    return pd.DataFrame(rows)


def wise_curves(runs: pd.DataFrame, out_dir: Path) -> list:
    """Per model: one panel per data set, the WiSE-FT path θ(α) as target acc (x) vs source acc (y),
    mean over seeds per α, one line per method; α=0 (square) and α=1 (triangle) marked."""
    points = _wise_points(_ready(runs)) if len(runs) else pd.DataFrame()
    if points.empty:
        log.warning("skipping WiSE-FT curves: no run has a non-empty result['wise'] list")
        return []
    paths = []
    for model, per_model in points.groupby("model", sort=True):
        datasets = sorted(set(per_model["dataset"]))
        fig, axes = _grid(len(datasets))
        for ax, dataset in zip(axes, datasets):
            panel = per_model[per_model["dataset"] == dataset]
            several = panel.groupby("method")["tau_rule"].nunique()
            for (method, rule), line in panel.groupby(["method", "tau_rule"], sort=True):
                mean = line.groupby("alpha")[["target_acc", "source_acc_after"]].mean().sort_index()
                look = method_style(method)
                ax.plot(mean["target_acc"], mean["source_acc_after"], color=look["color"], marker=".",
                        markersize=4, label=_label(method, rule, several[method] > 1))
                for alpha, marker in ((0.0, "s"), (1.0, "^")):
                    if alpha in mean.index:
                        x, y = mean.loc[alpha]
                        ax.plot([x], [y], marker=marker, color=look["color"], markeredgecolor="black",
                                markersize=6, linestyle="none")
                        ax.annotate(f"α={alpha:g}", (x, y), fontsize=5, textcoords="offset points",
                                    xytext=(3, 3))
            _label_axes(ax, dataset, "target acc (%)", f"{_source_name(runs, model, dataset)} acc (%)")
            ax.legend(fontsize=5)
        paths.append(save_figure(fig, Path(out_dir) / f"wise_{_safe(model)}.png"))
    return paths


def make_all(results_dir: Path, out_dir: Optional[Path] = None) -> list:
    """Every figure for the runs under ``results_dir/runs``; PNGs under ``out_dir`` (default
    ``results_dir/figures``). Returns the written paths (empty when there is nothing to plot)."""
    out_dir = Path(results_dir) / "figures" if out_dir is None else Path(out_dir)
    runs = load_runs(Path(results_dir))
    if runs.empty:
        log.warning("no figures: no runs under %s (run `flowvision demo` or `flowvision finetune`)",
                    Path(results_dir) / "runs")
        return []
    runs = dedupe_runs(runs)  # once, so a duplicate seed is reported once, not per figure
    # protocols are never pooled: a paper-protocol run is its own method in every figure
    runs["method"] = runs["method"].where(runs["protocol"] == "clean", runs["method"] + " [paper protocol]")
    paths = []
    for plot in (tradeoff, weight_histograms, tau_sweeps, wise_curves):
        paths += plot(runs, out_dir)
    return paths
