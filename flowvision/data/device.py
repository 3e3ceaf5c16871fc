"""Augmentation and normalisation on the device, batched: uint8 (B, 3, H, W) -> float (B, 3, s, s).

The decoded caches (``data/decoded.py``) hand the training loop uint8 batches at the size each recipe
starts from; here the recipe's random steps run on the whole batch at once, on the GPU when there is
one, with an independent draw per sample (kornia's augmentations, ``same_on_batch=False``), from
torch's CPU generator, which the training loop seeds per epoch (so a resumed run draws the same crops).

    recipe              train                                              eval
    resize (CIFAR)      resize to s, horizontal flip                       resize to s
    resize_square       horizontal flip                                    —
    square_crop_jitter  RandomCrop(s), flip, ColorJitter(0.2, 0.2, 0.2)    CenterCrop(s)
    crop_jitter         RandomResizedCrop(s), flip, ColorJitter            CenterCrop(s)
    imagenet            —                                                  —
    synthetic           RandomCrop(s, padding s//8, reflect)               —

Differences from the PIL reference path (``--set data_path=pil``), the same ranges for every random
draw, measured on generated photo-like images at 224 px (docs/protocols.md gives the commands' numbers):

* kornia's ColorJitter applies brightness, contrast and saturation in one random order per batch
  (torchvision draws an order per image), in float: its formulas are torchvision's (within 0.006 of a
  level), where the PIL path keeps 8 bits after each step (1.4 levels mean, 3.2 at most, over the three
  steps).
* its RandomResizedCrop (``align_corners=True``, kornia's default) maps the crop's corner pixels onto
  the output's and resamples bilinearly without antialiasing; torchvision's PIL resize uses the
  half-pixel grid and antialiases a downscaled crop. Same crop box: 0.57 levels mean, 4.3 at the 99th
  percentile, 37 at most (at hard edges); with ``align_corners=False`` it would be 0.22, 0.84 and 7.5.
* CIFAR's 32 -> 224 upsampling is a float bilinear interpolation, the PIL path's an 8-bit one: 0.19
  levels mean, 0.86 at most.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BatchTransform(nn.Module):
    """uint8 (B, 3, H, W) on any device -> normalised float32 (B, 3, s, s): scale to [0, 1], an
    optional resize to ``resize``, the recipe's augmentation (``augment``: a kornia module or None),
    then (x - mean) / std.

    kornia's random parameters (crop boxes, flips, jitter factors: a few numbers per image) are drawn on the
    CPU, from torch's CPU generator, and applied to the batch where it is. Drawn on the GPU, some are read back
    to the host each batch (RandomCrop's padding, ``.unique().cpu()``), which makes the host wait for the GPU;
    on the CPU the draws cost microseconds and kornia moves them to the batch's device without waiting
    (``kornia.core.utils._to_device_nonblocking``). On the CPU nothing changed: the generator was there."""

    def __init__(self, augment, mean, std, resize=None):
        super().__init__()
        self.augment, self.resize = augment, resize
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().div_(255)
        if self.resize is not None and tuple(x.shape[-2:]) != (self.resize, self.resize):
            down = x.shape[-1] > self.resize
            x = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear", align_corners=False, antialias=down)
        if self.augment is not None:
            x = self.augment(x).clamp_(0, 1)
        if self.mean.device != x.device:  # the constants go to the batches' device once, not per batch
            self.mean, self.std = self.mean.to(x.device, non_blocking=True), self.std.to(x.device, non_blocking=True)
        return (x - self.mean) / self.std


def recipe_transforms(recipe: str, image_size: int, mean, std) -> tuple[BatchTransform, BatchTransform]:
    """(train, eval) batch transforms of a recipe at ``image_size`` (see the module docstring)."""
    import kornia.augmentation as K

    s = image_size
    flip = K.RandomHorizontalFlip(p=0.5)
    jitter = K.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, p=1.0)
    center = K.CenterCrop(s)
    if recipe == "resize":
        return BatchTransform(flip, mean, std, resize=s), BatchTransform(None, mean, std, resize=s)
    if recipe == "resize_square":
        return BatchTransform(flip, mean, std), BatchTransform(None, mean, std)
    if recipe == "square_crop_jitter":
        return (BatchTransform(nn.Sequential(K.RandomCrop((s, s)), flip, jitter), mean, std),
                BatchTransform(center, mean, std))
    if recipe == "crop_jitter":
        return (BatchTransform(nn.Sequential(K.RandomResizedCrop((s, s)), flip, jitter), mean, std),
                BatchTransform(center, mean, std))
    if recipe == "imagenet":
        return BatchTransform(None, mean, std), BatchTransform(None, mean, std)
    if recipe == "synthetic":
        pad = max(1, s // 8)
        return (BatchTransform(K.RandomCrop((s, s), padding=pad, padding_mode="reflect"), mean, std),
                BatchTransform(None, mean, std))
    raise ValueError(f"unknown recipe {recipe!r}")
