"""The real-data loaders on files written here in each data set's on-disk layout (tiny images)."""
from __future__ import annotations

import json
import os
import re
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from flowvision.data.real import load_real_task
from flowvision.core.registry import is_real
from flowvision.data.recipes import build_transforms
from flowvision.data.specs import CALTECH_TRAIN_PER_CLASS, CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD, REAL_TASKS
from flowvision.data.decoded import scaled
from flowvision.core.errors import UserError


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWVISION_CACHE", str(tmp_path / "cache"))


def write_image(path: Path, colour, size=(12, 10)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, tuple(int(c) for c in colour)).save(path)


def colour_of(label: int):
    return (label * 37 % 256, label * 91 % 256, label * 53 % 256)


def write_cifar10(root: Path, per_batch=4, n_test=6) -> dict:
    """CIFAR-10's pickled batches; image i of a batch is constant, value 10*label+i in every channel."""
    folder = root / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    labels = {}
    for name, n in [(f"data_batch_{b}", per_batch) for b in range(1, 6)] + [("test_batch", n_test)]:
        lab = [(3 * i + len(name)) % 10 for i in range(n)]
        data = np.stack([np.full(3072, 10 * lab[i] + i, np.uint8) for i in range(n)])
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": lab, "batch_label": name}, f)
        labels[name] = lab
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    return labels


# --------------------------------------------------------------------------------- registry
def test_registry_lists_the_eight_tasks_with_their_class_counts():
    assert list(REAL_TASKS) == ["cifar10", "cifar100", "flowers102", "caltech101", "stanford_cars",
                                "stanford_dogs", "dtd", "oxford_pets"]
    counts = {k: v.num_classes for k, v in REAL_TASKS.items()}
    assert counts == {"cifar10": 10, "cifar100": 100, "flowers102": 102, "caltech101": 102,
                      "stanford_cars": 196, "stanford_dogs": 120, "dtd": 47, "oxford_pets": 37}
    assert is_real("dtd") and not is_real("gratings")


def test_unknown_name_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="unknown data set 'mnist'"):
        load_real_task("mnist", tmp_path)


# ------------------------------------------------------------------------------- transforms
def test_recipe_sizes_scale_with_image_size():
    assert scaled(256, 224) == 256 and scaled(256, 16) == 18 and scaled(256, 32) == 37
    for name in REAL_TASKS:
        # CIFAR images are 32 x 32 (its recipe only resizes); the others come in any shape
        image = Image.new("RGB", (32, 32) if name.startswith("cifar") else (40, 30), (10, 200, 30))
        train, test = build_transforms(name, image_size=16)
        assert train(image).shape == test(image).shape == (3, 16, 16), name


@pytest.mark.parametrize("name, ops, resize", [
    ("cifar10", ["Resize", "ToImage", "ToDtype", "Normalize"], [16]),
    ("flowers102", ["Resize", "ToImage", "ToDtype", "Normalize"], [16, 16]),
    ("caltech101", ["Resize", "CenterCrop", "ToImage", "ToDtype", "Normalize"], [18]),
    ("stanford_cars", ["Resize", "CenterCrop", "ToImage", "ToDtype", "Normalize"], [18, 18]),
    ("stanford_dogs", ["Resize", "CenterCrop", "ToImage", "ToDtype", "Normalize"], [18, 18]),
    ("dtd", ["Resize", "CenterCrop", "ToImage", "ToDtype", "Normalize"], [18]),
])
def test_eval_recipes_follow_the_official_code(name, ops, resize):
    _, test = build_transforms(name, image_size=16)
    assert [type(t).__name__ for t in test.transforms] == ops
    assert list(test.transforms[0].size) == resize
    train, _ = build_transforms(name, image_size=16)
    jitter = any(type(t).__name__ == "ColorJitter" for t in train.transforms)
    assert jitter == (name not in ("cifar10", "flowers102"))


def _epoch(dataset, workers: int, draw_seed):
    from flowvision.data.base import make_loader

    batches = make_loader(dataset, 4, shuffle=True, seed=5, num_workers=workers, draw_seed=draw_seed)
    return [(x, idx) for x, _, idx in batches]


