"""The stage store trusts nothing on disk: checked files, damaged ones moved aside and recomputed,
one computation per key across processes, no lock outliving its holder, a full disk said in one line."""
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from flowvision.core import config
from flowvision.stages.run import run as run_one
from flowvision.core.errors import UserError
from flowvision.core.files import DamagedFile, load_checked, save_checked
from flowvision.core.cache import load_or_compute


def _damage(path: Path, how: str, other: Path = None) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "zero-filled":
        path.write_bytes(bytes(len(data)))
    elif how == "swapped":  # a valid checked file of another stage, under this name
        path.write_bytes(other.read_bytes())
    elif how == "one bit":
        path.write_bytes(data[:-10] + bytes([data[-10] ^ 1]) + data[-9:])


@pytest.mark.parametrize("how", ["truncated", "one bit", pytest.param("zero-filled", marks=pytest.mark.slow),
                                 pytest.param("swapped", marks=pytest.mark.slow)])  # both read as "one bit" does
def test_a_damaged_stage_file_is_moved_aside_and_recomputed_to_the_same_result(how, tiny):
    cfg = config.resolve("gratings", "demo", "flow", tiny)
    first = run_one(cfg)
    store = Path(tiny["results_dir"]) / "cache" / "v2"
    probe = store / f"probe-{first['stage_keys']['probe']}.pt"
    _damage(probe, how, other=store / f"losses-{first['stage_keys']['losses']}.pt")
    with pytest.raises(DamagedFile):
        load_checked(probe, {"stage": "probe", "key": first["stage_keys"]["probe"]})
    second = run_one(cfg)
    assert second["stages"]["probe"] == "computed" and second["stages"]["finetune"] == "cached"
    assert load_checked(probe, {"stage": "probe", "key": first["stage_keys"]["probe"]})  # healed
    assert len(list(store.glob("probe-*.damaged-*"))) == 1  # kept for inspection
    for key in ("target_acc", "source_acc_after", "tau"):
        assert second[key] == first[key]


def test_a_damaged_checkpoint_restarts_training_instead_of_crashing(tiny):
    from flowvision.methods.train import Schedule, train
    from flowvision.methods import models
    from flowvision.data.synthetic import load_synthetic_task

    task = load_synthetic_task("gratings", image_size=16, n_train=32, n_test=8)
    ckpt = Path(tiny["results_dir"]) / "ft.partial.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"\0" * 1000)
    rows = train(models.create("test_resnet", task.num_classes), task.train, Schedule(1, 0.01, 16), seed=0,
                 checkpoint=ckpt)
    assert [r["epoch"] for r in rows] == [1] and list(ckpt.parent.glob("ft.partial.pt.damaged-*"))


def test_a_file_under_the_wrong_name_is_refused_even_when_intact(tmp_path):
    save_checked({"x": torch.ones(2)}, tmp_path / "a.pt", {"stage": "probe", "key": "k1"})
    assert torch.equal(load_checked(tmp_path / "a.pt", {"stage": "probe", "key": "k1"})["x"], torch.ones(2))
    with pytest.raises(DamagedFile, match="holds key 'k1', not 'k2'"):
        load_checked(tmp_path / "a.pt", {"stage": "probe", "key": "k2"})


_WORKER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from flowvision.core.cache import load_or_compute
    path, log, hold = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
    start_after = Path(sys.argv[4]) if len(sys.argv) > 4 else None
    while start_after is not None and not start_after.exists():
        time.sleep(0.02)
    def compute():
        with open(log, "a") as f:
            f.write("computed\\n")
        release = path.with_name("release")
        end = time.time() + hold  # hold the lock until told to let go, or for ``hold`` seconds
        while not release.exists() and time.time() < end:
            time.sleep(0.02)
        return {"value": 42}
    value, status = load_or_compute(path, {"stage": "t", "key": "k"}, compute, "stage t")
    print(status, value["value"], flush=True)
