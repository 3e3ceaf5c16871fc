"""Data sets by name: the synthetic demo tasks, the real target sets and folders of the user's own
images (``folder:PATH``), all as TaskData."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..core.registry import is_folder, is_synthetic

if TYPE_CHECKING:  # torch loads with the data, not with this package: the dry run stays torch-free
    from .base import TaskData


def __getattr__(name: str):
    if name in ("Indexed", "TaskData", "make_loader"):
        from . import base

        return getattr(base, name)
    raise AttributeError(name)


def load_task(cfg) -> TaskData:
    """The target task of a RunConfig (``target_task``), with ``val_split`` of its training images held out as
    ``val`` where the config asks for a validation split (``base.hold_out``, seeded by data_seed)."""
    task = target_task(cfg)
    if cfg.val_split > 0:
        from .base import hold_out

        task = hold_out(task, cfg.val_split, cfg.data_seed)
    return task


def target_task(cfg) -> TaskData:
    """The target task of a RunConfig (its dataset, image size, augmentation, data seed, root and,
    for the data sets in ``real.PAPER_SPLITS``, the protocol and, under the paper protocol, dogs_split; for a
    folder, its split ratio)."""
    if is_synthetic(cfg.dataset):
        from .synthetic import load_synthetic_task

        return load_synthetic_task(cfg.dataset, seed=cfg.data_seed, image_size=cfg.image_size,
                                   n_train=cfg.n_train, n_test=cfg.n_test, augment=cfg.augment,
                                   data_path=cfg.data_path)
    from ..core.config import default_cache_dir

    if is_folder(cfg.dataset):
        from .folder import load_folder_task

        return load_folder_task(cfg.dataset, image_size=cfg.image_size or 224, augment=cfg.augment,
                                seed=cfg.data_seed, split_ratio=cfg.split_ratio, data_path=cfg.data_path,
                                cache_dir=Path(cfg.cache_dir or default_cache_dir()), skip_bad=cfg.skip_bad_images)
    from .fetch import resolve_data_root
    from .real import load_real_task
    from ..core.registry import PAPER_SPLITS

    paper = cfg.dataset in PAPER_SPLITS and cfg.protocol == "paper"
    return load_real_task(cfg.dataset, resolve_data_root(cfg.data_root), image_size=cfg.image_size or 224,
                          augment=cfg.augment, seed=cfg.data_seed, data_path=cfg.data_path,
                          cache_dir=Path(cfg.cache_dir or default_cache_dir()),
                          protocol="paper" if paper else "clean", skip_bad=cfg.skip_bad_images,
                          **({"dogs_split": cfg.dogs_split} if paper else {}))


def normalisation(name: str) -> tuple[tuple, tuple]:
    """(mean, std) the task's transforms normalise with."""
    if is_synthetic(name):
        from .synthetic import MEAN, STD

        return MEAN, STD
    if is_folder(name):
        from .folder import IMAGENET_MEAN, IMAGENET_STD

        return IMAGENET_MEAN, IMAGENET_STD
    from .specs import REAL_TASKS

    return REAL_TASKS[name].mean, REAL_TASKS[name].std


def class_names(task: TaskData):
    """Class names in label order where the data set knows them, else None."""
    if is_synthetic(task.name):
        from .synthetic import SPECS

        return list(SPECS[task.name].classes)
    if isinstance(task.info, dict) and task.info.get("classes"):  # a folder's class folders
        return list(task.info["classes"])
    base = getattr(task.train_eval, "base", None)
    names = getattr(base, "classes", None)
    return list(names) if names is not None and len(names) == task.num_classes else None


def display_image(task: TaskData, index: int):
    """Training sample ``index`` as the model sees it (eval transforms), un-normalised to an
    HxWx3 uint8 array for contact sheets."""
    import torch

    mean, std = normalisation(task.name)
    x = task.train_eval[index][0]
    if task.train_eval.batch_transform is not None:  # a decoded uint8 image: the eval transform first
        x = task.train_eval.batch_transform(x[None])[0]
    x = x * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]
    return (x.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
