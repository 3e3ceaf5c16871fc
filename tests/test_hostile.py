"""Hostile input, as a user who means harm (or just makes every mistake) would give it: every case
is one line naming what is wrong, exit code 2, no traceback, and nothing written outside the
results folder. Cases that are recoverable (a damaged record, a damaged stage file) recover."""
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from flowvision.cli import app
from flowvision.core.errors import UserError
from flowvision.data.imagenet import imagenet_synsets
from test_imagenet import write_val

runner = CliRunner()

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n" \
       "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nlr: [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"

# (what the config file holds, a fragment of the one-line error)
CONFIG_FILES = [
    ("alias-bomb", BOMB, "aliases (*name) are not allowed"),
    ("alias-known-key", "epochs: &e 3\nprobe_epochs: *e\n", "aliases (*name) are not allowed"),
    ("methods-int", "methods: 5\n", "'methods' must map method names"),
    ("methods-list", "methods: {flow: [lr]}\n", "methods.flow must be a mapping"),
    ("methods-unknown", "methods: {magic: {lr: 1}}\n", "methods.magic is not a method"),
    ("int-key", "1: 2\n", "config key 1 in"),
    ("nul", "epochs: 3\n\0\n", "holds a NUL byte"),
    ("binary", bytes(range(128, 256)), "is not UTF-8 text"),
    ("deep-list", "lr: " + "[" * 50_000 + "]" * 50_000 + "\n", "nested too deeply"),
    ("empty", "", "is empty"),
    ("blank", "  \n\n", "is empty"),
    ("truncated-scalar", "epo", "must hold a mapping of keys to values, not str"),
    ("list", "- 1\n- 2\n", "must hold a mapping of keys to values, not list"),
    ("bad-yaml", "epochs: [1,\n", "is not valid YAML"),
    ("python-object", "epochs: !!python/object/apply:os.system ['true']\n", "is not valid YAML"),
    ("unknown-key", "learning_rate: 0.1\n", "unknown config key learning_rate"),
    ("wrong-int", "data_seed: three\n", "'data_seed': 'three' is not an integer"),
    ("float-int", "data_seed: 2.5\n", "'data_seed': 2.5 is not an integer"),
    ("dict-value", "lr: {a: 1}\n", "'lr': {'a': 1} is not a number"),
    ("list-string", "normalize: [mean]\n", "'normalize': ['mean'] is not a string"),
    ("bool-int", "data_seed: true\n", "is not an integer"),
    ("identity", "dataset: cifar10\n", "'dataset' cannot be set in"),
    ("infinite-lr", "lr: .inf\n", "lr must be a finite number"),
    ("nan-momentum", "momentum: .nan\n", "momentum must be a finite number"),
    ("huge-subset", "imagenet_subset: 1000000000000\n", "imagenet_subset = 1000000000000 is beyond what one run"),
    ("too-large", "# " + "x" * (1 << 20) + "\n", "is larger than 1 MiB"),
]

# (arguments after `finetune`, a fragment of the one-line error)
OPTIONS = [
    (["--tau", "1e-320"], "below 1e-06, exp(-loss/τ) is 0"),
    (["--tau", "p100"], "a percentile is p1..p99"),
    (["--tau", "nan"], "τ must be a finite number > 0"),
    (["--tau", "inf"], "τ must be a finite number > 0"),
    (["--set", "tau=paper"], "--tau paper: the official run scripts give τ only for resnet18, not for demo"),
    (["--results-dir", ""], "results_dir cannot be empty"),
    (["--batch-size", "16", "--set", "batch_size=32"], "--batch-size 16 and --set batch_size=32 both set batch_size"),
    (["--seed", "3", "--set", "seed=4"], "both set seed"),
    (["--set", "epochs=1000000000000"], "is beyond what one run can hold or finish (limit 10000)"),
    (["--set", "demo_epochs=0"], "demo_epochs must be ≥ 1"),
    (["--seed", "100000000000000000000"], "seed must lie in 0 … 4294967295"),
    (["--seed", "-1"], "seed must lie in 0"),
    (["--set", "data_seed=-1"], "data_seed must lie in 0"),
    (["--set", "n_train=1000000000000"], "n_train = 1000000000000 is beyond"),
    (["--set", "image_size=100000"], "image_size = 100000 is beyond"),
    (["--set", "image_size=4"], "image_size must be ≥ 8 pixels"),
    (["--set", "batch_size=0"], "batch_size must be > 0"),
    (["--set", "lr=nan"], "lr must be a finite number"),
    (["--set", "weight_decay=inf"], "weight_decay must be a finite number"),
    (["--set", "momentum=1.5"], "momentum must lie in [0, 1)"),
    (["--set", "wise_alpha=2"], "WiSE-FT α must lie in [0, 1]"),
    (["--set", "wise_alphas=0,3"], "WiSE-FT α must lie in [0, 1]"),
    (["--set", "restore=magic"], "restore 'magic' is not valid"),
    (["--set", "weighting=none"], "weighting 'none' is not valid"),
    (["--set", "normalize=max"], "normalize 'max' is not valid"),
    (["--set", "imagenet_transform=fancy"], "imagenet_transform 'fancy' is not valid"),
    (["--set", "imagenet_subset=0"], "imagenet_subset must be ≥ 1"),
    (["--set", "probe_epochs=-1"], "probe_epochs must be ≥ 0"),
    (["--set", "num_workers=-1"], "num_workers must be ≥ 0"),
    (["--set", "l2sp_lambda=-1"], "l2sp_lambda must be ≥ 0"),
    (["--method", "ft", "--set", "epochs=0"], "fine-tunes: epochs must be ≥ 1"),
    (["--set", "=3"], "write key=value"),
    (["--set", "epochs"], "write key=value"),
    (["--set", "probe_bn_train=maybe"], "is not true or false"),
    (["--model", "../evil"], "model '../evil' is not a model name"),
    (["--model", "resnet18.../../x"], "is not a model name"),
    (["--model", "resnet18 --weights x"], "is not a model name"),
    (["--device", "cuda"], "no CUDA GPU is visible here"),
    (["--device", "tpu"], "is not a device"),
    (["--dataset", "../cifar10"], "unknown dataset"),
]


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory):
    return write_val(tmp_path_factory.mktemp("imagenet") / "val", imagenet_synsets(), per_class=1)


