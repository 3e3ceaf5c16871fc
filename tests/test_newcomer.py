"""The path a newcomer takes, with the frictions it had: the cost of a grid stated once per protocol, for the
device the runs will use; every missing input named at once, by the run and its dry run alike; the recipe a
model without configs gets, said; a frontier that says how many runs and how long before it starts; labels that
say which source images were measured and no private path in what one shares."""
import re
from pathlib import Path

from typer.testing import CliRunner

from flowvision.cli import app
from flowvision.core import config
from test_tables import write_run

runner = CliRunner()
WIDE = {"COLUMNS": "400"}


def _flat(text: str) -> str:
    return " ".join(text.split())


# ---- costs, stated once ------------------------------------------------------------------------------------------
def test_two_models_grid_prints_one_total_per_protocol_with_the_paper_protocols_own_number(tmp_path):
    """reproduce --model resnet18,resnet50: the clean protocol in bf16 and in fp32, and the paper protocol priced
    as its own grid (test passes after every epoch, online weights: more than the clean grid in fp32)."""
    from flowvision.core.registry import PAPER_METHODS, resolve_dataset_group
    from flowvision.scale.grid import grid
    from flowvision.stages.costs import estimate, rates

    res = runner.invoke(app, ["reproduce", "--model", "resnet18,resnet50", "--seeds", "1", "--dry-run",
                              "--data-root", str(tmp_path / "data"), "--results-dir", str(tmp_path / "r")], env=WIDE)
    assert res.exit_code == 2, res.output  # nothing is here: the grid would stop, as its dry run says
    text = _flat(res.output)
    assert "72 runs, 0 finished, 72 to do" in text  # 2 models × 6 data sets × 6 methods × 1 seed
    totals = {}
    for protocol in ("clean", "paper"):
        cells = [cfg for model in ("resnet18", "resnet50") for cfg, _ in grid(
            model, resolve_dataset_group("paper"), list(PAPER_METHODS), [0], {"protocol": protocol})]
        totals[protocol] = estimate(cells, rates(None))
    clean, paper = totals["clean"], totals["paper"]
    assert (f"clean protocol (this command): {clean['hours']:.1f} h in bf16, {clean['fp32_hours']:.1f} h in fp32 "
            "(--set amp=false)") in text
    assert f"paper protocol: {paper['fp32_hours']:.1f} h (fp32, a test pass after every epoch, online weights)" in text
    assert paper["fp32_hours"] > 1.2 * clean["fp32_hours"]  # its own number, not the clean grid's fp32
    assert text.count("GPU-hours on one A6000") == 1  # the totals in one place
    assert "or the paper protocol" not in text


def test_a_cpu_run_is_priced_in_cpu_hours_at_the_measured_rates_and_small_runs_never_read_zero(tmp_path):
    from flowvision.stages.costs import CPU_RATES, cpu_estimate, duration, report

    cfg = config.resolve("cifar10", "resnet18", "ft", {"device": "cpu"})
    cost = cpu_estimate([cfg])
    rate = CPU_RATES[("resnet18", 224)]
    assert cost["by_kind"]["train"]["hours"] * 3600 == cfg.epochs * 50_000 / rate["train"]
    assert 20 < cost["by_kind"]["train"]["hours"] < 30  # 20 epochs of CIFAR-10 at ~12 images/s: about a day
    lines = report({"clean": [cfg]})
    cpu = next(x for x in lines if "CPU" in x and "about" in x)
    assert "(--device cpu)" in cpu and f"about {duration(cost['hours'])} on 2 cores" in cpu
    assert [duration(h) for h in (0.0, 0.005, 0.2, 1.6, 250.0)] == ["< 1 min", "< 1 min", "12 min", "1.6 h", "250 h"]
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    for name in ("a.jpg", "b.PNG", "sub/c.jpeg", "notes.txt"):
        (photos / name).write_bytes(b"")
    own = config.resolve("cifar10", "resnet18", "ft", {"source_eval_dir": str(photos)})
    from flowvision.stages.costs import stage_images

    assert stage_images("source_eval", own)["inference"] == 3  # its photos, not IN-1K val's 50,000
    tiny = config.resolve("gratings", "demo", "ft", {"n_train": 48, "n_test": 32, "device": "cpu"})
    assert not any(re.search(r"\b0\.0 (h|GPU)", x) for x in report({"clean": [tiny]})), report({"clean": [tiny]})


