"""What every data set in flowvision looks like to the rest of the code.

Every sample carries its index, ``(image, label, index)``, so per-sample losses and FLOW weights
stay aligned under shuffling, subsetting and a DistributedSampler.

Random augmentation on the host (the PIL path) is drawn per sample from (seed, sample index)
(``SeededDraws``, applied by ``make_loader``), so the images of an epoch are the same whichever
worker process loads them: for any ``num_workers``, on any machine.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
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
    splits: dict = field(default_factory=dict)  # other training stages' own splits, by name (of_split)
    val: Any = None  # held-out training images, eval transforms (``hold_out``): what settings are chosen on

    def of_split(self, name: str) -> "TaskData":
        """The task as split ``name`` sees it: its own TaskData where the data set draws a separate split
        for it (Stanford Dogs under the paper protocol, ``data/real.py``), else this one, whose split
        every stage shares."""
        return self.splits.get(name, self)


def hold_out(task: "TaskData", fraction: float, seed: int) -> "TaskData":
    """``task`` with ``fraction`` of its training images held out as ``val`` (eval transforms), never trained on:
    the round(fraction·N) samples (at least one, at most N − 2) whose seeded hash of their position ranks lowest,
    the same on every machine and run. The rest train, renumbered 0..N'-1 (what FLOW's losses and weights index);
    ``noisy`` follows them; every split of the task (``splits``) is held out alike."""
    import dataclasses

    n = len(task.train)
    k = min(max(1, round(fraction * n)), n - 2) if n > 2 else 0
    order = sorted(range(n), key=lambda i: sample_seed(seed, i))
    held, kept = sorted(order[:k]), sorted(order[k:])

    def view(part: "Indexed", positions) -> "Indexed":
        return Indexed(part.base, [part.indices[i] for i in positions], part.target_map, part.batch_transform)

    noisy = None if task.noisy is None else task.noisy[kept]
    out = dataclasses.replace(task, train=view(task.train, kept), train_eval=view(task.train_eval, kept),
                              val=view(task.train_eval, held), noisy=noisy,
                              info=dict(task.info, val_split=fraction, n_val=k, n_train=len(kept))
                              if isinstance(task.info, dict) else f"{task.info},val={k}",
                              splits={name: hold_out(part, fraction, seed) for name, part in task.splits.items()})
    return out


# In the fingerprint of every task whose augmentation runs on the host: the PIL path's draws became
# per-sample ones (SeededDraws), so the stages downstream of such a task are keyed apart from those of
# earlier draws, and the device path's keys, whose draws did not change, stay.
HOST_DRAWS = "per-sample"


def sample_seed(seed: int, index: int) -> int:
    """A 64-bit seed for sample ``index`` under ``seed``, the same on every machine and process."""
    return int.from_bytes(hashlib.blake2b(f"{seed}/{index}".encode(), digest_size=8).digest(), "little")


class SeededDraws(Dataset):
    """``dataset`` whose sample ``i`` draws its random augmentation from torch's CPU generator seeded
    with ``sample_seed(seed, i)``: the same image in the main process and in any worker, so a loader's
    images do not depend on ``num_workers``. torchvision's transforms draw from that global generator,
    which no transform takes as an argument; its state is saved and restored around each sample, so the
    caller's stream (dropout, the device-side draws) is untouched, and the CUDA generators are not seeded."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(sample_seed(self.seed, i))
            return self.dataset[i]


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool = False, seed: int = 0,
                num_workers: int = 0, pin_memory: bool = False, sampler=None, batches=None,
                draw_seed: Optional[int] = None):
    """The one DataLoader recipe: a seeded generator when shuffling, so an epoch's order is a pure
    function of ``seed`` (a resumed run sees the same batches as an uninterrupted one).
    ``sampler`` (a DistributedSampler: this process's share of an epoch) replaces the shuffling;
    ``batches`` (lists of positions) replaces ``batch_size`` and the order altogether.
    ``draw_seed``: samples transformed on the host draw their augmentation from (draw_seed, index)
    (``SeededDraws``); a data set with a ``batch_transform`` draws on the device instead, in the
    loop's process, where ``num_workers`` cannot reach.

    For a GPU (``pin_memory``) a data set with a ``batch_transform`` (a decoded cache: uint8 arrays, nothing to
    decode) is read in the loop's process, a batch ahead, by a thread (``Prefetched``): while the GPU computes on
    one batch the next is read from the memory map, collated and pinned."""
    from torch.utils.data import DataLoader
    import torch

    device_data = getattr(dataset, "batch_transform", None) is not None
    if draw_seed is not None and not device_data:
        dataset = SeededDraws(dataset, draw_seed)
    common = dict(num_workers=num_workers, pin_memory=pin_memory, persistent_workers=False)
    if batches is not None:
        loader = DataLoader(dataset, batch_sampler=batches, **common)
    elif sampler is not None:
        loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=False, **common)
    else:
        generator = torch.Generator().manual_seed(seed) if shuffle else None
        if shuffle and len(dataset) % batch_size == 1 and len(dataset) > 1:
            loader = DataLoader(dataset, batch_sampler=fold_last(epoch_order(len(dataset), seed), batch_size),
                                generator=generator, **common)
        else:
            loader = DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                                drop_last=False, **common)
    return Prefetched(loader) if pin_memory and device_data and num_workers == 0 else loader