""")


def _worker(tmp_path, seconds, start_after=None):
    return subprocess.Popen([sys.executable, "-c", _WORKER, str(tmp_path / "t.pt"), str(tmp_path / "log"), str(seconds),
                             *([str(start_after)] if start_after else [])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_processes_asking_for_one_stage_compute_it_once(tmp_path):
    """The first process computes and holds the lock until the second has said it waits for it (the second
    starts asking once the first is computing); then the first stores, and the second reads what it stored."""
    import threading

    first = _worker(tmp_path, 60.0)
    second = _worker(tmp_path, 0.0, start_after=tmp_path / "log")
    said = []

    def read_stderr():
        for line in second.stderr:
            said.append(line)
    reader = threading.Thread(target=read_stderr)
    reader.start()
    end = time.time() + 60
    while not any("waiting for another run computing stage t" in line for line in said) and time.time() < end:
        time.sleep(0.02)
    (tmp_path / "release").touch()  # let go (also after 60 s without the second waiting: the assertions below fail)
    outs = [first.communicate(timeout=60)[0], second.stdout.read()]
    second.wait(timeout=60)
    reader.join(timeout=60)
    assert [o.split() for o in outs] == [["computed", "42"], ["cached", "42"]], (outs, said)
    assert any("waiting for another run computing stage t" in line for line in said), said
    assert (tmp_path / "log").read_text() == "computed\n"


def test_a_holder_killed_mid_stage_does_not_block_the_next_run(tmp_path):
    holder = _worker(tmp_path, 600.0)
    while not (tmp_path / "log").exists():
        time.sleep(0.05)
    holder.kill()
    holder.wait()
    value, status = load_or_compute(tmp_path / "t.pt", {"stage": "t", "key": "k"}, lambda: {"value": 7}, "stage t")
    assert (status, value["value"]) == ("computed", 7)


def test_orphaned_temporary_files_of_a_killed_writer_are_removed(tmp_path):
    orphan = tmp_path / ".t.pt.abc123.tmp"
    orphan.write_bytes(b"half a file")
    load_or_compute(tmp_path / "t.pt", {"stage": "t", "key": "k"}, lambda: {"value": 1}, "stage t")
    assert not orphan.exists() and not list(tmp_path.glob(".*.tmp"))


def test_a_full_disk_is_one_line_naming_the_folder_and_keeps_the_old_file(tmp_path, full_disk):
    save_checked({"v": 1}, tmp_path / "s.pt", {"stage": "s"})
    before = (tmp_path / "s.pt").read_bytes()
    full_disk()
    with pytest.raises(UserError, match=f"no space left on the disk of {tmp_path} while writing s.pt"):
        save_checked({"v": torch.zeros(1000)}, tmp_path / "s.pt", {"stage": "s"})
    assert (tmp_path / "s.pt").read_bytes() == before and not list(tmp_path.glob(".*.tmp"))


def test_cache_command_shows_the_store_and_prunes_only_what_no_record_refers_to(tiny):
    from typer.testing import CliRunner

    from flowvision.cli import app

    cfg = config.resolve("gratings", "demo", "flow", tiny)
    kept = run_one(cfg)
    other = run_one(config.resolve("gratings", "demo", "flow", dict(tiny, tau="0.5")))
    Path(other["run_dir"], "result.json").unlink()  # a deleted run: its finetune, refit, evals are unreferenced
    store = Path(tiny["results_dir"]) / "cache" / "v2"
    (store / ".probe-x.pt.abc.tmp").write_bytes(b"orphan")
    runner = CliRunner()
    shown = runner.invoke(app, ["cache", "--results-dir", tiny["results_dir"], "--prune", "--dry-run"])
    assert shown.exit_code == 0, shown.output
    assert "would remove 5 files" in shown.output and "unreferenced" in shown.output
    before = {p.name for p in store.iterdir()}
    pruned = runner.invoke(app, ["cache", "--results-dir", tiny["results_dir"], "--prune"])
    assert "removed 5 files" in pruned.output
    gone = before - {p.name for p in store.iterdir()}
    assert {n.split("-")[0] for n in gone} == {"finetune", "refit", "target_eval", "forgetting", ".probe"}
    again = run_one(cfg)
    assert set(again["stages"].values()) == {"cached"} and again["target_acc"] == kept["target_acc"]


@pytest.mark.slow
def test_kill_9_at_random_points_never_crashes_a_rerun_nor_changes_its_numbers(tmp_path, tiny):
    """20 runs killed with SIGKILL at random moments (import, training, evaluation, writes), each
    followed by a rerun of the same command; then the finished run equals an uninterrupted one and
    no temporary file is left. A few minutes on 2 cores."""
    import json
    import random
    import signal

    args = [sys.executable, "-m", "flowvision", "finetune", "--dataset", "gratings", "--method", "flow",
            *[a for k, v in dict(tiny, epochs=4, n_train=512, image_size=24).items() if k != "results_dir"
              for a in ("--set", f"{k}={v}")]]
    clean = subprocess.run([*args, "--results-dir", str(tmp_path / "clean")], capture_output=True, text=True)
    assert clean.returncode == 0, clean.stderr
    rng = random.Random(0)
    killed = attempts = 0
    while killed < 20 and attempts < 60:
        attempts += 1
        p = subprocess.Popen([*args, "--results-dir", str(tmp_path / "killed")], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.5, 5.0))
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            killed += 1
        _, err = p.communicate()
        assert p.returncode in (0, -signal.SIGKILL), err  # a run either finishes, or was killed: never a crash
    final = subprocess.run([*args, "--results-dir", str(tmp_path / "killed")], capture_output=True, text=True)
    assert final.returncode == 0, final.stderr
    a, b = (json.loads(next((tmp_path / d).glob("runs/*/result.json")).read_text()) for d in ("clean", "killed"))
    for key in ("target_acc", "source_acc_before", "source_acc_after", "tau", "weight_stats"):
        assert a[key] == b[key], key
    assert killed >= 20 and not list((tmp_path / "killed").rglob("*.tmp"))
