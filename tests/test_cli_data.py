"""`flowvision data status|download` and the library functions behind them (no network used)."""
from __future__ import annotations

import pickle
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from flowvision.cli.data import data_app
from flowvision.data.fetch import data_status, download, how_to_get, resolve_data_root, resolve_imagenet
from flowvision.data.specs import REAL_TASKS
from flowvision.core.errors import UserError

WIDE = {"COLUMNS": "250"}


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWVISION_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("FLOWVISION_DATA", raising=False)
    monkeypatch.delenv("FLOWVISION_IMAGENET", raising=False)


def write_cifar10(root: Path, n=3) -> None:
    folder = root / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{b}" for b in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({"data": np.zeros((n, 3072), np.uint8), "labels": [1] * n}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)


def test_data_root_resolution_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_data_root(None) == tmp_path / "data"
    monkeypatch.setenv("FLOWVISION_DATA", "/env/data")
    assert resolve_data_root(None) == Path("/env/data")
    assert resolve_data_root("/cli/data") == Path("/cli/data")
    assert resolve_imagenet(None) is None
    monkeypatch.setenv("FLOWVISION_IMAGENET", "/env/val")
    assert resolve_imagenet(None) == Path("/env/val") and resolve_imagenet("rel") == tmp_path / "rel"


def test_status_of_an_empty_root_lists_every_data_set_and_how_to_get_it(tmp_path):
    rows = data_status(tmp_path)
    assert [r["name"] for r in rows] == list(REAL_TASKS) + ["imagenet"]
    assert not any(r["found"] for r in rows) and all(r["n_train"] is None for r in rows)
    by_name = {r["name"]: r for r in rows}
    assert by_name["cifar10"]["how_to_get"] == f"flowvision data download cifar10 --data-root {tmp_path}"
    assert by_name["cifar10"]["path"] == str(tmp_path / "cifar10")
    assert by_name["stanford_dogs"]["how_to_get"].endswith(
        f"`flowvision data prepare stanford_dogs --images images.tar --lists lists.tar --data-root {tmp_path}`")
    assert by_name["stanford_cars"]["how_to_get"].endswith(
        f"`flowvision data prepare stanford_cars --archive FILE --data-root {tmp_path}`")
    assert ("`flowvision data prepare imagenet --val-tar ILSVRC2012_img_val.tar --devkit ILSVRC2012_devkit_t12.tar.gz "
            "--out DIR` and pass --imagenet DIR") in by_name["imagenet"]["how_to_get"]
    assert list(tmp_path.iterdir()) == []  # looking leaves nothing behind


def test_status_counts_what_is_there_and_explains_what_is_broken(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "stanford_cars" / "train").mkdir(parents=True)
    rows = {r["name"]: r for r in data_status(tmp_path)}
    assert rows["cifar10"]["found"] and (rows["cifar10"]["n_train"], rows["cifar10"]["n_test"]) == (15, 3)
    assert rows["cifar10"]["problem"] is None
    assert not rows["stanford_cars"]["found"]
    assert "stanford_cars under" in rows["stanford_cars"]["problem"]
    assert "incomplete" in rows["stanford_cars"]["problem"]


def test_status_command_prints_the_table(tmp_path):
    write_cifar10(tmp_path)
    result = CliRunner().invoke(data_app, ["status", "--data-root", str(tmp_path)], env=WIDE)
    assert result.exit_code == 0, result.output
    cells = {}
    for line in result.output.splitlines():
        if line.count("│") == 7:
            row = [c.strip() for c in line.split("│")[1:-1]]
            cells[row[0]] = row
    assert list(cells) == list(REAL_TASKS) + ["imagenet"]
    assert cells["cifar10"] == ["cifar10", "yes", "10", "15", "3", "cifar10/"]  # under the data root named above it
    assert cells["cifar100"][1:5] == ["no", "-", "-", "-"]
    steps = result.output.splitlines()
    assert f"cifar100: flowvision data download cifar100 --data-root {tmp_path}" in steps
    assert not any(line.startswith("cifar10:") for line in steps)  # found: no steps printed


def test_status_checks_an_imagenet_folder_when_given(tmp_path):
    (tmp_path / "val" / "tench").mkdir(parents=True)
    result = CliRunner().invoke(data_app, ["status", "--data-root", str(tmp_path), "--imagenet",
                                           str(tmp_path / "val")], env=WIDE)
    assert result.exit_code == 0
    row = data_status(tmp_path, imagenet=tmp_path / "val")[-1]
    assert row["name"] == "imagenet" and not row["found"] and "first unexpected folder 'tench'" in row["problem"]
    assert "first unexpected folder 'tench'" in " ".join(result.output.split())


@pytest.mark.parametrize("name", ["stanford_cars", "stanford_dogs", "imagenet"])
def test_manual_data_sets_name_where_to_get_them_and_the_prepare_command(tmp_path, name):
    result = CliRunner().invoke(data_app, ["download", name, "--data-root", str(tmp_path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    message = " ".join(result.output.split())
    assert message.startswith(f"error: {name} cannot be downloaded automatically; download ")
    assert f"`flowvision data prepare {name} --" in message
    assert " ".join(how_to_get(name, tmp_path).split()) in message
    assert list(tmp_path.iterdir()) == []


def test_unknown_name_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="unknown data set 'mnist': choose one of cifar10, cifar100"):
        download("mnist", tmp_path)


def test_download_without_network_is_one_line_and_leaves_no_folder(tmp_path, monkeypatch):
    # Route every request through a closed local port: fails at once, online or not.
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    urllib.request.install_opener(urllib.request.build_opener())  # picks up the proxy variables
    root = tmp_path / "new-root"
    try:
        start = time.time()
        with pytest.raises(UserError) as e:
            download("cifar10", root)
    finally:
        urllib.request.install_opener(None)
    message = str(e.value)
    assert time.time() - start < 30
    assert message.startswith("could not download cifar10: ") and "\n" not in message
    assert "check your network or fetch it manually: https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" \
        in message and f"{root}/cifar10/cifar-10-batches-py/" in message
    assert not root.exists()


def test_failed_download_keeps_the_files_already_there(tmp_path, monkeypatch):
    # Generated batches are not the official ones (md5), so torchvision tries to fetch the archive.
    write_cifar10(tmp_path)
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    urllib.request.install_opener(urllib.request.build_opener())
    try:
        with pytest.raises(UserError, match="could not download cifar10"):
            download("cifar10", tmp_path)
    finally:
        urllib.request.install_opener(None)
    assert (tmp_path / "cifar10" / "cifar-10-batches-py" / "test_batch").is_file()  # nothing deleted