def _files(root: Path) -> set:
    return {p for p in root.rglob("*") if p.is_file()}


def _fails_cleanly(args, message, tmp_path, inputs=()):
    """Run the CLI in tmp_path; -> after checking exit 2, one line, the message, and no new file
    outside tmp_path/results."""
    before = _files(tmp_path)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        res = runner.invoke(app, args)
    finally:
        os.chdir(cwd)
    assert res.exit_code == 2, (args, res.output, res.exception)
    text = res.output.strip()
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert "Traceback" not in text and len(errors) == 1 and text.splitlines()[-1] == errors[0], text
    assert message in " ".join(errors[0].split()), text
    stray = {p for p in _files(tmp_path) - before if tmp_path / "results" not in p.parents}
    assert not stray, stray
    return text


def _base(tmp_path, tiny, leave_out=()):
    sets = [a for k, v in tiny.items() if k not in ("results_dir", "device", *leave_out) for a in ("--set", f"{k}={v}")]
    return ["finetune", "--results-dir", str(tmp_path / "results"), *sets]


@pytest.mark.parametrize("name,content,message", CONFIG_FILES, ids=[c[0] for c in CONFIG_FILES])
def test_a_hostile_config_file_is_one_line_and_exit_2(name, content, message, tmp_path, tiny):
    path = tmp_path / "cfg.yaml"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    _fails_cleanly([*_base(tmp_path, tiny), "--config", str(path)], message, tmp_path)


@pytest.mark.parametrize("where,message", [("missing", "does not exist"), ("folder", "is not a regular file"),
                                           ("/dev/zero", "is not a regular file")])
def test_a_config_path_that_is_no_file_is_one_line(where, message, tmp_path, tiny):
    path = {"missing": tmp_path / "none.yaml", "folder": tmp_path, "/dev/zero": Path("/dev/zero")}[where]
    _fails_cleanly([*_base(tmp_path, tiny), "--config", str(path)], message, tmp_path)


@pytest.mark.parametrize("args,message", OPTIONS, ids=[" ".join(a) for a, _ in OPTIONS])
def test_a_hostile_option_is_one_line_and_exit_2(args, message, tmp_path, tiny):
    # the hostile value replaces the tiny one: a key given twice is an error of its own
    hostile = {a.split("=")[0] for a in args if "=" in a}
    _fails_cleanly([*_base(tmp_path, tiny, tuple(hostile)), *args], message, tmp_path)


def _weights(tmp_path, kind) -> Path:
    path = tmp_path / {"garbage": "w.safetensors", "ints": "w.pth", "empty": "w.pth", "text": "w.pth",
                       "suffix": "w.txt", "pickle": "w.pth", "list": "w.pth"}[kind]
    if kind == "garbage":
        path.write_bytes(os.urandom(256))
    elif kind == "ints":
        torch.save({"conv1.weight": 1, "fc.bias": 2}, path)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("these are not weights\n")
    elif kind == "suffix":
        path.write_text("x")
    elif kind == "pickle":
        path.write_bytes(pickle.dumps(os.getcwd))  # would run code if unpickled without weights_only
    elif kind == "list":
        torch.save([torch.zeros(2)], path)
    return path


@pytest.mark.parametrize("kind,message", [
    ("garbage", "cannot be read as tensors"), ("ints", "does not hold a state dict"), ("empty", "is empty"),
    ("text", "cannot be read as tensors"), ("suffix", "unknown format '.txt'"),
    ("pickle", "cannot be read as tensors"), ("list", "does not hold a state dict"),
])
def test_a_hostile_weights_file_is_one_line_and_exit_2(kind, message, tmp_path, tiny, imagenet):
    path = _weights(tmp_path, kind)
    _fails_cleanly([*_base(tmp_path, tiny), "--model", "resnet18", "--weights", str(path), "--imagenet",
                    str(imagenet)], message, tmp_path)


def test_a_results_or_cache_folder_that_is_a_file_is_one_line(tmp_path, tiny):
    (tmp_path / "results").write_text("a file")
    args = [a for a in _base(tmp_path, tiny)]
    _fails_cleanly(args, "a part of that path is a file", tmp_path)
    (tmp_path / "results").unlink()
    (tmp_path / "cachefile").write_text("a file")
    args = [a.replace(f"cache_dir={tiny['cache_dir']}", f"cache_dir={tmp_path / 'cachefile'}") for a in args]
    _fails_cleanly(args, f"cannot make folder {tmp_path / 'cachefile' / 'demo'}", tmp_path)


def test_a_full_disk_through_the_cli_is_one_line_and_leaves_no_half_file(tmp_path, tiny, full_disk):
    full_disk()
    text = _fails_cleanly([*_base(tmp_path, tiny), "--method", "lp"], "no space left on the disk of", tmp_path)
    assert "free space there" in text
    assert not [p for p in _files(tmp_path) if p.name.endswith(".tmp") or p.name.endswith(".pt")]


@pytest.mark.parametrize("args,message", [
    (["table", "--results-dir", "{tmp}/none"], "does not exist"),
    (["cache", "--results-dir", "{tmp}/none"], "does not exist"),
    (["reproduce", "--model", "demo", "--datasets", "gratings", "--set", "seed=5", "--dry-run"], "use --seeds"),
    (["weights", "--dataset", "gratings", "--tau", "1e-300"], "below 1e-06"),
    (["demo", "--dataset", "cifar10"], "the demo runs on a synthetic target task"),
])
def test_other_commands_refuse_hostile_input_in_one_line(args, message, tmp_path):
    _fails_cleanly([a.replace("{tmp}", str(tmp_path)) for a in args], message, tmp_path)


