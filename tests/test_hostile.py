"""Hostile input, as a user who means harm (or just makes every mistake) would give it: every case
is one line naming what is wrong, exit code 2, no traceback, and nothing written outside the
results folder. Cases that are recoverable (a damaged record, a damaged stage file) recover."""
import os
import pickle
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from flowvision.cli import app
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


def _base(tmp_path, tiny):
    sets = [a for k, v in tiny.items() if k not in ("results_dir", "device") for a in ("--set", f"{k}={v}")]
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
    _fails_cleanly([*_base(tmp_path, {k: v for k, v in tiny.items() if k not in hostile}), *args], message, tmp_path)


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
    sets = [a for k, v in tiny.items() if k in ("image_size", "n_train", "n_test", "demo_n_train", "demo_epochs",
                                                 "cache_dir") for a in ("--set", f"{k}={v}")]
    _fails_cleanly([*args, *sets, "--set", f"results_dir={tmp_path / 'results'}"], message, tmp_path)


def test_pruning_beside_a_running_run_is_refused_and_a_text_pth_is_named(tmp_path, tiny, imagenet):
    import json as _json

    run = tmp_path / "results" / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "state.json").write_text(_json.dumps({"status": "running", "host": "elsewhere", "updated": 4e9}))
    _fails_cleanly(["cache", "--results-dir", str(tmp_path / "results"), "--prune"], "are running (e.g. r1)", tmp_path)
    text = tmp_path / "w.pth"
    text.write_text("not weights at all\n")
    _fails_cleanly([*_base(tmp_path, tiny), "--model", "resnet18", "--weights", str(text), "--imagenet", str(imagenet)],
                   "it is not a torch file of tensors", tmp_path)
