"""`flowvision data prepare imagenet|stanford_dogs|stanford_cars` on small archives in the real formats:
the folders they make load through the ordinary loaders and `data status` finds them; a damaged,
cut-short or wrong archive is one line, exit code 2, and leaves nothing that looks complete."""
from __future__ import annotations

import builtins
import gzip
import io
import random
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat
from typer.testing import CliRunner

from flowvision.cli.data import data_app
from flowvision.data import prepare
from flowvision.data.fetch import data_status
from flowvision.data.imagenet import ImageNetCountWarning, imagenet_synsets, load_imagenet_eval
from flowvision.data.real import load_real_task
from flowvision.core.errors import UserError

WIDE = {"COLUMNS": "250"}


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWVISION_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FLOWVISION_QUIET", "1")
    monkeypatch.delenv("FLOWVISION_DATA", raising=False)
    monkeypatch.delenv("FLOWVISION_IMAGENET", raising=False)


def jpeg(shade: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (shade % 256, 40, 90)).save(buf, "JPEG")
    return buf.getvalue()


def write_tar(path: Path, files: dict, mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def mat_bytes(obj: dict) -> bytes:
    buf = io.BytesIO()
    savemat(buf, obj)
    return buf.getvalue()


def run(*args):
    result = CliRunner().invoke(data_app, [str(a) for a in args], env=WIDE)
    return result, " ".join(result.output.split())


def one_line_error(result) -> str:
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and lines[0].startswith("error: ")
    return " ".join(result.output.split())


def nothing_left(parent: Path, name: str) -> bool:
    """No ``name`` folder and no partial one beside it."""
    return not (parent / name).exists() and not (parent / f".{name}.partial").exists()


# ------------------------------------------------------------------------------------------- ImageNet
SYNSETS = imagenet_synsets()[:3]          # tench, goldfish, great white shark: real IN-1K synsets
PER_CLASS = 2                             # the real devkit: 50 per class, 50,000 in all


def write_devkit(path: Path, labels=None, meta: bytes | None = None, drop: str = "") -> Path:
    """ILSVRC2012_devkit_t12.tar.gz as the real one is laid out: the ground truth (one ILSVRC2012_ID per
    line, by val file number) and meta.mat's synsets struct (the leaves, and one inner synset, as in the
    real file's 1860 entries)."""
    fields = ("ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height",
              "num_train_images")
    rows = [(i + 1, w, f"class {i}", "a gloss", 0, np.zeros(0), 0, 1300) for i, w in enumerate(SYNSETS)]
    rows.append((1001, "n00001740", "entity", "the root", 3, np.array([1, 2, 3]), 19, 0))
    synsets = np.array(rows, dtype=[(f, "O") for f in fields]).reshape(-1, 1)
    labels = labels if labels is not None else ground_truth()
    files = {"ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt":
             "".join(f"{i}\n" for i in labels).encode(),
             "ILSVRC2012_devkit_t12/data/meta.mat": meta if meta is not None else mat_bytes({"synsets": synsets})}
    return write_tar(path, {k: v for k, v in files.items() if not drop or not k.endswith(drop)}, "w:gz")


def ground_truth() -> list[int]:
    """ILSVRC2012_IDs (1-based, meta.mat's) of the val images, in file-number order, classes interleaved."""
    return [1 + (i * 2) % 3 for i in range(PER_CLASS * len(SYNSETS))]   # 1, 3, 2, 1, 3, 2


def val_files(n: int) -> dict:
    return {f"ILSVRC2012_val_{i:08d}.JPEG": jpeg(i) for i in range(1, n + 1)}


@pytest.fixture
def in1k(tmp_path):
    labels = ground_truth()
    return (write_tar(tmp_path / "ILSVRC2012_img_val.tar", val_files(len(labels))),
            write_devkit(tmp_path / "ILSVRC2012_devkit_t12.tar.gz"), tmp_path / "data" / "imagenet" / "val")


def test_imagenet_val_is_sorted_by_the_devkit_and_loads_as_the_val_set(in1k, tmp_path):
    val_tar, devkit, out = in1k
    result, text = run("prepare", "imagenet", "--val-tar", val_tar, "--devkit", devkit,
                       "--data-root", tmp_path / "data")                     # --out: <data-root>/imagenet/val
    assert result.exit_code == 0, result.output
    assert f"use it with --imagenet {out} or export FLOWVISION_IMAGENET={out}" in text
    assert f"{out} now holds 6 images in 3 synset folders" in text
    assert ("note: ILSVRC2012_devkit_t12.tar.gz is not the official ILSVRC2012_devkit_t12.tar.gz (its md5 differs "
            "from torchvision's record): the images are sorted by its labels") in text
    # ILSVRC2012_val_00000002.JPEG has ground truth 3: the third leaf, SYNSETS[2]
    assert sorted(p.name for p in (out / SYNSETS[2]).iterdir()) == ["ILSVRC2012_val_00000002.JPEG",
                                                                    "ILSVRC2012_val_00000005.JPEG"]
    with pytest.warns(ImageNetCountWarning, match="holds 3 of the 1000 classes and 6 images"):
        val = load_imagenet_eval(out, None)
    order = imagenet_synsets()
    assert sorted((Path(p).name, order[label]) for p, label in val.base.samples) == sorted(
        (f"ILSVRC2012_val_{i + 1:08d}.JPEG", SYNSETS[g - 1]) for i, g in enumerate(ground_truth()))
    row = data_status(tmp_path / "data", imagenet=out)[-1]
    assert row["found"] and row["n_test"] == 6
    assert sorted(p.name for p in out.parent.iterdir()) == [".val.prepare.lock", "val"]  # no .val.partial


def test_running_it_again_on_the_finished_folder_is_a_no_op(in1k, monkeypatch):
    val_tar, devkit, out = in1k
    assert run("prepare", "imagenet", "--val-tar", val_tar, "--devkit", devkit, "--out", out)[0].exit_code == 0
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    monkeypatch.setenv("FLOWVISION_IMAGENET", str(out))                   # --out defaults to it
    result, text = run("prepare", "imagenet", "--val-tar", val_tar, "--devkit", devkit)
    assert result.exit_code == 0 and f"{out} already holds 6 images in 3 synset folders" in text
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def cut_at(path: Path, offset: int) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[:offset])
    return path


