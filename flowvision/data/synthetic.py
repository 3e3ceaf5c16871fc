"""Procedurally generated image tasks: the offline stand-in for ImageNet pre-training and its targets.

Each task is deterministic from (name, data seed, size): the same call gives the same pixels.

  shapes    10 classes — the *source* task that stands in for ImageNet-1K: a filled or outlined
            shape (circle, ring, square, frame, diamond, triangle, plus, x, h-bar, v-bar) in a
            saturated colour on a contrasting background, random position and scale.
  gratings   8 classes — a *target*: sinusoidal gratings, 4 orientations × 2 spatial frequencies,
            random phase and colours; 15% of the training labels are replaced by random ones.
  patterns   6 classes — a *target*: small checkers, large checkers, dot lattice, concentric rings,
            radial spokes, smooth blobs; random colours; 15% random training labels.

Label noise matters for the method: noisy samples are the ones the pre-trained model finds hardest,
and fitting them is what drags the shared weights away (the paper's argument for down-weighting them).
Augmentation is a reflect-padded random crop only: a horizontal flip would change a grating's
orientation, i.e. its label.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from ..core.registry import SOURCE_TASK  # noqa: F401 (source.py reads it from here)
from .base import HOST_DRAWS, Indexed, TaskData

# Normalisation for every synthetic task (pixels are roughly uniform on [0, 1]).
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)

PALETTE = np.array([
    [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
    [70, 240, 240], [240, 50, 230], [250, 250, 250], [20, 20, 20], [128, 0, 0], [0, 0, 128],
], dtype=np.float32) / 255.0


@dataclass(frozen=True)
class SyntheticSpec:
    num_classes: int
    classes: tuple
    label_noise: float   # fraction of training labels replaced by uniform random labels
    n_train: int
    n_test: int
    image_size: int = 32


SPECS = {
    "shapes": SyntheticSpec(10, ("circle", "ring", "square", "frame", "diamond", "triangle", "plus",
                                 "x", "hbar", "vbar"), 0.0, 5000, 1000),
    "gratings": SyntheticSpec(8, tuple(f"{o}deg-{f}" for o in (0, 45, 90, 135) for f in ("low", "high")),
                              0.15, 2000, 1000),
    "patterns": SyntheticSpec(6, ("checkers-small", "checkers-large", "dots", "rings", "spokes", "blobs"),
                              0.15, 2000, 1000),
}


def _grid(n: int, size: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Per-image coordinates (n, size, size) in [-1, 1], y down."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    yy, xx = np.meshgrid(c, c, indexing="ij")
    return np.broadcast_to(xx, (n, size, size)), np.broadcast_to(yy, (n, size, size))


def _colours(n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Two different palette colours per image: (n, 3) foreground and background."""
    fg = rng.integers(0, len(PALETTE), n)
    bg = (fg + rng.integers(1, len(PALETTE), n)) % len(PALETTE)
    return PALETTE[fg], PALETTE[bg]


def _shapes(labels: np.ndarray, size: int, rng) -> np.ndarray:
    n = len(labels)
    xx, yy = _grid(n, size, rng)
    r = rng.uniform(0.45, 0.7, n)[:, None, None]
    cx = rng.uniform(-0.25, 0.25, n)[:, None, None]
    cy = rng.uniform(-0.25, 0.25, n)[:, None, None]
    dx, dy = (xx - cx) / r, (yy - cy) / r
    d, box = np.sqrt(dx ** 2 + dy ** 2), np.maximum(abs(dx), abs(dy))
    u, v = (dx + dy) / np.sqrt(2), (dx - dy) / np.sqrt(2)
    masks = [
        d < 1, (d > 0.55) & (d < 1), box < 0.8, (box > 0.5) & (box < 0.85), abs(dx) + abs(dy) < 1,
        (dy > -0.9) & (dy < 0.7) & (abs(dx) < (dy + 0.9) * 0.6),
        ((abs(dx) < 0.3) & (abs(dy) < 1)) | ((abs(dy) < 0.3) & (abs(dx) < 1)),
        ((abs(u) < 0.3) & (abs(v) < 1)) | ((abs(v) < 0.3) & (abs(u) < 1)),
        (abs(dy) < 0.3) & (abs(dx) < 1), (abs(dx) < 0.3) & (abs(dy) < 1),
    ]
    mask = np.stack(masks)[labels, np.arange(n)].astype(np.float32)
    return mask


