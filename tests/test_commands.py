"""table, plot, weights, reproduce and bench through the CLI on tiny synthetic runs."""
import json
import re

import pytest
import math
from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

from flowvision.cli import app

runner = CliRunner()


def _sets(tiny):
    return [a for k, v in tiny.items() if k != "results_dir" for a in ("--set", f"{k}={v}")]


@pytest.mark.filterwarnings("error:constrained_layout not applied")  # a figure whose legend squashed its axes
def test_reproduce_skips_finished_runs_then_table_and_plot(tiny):
    res_dir = tiny["results_dir"]

    def grid(seeds):
        return ["reproduce", "--model", "demo", "--datasets", "gratings", "--methods", "ft,flow,wiseft", "--seeds",
                str(seeds), *_sets(tiny), "--set", f"results_dir={res_dir}"]
    dry = runner.invoke(app, [*grid(2), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "6 runs, 0 finished, 6 to do" in dry.output
    assert "flowvision finetune --dataset gratings --model demo --method wiseft --seed 1" in dry.output
    first = runner.invoke(app, grid(1))  # seed 0 runs: the grid of two seeds then has half of its runs finished
    assert first.exit_code == 0, first.output
    assert "3 runs: 3 ran, 0 already finished" in first.output
    again = runner.invoke(app, grid(1))
    assert "3 runs: 0 ran, 3 already finished" in again.output
    dry = runner.invoke(app, [*grid(2), "--dry-run"])
    assert dry.exit_code == 0 and "6 runs, 3 finished, 3 to do" in dry.output, dry.output
    assert "--method wiseft --seed 1" in dry.output and "--method wiseft --seed 0" not in dry.output

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
    assert f"contact sheet: {folder / 'samples.png'}" in res.output.splitlines()  # the path whole, on one line
    cells = [c.strip() for row in res.output.splitlines() if row.startswith("│") for c in row.split("│")[3:-1]]
    assert cells and all(re.fullmatch(r"\d+|\d+\.\d{4}", c) for c in cells), cells  # n, then 4 decimals each
    per_class = (folder / "per_class.csv").read_text().splitlines()
    assert len(per_class) == 1 + 8 and "mean_weight" in per_class[0]


def test_plot_without_runs_is_a_clear_error(tmp_path):
    res = runner.invoke(app, ["plot", "--results-dir", str(tmp_path)])
    assert res.exit_code == 2 and "no runs under" in res.output


def test_bench_prints_ratios():
    # timm's tiny test_resnet: the ratios' table is the same for any model, and the default resnet18 costs seconds
    res = runner.invoke(app, ["bench", "--model", "test_resnet", "--image-size", "16", "--batch-size", "4", "--steps", "1",
                              "--repeats", "1", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "static weights" in res.output and "online weights (official)" in res.output
    rows = {cells[0]: cells[1:] for cells in (
        [c.strip() for c in line.strip().strip("│").split("│")]
        for line in res.output.splitlines() if line.lstrip().startswith("│"))}
    assert set(rows) == {"flow step, online weights (official)", "flow step, static weights, torch's default SGD",
                         "flow step, static weights", "flow step, static + channels_last",
                         "Adam step (demo model), torch's default", "Adam step (demo model), flowvision's"}, res.output
    for variant, (images_per_s, ratio) in rows.items():
        for value in (float(images_per_s), float(ratio)):
            assert math.isfinite(value) and value > 0, (variant, res.output)
    assert rows["flow step, online weights (official)"][1] == "1.00"  # the baselines against themselves
    assert rows["Adam step (demo model), torch's default"][1] == "1.00"


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


def test_the_grid_estimate_counts_each_shared_stage_once_by_kind_at_the_stated_rates():
    """By hand for one data set: ft and wiseft share a fine-tuning; lp's probe is ft's Table-5 probe;
    lp's forgetting reuses the source evaluation; WiSE-FT's α = 0.25 and 0.75 are measured on
    wise_subset source images, the reported α = 0.5 on all of them."""
    from flowvision.core import config
    from flowvision.stages.costs import assumed_rates, estimate, rates

    sets = {"imagenet_subset": 20_000, "wise_subset": 5000}
    cfgs = [config.resolve("cifar10", "resnet18", m, sets) for m in ("ft", "wiseft", "lp")]
    got = estimate(cfgs, rates(None))
    c = cfgs[0]
    n_train, n_test, src = 50_000, 10_000, 20_000
    images = {"train": c.epochs * n_train,          # one fine-tuning for ft and wiseft
              "frozen": c.probe_epochs * n_train,   # one probe: lp's, and ft's Table-5 difficulty
              "inference": n_test                   # probe_test, shared
              + 2 * n_test + src                    # target evals of ft (= wiseft's final) and lp; the source eval
              + src                                 # ft's forgetting (wiseft's is the same key; lp's is reused)
              + 2 * (n_test + 5000) + (n_test + src) + n_test}  # wise: 0.25, 0.75 on the subset; 0.5 whole; α = 0
    assert {k: v["images"] for k, v in got["by_kind"].items()} == images
    bf16 = assumed_rates()["resnet18"]["bf16"]  # the clean protocol computes in bf16 on a GPU
    assert got["hours"] * 3600 == pytest.approx(sum(n / bf16[k] for k, n in images.items()))
    assert got["fp32_hours"] == pytest.approx(2 * got["hours"]) and got["measured"] is None
    paper = estimate([config.resolve("cifar10", "resnet18", "ft", dict(sets, protocol="paper"))], rates(None))
    assert list(paper["used"]) == [("resnet18", "fp32")]  # the official code's precision
    assert paper["by_kind"]["inference"]["images"] > 4 * n_test + 2 * src  # a test pass after every epoch


def test_both_paper_grids_fit_one_night_on_one_a6000_at_the_assumed_bf16_rates():
    """What `reproduce --dry-run` prints for each paper grid (6 data sets × 6 methods × 3 seeds): hours per
    kind and where its rates come from; at the assumed A6000 rates (fp32 × 2 for bf16, NVIDIA's reference)
    ResNet-18 and ResNet-50 together take ≤ 17 GPU-hours (33 in fp32 before the WiSE-FT subset)."""
    import re

    from flowvision.stages.costs import describe, estimate, rates
    from flowvision.scale.grid import grid
    from flowvision.core.registry import PAPER_METHODS, resolve_dataset_group

    total = fp32 = 0.0
    for model in ("resnet18", "resnet50"):
        cells = grid(model, resolve_dataset_group("paper"), list(PAPER_METHODS), [0, 1, 2], {})
        cost = estimate([cfg for cfg, _ in cells], rates(None))
        text = " ".join(" ".join(describe(cost)).split())
        hours = re.search(r"estimate for what is left: ([\d.]+) GPU-hours on one A6000 — training [\d.]+ h .*"
                          r"frozen backbone [\d.]+ h .* inference [\d.]+ h", text)
        assert hours and float(hours.group(1)) == round(cost["hours"], 1), text
        total, fp32 = total + cost["hours"], fp32 + cost["fp32_hours"]
        assert f"{model} bf16: training" in text and "assumed bf16 rates: the fp32 assumption × 2" in text
        assert '"over 2x faster"' in text and "assumed fp32 rates: round numbers for one A6000" in text
    assert total <= 17.0 and fp32 == pytest.approx(2 * total)


def test_measured_rates_replace_the_assumed_ones_and_name_their_gpu(tmp_path):
    from flowvision.core import config
    from flowvision.stages.costs import describe, estimate, rates

    results = tmp_path / "results"
    results.mkdir()
    measured = {k: 3000.0 for k in ("train", "frozen", "inference")}
    (results / "gpu-check.json").write_text(json.dumps({"device": "NVIDIA H200", "measured_at": "2026-12-01",
                                                        "rates": {"resnet18": {"bf16": measured, "fp32": measured}}}))
    cfg = config.resolve("cifar10", "resnet18", "ft")
    cost = estimate([cfg], rates(results))
    assert cost["measured"]["device"] == "NVIDIA H200" and cost["used"] == {("resnet18", "bf16"): measured}
    images = sum(v["images"] for v in cost["by_kind"].values())
    assert cost["hours"] == pytest.approx(images / 3000 / 3600)
    text = "\n".join(describe(cost))
    assert "on one NVIDIA H200" in text and "rates measured on NVIDIA H200 by `make gpu-check`" in text
    assert "assumed" not in text


def test_the_estimate_counts_lwf_teacher_passes_and_one_fisher_pass_shared_by_every_ewc_lambda():
    from flowvision.core import config
    from flowvision.stages.costs import estimate

    sub = {"imagenet_subset": 1000}

    def images(cfgs):
        return {k: v["images"] for k, v in estimate(cfgs)["by_kind"].items()}

    ft = images([config.resolve("cifar10", "resnet18", "ft", sub)])
    lpft = images([config.resolve("cifar10", "resnet18", "lpft", sub)])
    lwf = images([config.resolve("cifar10", "resnet18", "lwf", sub)])
    c = config.resolve("cifar10", "resnet18", "lwf", sub)
    assert lwf["train"] == 2 * lpft["train"] and lwf["frozen"] == lpft["frozen"]  # the student's two passes
    assert lwf["inference"] - lpft["inference"] == c.epochs * 50_000  # the teacher's pass on every batch
    own = images([config.resolve("cifar10", "resnet18", "lwf", dict(sub, lwf_parts="training"))])
    assert own["train"] == lpft["train"]  # through the training network's own parts: one pass
    ewcs = [config.resolve("cifar10", "resnet18", "ewc", dict(sub, ewc_lambda=lam, ewc_samples=2000, ewc_draws=2))
            for lam in (0.01, 1.0)]
    got = images(ewcs)
    assert got["train"] - 2 * ft["train"] == 2000 * 2  # one Fisher pass: 2000 images × 2 draws, shared by both λ
    assert got["inference"] - ft["inference"] == 2000 + 10_000 + 1000  # its label draws; the second λ's evaluations


def _files(*folders) -> dict:
    """Every file under ``folders`` -> (size, mtime): what a command that only reads must leave as it is."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for folder in folders for p in Path(folder).rglob("*")
            if p.is_file()}


def test_export_of_a_demo_run_reads_its_files_trains_nothing_and_writes_only_under_out(tiny, tmp_path):
    """The run's config.yaml says amp "auto"; the demo model's key holds the precision that ran. Export
    reads that precision from the record, so it finds the run's own demo model and trains none."""
    res = runner.invoke(app, ["finetune", "--dataset", "gratings", "--method", "ft", *_sets(tiny),
                              "--results-dir", tiny["results_dir"]])
    assert res.exit_code == 0, res.output
    (run_dir,) = Path(tiny["results_dir"], "runs").iterdir()
    before = _files(tmp_path, tiny["cache_dir"])
    out = tmp_path / "exported"
    res = runner.invoke(app, ["export", str(run_dir), "--out", str(out)])
    assert res.exit_code == 0, res.output
    after = _files(tmp_path, tiny["cache_dir"])
    assert {p: v for p, v in after.items() if not p.startswith(f"{out}/")} == before
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors",
                                                      "source_parts.safetensors"]
    json_record = json.loads((run_dir / "result.json").read_text())
    for demo_file in Path(tiny["cache_dir"], "demo").glob("*.pt"):  # the run's demo model gone: one line, no training
        demo_file.rename(demo_file.with_suffix(".kept"))
    try:
        res = runner.invoke(app, ["export", str(run_dir), "--out", str(tmp_path / "again")])
    finally:
        for kept in Path(tiny["cache_dir"], "demo").glob("*.kept"):
            kept.rename(kept.with_suffix(".pt"))
    assert res.exit_code == 2 and f"the demo model {json_record['weights']} is gone" in " ".join(res.output.split())
    assert not (tmp_path / "again" / "model.safetensors").exists()
