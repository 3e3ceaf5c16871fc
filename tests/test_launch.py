"""The grid over worker processes and Slurm (submitit's local executor), the state files, `status`."""
import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flowvision.cli import app
from flowvision.core.console import PlainProgress, console
from flowvision.core.errors import UserError
from flowvision.scale.launch import minutes, slots
from flowvision.stages.runfolder import read_states
from flowvision.stages.runstate import RunState

runner = CliRunner()
SHARING = "ft,wiseft,flow,flow+wiseft"  # ft/wiseft share a fine-tuning; flow/flow+wiseft share probe..refit


def _sets(tiny, **extra):
    values = {k: v for k, v in tiny.items() if k != "results_dir"} | extra
    return [a for k, v in values.items() for a in ("--set", f"{k}={v}")] + ["--results-dir", tiny["results_dir"]]


def stage_counts(results_dir) -> dict:
    """(stage, key) -> Counter of "computed"/"cached" over every result.json."""
    per = collections.defaultdict(collections.Counter)
    for path in Path(results_dir).glob("runs/*/result.json"):
        rec = json.loads(path.read_text())
        for stage, how in rec["stages"].items():
            per[(stage, rec["stage_keys"][stage])][how] += 1
    return per


def assert_each_stage_computed_once(results_dir, n_runs):
    per = stage_counts(results_dir)
    assert len(list(Path(results_dir).glob("runs/*/result.json"))) == n_runs
    assert all(c["computed"] == 1 for c in per.values()), {k: c for k, c in per.items() if c["computed"] != 1}
    shared = {k for k, c in per.items() if c["cached"]}
    assert {"probe", "losses", "finetune", "refit", "source_eval"} <= {stage for stage, _ in shared}
    return per


@pytest.mark.slow  # 4 runs in 2 worker processes: 12-16 s on 2 cores; the fast suite keeps the launcher's checks
def test_local_workers_compute_every_shared_stage_once(tiny):
    res = runner.invoke(app, ["reproduce", "--model", "demo", "--datasets", "gratings", "--methods", SHARING,
                              "--seeds", "1", "--jobs", "2", *_sets(tiny)])
    assert res.exit_code == 0, res.output
    assert "4 runs: 4 ran, 0 already finished, 0 failed" in res.output
    per = assert_each_stage_computed_once(tiny["results_dir"], 4)
    finetunes = [c for (stage, _), c in per.items() if stage == "finetune"]
    assert sorted((c["computed"], c["cached"]) for c in finetunes) == [(1, 1), (1, 1)]  # ft+wiseft, flow+flow+wiseft
    assert {"local-cpu0.log", "local-cpu1.log"} <= {p.name for p in Path(tiny["results_dir"], "logs").iterdir()}
    status = runner.invoke(app, ["status", "--results-dir", tiny["results_dir"]])
    assert status.exit_code == 0 and "runs: 4 done" in status.output
    again = runner.invoke(app, ["reproduce", "--model", "demo", "--datasets", "gratings", "--methods", SHARING,
                                "--seeds", "1", "--jobs", "2", *_sets(tiny)])
    assert "4 runs: 0 ran, 4 already finished" in again.output


