"""Figures from the run folders: PNG and PDF under ``results/figures/`` (matplotlib, Agg, no pyplot state).

    flowvision plot             # make_all("results", "results/figures")

Four views, each a pure function of the runs frame from ``runs.load_runs``:
  tradeoff_<model>                  source acc after fine-tuning (x) vs target acc (y), one point per
                                    configuration (method × τ rule × settings), mean ± std over seeds, one
                                    panel per data set
  weights_<model>                   histogram of the FLOW weights in each configuration's weights.csv
  tau_<model>_<dataset>_<method>    τ sweep: source drop and target acc against τ (log x), standard FT as
                                    the reference line in each panel
  wise_<model>                      WiSE-FT: source vs target acc along α, α = 0 and α = 1 marked

Every trade-off plot here and in ``frontier`` puts source accuracy on x (→ forgets less) and target
accuracy on y. Every legend entry says over how many seeds its point is a mean; every colour is one
configuration; the axes always include the reference lines drawn on them; point labels never overlap
(``label_points``). A figure is at least ``MIN_WIDTH_PX`` wide, and a PDF is written beside each PNG.
A figure without data is skipped with a logged warning that says which runs it needs.
"""
from __future__ import annotations

import logging
import math
import re
import textwrap
from pathlib import Path
from typing import Optional, Sequence

import pandas as pd
from matplotlib.figure import Figure

from flowvision.core.console import plural
from flowvision.core.errors import UserError
from flowvision.core.registry import METHODS, PAPER_METHODS
from flowvision.reporting.labels import shareable
from flowvision.reporting.runs import dedupe_runs, load_runs, summarise, variant_label

log = logging.getLogger(__name__)

DPI = 200
PANEL_INCHES = (4.0, 3.2)   # one panel: 800 × 640 px
LEGEND_INCHES = 2.6         # beside the panels, so no legend covers a point
LEGEND_CHARS = 48           # a legend line at FONT - 2 that fits LEGEND_INCHES
MIN_WIDTH_PX = 1200
MAX_COLS = 3
MARKERS = "osD^vPX*<>ph"
FONT = 7


# A method's colour in every figure. The frontier's seven (ft, l2sp, wiseft, flow, flow+wiseft, lwf, ewc) are drawn
# together, so no two of them are near twins (tab10's blue and cyan, or its green and olive, read as one colour).
METHOD_COLORS = {"ft": "C0", "l2sp": "C1", "wiseft": "C2", "lp": "C3", "flow": "C4", "flow+wiseft": "C5",
                 "lpft": "C6", "flow+l2sp": "C7", "lwf": "black", "ewc": "#e6ab02", "flow+lwf": "C8",
                 "flow+ewc": "C9"}


def method_style(method: str) -> dict:
    """The same marker and colour for a method in every figure (``METHOD_COLORS``): the paper's methods first,
    then the registry's others, then any other name."""
    base = method.split(" [")[0]
    order = [*PAPER_METHODS, *(m for m in METHODS if m not in PAPER_METHODS)]
    i = order.index(base) if base in order else len(order) + sum(map(ord, base)) % 5
    return {"color": METHOD_COLORS.get(base, f"C{i % 10}"), "marker": MARKERS[i % len(MARKERS)]}


# Ten colours no two of which are near twins (tab10 without its cyan and olive, which read as its blue and
# green, then black and gold): a figure's configurations take them in turn; beyond them, the hues of a circle,
# each next one across it from the last.
DISTINCT = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#000000",
            "#e6ab02")


def palette(n: int) -> list:
    """n colours, no two near twins for n ≤ 10 (``DISTINCT``); more are evenly spaced hues, taken in an order
    that puts each next to ones far from it on the colour circle."""
    from matplotlib import colormaps

    if n <= len(DISTINCT):
        return list(DISTINCT[:n])
    return [colormaps["hsv"]((i * 7 % n) / n) if math.gcd(7, n) == 1 else colormaps["hsv"](i / n) for i in range(n)]