def test_host_augmentation_is_the_same_for_any_number_of_workers():
    """On the PIL path each sample's crop, flip and jitter come from (seed, index), not from whichever
    worker process happened to load it: 0 and 2 workers give the same epoch, bit for bit."""
    from flowvision.data.base import Indexed
    from flowvision.data.recipes import Transformed

    rng = np.random.default_rng(0)
    images = [(Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)), 0) for _ in range(12)]
    train, _ = build_transforms("caltech101", image_size=8)  # RandomResizedCrop, flip, ColorJitter
    data = Indexed(Transformed(images, train))
    torch.manual_seed(0)
    main = _epoch(data, 0, draw_seed=5)
    after = torch.rand(3)
    two = _epoch(data, 2, draw_seed=5)
    assert [idx.tolist() for _, idx in main] == [idx.tolist() for _, idx in two]
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(main, two))
    torch.manual_seed(0)
    _epoch(data, 0, draw_seed=5)
    assert torch.equal(torch.rand(3), after)  # the caller's generator is untouched by the draws
    other = _epoch(data, 0, draw_seed=6)  # another epoch's draws (same order: the order has its own seed)
    assert not any(torch.equal(a, b) for (a, _), (b, _) in zip(main, other))
    unseeded = [_epoch(data, w, draw_seed=None) for w in (0, 2)]  # without it, the workers' seeds decide
    assert not all(torch.equal(a, b) for (a, _), (b, _) in zip(*unseeded))


def test_augment_false_gives_train_the_eval_transform():
    train, test = build_transforms("caltech101", image_size=16, augment=False)
    assert train is test
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8))
    train_aug, test_aug = build_transforms("caltech101", image_size=16)
    assert torch.equal(train(image), test(image))
    assert not torch.equal(train_aug(image), test_aug(image))  # random crop + jitter change pixels


# ------------------------------------------------------------------------------------- CIFAR
def test_cifar10_loads_generated_batches_with_cifar_normalisation(tmp_path):
    labels = write_cifar10(tmp_path)
    task = load_real_task("cifar10", tmp_path, image_size=16, augment=False)
    assert task.num_classes == 10 and len(task.train) == 20 and len(task.test) == 6
    flat = [lab for b in range(1, 6) for lab in labels[f"data_batch_{b}"]]
    assert [task.train[i][1] for i in range(20)] == flat
    image, label, index = task.train[7]  # batch 2, image 3: constant 10*label+3
    assert (label, index) == (flat[7], 7) and image.shape == (3, 16, 16)
    value = (10 * label + 3) / 255
    expected = torch.tensor([(value - m) / s for m, s in zip(CIFAR10_MEAN, CIFAR10_STD, strict=True)])
    assert torch.allclose(image.mean(dim=(1, 2)), expected, atol=1e-4)
    assert task.test[5][1] == labels["test_batch"][5]
    same = task.train_eval[7]
    assert torch.equal(same[0], image) and same[1:] == (label, 7)
    assert task.info["n_train"] == 20 and task.info["path"] == str(tmp_path / "cifar10")


def test_cifar100_reads_fine_labels(tmp_path):
    folder = tmp_path / "cifar100" / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, lab in (("train", [99, 5, 42]), ("test", [7, 0])):
        data = np.zeros((len(lab), 3072), np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "fine_labels": lab, "coarse_labels": [0] * len(lab)}, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"f{i}" for i in range(100)]}, f)
    task = load_real_task("cifar100", tmp_path, image_size=8)
    assert task.num_classes == 100
    assert [task.train[i][1] for i in range(3)] == [99, 5, 42] and task.test[0][1] == 7


def test_missing_cifar10_names_path_and_download_command(tmp_path):
    with pytest.raises(UserError) as e:
        load_real_task("cifar10", tmp_path)
    assert str(e.value) == (f"cifar10 not found under {tmp_path / 'cifar10'}: run "
                            f"`flowvision data download cifar10 --data-root {tmp_path}`")


def test_incomplete_or_truncated_cifar_is_a_user_error(tmp_path):
    write_cifar10(tmp_path)
    batches = tmp_path / "cifar10" / "cifar-10-batches-py"
    (batches / "data_batch_3").unlink()
    with pytest.raises(UserError, match="incomplete or corrupted.*data_batch_3 missing"):
        load_real_task("cifar10", tmp_path)
    write_cifar10(tmp_path / "other")
    test_batch = tmp_path / "other" / "cifar10" / "cifar-10-batches-py" / "test_batch"
    test_batch.write_bytes(test_batch.read_bytes()[:100])
    with pytest.raises(UserError, match="cannot parse the batch files"):
        load_real_task("cifar10", tmp_path / "other")


