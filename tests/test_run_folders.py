"""Every reader of run folders fed the same damaged folders: status, table, plot, cache and export read
``results/runs/<run id>/`` through one reader (``stages.runfolder``), so a result.json, state.json or
config.yaml that is a list, a string, a FIFO, megabytes, nested too deeply or of the wrong field types is,
for every one of them, skipped with at most one warning naming the file (the readers of many runs) or
refused in one line naming it (export), within seconds (a FIFO is never opened), never a traceback."""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flowvision.cli import app
from test_tables import write_run

runner = CliRunner()


def _field(value):
    def damage(path: Path) -> None:
        key, new = value
        record = json.loads(path.read_text())
        record[key] = new
        path.write_text(json.dumps(record))
    return damage


def _write(content):
    def damage(path: Path) -> None:
        path.unlink()
        if content is None:
            os.mkfifo(path)
        else:
            path.write_text(content)
    return damage


# (file, how it is damaged)
DAMAGED = {
    "result-list": ("result.json", _write("[1, 2]")),
    "result-string": ("result.json", _write('"a record"')),
    "result-fifo": ("result.json", _write(None)),
    "result-huge": ("result.json", _write('{"run_id": "' + "x" * (5 << 20) + '"}')),
    "result-deep": ("result.json", _write("[" * 50_000 + "]" * 50_000)),
    "result-target_data-list": ("result.json", _field(("target_data", [1]))),
    "result-num_classes-text": ("result.json", _field(("target_data", {"num_classes": "8", "recipe": "synthetic"}))),
    "result-weights-number": ("result.json", _field(("weights", 5))),
    "result-stage_keys-text": ("result.json", _field(("stage_keys", "finetune"))),
    "state-list": ("state.json", _write("[1, 2]")),
    "state-string": ("state.json", _write('"running"')),
    "state-fifo": ("state.json", _write(None)),
    "state-huge": ("state.json", _write('{"error": "' + "x" * (2 << 20) + '"}')),
    "config-fifo": ("config.yaml", _write(None)),
    "config-list": ("config.yaml", _write("- 1\n- 2\n")),
    "config-huge": ("config.yaml", _write("# " + "x" * (2 << 20) + "\n")),
}
READERS = ("status", "table", "plot", "cache", "export")
FAST = {"status", "cache", "export"}  # table and plot, which draw or write everything, on two kinds unless slow
FAST_KINDS = {"result-fifo", "result-target_data-list"}


def _damaged(demo_run: Path, tmp_path: Path, kind: str) -> Path:
    """A copy of the finished run's results folder, the run damaged as ``kind`` says (a state file damaged
    belongs to a run that has not finished: its result.json goes), beside a good run of another seed."""
    results = tmp_path / "results"
    shutil.copytree(demo_run.parent.parent, results)
    run_dir = results / "runs" / demo_run.name
    name, damage = DAMAGED[kind]
    if name == "state.json":
        (run_dir / "result.json").unlink()
    damage(run_dir / name)
    write_run(results, "good", seed=7)
    return run_dir / name


@pytest.mark.parametrize("kind,reader", [
    pytest.param(k, r, marks=() if r in FAST or k in FAST_KINDS else pytest.mark.slow) for k in DAMAGED for r in READERS])
def test_every_run_folder_reader_skips_or_refuses_a_damaged_folder_in_one_line(kind, reader, demo_run, tmp_path):
    bad = _damaged(demo_run, tmp_path, kind)
    results = tmp_path / "results"
    args = (["export", str(bad.parent), "--out", str(tmp_path / "out")] if reader == "export" else
            [reader, "--results-dir", str(results)] + (["--all"] if reader == "status" else []))
    t0 = time.time()
    res = runner.invoke(app, args)
    assert time.time() - t0 < 20 and len(res.output) < 20_000, (kind, reader)
    text = res.output
    assert "Traceback" not in text and res.exception is None or isinstance(res.exception, SystemExit), (text, res.exception)
    said = [" ".join(line.split()) for line in text.splitlines() if line.startswith(("warning:", "error:"))]
    if reader == "export":
        assert res.exit_code == 2 and len(said) == 1 and said[0].startswith("error:"), text
        assert str(bad) in " ".join(text.split()), text
        assert not (tmp_path / "out" / "model.safetensors").exists()
    else:
        assert res.exit_code == 0, text
        about = [line for line in said if bad.parent.name in line or "runs/" in line]
        assert len(about) <= 1 and all(bad.name in line and "skipping" in line for line in about), said