def _grid(n_panels: int, legend: bool = True):
    """A figure of n panels, at most MAX_COLS per row, at least MIN_WIDTH_PX wide; (figure, axes)."""
    cols = min(MAX_COLS, n_panels)
    rows = math.ceil(n_panels / cols)
    width = max(MIN_WIDTH_PX / DPI, PANEL_INCHES[0] * cols + (LEGEND_INCHES if legend else 0))
    fig = Figure(figsize=(width, PANEL_INCHES[1] * rows), dpi=DPI, layout="constrained")
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(n_panels)]
    for ax in axes:
        ax.tick_params(labelsize=FONT - 1)
        ax.grid(alpha=0.3)
    return fig, axes


def _label_axes(ax, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=FONT + 1)
    ax.set_xlabel(xlabel, fontsize=FONT)
    ax.set_ylabel(ylabel, fontsize=FONT)


def save_figure(fig: Figure, path: Path) -> Path:
    """``path`` (PNG, at DPI) and the same figure as a vector PDF beside it; -> the PNG's path."""
    from ..core.files import atomic_write_stream

    atomic_write_stream(path, lambda f: fig.savefig(f, format="png", dpi=DPI))
    atomic_write_stream(path.with_suffix(".pdf"), lambda f: fig.savefig(f, format="pdf"))
    return path


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name))


def shared_settings(settings: Sequence[str]) -> tuple[str, list[str]]:
    """The settings (runs.py's 'epochs=1, n_train=300', one per legend entry) that every entry shares, to be
    said once, and each entry's own rest."""
    items = [s.split(", ") if s else [] for s in settings]
    common = set.intersection(*map(set, items)) if items else set()
    return ", ".join(i for i in items[0] if i in common) if items else "", [
        ", ".join(i for i in mine if i not in common) for mine in items]


def legend_beside(ax, shared: str = "", handles: Optional[list] = None) -> None:
    """The panel's legend at its right, where it covers no point, no wider than LEGEND_INCHES: long labels
    wrap, and the settings every run of the panel shares are its title (a legend as wide as a run's many
    settings left the axes no room: constrained layout gave up and the figure came out cut)."""
    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    else:
        labels = [h.get_label() for h in handles]
    title = textwrap.fill(f"every run: {shared}", LEGEND_CHARS) if shared else None
    ax.legend(handles, [textwrap.fill(label, LEGEND_CHARS) for label in labels], title=title, alignment="left",
              fontsize=FONT - 2, title_fontsize=FONT - 2, loc="center left", bbox_to_anchor=(1.0, 0.5))


def _source_name(runs: pd.DataFrame, model: str, dataset: str) -> str:
    """How the runs of one panel name their source evaluation (``labels.source_label``, applied in
    ``make_all``: 'IN-1K val', '20 photos of 20 IN-1K classes', 'shapes val'); 'source' when the records do not
    say."""
    here = runs[(runs["model"] == model) & (runs["dataset"] == dataset)]
    names = sorted(set(here["source_eval_name"].dropna().astype(str))) if "source_eval_name" in here else []
    return " / ".join(names) or "source"


def _nan0(value) -> float:
    return 0.0 if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def include(ax, axis: str, *values) -> None:
    """Widen ``axis`` ('x' or 'y') so that it shows ``values`` (reference lines) with a margin."""
    lo, hi = ax.get_xlim() if axis == "x" else ax.get_ylim()
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return
    pad = 0.04 * (max(hi, *values) - min(lo, *values) or 1.0)  # a line never sits on the frame
    (ax.set_xlim if axis == "x" else ax.set_ylim)(min(lo, min(values) - pad), max(hi, max(values) + pad))