class Prefetched:
    """``loader``'s batches, in its order, read ``depth`` batches ahead by a thread: the thread assembles (and, for
    a GPU, pins) the next batch while the loop queues work for this one. An error in the thread is raised in the
    loop at the batch it happened at; a loop that stops early stops the thread."""

    def __init__(self, loader, depth: int = 2):
        self.loader, self.depth = loader, depth

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        import queue
        import threading

        done, q = object(), queue.Queue(maxsize=self.depth)
        stop = threading.Event()

        def put(item) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def read():
            try:
                for batch in self.loader:
                    if not put(batch):
                        return
            except BaseException as err:  # noqa: BLE001 (handed to the loop, raised there)
                put(_Failed(err))
                return
            put(done)

        thread = threading.Thread(target=read, daemon=True, name="flowvision-prefetch")
        thread.start()
        try:
            while True:
                item = q.get()
                if item is done:
                    return
                if isinstance(item, _Failed):
                    raise item.error
                yield item
        finally:
            stop.set()
            thread.join()


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


# How a training epoch ends (recorded in every run's target_data): a final batch of one sample would reach
# BatchNorm in training mode alone ("Expected more than 1 value per channel"), so it joins the batch before.
LAST_BATCH = "a last batch of one joins the one before"


def fold_last(order: list, batch_size: int) -> list:
    """``order`` cut into batches of ``batch_size``, a final batch of one sample folded into the batch before
    (of ``batch_size + 1``). Every sample trains every epoch, as in the official code, whose DataLoaders keep
    the last batch (drop_last=False): where its last batch is never of one (every paper data set at batch
    128: 80 or 120 left over), the batches are the same. ``make_loader`` uses it only for such an epoch, with
    the generator it would have shuffled with, so an epoch's order is unchanged."""
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if len(batches) > 1 and len(batches[-1]) == 1:
        last = batches.pop()
        batches[-1] = batches[-1] + last
    return batches


def epoch_order(n: int, seed: int) -> list:
    """The sample order ``make_loader(..., shuffle=True, seed=seed)`` yields: the DataLoader draws its
    workers' base seed from the generator, then its RandomSampler draws the permutation."""
    import torch

    g = torch.Generator().manual_seed(seed)
    torch.empty((), dtype=torch.int64).random_(generator=g)
    return torch.randperm(n, generator=g).tolist()


def _distributed_sampler():
    from torch.utils.data.distributed import DistributedSampler

    class StepShare(DistributedSampler):
        """One process's share of every step of an epoch: the one-process order (``epoch_order`` with
        ``seed + epoch``: ``set_epoch`` as any DistributedSampler) cut into the global batches of
        ``batch_size``, and slice ``rank`` of each. The N processes together see each step's batch of
        one process; the last batch, when it does not split evenly, is padded with the epoch's first
        samples (at most N - 1 repeats per epoch). Samples keep their index."""

        def __init__(self, dataset, batch_size: int, num_replicas: int, rank: int, seed: int):
            super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
            if batch_size % num_replicas:
                raise ValueError(f"batch size {batch_size} does not split over {num_replicas} processes")
            n, self.batch_size = len(dataset), batch_size
            self.total_size = n + (-(n % batch_size)) % num_replicas
            self.num_samples = self.total_size // num_replicas

        def __iter__(self):
            order = epoch_order(len(self.dataset), self.seed + self.epoch)
            order += (order * self.num_replicas)[:self.total_size - len(order)]
            mine = []
            for start in range(0, self.total_size, self.batch_size):
                step = order[start:start + self.batch_size]
                share = len(step) // self.num_replicas
                mine += step[self.rank * share:(self.rank + 1) * share]
            return iter(mine)

    return StepShare


def step_share(dataset: Dataset, batch_size: int, num_replicas: int, rank: int, seed: int):
    """A DistributedSampler over ``dataset`` for one of ``num_replicas`` processes (see StepShare)."""
    return _distributed_sampler()(dataset, batch_size, num_replicas, rank, seed)
