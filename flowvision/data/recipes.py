"""The transform recipes of the real data sets (``RealSpec.recipe``) as per-sample PIL transforms, and their
eval transform in timm's terms (what an export's config.json holds). The official code's transforms
(``vision/FLOW_ft.py``) at ``image_size`` = 224; a smaller ``image_size`` scales every size in the recipe
(256 -> round(image_size * 256 / 224)) so tests run at 16-32 px. ``augment=False`` gives the training split
the eval transforms. The batched device versions of the same recipes are ``device.recipe_transforms``.
"""
from __future__ import annotations

from .specs import REAL_TASKS

# every recipe's eval transform, by name: (crop_pct, crop_mode) in timm's terms; None: s / the resized side
EVAL_CROPS = {"resize": (1.0, "center"), "resize_square": (1.0, "squash"), "synthetic": (1.0, "center"),
              "crop_jitter": (None, "center"), "square_crop_jitter": (None, "squash")}
RECIPES = tuple(EVAL_CROPS)


def build_transforms(name: str, image_size: int = 224, augment: bool = True):
    """(train, eval) transforms for ``name``: PIL image -> (3, image_size, image_size) float32."""
    spec = REAL_TASKS[name]
    return recipe_pil_transforms(spec.recipe, spec.mean, spec.std, image_size, augment)


def recipe_pil_transforms(recipe: str, mean, std, image_size: int = 224, augment: bool = True):
    """(train, eval) per-sample transforms of a recipe (``RealSpec.recipe``) at ``image_size``,
    normalised with ``mean``/``std``; ``augment=False``: the eval transform for both."""
    import torch
    from torchvision.transforms import v2


    from .decoded import scaled


    s, big = image_size, scaled(256, image_size)
    jitter = v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2)
    if recipe == "resize":                      # CIFAR: square 32-px images, so Resize(s) is s x s
        train, test = [v2.Resize(s), v2.RandomHorizontalFlip()], [v2.Resize(s)]
    elif recipe == "resize_square":             # flowers: squash to s x s
        train, test = [v2.Resize((s, s)), v2.RandomHorizontalFlip()], [v2.Resize((s, s))]
    elif recipe == "crop_jitter":               # caltech101, dtd, oxford_pets, folders of the user's images
        train = [v2.RandomResizedCrop(s), v2.RandomHorizontalFlip(), jitter]
        test = [v2.Resize(big), v2.CenterCrop(s)]
    elif recipe == "square_crop_jitter":        # stanford_cars, stanford_dogs
        train = [v2.Resize((big, big)), v2.RandomCrop(s), v2.RandomHorizontalFlip(), jitter]
        test = [v2.Resize((big, big)), v2.CenterCrop(s)]
    else:
        raise ValueError(f"unknown recipe {recipe!r}")
    tail = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    eval_tf = v2.Compose(test + tail)
    return (v2.Compose(train + tail) if augment else eval_tf), eval_tf


def timm_eval_config(recipe: str, image_size: int, mean, std) -> dict:
    """The eval transform of ``recipe`` (``recipe_pil_transforms``) in the terms of timm's data config,
    so that timm's ``create_transform`` rebuilds it from an exported config.json: Resize(big) +
    CenterCrop(s) is crop_pct = s / big with crop_mode 'center', Resize((big, big)) + CenterCrop(s) the
    same with 'squash'; the 'resize' recipes (and the synthetic tasks, already s × s) crop nothing.
    timm resizes to floor(s / crop_pct): the crop_pct written is one for which that is ``big``."""
    import math


    from .decoded import scaled


    s, big = image_size, scaled(256, image_size)
    crop_pct, mode = EVAL_CROPS[recipe]
    if crop_pct is None:
        crop_pct = next(c for c in (round(s / big, 4), s / big, s / (big + 0.5)) if math.floor(s / c) == big)
    return {"input_size": (3, s, s), "interpolation": "bilinear", "crop_pct": crop_pct, "crop_mode": mode,
            "mean": tuple(mean), "std": tuple(std)}


class Transformed:
    """``(image, label)`` data set -> ``(transform(image), label)``; lets train and train_eval share
    one loaded split (same samples, same order) with different transforms."""

    def __init__(self, base, transform):
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        image, label = self.base[i]
        return self.transform(image), label
