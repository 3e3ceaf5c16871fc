"""The command line as a user meets it: one end-to-end run, and bad input -> one line, exit 2."""
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from flowvision.cli import app

runner = CliRunner()


def _sets(tiny):
    args = []
    for k, v in tiny.items():
        args += ["--set", f"{k}={v}"]
    return args


def test_finetune_end_to_end_through_the_cli(tiny):
    res = runner.invoke(app, ["finetune", "--dataset", "patterns", "--model", "demo", "--method", "flow",
                              "--tau", "median", "--seed", "1", *_sets(tiny)])
    assert res.exit_code == 0, res.output
    results = list(Path(tiny["results_dir"]).glob("runs/*/result.json"))
    assert len(results) == 1
    r = json.loads(results[0].read_text())
    assert r["dataset"] == "patterns" and r["method"] == "flow" and r["seed"] == 1 and r["tau_rule"] == "median"
    assert "target accuracy" in res.output and r["run_id"] in res.output


def test_paper_protocol_end_to_end_through_the_cli(tiny):
    """--protocol paper on a synthetic task (the model defaults to demo there): online weights, the
    best test epoch kept at probe, fine-tuning and refit, recorded; the reported target accuracy is
    the kept refit epoch's test accuracy."""
    res = runner.invoke(app, ["finetune", "--dataset", "gratings", "--protocol", "paper",
                              *_sets(dict(tiny, epochs=2, refit_epochs=2))])
    assert res.exit_code == 0, res.output
    run_dir, = Path(tiny["results_dir"]).glob("runs/*")
    r = json.loads((run_dir / "result.json").read_text())
    assert (r["model"], r["protocol"], r["weighting"]) == ("demo", "paper", "flow-online")
    assert set(r["best_epochs"]) == {"probe", "finetune", "refit"}
    assert "protocol: paper" in (run_dir / "config.yaml").read_text()
    rows = pd.read_csv(run_dir / "summary.csv")
    refit = rows[rows["stage"] == "refit head"]
    assert len(refit) == 2 and refit["test_acc"].notna().all()
    assert r["target_acc"] == pytest.approx(refit["test_acc"].max())
    assert r["best_epochs"]["refit"] == int(refit.loc[refit["test_acc"].idxmax(), "epoch"])
    assert "paper (kept the best test epoch" in " ".join(res.output.split())


