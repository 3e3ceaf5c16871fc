"""`make gpu-check` without a GPU: the one-line answers (a package missing, no GPU), and the real-scale
pipeline cell and the whole check at toy size on the CPU — the same functions a GPU runs at 224 px."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flowvision.scale import gpucheck
from flowvision.stages.costs import KINDS, PRECISIONS, read_measured
from flowvision.scale.gpucell import TOY, run_cell

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_gpu_check_with_a_python_lacking_packages_names_them_in_one_line():
    """PYTHON=... runs the check with that interpreter and no .venv; -S hides its site-packages, as a
    machine's bare python3 would be: one line naming every package and the wheel recipe, exit 2."""
    done = subprocess.run(["make", "--no-print-directory", "gpu-check", f"PYTHON={sys.executable} -S"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    ours = [line for line in (done.stdout + done.stderr).splitlines() if not line.startswith("make")]
    assert done.returncode == 2 and len(ours) == 1, done.stdout + done.stderr
    line = ours[0]
    assert "lacks torch, torchvision, timm, kornia, filelock" in line and "Traceback" not in line
    assert "pip download -d wheels" in line and "-m pip install --no-index --find-links wheels" in line
    assert "https://download.pytorch.org/whl/cu" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: the check would run")
def test_without_a_gpu_the_check_says_so_in_one_line(tmp_path, capsys):
    assert gpucheck.main(tmp_path / "gpu-check.json") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gpu-check: no CUDA GPU is visible")
    assert not (tmp_path / "gpu-check.json").exists()


def test_the_real_scale_cell_runs_every_stage_at_toy_size_on_the_cpu(tmp_path):
    cell = run_cell(tmp_path, "bf16", TOY, "cpu")
    rows = {r["stage"]: r for r in cell["stages"]}
    n_train = TOY.classes * TOY.train_per_class
    assert {name: rows[name]["kind"] for name in ("probe", "finetune", "refit", "losses", "wise")} == {
        "probe": "frozen", "finetune": "train", "refit": "frozen", "losses": "inference", "wise": "inference"}
    assert rows["finetune"]["images"] == TOY.epochs * n_train and rows["probe"]["images"] == n_train
    assert rows["source_eval"]["images"] == TOY.source_images
    # wise: α = 0.25, 0.75 on half the source images, α = 0.5 on all, the test set at 0, .25, .5, .75
    assert rows["wise"]["images"] == 2 * TOY.source_images // 2 + TOY.source_images + 4 * TOY.classes * TOY.test_per_class
    assert all(r["images_per_s"] > 0 for r in rows.values() if r["kind"] != "load")
    assert all(r["gpu_busy"] is None for r in rows.values())  # nothing to sample on the CPU
    assert cell["device"] == "cpu" and 0 < cell["compute_seconds"] <= cell["seconds"]


@pytest.mark.slow  # two toy cells, 6 toy rates and the paper-grid estimate: ~8 s on 2 shared cores
def test_the_whole_check_at_toy_size_writes_the_rates_the_dry_run_reads(tmp_path):
    out = tmp_path / "results" / "gpu-check.json"
    result = gpucheck.check(out, TOY, "cpu")
    saved = json.loads(out.read_text())
    assert saved["rates"] == result["rates"] and set(saved["rates"]["test_resnet"]) == set(PRECISIONS)
    assert all(saved["rates"]["test_resnet"][p][k] > 0 for p in PRECISIONS for k in KINDS)
    assert set(saved["cell"]) == {"fp32", "bf16", "speedup"} and saved["estimate"]["resnet50"]["hours"] > 0
    measured = read_measured(out)
    assert measured["device"] == "cpu" and measured["rates"] == saved["rates"]
    text = gpucheck.summary(result)
    assert "test_resnet bf16" in text and "finetune" in text and "paper grid, resnet50" in text
    assert not list(out.parent.glob("gpu-check-*"))  # the cell's generated images are gone


def test_a_part_that_raises_is_one_line_and_the_summary_and_estimate_survive(tmp_path, monkeypatch):
    """The real-scale cell forced to raise, and compile failing as on a machine without a C compiler: each is one
    FAILED line; the rates, the Fisher rate and the paper-grid estimate (from the steady-state rates) are there."""
    import dataclasses

    from flowvision.scale import gpucell

    def broken(*args, **kwargs):
        raise RuntimeError("forced: the cell broke")
    monkeypatch.setattr(gpucell, "run_cell", broken)
    monkeypatch.setattr(torch, "compile", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("no C compiler")))
    sizes = dataclasses.replace(TOY, models=("test_resnet",), compile=True)
    out = tmp_path / "results" / "gpu-check.json"
    result = gpucheck.check(out, sizes, "cpu", budget_s=10_000)
    text = gpucheck.summary(result)
    failed = [line for line in text.splitlines() if line.startswith("FAILED")]
    assert failed == ["FAILED cell fp32: RuntimeError: forced: the cell broke",
                      "FAILED cell bf16: RuntimeError: forced: the cell broke",
                      "FAILED compile train: RuntimeError: no C compiler",
                      "FAILED compile inference: RuntimeError: no C compiler"], text
    saved = json.loads(out.read_text())
    assert saved["estimate"]["resnet50"]["hours"] > 0 and "paper grid, resnet50" in text
    assert saved["rates"] == saved["steady_rates"] and "no real-scale cell" in saved["rates_basis"]
    assert all(r["images_per_s"] > 0 for r in saved["fisher"]["rows"]) and "cell" not in saved
    assert "EWC's Fisher pass, images/s: one backward per image" in text
    assert gpucheck.main(out, ["--no-compile"]) == 2  # no GPU here: the check itself says so in one line


def test_the_estimate_takes_the_cells_rates_and_scales_the_other_models_by_its_ratio():
    steady = {"resnet50": {"bf16": {"train": 400.0, "frozen": 1000.0, "inference": 1200.0}},
              "resnet18": {"bf16": {"train": 1000.0, "frozen": 3000.0, "inference": 4000.0}}}
    cell = {"bf16": {"stages": [{"stage": "finetune", "kind": "train", "images": 300, "seconds": 1.0},
                                {"stage": "probe", "kind": "frozen", "images": 500, "seconds": 1.0},
                                {"stage": "losses", "kind": "inference", "images": 600, "seconds": 0.5},
                                {"stage": "target_eval", "kind": "inference", "images": 300, "seconds": 0.5}]}}
    rates, basis = gpucheck.estimate_rates(steady, cell, "resnet50")
    assert rates["resnet50"]["bf16"] == {"train": 300.0, "frozen": 500.0, "inference": 900.0}
    assert rates["resnet18"]["bf16"] == {"train": 750.0, "frozen": 1500.0, "inference": 3000.0}
    assert "real-scale cell" in basis and steady["resnet50"]["bf16"]["train"] == 400.0  # the input is untouched