def test_a_record_with_a_numeric_created_field_does_not_stop_table_or_plot(tmp_path, tiny):
    ok = runner.invoke(app, ["finetune", "--method", "lp",
                             *[a for k, v in tiny.items() for a in ("--set", f"{k}={v}")]])
    assert ok.exit_code == 0, ok.output
    (path,) = Path(tiny["results_dir"]).glob("runs/*/result.json")
    path.write_text(path.read_text().replace('"created": "', '"created": 17, "x": "'))
    for command in ("table", "plot"):
        res = runner.invoke(app, [command, "--results-dir", tiny["results_dir"]])
        assert res.exit_code == 0, res.output


@pytest.mark.parametrize("args,message", [
    (["weights", "--dataset", "gratings", "--tau", "1.0", "--set", "weighting=flow-online"],
     "the sample audit needs every training sample's weight"),
    (["reproduce", "--model", "demo", "--datasets", "gratings", "--launcher", "slurm", "--time", "bogus", "--dry-run"],
     "--time bogus: give minutes"),
    (["reproduce", "--model", "demo", "--datasets", "gratings", "--launcher", "slurm", "--time", "-5", "--dry-run"],
     "--time -5: give minutes"),
    (["reproduce", "--model", "demo", "--datasets", "gratings", "--launcher", "slurm", "--gpus", "0", "--dry-run"],
     "--gpus is for --launcher local"),
    (["reproduce", "--model", "demo", "--datasets", "gratings", "--gpus", "x,y", "--dry-run"],
     "--gpus x,y: give GPU numbers"),
])
def test_launcher_and_audit_options_are_checked_before_anything_runs(args, message, tmp_path, tiny):
    sets = [a for k, v in tiny.items() if k in ("image_size", "n_train", "n_test", "demo_n_train", "demo_n_test", "demo_epochs",
                                                 "cache_dir") for a in ("--set", f"{k}={v}")]
    _fails_cleanly([*args, *sets, "--set", f"results_dir={tmp_path / 'results'}"], message, tmp_path)


def test_pruning_beside_a_running_run_is_refused_and_a_text_pth_is_named(tmp_path, tiny, imagenet):
    import json as _json

    run = tmp_path / "results" / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "state.json").write_text(_json.dumps({"status": "running", "host": "elsewhere", "updated": 4e9}))
    _fails_cleanly(["cache", "--results-dir", str(tmp_path / "results"), "--prune"], "1 run under", tmp_path)
    text = tmp_path / "w.pth"
    text.write_text("not weights at all\n")
    _fails_cleanly([*_base(tmp_path, tiny), "--model", "resnet18", "--weights", str(text), "--imagenet", str(imagenet)],
                   "it is not a torch file of tensors", tmp_path)


# ==== second pass: images, decoded caches, weights, torchrun start-up, run folders, the smaller ones ====
def _image(path: Path, colour=(10, 20, 30), size=(12, 10)) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def _png_bomb() -> bytes:
    """A valid PNG header claiming 30,000 × 30,000 pixels (10 bytes of data): PIL's decompression bomb."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b""))


# kind -> (the file's name, what the one line says about it)
BAD_IMAGES = {
    "empty": ("bad.jpg", "bad.jpg (empty file)"),
    "text": ("bad.jpg", "bad.jpg (not an image PIL can read)"),
    "truncated": ("bad.jpg", "bad.jpg (cut short)"),
    "bomb": ("bad.png", "over PIL's decompression-bomb limit of 89,478,485 pixels"),
    "link-loop": ("bad.jpg", "bad.jpg (a link loop)"),
    "link-to-device": ("bad.jpg", "bad.jpg (not a regular file (a device))"),
    "dangling-link": ("bad.jpg", "bad.jpg (a dangling link, or gone)"),
    "fifo": ("bad.jpg", "bad.jpg (not a regular file (a FIFO))"),
    "unreadable": ("bad.jpg", "bad.jpg (cannot be opened: Permission denied)"),
}


def _bad_image(folder: Path, kind: str) -> Path:
    from io import BytesIO

    from PIL import Image

    path = folder / BAD_IMAGES[kind][0]
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("these are not pixels\n")
    elif kind == "truncated":
        buf = BytesIO()
        Image.new("RGB", (64, 48), (200, 10, 10)).save(buf, format="JPEG")
        path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    elif kind == "bomb":
        path.write_bytes(_png_bomb())
    elif kind == "link-loop":
        os.symlink(path.name, path)
    elif kind == "link-to-device":
        os.symlink("/dev/zero", path)
    elif kind == "dangling-link":
        os.symlink(folder / "nowhere.jpg", path)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "unreadable":
        _image(path)
        path.chmod(0)
    return path


_KINDS = [pytest.param(k, marks=pytest.mark.skipif(k == "unreadable" and os.geteuid() == 0,
                                                   reason="root reads a file of mode 000"))
          for k in BAD_IMAGES]


def _resnet(tmp_path, tiny, *extra, real=False):
    """finetune with resnet18 from a weights file that is never read: every case below stops before.
    ``real``: without the synthetic tasks' sizes."""
    stub = tmp_path / "w.safetensors"
    stub.write_bytes(b"never read")
    overridden = tuple(a.split("=")[0] for a in extra if "=" in a)  # a --set key given twice is its own error
    return [*_base(tmp_path, tiny, (("n_train", "n_test") if real else ()) + overridden), "--model", "resnet18",
            "--weights", str(stub), "--device", "cpu", *extra]


@pytest.mark.parametrize("kind", _KINDS)
def test_a_bad_image_in_a_source_eval_folder_is_one_line_naming_it(kind, tmp_path, tiny):
    folder = tmp_path / "photos"
    _image(folder / "a.jpg"), _image(folder / "b.jpg")
    _bad_image(folder, kind)
    text = _fails_cleanly(_resnet(tmp_path, tiny, "--source-eval", str(folder)), BAD_IMAGES[kind][1], tmp_path)
    assert f"1 of 3 images in source images at {folder} cannot be read" in " ".join(text.split())
    assert "skip_bad_images=true" in text and "--imagenet" not in text