def label_points(ax, xs: Sequence[float], ys: Sequence[float], labels: Sequence[str], colors: Sequence,
                 fontsize: float = FONT - 1) -> list:
    """Label points without any two labels overlapping: the labels stand in a column right of the axes, in
    the points' vertical order, at least one line apart, each joined to its point by a thin leader line.
    (Iterative label placers such as adjustText reduce overlaps but do not rule them out; a column does.)
    Call after the axes' limits are final. -> the annotation artists."""
    if not len(labels):
        return []
    y0, y1 = ax.get_ylim()
    fig = ax.figure
    height_in = fig.get_figheight() * ax.get_position().height
    step = 1.45 * fontsize / 72 / max(height_in, 0.1)  # one line, in axes fraction
    order = sorted(range(len(labels)), key=lambda i: (ys[i] - y0) / (y1 - y0 or 1.0))
    want = [(ys[i] - y0) / (y1 - y0 or 1.0) for i in order]
    pos = []
    for w in want:  # upwards from the lowest, one line apart
        pos.append(max(w, pos[-1] + step) if pos else w)
    top = max(1.0, step * (len(pos) - 1))  # then back down under the top, keeping the spacing
    for k in range(len(pos) - 1, -1, -1):
        pos[k] = min(pos[k], top if k == len(pos) - 1 else pos[k + 1] - step)
    out = []
    for k, i in enumerate(order):
        out.append(ax.annotate(labels[i], (xs[i], ys[i]), xytext=(1.03, pos[k]), textcoords="axes fraction",
                               fontsize=fontsize, color=colors[i], va="center", ha="left", annotation_clip=False,
                               arrowprops=dict(arrowstyle="-", color=colors[i], lw=0.4, alpha=0.6,
                                               shrinkA=0, shrinkB=2)))
    return out