# ------------------------------------------------------------------------------ Flowers102
def test_flowers_missing_and_non_official_files(tmp_path):
    with pytest.raises(UserError, match=r"flowers102 not found under .*flowvision data download flowers102"):
        load_real_task("flowers102", tmp_path)
    base = tmp_path / "flowers102" / "flowers-102"
    write_image(base / "jpg" / "image_00001.jpg", (1, 2, 3))
    (base / "imagelabels.mat").write_bytes(b"not the official file")
    (base / "setid.mat").write_bytes(b"not the official file")
    with pytest.raises(UserError, match="flowers102 under .* is incomplete or corrupted"):
        load_real_task("flowers102", tmp_path)


# ------------------------------------------------------------------------------- Caltech101
def write_caltech(root: Path, classes=None, big=("Faces", "accordion", "zebra")) -> Path:
    """102 class folders; the ``big`` ones hold 33 images (30 train + 3 test), the rest 2."""
    classes = classes or ["BACKGROUND_Google"] + [f"class{i:03d}" for i in range(98)] + list(big)
    categories = root / "caltech101" / "101_ObjectCategories"
    for label, name in enumerate(sorted(classes)):
        for i in range(33 if name in big else 2):
            write_image(categories / name / f"image_{i + 1:04d}.jpg", colour_of(label), (8, 8))
    return categories


def test_caltech_split_is_30_per_class_saved_and_deterministic(tmp_path):
    write_caltech(tmp_path / "a")
    task = load_real_task("caltech101", tmp_path / "a", image_size=8)
    assert task.num_classes == 102
    split_file = tmp_path / "a" / "caltech101" / "flowvision-split-seed0.json"
    assert task.info["split_file"] == str(split_file)
    split = json.loads(split_file.read_text())
    per_class = Counter(p.split("/")[0] for p in split["train"])
    assert per_class["Faces"] == per_class["zebra"] == CALTECH_TRAIN_PER_CLASS
    assert per_class["class000"] == 1 and per_class["BACKGROUND_Google"] == 1
    assert len(task.train) == 3 * 30 + 99 and len(task.test) == 3 * 3 + 99
    assert not set(split["train"]) & set(split["test"])
    classes = sorted(split["classes"])
    faces = [i for i in range(len(task.train)) if task.train[i][1] == classes.index("Faces")]
    assert len(faces) == 30
    # the same files elsewhere give the same split; another seed gives another
    write_caltech(tmp_path / "b")
    load_real_task("caltech101", tmp_path / "b", image_size=8)
    again = json.loads((tmp_path / "b" / "caltech101" / "flowvision-split-seed0.json").read_text())
    assert again["train"] == split["train"]
    load_real_task("caltech101", tmp_path / "b", image_size=8, seed=1)
    other = json.loads((tmp_path / "b" / "caltech101" / "flowvision-split-seed1.json").read_text())
    assert other["train"] != split["train"]


def test_caltech_split_file_is_reused_not_recomputed(tmp_path):
    write_caltech(tmp_path)
    load_real_task("caltech101", tmp_path, image_size=8)
    split_file = tmp_path / "caltech101" / "flowvision-split-seed0.json"
    split = json.loads(split_file.read_text())
    moved = next(p for p in split["test"] if p.startswith("zebra/"))
    split["test"].remove(moved)
    split["train"].append(moved)  # an edit the hash rule would never produce
    split_file.write_text(json.dumps(split))
    task = load_real_task("caltech101", tmp_path, image_size=8)
    assert len(task.train) == 3 * 30 + 99 + 1
    assert Path(task.train.base.base.samples[-1][0]).as_posix().endswith(moved)  # Indexed(Transformed(ImageFiles))
    # new images make the saved split stale: say so instead of silently changing it
    write_image(tmp_path / "caltech101" / "101_ObjectCategories" / "zebra" / "image_9999.jpg", (0, 0, 0))
    with pytest.raises(UserError, match="does not match the images.*1 new.*delete it"):
        load_real_task("caltech101", tmp_path, image_size=8)
    split_file.write_text("{")
    with pytest.raises(UserError, match="split file .* is unreadable.*delete it"):
        load_real_task("caltech101", tmp_path, image_size=8)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores read-only permissions")
