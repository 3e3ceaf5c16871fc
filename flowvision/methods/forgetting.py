"""Forgetting, in one place: which images, which transform, which parts are restored, the drop.

    images     IN-1K val (an ImageFolder of 1000 synsets), a seeded class-balanced subset of it, a
               folder with some of the synsets (a labelled sample; recorded as partial), any folder
               of unlabelled images (``--source-eval DIR``: agreement and KL only), or, for the
               demo model, the held-out split of the synthetic source task (shapes); the WiSE-FT
               points no table prints are measured on a seeded class-balanced subset (``subset``)
    transform  ``imagenet_transform``: the official code's (bilinear Resize(256), CenterCrop(224),
               ImageNet mean/std), the weights' own timm transform, or ``auto`` (default): the
               official one for the paper's two tags, the weights' own for every other model (an
               EfficientNet-Lite0 expects mean/std 0.5, not ImageNet's)
    restore    ``task-specific`` (default, Appendix B): the model keeps the fine-tuned shared tensors
               (conv weights) and gets the pre-trained head and every BatchNorm back, exactly
               (for other families, what ``task_specific`` and ``models.FAMILIES`` name).
               ``none``: the fine-tuned network as it is (its BatchNorms included) with the
               pre-trained head only, for comparison: how much of the drop the BN statistics carry.
    drop       source accuracy of the pre-trained model minus that of the restored model.
    agreement  share of the images whose top-1 class is the pre-trained model's; with the mean
    and KL     KL(p_pre || p_after), measured on every run, labels or not (``evaluate.agreement_kl``).

The Appendix-B split itself (which tensors are task-specific) lives in ``models``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from ..core.errors import UserError
from ..core.files import stable_hash

if TYPE_CHECKING:  # torch loads with a model, not with this module (the dry run reads ``reads`` and ``source_folder``)
    import torch
    from torch import nn

    from ..core.hardware import Hardware


@dataclass
class EvalSet:
    """The source task's evaluation images. ``name`` is what tables and plots call the accuracy
    ("IN-1K val", "shapes val"); ``desc`` says exactly what was used (count, subset, transform);
    ``fingerprint`` is everything besides the model that the accuracy depends on."""

    dataset: Any
    name: str
    desc: str
    fingerprint: str
    info: dict = field(default_factory=dict)
    n_classes: Optional[int] = None     # classes present (None: unlabelled images)
    n_images: Optional[int] = None
    partial: bool = False               # only some of the model's classes (a labelled sample)
    samples: Optional[list] = None      # (name, label) per image, in order; names the same on every machine


def reads(cfg) -> tuple:
    """The config fields the evaluation set depends on (the ``source_data`` stage's declaration)."""
    if cfg.model == "demo":
        return ("model", "data_seed", "image_size", "demo_n_test")
    return ("model", "data_seed", "imagenet_subset", "imagenet_transform", "data_path")


def eval_set(cfg) -> EvalSet:
    """The images forgetting is measured on, for cfg.model (no model weights are loaded)."""
    if cfg.model == "demo":
        from ..data.synthetic import SOURCE_TASK, SPECS, load_held_out

        data = load_held_out(SOURCE_TASK, seed=cfg.data_seed, image_size=cfg.image_size, n=cfg.demo_n_test)
        return EvalSet(data.dataset, f"{SOURCE_TASK} val", f"{SOURCE_TASK}:val({len(data.dataset)})",
                       stable_hash(data.info), n_classes=SPECS[SOURCE_TASK].num_classes, n_images=len(data.dataset),
                       samples=[(str(i), int(y)) for i, y in enumerate(data.dataset.base.labels)])
    return imagenet_eval_set(cfg)


# ---- ImageNet-1K ----------------------------------------------------------------------------------
def imagenet_root(cfg) -> Path:
    from ..data.fetch import resolve_imagenet

    if cfg.source_eval_dir:
        if cfg.imagenet:
            raise UserError("--imagenet and --source-eval both name the source images; give one")
        return Path(cfg.source_eval_dir).expanduser()
    root = resolve_imagenet(cfg.imagenet)
    if root is None:
        raise UserError("forgetting is measured on ImageNet-1K val: pass --imagenet PATH (an ImageFolder of 1000 "
                        "synset folders) or set FLOWVISION_IMAGENET, or --source-eval DIR (any folder of images: "
                        "agreement and KL only); `flowvision data status` shows the layout")
    return root


def source_folder(cfg) -> tuple[Path, Optional[list]]:
    """The folder a real model's forgetting is measured on, checked as the run checks it before reading an
    image: -> (folder, its class folders, each one of the model's classes; some of them are enough), or
    (folder, None) for a --source-eval folder of unlabelled images. UserError when it cannot be used. The
    run, its dry run and a grid's input check all ask this (no torch: the class list is read from timm's file)."""
    from ..data.synsets import check_classes, imagenet_synsets, is_synset_folder

    root = imagenet_root(cfg)
    if cfg.source_eval_dir and not is_synset_folder(root):
        if not root.is_dir():
            raise UserError(f"source evaluation folder {root} does not exist; pass --source-eval DIR (a folder of images)")
        return root, None
    return root, check_classes(root, imagenet_synsets(), "--source-eval" if cfg.source_eval_dir else "--imagenet")


_SAID: set = set()  # warnings already printed by this process (a grid's cells share one evaluation folder)


def transform_name(cfg, tag: str) -> str:
    """'official' or 'timm': what ``imagenet_transform`` resolves to for the weights ``tag``."""
    from ..core.config import MODEL_TAGS

    if cfg.imagenet_transform != "auto":
        return cfg.imagenet_transform
    return "official" if tag in MODEL_TAGS.values() else "timm"


def source_data_config(cfg) -> Optional[dict]:
    """The eval transform the source images go through (``imagenet_eval_set``) in the terms of timm's data
    config, from which timm's ``create_transform`` rebuilds it (an export stores it beside the source parts):
    the official one as Resize(224 / 0.875 = 256) + CenterCrop(224), bilinear, ImageNet mean/std; the
    weights' own as timm resolves their pretrained config. None for the demo model, whose source images are
    generated tensors."""
    if cfg.model == "demo":
        return None
    from .source import model_tag

    tag, _ = model_tag(cfg.model)
    if transform_name(cfg, tag) == "official":
        return {"input_size": (3, 224, 224), "interpolation": "bilinear", "crop_pct": 0.875, "crop_mode": "center",
                "mean": tuple(IMAGENET_MEAN), "std": tuple(IMAGENET_STD)}
    from timm.data import resolve_data_config
    from timm.models import get_pretrained_cfg

    return dict(resolve_data_config(pretrained_cfg=get_pretrained_cfg(tag).to_dict()))


def official_imagenet_transform():
    """The official code's IN-1K evaluation: bilinear Resize(256), CenterCrop(224), ImageNet mean/std.
    The paper's 79.02% for ResNet-50 fits this transform, not timm's bicubic default for ram_in1k.
    The resize runs on the decoded uint8 tensor, as the decoded cache's (``data/decoded.py``), so both
    give the same pixels; the official code resized the PIL image, which differs by at most one level
    on a small share of the pixels (0.006 % on 20 real ImageNet photos)."""
    import torch
    from torchvision.transforms import v2

    return v2.Compose([v2.PILToTensor(), v2.Resize(256, interpolation=v2.InterpolationMode.BILINEAR, antialias=True),
                       v2.CenterCrop(224), v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def imagenet_eval_set(cfg) -> EvalSet:
    """IN-1K val (or its subset) under --imagenet, with the chosen transform; the class folders are
    checked before anything is read."""
    import warnings

    from rich.markup import escape

    from ..core.console import console
    from ..data.imagenet import describe, imagenet_transform, load_image_folder, load_imagenet_eval
    from .source import model_tag

    tag, _ = model_tag(cfg.model)
    root, classes = source_folder(cfg)
    labelled = classes is not None
    flag = "--source-eval" if cfg.source_eval_dir else "--imagenet"
    how = transform_name(cfg, tag)
    if how == "official":
        transform = official_imagenet_transform()
    else:
        from timm.models import get_pretrained_cfg

        transform = imagenet_transform(get_pretrained_cfg(tag).to_dict())
    decode = cfg.data_path == "device" and how == "official" and labelled
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the count warning is printed below, once per process, without a file:line
        data = (load_imagenet_eval(root, None if decode else transform, subset=cfg.imagenet_subset, seed=cfg.data_seed,
                                   skip_bad=cfg.skip_bad_images, flag=flag)
                if labelled else load_image_folder(root, transform, skip_bad=cfg.skip_bad_images))
    for note in data.warnings:
        if note not in _SAID:
            _SAID.add(note)
            console.print(f"[yellow]warning:[/] {escape(note)}", highlight=False)
    dataset, decoded_key = data, None
    if decode:  # the official transform's pixels, decoded once; only the normalisation runs per batch
        from ..core.config import default_cache_dir
        from ..data.base import Indexed
        from ..data.decoded import decoded, folder_fingerprint, stored
        from ..data.device import recipe_transforms

        store = stored("imagenet", 224)
        identity = {"dataset": "imagenet-val", "split": "val", "recipe": "imagenet", "image_size": 224,
                    "files": folder_fingerprint(root), "skipped": data.skipped, "subset": cfg.imagenet_subset,
                    "seed": cfg.data_seed, "n": len(data)}
        cache, decoded_key = decoded(_Pairs(data), store.prepare, store.size, identity,
                                     Path(cfg.cache_dir or default_cache_dir()), f"decoding IN-1K val ({len(data)} images)")
        dataset = Indexed(cache, batch_transform=recipe_transforms("imagenet", 224, IMAGENET_MEAN, IMAGENET_STD)[1])
    # the resolved transform's name (not 'auto'): the paper's tags keep the keys they had
    # the files left out change the images: they join the fingerprint (only when there are some, so a
    # folder without a bad file keeps the keys it had)
    fingerprint = stable_hash(str(root.resolve()), data.n_found, cfg.imagenet_subset if labelled else None,
                              cfg.data_seed, how, repr(transform), decoded_key, *([data.skipped] if data.skipped else []))
    return EvalSet(dataset, "IN-1K val" if labelled else "source images", f"{describe(data)}, {how} transform",
                   fingerprint, info={"imagenet_root": str(root), "imagenet_found": data.n_found,
                                      "imagenet_warnings": list(data.warnings), "imagenet_decoded": decoded_key,
                                      "imagenet_skipped": data.skipped},
                   n_classes=data.n_classes, n_images=len(data), partial=data.partial,
                   samples=[(Path(data.base.samples[j][0]).relative_to(root).as_posix(), data.base.samples[j][1])
                            for j in data.indices])


def subset(data: EvalSet, n: Optional[int], seed: int) -> Optional[tuple[Any, Any]]:
    """A seeded, class-balanced subset of ``n`` of the evaluation images (``balanced_subset``: the classes
    in equal shares, the same images on every machine), or None when ``n`` is None or the set holds no
    more than n images. -> (dataset yielding (image, label, position in the subset), positions (k,) long:
    where each subset image sits in ``data``, to take the reference predictions of the same images)."""
    import torch

    from ..data.base import Indexed
    from ..data.imagenet import balanced_subset

    if n is None or data.n_images is None or data.n_images <= n:
        return None
    positions = balanced_subset(data.samples, n, seed)
    dataset = Indexed(_Pairs(data.dataset), positions, batch_transform=getattr(data.dataset, "batch_transform", None))
    return dataset, torch.tensor(positions)


class _Pairs:
    """(image, label, index) samples -> (image, label), as the decoded cache reads them."""

    def __init__(self, data):
        self.data = data

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        return self.data[i][:2]


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# ---- the model that is measured ---------------------------------------------------------------------
def measured_model(finetuned: nn.Module, pretrained: nn.Module, task_specific: str = "auto", *,
                   restore: str = "task-specific") -> nn.Module:
    """Appendix B's measured model, whose source accuracy is the 'after' number: a copy of ``pretrained`` (with
    its own head and task-specific parts) holding ``finetuned``'s shared tensors. Neither model is modified.

    finetuned: the model after fine-tuning (any head; the same architecture otherwise); pretrained: the model
    before, with its source head. task_specific: which tensors are the task's, restored from ``pretrained``:
    ``"auto"`` (by the timm family, ``models.FAMILIES``: the head and every BatchNorm, weights and running
    statistics, for ResNet, EfficientNet, RegNet and MobileNetV3; the head alone for ConvNeXt and ViT),
    ``"head"``, ``"head+bn"`` or ``"head+norms"``. ``restore="none"``: the head alone whatever the rule
    (the fine-tuned BatchNorms kept, for comparison). -> an nn.Module shaped like ``pretrained``, on its
    device, in its train/eval mode."""
    from . import models

    model = copy.deepcopy(pretrained)
    models.copy_tensors(model, finetuned, skip=restored_keys(pretrained, restore, task_specific))
    return model


def restored_keys(source, restore: str = "task-specific", rule: str = "auto") -> set:
    """The state-dict keys the measured model takes from the source: the task-specific parts by
    ``rule`` (``restore="task-specific"``), or the head alone (``restore="none"``). With the
    fine-tuned model's other tensors they make the measured model (``measured_model``); an export
    ships them as its source parts."""
    from . import models

    return models.task_specific_keys(source, rule) if restore == "task-specific" else models.head_keys(source)


# ---- forgetting measured: before, after, the drop --------------------------------------------------------------
def source_before(pretrained, images, hw, *, batch_size: int = 256) -> dict:
    """The pre-trained model on the source images (``evaluate.accuracy``): "acc", "acc5", "n", "n_labelled" and
    "logprobs" (N, C), the reference ``source_after`` compares against."""
    from .evaluate import accuracy

    return accuracy(pretrained, images, hw, "source accuracy (pre-trained)", keep_logprobs=True, batch_size=batch_size)


def source_after(finetuned, pretrained, images, reference, hw, *, task_specific: str = "auto",
                 restore: str = "task-specific", desc: str = "source accuracy (after)", batch_size: int = 256) -> dict:
    """The measured model (``measured_model``) on the source images, against the pre-trained model's
    log-probabilities on the same images (``reference``, (N, C)): "acc", "acc5", "n", "n_labelled", "agreement",
    "kl" (``evaluate.accuracy``)."""
    from .evaluate import accuracy

    measured = measured_model(finetuned, pretrained, task_specific, restore=restore)
    return accuracy(measured, images, hw, desc, reference=reference, batch_size=batch_size)


def forgetting(finetuned: nn.Module, pretrained: nn.Module, source_data, *, batch_size: int = 256,
               device: str | torch.device | Hardware | None = None, task_specific: str = "auto",
               restore: str = "task-specific") -> dict[str, Optional[float]]:
    """How much of the source task fine-tuning lost, measured as flowvision's runs measure it: the pre-trained
    model and Appendix B's measured model (``measured_model``: the fine-tuned shared tensors, the pre-trained
    head and task-specific parts restored) on the same source images.

    source_data: the source task's evaluation images (IN-1K val for ImageNet weights), a map-style data set of
    (image, label) pairs (torchvision's ImageFolder with the pretrained model's eval transform), label -1 for
    an unlabelled image (any folder of images: agreement and KL only), or flowvision's (image, label, index).
    device: where to run (None: where ``pretrained``'s parameters are); both models are back where they were.
    -> {"acc_before", "acc_after": top-1 in % over the labelled images (None when none is), "drop": acc_before −
    acc_after in percentage points (None without labels), "top5_before", "top5_after" (%), "agreement": % of
    the images whose top-1 class is the pre-trained model's, "kl": mean KL(p_pretrained ‖ p_after) in nats,
    "n_images", "n_labelled"}. Two fp32 passes in eval mode (the run's record holds the same numbers as
    fractions: source_acc_before, source_acc_after, source_drop, source_agreement, source_kl)."""
    from ..core.hardware import device_of, for_model
    from .evaluate import in_order

    hw = for_model(device, pretrained)
    homes = [(m, device_of(m)) for m in (finetuned, pretrained)]
    images = in_order(source_data)
    before = source_before(pretrained, images, hw, batch_size=batch_size)
    after = source_after(finetuned, pretrained, images, before["logprobs"], hw, task_specific=task_specific,
                         restore=restore, batch_size=batch_size)
    for model, home in homes:
        model.to(home)
    pct = lambda x: None if x is None else 100 * x  # noqa: E731
    return {"acc_before": pct(before["acc"]), "acc_after": pct(after["acc"]),
            "drop": None if before["acc"] is None or after["acc"] is None else 100 * (before["acc"] - after["acc"]),
            "top5_before": pct(before["acc5"]), "top5_after": pct(after["acc5"]), "agreement": 100 * after["agreement"],
            "kl": after["kl"], "n_images": after["n"], "n_labelled": after["n_labelled"]}
