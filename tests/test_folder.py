"""A folder of the user's own images as a data set (``--dataset folder:PATH``) and the export of a run
(``flowvision export``): both layouts and their split, images of every common mode, the fingerprint
that keys the stages, bad folders (one line, exit 2, nothing written outside the results folder),
the default config, and an export that timm loads alone with the logits flowvision measured."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from flowvision.core import config, identity
from flowvision.stages import pipeline
from flowvision.cli import app
from flowvision.data.folder import IMAGE_SUFFIXES, FolderImages, load_folder_task, scan
from flowvision.core.errors import UserError
from test_hostile import _fails_cleanly

runner = CliRunner()
KINDS = ("rgb.jpg", "exif.jpeg", "grey.png", "deep.png", "rgba.png", "palette.bmp")  # one image of each mode


def write_image(path: Path, kind: str, label: int, i: int) -> None:
    """A small image of ``kind`` (KINDS): RGB JPEG, EXIF-rotated JPEG, greyscale, 16-bit greyscale,
    RGBA or palette; sizes vary between 16 and 30 px, colours follow the label."""
    rng = np.random.default_rng(100 * label + i)
    h, w = 16 + (3 * i) % 11, 18 + (5 * i) % 13
    rgb = (rng.integers(0, 50, (h, w, 3)) + np.array([90 * label, 60, 200 - 70 * label])).clip(0, 255).astype(np.uint8)
    im = Image.fromarray(rgb)
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "exif.jpeg":
        exif = Image.Exif()
        exif[0x0112] = 6  # "rotate 90° to display"
        im.save(path, exif=exif)
    elif kind == "grey.png":
        im.convert("L").save(path)
    elif kind == "deep.png":
        Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(path)  # mode I;16
    elif kind == "rgba.png":
        im.convert("RGBA").save(path)
    elif kind == "palette.bmp":
        im.convert("P").save(path)
    else:
        im.save(path)


def write_classes(root: Path, classes=("cat", "dog", "eel"), per_class=6) -> Path:
    for label, name in enumerate(classes):
        for i in range(per_class):
            kind = KINDS[i % len(KINDS)]
            write_image(root / name / f"{i:02d}-{kind}", kind, label, i)
    return root


def write_split(root: Path, train=("cat", "dog"), test=("cat", "dog"), test_folder="test") -> Path:
    write_classes(root / "train", train, per_class=3)
    write_classes(root / test_folder, test, per_class=2)
    return root


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A randomly initialised timm test_resnet (a tiny ResNet) with an IN-1K head, as a weights file."""
    torch.manual_seed(0)
    import timm

    path = tmp_path_factory.mktemp("weights") / "test_resnet.safetensors"
    save_file({k: v.contiguous() for k, v in timm.create_model("test_resnet", num_classes=1000).state_dict().items()},
              str(path))
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Unlabelled photos of what must not be forgotten (--source-eval)."""
    root = tmp_path_factory.mktemp("photos")
    for i, kind in enumerate(KINDS[:4]):
        write_image(root / f"{i}-{kind}", kind, 3, i)
    return root


def finetune_args(data: Path, results: Path, weights: Path, photos: Path, *extra) -> list:
    return ["finetune", "--dataset", f"folder:{data}", "--model", "test_resnet", "--weights", str(weights),
            "--source-eval", str(photos), "--results-dir", str(results), "--cache-dir", str(results / "fvcache"),
            "--device", "cpu", "--set", "image_size=16", "--set", "epochs=1", "--set", "probe_epochs=1",
            "--set", "refit_epochs=1", "--set", "batch_size=8", *extra]


# ---- layouts, modes, the split -------------------------------------------------------------------
def test_class_folders_are_split_seeded_stratified_once_and_the_split_is_recorded(tmp_path):
    data = write_classes(tmp_path / "birds")
    task = load_folder_task(f"folder:{data}", image_size=16, cache_dir=tmp_path / "cache")
    split_file = data / "flowvision-split-seed0-r0.8.json"
    assert task.info["split_file"] == str(split_file) and task.info["classes"] == ["cat", "dog", "eel"]
    split = json.loads(split_file.read_text())
    assert (len(task.train), len(task.test), task.num_classes) == (15, 3, 3)  # round(0.8 × 6) = 5 of 6 per class
    assert sorted(r.split("/")[0] for r in split["test"]) == ["cat", "dog", "eel"]
    assert not set(split["train"]) & set(split["test"])
    assert [task.train[i][1] for i in range(len(task.train))] == [0] * 5 + [1] * 5 + [2] * 5
    # another seed or ratio: another file; the same seed again: the file as it is (an edit is kept)
    other = load_folder_task(f"folder:{data}", image_size=16, seed=1, split_ratio=0.5, cache_dir=tmp_path / "cache")
    assert Path(other.info["split_file"]).name == "flowvision-split-seed1-r0.5.json" and len(other.test) == 9
    moved = split["test"].pop()
    split["train"].append(moved)
    split_file.write_text(json.dumps(split))
    assert len(load_folder_task(f"folder:{data}", image_size=16, cache_dir=tmp_path / "cache").train) == 16
    write_image(data / "cat" / "new.png", "rgb.jpg", 0, 9)  # new images make the written split stale: said, not redone
    with pytest.raises(UserError, match=r"split file .*flowvision-split-seed0-r0.8.json is not a split of the images .*1 new"):
        load_folder_task(f"folder:{data}", image_size=16, cache_dir=tmp_path / "cache")


def test_train_and_test_folders_are_the_split_and_val_stands_in_for_test(tmp_path):
    listing = scan(write_split(tmp_path / "a"))
    assert listing.layout == "split" and listing.classes == ("cat", "dog") and listing.test_folder == "test"
    assert len(listing.train) == 6 and len(listing.test) == 4 and listing.train[0][0].startswith("train/cat/")
    write_split(tmp_path / "b", test_folder="val")
    task = load_folder_task(f"folder:{tmp_path / 'b'}", image_size=16, cache_dir=tmp_path / "cache")
    assert task.info["split"] == "train/ and val/ folders" and (len(task.train), len(task.test)) == (6, 4)
    assert not list((tmp_path / "b").glob("flowvision-split-*"))  # nothing written beside a given split


def test_every_common_mode_becomes_rgb_as_torchvision_reads_it(tmp_path):
    from torchvision.datasets.folder import IMG_EXTENSIONS

    assert IMAGE_SUFFIXES == IMG_EXTENSIONS
    data = write_classes(tmp_path / "d", per_class=len(KINDS))
    modes = {p.name.split("-")[1]: Image.open(p).mode for p in (data / "cat").iterdir()}
    assert modes == {"rgb.jpg": "RGB", "exif.jpeg": "RGB", "grey.png": "L", "deep.png": "I;16", "rgba.png": "RGBA",
                     "palette.bmp": "P"}
    listing = scan(data)
    images = FolderImages(listing.root, listing.train, listing.classes)
    for i, (rel, label) in enumerate(listing.train):
        image, got = images[i]
        assert image.mode == "RGB" and got == label
        assert image.size == Image.open(data / rel).size  # EXIF orientation is not applied (as torchvision)
    task = load_folder_task(f"folder:{data}", image_size=16, cache_dir=tmp_path / "cache")
    x, _, _ = task.train_eval[0]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32


def test_the_decoded_cache_serves_a_folder_and_a_changed_image_rekeys_what_read_it(tmp_path):
    data = write_classes(tmp_path / "d", per_class=3)
    load = lambda: load_folder_task(f"folder:{data}", image_size=16, data_path="device",  # noqa: E731
                                    cache_dir=tmp_path / "cache")
    first = load()
    assert first.train.batch_transform is not None and first.train[0][0].dtype == torch.uint8
    assert first.train_eval.batch_transform(first.train_eval[0][0][None]).shape == (1, 3, 16, 16)
    assert load().info == first.info  # the same files: the same keys, the caches reused
    write_image(data / "dog" / "01-exif.jpeg", "rgb.jpg", 2, 7)  # one image rewritten
    changed = load()
    assert changed.info["fingerprint"] != first.info["fingerprint"]
    assert changed.info["decoded_train"] != first.info["decoded_train"]
    cfg = config.resolve(f"folder:{data}", "test_resnet", "flow", {"weights": "w.safetensors"})
    keys = [pipeline.plan(cfg, {"task": t.info, "source": "src", "source_data": "imgs"}) for t in (first, changed)]
    reads_task = {n for n in keys[0] if n not in ("task", "source", "source_data", "source_eval", "weights")}
    assert reads_task and all(keys[0][n] != keys[1][n] for n in reads_task | {"task"})
    assert keys[0]["source_eval"] == keys[1]["source_eval"]


# ---- bad folders: one line naming the path, exit 2, nothing written outside the results folder ---------
def _bad(tmp: Path, case: str) -> tuple[Path, Path]:
    """(the folder to pass, the path the error must name) for each kind of bad folder."""
    data = tmp / "data"
    if case == "missing":
        return data, data
    if case == "a file":
        (tmp / "photos.zip").write_bytes(b"PK")
        return tmp / "photos.zip", tmp / "photos.zip"
    if case == "train without test":
        write_classes(data / "train", ("cat", "dog"), 2)
        return data, data
    if case == "different classes":
        write_split(data, test=("cat", "eel"))
        return data, data
    write_classes(data, ("cat", "dog") if case != "one class" else ("cat",), 2)
    if case == "one class":
        return data, data
    bad = data / "dog" / "bad.jpg"
    if case == "class without images":
        shutil.rmtree(data / "dog")
        (data / "dog").mkdir()
        (data / "dog" / "notes.txt").write_text("not an image")
        return data, data / "dog"
    if case == "one image to split":
        shutil.rmtree(data / "dog")
        write_image(data / "dog" / "only.png", "grey.png", 1, 0)
        return data, data / "dog"
    if case == "undecodable":
        bad.write_bytes(os.urandom(300))
    elif case == "truncated":
        write_image(bad, "rgb.jpg", 1, 5)
        bad.write_bytes(bad.read_bytes()[:200])
    elif case == "0 bytes":
        bad.write_bytes(b"")
    elif case == "fifo":
        os.mkfifo(bad)
    elif case == "symlink loop":
        bad = data / "dog" / "again"
        bad.symlink_to(data, target_is_directory=True)
    elif case == "self link":
        bad = data / "dog" / "self.png"
        bad.symlink_to(bad)
    return data, bad


BAD = [("missing", "does not exist"), ("a file", "is not a folder"), ("one class", "holds one class folder ('cat')"),
       ("class without images", "class folder holds no image"), ("one image to split", "needs at least 2 per class"),
       ("train without test", "holds train/ but no test/ or val/"), ("different classes", "'dog' is only in train/"),
       ("undecodable", "bad.jpg not an image PIL can read"), ("truncated", "bad.jpg cut short"),
       ("0 bytes", "is empty (0 bytes)"), ("fifo", "is not a regular file"),
       ("symlink loop", "is a symlink loop"), ("self link", "is a symlink loop")]


@pytest.mark.parametrize("case,message", BAD, ids=[c for c, _ in BAD])
def test_a_bad_folder_is_one_line_naming_the_path_and_exit_2(case, message, tmp_path, weights, photos):
    data, named = _bad(tmp_path, case)
    text = _fails_cleanly(finetune_args(data, tmp_path / "results", weights, photos), message, tmp_path)
    assert str(named) in " ".join(text.splitlines()[-1].split())
    assert not list(data.glob("flowvision-split-*")) if data.is_dir() else True


# ---- a split file is checked against its folder ----------------------------------------------------------
def _edit_split(data: Path, edit) -> Path:
    """The split file of ``data`` (written by a first load), changed by ``edit(split)``."""
    load_folder_task(f"folder:{data}", image_size=16, cache_dir=data.parent / "cache")
    path = data / "flowvision-split-seed0-r0.8.json"
    split = json.loads(path.read_text())
    path.unlink()
    if edit is None:
        os.mkfifo(path)
    else:
        path.write_text(json.dumps(edit(split)))
    return path


SPLIT_EDITS = {  # (edit, what the one line says)
    "a leak": (lambda s: dict(s, train=s["train"] + s["test"][:1]), "in both train and test"),
    "a duplicate": (lambda s: dict(s, train=s["train"] + s["train"][:1]), "twice in train"),
    "a class only tested": (lambda s: dict(s, train=[r for r in s["train"] if not r.startswith("dog/")],
                                           test=s["test"] + [r for r in s["train"] if r.startswith("dog/")]),
                            "no image of class 'dog' is in train"),
    "an empty test side": (lambda s: dict(s, train=s["train"] + s["test"], test=[]), "its test side is empty"),
    "an empty train side": (lambda s: dict(s, train=[], test=s["train"] + s["test"]), "is in train"),
    "a file gone": (lambda s: dict(s, train=s["train"] + ["cat/none.jpg"]), "1 gone, e.g. cat/none.jpg"),
    "not a list": (lambda s: dict(s, test="cat/00-rgb.jpg"), "not an object with a train and a test list"),
    "a list": (lambda s: [s["train"], s["test"]], "not an object with a train and a test list"),
    "a FIFO": (None, "not a regular file"),
}


@pytest.mark.parametrize("edit", list(SPLIT_EDITS))
def test_an_edited_split_file_is_one_line_naming_it(edit, tmp_path):
    """A leak, a duplicate, a class moved wholly to test, an empty side, a file that is gone, a file that is
    no split (or a FIFO, never opened): one line naming the file and the first problem, before anything runs."""
    data = write_classes(tmp_path / "birds", per_class=4)
    change, message = SPLIT_EDITS[edit]
    path = _edit_split(data, change)
    with pytest.raises(UserError) as err:
        load_folder_task(f"folder:{data}", image_size=16, cache_dir=tmp_path / "cache")
    assert str(path) in str(err.value) and message in str(err.value), err.value
    assert "delete it" in str(err.value) and "\n" not in str(err.value)


def test_an_edited_split_file_is_one_line_through_the_cli_and_deleting_it_asks_for_a_new_one(tmp_path, weights, photos):
    data = write_classes(tmp_path / "birds", per_class=4)
    path = _edit_split(data, SPLIT_EDITS["a leak"][0])
    _fails_cleanly(finetune_args(data, tmp_path / "results", weights, photos), "in both train and test",
                   tmp_path)
    path.unlink()
    task = load_folder_task(f"folder:{data}", image_size=16, cache_dir=tmp_path / "cache")
    split = json.loads(path.read_text())
    assert not set(split["train"]) & set(split["test"]) and len(task.train) + len(task.test) == 12


def test_a_file_linked_into_two_places_is_one_line(tmp_path):
    data = write_split(tmp_path / "pets")
    (data / "test" / "dog" / "again.jpg").symlink_to(next((data / "train" / "dog").iterdir()))
    with pytest.raises(UserError, match=r"test/dog/again.jpg and train/dog/.* are the same file"):
        scan(data)


def test_a_file_reached_twice_in_one_class_counts_once(tmp_path):
    data = write_classes(tmp_path / "pets", per_class=3)
    (data / "cat" / "same.jpg").symlink_to(next((data / "cat").iterdir()))
    (data / "cat" / "folder-again").symlink_to(data / "eel", target_is_directory=True)
    with pytest.raises(UserError, match="are the same file"):  # an eel image inside cat/ too: which class is it?
        scan(data)
    (data / "cat" / "folder-again").unlink()
    assert len(scan(data).train) == 9


# ---- folders of every size train, or end in one line ------------------------------------------------------
SIZES = range(1, 2 * 2 + 2)  # every training-split size n in 1 .. 2 × batch_size + 1, at batch_size 2


@pytest.mark.parametrize("n", [n if n in (1, 3) else pytest.param(n, marks=pytest.mark.slow) for n in SIZES])
def test_a_folder_of_any_size_trains_or_ends_in_one_line(n, tmp_path, weights, photos):
    """train/ with n images over two classes (n = 1: one class has none), batch size 2: a last batch of one
    (n = 3, 5) joins the one before instead of reaching BatchNorm in training mode alone; the record says so."""
    data = tmp_path / "data"
    write_classes(data / "train", ("cat",), (n + 1) // 2)
    write_classes(data / "train", ("dog",), n // 2)
    (data / "train" / "dog").mkdir(exist_ok=True)
    write_classes(data / "test", ("cat", "dog"), 1)
    args = [a if a != "batch_size=8" else "batch_size=2" for a in finetune_args(data, tmp_path / "results", weights, photos)]
    if n == 1:
        _fails_cleanly(args, "class folder holds no image", tmp_path)
        return
    res = runner.invoke(app, args)
    assert res.exit_code == 0, (res.output, res.exception)
    (run_dir,) = (tmp_path / "results" / "runs").iterdir()
    record = json.loads((run_dir / "result.json").read_text())
    assert record["target_data"]["n_train"] == n and record["target_data"]["last_batch"].startswith("a last batch of one")


def test_a_last_batch_of_one_joins_the_one_before_and_the_order_stays():
    from flowvision.data.base import epoch_order, fold_last, make_loader

    assert fold_last(list(range(5)), 2) == [[0, 1], [2, 3, 4]] and fold_last([7], 4) == [[7]]
    assert fold_last(list(range(6)), 2) == [[0, 1], [2, 3], [4, 5]]
    data = torch.utils.data.TensorDataset(torch.arange(9))
    for n, size in ((9, 4), (9, 2), (8, 4)):  # remainders 1, 1 and 0
        batches = [b[0].tolist() for b in make_loader(torch.utils.data.Subset(data, range(n)), size, shuffle=True, seed=3)]
        assert sum(batches, []) == epoch_order(n, 3) and min(map(len, batches)) > 1


# ---- skip_bad_images on a folder ---------------------------------------------------------------------------
def test_skip_bad_images_leaves_a_bad_image_of_a_folder_out_and_records_it(tmp_path):
    data = write_classes(tmp_path / "birds", per_class=4)
    (data / "dog" / "bad.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(UserError, match="bad.jpg not an image PIL can read"):
        load_folder_task(f"folder:{data}", image_size=16, cache_dir=tmp_path / "cache")
    task = load_folder_task(f"folder:{data}", image_size=16, cache_dir=tmp_path / "cache", skip_bad=True)
    assert task.info["skipped_images"] == ["dog/bad.jpg (not an image PIL can read)"]
    assert len(task.train) + len(task.test) == 12
    clean = load_folder_task(f"folder:{write_classes(tmp_path / 'clean', per_class=4)}", image_size=16,
                             cache_dir=tmp_path / "cache")
    assert "skipped_images" not in clean.info
    (data / "eel" / "00-rgb.jpg").write_bytes(b"")  # eel keeps 3 of its 4: still splits
    for name in ("01-exif.jpeg", "02-grey.png"):
        (data / "eel" / name).write_bytes(b"")
    (data / "flowvision-split-seed0-r0.8.json").unlink()
    with pytest.raises(UserError, match="class 'eel' keeps fewer than 2 usable images"):
        load_folder_task(f"folder:{data}", image_size=16, cache_dir=tmp_path / "cache", skip_bad=True)


# ---- hyper-parameters for a data set no config names -------------------------------------------------
def test_a_folder_gets_the_models_default_config_and_the_dry_run_says_so(tmp_path):
    data = write_classes(tmp_path / "my birds")
    trace = {}
    cfg = config.resolve(f"folder:{data}", None, "flow", trace=trace)
    assert cfg.model == "resnet18" and cfg.dataset == f"folder:{data}" and (cfg.epochs, cfg.lr) == (30, 0.01)
    assert trace["epochs"].endswith("configs/resnet18/default.yaml") and "Caltech-101" in cfg.hparams_note
    assert identity.run_id(cfg).startswith("my_birds-resnet18-flow-s0-")
    here = os.getcwd()
    os.chdir(tmp_path)
    try:  # a relative PATH is made absolute: the record names the folder wherever the run starts
        assert config.resolve("folder:my birds").dataset == f"folder:{data}"
    finally:
        os.chdir(here)
    from flowvision.stages.dryrun import dry_run

    plan = dry_run(cfg, trace)
    assert plan["files"][0]["found"] and plan["files"][0]["note"].startswith(
        "3 classes (class folders, seeded stratified split): 15 train / 3 test images")
    res = runner.invoke(app, ["finetune", "--dataset", f"folder:{data}", "--dry-run"])
    assert res.exit_code == 2, res.output  # the weights and ImageNet are not here: the run would stop on them
    text = " ".join(res.output.split())
    assert (f"no config file names folder:{data}: the values marked 'config file {config.CONFIG_DIR}"
            f"/resnet18/default.yaml' apply") in text and "Caltech-101's official ResNet-18 recipe" in text
    assert not list(data.glob("flowvision-split-*"))  # the dry run writes nothing
    with pytest.raises(UserError, match="split_ratio must lie strictly between 0 and 1"):
        config.resolve(f"folder:{data}", None, "flow", {"split_ratio": "1"})
    with pytest.raises(UserError, match="folder:PATH needs the path"):
        config.resolve("folder:", None, "flow")


def test_data_status_lists_a_folder_with_its_counts_or_its_problem(tmp_path):
    good, bad = write_classes(tmp_path / "good"), write_classes(tmp_path / "bad", ("cat",), 2)
    res = runner.invoke(app, ["data", "status", "--data-root", str(tmp_path / "none"), "--dataset", f"folder:{good}",
                              "--dataset", f"folder:{bad}"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert f"folder:{good} │ yes │ 3 │ 15 │ 3" in text and "holds one class folder ('cat')" in text  # classes, train, test
    assert f"folder:{good}: 3 classes, class folders, seeded stratified split, 15 train / 3 test images" in text


# ---- export ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished(tmp_path_factory, weights, photos) -> dict:
    """One FLOW run on a folder of mixed images, on the PIL data path (the reference timm's
    transform reproduces exactly), exported. Its source images go through the official transform
    (Resize(256), CenterCrop(224), ImageNet mean/std), not test_resnet's own (160 px, mean 0.5), so that a
    recipe rebuilding the source model with timm's default transform would not reproduce the record."""
    tmp = tmp_path_factory.mktemp("run")
    data = write_classes(tmp / "data")
    res = runner.invoke(app, finetune_args(data, tmp / "results", weights, photos, "--set", "data_path=pil",
                                           "--set", "num_workers=0", "--set", "imagenet_transform=official"))
    assert res.exit_code == 0, res.output
    (run_dir,) = (tmp / "results" / "runs").iterdir()
    res = runner.invoke(app, ["export", str(run_dir), "--out", str(tmp / "export")])
    assert res.exit_code == 0, res.output
    assert f'  timm.create_model("local-dir:{tmp / "export"}", pretrained=True)' in res.output.splitlines()
    return {"tmp": tmp, "data": data, "run_dir": run_dir, "out": tmp / "export",
            "record": json.loads((run_dir / "result.json").read_text())}