def test_caltech_split_goes_to_the_cache_when_data_is_read_only(tmp_path):
    write_caltech(tmp_path / "data")
    folder = tmp_path / "data" / "caltech101"
    folder.chmod(0o555)
    try:
        task = load_real_task("caltech101", tmp_path / "data", image_size=8)
    finally:
        folder.chmod(0o755)
    assert task.info["split_file"].startswith(str(tmp_path / "cache" / "splits"))
    assert not (folder / "flowvision-split-seed0.json").exists()


def test_caltech_split_goes_to_the_cache_when_it_cannot_be_written_next_to_the_data(tmp_path):
    write_caltech(tmp_path / "data")
    blocked = tmp_path / "data" / "caltech101" / "flowvision-split-seed0.json"
    blocked.mkdir()  # a folder where the file would go: the write fails even for root
    first = load_real_task("caltech101", tmp_path / "data", image_size=8)
    cached = Path(first.info["split_file"])
    assert cached.parent == tmp_path / "cache" / "splits" and cached.is_file()
    assert sorted(p.name for p in blocked.parent.iterdir()) == ["101_ObjectCategories", blocked.name]
    assert load_real_task("caltech101", tmp_path / "data", image_size=8).info["split_file"] == str(cached)


def test_caltech_without_background_class_is_incomplete(tmp_path):
    write_caltech(tmp_path, classes=[f"class{i:03d}" for i in range(98)] + ["Faces", "accordion", "zebra"])
    with pytest.raises(UserError, match="101 classes, expected 102"):
        load_real_task("caltech101", tmp_path)
    assert not (tmp_path / "caltech101" / "flowvision-split-seed0.json").exists()


def test_missing_caltech_leaves_no_folder_behind(tmp_path):
    with pytest.raises(UserError, match="caltech101 not found under"):
        load_real_task("caltech101", tmp_path)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- Stanford Dogs
def write_dogs(root: Path) -> tuple[list[str], list[str]]:
    images = root / "stanford_dogs" / "Images"
    breeds = [f"n02{i:06d}-breed{i}" for i in range(120)]
    train, test = [], []
    for label, breed in enumerate(breeds):
        for i in range(2):
            rel = f"{breed}/{breed[:9]}_{i}.jpg"
            write_image(images / rel, colour_of(label), (8, 8))
            (train if i == 0 else test).append(rel)
    return train, test


def test_dogs_follow_the_official_lists_in_their_order(tmp_path):
    train, test = write_dogs(tmp_path)
    folder = tmp_path / "stanford_dogs"
    train = train[::-1][:100]  # order and membership come from the list, not the folder
    (folder / "train_list.txt").write_text("\n".join(train) + "\n")
    (folder / "test_list.txt").write_text("\n".join("Images/" + p for p in test))
    task = load_real_task("stanford_dogs", tmp_path, image_size=8)
    assert task.num_classes == 120 and len(task.train) == 100 and len(task.test) == 120
    assert [task.train[i][1] for i in (0, 1, 99)] == [119, 118, 20]
    assert [task.test[i][1] for i in (0, 119)] == [0, 119]
    assert task.train[5][2] == 5


@pytest.fixture(scope="module")
def all_dogs(tmp_path_factory):
    """The full Stanford Dogs tree: 20,580 images over 120 breeds, hard links to one tiny JPEG (every
    file is checked before use, none is decoded here), no train/test lists. On a RAM disk where there
    is one: 20,580 file creations take seconds on some disks and a quarter of a second there."""
    import shutil
    import tempfile

    shm = Path("/dev/shm")
    root = Path(tempfile.mkdtemp(prefix="flowvision-dogs-", dir=shm)) if os.access(shm, os.W_OK) \
        else tmp_path_factory.mktemp("dogs")
    images = root / "stanford_dogs" / "Images"
    write_image(root / "one.jpg", (1, 2, 3), size=(8, 8))
    for label in range(120):
        breed = images / f"n02{label:06d}-breed{label}"
        breed.mkdir(parents=True)
        for i in range(172 if label < 60 else 171):  # 60 * 172 + 60 * 171 = 20,580
            os.link(root / "one.jpg", f"{breed}/n02{label:06d}_{i}.jpg")
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def dogs_paper(all_dogs):
    """The paper protocol's Stanford Dogs task over all_dogs, loaded once for the tests that only read it (each
    load checks 20,580 files): its default per-stage splits, and dogs_split=single."""
    return {"per-stage": load_real_task("stanford_dogs", all_dogs, image_size=8, protocol="paper"),  # the default
            "single": load_real_task("stanford_dogs", all_dogs, image_size=8, protocol="paper", dogs_split="single")}


