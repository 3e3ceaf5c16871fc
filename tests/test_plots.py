"""Figures from run folders: PNGs of the stated pixel size with something drawn on them, and a
clean skip (no file, a logged reason) when the runs a figure needs are absent."""
import logging

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from flowvision.reporting import plots
from flowvision.core.errors import UserError
from flowvision.reporting.runs import load_runs
from test_tables import write_run as write_table_run

PANEL_PX = (800, 640)   # PANEL_INCHES (4.0, 3.2) at 200 dpi
LEGEND_PX = 520         # LEGEND_INCHES beside the panels


def write_run(root, run_id, **overrides):
    values = dict(model="resnet18", weights="resnet18.tv_in1k", target_acc=0.8, source_acc_before=0.70,
                  source_acc_after=0.66, source_drop=0.04, source_eval="imagenet-val:subset(5000)",
                  weight_stats=None, stage_seconds={}, wall_seconds=1.0, git_sha="abc", versions={},
                  created="2025-06-01T00:00:00")
    if overrides.get("method") == "ft":
        values.update(weighting="uniform", tau_rule=None, tau=None)
    return write_table_run(root, run_id, **dict(values, **overrides))


def drawn(path):
    """(width, height) of a PNG, after checking it is not a blank canvas."""
    image = np.asarray(Image.open(path).convert("L"))
    assert path.stat().st_size > 1000 and image.std() > 5, path
    return image.shape[1], image.shape[0]


def full_grid(root):
    """resnet18 on two data sets: ft and FLOW at three τ rules, three seeds, WiSE lists, weights."""
    for dataset in ("cifar10", "cifar100"):
        for seed in range(3):
            write_run(root, f"{dataset}-ft-{seed}", dataset=dataset, method="ft", seed=seed,
                      target_acc=0.9 + 0.01 * seed, source_acc_after=0.40, source_drop=0.30,
                      wise=[{"alpha": a, "target_acc": 0.7 + 0.2 * a, "source_acc_after": 0.7 - 0.3 * a,
                             "source_drop": 0.3 * a} for a in (0.0, 0.25, 0.5, 0.75, 1.0)])
            for rule, tau, drop in (("0.05", 0.05, 0.01), ("median", 0.2, 0.04), ("1.0", 1.0, 0.10)):
                folder = write_run(root, f"{dataset}-flow-{rule}-{seed}", dataset=dataset, seed=seed,
                                   tau_rule=rule, tau=tau, source_drop=drop, source_acc_after=0.7 - drop,
                                   target_acc=0.8 + drop)
                losses = np.linspace(0.0, 4.0, 60)
                pd.DataFrame({"index": range(60), "label": np.arange(60) % 3, "loss": losses,
                              "weight": np.exp(-losses / tau)}).to_csv(folder / "weights.csv", index=False)


@pytest.fixture(scope="module")
def grid_figures(tmp_path_factory):
    """full_grid's runs drawn once by make_all, as `flowvision plot` draws them: (the figures folder, the PNG paths
    make_all returned, the figure it saved as each file name). The tests below only read them."""
    root = tmp_path_factory.mktemp("grid")
    full_grid(root)
    with pytest.MonkeyPatch.context() as mp:
        kept = _drawn_figure(mp, draw=False)  # saving draws each figure (PNG, then PDF)
        paths = plots.make_all(root, root / "fig")
    return root / "fig", paths, kept["by_name"]


def test_make_all_writes_every_figure_at_the_stated_size(grid_figures):
    fig_dir, paths, _ = grid_figures
    names = sorted(p.name for p in paths)
    assert names == ["tau_resnet18_cifar100_flow.png", "tau_resnet18_cifar10_flow.png",
                     "tradeoff_resnet18.png", "weights_resnet18.png", "wise_resnet18.png"]
    two_panels = (2 * PANEL_PX[0] + LEGEND_PX, PANEL_PX[1])
    assert drawn(fig_dir / "tradeoff_resnet18.png") == two_panels
    assert drawn(fig_dir / "weights_resnet18.png") == two_panels
    assert drawn(fig_dir / "wise_resnet18.png") == two_panels
    assert drawn(fig_dir / "tau_resnet18_cifar10_flow.png") == (2 * PANEL_PX[0], PANEL_PX[1])
    for path in paths:  # at least 1200 px wide, a vector PDF beside each PNG
        assert drawn(path)[0] >= plots.MIN_WIDTH_PX
        assert path.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"


