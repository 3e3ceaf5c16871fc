"""The public face (docs/api.md): ``flowvision.__all__`` is exactly the names one uses from one's own training
loop, they load on first use (``import flowvision`` stays torch-free), they are the functions the CLI's stages
call, the example loop (examples/own_loop.py) gives ``flowvision finetune``'s numbers, docs/api.md's snippets
run as a new user would run them and give FLOW's weights, and the version is one number."""
from __future__ import annotations

import ast
import copy
import importlib.util
import json
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import flowvision

ROOT = Path(__file__).resolve().parents[1]
PUBLIC = ("per_sample_losses", "flow_weights", "weighted_loss", "measured_model", "forgetting", "L2SP", "EWC", "LwF")


# ---- the names --------------------------------------------------------------------------------------------------
def test_all_is_exactly_the_public_names_each_loaded_documented_and_typed():
    assert sorted(flowvision.__all__) == sorted(PUBLIC) and len(flowvision.__all__) == len(PUBLIC)
    stub = ast.parse((ROOT / "flowvision" / "__init__.pyi").read_text())
    typed = {alias.asname for node in stub.body if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert typed == set(PUBLIC), "flowvision/__init__.pyi types exactly the public names"
    for name in PUBLIC:
        value = getattr(flowvision, name)
        assert value.__doc__ and len(value.__doc__) > 200, f"{name}: a docstring with units and shapes"
        assert name in dir(flowvision)
    with pytest.raises(AttributeError, match="no attribute 'nosuch'"):
        flowvision.nosuch  # noqa: B018
    root = ast.parse((ROOT / "flowvision" / "__init__.py").read_text())
    imported = [ast.unparse(n) for n in ast.walk(root) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert imported == ["import importlib"], f"the root loads its names from strings, on first use: {imported}"


def test_import_flowvision_imports_no_torch_until_a_name_that_needs_it_is_used():
    code = ("import sys, flowvision\nassert 'torch' not in sys.modules\nflowvision.flow_weights\n"
            "assert 'torch' not in sys.modules, 'the weights are a pure function: no torch to import them'\n"
            "print(sorted(flowvision.__all__))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(sorted(PUBLIC))


def test_the_stages_call_the_public_functions():
    """One implementation: the loss stages call ``per_sample_losses``, the weights stage ``flow_weights``, the
    fine-tuning builds ``L2SP``/``EWC``/``LwF``, the forgetting stages measure through ``measured_model``."""
    def calls(path: str, function: str) -> set:
        tree = ast.parse((ROOT / "flowvision" / path).read_text())
        body = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function)
        return {getattr(c.func, "id", getattr(c.func, "attr", None)) for c in ast.walk(body) if isinstance(c, ast.Call)}
    assert "per_sample_losses" in calls("stages/training.py", "losses")
    assert "per_sample_losses" in calls("stages/measuring.py", "probe_test")
    assert "flow_weights" in calls("stages/training.py", "weights")
    assert {"L2SP", "EWC", "LwF"} <= calls("stages/training.py", "finetune")
    assert "source_after" in calls("stages/measuring.py", "forgetting") & calls("stages/measuring.py", "wise")
    assert {"measured_model", "accuracy"} <= calls("methods/forgetting.py", "source_after")
    assert {"source_before", "source_after"} <= calls("methods/forgetting.py", "forgetting")


# ---- each name on a tiny timm model -------------------------------------------------------------------------------
def _fake(n: int, classes: int, offset: int = 0):
    from torchvision.datasets import FakeData
    from torchvision.transforms import v2

    to_tensor = v2.Compose([v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True)])
    return FakeData(size=n, image_size=(3, 16, 16), num_classes=classes, transform=to_tensor, random_offset=offset)


def _plain_losses(model, data) -> torch.Tensor:
    """The cross-entropy of every sample, computed the plain way (eval mode, one batch, fp32)."""
    x = torch.stack([data[i][0] for i in range(len(data))])
    y = torch.tensor([data[i][1] for i in range(len(data))])
    model.eval()
    with torch.no_grad():
        return F.cross_entropy(model(x).float(), y, reduction="none")


@pytest.fixture(scope="module")
def pretrained():
    import timm

    torch.manual_seed(0)
    return timm.create_model("test_resnet", num_classes=5)


def test_per_sample_losses_are_fp32_in_dataset_order_whatever_autocast_surrounds_them(pretrained):
    model, data = copy.deepcopy(pretrained).train(), _fake(24, 5)
    expected = _plain_losses(copy.deepcopy(model), data)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses, labels = flowvision.per_sample_losses(model, data, return_labels=True)
    assert losses.dtype == torch.float32 and losses.shape == (24,)
    assert torch.allclose(losses, expected, rtol=1e-6, atol=1e-6)
    assert labels.tolist() == [data[i][1] for i in range(24)]
    assert model.training, "the model's mode is put back"
    with torch.autocast("cpu", dtype=torch.bfloat16):  # what the guard prevents: bf16 logits move the losses
        rounded = F.cross_entropy(model.eval()(torch.stack([data[i][0] for i in range(24)])).float(), labels,
                                  reduction="none")
    assert not torch.allclose(rounded, expected, rtol=1e-6, atol=1e-6)


def test_forgetting_is_the_drop_in_points_with_agreement_and_kl_and_none_without_labels(pretrained):
    from flowvision.methods.models import with_new_head

    finetuned = with_new_head(pretrained, 3, seed=1)
    with torch.no_grad():
        for p in finetuned.parameters():
            p.add_(0.3 * torch.randn_like(p))
    images = _fake(40, 5, offset=100)
    out = flowvision.forgetting(finetuned, pretrained, images)
    measured = flowvision.measured_model(finetuned, pretrained)
    y = torch.tensor([images[i][1] for i in range(len(images))])
    x = torch.stack([images[i][0] for i in range(len(images))])
    with torch.no_grad():
        before, after = pretrained.eval()(x), measured.eval()(x)
    acc = lambda logits: 100 * float((logits.argmax(1) == y).double().mean())  # noqa: E731
    assert out["acc_before"] == pytest.approx(acc(before)) and out["acc_after"] == pytest.approx(acc(after))
    assert out["drop"] == pytest.approx(out["acc_before"] - out["acc_after"])
    assert out["agreement"] == pytest.approx(100 * float((before.argmax(1) == after.argmax(1)).double().mean()))
    kl = F.kl_div(F.log_softmax(after, 1).double(), F.log_softmax(before, 1).double(), log_target=True,
                  reduction="batchmean")
    assert out["kl"] == pytest.approx(float(kl), rel=1e-5) and out["kl"] > 0
    same = flowvision.forgetting(pretrained, pretrained, images)
    assert (same["drop"], same["agreement"], same["kl"]) == (0.0, 100.0, 0.0)

    class Unlabelled(torch.utils.data.Dataset):  # a folder of images without labels: -1
        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            return images[i][0], -1
    blind = flowvision.forgetting(finetuned, pretrained, Unlabelled())
    assert blind["acc_before"] is None and blind["drop"] is None and blind["agreement"] == out["agreement"]


def test_the_regularisers_take_the_pretrained_model_and_return_the_term_to_add(pretrained):
    from flowvision.methods.evaluate import fisher_diagonal, in_order
    from flowvision.methods.models import clone_state, split_state, with_new_head

    value = lambda term: float(term().detach())  # noqa: E731
    model = with_new_head(pretrained, 3, seed=1)
    l2sp = flowvision.L2SP(model, pretrained, lam=0.5)
    assert value(l2sp) == 0.0
    shared, _ = split_state(model)
    conv = next(p for name, p in model.named_parameters() if name in shared and p.dim() == 4)
    with torch.no_grad():
        conv.add_(0.1)
    assert value(l2sp) == pytest.approx(0.5 / 2 * 0.01 * conv.numel(), rel=1e-4)
    assert value(l2sp) == value(flowvision.L2SP(model, clone_state(pretrained), lam=0.5))  # a state dict too
    data = _fake(6, 3, offset=200)
    fisher = flowvision.EWC.fisher(pretrained, data, draws=2)
    assert {k: v.shape for k, v in fisher.items()} == {k: v.shape for k, v in pretrained.named_parameters()}
    reference = fisher_diagonal(copy.deepcopy(pretrained), in_order(data), draws=2)
    assert all(torch.equal(fisher[k], reference["fisher"][k]) for k in fisher)  # the stage's function
    ewc = flowvision.EWC(model, pretrained, fisher, lam=0.5)
    assert 0 < value(ewc) <= value(l2sp)  # F̄ ≤ 1: never a harder pull than ℓ2-SP's
    lwf = flowvision.LwF(copy.deepcopy(pretrained), lam=2.0, temperature=2.0)
    x = torch.stack([data[i][0] for i in range(6)])
    logits, source_logits = lwf.student(with_new_head(pretrained, 3, seed=1))(x)
    teacher = F.softmax(pretrained.eval()(x) / 2.0, dim=1)
    assert logits.shape == (6, 3) and source_logits.shape == (6, 5)
    entropy = -(teacher * teacher.log()).sum(1).mean()  # an unchanged network keeps the teacher's outputs
    assert float(lwf(x, source_logits).detach()) == pytest.approx(2.0 * float(entropy.detach()), rel=1e-4)


# ---- the example loop is the tool -----------------------------------------------------------------------------------
def _example():
    spec = importlib.util.spec_from_file_location("own_loop", ROOT / "examples" / "own_loop.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_loop_gives_flowvision_finetunes_target_accuracy_weights_and_drop(tiny):
    """examples/own_loop.py's ``main`` on the inputs of ``flowvision finetune --method flow`` (the tiny fixture's
    sizes, the demo model, seed 0) gives the run's target accuracy, τ, every weight and the drop. Augmentation is
    off in both: flowvision draws each sample's random crop from (epoch seed, index), a plain DataLoader from one
    stream, so with it on the two train on other crops (the example says so)."""
    from typer.testing import CliRunner

    from flowvision.cli import app

    settings = dict(tiny, augment=False, lr=0.05)  # at 0.05 the tiny fine-tuning moves the source accuracy
    sets = [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]
    res = CliRunner().invoke(app, ["finetune", "--dataset", "gratings", "--model", "demo", "--method", "flow",
                                   "--seed", "0", *sets])
    assert res.exit_code == 0, res.output
    run_dir, = Path(tiny["results_dir"]).glob("runs/*")
    record = json.loads((run_dir / "result.json").read_text())
    cli_weights = [float(line.split(",")[3]) for line in (run_dir / "weights.csv").read_text().splitlines()[1:]]

    example = _example()
    args, kwargs, command = example.stand_in(**settings)
    assert command.startswith("flowvision finetune --dataset gratings --model demo --method flow --seed 0")
    out = example.main(*args, **kwargs)
    assert out["tau"] == pytest.approx(record["tau"], rel=1e-6)
    assert out["weights"].tolist() == pytest.approx(cli_weights, rel=1e-5)  # weights.csv keeps 6 digits
    assert out["target_acc"] == pytest.approx(100 * record["target_acc"], abs=1e-9)
    assert out["acc_before"] == pytest.approx(100 * record["source_acc_before"], abs=1e-9)
    assert out["drop"] == pytest.approx(100 * record["source_drop"], abs=1e-6)
    assert out["agreement"] == pytest.approx(100 * record["source_agreement"], abs=1e-6)
    assert out["kl"] == pytest.approx(record["source_kl"], rel=1e-4, abs=1e-7)
    assert record["source_drop"] != 0 and record["source_agreement"] < 1, "a tie on numbers the fine-tuning moved"


# ---- docs/api.md, run as written --------------------------------------------------------------------------------------
def _python_blocks(text: str) -> list[str]:
    """The ```python blocks of a page, in order (```py blocks are sketches for other people's scripts)."""
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_docs_api_snippets_use_only_the_public_names_and_reproduce_flows_weights():
    """A loop written only from docs/api.md: its ```python blocks run top to bottom in one namespace, import
    nothing from flowvision but its top level, and the weights they compute for a small timm model are
    exp(-loss / median(loss)) of that model's own per-sample losses, computed here the plain way."""
    blocks = _python_blocks((ROOT / "docs" / "api.md").read_text(encoding="utf-8"))
    assert len(blocks) >= len(PUBLIC), "one runnable snippet per name at least"
    for block in blocks:
        for node in ast.walk(ast.parse(block)):
            module = node.module if isinstance(node, ast.ImportFrom) else None
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            assert not (module or "").startswith("flowvision.") and not any(n.startswith("flowvision.") for n in names), \
                f"docs/api.md needs a private module: {ast.unparse(node)}"
    used = {name for name in PUBLIC if any(re.search(rf"\b{name}\(", block) for block in blocks)}
    assert used == set(PUBLIC), f"names without a snippet: {sorted(set(PUBLIC) - used)}"
    namespace: dict = {}
    checked = False
    for block in blocks:
        exec(compile(block, "docs/api.md", "exec"), namespace)
        if not checked and "weights" in namespace:
            model, data = namespace["model"], namespace["train_eval"]
            own = _plain_losses(copy.deepcopy(model), data).double()
            median = statistics.median(own.tolist())  # the mean of the two middle losses when N is even
            assert namespace["tau"] == pytest.approx(median, rel=1e-5)
            assert torch.allclose(namespace["weights"].double(), torch.exp(-own / median), rtol=1e-5)
            checked = True
    assert checked, "no snippet computes `weights`"


# ---- one version, and a wheel that carries the names ---------------------------------------------------------------
def test_the_version_is_read_from_the_package_by_setup_cfg():
    from setuptools.config.setupcfg import read_configuration

    import tomllib

    assert read_configuration(str(ROOT / "setup.cfg"))["metadata"]["version"] == flowvision.__version__
    project = tomllib.loads((ROOT / "pyproject.toml").read_text()).get("project", {})
    assert "version" not in project, "one version: flowvision.__version__, which setup.cfg reads"
    assert re.fullmatch(r"\d+\.\d+\.\d+", flowvision.__version__)


@pytest.mark.slow
def test_a_wheel_built_from_the_checkout_installs_into_a_fresh_venv_and_imports_the_names(tmp_path):
    """``pip wheel . --no-deps`` on a copy of the checkout (no build isolation: offline, with this interpreter's
    setuptools), installed with --no-deps into a venv made by this interpreter, which reads the dependencies from
    this one's site-packages (a .pth file): the installed flowvision is the wheel's, its version the package's,
    its names import and work, and its types come with it."""
    import shutil
    import site
    import sysconfig

    # a copy of what the wheel is built from: setuptools builds in the tree it is given (build/, *.egg-info)
    source = tmp_path / "checkout"
    shutil.copytree(ROOT / "flowvision", source / "flowvision", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", str(source), "--no-deps", "--no-build-isolation", "-w", str(wheels)],
                   cwd=tmp_path, check=True, timeout=300)
    wheel, = wheels.glob("flowvision-*.whl")
    assert wheel.name.startswith(f"flowvision-{flowvision.__version__}-")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    deps = [p for p in site.getsitepackages() + [sysconfig.get_paths()["purelib"]] if Path(p).is_dir()]
    (purelib / "dependencies.pth").write_text("\n".join(dict.fromkeys(deps)) + "\n")
    subprocess.run([*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)], check=True,
                   timeout=300)
    code = ("import flowvision, sys\n"
            f"assert flowvision.__file__.startswith({str(purelib)!r}), flowvision.__file__\n"
            "from flowvision import " + ", ".join(PUBLIC) + "\n"
            "import torch\nw, tau = flow_weights(torch.tensor([0.0, 1.0, 2.0]))\n"
            "assert tau == 1.0 and abs(float(w[2]) - 0.1353352832366127) < 1e-6\n"
            "print(flowvision.__version__, sorted(flowvision.__all__))")
    out = subprocess.run([str(python), "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split(" ", 1)[0] == flowvision.__version__
    installed = list(purelib.glob("flowvision/__init__.pyi")) + list(purelib.glob("flowvision/py.typed"))
    assert len(installed) == 2, "the wheel carries the types (__init__.pyi, py.typed)"