@pytest.mark.parametrize("kind", _KINDS)
def test_a_bad_image_in_the_imagenet_folder_is_one_line_naming_it(kind, tmp_path, tiny):
    synsets = imagenet_synsets()
    val = tmp_path / "val"
    _image(val / synsets[0] / "a.JPEG"), _image(val / synsets[1] / "b.JPEG")
    _bad_image(val / synsets[1], kind)
    text = _fails_cleanly(_resnet(tmp_path, tiny, "--imagenet", str(val)), BAD_IMAGES[kind][1], tmp_path)
    assert f"1 of 3 images in ImageNet val at {val} cannot be read: {synsets[1]}/" in " ".join(text.split())


@pytest.fixture(scope="module")
def cars(tmp_path_factory):
    """A Stanford Cars tree (196 classes, one 12 × 10 JPEG per class and split), linked into each test."""
    root = tmp_path_factory.mktemp("cars")
    for split, blue in (("train", 40), ("test", 200)):
        for c in range(196):
            _image(root / "stanford_cars" / split / f"Car Model {c:03d}" / "0.jpg", ((c * 7) % 256, c % 256, blue))
    return root


def _linked(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst, copy_function=os.link)
    return dst


@pytest.mark.parametrize("kind", ["empty", "truncated", "link-to-device", "fifo"])
def test_a_bad_image_in_a_target_data_set_is_one_line_naming_it(kind, tmp_path, tiny, cars):
    data = _linked(cars, tmp_path / "data")
    _bad_image(data / "stanford_cars" / "test" / "Car Model 007", kind)
    _image(tmp_path / "photos" / "a.jpg")  # forgetting's images are there: the run stops at the bad one
    args = _resnet(tmp_path, tiny, "--dataset", "stanford_cars", "--data-root", str(data), "--source-eval",
                   str(tmp_path / "photos"), real=True)
    text = _fails_cleanly(args, BAD_IMAGES[kind][1], tmp_path)
    assert f"1 of 393 images in stanford_cars under {data / 'stanford_cars'} cannot be read: " \
           f"test/Car Model 007/bad.jpg" in " ".join(text.split())


def test_skipping_bad_images_goes_on_without_them_and_records_which(tmp_path, cars):
    """A FIFO and a link to a device among the images: read with a timeout (a FIFO that was opened
    would block for ever), skipped, named; the data sets hold the good images only."""
    import signal

    from flowvision.core import config
    from flowvision.methods import forgetting
    from flowvision.data import load_task

    photos = tmp_path / "photos"
    _image(photos / "a.jpg"), _image(photos / "b.png", size=(30, 20))
    _bad_image(photos, "fifo"), _bad_image(photos / "sub", "link-to-device")
    data = _linked(cars, tmp_path / "data")
    _bad_image(data / "stanford_cars" / "train" / "Car Model 001", "fifo")
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail("reading the image folders hung"))
    signal.alarm(60)
    try:
        cfg = config.resolve("stanford_cars", "resnet18", "ft", {
            "source_eval_dir": str(photos), "data_root": str(data), "data_path": "pil", "image_size": 16,
            "skip_bad_images": "true", "cache_dir": str(tmp_path / "cache"), "results_dir": str(tmp_path / "r")})
        images = forgetting.eval_set(cfg)
        assert [images.dataset[i][0].shape for i in range(len(images.dataset))] == [(3, 224, 224)] * 2
        assert images.info["imagenet_skipped"] == ["bad.jpg (not a regular file (a FIFO))",
                                                   "sub/bad.jpg (not a regular file (a device))"]
        assert "left out 2 unreadable images" in images.info["imagenet_warnings"][0]
        task = load_task(cfg)
        assert (len(task.train), len(task.test)) == (196, 196) and task.train[0][0].shape == (3, 16, 16)
        assert task.info["skipped_images"] == ["train/Car Model 001/bad.jpg (not a regular file (a FIFO))"]
    finally:
        signal.alarm(0)
    assert "skip_bad_images" not in config.KEYED_FIELDS  # the files left out key the stages (above), not the switch


def test_an_image_damaged_after_the_check_is_one_line_even_from_a_loader_worker(tmp_path):
    """The check passed, then the file was cut: reading it in a DataLoader worker (where torch rebuilds
    the exception from the worker's traceback text) still gives the one line naming the file."""
    from torch.utils.data import DataLoader

    from flowvision.data.images import ImageFiles, UnreadableImage, check_images

    paths = [_image(tmp_path / "a.jpg"), _image(tmp_path / "b.jpg", size=(64, 48))]
    assert check_images(paths, skip_bad=False, where="test").keep == [0, 1]
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: len(data) // 2])
    for workers in (0, 1):
        with pytest.raises(UnreadableImage) as caught:
            list(DataLoader(ImageFiles([(p, 0) for p in paths], transform=lambda im: torch.zeros(1)),
                            num_workers=workers))
        assert str(caught.value).splitlines() == [str(caught.value)] and "Traceback" not in str(caught.value)
        assert str(caught.value).startswith(f"image {paths[1]} cannot be decoded (")


def test_what_was_skipped_changes_the_evaluation_images_fingerprint(tmp_path):
    from flowvision.core import config
    from flowvision.methods import forgetting

    photos = tmp_path / "photos"
    _image(photos / "a.jpg"), _image(photos / "b.jpg", colour=(1, 2, 3))
    cfg = config.resolve("gratings", "resnet18", "ft", {"source_eval_dir": str(photos), "skip_bad_images": "true"})
    clean = forgetting.eval_set(cfg).fingerprint
    assert forgetting.eval_set(dataclasses_replace(cfg, skip_bad_images=False)).fingerprint == clean
    _bad_image(photos, "empty")
    assert forgetting.eval_set(cfg).fingerprint != clean


def dataclasses_replace(cfg, **changes):
    import dataclasses

    return dataclasses.replace(cfg, **changes)