# ---------------------------------------------------------------------------------- trade-off
def tradeoff(runs: pd.DataFrame, out_dir: Path) -> list:
    """Per model: one panel per data set, source acc after fine-tuning (x) vs target acc (y), one point
    per configuration with error bars = std over seeds, the pre-trained source accuracy as a dashed line."""
    summ = summarise(runs).dropna(subset=["target_acc_mean", "source_acc_after_mean"])
    if summ.empty:
        log.warning("skipping trade-off figure: no run has both target_acc and source_acc_after")
        return []
    paths = []
    for model, per_model in summ.groupby("model", sort=True):
        datasets = sorted(set(per_model["dataset"]))
        fig, axes = _grid(len(datasets))
        for ax, dataset in zip(axes, datasets):
            panel = per_model[per_model["dataset"] == dataset].reset_index(drop=True)
            several = panel.groupby("method")["tau_rule"].transform("nunique") > 1
            colors = palette(len(panel))
            shared, own = shared_settings(list(panel["settings"].fillna("")))
            for (i, row), tag, settings in zip(panel.iterrows(), several, own):
                one = row["n_seeds"] < 2  # no std: no error bar (caps of zero width sat inside the marker)
                ax.errorbar(row["source_acc_after_mean"], row["target_acc_mean"],
                            xerr=None if one else _nan0(row["source_acc_after_std"]),
                            yerr=None if one else _nan0(row["target_acc_std"]),
                            linestyle="none", markersize=5.5, capsize=2, color=colors[i], mfc="none", mew=1.2,
                            marker=method_style(row["method"])["marker"],  # hollow: a point on another stays seen
                            label=variant_label(row["method"], row["tau_rule"], tag, settings, row["n_seeds"]))
            before = panel["source_acc_before_mean"].dropna()
            if len(before):
                ax.axvline(before.mean(), color="grey", linestyle="--", linewidth=0.8, label="pre-trained (source acc)")
                include(ax, "x", before.mean())
            name = _source_name(runs, model, dataset)
            _label_axes(ax, dataset, f"{name} acc after (%)  → forgets less", "target acc (%)")
            legend_beside(ax, shared)
        fig.suptitle(f"{model}: one point per configuration, the mean over its seeds; error bars ± 1 std over seeds "
                     "(none for one seed)", fontsize=FONT)
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
    configuration (the lowest seed's weights.csv: seeds differ only through the probe)."""
    runs = _ready(runs)
    found = []
    if len(runs):
        keys = ["model", "dataset", "method", "tau_rule", "settings"]
        for (model, dataset, method, rule, settings), group in runs.sort_values("seed").groupby(keys, sort=True):
            for row in group.itertuples():
                weights = _read_weights(row.run_dir) if isinstance(row.run_dir, str) else None
                if weights is not None and len(weights):
                    found.append((model, dataset, method, rule, settings, row.tau, row.seed, weights))
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
            here = [f for f in mine if f[1] == dataset]
            shared, own = shared_settings([f[4] for f in here])
            for color, (_, _, method, rule, _, tau, seed, weights), settings in zip(palette(len(here)), here, own):
                tau_text = "" if tau is None or pd.isna(tau) else f" ({float(tau):.3g})"
                label = variant_label(method, rule, True, settings) + f"{tau_text}, seed {int(seed)}"
                ax.hist(weights, bins=30, histtype="step", color=color, label=label)
            _label_axes(ax, dataset, "weight", "training samples")
            legend_beside(ax, shared)
        paths.append(save_figure(fig, Path(out_dir) / f"weights_{_safe(model)}.png"))
    return paths


# ----------------------------------------------------------------------------------- τ sweep
def tau_sweeps(runs: pd.DataFrame, out_dir: Path) -> list:
    """One figure per model × dataset × method (× settings) run at two or more τ rules: source drop (left
    panel) and target acc (right panel) against the resolved τ (mean over seeds, log x), mean ± std over
    seeds; standard FT at the same settings (τ → ∞) as a dashed line in each panel, inside its axes."""
    runs = _ready(runs)
    paths = []
    if len(runs):
        with_tau = runs[pd.to_numeric(runs["tau"], errors="coerce") > 0]
        for (model, dataset, method, settings), group in with_tau.groupby(
                ["model", "dataset", "method", "settings"], sort=True):
            if group["tau_rule"].nunique() < 2:
                continue
            points = summarise(group).set_index("tau_rule")
            points["tau"] = group.groupby("tau_rule")["tau"].apply(lambda t: float(pd.to_numeric(t).mean()))
            points = points.sort_values("tau")
            ft = summarise(runs[(runs["model"] == model) & (runs["dataset"] == dataset) & (runs["method"] == "ft")
                                & (runs["settings"] == settings)])
            fig, (drop_ax, acc_ax) = _grid(2, legend=False)
            n = int(points["n_seeds"].min())
            label = variant_label(method, "", False, "", n)
            for ax, metric, name in ((drop_ax, "source_drop", f"{_source_name(runs, model, dataset)} drop (points)"),
                                     (acc_ax, "target_acc", "target acc (%)")):
                ax.errorbar(points["tau"], points[f"{metric}_mean"], yerr=points[f"{metric}_std"].fillna(0),
                            color=method_style(method)["color"], marker="o", markersize=4, capsize=2, label=label)
                if len(ft):
                    value = float(ft[f"{metric}_mean"].iloc[0])
                    ax.axhline(value, color="black", linestyle="--", linewidth=0.9,
                               label=f"ft ({plural(int(ft['n_seeds'].iloc[0]), 'seed')})")
                    include(ax, "y", value)
                ax.set_xscale("log")
                _label_axes(ax, "", "τ (log scale)", name)  # the y label names the panel: no title repeats it
                ax.legend(fontsize=FONT - 1)
            rules = ", ".join(f"{rule} = {tau:.3g}" for rule, tau in points["tau"].items())
            fig.suptitle(f"{model} / {dataset} / {method}{f' {{{settings}}}' if settings else ''}: τ sweep "
                         f"(τ rules: {rules}); mean over seeds, error bars ± 1 std over seeds", fontsize=FONT + 1)
            paths.append(save_figure(fig, Path(out_dir) / f"tau_{_safe(model)}_{_safe(dataset)}_{_safe(method)}"
                                          f"{'_' + _safe(settings) if settings else ''}.png"))
    if not paths:
        log.warning("skipping τ sweep: no model/dataset/method was run at two or more τ values")
    return paths


# -------------------------------------------------------------------------------------- WiSE-FT
def _wise_points(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs' result["wise"] lists, long: model, dataset, method, tau_rule, settings, seed, alpha, accs (%)."""
    rows = []
    for run in runs.itertuples():
        if not isinstance(run.wise, list):
            continue
        for point in run.wise:
            rows.append({"model": run.model, "dataset": run.dataset, "method": run.method,
                         "tau_rule": run.tau_rule, "settings": run.settings, "seed": run.seed,
                         "alpha": float(point["alpha"]), "target_acc": 100.0 * float(point["target_acc"]),
                         "source_acc_after": 100.0 * float(point["source_acc_after"]),
                         "subset": bool(point.get("source_subset"))})
    return pd.DataFrame(rows)


def wise_curves(runs: pd.DataFrame, out_dir: Path) -> list:
    """Per model: one panel per data set, the WiSE-FT path θ(α) as source acc (x) vs target acc (y),
    mean over seeds per α, one line per configuration; α = 0 (square) and α = 1 (triangle) marked and
    named in the legend; a point whose source accuracy was measured on a subset of the source images
    (``wise_subset``) is a hollow circle."""
    from matplotlib.lines import Line2D

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
            lines = list(panel.groupby(["method", "tau_rule", "settings"], sort=True))
            shared, own = shared_settings([settings for (_, _, settings), _ in lines])
            for color, ((method, rule, _), line), settings in zip(palette(len(lines)), lines, own):
                mean = line.groupby("alpha")[["source_acc_after", "target_acc"]].mean().sort_index()
                ax.plot(mean["source_acc_after"], mean["target_acc"], color=color, marker=".", markersize=4,
                        label=variant_label(method, rule, several[method] > 1, settings, line["seed"].nunique()))
                for alpha, marker in ((0.0, "s"), (1.0, "^")):
                    if alpha in mean.index:
                        x, y = mean.loc[alpha]
                        ax.plot([x], [y], marker=marker, color=color, markeredgecolor="black", markersize=6,
                                linestyle="none")
                hollow = mean[line.groupby("alpha")["subset"].any().reindex(mean.index).to_numpy()]
                ax.plot(hollow["source_acc_after"], hollow["target_acc"], marker="o", markersize=6, linestyle="none",
                        markerfacecolor="white", markeredgecolor=color)
            handles, _ = ax.get_legend_handles_labels()
            if panel["subset"].any():
                handles += [Line2D([], [], marker="o", color="grey", markerfacecolor="white", linestyle="none",
                                   label="source acc on a subset of the images")]
            handles += [Line2D([], [], marker="s", color="grey", markeredgecolor="black", linestyle="none",
                               label="α = 0 (pre-trained shared weights)"),
                        Line2D([], [], marker="^", color="grey", markeredgecolor="black", linestyle="none",
                               label="α = 1 (fine-tuned)")]
            _label_axes(ax, dataset, f"{_source_name(runs, model, dataset)} acc (%)  → forgets less", "target acc (%)")
            legend_beside(ax, shared, handles)
        fig.suptitle(f"{model}: WiSE-FT's path over α, each point the mean over seeds", fontsize=FONT)
        paths.append(save_figure(fig, Path(out_dir) / f"wise_{_safe(model)}.png"))
    return paths


def _ready(runs: pd.DataFrame) -> pd.DataFrame:
    return dedupe_runs(runs, warn=False) if len(runs) else runs


def make_all(results_dir: Path, out_dir: Optional[Path] = None) -> list:
    """Every figure for the runs under ``results_dir/runs``; PNGs (and PDFs beside them) under ``out_dir``
    (default ``results_dir/figures``). Returns the written PNG paths; no run at all is a UserError."""
    from ..core.files import owned_folder

    out_dir = Path(results_dir) / "figures" if out_dir is None else Path(out_dir)
    runs = load_runs(Path(results_dir))
    if runs.empty:  # said once, by the caller's error handler
        raise UserError(f"no runs under {Path(results_dir) / 'runs'} to plot; run `flowvision demo` or "
                        "`flowvision finetune` first")
    owned_folder(out_dir, "the figures folder (--out-dir)")  # a file there, or a link: one line, nothing drawn
    def ready(frame):  # once, so a repeated run is reported once, not per figure
        frame = shareable(dedupe_runs(frame))
        # protocols are never pooled: a paper-protocol run is its own method in every figure
        frame["method"] = frame["method"].where(frame["protocol"] == "clean", frame["method"] + " [paper protocol]")
        return frame

    own = ready(runs)
    # a frontier's τ points are FLOW at the method's settings but τ (which is no setting): they make a τ sweep
    # of their own, with the frontier's FT run as its reference
    swept = ready(runs.assign(sweep=None)) if "sweep" in runs and runs["sweep"].notna().any() else own
    paths = []
    for plot, frame in ((tradeoff, own), (weight_histograms, own), (tau_sweeps, swept), (wise_curves, own)):
        paths += plot(frame, out_dir)
    return paths
