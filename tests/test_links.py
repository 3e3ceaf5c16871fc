"""Nothing written through a link, by any writer: a symbolic link planted where a command creates, writes,
renames or removes (the stage store, a run folder, a decoded cache, an export, figures, tables, frontier and
audit folders, split files, the checked-images markers) is refused in one line naming it, and the folder it
points into, with a sentinel file in it, stays byte-identical. One helper plants the link and compares the
listings (``planted``); ``data prepare``'s own writers are tested in test_prepare.py."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from flowvision.cli import app
from flowvision.core import config
from flowvision.core.cache import load_or_compute
from flowvision.core.errors import UserError
from flowvision.stages.store import Store
from test_tables import write_run

runner = CliRunner()


def _listing(folder: Path) -> dict:
    """Every path under ``folder`` -> its bytes (files), its target (links) or None (folders)."""
    return {str(p.relative_to(folder)): (str(p.readlink()) if p.is_symlink() else p.read_bytes() if p.is_file()
                                         else None) for p in sorted(folder.rglob("*"))}


class planted:
    """A symbolic link at ``at`` into a folder outside (``kind`` "folder": to the folder, "file": to a sentinel
    file in it, "dangling": to a name there that does not exist), the folder's listing kept;
    ``untouched()`` says whether the folder is byte-identical and the link still a link."""

    def __init__(self, tmp_path: Path, at: Path, kind: str = "folder"):
        self.at, self.outside = Path(at), tmp_path / "outside"
        (self.outside / "mine").mkdir(parents=True, exist_ok=True)
        (self.outside / "sentinel.txt").write_text("keep me")
        (self.outside / "mine" / "notes.txt").write_text("mine too")
        self.at.parent.mkdir(parents=True, exist_ok=True)
        self.at.symlink_to({"folder": self.outside, "file": self.outside / "sentinel.txt",
                            "dangling": self.outside / "not-there"}[kind])
        self.before = _listing(self.outside)

    def untouched(self) -> bool:
        return _listing(self.outside) == self.before and self.at.is_symlink()


def one_line(res, *needles) -> str:
    """The CLI result is one error line, exit 2, naming each of ``needles``."""
    text = " ".join(res.output.split())
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert res.exit_code == 2 and len(errors) == 1 and "Traceback" not in res.output, (res.output, res.exception)
    assert all(n in text for n in needles), text
    return text


# ---- the stage store (and every cached file: the demo model's, through the same load_or_compute) ------------
@pytest.mark.parametrize("where,kind", [("cache", "folder"), ("cache/v2", "folder"), ("cache/v2/x-k.pt.lock", "file"),
                                        ("cache/v2/x-k.pt.lock", "dangling"), ("cache/v2/x-k.pt", "dangling")])
def test_the_stage_store_writes_through_no_link(where, kind, tmp_path):
    results = tmp_path / "results"
    if where.count("/") > 1:
        (results / "cache" / "v2").mkdir(parents=True)
    link = planted(tmp_path, results / where, kind)
    computed = []
    with pytest.raises(UserError, match="is a symbolic link to .*flowvision does not write through links"):
        Store(results / "cache").get("x", "k", lambda: computed.append(1) or {"t": torch.ones(2)})
    assert link.untouched() and not computed  # refused before anything is computed


def test_a_cached_file_is_written_where_no_link_is(tmp_path):
    value, status = load_or_compute(tmp_path / "store" / "x.pt", {"stage": "x"}, lambda: {"t": torch.ones(2)}, "x")
    assert status == "computed" and load_or_compute(tmp_path / "store" / "x.pt", {"stage": "x"}, None, "x")[1] == "cached"


# ---- run folders -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("where,kind", [("runs", "folder"), ("runs/RUN", "folder"), ("runs/RUN/state.json", "file"),
                                        ("runs/RUN/.lock", "file")])
def test_a_run_writes_through_no_link_in_its_folder(where, kind, tmp_path, tiny):
    from flowvision.core.identity import run_id

    cfg = config.resolve("gratings", "demo", "ft", tiny)
    link = planted(tmp_path, Path(tiny["results_dir"]) / where.replace("RUN", run_id(cfg)), kind)
    if where.endswith(".lock"):  # a run folder of a run that started: its state file is there
        (link.at.parent / "state.json").write_text("{}")
    res = runner.invoke(app, ["finetune", "--dataset", "gratings", "--method", "ft", "--results-dir",
                              tiny["results_dir"], *[a for k, v in tiny.items() if k != "results_dir"
                                                     for a in ("--set", f"{k}={v}")]])
    one_line(res, str(link.at), "is a symbolic link to", "remove the link")
    assert link.untouched()


# ---- decoded caches ------------------------------------------------------------------------------------
def _decode(cache: Path):
    from flowvision.data.decoded import decoded

    images = [(torch.zeros(3, 4, 4, dtype=torch.uint8), 0), (torch.ones(3, 4, 4, dtype=torch.uint8), 1)]
    return decoded(images, lambda x: x, (4, 4), {"dataset": "two", "n": 2}, cache, "two images", workers=0)


@pytest.mark.parametrize("where", ["decoded", "decoded/KEY.lock"])
def test_a_decoded_cache_writes_through_no_link(where, tmp_path):
    cache = tmp_path / "cache"
    data, key = _decode(cache)
    assert np.asarray(data.images).shape == (2, 3, 4, 4)
    for path in sorted((cache / "decoded").iterdir(), reverse=True):  # the cache gone, to be built again
        (__import__("shutil").rmtree(path) if path.is_dir() else path.unlink())
    if where == "decoded":
        (cache / "decoded").rmdir()
    link = planted(tmp_path, cache / where.replace("KEY", key), "file" if where.endswith(".lock") else "folder")
    with pytest.raises(UserError, match="is a symbolic link to"):
        _decode(cache)
    assert link.untouched()


# ---- figures, tables, frontier and audit folders ---------------------------------------------------------
@pytest.mark.parametrize("command,where", [("plot", "figures"), ("plot", "figures/tradeoff_resnet50.png"),
                                           ("plot-out-dir", "elsewhere"), ("table", "tables"),
                                           ("table", "REPRODUCIBILITY.md")])
def test_figures_and_tables_are_written_through_no_link(command, where, tmp_path):
    results = tmp_path / "results"
    write_run(results, "r0", seed=0)
    write_run(results, "r1", seed=1, target_acc=0.7)
    link = planted(tmp_path, tmp_path / where if command == "plot-out-dir" else results / where,
                   "file" if "." in where else "folder")
    args = [command.split("-")[0], "--results-dir", str(results)]
    res = runner.invoke(app, args + (["--out-dir", str(link.at)] if command == "plot-out-dir" else []))
    one_line(res, str(link.at), "is a symbolic link to")
    assert link.untouched()


def test_figures_onto_a_file_are_one_line(tmp_path):
    results = tmp_path / "results"
    write_run(results, "r0")
    (tmp_path / "a-file").write_text("x")
    res = runner.invoke(app, ["plot", "--results-dir", str(results), "--out-dir", str(tmp_path / "a-file")])
    one_line(res, f"cannot make folder {tmp_path / 'a-file'}: a part of that path is a file")
    assert (tmp_path / "a-file").read_text() == "x"


@pytest.mark.parametrize("command,where", [("frontier", "frontier"), ("frontier", "frontier/gratings-demo"),
                                           ("weights", "audit")])
def test_frontier_and_audit_folders_are_checked_before_anything_runs(command, where, tmp_path, tiny):
    link = planted(tmp_path, Path(tiny["results_dir"]) / where)
    sets = [a for k, v in tiny.items() if k != "results_dir" for a in ("--set", f"{k}={v}")]
    res = runner.invoke(app, [command, "--dataset", "gratings", "--results-dir", tiny["results_dir"], *sets])
    one_line(res, "is a symbolic link to")
    assert link.untouched() and not (Path(tiny["results_dir"]) / "runs").exists()  # nothing ran


# ---- split files and the checked-images markers ------------------------------------------------------------
@pytest.mark.parametrize("where,kind", [("data/flowvision-split-seed0-r0.8.json", "dangling"),
                                        ("data/flowvision-split-seed0-r0.8.json", "file"),
                                        ("cache/checked", "folder")])
def test_split_files_and_markers_are_written_through_no_link(where, kind, tmp_path):
    from flowvision.data.folder import load_folder_task
    from test_folder import write_classes

    data = write_classes(tmp_path / "data", per_class=3)
    link = planted(tmp_path, tmp_path / where, kind)
    with pytest.raises(UserError) as err:
        load_folder_task(f"folder:{data}", image_size=16, cache_dir=tmp_path / "cache")
    # a link to a file is read (never written): the sentinel is no split, and says so
    assert ("is unreadable" if kind == "file" else "is a symbolic link to") in str(err.value), err.value
    assert link.untouched()


# ---- exports --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("where,kind", [("out", "folder"), ("out/model.safetensors", "file"),
                                        ("out/README.md", "dangling"), ("out/.export-PID.tmp", "folder")])
def test_an_export_writes_through_no_link(where, kind, tmp_path, demo_run):
    link = planted(tmp_path, tmp_path / where.replace("PID", str(os.getpid())), kind)
    res = runner.invoke(app, ["export", str(demo_run), "--out", str(tmp_path / "out")])
    one_line(res, str(link.at), "is a symbolic link to")
    assert link.untouched()
    assert not (tmp_path / "out" / "config.json").exists()


def test_export_from_inside_the_run_folder_reads_the_store_beside_it(tmp_path, demo_run):
    """``export .`` used to look for the store under ./cache and blame a pruned stage file."""
    cwd = os.getcwd()
    os.chdir(demo_run)
    try:
        res = runner.invoke(app, ["export", ".", "--out", str(tmp_path / "out")])
    finally:
        os.chdir(cwd)
    assert res.exit_code == 0, res.output
    meta = json.loads((tmp_path / "out" / "config.json").read_text())
    assert meta["num_classes"] == 8