def _flowvision_logprobs(run_dir: Path) -> dict:
    """flowvision's own evaluation of the exported model on the test images, and of the model forgetting
    was measured on over the source images (evaluate.predict: log-softmax per image)."""
    from flowvision.methods import forgetting
    from flowvision.data import load_task
    from flowvision.methods.evaluate import predict
    from flowvision.reporting.export import reported_model

    model, source, _, cfg = reported_model(run_dir)
    measured = forgetting.measured_model(model, source.model, cfg.task_specific, restore=cfg.restore)
    images = forgetting.eval_set(cfg).dataset
    return {"test": predict(model, load_task(cfg).test, keep_logprobs=True).logprobs,
            "source": predict(measured, images, keep_logprobs=True).logprobs,
            "pretrained": predict(source.model, images, keep_logprobs=True).logprobs,
            "source_files": [p for p, _ in images.base.samples]}


# What a user runs with timm alone: no flowvision import anywhere in it.
TIMM_ALONE = r'''
import json, sys
import timm, timm.data, torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

out, test_files, source_files, result = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
cfg = json.load(open(f"{out}/config.json"))
model = timm.create_model(cfg["architecture"], pretrained=True, num_classes=cfg["num_classes"],
                          pretrained_cfg_overlay=dict(cfg["pretrained_cfg"], file=f"{out}/model.safetensors")).eval()
local = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))
x = torch.stack([transform(Image.open(p).convert("RGB")) for p in test_files])
# the source model: this model's shared tensors and the source parts, with a head of the source's classes
parts = load_file(f"{out}/source_parts.safetensors")
with safe_open(f"{out}/source_parts.safetensors", "pt") as f:
    meta = f.metadata()
source = timm.create_model(cfg["architecture"], num_classes=int(meta["num_classes"])).eval()
state = {k: v for k, v in load_file(f"{out}/model.safetensors").items() if k not in parts}
source.load_state_dict({**state, **parts})
source_tf = timm.data.create_transform(**json.loads(meta["data_config"]))  # the transform the run used
xs = torch.stack([source_tf(Image.open(p).convert("RGB")) for p in source_files])
default_tf = timm.data.create_transform(**timm.data.resolve_data_config(model=source))  # timm's own: not it
xd = torch.stack([default_tf(Image.open(p).convert("RGB")) for p in source_files])
with torch.no_grad():
    torch.save({"test": model(x), "local": local(x), "source": source(xs), "labels": cfg["label_names"],
                "default": source(xd), "flowvision_imported": "flowvision" in sys.modules}, result)
'''


