"""The ImageNet-1K val loader on a generated 1000-synset ImageFolder (two 8-px JPEGs per class)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from flowvision.data.imagenet import ImageNetCountWarning, describe, imagenet_synsets, imagenet_transform, load_imagenet_eval
from flowvision.core.errors import UserError

SYNSETS = imagenet_synsets()


def write_val(root: Path, synsets, per_class=2) -> Path:
    for label, synset in enumerate(synsets):
        (root / synset).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (8, 8), (label % 256, label // 256, i)).save(
                root / synset / f"ILSVRC2012_val_{label:05d}{i}.JPEG", format="JPEG")
    return root


@pytest.fixture(scope="module")
def val(tmp_path_factory) -> Path:
    return write_val(tmp_path_factory.mktemp("imagenet") / "val", SYNSETS)


def empty_tree(root: Path, names) -> Path:
    for name in names:
        (root / name).mkdir(parents=True)
    return root


def test_timm_synsets_are_the_1000_in1k_classes_in_order():
    assert len(SYNSETS) == len(set(SYNSETS)) == 1000
    assert SYNSETS[0] == "n01440764" and SYNSETS[-1] == "n15075141" and SYNSETS == sorted(SYNSETS)


def test_full_val_set_labels_follow_the_synset_order_and_warn_on_count(val):
    with pytest.warns(ImageNetCountWarning, match="holds 2000 images, not 50000"):
        ds = load_imagenet_eval(val, None)
    assert len(ds) == 2000 and describe(ds) == "imagenet-val(2000)"
    assert ds.warnings and "not comparable" in ds.warnings[0]
    image, label, index = ds[0]
    assert (label, index) == (0, 0) and image.size == (8, 8)
    assert ds[1999][1:] == (999, 1999)
    image, label, _ = ds[2 * 417]
    assert label == 417 and image.getpixel((4, 4))[0] == pytest.approx(417 % 256, abs=8)


def test_labels_follow_the_models_class_order_not_the_folder_sort(val):
    reordered = SYNSETS[::-1]
    with pytest.warns(ImageNetCountWarning):
        ds = load_imagenet_eval(val, None, expected_classes=reordered)
    by_folder = {Path(p).parent.name: label for p, label in ds.base.samples}
    assert by_folder["n01440764"] == 999 and by_folder["n15075141"] == 0
    assert all(reordered[label] == name for name, label in by_folder.items())


def test_subset_is_class_balanced_seeded_and_nested(val):
    with pytest.warns(ImageNetCountWarning):
        ds = load_imagenet_eval(val, None, subset=1000, seed=0)
    assert len(ds) == 1000 and describe(ds) == "imagenet-val:subset(1000)"
    labels = [label for _, label in (ds.base.samples[i] for i in ds.indices)]
    assert Counter(labels) == Counter(range(1000))  # exactly one image of every class
    assert ds[999][2] == 999 and ds.indices == sorted(ds.indices)
    with pytest.warns(ImageNetCountWarning):
        same = load_imagenet_eval(val, None, subset=1000, seed=0)
        other = load_imagenet_eval(val, None, subset=1000, seed=1)
        bigger = load_imagenet_eval(val, None, subset=1500, seed=0)
        everything = load_imagenet_eval(val, None, subset=5000)
    assert same.indices == ds.indices and other.indices != ds.indices
    assert set(ds.indices) < set(bigger.indices) and len(bigger) == 1500
    assert sorted(Counter(bigger.base.samples[i][1] for i in bigger.indices).values()) == [1] * 500 + [2] * 500
    assert len(everything) == 2000 and describe(everything) == "imagenet-val(2000)"
    with pytest.raises(UserError, match="subset must be ≥ 1"):
        load_imagenet_eval(val, None, subset=0)


def test_missing_folder_names_the_path_and_the_fix(tmp_path):
    with pytest.raises(UserError) as e:
        load_imagenet_eval(tmp_path / "nope", None)
    message = str(e.value)
    assert message.startswith(f"ImageNet val not found at {tmp_path / 'nope'}: pass --imagenet DIR")
    assert "FLOWVISION_IMAGENET" in message and "\n" not in message


def test_misnamed_folder_is_named_in_the_error(tmp_path):
    root = empty_tree(tmp_path / "val", ["tench"] + SYNSETS[1:])
    with pytest.raises(UserError, match=r"1000 class folders, expected 1000; first unexpected folder "
                                        r"'tench'; first missing 'n01440764'"):
        load_imagenet_eval(root, None)


def test_index_named_folders_and_extra_or_missing_classes_fail(tmp_path):
    numbered = empty_tree(tmp_path / "numbered", [str(i) for i in range(1000)])
    with pytest.raises(UserError, match="first unexpected folder '0'; first missing 'n01440764'"):
        load_imagenet_eval(numbered, None)
    extra = empty_tree(tmp_path / "extra", SYNSETS + ["n99999999", ".ipynb_checkpoints"])
    with pytest.raises(UserError, match=r"\(1001 class folders, expected 1000; first unexpected folder "
                                        r"'n99999999'\)"):  # the hidden folder is not a class
        load_imagenet_eval(extra, None)
    short = empty_tree(tmp_path / "short", SYNSETS[:999])  # some classes may be absent, but not imageless folders
    with pytest.raises(UserError, match=r"incomplete \(999 class folders hold no image: n01440764, n01443537, "
                                        r"n01484850 and 996 more\)") as e:
        load_imagenet_eval(short, None)
    assert len(str(e.value)) < 400  # the list is cut


def test_a_folder_with_some_synsets_is_accepted_with_a_warning_and_labelled_in_the_models_order(tmp_path):
    picked = [SYNSETS[243], SYNSETS[7], SYNSETS[990]]
    root = tmp_path / "sample"
    for synset in picked:
        (root / synset).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8), (i, 0, 0)).save(root / synset / f"{i}.jpg", format="JPEG")
    with pytest.warns(ImageNetCountWarning, match="holds 3 of the 1000 classes and 6 images"):
        ds = load_imagenet_eval(root, None)
    assert ds.partial and ds.n_classes == 3 and len(ds) == 6
    assert sorted({ds[i][1] for i in range(len(ds))}) == [7, 243, 990]
    assert describe(ds) == "imagenet-partial(6 images, 3 classes)"
    with pytest.warns(ImageNetCountWarning):
        half = load_imagenet_eval(root, None, subset=3)
    assert sorted(ds.base.samples[i][1] for i in half.indices) == [7, 243, 990]  # one per class present


def test_flat_val_folder_and_empty_class_folder(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (8, 8)).save(flat / "ILSVRC2012_val_00000001.JPEG", format="JPEG")
    with pytest.raises(UserError, match="has no class folders"):
        load_imagenet_eval(flat, None)
    with pytest.raises(UserError, match="is incomplete"):
        load_imagenet_eval(empty_tree(tmp_path / "empty", SYNSETS), None)


def test_small_custom_class_list_without_count_warning(tmp_path, recwarn):
    root = write_val(tmp_path / "val", ["b", "a"], per_class=1)
    ds = load_imagenet_eval(root, None, expected_classes=["b", "a"])
    assert [ds.base.samples[i][1] for i in ds.indices] == [1, 0]  # a/ sorts first, but is class 1
    assert ds.warnings == ["ImageNet val at %s holds 2 images, not 50000: source accuracy is not "
                           "comparable with the paper's" % root]


def test_eval_transform_comes_from_the_timm_pretrained_cfg():
    import timm

    cfg = timm.models.get_pretrained_cfg("resnet18.tv_in1k").to_dict()
    tf = imagenet_transform(cfg)
    names = [type(t).__name__ for t in tf.transforms]
    assert names[:2] == ["Resize", "CenterCrop"] and tf.transforms[0].size == 256
    assert tf.transforms[0].interpolation.value == "bilinear" and tf.transforms[1].size == (224, 224)
    assert tf(Image.new("RGB", (300, 200))).shape == (3, 224, 224)
    small = imagenet_transform({**cfg, "input_size": (3, 32, 32)})  # resize to floor(32 / 0.875)
    assert small.transforms[0].size == 36 and small(Image.new("RGB", (50, 40))).shape == (3, 32, 32)


def test_the_class_list_is_timms_read_without_importing_it():
    from timm.data import ImageNetInfo

    from flowvision.data.synsets import imagenet_synsets as from_file

    assert from_file() == list(ImageNetInfo("imagenet-1k").label_names()) and len(from_file()) == 1000