def test_dry_run_shows_the_resolved_run_and_the_fix_for_each_missing_file_without_torch(tmp_path):
    """The user's command with --dry-run: resnet18.tv_in1k, the official CIFAR-10 recipe, protocol
    clean, and data, weights and ImageNet missing with their fixes, in a fresh interpreter that never
    imports torch."""
    import os
    import subprocess
    import sys

    code = ("import sys\nfrom flowvision.cli import app\n"
            f"app(['finetune', '--dataset', 'cifar10', '--tau', '1.0', '--dry-run', '--data-root', '{tmp_path}/data', "
            f"'--results-dir', '{tmp_path}/results'], prog_name='flowvision', standalone_mode=False)\n"
            "print('torch imported', 'torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k not in ("FLOWVISION_DATA", "FLOWVISION_IMAGENET")}
    env.update(HF_HOME=str(tmp_path / "hf"), COLUMNS="400")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    *lines, last = out.stdout.rstrip().splitlines()
    assert last == "torch imported False", out.stdout + out.stderr
    rows = {r[0]: r[1:] for r in _table_rows("\n".join(lines))}
    assert rows["model"] == ["resnet18 = resnet18.tv_in1k", "default for a real data set"]
    assert rows["epochs"][0] == "20" and rows["lr"][0] == "0.001" and "methods.flow" in rows["lr"][1]
    assert rows["protocol"] == ["clean", "default"] and rows["tau"] == ["1.0", "command line"]
    text = " ".join(out.stdout.split())
    assert f"missing; fix: flowvision data download cifar10 --data-root {tmp_path}/data" in text
    assert "missing; fix: the run downloads timm/resnet18.tv_in1k" in text and "pass --weights PATH" in text
    assert "missing; fix: download ILSVRC2012_img_val.tar and ILSVRC2012_devkit_t12.tar.gz" in text
    assert rows["probe"][1] == "keyed when task has loaded and the device decides amp (auto)"
    assert rows["source_eval"][1] == "keyed when source_data has loaded and the device decides amp (auto)"
    assert rows["amp"] == ["auto", "default"] and "precision: auto — bf16 autocast" in text
    assert not (tmp_path / "results").exists()  # a dry run writes nothing


def test_dry_run_with_imagenet_and_data_status_import_no_torch(tmp_path):
    """The dry run checks an --imagenet folder's class names, and data status a missing folder or data set,
    from timm's class list file alone: a fresh interpreter never imports torch."""
    import os
    import subprocess
    import sys

    (tmp_path / "val" / "n01440764").mkdir(parents=True)
    code = ("import sys\nfrom flowvision.cli import app\n"
            f"app(['finetune', '--dataset', 'cifar10', '--dry-run', '--data-root', '{tmp_path}/data', '--imagenet', "
            f"'{tmp_path}/val', '--results-dir', '{tmp_path}/results'], prog_name='flowvision', standalone_mode=False)\n"
            f"app(['data', 'status', '--data-root', '{tmp_path}/data', '--imagenet', '{tmp_path}/none'], "
            "prog_name='flowvision', standalone_mode=False)\n"
            "print('torch imported', 'torch' in sys.modules)")
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf"), COLUMNS="400")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.rstrip().endswith("torch imported False"), out.stdout + out.stderr
    text = " ".join(out.stdout.split())
    assert "ImageNet-1K val: found" in text and "1 of the 1000 class folders" in text
    assert f"ImageNet val not found at {tmp_path}/none" not in text  # the table's 'no' and the fix say it
    assert "flowvision data prepare imagenet --val-tar" in text


def test_demo_command_prints_the_comparison(tiny):
    res = runner.invoke(app, ["demo", "--seeds", "2", "--methods", "ft,flow", *_sets(tiny)])
    assert res.exit_code == 0, res.output
    assert "mean ± std" in res.output and "ft" in res.output and "flow" in res.output
    records = [json.loads(p.read_text()) for p in Path(tiny["results_dir"]).glob("runs/*/result.json")]
    assert len(records) == 4
    rows = _table_rows(res.output)
    main, more = [r for r in rows if len(r) == 6], {r[0]: r[1:] for r in rows if len(r) == 4}
    assert [r[0] for r in main] == ["ft", "flow"] and list(more) == ["ft", "flow"], res.output
    assert all(len(line) <= 100 for line in res.output.splitlines() if line[:1] in "┏┃┡│└")  # fits 100 columns, whole
    for method, seeds, target, _after, drop, hard in main:
        _before, agreement, kl = more[method]
        mine = [r for r in records if r["method"] == method]
        assert seeds == "2" and sorted(r["seed"] for r in mine) == [0, 1]
        for cell, metric in ((target, "target_acc"), (drop, "source_drop"), (agreement, "source_agreement"),
                             (hard, "hard10_acc")):
            percent = 100.0 * pd.Series([r[metric] for r in mine], dtype=float)  # as runs.summarise
            assert cell == f"{percent.mean():.2f} ± {percent.std(ddof=1):.2f}", (method, metric, res.output)
        nats = pd.Series([r["source_kl"] for r in mine], dtype=float)
        assert kl == f"{nats.mean():.3f} ± {nats.std(ddof=1):.3f}", (method, res.output)
    drop = {(r["method"], r["seed"]): 100 * r["source_drop"] for r in records}
    diffs = [drop["ft", s] - drop["flow", s] for s in (0, 1)]
    assert f"= {diffs[0]:+.1f}, {diffs[1]:+.1f} points; mean {(diffs[0] + diffs[1]) / 2:+.2f}, 95% t-interval" \
        in " ".join(res.output.split()), res.output


def test_the_demo_runs_on_one_process_per_thread_up_to_one_per_run(monkeypatch):
    import os

    from flowvision.reporting.report import demo_workers

    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert (demo_workers(12), demo_workers(1), demo_workers(12, "cuda")) == (2, 1, 1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert demo_workers(12) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3,1")  # nested levels: the first is this process's
    assert demo_workers(12) == 3
    monkeypatch.delenv("OMP_NUM_THREADS")  # the cores this process may run on
    assert demo_workers(1000) == len(os.sched_getaffinity(0))


@pytest.mark.slow  # ~30 s on 2 cores: two worker processes import torch and timm
def test_the_demo_on_two_workers_prints_the_numbers_of_one_process(tiny, tmp_path):
    import torch

    def records(results_dir):
        return {(r["method"], r["seed"]): (r["target_acc"], r["source_drop"], r["hard10_acc"])
                for r in (json.loads(p.read_text()) for p in Path(results_dir).glob("runs/*/result.json"))}

    here = runner.invoke(app, ["demo", "--seeds", "2", *_sets(dict(tiny, results_dir=str(tmp_path / "here")))])
    assert here.exit_code == 0 and "1 process, one torch thread" in here.output, here.output
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # as on 2 cores: one worker per thread, each computing with one
    try:
        two = runner.invoke(app, ["demo", "--seeds", "2", *_sets(dict(tiny, results_dir=str(tmp_path / "two")))])
    finally:
        torch.set_num_threads(threads)
    assert two.exit_code == 0 and "2 processes, one torch thread each" in two.output, two.output
    assert len(records(tmp_path / "here")) == 4 and records(tmp_path / "two") == records(tmp_path / "here")


def _table_rows(output: str) -> list[list[str]]:
    """The body rows of a rich table as printed: one list of stripped cells per '│ ... │' line."""
    return [[c.strip() for c in line.strip().strip("│").split("│")]
            for line in output.splitlines() if line.lstrip().startswith("│")]


@pytest.mark.parametrize("args,message", [
    (["--dataset", "imagenet21k"], "unknown dataset 'imagenet21k'; choose one of: cifar10"),
    (["--method", "magic"], "unknown method 'magic'; choose one of: ft, lp"),
    (["--tau", "0"], "τ must be a finite number > 0"),
    (["--tau", "-1"], "τ must be a finite number > 0"),
    (["--tau", "warm"], "--tau warm is not understood"),
    (["--set", "learning_rate=0.1"], "unknown config key learning_rate"),
    (["--method", "lwf", "--set", "lwf_parts=sourc"], "lwf_parts 'sourc' is not valid (did you mean source?); choose one of: source, training"),
    (["--set", "data_seed=three"], "config key 'data_seed': 'three' is not an integer"),
    (["--set", "epochs"], "write key=value"),
    (["--lr", "-0.1"], "lr must be > 0"),
    (["--dataset", "cifar10", "--data-root", "{tmp}/nodata"], "cifar10 not found under"),
    (["--model", "resnet18", "--imagenet", "{tmp}/noimagenet"], "ImageNet val not found at"),
    (["--model", "resnet18", "--weights", "{tmp}/w.safetensors", "--imagenet", "{tmp}/in"], "weights file"),
    (["--model", "no_such_net", "--imagenet", "{tmp}/in"], "unknown model 'no_such_net'"),
    (["--model", "resnet18", "--dataset", "gratings"], "forgetting is measured on ImageNet-1K val"),
    (["--config", "{tmp}/missing.yaml"], "config file"),
    (["--set", "demo_arch=no_such_net"], "demo_arch 'no_such_net' is not a timm architecture"),
    (["--dataset", "cifar10", "--model", "demo"], "--model demo is the synthetic 32-px demo network and cannot "
                                                   "be fine-tuned on cifar10; use --model resnet18"),
    (["--dataset", "cifar10", "--model", "resnet50", "--tau", "paper"],
     "--tau paper: the official run scripts give τ only for resnet18, not for resnet50"),
    (["--protocol", "official"], "protocol 'official' is not valid; choose one of: clean, paper"),
    (["--dataset", "cifar10", "--model", "resnet18", "--tau", "paper"],
     "--tau paper (the official τ, a median of training-transform losses) needs --protocol paper; under the clean "
     "protocol use --tau median"),
])
def test_bad_input_is_one_line_and_exit_code_2(args, message, tiny, tmp_path, monkeypatch):
    monkeypatch.delenv("FLOWVISION_IMAGENET", raising=False)
    (tmp_path / "in").mkdir()
    for i in range(3):
        (tmp_path / "in" / f"n0{i}").mkdir()
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    own = {a.split("=", 1)[0] for a in args if "=" in a}  # a key the case sets itself is not also the tiny one
    res = runner.invoke(app, ["finetune", *_sets({k: v for k, v in tiny.items() if k not in own}), *args])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    assert message in " ".join(res.output.split()), res.output
    assert "error:" in res.output


def test_bad_input_keeps_files_already_written(tiny):
    ok = runner.invoke(app, ["finetune", "--method", "lp", *_sets(tiny)])
    assert ok.exit_code == 0, ok.output
    before = {p: p.read_bytes() for p in Path(tiny["results_dir"]).rglob("*") if p.is_file()}
    bad = runner.invoke(app, ["finetune", "--method", "lp", "--tau", "0", "--set", "weighting=flow", *_sets(tiny)])
    assert bad.exit_code == 2
    after = {p: p.read_bytes() for p in Path(tiny["results_dir"]).rglob("*") if p.is_file()}
    assert after == before


def test_help_lists_every_command_without_importing_torch():
    """`flowvision --help` in a fresh interpreter: every registered command is listed, torch never loads."""
    import subprocess
    import sys

    import typer

    code = ("import sys\nfrom flowvision.cli import app\n"
            "rc = app(['--help'], prog_name='flowvision', standalone_mode=False)\n"
            "print('exit code', rc, 'torch imported', 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    *help_lines, last = out.stdout.rstrip().splitlines()
    assert last == "exit code 0 torch imported False", out.stdout + out.stderr
    listed = {m.group(1) for m in map(re.compile(r"^[│|] ([a-z][\w-]*) ").match, help_lines) if m}
    registered = set(typer.main.get_command(app).commands)
    assert {"finetune", "demo", "table", "plot", "weights", "reproduce", "bench", "data"} <= registered
    assert listed == registered, "\n".join(help_lines)


def test_help_and_config_errors_do_not_import_torch():
    """Importing torch takes seconds: --help and bad options must answer without it."""
    import subprocess
    import sys

    code = ("import sys\nfrom flowvision import cli\nfrom flowvision.core import config\nfrom flowvision.core.errors import UserError\n"
            "try:\n    config.resolve('gratings', 'demo', 'flow', {'tau': '0'})\nexcept UserError:\n    pass\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


def test_every_run_says_its_device_and_a_cuda_build_without_gpu_warns_once(tiny, monkeypatch):
    """On a machine whose torch was built for CUDA but sees no GPU (this CI's kind), --device auto
    warns with the fix; --device cpu is a choice and does not; the device is recorded either way."""
    from flowvision.core import hardware
    from flowvision.core.hardware import cuda_build_without_gpu

    # the warning is said once per process: as in a fresh one, whichever test's run came first in this worker
    monkeypatch.setattr(hardware, "_WARNED", set())
    sets = [a for k, v in tiny.items() if k != "device" for a in ("--set", f"{k}={v}")]
    auto = runner.invoke(app, ["finetune", "--method", "lp", *sets, "--set", "device=auto",
                               "--set", "deterministic=true"])
    assert auto.exit_code == 0, auto.output
    assert "device: cpu, deterministic algorithms" in auto.output
    assert ("sees no GPU" in auto.output) == (cuda_build_without_gpu() is not None)
    (path,) = Path(tiny["results_dir"]).glob("runs/*/result.json")
    saved = json.loads(path.read_text())
    assert (saved["device"], saved["deterministic"], saved["amp"], saved["channels_last"]) == ("cpu", True, False, False)
    cpu = runner.invoke(app, ["finetune", "--method", "lp", *sets, "--set", "device=cpu"])  # the same run id
    assert cpu.exit_code == 0 and "device: cpu" in cpu.output and "sees no GPU" not in cpu.output
    assert json.loads(path.read_text())["deterministic"] is False


@pytest.mark.slow  # 6 fine-tunings and 5 evaluations each: 58 s on 2 cores shared with another torch process
def test_frontier_command_runs_the_sweep_and_tags_the_off_default_runs(tiny):
    from flowvision.reporting import runs as runframe

    res = runner.invoke(app, ["frontier", "--dataset", "gratings", "--lrs", "0.01,0.003", "--epochs", "1",
                              "--taus", "p25,median", "--l2sp-lambdas", "0.01,1", "--lwf-lambdas", "1",
                              "--ewc-lambdas", "0.5", *_sets(tiny), "--set", "wise_alphas=0,1", "--set", "ewc_samples=6"])
    assert res.exit_code == 0, res.output
    folder = Path(tiny["results_dir"]) / "frontier" / "gratings-demo"
    assert (folder / "frontier.png").stat().st_size > 0
    pts = pd.read_csv(folder / "points.csv")
    assert pts.groupby("method").size().to_dict() == {"ft": 2, "l2sp": 2, "wiseft": 3, "flow": 2, "flow+wiseft": 3,
                                                      "lwf": 1, "ewc": 1}
    assert sorted(pts.loc[pts["method"] == "l2sp", "setting"]) == ["λ=0.01", "λ=1"]
    records = [json.loads(p.read_text()) for p in Path(tiny["results_dir"]).glob("runs/*/result.json")]
    tagged = {(r["method"], r["lr"], r["tau_rule"], r["l2sp_lambda"], r["ewc_lambda"]) for r in records
              if r["sweep"] == "frontier"}
    # the defaults are the methods' own runs
    assert tagged == {("ft", 0.003, None, None, None), ("flow", 0.01, "p25", None, None),
                      ("l2sp", 0.01, None, 1.0, None), ("ewc", 0.01, None, None, 0.5)}
    kept = runframe.dedupe_runs(runframe.load_runs(Path(tiny["results_dir"])))
    assert sorted(kept["method"]) == ["flow", "flow+wiseft", "ft", "l2sp", "lwf", "wiseft"]
    rows = {r[0]: r for r in _table_rows(res.output)}
    assert set(rows) == {"FT (lr × epochs)", "ℓ2-SP (λ)", "WiSE-FT (α)", "FLOW (τ)", "FLOW+WiSE-FT (α)", "LwF (λ)",
                         "EWC (λ)"}
    best = pts.loc[pts[pts["method"] == "flow"]["average"].idxmax()]
    assert rows["FLOW (τ)"][5] == str(round(best["average"], 2))  # method, seeds, points, on front, area, best Average
