"""table, plot, weights, reproduce and bench through the CLI on tiny synthetic runs."""
import json

import pytest
import math
from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

from flowvision.cli import app

runner = CliRunner()


def _sets(tiny):
    return [a for k, v in tiny.items() if k != "results_dir" for a in ("--set", f"{k}={v}")]


def test_reproduce_skips_finished_runs_then_table_and_plot(tiny):
    res_dir = tiny["results_dir"]
    grid = ["reproduce", "--model", "demo", "--datasets", "gratings", "--methods", "ft,flow,wiseft", "--seeds", "2",
            *_sets(tiny), "--set", f"results_dir={res_dir}"]
    dry = runner.invoke(app, [*grid, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "6 runs, 0 finished, 6 to do" in dry.output
    assert "flowvision finetune --dataset gratings --model demo --method wiseft --seed 1" in dry.output
    first = runner.invoke(app, grid)
    assert first.exit_code == 0, first.output
    assert "6 runs: 6 ran, 0 already finished" in first.output
    again = runner.invoke(app, grid)
    assert "6 runs: 0 ran, 6 already finished" in again.output

    table = runner.invoke(app, ["table", "--results-dir", res_dir])
    assert table.exit_code == 0, table.output
    demo_md = [p for p in Path(res_dir, "tables").glob("*.md") if "demo" in p.name]
    assert demo_md and "wiseft" in demo_md[0].read_text()
    assert "flowvision finetune --dataset cifar10 --model resnet18" in table.output  # missing paper cells

    plot = runner.invoke(app, ["plot", "--results-dir", res_dir])
    assert plot.exit_code == 0, plot.output
    pngs = list(Path(res_dir, "figures").glob("*.png"))
    assert any("tradeoff" in p.name for p in pngs) and any("wise" in p.name for p in pngs)
    assert all(Image.open(p).size[0] > 100 for p in pngs)


def test_weights_audit_writes_contact_sheet_and_per_class_means(tiny):
    res = runner.invoke(app, ["weights", "--dataset", "gratings", "--k", "4", *_sets(tiny),
                              "--results-dir", tiny["results_dir"]])
    assert res.exit_code == 0, res.output
    (folder,) = Path(tiny["results_dir"], "audit").iterdir()
    assert Image.open(folder / "samples.png").size[0] > 100
    per_class = (folder / "per_class.csv").read_text().splitlines()
    assert len(per_class) == 1 + 8 and "mean_weight" in per_class[0]


def test_plot_without_runs_is_a_clear_error(tmp_path):
    res = runner.invoke(app, ["plot", "--results-dir", str(tmp_path)])
    assert res.exit_code == 2 and "no runs under" in res.output


def test_bench_prints_ratios():
    res = runner.invoke(app, ["bench", "--image-size", "16", "--batch-size", "4", "--steps", "1", "--repeats", "1",
                              "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "static weights" in res.output and "online weights (official)" in res.output
    rows = {cells[0]: cells[1:] for cells in (
        [c.strip() for c in line.strip().strip("│").split("│")]
        for line in res.output.splitlines() if line.lstrip().startswith("│"))}
    assert set(rows) == {"flow step, online weights (official)", "flow step, static weights",
                         "flow step, static + channels_last"}, res.output
    for variant, (images_per_s, ratio) in rows.items():
        for value in (float(images_per_s), float(ratio)):
            assert math.isfinite(value) and value > 0, (variant, res.output)
    assert rows["flow step, online weights (official)"][1] == "1.00"  # the baseline against itself


def test_new_command_errors_are_one_line_and_exit_2(tmp_path):
    cases = [
        (["bench", "--model", "no_such_net"], "--model no_such_net is not a timm architecture"),
        (["table", "--results-dir", str(tmp_path / "none")], "does not exist"),
        (["reproduce", "--model", "demo", "--datasets", "gratings", "--set", "seed=5", "--dry-run"], "use --seeds"),
    ]
    for args, message in cases:
        res = runner.invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        assert message in " ".join(res.output.split()) and "Traceback" not in res.output


def test_the_grid_estimate_counts_each_shared_stage_once_at_the_stated_rates():
    """By hand for one data set: ft and wiseft share a fine-tuning; flow and flow+wiseft share probe,
    losses, fine-tuning and refit; lp's forgetting reuses the source evaluation."""
    from flowvision import config
    from flowvision.costs import A6000, estimate

    cfgs = [config.resolve("cifar10", "resnet18", m, {"imagenet_subset": 1000}) for m in ("ft", "wiseft", "lp")]
    got = estimate(cfgs)
    c = cfgs[0]
    n_train, n_test, src = 50_000, 10_000, 1000
    train = c.epochs * n_train  # one fine-tuning for ft and wiseft
    evals = (c.probe_epochs * n_train  # lp's probe
             + n_test * 2 + src        # target evals of ft (wiseft's final is ft's) and lp; the one source eval
             + src                     # ft's forgetting (wiseft's is the same key; lp's is reused)
             + 3 * (n_test + src) + n_test)  # wise: α = 0.25, 0.5, 0.75 fresh; α = 0 target only
    rate = A6000["resnet18"]
    assert got["train_images"] == train and got["eval_images"] == evals and got["assumed"]
    assert got["hours"] * 3600 == pytest.approx(train / rate["train"] + evals / rate["eval"])


def test_the_estimate_counts_lwf_teacher_passes_and_one_fisher_pass_shared_by_every_ewc_lambda():
    from flowvision import config
    from flowvision.costs import estimate

    sub = {"imagenet_subset": 1000}
    ft = estimate([config.resolve("cifar10", "resnet18", "ft", sub)])
    lpft = estimate([config.resolve("cifar10", "resnet18", "lpft", sub)])
    lwf = estimate([config.resolve("cifar10", "resnet18", "lwf", sub)])
    c = config.resolve("cifar10", "resnet18", "lwf", sub)
    assert lwf["train_images"] == lpft["train_images"]
    assert lwf["eval_images"] - lpft["eval_images"] == c.epochs * 50_000  # the teacher's pass on every batch
    ewcs = [config.resolve("cifar10", "resnet18", "ewc", dict(sub, ewc_lambda=lam, ewc_samples=2000, ewc_draws=2))
            for lam in (0.01, 1.0)]
    got = estimate(ewcs)
    assert got["train_images"] - 2 * ft["train_images"] == 2000 * 2  # one Fisher pass: 2000 images × 2 draws
    assert got["eval_images"] - ft["eval_images"] == 2000 + 10_000 + 1000  # its label draws; the second λ's evaluations
