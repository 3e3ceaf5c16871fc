"""One pipeline cell at real scale on generated data, timed stage by stage: what `make gpu-check` runs.

    cell = run_cell(Path("work"), "bf16", REAL, device="cuda")   # {"stages": [...], "seconds", "images_per_s", ...}

The cell is an ordinary run (``run.run``) through every stage a FLOW + WiSE-FT run reaches: a folder
data set of generated 256-px JPEGs (``--dataset folder:``; decoded once, then augmented on the device),
a pre-trained model from a weights file (random weights: the cell measures speed, not accuracy) and a
partial ImageNet folder of generated JPEGs as the source images (the official transform, decoded once).
Per stage it gives the images through the model (``costs.stage_images``), the seconds of the stage's own
work, images/s, and the share of those seconds the GPU was busy (``BusyMeter``). ``TOY`` runs the same
function on the CPU in a second (tests/test_gpucheck.py); ``REAL`` is a few thousand images at 224 px.
"""
from __future__ import annotations

import colorsys
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional


@dataclass(frozen=True)
class Sizes:
    """What `make gpu-check` measures and how much of it: the models whose rates it measures, the cell's
    model and data, and the steps of each steady-state rate."""

    models: tuple = ("resnet18", "resnet50")
    cell_model: str = "resnet50"
    image_size: int = 224          # the model's input
    jpeg_px: int = 256             # the generated JPEGs' side
    classes: int = 10
    train_per_class: int = 240     # 2,400 training images
    test_per_class: int = 60
    source_classes: int = 10       # synset folders of the generated source images
    source_per_class: int = 100    # 1,000 source images
    epochs: int = 2                # fine-tuning; the probe and the refit run one epoch each
    batch_size: int = 128
    rate_steps: int = 20           # timed steps of each steady-state rate (after warm-up)
    fisher_images: int = 0         # images of the timed Fisher passes (0: 64)
    compile: bool = True           # measure torch.compile (minutes of compiling on a CPU: off in TOY)
    tests: bool = True             # run tests/test_cuda.py first

    @property
    def source_images(self) -> int:
        return self.source_classes * self.source_per_class


REAL = Sizes()
TOY = Sizes(models=("test_resnet",), cell_model="test_resnet", image_size=32, jpeg_px=40, classes=2,
            train_per_class=6, test_per_class=2, source_classes=2, source_per_class=2, epochs=1, batch_size=4,
            rate_steps=1, fisher_images=4, compile=False, tests=False)


# ---- generated data ---------------------------------------------------------------------------------------
def _jpeg(path: Path, label: int, classes: int, px: int, seed: int) -> None:
    """A learnable image of class ``label``: the class's hue and grating orientation, per-image phase and noise."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = np.array(colorsys.hsv_to_rgb(label / classes, 0.6, 0.8)) * 255
    y, x = np.mgrid[0:px, 0:px] / px
    angle = np.pi * label / classes
    wave = np.sin(2 * np.pi * (4 * (x * np.cos(angle) + y * np.sin(angle)) + rng.uniform()))
    pixels = base + 60 * wave[..., None] + rng.normal(0, 25, (px, px, 3))
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, quality=90)


def _write_images(jobs: list) -> None:
    from concurrent.futures import ThreadPoolExecutor

    for job in jobs:
        job[0].parent.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor() as pool:  # PIL's encoder releases the GIL
        list(pool.map(lambda job: _jpeg(*job), jobs))


def prepare(work: Path, sizes: Sizes) -> dict:
    """The cell's inputs under ``work`` (made once; a second call finds them): a folder data set
    (train/ and test/ class folders), a partial ImageNet folder (the first synsets) and a weights file
    of ``sizes.cell_model`` with seeded random weights. -> {"folder", "source", "weights"} paths."""
    import torch

    from ..methods import models
    from ..data.imagenet import imagenet_synsets

    folder, source, weights = work / "target", work / "source", work / f"{sizes.cell_model}.safetensors"
    if not (work / ".complete").exists():
        jobs = [(folder / split / f"class{c}" / f"{i}.jpg", c, sizes.classes)
                for split, n in (("train", sizes.train_per_class), ("test", sizes.test_per_class))
                for c in range(sizes.classes) for i in range(n)]
        jobs += [(source / synset / f"{i}.jpg", c, sizes.source_classes)
                 for c, synset in enumerate(imagenet_synsets()[:sizes.source_classes])
                 for i in range(sizes.source_per_class)]
        _write_images([(*job, sizes.jpeg_px, seed) for seed, job in enumerate(jobs)])
        from safetensors.torch import save_file

        torch.manual_seed(0)
        save_file(models.create(sizes.cell_model, 1000).state_dict(), str(weights))
        (work / ".complete").touch()
    return {"folder": folder, "source": source, "weights": weights}


# ---- how busy the GPU was -------------------------------------------------------------------------------
class BusyMeter:
    """The GPU's utilisation, sampled every ``period`` s in a thread while the meter is open: NVML's
    "share of the last sample period in which a kernel ran" (``torch.cuda.utilization``, or ``nvidia-smi``
    where torch has no NVML binding). ``share(t0, t1)``: the mean over the samples in [t0, t1] as a
    fraction, None when nothing was sampled (a CPU run, no NVML, a window shorter than a sample)."""

    def __init__(self, device: str, period: float = 0.2):
        self.samples: list[tuple[float, float]] = []
        self.read = _reader(device)
        self.period = period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.wait(self.period):
            value = self.read()
            if value is not None:
                self.samples.append((time.time(), value))

    def __enter__(self):
        if self.read is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def share(self, t0: float, t1: float) -> Optional[float]:
        inside = [v for t, v in self.samples if t0 <= t <= t1]
        return sum(inside) / len(inside) / 100 if inside else None


def _reader(device: str):
    """A function -> the GPU's utilisation now (percent), or None where it cannot be read."""
    import torch

    if not device.startswith("cuda") or not torch.cuda.is_available():
        return None
    index = torch.device(device).index or 0
    try:
        torch.cuda.utilization(index)
        return lambda: float(torch.cuda.utilization(index))
    except Exception:  # noqa: BLE001 (no pynvml/amdsmi in this torch: ask nvidia-smi, which every driver ships)
        pass
    try:
        uuid = f"GPU-{torch.cuda.get_device_properties(index).uuid}"  # nvidia-smi's name for it, whatever is visible
    except AttributeError:
        return None

    def smi() -> Optional[float]:
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                  "-i", uuid], capture_output=True, text=True, timeout=5)
            return float(out.stdout.strip().splitlines()[0])
        except (OSError, ValueError, IndexError, subprocess.SubprocessError):
            return None
    return smi if smi() is not None else None