def test_grid_wraps_after_three_panels(tmp_path):
    for dataset in ("cifar10", "cifar100", "flowers102", "caltech101"):
        write_run(tmp_path, dataset, dataset=dataset)
    paths = plots.tradeoff(load_runs(tmp_path), tmp_path / "fig")
    assert [p.name for p in paths] == ["tradeoff_resnet18.png"]
    assert drawn(paths[0]) == (3 * PANEL_PX[0] + LEGEND_PX, 2 * PANEL_PX[1])


def _drawn_figure(monkeypatch, draw=True):
    """Keep the last figure save_figure is given, drawn, so a test can read its artists."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    kept = {}
    real = plots.save_figure

    def keep(fig, path):
        if draw:
            FigureCanvasAgg(fig).draw()
        kept.setdefault("figures", []).append(fig)
        kept.setdefault("by_name", {})[path.name] = fig
        return real(fig, path)
    monkeypatch.setattr(plots, "save_figure", keep)
    return kept


def test_trade_off_plots_put_source_on_x_count_seeds_and_give_each_configuration_a_colour(grid_figures):
    ax = grid_figures[2]["tradeoff_resnet18.png"].axes[0]
    assert "acc after" in ax.get_xlabel() and ax.get_ylabel() == "target acc (%)"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "flow [τ=0.05], 3 seeds" in labels and "ft, 3 seeds" in labels
    colors = {tuple(c.lines[0].get_color()) for c in ax.containers}
    assert len(ax.containers) == 4 and len(colors) == 4  # ft and three τ rules: four points, four colours
    lo, hi = ax.get_xlim()
    assert lo <= 70.0 <= hi  # the pre-trained line (source_acc_before 0.70) lies inside the axes


def test_tau_sweep_reference_lines_lie_inside_their_axes(grid_figures):
    drop_ax, acc_ax = grid_figures[2]["tau_resnet18_cifar10_flow.png"].axes[:2]
    for ax, ft_value in ((drop_ax, 30.0), (acc_ax, 91.0)):  # ft: drop 30, target 90/91/92 -> 91
        lo, hi = ax.get_ylim()
        assert lo < ft_value < hi
        assert any(t.get_text() == "ft (3 seeds)" for t in ax.get_legend().get_texts())


def _boxes_overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_frontier_point_labels_never_overlap_even_for_crowded_points(tmp_path, monkeypatch):
    from flowvision.reporting import frontier

    rows = []  # 20 settings whose points nearly coincide, two seeds each
    for k in range(20):
        for seed in (0, 1):
            method = ("ft", "flow", "wiseft", "flow+wiseft")[k % 4]
            rows.append({"method": method, "setting": f"s{k}", "order": k, "seed": seed,
                         "source": 80 + 0.01 * k + seed, "target": 70 + 0.01 * k - seed})
    seed_pts = pd.DataFrame(rows)
    seed_pts["average"] = (seed_pts["source"] + seed_pts["target"]) / 2
    pts = (seed_pts.groupby(["method", "setting"], sort=False)
           .agg(order=("order", "mean"), source=("source", "mean"), target=("target", "mean"),
                average=("average", "mean"), source_std=("source", "std"), target_std=("target", "std"),
                n_seeds=("seed", "nunique")).reset_index())
    kept = _drawn_figure(monkeypatch)
    png = frontier.plot(pts, 95.0, "crowded", tmp_path / "frontier.png")
    assert drawn(png)[0] >= plots.MIN_WIDTH_PX
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    fig = kept["figures"][0]
    canvas = FigureCanvasAgg(fig)  # drawn again at the PNG's dpi (saving the PDF drew it at 72)
    canvas.draw()
    renderer = canvas.get_renderer()

    boxes = [Text.get_window_extent(t, renderer) for t in fig.axes[0].texts]  # the text, not its leader line
    assert len(boxes) == 20
    assert not any(_boxes_overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    page = fig.bbox
    assert all(page.x0 <= b.x0 and b.x1 <= page.x1 and page.y0 <= b.y0 and b.y1 <= page.y1 for b in boxes)
    lo, hi = fig.axes[0].get_xlim()
    assert lo <= 95.0 <= hi
    assert "2 seeds" in " ".join(t.get_text() for t in fig.axes[0].get_legend().get_texts())


def test_one_figure_per_model(tmp_path):
    write_run(tmp_path, "real")
    write_run(tmp_path, "demo", model="demo", dataset="gratings", synthetic=True)
    paths = plots.tradeoff(load_runs(tmp_path), tmp_path / "fig")
    assert sorted(p.name for p in paths) == ["tradeoff_demo.png", "tradeoff_resnet18.png"]


def test_no_runs_is_one_error_said_once(tmp_path):
    with pytest.raises(UserError, match="no runs under .* to plot"):
        plots.make_all(tmp_path, tmp_path / "fig")
    assert not (tmp_path / "fig").exists()
    from typer.testing import CliRunner

    from flowvision.cli import app

    res = CliRunner().invoke(app, ["plot", "--results-dir", str(tmp_path)])
    assert res.exit_code == 2 and res.output.count("no runs under") == 1, res.output


def test_figures_without_their_data_are_skipped(tmp_path, caplog):
    write_run(tmp_path, "only-one-tau")  # no weights.csv, no WiSE list, a single τ rule
    with caplog.at_level(logging.WARNING, logger="flowvision.reporting.plots"):
        paths = plots.make_all(tmp_path, tmp_path / "fig")
    assert [p.name for p in paths] == ["tradeoff_resnet18.png"]
    assert "skipping weight histograms" in caplog.text
    assert "skipping τ sweep" in caplog.text
    assert "skipping WiSE-FT curves" in caplog.text
    assert sorted(f.name for f in (tmp_path / "fig").iterdir()) == ["tradeoff_resnet18.pdf", "tradeoff_resnet18.png"]


def test_wise_points_measured_on_a_subset_are_drawn_hollow(tmp_path):
    """The same curves with and without subset points: only the markers differ, and they do."""
    images = []
    for subset in (False, True):
        root = tmp_path / str(subset)
        write_run(root, "ft", method="ft", wise=[
            {"alpha": a, "target_acc": 0.7 + 0.2 * a, "source_acc_after": 0.7 - 0.3 * a, "source_drop": 0.3 * a,
             "source_images": 10_000 if subset and a in (0.25, 0.75) else 50_000,
             "source_subset": subset and a in (0.25, 0.75)} for a in (0.0, 0.25, 0.5, 0.75, 1.0)])
        (path,) = plots.wise_curves(load_runs(root), root / "fig")
        images.append(np.asarray(Image.open(path).convert("L")))
    assert images[0].shape == images[1].shape and (images[0] != images[1]).sum() > 100


def test_runs_with_many_settings_keep_their_axes_and_say_the_shared_settings_once(tmp_path, monkeypatch):
    """A legend of labels as long as a smoke run's settings left the axes no room: constrained layout warned
    'axes sizes collapsed to zero' and the figure came out cut. The settings every run shares are now the
    legend's title, and a label wraps."""
    import warnings

    from test_tables import _configured

    changes = dict(epochs=1, probe_epochs=1, refit_epochs=1, n_train=48, n_test=32, image_size=16, batch_size=16,
                   demo_epochs=1, demo_n_train=96)
    for method in ("ft", "flow"):
        cfg, cid = _configured("gratings", "demo", method, **changes)
        write_run(tmp_path, f"g-{method}", dataset="gratings", model="demo", method=method, synthetic=True,
                  config=cfg, config_id=cid, source_eval="shapes:val(1000)")
    kept = _drawn_figure(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plots.tradeoff(plots.dedupe_runs(load_runs(tmp_path)), tmp_path / "fig")
    fig = kept["figures"][0]
    ax = fig.axes[0]
    assert ax.get_position().width > 0.5  # the panel keeps most of the figure's width
    legend = ax.get_legend()
    assert {"flow, 1 seed", "ft, 1 seed"} <= {t.get_text() for t in legend.get_texts()}
    title = " ".join(legend.get_title().get_text().split())
    assert title.startswith("every run: ") and all(f"{k}={v}" in title for k, v in changes.items())
