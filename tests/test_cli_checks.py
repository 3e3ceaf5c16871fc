"""The CLI where a newcomer first meets it: notes, defaults and pointers that are easy to get wrong."""
import json
import os
import socket
from pathlib import Path

from typer.testing import CliRunner

from flowvision.cli import app

runner = CliRunner()
WIDE = {"COLUMNS": "400"}


def _sets(values: dict) -> list:
    return [a for k, v in values.items() for a in ("--set", f"{k}={v}")]


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_dry_run_names_a_tau_far_from_the_official_one_and_its_cost(tmp_path):
    args = ["finetune", "--dataset", "cifar10", "--dry-run", "--results-dir", str(tmp_path / "results")]
    far = runner.invoke(app, [*args, "--tau", "1.0"], env=WIDE)
    assert far.exit_code == 2, far.output  # CIFAR-10, the weights and ImageNet are not here: the run would stop
    assert "τ = 1 is 9.6× the official τ for cifar10 (0.1041" in _flat(far.output)
    assert "GPU-hours on one A6000" in far.output  # the cost of the one run, as reproduce --dry-run gives it
    for close in ("0.2", "median"):
        res = runner.invoke(app, [*args, "--tau", close], env=WIDE)
        assert res.exit_code == 2 and "the official τ" not in res.output, res.output


def test_the_demo_model_gets_no_gpu_rate_and_its_cpu_time_in_minutes(tmp_path):
    small = {"image_size": 16, "n_train": 48, "n_test": 32, "demo_n_test": 32}
    args = ["finetune", "--dataset", "gratings", "--dry-run", "--results-dir", str(tmp_path), *_sets(small)]
    gpu = runner.invoke(app, [*args, "--device", "cuda"], env=WIDE)
    assert gpu.exit_code == 0, gpu.output
    assert "GPU-hours do not apply to the demo model (1 run)" in _flat(gpu.output)
    assert "A6000" not in gpu.output and "images/s" not in gpu.output
    cpu = runner.invoke(app, [*args, "--device", "cpu"], env=WIDE)
    assert cpu.exit_code == 0, cpu.output
    line = next(x for x in cpu.output.splitlines() if x.startswith("estimate for what is left (1 run)"))
    assert "on this machine's CPU (--device cpu): about < 1 min on 2 cores" in line, cpu.output
    assert "0.0 " not in line and "A6000" not in cpu.output


def test_a_run_says_when_its_tau_is_far_from_the_official_one(tiny):
    sets = _sets(dict(tiny, paper_tau=0.05, finetune=False, refit=False))
    res = runner.invoke(app, ["finetune", "--method", "flow", "--tau", "1.0", *sets], env=WIDE)
    assert res.exit_code == 0, res.output
    assert "τ = 1 is 20× the official τ for gratings (0.05" in _flat(res.output)


def test_reproduce_takes_finetunes_default_model_and_options(tmp_path):
    res = runner.invoke(app, ["reproduce", "--datasets", "gratings", "--methods", "flow", "--seeds", "1", "--dry-run",
                              "--tau", "p25", "--protocol", "paper", "--imagenet-subset", "100", "--cache-dir",
                              str(tmp_path / "c"), "--results-dir", str(tmp_path / "r")], env=WIDE)
    assert res.exit_code == 0, res.output
    cmd = next(line.strip() for line in res.output.splitlines() if line.strip().startswith("flowvision finetune"))
    assert "--model demo" in cmd and "--set tau=p25" in cmd and "--set protocol=paper" in cmd
    assert "--set imagenet_subset=100" in cmd and f"--set cache_dir={tmp_path / 'c'}" in cmd
    helps = [_flat(runner.invoke(app, [c, "--help"], env=WIDE).output) for c in ("finetune", "reproduce")]
    assert all("a percentile like p25" in h and "class-balanced subset of N images" in h for h in helps)