def _check_timm_logits(got: dict, fv: dict, finished: dict) -> None:
    r = finished["record"]
    assert got["labels"] == ["cat", "dog", "eel"] and not got["flowvision_imported"]
    for key in ("test", "local"):
        assert torch.allclose(torch.log_softmax(got[key], 1), fv["test"], atol=1e-5, rtol=0), key
    # the official transform resizes the uint8 tensor, timm's the PIL image (3.8e-6 apart here; a grey level on a
    # few pixels at most), while timm's default transform for test_resnet (160 px, mean 0.5) is 0.46 apart
    assert torch.allclose(torch.log_softmax(got["source"], 1), fv["source"], atol=1e-4, rtol=0)
    assert not torch.allclose(torch.log_softmax(got["default"], 1), fv["source"], atol=1e-2, rtol=0)
    # and they are the predictions the run's forgetting numbers were measured on
    agreement = (got["source"].argmax(1) == fv["pretrained"].argmax(1)).double().mean().item()
    assert agreement == r["source_agreement"]


def _test_files(finished) -> list:
    split = json.loads(Path(finished["record"]["target_data"]["split_file"]).read_text())
    return [str(finished["data"] / rel) for rel in split["test"]]


def test_the_export_loads_with_timm_and_gives_flowvisions_logits(finished):
    """In this process (fast); the same script with no flowvision at all runs in the slow test below."""
    out = finished["out"]
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors",
                                                      "source_parts.safetensors"]
    fv = _flowvision_logprobs(finished["run_dir"])
    result = finished["tmp"] / "timm.pt"
    argv = sys.argv
    try:
        sys.argv = ["x", str(out), json.dumps(_test_files(finished)), json.dumps(fv["source_files"]), str(result)]
        exec(compile(TIMM_ALONE, "timm-alone", "exec"), {})
    finally:
        sys.argv = argv
    got = torch.load(result)
    got["flowvision_imported"] = False  # this process has it, of course; the slow test checks a fresh one
    _check_timm_logits(got, fv, finished)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architecture"] == "test_resnet" and cfg["num_classes"] == 3
    assert cfg["pretrained_cfg"]["input_size"] == [3, 16, 16] and cfg["pretrained_cfg"]["interpolation"] == "bilinear"
    parts = load_file(str(out / "source_parts.safetensors"))
    assert parts["fc.weight"].shape == (1000, 96) and any(k.endswith("running_mean") for k in parts)
    card = (out / "README.md").read_text()
    r = finished["record"]
    for needle in (r["run_id"], r["target_data"]["fingerprint"], "15 training / 3 test images", "flowvision finetune",
                   f"{100 * r['target_acc']:.2f} %", f"τ = {r['tau']:.4g}", "no labels, so no accuracy",
                   f"{100 * r['source_agreement']:.2f} %", "torch 2.", 'timm.create_model("local-dir:.", pretrained=True)',
                   f"fine-tuned on folder:data ({r['target_data']['fingerprint'][:8]})", "4 unlabelled photos"):
        assert needle in card, needle
    # a card is shared: no absolute path of the owner's (the images, the photos, the weights, the results)
    assert str(finished["tmp"]) not in card and "pytest-of-" not in card and "IN-1K" not in card, card