@pytest.mark.parametrize("where", ["inside an image", "between two images", "inside a header"])
def test_a_cut_short_val_tar_is_one_line_and_leaves_nothing(in1k, where):
    val_tar, devkit, out = in1k
    # Each member: a 512-byte header and its data padded to 512; the fourth member's header starts here.
    fourth = sum(512 + -(-len(jpeg(i)) // 512) * 512 for i in (1, 2, 3))
    cut_at(val_tar, {"inside an image": fourth + 700, "between two images": fourth,
                     "inside a header": fourth + 100}[where])
    text = one_line_error(run("prepare", "imagenet", "--val-tar", val_tar, "--devkit", devkit, "--out", out)[0])
    assert "ILSVRC2012_img_val.tar" in text and ("cut short" in text or "damaged" in text)
    assert nothing_left(out.parent, "val")


def test_a_val_tar_with_fewer_images_than_the_devkit_labels_is_refused(in1k, tmp_path):
    _, devkit, out = in1k
    val_tar = write_tar(tmp_path / "five.tar", val_files(5))
    text = one_line_error(run("prepare", "imagenet", "--val-tar", val_tar, "--devkit", devkit, "--out", out)[0])
    assert "five.tar holds 5 of the 6 images the devkit labels" in text and f"nothing was written to {out}" in text
    assert nothing_left(out.parent, "val")


def test_archives_that_are_not_the_val_set_or_its_devkit_are_refused(in1k, tmp_path):
    val_tar, devkit, out = in1k
    train_like = write_tar(tmp_path / "train.tar", {"n01440764.tar": b"x" * 600})
    cases = {
        (train_like, devkit): "train.tar is not the ILSVRC2012 validation archive: it holds 'n01440764.tar'",
        (write_tar(tmp_path / "big.tar", val_files(7)), devkit): "holds image 7, but the devkit labels images 1 to 6",
        (val_tar, write_devkit(tmp_path / "d1.tar.gz", drop="meta.mat")):
            "d1.tar.gz is not the ILSVRC2012 devkit (no data/meta.mat in it)",
        (val_tar, write_devkit(tmp_path / "d2.tar.gz", labels=[1, 2, 9, 1, 2, 3])):
            "names class 9, which data/meta.mat does not list",
        (val_tar, write_devkit(tmp_path / "d3.tar.gz", meta=mat_bytes({"classes": np.arange(3)}))):
            "data/meta.mat is not the ILSVRC2012 synset list",
        (val_tar, cut_at(write_devkit(tmp_path / "d4.tar.gz"), 300)): "d4.tar.gz is damaged, cut short",
        (val_tar, tmp_path / "nowhere.tar.gz"): f"devkit {tmp_path / 'nowhere.tar.gz'} not found",
    }
    for (tar, kit), message in cases.items():
        text = one_line_error(run("prepare", "imagenet", "--val-tar", tar, "--devkit", kit, "--out", out)[0])
        assert message in text, text
        assert nothing_left(out.parent, "val")


def test_the_leftovers_of_an_interrupted_run_are_removed_not_used(in1k):
    val_tar, devkit, out = in1k
    stale = out.parent / ".val.partial" / "val" / SYNSETS[0]
    stale.mkdir(parents=True)
    (stale / "ILSVRC2012_val_00000099.JPEG").write_bytes(jpeg())
    assert run("prepare", "imagenet", "--val-tar", val_tar, "--devkit", devkit, "--out", out)[0].exit_code == 0
    assert not (out.parent / ".val.partial").exists() and len(list(out.rglob("*.JPEG"))) == 6


def test_a_folder_in_the_way_is_never_touched(in1k):
    val_tar, devkit, out = in1k
    (out / SYNSETS[0]).mkdir(parents=True)
    (out / SYNSETS[0] / "mine.JPEG").write_bytes(jpeg())
    text = one_line_error(run("prepare", "imagenet", "--val-tar", val_tar, "--devkit", devkit, "--out", out)[0])
    assert f"{out} exists but is not complete (1 of the 6 images the devkit labels" in text
    assert [p.name for p in out.rglob("*")] == [SYNSETS[0], "mine.JPEG"]


def test_a_full_disk_is_one_line_and_leaves_nothing(in1k, monkeypatch):
    val_tar, devkit, out = in1k
    # Every file written is opened on /dev/full: the kernel's own ENOSPC at the first write.
    monkeypatch.setattr(prepare, "open", lambda path, mode="r": builtins.open("/dev/full" if "w" in mode else path,
                                                                              mode), raising=False)
    text = one_line_error(run("prepare", "imagenet", "--val-tar", val_tar, "--devkit", devkit, "--out", out)[0])
    assert "no space left on the disk of" in text
    assert nothing_left(out.parent, "val")


# ------------------------------------------------------------------------------------ Stanford Dogs
BREEDS = [f"n02{i:06d}-breed_{i}" for i in range(120)]


def dogs_archives(tmp_path: Path, n_breeds: int = 120) -> tuple[Path, Path]:
    """images.tar (Images/<breed>/<id>.jpg) and lists.tar (file_list.mat, train_list.mat, test_list.mat
    at its top, each with a file_list of paths relative to Images/), as Stanford distributes them."""
    train = [f"{b}/{b[:9]}_1.jpg" for b in BREEDS[:n_breeds]]
    test = [f"{b}/{b[:9]}_2.jpg" for b in BREEDS[:n_breeds]]
    images = write_tar(tmp_path / "images.tar", {f"Images/{p}": jpeg(i) for i, p in enumerate(train + test)})

    def mat(paths):
        return mat_bytes({"file_list": np.array(paths, dtype=object).reshape(-1, 1),
                          "labels": np.arange(1, len(paths) + 1).reshape(-1, 1)})
    lists = write_tar(tmp_path / "lists.tar", {"file_list.mat": mat(train + test), "train_list.mat": mat(train),
                                               "test_list.mat": mat(test)})
    return images, lists


def test_stanford_dogs_is_unpacked_checked_and_loads(tmp_path):
    images, lists = dogs_archives(tmp_path)
    root = tmp_path / "data"
    result, text = run("prepare", "stanford_dogs", "--images", images, "--lists", lists, "--data-root", root)
    assert result.exit_code == 0, result.output
    assert f"stanford_dogs: {root / 'stanford_dogs'} now holds 120 train / 120 test images" in text
    task = load_real_task("stanford_dogs", root, image_size=8)
    assert (len(task.train), len(task.test), task.num_classes) == (120, 120, 120)
    assert {r["name"]: r["found"] for r in data_status(root)}["stanford_dogs"]
    again, text = run("prepare", "stanford_dogs", "--images", images, "--lists", lists, "--data-root", root)
    assert again.exit_code == 0 and "already holds 120 train / 120 test images" in text


def test_swapped_cut_or_incomplete_dogs_archives_are_refused(tmp_path):
    images, lists = dogs_archives(tmp_path)
    root = tmp_path / "data"
    text = one_line_error(run("prepare", "stanford_dogs", "--images", lists, "--lists", images, "--data-root", root)[0])
    assert "lists.tar is not Stanford Dogs' images.tar: it holds " in text and "(is it lists.tar?)" in text
    assert nothing_left(root, "stanford_dogs")
    short = cut_at(tmp_path / "images.tar", images.stat().st_size // 2)
    text = one_line_error(run("prepare", "stanford_dogs", "--images", short, "--lists", lists, "--data-root", root)[0])
    assert "images.tar is damaged, cut short" in text and nothing_left(root, "stanford_dogs")
    few = tmp_path / "few"
    few.mkdir()
    images, lists = dogs_archives(few, n_breeds=119)
    text = one_line_error(run("prepare", "stanford_dogs", "--images", images, "--lists", lists, "--data-root", root)[0])
    assert "images.tar and lists.tar did not make a complete stanford_dogs, so nothing was put in place" in text
    assert "119 classes, expected 120" in text and nothing_left(root, "stanford_dogs") and ".partial" not in text


# ------------------------------------------------------------------------------------ Stanford Cars
def cars_zip(path: Path, n_classes: int = 196) -> Path:
    """The Kaggle copy 'stanford-car-dataset-by-classes-folder': the class folders under
    car_data/car_data/{train,test}/, the CSV annotations beside them."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("names.csv", "AM General Hummer SUV 2000\n")
        for c in range(n_classes):
            for split in ("train", "test"):
                zf.writestr(f"car_data/car_data/{split}/Car Model {c:03d} 2012/{split}_{c:05d}.jpg", jpeg(c))
    return path


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_stanford_cars_is_unpacked_checked_and_loads(tmp_path, kind):
    root = tmp_path / "data"
    archive = cars_zip(tmp_path / "archive.zip")
    if kind == "tar.gz":  # the same tree as a tar stream, under a folder of another name
        with zipfile.ZipFile(archive) as zf:
            archive = write_tar(tmp_path / "cars.tar.gz", {f"cars/{n}": zf.read(n) for n in zf.namelist()}, "w:gz")
    result, text = run("prepare", "stanford_cars", "--archive", archive, "--data-root", root)
    assert result.exit_code == 0, result.output
    assert f"stanford_cars: {root / 'stanford_cars'} now holds 196 train / 196 test images" in text
    task = load_real_task("stanford_cars", root, image_size=8)
    assert (len(task.train), len(task.test), task.num_classes) == (196, 196, 196)
    assert sorted(p.name for p in (root / "stanford_cars").iterdir()) == ["test", "train"]  # no CSV, no car_data/
    assert {r["name"]: r["found"] for r in data_status(root)}["stanford_cars"]


def test_damaged_or_incomplete_cars_archives_are_refused(tmp_path):
    root = tmp_path / "data"
    whole = cars_zip(tmp_path / "archive.zip")
    short = tmp_path / "short.zip"
    short.write_bytes(whole.read_bytes()[: whole.stat().st_size * 2 // 3])
    text = one_line_error(run("prepare", "stanford_cars", "--archive", short, "--data-root", root)[0])
    assert "short.zip is damaged, cut short or not a tar/zip archive" in text and nothing_left(root, "stanford_cars")
    text = one_line_error(run("prepare", "stanford_cars", "--archive", cars_zip(tmp_path / "195.zip", 195),
                              "--data-root", root)[0])
    assert "195.zip did not make a complete stanford_cars" in text and "195 classes, expected 196" in text
    assert ".partial" not in text and "what was unpacked is removed" in text  # no pointer to the removed folder
    assert nothing_left(root, "stanford_cars")
    dogs_images, _ = dogs_archives(tmp_path)
    text = one_line_error(run("prepare", "stanford_cars", "--archive", dogs_images, "--data-root", root)[0])
    assert "images.tar is not Stanford Cars sorted by class" in text and nothing_left(root, "stanford_cars")


def test_status_names_the_prepare_command_for_each_archive(tmp_path):
    result, text = run("status", "--data-root", tmp_path)
    assert result.exit_code == 0
    for command in (f"flowvision data prepare stanford_cars --archive FILE --data-root {tmp_path}",
                    f"flowvision data prepare stanford_dogs --images images.tar --lists lists.tar --data-root {tmp_path}",
                    "flowvision data prepare imagenet --val-tar ILSVRC2012_img_val.tar --devkit "
                    "ILSVRC2012_devkit_t12.tar.gz --out DIR"):
        assert command in text
    assert "valprep" not in text


@pytest.mark.parametrize("compress", [False, True])
def test_members_are_read_one_at_a_time_and_a_tar_cut_between_two_is_found(tmp_path, compress):
    files = {f"f{i}": random.Random(i).randbytes(3000) for i in range(3)}
    plain = write_tar(tmp_path / "x.tar", files)
    third = tarfile.open(plain).getmembers()[2].offset            # where the third member's header starts

    def saved(data: bytes, name: str) -> Path:
        path = tmp_path / name
        path.write_bytes(gzip.compress(data) if compress else data)
        return path
    whole = saved(plain.read_bytes(), "whole.tar")
    assert [(name, f.read(), size) for name, f, size in prepare.members(whole)] == [(n, d, len(d)) for n, d in files.items()]
    for end in (third, third + 100):                              # at it, inside it: tarfile stops quietly
        with pytest.raises(UserError, match="ends before its end-of-archive marker"):
            [f.read() for _, f, _ in prepare.members(saved(plain.read_bytes()[:end], f"cut{end}.tar"))]


# ------------------------------------------------------------------------------ links where it writes
def _listing(folder: Path) -> dict:
    """Every path under ``folder`` -> its bytes (files), its target (links) or None (folders)."""
    return {str(p.relative_to(folder)): (str(p.readlink()) if p.is_symlink() else p.read_bytes() if p.is_file()
                                         else None) for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("where", [".stanford_cars.partial", ".stanford_cars.prepare.lock", "stanford_cars",
                                   "dangling stanford_cars"])
@pytest.mark.parametrize("archive_kind", ["good", "damaged"])
def test_a_link_planted_where_prepare_writes_leaves_its_target_untouched(tmp_path, where, archive_kind):
    """The staging folder, its lock and the destination, each a symbolic link out of the data root: one
    line naming the link, exit 2, and the folder it points into byte-identical (a sentinel and a folder of
    the data set's name in it stay where they are)."""
    root, outside = tmp_path / "data", tmp_path / "elsewhere"
    root.mkdir()
    (outside / "stanford_cars" / "train").mkdir(parents=True)
    (outside / "stanford_cars" / "train" / "mine.jpg").write_bytes(jpeg())
    (outside / "sentinel.txt").write_text("keep me")
    name = where.split()[-1]
    target = {".stanford_cars.prepare.lock": outside / "sentinel.txt", "stanford_cars": outside / "empty",
              "dangling stanford_cars": outside / "not-there"}.get(where, outside)
    if where == "stanford_cars":
        target.mkdir()
    (root / name).symlink_to(target)
    before = _listing(outside)
    archive = cars_zip(tmp_path / "archive.zip")
    if archive_kind == "damaged":
        archive.write_bytes(archive.read_bytes()[: archive.stat().st_size * 2 // 3])
    text = one_line_error(run("prepare", "stanford_cars", "--archive", archive, "--data-root", root)[0])
    assert f"{root / name} " in text and "is a symbolic link to" in text and "remove the link" in text, text
    assert _listing(outside) == before
    assert (root / name).is_symlink()  # the link itself is the user's to remove


def test_a_complete_folder_behind_a_link_is_left_as_it_is(tmp_path):
    root, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    archive = cars_zip(tmp_path / "archive.zip")
    assert run("prepare", "stanford_cars", "--archive", archive, "--data-root", elsewhere)[0].exit_code == 0
    root.mkdir()
    (root / "stanford_cars").symlink_to(elsewhere / "stanford_cars")
    before = _listing(elsewhere)
    result, text = run("prepare", "stanford_cars", "--archive", archive, "--data-root", root)
    assert result.exit_code == 0 and "already" in text, text
    assert _listing(elsewhere) == before


# ------------------------------------------------------------------------ a table of hostile archives
def _cars_with(tmp_path: Path, name: str, change) -> Path:
    """A Cars zip of 3 classes (what is placed is checked before the class count is) with one member
    changed: ``change(i, name, data)`` -> (name, data)."""
    good = cars_zip(tmp_path / "good.zip", n_classes=3)
    path = tmp_path / f"{name}.zip"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for i, info in enumerate(src.infolist()):
            dst.writestr(*change(i, info.filename, src.read(info)))
    return path


def _declared(path: Path, size: int) -> Path:
    """``path`` (a zip) whose second member's central-directory entry declares ``size`` bytes."""
    data = bytearray(path.read_bytes())
    entry = data.find(b"PK\x01\x02", data.find(b"PK\x01\x02") + 4)
    data[entry + 24:entry + 28] = size.to_bytes(4, "little")
    path.write_bytes(bytes(data))
    return path


def _tar_declaring(path: Path, size: int) -> Path:
    """A .tar.gz of a Cars tree whose second member's header declares ``size`` bytes (and holds a few)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("car_data/train/A 2012/a.jpg")
        info.size = len(jpeg())
        tar.addfile(info, io.BytesIO(jpeg()))
    header = tarfile.TarInfo("car_data/train/A 2012/bomb.jpg")
    header.size = size
    first = 512 + -(-len(jpeg()) // 512) * 512  # its header and its data, padded to a block
    path.write_bytes(gzip.compress(raw.getvalue()[:first] + header.tobuf() + bytes(8192)))
    return path


def _dogs_listing(tmp_path: Path, train_of) -> tuple:
    """Stanford Dogs' archives whose train_list is ``train_of(the real train list)``."""
    images, _ = dogs_archives(tmp_path)
    train = [f"{b}/{b[:9]}_1.jpg" for b in BREEDS]
    test = [f"{b}/{b[:9]}_2.jpg" for b in BREEDS]

    def mat(paths):
        return mat_bytes({"file_list": np.array(paths, dtype=object).reshape(-1, 1),
                          "labels": np.arange(1, len(paths) + 1).reshape(-1, 1)})
    lists = write_tar(tmp_path / "lists.tar", {"file_list.mat": mat(train + test),
                                               "train_list.mat": mat(train_of(train)), "test_list.mat": mat(test)})
    return ("prepare", "stanford_dogs", "--images", images, "--lists", lists)


def _devkit_bomb(tmp_path: Path) -> tuple:
    """An ImageNet devkit whose meta.mat declares 40 MiB (decompressing to hundreds of MB once read whole)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        header = tarfile.TarInfo("ILSVRC2012_devkit_t12/data/meta.mat")
        header.size = 40 << 20
        tar.addfile(header, io.BytesIO(bytes(40 << 20)))
    devkit = tmp_path / "ILSVRC2012_devkit_t12.tar.gz"
    devkit.write_bytes(gzip.compress(raw.getvalue(), compresslevel=1))
    val = write_tar(tmp_path / "ILSVRC2012_img_val.tar", val_files(6))
    return ("prepare", "imagenet", "--val-tar", val, "--devkit", devkit, "--out", tmp_path / "data" / "imagenet" / "val")


def _cars(change=None, name="x"):
    return lambda tmp_path: ("prepare", "stanford_cars", "--archive", _cars_with(tmp_path, name, change))


EMPTY = lambda i, n, d: (n, b"" if i == 5 else d)  # noqa: E731 (a table of one-liners)
HOSTILE = {
    "empty image": (_cars(EMPTY), "1 of the 6 images cannot be read", "(empty file)"),
    "one-byte image": (_cars(lambda i, n, d: (n, b"\xff" if i == 5 else d)), "1 of the 6 images cannot be read",
                       "not an image PIL can read"),
    "half an image": (_cars(lambda i, n, d: (n, d[:len(d) // 2] if i == 5 else d)), "cannot be read", "cut short"),
    "long member name": (_cars(lambda i, n, d: (n.replace("train_00002", "x" * 300) if i == 5 else n, d)),
                         "too long for a file name", "nothing was put in place"),
    "zip declaring 2 GiB": (lambda t: ("prepare", "stanford_cars", "--archive", _declared(cars_zip(t / "b.zip", 3), 2 ** 31)),
                            "of 2,048 MiB, more than any image file", "decompression bomb"),
    "real 65 MiB zip bomb": (_cars(lambda i, n, d: (n, bytes(65 << 20) if i == 5 else d)),
                             "of 65 MiB, more than any image file", "nothing was put in place"),
    "tar.gz declaring 2 GiB": (lambda t: ("prepare", "stanford_cars", "--archive", _tar_declaring(t / "b.tar.gz", 2 ** 31)),
                               "of 2,048 MiB, more than any image file", "bomb.jpg"),
    "devkit bomb": (_devkit_bomb, "of 40 MiB, more than any list file", "meta.mat"),
    "dogs: empty train list": (lambda t: _dogs_listing(t, lambda train: []), "train_list names no image",
                               "nothing was put in place"),
    "dogs: an image twice": (lambda t: _dogs_listing(t, lambda train: train + train[:1]), "train_list names", "twice"),
}


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_every_hostile_archive_class_is_one_line_and_writes_nothing_outside(kind, tmp_path):
    """Empty, one-byte and half images, member names too long for a file name, members that declare (or
    decompress to) more than their kind ever is, a devkit that would read as hundreds of MB, a Dogs list that
    names no image or one twice: one line, exit 2, nothing left in the data root, and no file anywhere else."""
    make, *needles = HOSTILE[kind]
    args = make(tmp_path)
    before = {p for p in tmp_path.rglob("*")}
    root = tmp_path / "data"
    result, text = run(*args, *(["--data-root", root] if "imagenet" not in args else []))
    one_line_error(result)
    assert all(n in text for n in needles), text
    assert not [p for p in tmp_path.rglob("*") if p not in before and root not in p.parents and p != root]
    left = [p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".lock")] if root.exists() else []
    assert not left, left


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs a read-only file system at /sys (Linux)")
def test_a_data_root_that_cannot_be_written_is_one_line(tmp_path):
    """/sys refuses new files even to root (a chmod would not, under root): the read-only data root."""
    text = one_line_error(run("prepare", "stanford_cars", "--archive", cars_zip(tmp_path / "a.zip"),
                              "--data-root", "/sys/kernel")[0])
    assert "/sys/kernel" in text and "choose a data root you can write" in text
