"""Shared fixtures: tiny synthetic settings so every pipeline test runs in seconds on 2 cores."""
import os

# One intra-op thread, set before torch is imported (pytest imports conftest before any test module).
# The tiny tests gain nothing from a second thread, and when the 2 cores are shared with another torch
# process, OpenMP threads that busy-wait at every barrier slow the suite several-fold. An explicit
# OMP_NUM_THREADS / OMP_WAIT_POLICY in the environment still wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", os.environ["OMP_NUM_THREADS"])
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Wide, unwrapped tables in captured output whether or not the test process has a terminal
# (pytest-xdist workers do): the CLI tests read printed rows.
os.environ["COLUMNS"] = "200"

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

os.environ.setdefault("FLOWVISION_QUIET", "1")
os.environ["FLOWVISION_OFFLINE"] = "1"  # never probe the network for weights in tests


def _cli_built_once() -> None:
    """typer's CliRunner builds the click command from the Typer app at every invoke (~17 ms here: each command's
    signature inspected), and the suite invokes the CLI hundreds of times. The app is complete once imported and
    no test changes it, so the command is built once per process, as a click program builds its commands once."""
    import functools

    import typer.testing

    if callable(getattr(typer.testing, "_get_command", None)):
        typer.testing._get_command = functools.lru_cache(maxsize=None)(typer.testing._get_command)


_cli_built_once()


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory):
    """One demo-model cache for the whole session: the tiny demo model is trained once."""
    return tmp_path_factory.mktemp("demo-cache")


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory, demo_cache):
    """One finished tiny demo run (ft) for the tests that read run folders: its run folder, the stage store
    beside it (<results>/cache). Read it, or copy it before changing anything."""
    from typer.testing import CliRunner

    from flowvision.cli import app

    tmp = tmp_path_factory.mktemp("demo-run")
    tiny = {"image_size": 16, "n_train": 48, "n_test": 32, "demo_n_train": 96, "demo_n_test": 32, "demo_epochs": 3,
            "demo_arch": "test_resnet", "demo_batch_size": 32, "epochs": 1, "batch_size": 16,
            "cache_dir": str(demo_cache), "device": "cpu"}
    res = CliRunner().invoke(app, ["finetune", "--dataset", "gratings", "--method", "ft", "--results-dir", str(tmp / "results"),
                              *[a for k, v in tiny.items() for a in ("--set", f"{k}={v}")]])
    assert res.exit_code == 0, res.output
    (run_dir,) = (tmp / "results" / "runs").iterdir()
    return run_dir


def _local_weights(tmp_path_factory, arch: str):
    from safetensors.torch import save_file

    from flowvision.methods import models

    torch.manual_seed(0)
    m = models.create(arch, 1000)
    path = tmp_path_factory.mktemp("weights") / f"{arch}-local.safetensors"
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="session")
def weights_file(tmp_path_factory):
    """A local .safetensors file of a randomly initialised timm resnet18 (1000 classes), as a user's own
    pre-trained weights: made once per session, only read."""
    return _local_weights(tmp_path_factory, "resnet18")


@pytest.fixture(scope="session")
def tiny_weights_file(tmp_path_factory):
    """The same for timm's test_resnet (0.4 M parameters), for runs on real layouts whose model does not matter."""
    return _local_weights(tmp_path_factory, "test_resnet")


@pytest.fixture
def tiny(tmp_path, demo_cache):
    """Overrides for a run on 16-px synthetic images with a handful of samples and one epoch each."""
    return {
        "image_size": 16, "n_train": 48, "n_test": 32, "demo_n_train": 96, "demo_n_test": 32, "demo_epochs": 3,
        "demo_arch": "test_resnet",  # timm's own 0.4 M-parameter ResNet for tests: every stage file is small
        "demo_batch_size": 32, "epochs": 1, "probe_epochs": 1, "refit_epochs": 1, "batch_size": 16,
        "results_dir": str(tmp_path / "results"), "cache_dir": str(demo_cache), "device": "cpu",
    }


@pytest.fixture
def full_disk(monkeypatch):
    """Every atomic write goes into /dev/full, so the write fails with the kernel's own ENOSPC
    (the temporary file is still created and must be removed by the writer). Call it to switch on."""
    import tempfile

    from flowvision.core import files

    real = tempfile.mkstemp

    def into_dev_full(dir, prefix, suffix):
        fd, name = real(dir=dir, prefix=prefix, suffix=suffix)
        os.close(fd)
        return os.open("/dev/full", os.O_WRONLY), name
    return lambda: monkeypatch.setattr(files.tempfile, "mkstemp", into_dev_full)


def pytest_collection_modifyitems(config, items):
    """Tests marked cuda are skipped, with the reason, where no CUDA GPU is visible."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (make gpu-check runs these)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