def _gratings(labels: np.ndarray, size: int, rng) -> np.ndarray:
    n = len(labels)
    xx, yy = _grid(n, size, rng)
    theta = np.deg2rad(np.array([0, 45, 90, 135])[labels // 2] + rng.uniform(-8, 8, n))[:, None, None]
    cycles = np.where(labels % 2 == 0, rng.uniform(1.5, 2.5, n), rng.uniform(4.5, 6.0, n))[:, None, None]
    phase = rng.uniform(0, 2 * np.pi, n)[:, None, None]
    return 0.5 + 0.5 * np.sin(np.pi * cycles * (xx * np.cos(theta) + yy * np.sin(theta)) + phase)


def _patterns(labels: np.ndarray, size: int, rng) -> np.ndarray:
    n = len(labels)
    xx, yy = _grid(n, size, rng)
    sx = rng.uniform(-1, 1, n)[:, None, None]
    sy = rng.uniform(-1, 1, n)[:, None, None]
    x, y = xx + sx * 0.3, yy + sy * 0.3
    d, ang = np.sqrt(x ** 2 + y ** 2), np.arctan2(y, x)
    k = rng.uniform(0.9, 1.1, n)[:, None, None]
    blobs = sum(np.sin(rng.uniform(1, 3, n)[:, None, None] * (xx * np.cos(a) + yy * np.sin(a)) * np.pi
                       + rng.uniform(0, 6.3, n)[:, None, None]) for a in rng.uniform(0, np.pi, 3))
    out = [
        (np.floor(x * 4 * k) + np.floor(y * 4 * k)) % 2,
        (np.floor(x * 1.5 * k) + np.floor(y * 1.5 * k)) % 2,
        ((np.sin(x * 5 * np.pi * k) * np.sin(y * 5 * np.pi * k)) > 0.5).astype(np.float32),
        0.5 + 0.5 * np.sin(d * 6 * np.pi * k),
        0.5 + 0.5 * np.sin(ang * 6 + sx * 3),
        (blobs > 0).astype(np.float32),
    ]
    return np.stack(out)[labels, np.arange(n)].astype(np.float32)


_DRAW = {"shapes": _shapes, "gratings": _gratings, "patterns": _patterns}


@functools.lru_cache(maxsize=8)
def generate(name: str, n: int, size: int, seed: int, label_noise: float = 0.0):
    """-> images (n, 3, size, size) uint8, clean labels (n,) int64, observed labels (n,) int64. Drawn
    once per process (runs in one process, e.g. a demo worker's, share them; no caller writes to them)."""
    spec = SPECS[name]
    # One stream per (task, seed, split-size) so tasks never share pixels.
    rng = np.random.default_rng([seed, sum(map(ord, name)), n, size])
    labels = rng.integers(0, spec.num_classes, n)
    alpha = _DRAW[name](labels, size, rng)[:, None]                      # (n, 1, H, W) in [0, 1]
    fg, bg = _colours(n, rng)
    img = alpha * fg[:, :, None, None] + (1 - alpha) * bg[:, :, None, None]
    img = np.clip(img + rng.normal(0, 0.04, img.shape), 0, 1)
    observed = labels.copy()
    flip = rng.random(n) < label_noise
    observed[flip] = rng.integers(0, spec.num_classes, int(flip.sum()))
    return (torch.from_numpy((img * 255).round().astype(np.uint8)), torch.from_numpy(labels),
            torch.from_numpy(observed))


class TensorImages(Dataset):
    """(N, 3, H, W) uint8 images + (N,) labels, a torchvision transform applied per sample."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        image = self.images[i]
        return (self.transform(image) if self.transform is not None else image), int(self.labels[i])


def transforms(size: int, augment: bool):
    """Eval: scale to [0, 1] and normalise. Train: the same after a reflect-padded random crop."""
    tail = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)]
    if not augment:
        return v2.Compose(tail)
    return v2.Compose([v2.RandomCrop(size, padding=max(1, size // 8), padding_mode="reflect"), *tail])


def load_synthetic_task(name: str, *, seed: int = 0, image_size: int | None = None,
                        n_train: int | None = None, n_test: int | None = None,
                        augment: bool = True, data_path: str = "pil") -> TaskData:
    """A synthetic task as TaskData. For ``shapes`` the held-out split is its ``val`` split, the
    source evaluation set that measures forgetting in the demo."""
    spec = SPECS[name]
    size = spec.image_size if image_size is None else image_size
    n_train = spec.n_train if n_train is None else n_train
    n_test = spec.n_test if n_test is None else n_test
    x_tr, true, y_tr = generate(name, n_train, size, seed, spec.label_noise)
    noisy = y_tr != true  # a replacement that drew the true class is not a wrong label
    eval_t = transforms(size, augment=False)
    if data_path == "device":  # the images are uint8 in memory already: only the batch transforms differ
        from .device import recipe_transforms

        train_b, eval_b = recipe_transforms("synthetic", size, MEAN, STD)
        held = load_held_out(name, seed=seed, image_size=size, n=n_test).dataset
        return TaskData(
            name=name, num_classes=spec.num_classes,
            train=Indexed(TensorImages(x_tr, y_tr, None), batch_transform=train_b if augment else eval_b),
            train_eval=Indexed(TensorImages(x_tr, y_tr, None), batch_transform=eval_b),
            test=Indexed(TensorImages(held.base.images, held.base.labels, None), batch_transform=eval_b),
            info=f"synthetic:{name}(seed={seed},size={size},train={n_train},test={n_test},"
                 f"label_noise={spec.label_noise},data_path=device)", noisy=noisy)
    return TaskData(
        name=name, num_classes=spec.num_classes,
        train=Indexed(TensorImages(x_tr, y_tr, transforms(size, augment))),
        train_eval=Indexed(TensorImages(x_tr, y_tr, eval_t)),
        test=load_held_out(name, seed=seed, image_size=size, n=n_test).dataset,
        info=f"synthetic:{name}(seed={seed},size={size},train={n_train},test={n_test},"
             f"label_noise={spec.label_noise},draws={HOST_DRAWS})",
        noisy=noisy,
    )


@dataclass(frozen=True)
class HeldOut:
    dataset: Indexed
    info: str


def load_held_out(name: str, *, seed: int = 0, image_size: int | None = None, n: int | None = None) -> HeldOut:
    """The held-out split of a synthetic task alone (e.g. shapes' val split, where the demo measures
    forgetting): drawn from its own stream (seed + 1), clean labels, eval transforms."""
    spec = SPECS[name]
    size = spec.image_size if image_size is None else image_size
    n = spec.n_test if n is None else n
    x_te, y_te, _ = generate(name, n, size, seed + 1)
    return HeldOut(Indexed(TensorImages(x_te, y_te, transforms(size, augment=False))),
                   f"synthetic:{name}:held-out(seed={seed},size={size},n={n})")
