"""Figures from run folders: PNGs of the stated pixel size with something drawn on them, and a
clean skip (no file, a logged reason) when the runs a figure needs are absent."""
import json
import logging

import numpy as np
import pandas as pd
from PIL import Image

from flowvision import plots
from flowvision.runs import load_runs
from test_tables import write_run as write_table_run

PANEL_PX = (480, 384)  # PANEL_INCHES (3.0, 2.4) at 160 dpi


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


def test_make_all_writes_every_figure_at_the_stated_size(tmp_path):
    full_grid(tmp_path)
    paths = plots.make_all(tmp_path, tmp_path / "fig")
    names = sorted(p.name for p in paths)
    assert names == ["tau_resnet18_cifar100_flow.png", "tau_resnet18_cifar10_flow.png",
                     "tradeoff_resnet18.png", "weights_resnet18.png", "wise_resnet18.png"]
    two_panels = (2 * PANEL_PX[0], PANEL_PX[1])
    assert drawn(tmp_path / "fig" / "tradeoff_resnet18.png") == two_panels
    assert drawn(tmp_path / "fig" / "weights_resnet18.png") == two_panels
    assert drawn(tmp_path / "fig" / "wise_resnet18.png") == two_panels
    assert drawn(tmp_path / "fig" / "tau_resnet18_cifar10_flow.png") == PANEL_PX


def test_grid_wraps_after_three_panels(tmp_path):
    for dataset in ("cifar10", "cifar100", "flowers102", "caltech101"):
        write_run(tmp_path, dataset, dataset=dataset)
    paths = plots.tradeoff(load_runs(tmp_path), tmp_path / "fig")
    assert [p.name for p in paths] == ["tradeoff_resnet18.png"]
    assert drawn(paths[0]) == (3 * PANEL_PX[0], 2 * PANEL_PX[1])


def test_one_figure_per_model(tmp_path):
    write_run(tmp_path, "real")
    write_run(tmp_path, "demo", model="demo", dataset="gratings", synthetic=True)
    paths = plots.tradeoff(load_runs(tmp_path), tmp_path / "fig")
    assert sorted(p.name for p in paths) == ["tradeoff_demo.png", "tradeoff_resnet18.png"]


def test_no_runs_skips_cleanly(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="flowvision.plots"):
        assert plots.make_all(tmp_path, tmp_path / "fig") == []
    assert "no runs" in caplog.text
    assert not (tmp_path / "fig").exists()


def test_figures_without_their_data_are_skipped(tmp_path, caplog):
    write_run(tmp_path, "only-one-tau")  # no weights.csv, no WiSE list, a single τ rule
    with caplog.at_level(logging.WARNING, logger="flowvision.plots"):
        paths = plots.make_all(tmp_path, tmp_path / "fig")
    assert [p.name for p in paths] == ["tradeoff_resnet18.png"]
    assert "skipping weight histograms" in caplog.text
    assert "skipping τ sweep" in caplog.text
    assert "skipping WiSE-FT curves" in caplog.text
    assert sorted(f.name for f in (tmp_path / "fig").iterdir()) == ["tradeoff_resnet18.png"]
