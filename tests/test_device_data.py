"""The decoded-cache data path: pixels equal to the PIL reference, device augmentation drawing per
sample within the recipe's ranges, caches keyed by the files they were made from and never trusted
when damaged."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from flowvision.data.decoded import decoded, folder_fingerprint, stored
from flowvision.data.device import recipe_transforms
from flowvision.data.imagenet import imagenet_synsets
from flowvision.methods.forgetting import official_imagenet_transform


def _photos(root: Path, n=6, size=(300, 260)) -> Path:
    """A tiny ImageFolder of noisy RGB JPEGs of an odd size, so resizing and cropping matter."""
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / f"c{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=90)
    return root


def test_decoded_imagenet_pixels_equal_the_official_transforms_exactly(tmp_path):
    from torchvision.datasets import ImageFolder

    folder = ImageFolder(str(_photos(tmp_path / "val")))
    store = stored("imagenet", 224)
    cache, _ = decoded(folder, store.prepare, store.size, {"t": 1}, tmp_path / "cache", "test", workers=0)
    _, eval_tf = recipe_transforms("imagenet", 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    reference = official_imagenet_transform()
    pixels = torch.nn.Sequential(*reference.transforms[:3])  # PILToTensor, Resize(256), CenterCrop(224)
    for i in range(len(folder)):
        image, label = folder[i]
        x, y = cache[i]
        assert x.dtype == torch.uint8 and y == label
        assert torch.equal(x, pixels(image))  # the stored pixels are the official transform's, exactly
        assert torch.allclose(eval_tf(x[None])[0], reference(image), atol=1e-6)  # normalised: float rounding only


@pytest.mark.parametrize("recipe", ["imagenet", "square_crop_jitter", "crop_jitter", "resize_square"])
def test_cached_eval_pixels_are_within_one_level_of_a_pil_resize(recipe, tmp_path):
    """The cache resizes the decoded uint8 tensor; the official code (and the PIL path of the target sets)
    the PIL image: the same geometry, and pixels at most one level apart (docs/protocols.md)."""
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    folder = ImageFolder(str(_photos(tmp_path / "photos")))
    big = 256
    pil = {"imagenet": [v2.Resize(256), v2.CenterCrop(224)], "square_crop_jitter": [v2.Resize((big, big)), v2.CenterCrop(224)],
           "crop_jitter": [v2.Resize(big), v2.CenterCrop(224)], "resize_square": [v2.Resize((224, 224))]}[recipe]
    pil = v2.Compose(pil + [v2.PILToTensor()])
    store = stored(recipe, 224)
    diff = torch.stack([(pil(image).int() - v2.functional.center_crop(store.prepare(image), [224, 224]).int()).abs()
                        for image, _ in folder])
    assert diff.max() <= 1 and diff.float().mean() < 0.05


def test_the_imagenet_eval_set_takes_the_decoded_path_and_labels_follow_the_synsets(tmp_path):
    from flowvision.core import config
    from flowvision.methods import forgetting
    from test_imagenet import write_val

    val = write_val(tmp_path / "val", imagenet_synsets(), per_class=1)
    cfg = config.resolve("gratings", "resnet18", "ft", {"imagenet": str(val), "imagenet_subset": 20,
                                                        "cache_dir": str(tmp_path / "cache"), "data_path": "device"})
    fast = forgetting.eval_set(cfg)
    slow = forgetting.eval_set(config.resolve("gratings", "resnet18", "ft", {
        "imagenet": str(val), "imagenet_subset": 20, "data_path": "pil"}))
    assert fast.fingerprint != slow.fingerprint and len(fast.dataset) == len(slow.dataset) == 20
    for i in range(20):
        x, y, idx = fast.dataset[i]
        ref, ref_y, _ = slow.dataset[i]
        assert (y, idx) == (ref_y, i)
        assert torch.allclose(fast.dataset.batch_transform(x[None])[0], ref, atol=1e-6)


def test_a_cache_follows_its_files_and_a_damaged_one_is_rebuilt_with_a_warning(tmp_path, capsys):
    from torchvision.datasets import ImageFolder

    root = _photos(tmp_path / "photos")
    store = stored("crop_jitter", 32)

    def build():
        folder = ImageFolder(str(root))
        return decoded(folder, store.prepare, store.size, {"files": folder_fingerprint(root)}, tmp_path / "cache",
                       "test", workers=0)
    first, key = build()
    assert build()[1] == key and first.images.shape == (6, 3, 37, 37)  # 256 scaled to 32 px is 37
    Image.new("RGB", (300, 260), (1, 2, 3)).save(root / "c0" / "0.jpg")  # one image replaced
    changed, new_key = build()
    assert new_key != key and not np.array_equal(changed.images[0], first.images[0])
    expected = np.array(changed.images)  # a copy: the map follows the file, which is damaged next
    images = tmp_path / "cache" / "decoded" / new_key / "images.npy"
    data = bytearray(images.read_bytes())
    data[-1] ^= 0xFF
    images.write_bytes(bytes(data))
    rebuilt, same_key = build()
    assert same_key == new_key and np.array_equal(rebuilt.images, expected)
    assert "was damaged" in capsys.readouterr().err
    assert list((tmp_path / "cache" / "decoded").glob(f"{new_key}.damaged-*"))


def test_device_augmentation_draws_per_sample_within_the_recipe_ranges():
    torch.manual_seed(0)
    n, s = 512, 32
    x = (torch.rand(n, 3, 37, 37) * 255).to(torch.uint8)
    train, evaluate = recipe_transforms("crop_jitter", s, (0.5,) * 3, (0.25,) * 3)
    out = train(x)
    assert out.shape == (n, 3, s, s) and out.dtype == torch.float32
    crop, flip, jitter = train.augment
    boxes = crop._params["src"]
    w = boxes[:, 1, 0] - boxes[:, 0, 0] + 1
    h = boxes[:, 2, 1] - boxes[:, 1, 1] + 1
    area, aspect = (w * h) / 37 ** 2, w / h
    assert area.min() >= 0.08 - 0.02 and area.max() <= 1.0 and aspect.min() >= 0.75 - 0.1 and aspect.max() <= 4 / 3 + 0.1
    assert area.std() > 0.1 and len(set(map(tuple, boxes[:, 0].tolist()))) > 100  # per-sample boxes
    flipped = flip._params["batch_prob"].float().mean()
    assert 0.4 < flipped < 0.6
    for name in ("brightness_factor", "contrast_factor", "saturation_factor"):
        factors = jitter._params[name]
        assert factors.min() >= 0.8 and factors.max() <= 1.2 and factors.std() > 0.05, name
    # eval is deterministic: the centre crop of the stored square, normalised
    assert torch.equal(evaluate(x), evaluate(x)) and evaluate(x).shape == (n, 3, s, s)
    ref = (x[:, :, 2:34, 2:34].float() / 255 - 0.5) / 0.25
    assert torch.allclose(evaluate(x), ref, atol=1e-6)


@pytest.mark.parametrize("data_path", ["pil", "device"])
def test_both_data_paths_run_end_to_end_on_a_real_layout(data_path, tmp_path, tiny, tiny_weights_file):
    """timm's test_resnet with the official ImageNet transform (resnet18's own: the one the decoded ImageNet cache
    serves) goes through every stage of the data path as resnet18 would, at a fraction of the cost."""
    from flowvision.core import config
    from flowvision.stages.run import run as run_one
    from test_imagenet import write_val
    from test_real_e2e import write_cars

    data = write_cars(tmp_path / "data", n_classes=196)
    val = write_val(tmp_path / "val", imagenet_synsets()[:8], per_class=2)  # a partial folder: 8 synsets
    r = run_one(config.resolve("stanford_cars", "test_resnet", "ft", dict(
        tiny, data_root=str(data), data_path=data_path, image_size=16, cache_dir=str(tmp_path / "cache"),
        weights=str(tiny_weights_file), imagenet=str(val), imagenet_subset=8, imagenet_transform="official",
        batch_size=64)))
    assert r["target_data"]["data_path"] == data_path and 0 <= r["target_acc"] <= 1
    assert (r["source_info"]["imagenet_decoded"] is not None) == (data_path == "device")
    decoded_files = list((tmp_path / "cache").glob("decoded/*/images.npy"))
    assert len(decoded_files) == (3 if data_path == "device" else 0)  # cars train, cars test, IN-1K subset
