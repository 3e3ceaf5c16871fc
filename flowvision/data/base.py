"""What every data set in flowvision looks like to the rest of the code.

Every sample carries its index, ``(image, label, index)``, so per-sample losses and FLOW weights
stay aligned under shuffling, subsetting and a DistributedSampler.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from torch.utils.data import Dataset


class Indexed(Dataset):
    """Wrap a ``(image, label)`` data set so it yields ``(image, label, index)``.

    ``indices`` selects a subset (a split, a class-balanced sample); the index yielded is the
    position in the subset, 0..len-1, which is what weights and losses are keyed by.
    ``target_map`` relabels (e.g. folder order -> model class order).
    ``batch_transform``: for data sets that yield uint8 images (the decoded caches), what turns a
    batch of them into the model's input on the device (``data/device.py``); None when the samples
    are already transformed (the PIL path).
    """

    def __init__(self, base: Dataset, indices: Optional[Sequence[int]] = None,
                 target_map: Optional[Callable[[int], int]] = None, batch_transform: Optional[Callable] = None):
        self.base = base
        self.indices = list(range(len(base))) if indices is None else [int(i) for i in indices]
        self.target_map = target_map
        self.batch_transform = batch_transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        image, label = self.base[self.indices[i]]
        if self.target_map is not None:
            label = self.target_map(label)
        return image, int(label), i


@dataclass(frozen=True)
class TaskData:
    """One classification task, ready for the pipeline.

    train:      training split with training transforms; yields (image, label, index)
    train_eval: the same samples, same indices, with eval transforms (for the static FLOW loss pass)
    test:       held-out split with eval transforms
    noisy:      (N,) bool by training index, True where the training label is not the sample's true
                class (synthetic tasks, which replace some labels on purpose); None when unknown
    """

    name: str
    num_classes: int
    train: Dataset
    train_eval: Dataset
    test: Dataset
    info: Any = None  # free-form description recorded in results (source of the files, split rule)
    noisy: Any = None


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool = False, seed: int = 0,
                num_workers: int = 0, pin_memory: bool = False):
    """The one DataLoader recipe: a seeded generator when shuffling, so an epoch's order is a pure
    function of ``seed`` (a resumed run sees the same batches as an uninterrupted one)."""
    from torch.utils.data import DataLoader
    import torch

    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                      num_workers=num_workers, pin_memory=pin_memory,
                      persistent_workers=False, drop_last=False)