def test_dogs_paper_split_is_a_seeded_80_20_of_all_images_tested_with_training_transforms(all_dogs, dogs_paper):
    from flowvision.data.loaders import load_real_splits

    task = dogs_paper["single"]
    assert (len(task.train), len(task.test)) == (16_464, 4_116) and task.splits == {}
    assert task.test.base.transform is task.train.base.transform  # the official test set is augmented
    assert task.train_eval.base.transform is not task.train.base.transform
    assert task.info["n_train"] == 16_464 and "paper protocol" in task.info["split"]
    assert task.info["dogs_split"] == "single"
    train, test = task.train.indices, task.test.indices  # positions into one pool of all images
    assert not set(train) & set(test) and len(set(train) | set(test)) == 20_580
    again, _, _ = load_real_splits("stanford_dogs", all_dogs, protocol="paper")
    other, _, _ = load_real_splits("stanford_dogs", all_dogs, seed=1, protocol="paper")
    assert again.indices == train and other.indices != train
    pool = task.train.base.base  # Indexed(Transformed(ImageFiles)): the checked files of the pool
    assert [again.dataset.samples[i] for i in again.indices] == [pool.samples[i] for i in train]
    labels = Counter(pool.samples[i][1] for i in train)
    assert len(labels) == 120 and 100 < min(labels.values())  # random, not class by class
    with pytest.raises(UserError, match="no train_list.txt"):  # the clean protocol still needs the official lists
        load_real_task("stanford_dogs", all_dogs)


def test_dogs_per_stage_splits_are_independent_draws_over_one_set_of_images(all_dogs, dogs_paper):
    """As the official scripts, each of which drew its own 80/20 split: the probe's (also standard FT's),
    FLOW round 1's and round 2's, so ~80% of a later split's test images trained an earlier stage."""
    from flowvision.data.splits import folder_relpaths, seen_shares

    task, single = dogs_paper["per-stage"], dogs_paper["single"]
    assert task.info["dogs_split"] == "per-stage" and set(task.splits) == {"round1", "round2"}
    assert task.train.indices == single.train.indices  # the probe's split is the single one
    pool = task.train.base.base
    for part in task.splits.values():
        assert (len(part.train), len(part.test)) == (16_464, 4_116) and part.train.base.base is pool
        assert part.test.base.transform is part.train.base.transform
    assert task.of_split("round1") is task.splits["round1"] and task.of_split("probe") is task
    assert single.of_split("round2") is single
    positions = {name: (t.train.indices, t.test.indices) for name, t in {"probe": task, **task.splits}.items()}
    seen = seen_shares([("probe", "probe"), ("finetune", "round1"), ("refit", "round2")], positions)
    assert seen["probe"]["seen"] == {} and set(seen["refit"]["seen"]) == {"probe", "finetune", "any"}
    for share in (seen["finetune"]["seen"]["probe"], seen["refit"]["seen"]["probe"], seen["refit"]["seen"]["finetune"]):
        assert 0.78 < share < 0.82  # 0.8 expected for independent draws (sd 0.006)
    assert 0.95 < seen["refit"]["seen"]["any"] < 0.97  # 1 - 0.2 · 0.2
    assert seen_shares([("probe", "probe"), ("finetune", "probe")], positions)["finetune"]["seen"] == {"probe": 0.0}
    images = all_dogs / "stanford_dogs" / "Images"
    assert folder_relpaths(images) == [Path(p).relative_to(images).as_posix() for p, _ in pool.samples]


def test_dogs_per_stage_splits_on_the_device_path_decode_the_images_once(tmp_path):
    write_dogs(tmp_path)  # 240 tiny images, no lists: the paper protocol needs none
    task = load_real_task("stanford_dogs", tmp_path, image_size=8, protocol="paper", data_path="device",
                          cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("decoded/*/images.npy"))) == 1 and task.info["decoded_all"]
    parts = [task, *task.splits.values()]
    assert all(t.train.base is task.train.base and t.test.base is task.train.base for t in parts)  # one array
    assert [(len(t.train), len(t.test)) for t in parts] == [(192, 48)] * 3
    assert len({tuple(t.test.indices) for t in parts}) == 3  # three draws
    x, label, index = task.splits["round2"].test[5]
    assert x.dtype == torch.uint8 and index == 5
    assert label == task.train.base.labels[task.splits["round2"].test.indices[5]]


