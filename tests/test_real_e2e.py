"""A real-layout experiment end to end through the CLI: a generated Stanford-Cars ImageFolder as
the target, a generated 1000-synset ImageFolder as "ImageNet", and a local .safetensors file as
the pre-trained weights (a randomly initialised timm resnet18 saved to disk)."""
import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

from flowvision.cli import app
from flowvision.data.imagenet import imagenet_synsets
from test_imagenet import write_val


def write_cars(root: Path, n_classes=196) -> Path:
    for split, per_class in (("train", 1), ("test", 1)):
        for c in range(n_classes):
            folder = root / "stanford_cars" / split / f"Car Model {c:03d}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (20, 16), ((c * 7) % 256, (c * 13) % 256, 40 * i)).save(folder / f"{i}.jpg")
    return root


@pytest.mark.parametrize("arch", [
    # the paper's model: --tau paper (the official scripts' τ for Stanford Cars, 0.3832) exists for resnet18 alone
    pytest.param("resnet18", marks=pytest.mark.slow),
    # the fast suite's: timm's test_resnet through the same chain (weights file, ImageNet folder with the official
    # transform, paper protocol, FLOW's online weights, the device data path) with τ given as that number
    "test_resnet",
])
def test_finetune_on_real_layouts_with_local_weights_writes_a_complete_result(arch, tmp_path, request):
    weights = request.getfixturevalue("weights_file" if arch == "resnet18" else "tiny_weights_file")
    tau = ["--tau", "paper"] if arch == "resnet18" else ["--tau", "0.3832", "--set", "imagenet_transform=official"]
    data = write_cars(tmp_path / "data")
    val = write_val(tmp_path / "imagenet" / "val", imagenet_synsets(), per_class=1)
    args = ["finetune", "--dataset", "stanford_cars", "--model", arch, "--weights", str(weights),
            "--method", "flow", *tau, "--protocol", "paper", "--data-root", str(data), "--imagenet", str(val),
            "--imagenet-subset", "10", "--results-dir", str(tmp_path / "results"), "--device", "cpu",
            "--set", "image_size=16", "--set", "epochs=1", "--set", "probe_epochs=1", "--set", "refit_epochs=1",
            "--set", "batch_size=64", "--set", f"cache_dir={tmp_path / 'cache'}"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    (path,) = (tmp_path / "results" / "runs").glob("*/result.json")
    r = json.loads(path.read_text())
    assert r["weights"].startswith(f"file:{arch}-local.safetensors@")
    assert r["source_eval"] == "imagenet-val:subset(10), official transform" and r["tau"] == pytest.approx(0.3832)
    assert r["tau_rule"] == ("paper" if arch == "resnet18" else "0.3832")
    assert r["source_eval_name"] == "IN-1K val" and r["device"] == "cpu"
    assert r["epochs"] == 1 and r["dataset"] == "stanford_cars"
    assert r["target_data"]["num_classes"] == 196 and r["target_data"]["n_train"] == 196  # one image per class found
    for key in ("target_acc", "source_acc_before", "source_acc_after", "source_top5_before", "source_top5_after"):
        assert 0.0 <= r[key] <= 1.0, key
    assert r["source_drop"] == pytest.approx(r["source_acc_before"] - r["source_acc_after"])
    assert r["source_info"]["imagenet_warnings"]  # 1000 images, not 50,000: said, and recorded
    # the device data path, the default for a real data set (test_device_data runs the PIL path)
    assert r["target_data"]["data_path"] == "device" and r["source_info"]["imagenet_decoded"] is not None
    assert len(list((tmp_path / "cache").glob("decoded/*/images.npy"))) == 3  # cars train, cars test, IN-1K subset


def test_wrong_weights_for_the_architecture_is_a_clear_error(tmp_path):
    val = write_val(tmp_path / "val", imagenet_synsets(), per_class=1)
    bad = tmp_path / "bad.safetensors"
    save_file({"conv1.weight": torch.zeros(3, 3, 3, 3)}, str(bad))
    write_cars(tmp_path / "data", n_classes=196)
    res = CliRunner().invoke(app, ["finetune", "--dataset", "stanford_cars", "--model", "resnet18", "--weights",
                                   str(bad), "--data-root", str(tmp_path / "data"), "--imagenet", str(val),
                                   "--results-dir", str(tmp_path / "r"), "--set", f"cache_dir={tmp_path / 'cache'}",
                                   # the data sets are read (decoded) before the weights: small, as in the run above
                                   "--imagenet-subset", "10", "--set", "image_size=16"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "does not fit resnet18" in " ".join(res.output.split())


def test_imagenet_eval_set_follows_the_subset_seed_and_the_official_transform(tmp_path, weights_file):
    from flowvision.core import config
    from flowvision.methods import forgetting

    val = write_val(tmp_path / "val", imagenet_synsets(), per_class=2)
    sets = [forgetting.eval_set(config.resolve("gratings", "resnet18", "ft", {
        "weights": str(weights_file), "imagenet": str(val), "imagenet_subset": 50, "data_seed": s}))
        for s in (0, 1)]
    assert sets[0].fingerprint != sets[1].fingerprint
    assert sets[0].dataset.indices != sets[1].dataset.indices
    text = repr(sets[0].dataset.base.transform)
    assert "BILINEAR" in text and "size=[256]" in text and "224" in text


def test_weights_audit_needs_no_imagenet(tmp_path, tiny_weights_file):
    data = write_cars(tmp_path / "data")
    res = CliRunner().invoke(app, [
        "weights", "--dataset", "stanford_cars", "--model", "test_resnet", "--weights", str(tiny_weights_file),
        "--data-root", str(data), "--k", "3", "--results-dir", str(tmp_path / "r"),
        "--set", "image_size=16", "--set", "probe_epochs=1", "--set", "batch_size=64",
        "--set", f"cache_dir={tmp_path / 'cache'}"])
    assert res.exit_code == 0, res.output
    (folder,) = (tmp_path / "r" / "audit").iterdir()
    assert (folder / "samples.png").stat().st_size > 0 and len((folder / "per_class.csv").read_text().splitlines()) == 197