# ---- the cell -----------------------------------------------------------------------------------------------
def cell_config(inputs: dict, precision: str, sizes: Sizes, device: str, work: Path, compile_: bool = False):
    """The cell's RunConfig: FLOW + WiSE-FT on the generated folder, ``precision`` fp32 (NCHW, as the paper
    protocol) or bf16 (with channels_last, the clean protocol's default on CUDA)."""
    from ..core import config

    fast = precision == "bf16"
    return config.resolve(f"folder:{inputs['folder']}", sizes.cell_model, "flow+wiseft", {
        "weights": str(inputs["weights"]), "imagenet": str(inputs["source"]), "imagenet_transform": "official",
        "results_dir": str(work / "results"), "cache_dir": str(work / "cache"), "device": device,
        "amp": fast, "channels_last": fast, "compile": compile_, "image_size": sizes.image_size,
        "epochs": sizes.epochs, "probe_epochs": 1, "refit_epochs": 1, "batch_size": sizes.batch_size,
        "imagenet_subset": sizes.source_images, "wise_subset": max(1, sizes.source_images // 2)})


def run_cell(work: Path, precision: str, sizes: Sizes = REAL, device: str = "cuda") -> dict:
    """Run the cell once in ``precision`` ('fp32' | 'bf16'). -> {"precision", "seconds" (the whole run),
    "compute_seconds" (its stages but the loading ones: the first run decodes the images, the next reads
    them), "stages": [{"stage", "kind", "images", "seconds", "images_per_s", "gpu_busy", "peak_gib" (the GPU
    memory the stage's allocator held at most; None on the CPU)}], "target_acc"}: one row
    per stage that did work, in the order they ran; ``kind`` is the stage's main kind for the cost model
    (training, frozen, inference) or "load" for the stages that load data or weights."""
    from ..stages.costs import KINDS, stage_images
    from ..stages.run import run

    inputs = prepare(work, sizes)
    cfg = cell_config(inputs, precision, sizes, device, work)
    marks: dict = {}
    cuda = device.startswith("cuda")

    def heard(name, event):  # a stage's needs are resolved before it starts: no two stages' windows overlap
        import torch

        marks.setdefault(name, {})[event] = time.time()
        if cuda and event == "start":
            torch.cuda.reset_peak_memory_stats()
        elif cuda:
            marks[name]["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)

    t0 = time.time()
    with BusyMeter(device) as meter:
        record = run(cfg, on_stage=heard)
    rows = []
    for name, seconds in record["stage_seconds"].items():  # in the order they finished
        images = stage_images(name, cfg)
        total = sum(images.values())
        if not seconds or (not total and name not in ("task", "source", "source_data")):
            continue
        kind = max(KINDS, key=lambda k: images[k]) if total else "load"
        start, done = marks.get(name, {}).get("start"), marks.get(name, {}).get("done")
        rows.append({"stage": name, "kind": kind, "images": int(total), "seconds": round(seconds, 3),
                     "images_per_s": round(total / seconds, 1) if total else None,
                     "gpu_busy": meter.share(start, done) if start and done else None,
                     "peak_gib": marks.get(name, {}).get("peak_gib")})
    return {"precision": precision, "seconds": round(time.time() - t0, 2), "stages": rows,
            "compute_seconds": round(sum(r["seconds"] for r in rows if r["kind"] != "load"), 2),
            "target_acc": record["target_acc"], "device": record["device"]}