# ---- every missing input at once, the same exit code --------------------------------------------------------------
def test_a_run_and_its_dry_run_both_stop_on_every_missing_input_with_exit_code_2(tmp_path, monkeypatch):
    monkeypatch.delenv("FLOWVISION_IMAGENET", raising=False)
    args = ["finetune", "--dataset", "cifar10", "--data-root", str(tmp_path / "data"),
            "--results-dir", str(tmp_path / "r"), "--device", "cpu"]
    dry = runner.invoke(app, [*args, "--dry-run"], env=WIDE)
    run = runner.invoke(app, args, env=WIDE)
    assert dry.exit_code == run.exit_code == 2, (dry.output, run.output)
    assert dry.output.count("NOT FOUND") == 3 and "error:" not in dry.output
    errors = [x for x in run.output.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: 3 inputs are missing or unusable, so nothing ran: (1)")
    for needle in ("cifar10 not found under", "no weights for resnet18.tv_in1k", "forgetting is measured on ImageNet"):
        assert needle in errors[0], errors[0]
    assert not (tmp_path / "r" / "runs").exists() or not list((tmp_path / "r" / "runs").iterdir())


# ---- defaults you can see ---------------------------------------------------------------------------------------
def test_a_timm_model_without_configs_gets_its_familys_recipe_and_the_dry_run_says_which_and_why(tmp_path):
    from flowvision.core.registry import recipe_family

    assert [recipe_family(m) for m in ("tf_efficientnet_lite0", "resnet34.a1_in1k", "vit_small_patch16_224.augreg_in21k",
                                       "convnext_tiny", "test_vit", "test_resnet", "mobilenetv3_large_100")] == \
        ["convnet", "convnet", "transformer", "transformer", "transformer", "convnet", "convnet"]
    trace = {}
    cfg = config.resolve(f"folder:{tmp_path}", "tf_efficientnet_lite0", "ft", trace=trace)
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.probe_epochs) == (30, 128, 0.005, 30)  # not 3 smoke epochs
    assert trace["epochs"].endswith("configs/families/convnet.yaml") and "convnet.yaml" in cfg.hparams_note
    vit = config.resolve("cifar10", "vit_small_patch16_224", "flow")
    assert (vit.lr, vit.weight_decay) == (0.003, 0.0) and "transformer.yaml" in vit.hparams_note
    assert config.resolve("cifar10", "resnet18", "ft").epochs == 20  # a model with its own configs keeps them
    res = runner.invoke(app, ["finetune", "--dataset", "cifar10", "--model", "tf_efficientnet_lite0", "--dry-run",
                              "--results-dir", str(tmp_path / "r")], env=WIDE)
    text = _flat(res.output)
    assert ("no configs/tf_efficientnet_lite0/ folder: tf_efficientnet_lite0 is taken for a BatchNorm convnet" in text
            and "configs/families/convnet.yaml" in text and "not tuned for this model or data set" in text), text


def test_frontier_dry_run_counts_the_runs_prices_them_and_methods_chooses(tmp_path):
    base = ["frontier", "--dataset", "gratings", "--model", "demo", "--dry-run", "--results-dir", str(tmp_path)]
    every = runner.invoke(app, base, env=WIDE)
    assert every.exit_code == 0, every.output
    assert "frontier — gratings / demo: 28 runs (seed 0), 0 finished" in every.output  # 25, the probe anchor, λ = 0 of LwF and EWC
    minutes = re.search(r"estimate for what is left \(28 runs\) on this machine's CPU \(--device auto finds no NVIDIA "
                        r"GPU on this machine\): about (\d+) min on 2 cores", every.output)
    assert minutes and int(minutes.group(1)) <= 15, every.output  # the default demo frontier: within 15 minutes
    two = runner.invoke(app, [*base, "--methods", "ft,flow"], env=WIDE)
    assert "12 runs" in two.output and "FT (lr × epochs)" in two.output and "LwF" not in two.output, two.output
    bad = runner.invoke(app, [*base, "--methods", "ft,flw"], env=WIDE)
    assert bad.exit_code == 2 and "'flw' is not swept here (did you mean flow?)" in _flat(bad.output), bad.output
    assert not (tmp_path / "runs").exists()


# ---- labels and private paths ---------------------------------------------------------------------------------------
def test_source_labels_say_which_images_were_measured():
    from flowvision.reporting.labels import dataset_label, source_label

    assert source_label("IN-1K val", "imagenet-val(50000), official transform") == "IN-1K val"
    assert source_label("IN-1K val", "imagenet-val:subset(5000), official transform") == "IN-1K val subset (5,000 images)"
    assert source_label("IN-1K val", "imagenet-partial(20 images, 20 classes), timm transform") == \
        "20 photos of 20 IN-1K classes"
    assert source_label("source images", "images(12, unlabelled), timm transform") == "12 unlabelled photos"
    assert source_label("shapes val", "shapes(1000)") == "shapes val" and source_label(None, None) == "source"
    assert dataset_label("folder:/home/someone/my birds", "9f2c41d07a1be3c5") == "folder:my_birds (9f2c41d0)"
    assert dataset_label("cifar10", "abc") == "cifar10"