# ---- decoded caches --------------------------------------------------------------------------------------
def test_a_decoded_cache_holding_another_split_is_moved_aside_and_rebuilt(tmp_path, tiny, cars, tiny_weights_file,
                                                                          capsys):
    """The train split's cache files replaced by the test split's: the header says so, the cache is
    moved aside with one warning and rebuilt, and the run's numbers are those of an undamaged run.
    (timm's test_resnet with the official ImageNet transform: the data path resnet18 takes, every cache decoded.)"""
    import json
    import shutil

    from flowvision.core import config
    from flowvision.stages.run import run as run_one

    synsets = imagenet_synsets()
    val = tmp_path / "val"
    for i in range(4):
        _image(val / synsets[i] / f"{i}.JPEG", (i * 50, 10, 10))

    def run(results):
        return run_one(config.resolve("stanford_cars", "test_resnet", "lp", dict(
            tiny, data_root=str(cars), data_path="device", image_size=16, cache_dir=str(tmp_path / "cache"),
            weights=str(tiny_weights_file), imagenet=str(val), imagenet_transform="official",
            results_dir=str(tmp_path / results), n_train=None, n_test=None)))
    undamaged = run("one")
    keys = undamaged["target_data"]["decoded_train"], undamaged["target_data"]["decoded_test"]
    train, test = (tmp_path / "cache" / "decoded" / k for k in keys)
    for name in ("images.npy", "labels.npy", "header.json"):
        shutil.copyfile(test / name, train / name)
    capsys.readouterr()
    rebuilt = run("two")  # a fresh results folder: every stage is computed again from the cache
    err = capsys.readouterr().err
    for key in ("target_acc", "source_acc_before", "source_acc_after", "source_agreement", "hard10_acc"):
        assert rebuilt[key] == undamaged[key], key
    assert err.count("was damaged") == 1 and f"{keys[0]} was damaged (it holds split 'test', the run asked for " \
                                                "'train')" in err
    assert json.loads((train / "header.json").read_text())["identity"]["split"] == "train"
    assert rebuilt["stages"]["probe"] == "computed"


def test_a_decoded_cache_folder_that_is_a_file_is_healed_and_one_over_the_decoded_folder_is_one_line(tmp_path):
    from torchvision.datasets import ImageFolder

    from flowvision.data.decoded import decoded, stored
    from flowvision.core.errors import UserError

    for i in range(3):
        _image(tmp_path / "photos" / f"c{i % 2}" / f"{i}.jpg", (i * 80, 0, 0))
    folder, store = ImageFolder(str(tmp_path / "photos")), stored("resize_square", 16)
    first, key = decoded(folder, store.prepare, store.size, {"split": "train"}, tmp_path / "cache", "t", workers=0)
    expected = np.array(first.images)
    import shutil

    shutil.rmtree(tmp_path / "cache" / "decoded" / key)
    (tmp_path / "cache" / "decoded" / key).write_text("not a folder")
    again, same = decoded(folder, store.prepare, store.size, {"split": "train"}, tmp_path / "cache", "t", workers=0)
    assert same == key and np.array_equal(again.images, expected)
    assert len(list((tmp_path / "cache" / "decoded").glob(f"{key}.damaged-*"))) == 1
    shutil.rmtree(tmp_path / "cache" / "decoded")
    (tmp_path / "cache" / "decoded").write_text("not a folder")
    with pytest.raises(UserError, match="cannot make folder .*decoded: a part of that path is a file"):
        decoded(folder, store.prepare, store.size, {"split": "train"}, tmp_path / "cache", "t", workers=0)


def test_a_decoded_folder_that_is_a_file_is_one_line_through_the_cli(tmp_path, tiny, cars):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "decoded").write_text("a file")
    _image(tmp_path / "photos" / "a.jpg")
    args = _resnet(tmp_path, tiny, "--dataset", "stanford_cars", "--data-root", str(cars), "--set",
                   f"cache_dir={tmp_path / 'cache'}", "--set", "data_path=device", "--source-eval",
                   str(tmp_path / "photos"), real=True)
    _fails_cleanly(args, f"cannot make folder {tmp_path / 'cache' / 'decoded'}: a part of that path is a file",
                   tmp_path)


# ---- weights: floating point, finite ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def r18_state():
    from flowvision.methods import models

    torch.manual_seed(0)
    return models.create("resnet18", 1000).state_dict()


def _spoiled(state: dict, kind: str) -> dict:
    state = {k: v.clone() for k, v in state.items()}
    if kind == "ints":
        return {k: (v * 100).to(torch.int32) if v.is_floating_point() else v for k, v in state.items()}
    state["layer2.0.conv1.weight"][0, 0, 0, 0] = {"nan": float("nan"), "inf": float("inf"), "-inf": -float("inf")}[kind]
    return state


WEIGHTS = [("ints", "tensor 'conv1.weight' holds int32, not floating-point numbers as resnet18's does"),
           ("nan", "tensor 'layer2.0.conv1.weight' holds 1 NaN or infinite value of 73728"),
           ("inf", "tensor 'layer2.0.conv1.weight' holds 1 NaN or infinite value"),
           ("-inf", "tensor 'layer2.0.conv1.weight' holds 1 NaN or infinite value")]


@pytest.mark.parametrize("kind,message", WEIGHTS, ids=[w[0] for w in WEIGHTS])
def test_weights_that_are_not_finite_floats_are_one_line(kind, message, tmp_path, tiny, imagenet, r18_state):
    path = tmp_path / "w.pth"
    torch.save(_spoiled(r18_state, kind), path)
    _fails_cleanly([*_base(tmp_path, tiny), "--model", "resnet18", "--weights", str(path), "--imagenet",
                    str(imagenet), "--device", "cpu"], message, tmp_path)


def test_a_nan_in_the_weights_cache_is_one_line(tmp_path, tiny, imagenet, r18_state):
    from safetensors.torch import save_file

    cache = tmp_path / "cache" / "weights"
    cache.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in _spoiled(r18_state, "nan").items()},
              str(cache / "resnet18.tv_in1k.safetensors"))
    _fails_cleanly([*_base(tmp_path, tiny, ("cache_dir",)), "--model", "resnet18", "--imagenet", str(imagenet),
                    "--device", "cpu", "--set", f"cache_dir={tmp_path / 'cache'}"], "holds 1 NaN or infinite value",
                   tmp_path)


