"""Experiment tracking (--log): off by default; TensorBoard event files in the run folder with every
epoch of each training stage and the final metrics; a one-line error when the package is missing."""
import importlib.util
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flowvision.core import config
from flowvision.cli import app
from flowvision.stages.run import run

runner = CliRunner()
HAS_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None


def _scalars(folder: Path) -> dict:
    """tag -> [(step, value)] of every event file under ``folder`` (one file per process that wrote)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(path))
        acc.Reload()
        out[path.name] = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    return out


def test_no_log_by_default_writes_no_tracker_files(tiny):
    res = run(config.resolve("gratings", "demo", "ft", tiny))
    assert not (Path(res["run_dir"]) / "tensorboard").exists()


@pytest.mark.skipif(not HAS_TENSORBOARD, reason="tensorboard is not installed (the error path is tested below)")
def test_tensorboard_gets_every_epoch_and_the_final_metrics_also_of_stages_loaded_from_the_store(tiny):
    cfg = config.resolve("gratings", "demo", "flow", dict(tiny, epochs=2, log="tensorboard"))
    first = run(cfg)
    second = run(cfg)  # every stage loaded from the store: its epochs are logged all the same
    assert second["stages"]["finetune"] == "cached"
    files = _scalars(Path(first["run_dir"]) / "tensorboard")
    assert len(files) == 2
    for scalars in files.values():
        assert [s for s, _ in scalars["finetune/loss"]] == [1, 2]
        assert [s for s, _ in scalars["probe/acc"]] == [1] and [s for s, _ in scalars["refit/lr"]] == [1]
        assert scalars["finetune/lr"][0][1] == pytest.approx(0.01)  # the config's fine-tuning lr, first epoch
        assert scalars["final/target_acc"] == [(0, pytest.approx(first["target_acc"]))]
        assert scalars["final/tau"][0][1] == pytest.approx(first["tau"])
    a, b = files.values()
    assert a["finetune/loss"] == b["finetune/loss"]  # the live epochs and the loaded ones are the same rows


def _one_line(res, fragment):
    assert res.exit_code == 2, res.output
    lines = [l for l in res.output.splitlines() if l.strip()]
    assert len(lines) == 1 and fragment in lines[0], res.output


@pytest.mark.skipif(HAS_TENSORBOARD, reason="tensorboard is installed")
def test_log_tensorboard_without_the_package_is_one_line(tiny):
    res = runner.invoke(app, ["finetune", "--model", "demo", "--log", "tensorboard",
                              "--results-dir", tiny["results_dir"]])
    _one_line(res, "--log tensorboard: the tensorboard package is not installed here; pip install tensorboard")
    assert not Path(tiny["results_dir"]).exists()


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed")
def test_log_wandb_without_the_package_is_one_line(tiny):
    res = runner.invoke(app, ["reproduce", "--model", "demo", "--datasets", "demo", "--log", "wandb",
                              "--results-dir", tiny["results_dir"]])
    _one_line(res, "--log wandb: the wandb package is not installed here; pip install wandb, or run without --log")
    assert not Path(tiny["results_dir"]).exists()


def test_an_unknown_logger_is_one_line(tiny):
    res = runner.invoke(app, ["finetune", "--model", "demo", "--log", "mlflow", "--results-dir", tiny["results_dir"]])
    _one_line(res, "log 'mlflow' is not valid; choose one of: none, tensorboard, wandb")