def test_a_failed_reproduce_points_to_status_and_exits_2(tmp_path, monkeypatch):
    monkeypatch.delenv("FLOWVISION_IMAGENET", raising=False)
    res = runner.invoke(app, ["reproduce", "--datasets", "cifar10", "--methods", "lp", "--seeds", "1",
                              "--data-root", str(tmp_path / "data"), "--imagenet", str(tmp_path / "no-imagenet"),
                              "--results-dir", str(tmp_path / "r"), "--device", "cpu"], env=WIDE)
    assert res.exit_code == 2, res.output
    assert "1 failed" in res.output and f"`flowvision status --results-dir {tmp_path / 'r'}`" in _flat(res.output)
    assert "`flowvision table`" not in res.output


def _run_folder(results: Path, name: str, status: str) -> Path:
    folder = results / "runs" / name
    folder.mkdir(parents=True)
    (folder / "state.json").write_text(json.dumps({"run_id": name, "status": status, "host": socket.gethostname(),
                                                   "pid": os.getpid(), "updated": 1.0}))
    return folder


def test_status_with_nothing_running_says_so_and_where_to_look(tmp_path):
    (tmp_path / "runs").mkdir()
    empty = runner.invoke(app, ["status", "--results-dir", str(tmp_path)], env=WIDE)
    assert empty.exit_code == 0 and "runs: none under" in empty.output, empty.output
    assert "nothing running" in empty.output
    (_run_folder(tmp_path, "a-run", "done") / "result.json").write_text("{}")
    done = runner.invoke(app, ["status", "--results-dir", str(tmp_path)], env=WIDE)
    assert done.exit_code == 0, done.output
    assert "nothing running" in done.output and f"`flowvision status --results-dir {tmp_path} --all`" in done.output
    listed = runner.invoke(app, ["status", "--results-dir", str(tmp_path), "--all"], env=WIDE)
    assert "nothing running" not in listed.output and "a-run" in listed.output


def test_status_and_cache_before_any_run_say_so_in_a_line(tmp_path):
    missing = runner.invoke(app, ["status", "--results-dir", str(tmp_path / "nope")], env=WIDE)
    assert missing.exit_code == 2 and "results folder" in missing.output and "does not exist" in missing.output
    status = runner.invoke(app, ["status", "--results-dir", str(tmp_path)], env=WIDE)  # no runs/ folder yet
    assert status.exit_code == 0 and f"runs: none under {tmp_path}/runs, nothing running" in status.output
    assert "`flowvision demo` or `flowvision reproduce` starts some" in status.output
    cache = runner.invoke(app, ["cache", "--results-dir", str(tmp_path)], env=WIDE)
    assert cache.exit_code == 0, cache.output
    assert cache.output.splitlines()[0] == f"stage store: {tmp_path / 'cache'}"
    assert "nothing cached yet" in cache.output and "┏" not in cache.output  # no empty table


def test_cache_prune_dry_run_lists_the_files_and_warns_of_a_running_run(tmp_path):
    store = tmp_path / "cache" / "v2"
    store.mkdir(parents=True)
    orphan = store / "probe-0123abcd.pt"
    orphan.write_bytes(b"x" * 10)
    _run_folder(tmp_path, "busy-run", "running")
    res = runner.invoke(app, ["cache", "--results-dir", str(tmp_path), "--prune", "--dry-run"], env=WIDE)
    assert res.exit_code == 0, res.output
    assert f"{orphan} (unreferenced" in res.output
    assert "1 run under" in _flat(res.output) and "is running (e.g. busy-run)" in _flat(res.output)
    assert orphan.is_file()


def _partial_imagenet(root: Path, synsets=("n01440764", "n01443537")) -> Path:
    from PIL import Image

    for label, synset in enumerate(synsets):
        (root / synset).mkdir(parents=True)
        Image.new("RGB", (8, 8), (label, 0, 0)).save(root / synset / f"ILSVRC2012_val_{label:08d}.JPEG")
    return root