@pytest.mark.parametrize("kind", ["ints", "nan"])
def test_import_weights_refuses_weights_that_are_not_finite_floats(kind, tmp_path, r18_state):
    path = tmp_path / "ckpt.pth"
    torch.save(_spoiled(r18_state, kind), path)
    _fails_cleanly(["import-weights", str(path), "--arch", "resnet18", "--out", str(tmp_path / "results" / "o.safetensors")],
                   dict(WEIGHTS)[kind].split(" as ")[0], tmp_path)
    assert not (tmp_path / "results" / "o.safetensors").exists()


@pytest.fixture(scope="module")
def tiny_state():
    """timm's test_resnet (1000 classes) as a checkpoint to import, for the tests of where the output goes: a 45 MB
    ResNet-18 read and written there would only cost time."""
    from flowvision.methods import models

    torch.manual_seed(0)
    return models.create("test_resnet", 1000).state_dict()


@pytest.mark.parametrize("where,message", [
    ("folder", "is a folder; give the name of a new .safetensors file"),
    ("unrelated", "exists and is not a file import-weights wrote"),
    ("under-a-file", "is a file, not a folder; choose another place"),
    ("proc", "cannot write into /proc"),
])
def test_import_weights_out_that_cannot_be_a_new_file_is_one_line(where, message, tmp_path, tiny_state):
    path = tmp_path / "ckpt.pth"
    torch.save(tiny_state, path)
    out = {"folder": tmp_path / "o.safetensors", "unrelated": tmp_path / "notes.safetensors",
           "under-a-file": tmp_path / "file" / "o.safetensors", "proc": Path("/proc/o.safetensors")}[where]
    if where == "folder":
        out.mkdir()
    elif where == "unrelated":
        out.write_text("my notes, not weights\n")
    elif where == "under-a-file":
        (tmp_path / "file").write_text("x")
    before = out.read_bytes() if out.is_file() else None
    _fails_cleanly(["import-weights", str(path), "--arch", "test_resnet", "--out", str(out)], message, tmp_path)
    assert before is None or out.read_bytes() == before


def test_import_weights_may_overwrite_its_own_output(tmp_path, tiny_state):
    path = tmp_path / "ckpt.pth"
    torch.save(tiny_state, path)
    args = ["import-weights", str(path), "--arch", "test_resnet", "--out", str(tmp_path / "o.safetensors")]
    assert runner.invoke(app, args).exit_code == 0
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "wrote" in again.output


# ---- torchrun start-up ---------------------------------------------------------------------------------------
def _free_port() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