def test_dry_run_prints_the_per_stage_dogs_splits_and_their_overlap(all_dogs):
    from typer.testing import CliRunner

    from flowvision.cli import app

    args = ["finetune", "--dataset", "stanford_dogs", "--protocol", "paper", "--data-root", str(all_dogs), "--dry-run"]
    res = CliRunner().invoke(app, args + ["--set", "dogs_split=per-stage"])
    assert res.exit_code == 2, res.output  # the weights and ImageNet are not here: the run would stop on them
    assert "Stanford Dogs splits — dogs_split=per-stage, data_seed 0, 20,580 images" in res.output
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in res.output.splitlines() if line.startswith("│ ") and "16,464" in line}
    assert rows["probe"] == ["probe (linear_probing.py, standard_ft.py)", "16,464", "4,116", "— (the first stage)"]
    assert rows["finetune"][:3] == ["round1 (FLOW_ft.py)", "16,464", "4,116"]
    assert rows["refit"][:3] == ["round2 (FLOW_taskspecific_ft.py)", "16,464", "4,116"]
    shares = [float(x) for x in re.findall(r"([\d.]+)% by", rows["refit"][3])]
    assert re.fullmatch(r"\d\d\.\d% by probe", rows["finetune"][3]) and len(shares) == 3
    assert all(78 < x < 82 for x in shares[:2]) and 95 < shares[2] < 97  # probe, finetune; any earlier stage
    single = CliRunner().invoke(app, args + ["--set", "dogs_split=single"])
    assert single.exit_code == 2 and single.output.count("0.0% by probe") == 2, single.output


def test_a_dogs_record_carries_its_split_overlap_and_older_records_read_as_single(dogs_paper):
    from flowvision.core import config
    from flowvision.stages.record import from_dict, split_overlap

    task = dogs_paper["per-stage"]
    flow = split_overlap(task, config.resolve("stanford_dogs", "resnet18", "flow", {"protocol": "paper"}))
    assert [(stage, row["split"]) for stage, row in flow.items()] == [("probe", "probe"), ("finetune", "round1"),
                                                                      ("refit", "round2")]
    assert 0.78 < flow["finetune"]["seen"]["probe"] < 0.82 and 0.95 < flow["refit"]["seen"]["any"] < 0.97
    ft = split_overlap(task, config.resolve("stanford_dogs", "resnet18", "ft", {"protocol": "paper"}))
    assert ft["finetune"] == {"split": "probe", "n_train": 16_464, "n_test": 4_116, "seen": {"probe": 0.0}}
    assert split_overlap(task, config.resolve("cifar10", "resnet18", "flow", {"protocol": "paper"})) == {}
    old = {"run_id": "r", "dataset": "stanford_dogs", "model": "resnet18", "method": "flow", "seed": 0,
           "target_acc": 0.5, "schema_version": 4, "protocol": "paper"}
    record, notes = from_dict(old)
    assert record.dogs_split == "single" and record.split_overlap == {}
    assert not any("dogs_split" in n or "split_overlap" in n for n in notes)
    assert from_dict(dict(old, dataset="cifar10"))[0].dogs_split is None


def test_dogs_list_naming_a_missing_image_is_a_user_error(tmp_path):
    train, test = write_dogs(tmp_path)
    folder = tmp_path / "stanford_dogs"
    (folder / "train_list.txt").write_text("\n".join(train + ["n02000001-breed1/nope.jpg"]))
    (folder / "test_list.txt").write_text("\n".join(test))
    with pytest.raises(UserError, match="1 images of train_list not under Images/, e.g. n02000001-breed1/nope.jpg"):
        load_real_task("stanford_dogs", tmp_path)


def test_dogs_mat_lists_need_scipy_or_txt(tmp_path):
    train, test = write_dogs(tmp_path)
    folder = tmp_path / "stanford_dogs"
    try:
        from scipy.io import savemat
    except ImportError:
        (folder / "train_list.mat").write_bytes(b"MATLAB 5.0")
        (folder / "test_list.mat").write_bytes(b"MATLAB 5.0")
        with pytest.raises(UserError, match="needs scipy.*pip install scipy, or write train_list.txt"):
            load_real_task("stanford_dogs", tmp_path)
        return
    for name, paths in (("train", train), ("test", test)):
        savemat(folder / f"{name}_list.mat", {"file_list": np.array(paths, dtype=object).reshape(-1, 1),
                                              "labels": np.arange(1, 121).reshape(-1, 1)})
    task = load_real_task("stanford_dogs", tmp_path, image_size=8)
    assert len(task.train) == 120 and [task.train[i][1] for i in (0, 37)] == [0, 37]