def test_dry_run_and_grid_accept_a_partial_imagenet_folder_as_the_run_does(tmp_path):
    from flowvision.core import config
    from flowvision.scale.grid import check_inputs

    partial = _partial_imagenet(tmp_path / "val")
    args = ["finetune", "--dataset", "cifar10", "--dry-run", "--results-dir", str(tmp_path / "r")]
    res = runner.invoke(app, [*args, "--imagenet", str(partial)], env=WIDE)
    assert res.exit_code == 2, res.output  # CIFAR-10 and the weights are not here
    row = next(line for line in res.output.splitlines() if "ImageNet-1K val" in line and str(partial) in line)
    assert "found:" in row and "NOT FOUND" not in row and "2 of the 1000 class folders" in _flat(res.output), res.output
    cfg = config.resolve("cifar10", None, "lp", {"imagenet": str(partial), "data_root": str(tmp_path / "d")})
    assert not [p for p in check_inputs([(cfg, "")]) if "ImageNet" in p]
    (partial / "tench").mkdir()  # not a class of the model: the run refuses it, and so does the dry run
    bad = runner.invoke(app, [*args, "--imagenet", str(partial)], env=WIDE)
    row = next(line for line in bad.output.splitlines() if "ImageNet-1K val" in line and str(partial) in line)
    assert "NOT FOUND" in row and "cannot be used" in _flat(bad.output) and "'tench'" in bad.output, bad.output


def test_a_partial_imagenet_folder_is_warned_about_once_per_process(tmp_path, capsys):
    from flowvision.core import config
    from flowvision.methods import forgetting

    partial = _partial_imagenet(tmp_path / "val2")
    for seed in (0, 1):  # two cells of a grid
        cfg = config.resolve("cifar10", "resnet18", "ft", {"imagenet": str(partial), "seed": seed,
                                                            "data_path": "pil"})
        assert forgetting.eval_set(cfg).partial
    err = capsys.readouterr()
    assert (err.out + err.err).count(f"ImageNet folder at {partial} holds 2 of the 1000 classes") == 1


def test_an_input_error_before_any_work_leaves_no_failed_run_folder(tmp_path, monkeypatch):
    from flowvision.core import config, identity
    from flowvision.stages.runfolder import read_states

    monkeypatch.delenv("FLOWVISION_IMAGENET", raising=False)
    results = tmp_path / "results"
    options = {"data_root": str(tmp_path / "no-data"), "results_dir": str(results), "device": "cpu"}
    args = ["finetune", "--dataset", "cifar10", "--method", "lp", *_sets(options)]
    res = runner.invoke(app, args, env=WIDE)
    assert res.exit_code == 2 and "error:" in res.output, res.output
    assert not list(results.glob("runs/*")) and read_states(results) == []
    # a folder holding what an earlier attempt wrote keeps it, and says the run failed
    run_dir = results / "runs" / identity.run_id(config.resolve("cifar10", None, "lp", options))
    run_dir.mkdir(parents=True)
    (run_dir / "summary.csv").write_text("stage,epoch\n")
    assert runner.invoke(app, args, env=WIDE).exit_code == 2
    assert (run_dir / "summary.csv").read_text() == "stage,epoch\n"
    assert [r["status"] for r in read_states(results)] == ["failed"]


def test_the_target_tasks_n_test_does_not_redefine_the_demo_source():
    """n_test sizes the target task only: the demo model (its cached file, the source stage) and the source
    evaluation keep their keys, the target evaluation's changes; demo_n_test sizes the source task's val."""
    from flowvision.core import config, identity
    from flowvision.stages import pipeline
    from flowvision.stages.dryrun import fingerprints
    from flowvision.methods.source import demo_path

    def keys(**sets):
        cfg = config.resolve("gratings", "demo", "flow", {"image_size": 16, "n_train": 48, "demo_n_test": 40, **sets})
        return cfg, pipeline.plan(cfg, fingerprints(cfg))

    (a, one), (b, other), (c, source_changed) = keys(n_test=32), keys(n_test=24), keys(n_test=32, demo_n_test=30)
    assert one["source"] == other["source"] and one["source_eval"] == other["source_eval"]
    assert demo_path(a) == demo_path(b) and identity.run_id(a) != identity.run_id(b)
    assert one["target_eval"] != other["target_eval"] and one["probe"] != other["probe"]
    assert source_changed["source"] != one["source"] and demo_path(c) != demo_path(a)
    # the identity of a configuration written before demo_n_test existed is unchanged
    assert identity.run_id(config.resolve("gratings", "demo", "flow")) == "gratings-demo-flow-s0-25b4eb93"