DIST = [
    ({"WORLD_SIZE": "2"}, "WORLD_SIZE=2 asks for 2 processes, but RANK, MASTER_ADDR, MASTER_PORT are not set"),
    ({"WORLD_SIZE": "2", "RANK": "0"}, "but MASTER_ADDR, MASTER_PORT are not set: start the processes with torchrun"),
    ({"WORLD_SIZE": "abc"}, "WORLD_SIZE='abc': give a process count ≥ 1 (torchrun sets it)"),
    ({"WORLD_SIZE": "2", "RANK": "5", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"},
     "RANK='5' is not a rank of WORLD_SIZE=2"),
    ({"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "99999"},
     "MASTER_PORT='99999' is not a port"),
    ({"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500",
      "FLOWVISION_DIST_START_TIMEOUT_S": "soon"}, "FLOWVISION_DIST_START_TIMEOUT_S='soon': give a number of seconds"),
    ({"WORLD_SIZE": "2", "RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "free",
      "FLOWVISION_DIST_START_TIMEOUT_S": "0.5"}, "rank 1 of 2: the processes did not all join at 127.0.0.1:"),
    ({"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "free",
      "FLOWVISION_DIST_START_TIMEOUT_S": "0.5"}, "rank 0 of 2: the processes did not all join at 127.0.0.1:"),
]


@pytest.mark.parametrize("env,message", DIST, ids=["no-rendezvous", "rank-only", "world-abc", "rank-5", "port",
                                                   "timeout-words", "rank-0-never-started", "rank-1-never-joined"])
def test_a_torchrun_environment_without_a_working_rendezvous_is_one_line(env, message, tmp_path, tiny, monkeypatch):
    import time

    for name, value in env.items():
        monkeypatch.setenv(name, _free_port() if value == "free" else value)
    t0 = time.time()
    text = _fails_cleanly(_base(tmp_path, tiny), message, tmp_path)
    assert time.time() - t0 < 30 and "FLOWVISION_DIST_START_TIMEOUT_S" in text or "join" not in message
    assert "waiting for the other processes to join at 127.0.0.1:" in text or "join" not in message  # said while waiting
    from flowvision.core import distributed

    assert not distributed.initialised()


def test_the_start_up_timeout_is_minutes_and_the_long_waits_keep_a_day(monkeypatch):
    from flowvision.core import distributed

    monkeypatch.delenv("FLOWVISION_DIST_START_TIMEOUT_S", raising=False)
    monkeypatch.delenv("FLOWVISION_DIST_TIMEOUT_S", raising=False)
    assert distributed.start_timeout().total_seconds() == 600 and distributed._timeout().total_seconds() == 86400
    monkeypatch.setenv("FLOWVISION_DIST_START_TIMEOUT_S", "2.5")
    assert distributed.start_timeout().total_seconds() == 2.5


# ---- the smaller ones -----------------------------------------------------------------------------------------
SMALL = [
    (["demo", "--seeds", "1000000000000"], "--seeds 1000000000000: give a count of seeds from 1 to 1000"),
    (["reproduce", "--model", "demo", "--datasets", "gratings", "--seeds", "99999999999", "--dry-run"],
     "--seeds 99999999999: give a count of seeds"),
    (["frontier", "--seeds", "100000000"], "--seeds 100000000: give a count of seeds"),
    (["reproduce", "--model", "demo", "--datasets", "", "--dry-run"], "--datasets '' names nothing to run"),
    (["reproduce", "--model", "demo", "--datasets", " , ", "--dry-run"], "--datasets ' , ' names nothing to run"),
    (["reproduce", "--model", "demo", "--datasets", "gratings", "--methods", ",", "--dry-run"],
     "--methods ',' names nothing to run"),
]


@pytest.mark.parametrize("args,message", SMALL, ids=[" ".join(a[:1] + a[-3:]) for a, _ in SMALL])
def test_absurd_counts_and_empty_lists_are_one_line(args, message, tmp_path):
    _fails_cleanly([*args, "--set", f"results_dir={tmp_path / 'results'}"] if args[0] != "frontier" else
                   [*args, "--results-dir", str(tmp_path / "results")], message, tmp_path)


@pytest.mark.parametrize("value", ["abc", "0", "-3", "1.5"])
def test_a_bad_log_steps_variable_is_one_line(value, tmp_path, tiny, monkeypatch):
    monkeypatch.setenv("FLOWVISION_LOG_STEPS", value)
    _fails_cleanly(_base(tmp_path, tiny), f"FLOWVISION_LOG_STEPS={value!r}: give a whole number of steps", tmp_path)


@pytest.mark.parametrize("key", ["results_dir", "cache_dir", "weights", "imagenet", "data_root"])
def test_a_nul_byte_in_a_path_is_one_line(key, tmp_path, tiny):
    args = _base(tmp_path, tiny, (key,))
    args = [args[0], *args[3:]] if key == "results_dir" else args  # no --results-dir: it is set below
    _fails_cleanly([*args, "--set", f"{key}={tmp_path}/results/a\0b"], f"{key} holds a NUL byte", tmp_path)


def test_a_nul_byte_in_a_config_files_path_value_is_one_line(tmp_path, tiny):
    (tmp_path / "cfg.yaml").write_text('data_root: "/tmp/a\\0b"\n')
    _fails_cleanly([*_base(tmp_path, tiny), "--config", str(tmp_path / "cfg.yaml")], "data_root holds a NUL byte",
                   tmp_path)


@pytest.mark.parametrize("content,last", [("epochs: 3\nlr: 0.0", "lr: 0.0"),
                                          ("epochs: 2\nmethods:\n  flow:\n    lr: 0.01\n    tau: p", "tau: p"),
                                          ("epochs: 2\nlr:", "lr:")])
def test_a_config_file_cut_short_is_one_line(content, last, tmp_path, tiny):
    (tmp_path / "cfg.yaml").write_text(content)
    _fails_cleanly([*_base(tmp_path, tiny), "--config", str(tmp_path / "cfg.yaml")],
                   f"does not end with a newline, as a file cut short would not (its last line: {last!r})", tmp_path)


def test_sample_photos_onto_a_file_is_one_line(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "photos").write_text("a file")
    _fails_cleanly(["data", "sample-photos", str(tmp_path / "results" / "photos")], "is a file, not a folder",
                   tmp_path)


@pytest.mark.parametrize("layout,message", [
    ("extra-folder", "source images at {root} does not match the model's classes"),
    ("empty-synset", "source images at {root} is incomplete (1 class folders hold no image"),
])
def test_source_eval_errors_speak_of_source_eval_not_imagenet(layout, message, tmp_path, tiny):
    synsets = imagenet_synsets()
    root = tmp_path / "mine"
    _image(root / synsets[0] / "a.jpg")
    if layout == "extra-folder":
        _image(root / "holiday" / "b.jpg")
    else:
        (root / synsets[1]).mkdir()
    text = _fails_cleanly(_resnet(tmp_path, tiny, "--source-eval", str(root)), message.format(root=root), tmp_path)
    assert "--imagenet" not in text and "--source-eval" in text


# ---- run folders written by something else: skipped with one warning, never a crash or a long print -----------
STATES = {
    "status-number": '{"status": 5}',
    "updated-text": '{"status": "running", "updated": "yesterday", "host": "x", "pid": 1}',
    "huge-error": '{"status": "failed", "error": "' + "x" * (2 << 20) + '"}',
    "deep": "[" * 50_000 + "]" * 50_000,
    "host-list": '{"status": "running", "host": ["a"]}',
    "pid-huge": '{"status": "running", "pid": 100000000000000000000000000000, "host": "HERE"}',
    "a-list": "[1, 2]",
    "fifo": None,
}


@pytest.mark.parametrize("kind", list(STATES))
def test_status_skips_a_state_file_of_the_wrong_shape_with_one_warning(kind, tmp_path):
    import socket
    import time

    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    if STATES[kind] is None:
        os.mkfifo(run / "state.json")
    else:
        (run / "state.json").write_text(STATES[kind].replace("HERE", socket.gethostname()))
    t0 = time.time()
    res = runner.invoke(app, ["status", "--results-dir", str(tmp_path), "--all"])
    assert res.exit_code == 0 and "Traceback" not in res.output, res.output
    assert time.time() - t0 < 10 and len(res.output) < 5000
    warnings = [line for line in res.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "state.json" in " ".join(res.output.split()), res.output
    assert "1 incomplete" in res.output


RECORDS = {
    "deep": "[" * 50_000 + "]" * 50_000,
    "deep-field": None,  # a record whose weight_stats nests 500 levels
    "wise-shape": None,  # a record whose WiSE-FT points are numbers, not objects
    "huge": '{"run_id": "' + "x" * (5 << 20) + '"}',
    "nan-target": None,
    "fifo": None,
}


def _record(tmp_path: Path, kind: str) -> Path:
    import json

    from test_tables import write_run

    write_run(tmp_path, "good", target_acc=0.5)
    bad = write_run(tmp_path, "bad", seed=1, target_acc=0.6) / "result.json"
    if kind == "fifo":
        bad.unlink()
        os.mkfifo(bad)
    elif kind == "deep-field":
        obj = json.loads(bad.read_text())
        obj["weight_stats"] = json.loads('{"a": ' * 500 + "1" + "}" * 500)
        bad.write_text(json.dumps(obj))
    elif kind == "wise-shape":
        obj = json.loads(bad.read_text())
        obj["wise"] = [1, 2]
        bad.write_text(json.dumps(obj))
    elif kind == "nan-target":
        bad.write_text(bad.read_text().replace('"target_acc": 0.6', '"target_acc": NaN'))
    else:
        bad.write_text(RECORDS[kind])
    return bad


@pytest.mark.parametrize("command", ["table", "plot", "cache"])
@pytest.mark.parametrize("kind", list(RECORDS))
def test_readers_of_run_records_skip_a_bad_one_with_one_warning(kind, command, tmp_path, caplog):
    """table and plot warn through the runs frame's logger, cache on the console; a record whose only
    fault is one field (nested too deeply, of the wrong shape) is read without it (the cache command
    needs no note)."""
    import time

    bad = _record(tmp_path, kind)
    t0 = time.time()
    res = runner.invoke(app, [command, "--results-dir", str(tmp_path)])
    assert res.exit_code == 0 and "Traceback" not in res.output, res.output
    assert time.time() - t0 < 20 and len(res.output) < 100_000
    said = (res.output + caplog.text).splitlines()
    named = [line for line in said if str(bad) in line or "runs/bad/result.json" in line]
    note = {"deep-field": "ignored weight_stats (nested too deeply)", "wise-shape": "ignored wise (wrong shape)"}
    if kind in note:
        assert len(named) == (0 if command == "cache" else 1) and all(note[kind] in n for n in named), said
    else:
        assert len(named) == 1 and "skipping" in named[0], said
    assert " nan" not in res.output.lower() and "inf%" not in res.output


def test_nan_and_inf_accuracies_in_a_record_are_named_not_shown(tmp_path):
    from flowvision.stages.record import read_record
    from test_tables import write_run

    path = write_run(tmp_path, "r", source_acc_after=0.5, wise=[{"alpha": 0.5, "target_acc": 0.4}]) / "result.json"
    path.write_text(path.read_text().replace('"source_acc_after": 0.5', '"source_acc_after": Infinity')
                    .replace('"target_acc": 0.4', '"target_acc": NaN'))
    record, notes = read_record(path)
    assert record.source_acc_after is None and record.wise[0]["target_acc"] is None
    assert notes == [f"{path}: ignored source_acc_after (NaN or infinite)",
                     f"{path}: NaN or infinite numbers inside wise shown as unknown"]


# ==== third pass: source-image folders count each file once; values that mean something ====================
@pytest.mark.parametrize("labelled", [True, False], ids=["synset folders", "unlabelled"])
def test_a_source_image_folder_counts_each_file_once(labelled, tmp_path):
    """A link back into a folder above (a loop) is one line naming it, not 2 images read as 42; a file
    reached through a second link, or a folder linked twice, counts once; in synset folders, one file under
    two classes (two labels) is one line."""
    from flowvision.data.imagenet import load_image_folder, load_imagenet_eval

    synsets = imagenet_synsets()[:2]
    root = tmp_path / "photos"
    for i, synset in enumerate(synsets):
        _image(root / synset / f"a{i}.jpg", colour=(40 * i, 20, 30))
    first = root / synsets[0]
    (first / "same.jpg").symlink_to(first / "a0.jpg")
    (first / "sub").mkdir()
    (first / "sub" / "other").symlink_to(root / synsets[1], target_is_directory=True)
    (root / synsets[1] / "again").symlink_to(root / synsets[1], target_is_directory=True)  # a loop

    def load():
        return (load_imagenet_eval(root, None, flag="--source-eval") if labelled else load_image_folder(root, None))
    with pytest.raises(UserError, match=r"/again is a symlink loop \(it leads back into a folder above it\)"):
        load()
    (root / synsets[1] / "again").unlink()
    if labelled:
        with pytest.raises(UserError, match=r"n01443537/a1.jpg and .*/sub/other/a1.jpg are the same file .* two labels"):
            load()
        (first / "sub" / "other").unlink()
    data = load()
    assert data.n_found == 2 and sorted(Path(p).name for p, _ in data.base.samples) == ["a0.jpg", "a1.jpg"]


@pytest.mark.parametrize("option", ["--lwf-lambdas", "--ewc-lambdas", "--l2sp-lambdas", "--lrs", "--epochs", "--taus"])
@pytest.mark.parametrize("value", ["", ",,", " , "])
def test_an_empty_list_option_is_one_line_not_the_defaults(option, value, tmp_path):
    _fails_cleanly(["frontier", "--dataset", "gratings", option, value], f"{option} {value!r} names no value", tmp_path)


def test_a_knob_the_method_does_not_read_is_one_warning_naming_who_reads_it(tmp_path, tiny):
    res = runner.invoke(app, ["finetune", "--method", "ft", "--set", "lwf_lambda=3", "--set", "ewc_samples=5",
                              "--set", "l2sp_lambda=0.1", "--dry-run", "--results-dir", str(tmp_path / "results")])
    assert res.exit_code == 0, res.output
    said = [" ".join(line.split()) for line in res.output.splitlines() if line.startswith("warning:")]
    assert said == ["warning: lwf_lambda is read only when distill is lwf (methods lwf, flow+lwf); method ft ignores "
                    "it, so it changes nothing here",
                    "warning: ewc_samples is read only when regularizer is ewc (methods ewc, flow+ewc); method ft "
                    "ignores it, so it changes nothing here",
                    "warning: l2sp_lambda is read only when regularizer is l2sp (methods l2sp, flow+l2sp); method ft "
                    "ignores it, so it changes nothing here"], said
    res = runner.invoke(app, ["finetune", "--method", "lwf", "--set", "lwf_lambda=3", "--dry-run",
                              "--results-dir", str(tmp_path / "results")])
    assert res.exit_code == 0 and "warning:" not in res.output, res.output


@pytest.mark.parametrize("method,knob,extra", [("lwf", "lwf_lambda", []), ("l2sp", "l2sp_lambda", ["--set", "pull=gradient"])])
def test_an_absurd_strength_is_named_when_the_loss_diverges(method, knob, extra, tmp_path, tiny):
    """(ℓ2-SP's default proximal pull holds the shared tensors at the source under any λ and trains through: the
    gradient pull is the one that diverges.)"""
    text = _fails_cleanly(_base(tmp_path, tiny) + ["--dataset", "gratings", "--method", method, "--set", f"{knob}=1e30",
                                                   *extra], "the training loss became nan", tmp_path)
    assert f"lower {knob} (now 1e+30) or the learning rate (--lr)" in " ".join(text.split()), text