def test_tables_and_figures_name_a_folder_by_base_name_and_fingerprint_and_the_photos_they_measured(tmp_path):
    from flowvision.reporting import plots
    from flowvision.reporting.tables import make_tables

    private = "/home/someone-private/projects/birds"
    for seed in (0, 1):
        for method in ("ft", "flow"):
            write_run(tmp_path, f"birds-{method}-{seed}", dataset=f"folder:{private}", model="tf_efficientnet_lite0",
                      weights="tf_efficientnet_lite0.in1k", method=method, seed=seed,
                      target_data={"path": private, "fingerprint": "9f2c41d07a1be3c5"},
                      source_eval_name="IN-1K val", source_eval="imagenet-partial(20 images, 20 classes), timm transform")
    tables, paths, _ = make_tables(tmp_path)
    written = "".join(Path(p).read_text() for p in paths if Path(p).suffix in (".md", ".csv", ".tex"))
    assert private not in written and "folder:birds (9f2c41d0)" in written
    assert "20 photos of 20 IN-1K classes" in written
    figures = plots.make_all(tmp_path, tmp_path / "fig")
    assert figures and not any("someone" in p.name or "private" in p.name for p in figures)


def test_plot_draws_the_tau_sweep_a_frontier_ran(tmp_path):
    from flowvision.reporting import plots

    for seed in (0, 1):
        write_run(tmp_path, f"ft-{seed}", dataset="gratings", model="demo", synthetic=True, method="ft", seed=seed)
        for rule, tau in (("p10", 0.05), ("median", 0.2), ("p90", 1.0)):
            write_run(tmp_path, f"flow-{rule}-{seed}", dataset="gratings", model="demo", synthetic=True, seed=seed,
                      tau_rule=rule, tau=tau, sweep=None if rule == "median" else "frontier")
    names = [p.name for p in plots.make_all(tmp_path, tmp_path / "fig")]
    assert "tau_demo_gratings_flow.png" in names, names
    from flowvision.reporting.runs import dedupe_runs, load_runs

    assert set(dedupe_runs(load_runs(tmp_path))["tau_rule"]) == {"", "median"}  # the tables still leave them out


# ---- polish --------------------------------------------------------------------------------------------------------
def test_table_says_how_many_fill_commands_it_leaves_out(tmp_path):
    (tmp_path / "runs").mkdir()
    res = runner.invoke(app, ["table", "--results-dir", str(tmp_path)], env=WIDE)
    assert "216 paper cells have no run of ours; the first 10 of the 216 commands that fill them (--show-commands " \
           "216 lists all" in _flat(res.output), res.output
    listed = [x for x in res.output.splitlines() if x.startswith("  flowvision finetune")]
    assert len(listed) == 10


def test_a_wrapped_fix_keeps_its_indent():
    from rich.console import Console

    from flowvision.core.console import commands_apart

    console = Console(width=40, record=True, file=open("/dev/null", "w"))
    for item in commands_apart("missing; fix: a long sentence that cannot fit on one line of forty columns, then "
                               "`flowvision data download cifar10 --data-root /d`", indent="    "):
        console.print(item) if not isinstance(item, str) else console.print(item, soft_wrap=True)
    lines = [x for x in console.export_text().splitlines() if x.strip()]
    assert len(lines) >= 3 and all(x.startswith("    ") for x in lines), lines


def test_data_status_lists_a_folders_classes(tmp_path):
    from PIL import Image

    for name in ("robin", "wren"):
        (tmp_path / "birds" / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (i, 0, 0)).save(tmp_path / "birds" / name / f"{i}.png")
    res = runner.invoke(app, ["data", "status", "--data-root", str(tmp_path / "d"), "--dataset",
                              f"folder:{tmp_path / 'birds'}"], env=WIDE)
    rows = {r[0]: r[1:] for r in ([c.strip() for c in x.strip("│").split("│")] for x in res.output.splitlines()
                                  if x.startswith("│"))}
    assert rows[f"folder:{tmp_path / 'birds'}"][:4] == ["yes", "2", "4", "2"], res.output
    assert rows["cifar10"][:2] == ["no", "-"]