def test_status_reads_waiting_running_failed_and_a_dead_holder(tiny, tmp_path):
    from flowvision.core import config

    res = Path(tiny["results_dir"])
    cfgs = [config.resolve("gratings", "demo", m, dict(tiny)) for m in ("ft", "flow", "lp", "wiseft")]
    RunState(res / "runs" / "a-waiting", cfgs[0]).write(status="waiting")
    alive = RunState(res / "runs" / "b-running", cfgs[1])
    alive.start()
    alive.stage("finetune", "start")
    alive.epoch("finetune", [{"epoch": 2}], 5)
    failed = RunState(res / "runs" / "c-failed", cfgs[2])
    failed.write(status="failed", error="data set cifar10 not found")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = RunState(res / "runs" / "d-killed", cfgs[3])
    dead.start()
    dead.write(pid=gone.pid, stage="refit")
    rows = {r["run_id"]: r for r in read_states(res)}
    assert {k: r["status"] for k, r in rows.items()} == {"a-waiting": "waiting", "b-running": "running",
                                                        "c-failed": "failed", "d-killed": "failed"}
    assert rows["b-running"]["where"] == "finetune, epoch 2 of 5"
    assert f"process {gone.pid} stopped during refit" in rows["d-killed"]["error"]
    out = runner.invoke(app, ["status", "--results-dir", str(res)])
    assert out.exit_code == 0, out.output
    assert "1 running, 2 failed, 1 waiting" in out.output and "data set cifar10 not found" in out.output
    assert runner.invoke(app, ["status", "--results-dir", str(tmp_path / "none")]).exit_code == 2


def test_dry_run_lists_what_is_missing_before_anything_starts(tmp_path):
    res = runner.invoke(app, ["reproduce", "--model", "resnet18", "--datasets", "cifar10", "--methods", "ft",
                              "--seeds", "1", "--data-root", str(tmp_path / "data"),
                              "--imagenet", str(tmp_path / "in1k"), "--results-dir", str(tmp_path / "r"), "--dry-run"])
    assert res.exit_code == 2, res.output
    assert "1 run, 0 finished, 1 to do" in res.output
    missing = [line for line in res.output.splitlines() if line.startswith("missing:")]
    assert len(missing) == 3, res.output  # the data set, the weights (offline, not cached), ImageNet
    assert "flowvision data download cifar10" in res.output and "ImageNet val not found" in res.output
    assert not Path(tmp_path / "r" / "runs").exists()
    ok = runner.invoke(app, ["reproduce", "--model", "demo", "--datasets", "gratings", "--methods", "ft",
                             "--seeds", "1", "--results-dir", str(tmp_path / "r"), "--dry-run"])
    assert ok.exit_code == 0 and "inputs: every data set" in ok.output


def test_launcher_options_are_checked():
    assert slots(3, None) == [None, None, None]
    assert slots(1, "0,2") == ["0", "2"]
    for bad in ("0,0", "a,b", ","):
        with pytest.raises(UserError, match="--gpus"):
            slots(1, bad)
    assert [minutes(t) for t in ("90", "1:30:00", "2-00", "0-01:00:30")] == [90, 90, 2880, 61]
    with pytest.raises(UserError, match="--time"):
        minutes("soon")
    res = runner.invoke(app, ["reproduce", "--model", "demo", "--datasets", "gratings", "--gpus", "0",
                              "--device", "cuda:1", "--dry-run"])
    assert res.exit_code == 2 and "each worker sees one GPU" in res.output


def test_plain_progress_prints_lines_every_n_steps_and_at_the_end(monkeypatch):
    with console.capture() as cap:
        bar = PlainProgress(every=3)
        task = bar.add_task("finetune", total=7, info="")
        for step in range(7):
            bar.update(task, advance=1, info=f"epoch 1 of 1, loss {step}")
    lines = cap.get().splitlines()
    assert [", ".join(line.split(" ", 1)[1].split(", ")[:3]) for line in lines] == [
        "finetune: epoch 1 of 1, loss 2, batch 3 of 7", "finetune: epoch 1 of 1, loss 5, batch 6 of 7",
        "finetune: epoch 1 of 1, loss 6, batch 7 of 7"]


# ---- the issue's grid, a killed worker, Slurm --------------------------------------------------------
DEMO_GRID = ["reproduce", "--model", "demo", "--datasets", "demo", "--methods", SHARING, "--seeds", "2"]