@pytest.mark.slow
def test_the_export_loads_in_a_fresh_process_with_timm_alone(finished):
    fv = _flowvision_logprobs(finished["run_dir"])
    result = finished["tmp"] / "fresh.pt"
    subprocess.run([sys.executable, "-c", TIMM_ALONE, str(finished["out"]), json.dumps(_test_files(finished)),
                    json.dumps(fv["source_files"]), str(result)], check=True, cwd=finished["tmp"],
                   env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    _check_timm_logits(torch.load(result), fv, finished)


@pytest.mark.parametrize("recipe", ["crop_jitter", "square_crop_jitter", "resize_square", "resize"])
def test_timm_rebuilds_each_recipes_eval_transform_from_the_exported_config(recipe):
    import timm.data

    from flowvision.data.recipes import recipe_pil_transforms, timm_eval_config
    from flowvision.data.specs import IMAGENET_MEAN, IMAGENET_STD

    rng = np.random.default_rng(0)
    size = (32, 32) if recipe == "resize" else (53, 41)  # CIFAR's recipe is for square images
    image = Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8))
    for s in (16, 32, 224):
        ours = recipe_pil_transforms(recipe, IMAGENET_MEAN, IMAGENET_STD, s, augment=False)[1](image)
        timms = timm.data.create_transform(**timm_eval_config(recipe, s, IMAGENET_MEAN, IMAGENET_STD))(image)
        assert ours.shape == timms.shape == (3, s, s) and torch.allclose(ours, timms, atol=1e-6), (recipe, s)