def test_missing_dogs_points_to_the_prepare_command(tmp_path):
    with pytest.raises(UserError) as e:
        load_real_task("stanford_dogs", tmp_path)
    assert str(e.value) == (f"stanford_dogs not found under {tmp_path / 'stanford_dogs'}: see "
                            f"`flowvision data status --data-root {tmp_path}` for where to get it and the "
                            f"`flowvision data prepare stanford_dogs` command that unpacks it")
    write_dogs(tmp_path)
    with pytest.raises(UserError, match="no train_list.txt or train_list.mat"):
        load_real_task("stanford_dogs", tmp_path)


# --------------------------------------------------------------------------- Stanford Cars
def test_cars_train_and_test_folders(tmp_path):
    for split, n in (("train", 2), ("test", 1)):
        for label in range(196):
            for i in range(n):
                write_image(tmp_path / "stanford_cars" / split / f"Car {label:03d}" / f"{i}.jpg",
                            colour_of(label), (8, 8))
    task = load_real_task("stanford_cars", tmp_path, image_size=16)
    assert len(task.train) == 392 and len(task.test) == 196 and task.num_classes == 196
    image, label, index = task.test[150]
    assert (label, index) == (150, 150) and image.shape == (3, 16, 16)
    expected = torch.tensor([(c / 255 - m) / s for c, m, s in zip(colour_of(150), IMAGENET_MEAN, IMAGENET_STD, strict=True)])
    assert torch.allclose(image.mean(dim=(1, 2)), expected, atol=0.03)  # jpeg rounding
    (tmp_path / "stanford_cars" / "test" / "Car 007").rename(tmp_path / "stanford_cars" / "test" / "Car X")
    with pytest.raises(UserError, match="train and test classes differ, e.g. 'Car 007'"):
        load_real_task("stanford_cars", tmp_path)


# ------------------------------------------------------------------------------ DTD, Pets
def test_dtd_trains_on_train1_plus_val1(tmp_path):
    data = tmp_path / "dtd" / "dtd"
    classes = [f"texture{i:02d}" for i in range(47)]
    for split in ("train", "val", "test"):
        lines = []
        for label, cls in enumerate(classes):
            write_image(data / "images" / cls / f"{cls}_{split}.jpg", colour_of(label), (8, 8))
            lines.append(f"{cls}/{cls}_{split}.jpg")
        (data / "labels").mkdir(exist_ok=True)
        (data / "labels" / f"{split}1.txt").write_text("\n".join(lines) + "\n")
    task = load_real_task("dtd", tmp_path, image_size=8)
    assert task.num_classes == 47 and len(task.train) == 94 and len(task.test) == 47
    assert [task.train[i][1] for i in (0, 46, 47, 93)] == [0, 46, 0, 46]
    (data / "labels" / "test1.txt").write_text("texture00/texture00_test.jpg\n")
    with pytest.raises(UserError, match="dtd under .* incomplete"):
        load_real_task("dtd", tmp_path)


def test_oxford_pets_trainval_and_test(tmp_path):
    base = tmp_path / "oxford_pets" / "oxford-iiit-pet"
    (base / "annotations").mkdir(parents=True)
    for split in ("trainval", "test"):
        lines = []
        for label in range(37):
            image_id = f"Breed_{label:02d}_{split}"
            write_image(base / "images" / f"{image_id}.jpg", colour_of(label), (8, 8))
            lines.append(f"{image_id} {label + 1} {1 + label % 2} 1")
        (base / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    task = load_real_task("oxford_pets", tmp_path, image_size=8)
    assert task.num_classes == 37 and len(task.train) == len(task.test) == 37
    assert task.train[36][1] == 36 and task.test[3][1] == 3
    batch = next(iter(torch.utils.data.DataLoader(task.train, batch_size=8)))
    assert batch[0].shape == (8, 3, 8, 8) and batch[2].tolist() == list(range(8))
    with pytest.raises(UserError, match=r"oxford_pets not found under .*oxford_pets: run `flowvision data download"):
        load_real_task("oxford_pets", tmp_path / "elsewhere")