@pytest.mark.slow  # ~18 s on 2 cores: 16 runs on 2 workers
def test_issue_grid_on_two_local_workers(tiny):
    res = runner.invoke(app, [*DEMO_GRID, "--jobs", "2", *_sets(tiny)])
    assert res.exit_code == 0, res.output
    per = assert_each_stage_computed_once(tiny["results_dir"], 16)
    by_stage = collections.defaultdict(collections.Counter)
    for (stage, _), c in per.items():
        by_stage[stage].update(c)
    assert {s: (c["computed"], c["cached"]) for s, c in by_stage.items()} == ISSUE_GRID_COUNTS


# stage -> (computed, cached) over the 16 records: 2 data sets × 2 seeds give 4 probes (every method reads its
# seed's probe: Table 5's test losses), 8 fine-tunings (one for ft+wiseft, one for flow+flow+wiseft), one
# source evaluation for all 16
ISSUE_GRID_COUNTS = {"source_eval": (1, 15), "probe": (4, 12), "probe_test": (4, 12), "losses": (4, 4),
                     "finetune": (8, 8), "refit": (4, 4), "target_eval": (8, 8), "forgetting": (8, 8), "wise": (8, 0)}


@pytest.mark.slow  # ~45 s on 2 cores: 8 array tasks as 8 local processes at once
def test_issue_grid_through_submitit_local_executor(tiny):
    res = runner.invoke(app, [*DEMO_GRID, "--launcher", "slurm", "--submitit-cluster", "local", "--wait",
                              "--time", "20", "--gpus-per-job", "0", "--cpus-per-job", "1", *_sets(tiny)])
    assert res.exit_code == 0, res.output
    assert "16 runs: 16 ran" in res.output
    per = assert_each_stage_computed_once(tiny["results_dir"], 16)
    by_stage = collections.defaultdict(collections.Counter)
    for (stage, _), c in per.items():
        by_stage[stage].update(c)
    assert {s: (c["computed"], c["cached"]) for s, c in by_stage.items()} == ISSUE_GRID_COUNTS
    logs = list(Path(tiny["results_dir"], "slurm").glob("*/*_log.err"))
    assert len(logs) == 4  # one array task per (data set, seed): all four methods share the seed's probe (Table 5)


@pytest.mark.slow  # ~20 s on 2 cores: 2 runs of 12 epochs, one killed and resumed
def test_a_killed_worker_leaves_its_run_resumable(tiny):
    res_dir = Path(tiny["results_dir"])
    args = [sys.executable, "-m", "flowvision", "reproduce", "--model", "demo", "--datasets", "gratings",
            "--methods", "ft", "--seeds", "2", "--jobs", "2", *_sets(tiny, epochs=12)]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    grid = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    victim = None
    deadline = time.time() + 300
    while victim is None and time.time() < deadline and grid.poll() is None:
        for state_file in res_dir.glob("runs/*/state.json"):
            state = json.loads(state_file.read_text())
            if state["status"] == "running" and state["stage"] == "finetune" and (state["epoch"] or 0) >= 3:
                victim = state
                break
        time.sleep(0.2)
    assert victim is not None, "no run reached its third fine-tuning epoch"
    os.kill(victim["pid"], signal.SIGKILL)
    output, _ = grid.communicate(timeout=300)
    assert grid.returncode == 2, output
    assert "2 runs: 1 ran, 0 already finished, 1 failed" in output
    run_dir = res_dir / "runs" / victim["run_id"]
    rows = (run_dir / "summary.csv").read_text().splitlines()
    assert sum(r.startswith("finetune,") for r in rows) >= 3  # summary.csv grew epoch by epoch
    assert list(res_dir.glob("cache/v2/finetune-*.partial.pt"))  # the checkpoint it resumes from
    (row,) = [r for r in read_states(res_dir) if r["run_id"] == victim["run_id"]]
    assert row["status"] == "failed" and "run the grid again" in row["error"]

    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "2 runs: 1 ran, 1 already finished, 0 failed" in again.stdout
    rows = (run_dir / "summary.csv").read_text().splitlines()
    assert sum(r.startswith("finetune,") for r in rows) == 12
    assert {r["status"] for r in read_states(res_dir)} == {"done"}