def test_the_command_in_the_model_card_is_the_runs_config(finished):
    cfg = config.read_run_config(finished["run_dir"] / "config.yaml")
    import shlex

    args = shlex.split(identity.finetune_command(cfg))[1:] + ["--dry-run"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert finished["run_dir"].name in res.output


def _copy(finished, tmp_path) -> Path:
    """A copy of the finished run's results folder (run folder and stage store) to damage."""
    shutil.copytree(finished["tmp"] / "results", tmp_path / "results")
    return tmp_path / "results" / "runs" / finished["run_dir"].name


@pytest.mark.parametrize("case,message", [
    ("no folder", "is not a run folder"), ("running", "is not finished (state: running, stage finetune)"),
    ("stage file gone", "the refit stage file of run"), ("stage file damaged", "is damaged"),
    ("wrong config", "is not the config of run"),
])
def test_an_unfinished_or_damaged_run_does_not_export(case, message, finished, tmp_path):
    run_dir = _copy(finished, tmp_path)
    refit = tmp_path / "results" / "cache" / "v2" / f"refit-{finished['record']['stage_keys']['refit']}.pt"
    if case == "no folder":
        run_dir = tmp_path / "results" / "runs" / "nothing"
    elif case == "running":
        (run_dir / "result.json").unlink()
        state = json.loads((run_dir / "state.json").read_text())
        (run_dir / "state.json").write_text(json.dumps(dict(state, status="running", stage="finetune")))
    elif case == "stage file gone":
        refit.unlink()
    elif case == "stage file damaged":
        data = bytearray(refit.read_bytes())
        data[-10] ^= 0xFF
        refit.write_bytes(bytes(data))
    elif case == "wrong config":
        text = (run_dir / "config.yaml").read_text()
        (run_dir / "config.yaml").write_text(text.replace("seed: 0", "seed: 1", 1))
    text = _fails_cleanly(["export", str(run_dir), "--out", str(tmp_path / "results" / "export")], message, tmp_path)
    assert "gone" in text if case == "stage file gone" else True
    assert not (tmp_path / "results" / "export" / "model.safetensors").exists()


# ---- grids and frontiers on folders ------------------------------------------------------------------
@pytest.mark.slow
def test_reproduce_and_frontier_run_on_folders(tmp_path, weights, photos):
    a, b = write_classes(tmp_path / "a", per_class=3), write_split(tmp_path / "b")
    common = ["--model", "test_resnet", "--weights", str(weights), "--source-eval", str(photos), "--results-dir",
              str(tmp_path / "results"), "--set", f"cache_dir={tmp_path / 'cache'}", "--set", "image_size=16",
              "--set", "epochs=1", "--set", "probe_epochs=1", "--set", "refit_epochs=1", "--set", "batch_size=8"]
    res = runner.invoke(app, ["reproduce", "--datasets", f"folder:{a},folder:{b}", "--methods", "flow", "--seeds", "1",
                              *common, "--dry-run"])
    assert res.exit_code == 0 and "inputs: every data set" in res.output, res.output
    res = runner.invoke(app, ["reproduce", "--datasets", f"folder:{a},folder:{b}", "--methods", "flow", "--seeds", "1",
                              *common])
    assert res.exit_code == 0 and "2 runs: 2 ran" in res.output, res.output
    names = sorted(p.name.split("-")[0] for p in (tmp_path / "results" / "runs").iterdir())
    assert names == ["a", "b"]
    res = runner.invoke(app, ["frontier", "--dataset", f"folder:{a}", "--lrs", "0.01", "--epochs", "1", "--taus",
                              "median", *common])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "results" / "frontier" / "a-test_resnet" / "frontier.png").is_file()
