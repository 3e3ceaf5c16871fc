"""The checks a resolved RunConfig passes before anything runs: every value one a run can use, named with
the valid choices when it is not (``validate``); limits past which a run cannot finish on one machine; a
model name that is a name, not a path; an experiment tracker that is installed.

The valid choices of each knob are listed here; the fields themselves, their defaults and types are
``config.RunConfig``'s. Importing this module does not import torch.
"""
from __future__ import annotations

import math
import re
from dataclasses import fields

from .errors import UserError, did_you_mean
from .registry import DOGS_SPLITS, PAPER_SPLITS, PAPER_TAU_MODELS, PROTOCOLS, is_folder, model_alias
from .registry import REAL_DATASETS as REAL_TASKS
from .registry import SYNTHETIC_DATASETS as SYNTHETIC_TASKS

WEIGHTINGS = ("uniform", "flow", "flow-online")
NORMALIZATIONS = ("mean", "sum")  # of the weighted batch loss (methods.weighting.weighted_loss)
HEAD_INITS = ("random", "probe")
REGULARIZERS = ("none", "l2sp", "ewc")
DISTILLS = ("none", "lwf")
LWF_PARTS = ("source", "training")
PULLS = ("proximal", "gradient")
TERM_SCALES = ("weights", "none")
WISE_KEYS = ("shared", "all")
IMAGENET_TRANSFORMS = ("auto", "official", "timm")
RESTORE_RULES = ("task-specific", "none")
DATA_PATHS = ("device", "pil")
TASK_SPECIFIC_RULES = ("auto", "head", "head+bn", "head+norms")  # see models.task_specific_keys
AMP_DTYPES = ("bfloat16", "float16")  # autocast's (hardware.Hardware); none: decided for the device

MAX_SEED = 2 ** 32
MAX_SEEDS = 1000  # seeds in one grid or demo (the paper uses 3)
MIN_IMAGE_SIZE = 8
# Sizes past these cannot finish or fit on one machine (the synthetic tasks hold every image in memory:
# 200,000 images at 32 px are 0.6 GB); the message names the limit.
LIMITS = {"epochs": 10_000, "probe_epochs": 10_000, "refit_epochs": 10_000, "demo_epochs": 10_000,
          "batch_size": 65_536, "demo_batch_size": 65_536, "image_size": 1024, "n_train": 200_000,
          "n_test": 200_000, "demo_n_train": 200_000, "imagenet_subset": 50_000, "wise_subset": 50_000,
          "num_workers": 256, "ewc_samples": 2_000_000, "ewc_draws": 1000}


def seed_list(n: int, option: str = "--seeds") -> list[int]:
    """Seeds 0..n-1 for a grid, the demo or a frontier; a count no machine could run is one line."""
    if not 1 <= n <= MAX_SEEDS:
        raise UserError(f"{option} {n}: give a count of seeds from 1 to {MAX_SEEDS} (the paper uses 3)")
    return list(range(n))


def listed(values: list, text: str, name: str) -> list:
    """``values`` parsed from the option ``--<name> <text>``, refused when empty: '' or ',,' names nothing,
    and running the defaults instead would be a sweep the user did not ask for."""
    if not values:
        raise UserError(f"--{name} {text!r} names no value; give comma-separated values, or leave the option out "
                        "for the defaults")
    return values


def check_model_name(model: str) -> None:
    """A model is 'demo', an alias or a timm name/tag: letters, digits, '_' and one '.' before the tag
    (never a path: the name also picks a file under configs/)."""
    if not re.fullmatch(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)?", model):
        raise UserError(f"model '{model}' is not a model name; use demo, resnet18, resnet50 or a timm tag such as "
                        "resnet18.tv_in1k (a weights file goes to --weights)")


def validate(cfg) -> None:
    """Reject values no run can use in ``cfg`` (a ``config.RunConfig``), naming the key and the valid choices."""
    from .tau import is_paper_tau, parse_tau

    def choice(key, options):
        if getattr(cfg, key) not in options:
            raise UserError(f"{key} '{getattr(cfg, key)}' is not valid{did_you_mean(getattr(cfg, key), options)}; "
                            f"choose one of: {', '.join(options)}")

    if cfg.dataset not in SYNTHETIC_TASKS + REAL_TASKS and not is_folder(cfg.dataset):
        raise UserError(f"unknown dataset '{cfg.dataset}'{did_you_mean(cfg.dataset, REAL_TASKS + SYNTHETIC_TASKS)}; "
                        f"choose one of: {', '.join(REAL_TASKS + SYNTHETIC_TASKS)}, "
                        "or folder:PATH for a folder of your own images")
    if not 0 < cfg.split_ratio < 1:
        raise UserError(f"split_ratio must lie strictly between 0 and 1 (the share of each class that trains), "
                        f"got {cfg.split_ratio}")
    check_model_name(cfg.model)
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{f.name} must be a finite number, got {value}")
        if isinstance(value, str) and not value.strip() and f.name != "tau":
            raise UserError(f"{f.name} cannot be empty" + (" (use '.' for the current folder)" if f.name.endswith("_dir") else ""))
        if isinstance(value, str) and "\0" in value:
            raise UserError(f"{f.name} holds a NUL byte ({value[:40]!r}); no path or name can hold one")
    for key in ("seed", "data_seed"):
        if not 0 <= getattr(cfg, key) < MAX_SEED:
            raise UserError(f"{key} must lie in 0 … {MAX_SEED - 1} (a 32-bit seed), got {getattr(cfg, key)}")
    for key, limit in LIMITS.items():
        if getattr(cfg, key) is not None and getattr(cfg, key) > limit:
            raise UserError(f"{key} = {getattr(cfg, key)} is beyond what one run can hold or finish "
                            f"(limit {limit}); use a smaller value")
    if cfg.demo_epochs < 1:
        raise UserError(f"demo_epochs must be ≥ 1 (the demo model is trained for that many epochs), got {cfg.demo_epochs}")
    if cfg.model == "demo" and not cfg.synthetic:
        raise UserError(f"--model demo is the synthetic 32-px demo network and cannot be fine-tuned on "
                        f"{cfg.dataset}; use --model resnet18 (the default for real data sets) or resnet50")
    choice("protocol", PROTOCOLS)
    if cfg.dogs_split is not None:
        if cfg.dataset not in PAPER_SPLITS or cfg.protocol != "paper":
            raise UserError(f"dogs_split applies to {' and '.join(PAPER_SPLITS)} under --protocol paper only (the clean "
                            "protocol uses the official train/test lists); drop --set dogs_split or add --protocol paper")
        choice("dogs_split", DOGS_SPLITS)
    choice("weighting", WEIGHTINGS)
    choice("head_init", HEAD_INITS)
    choice("regularizer", REGULARIZERS)
    choice("distill", DISTILLS)
    choice("lwf_parts", LWF_PARTS)
    choice("pull", PULLS)
    choice("term_scale", TERM_SCALES)
    choice("wise_keys", WISE_KEYS)
    if not 0 <= cfg.val_split < 0.5:
        raise UserError(f"val_split must lie in [0, 0.5) (the share of each training set held out to choose settings on), "
                        f"got {cfg.val_split}")
    choice("normalize", NORMALIZATIONS)
    choice("imagenet_transform", IMAGENET_TRANSFORMS)
    for key in ("n_train", "n_test", "demo_n_train", "demo_n_test", "ewc_samples"):
        if getattr(cfg, key) is not None and getattr(cfg, key) < 1:
            raise UserError(f"{key} must be ≥ 1 (or none for the task's default), got {getattr(cfg, key)}")
    if cfg.image_size is not None and cfg.image_size < MIN_IMAGE_SIZE:
        raise UserError(f"image_size must be ≥ {MIN_IMAGE_SIZE} pixels (or none for the task's default), got {cfg.image_size}")
    if cfg.num_workers < 0:
        raise UserError(f"num_workers must be ≥ 0, got {cfg.num_workers}")
    if not 0 <= cfg.momentum < 1:
        raise UserError(f"momentum must lie in [0, 1), got {cfg.momentum}")
    if cfg.weight_decay < 0:
        raise UserError(f"weight_decay must be ≥ 0, got {cfg.weight_decay}")
    choice("restore", RESTORE_RULES)
    choice("data_path", DATA_PATHS)
    if cfg.amp_dtype is not None:
        choice("amp_dtype", AMP_DTYPES)
    choice("task_specific", TASK_SPECIFIC_RULES)
    if cfg.weighting != "uniform":
        if is_paper_tau(cfg.tau) and model_alias(cfg.model) not in PAPER_TAU_MODELS:
            raise UserError(f"--tau paper: the official run scripts give τ only for {', '.join(PAPER_TAU_MODELS)}, "
                            f"not for {cfg.model}; use --tau median (the paper's rule) or a number")
        if is_paper_tau(cfg.tau) and cfg.protocol != "paper":
            # The official τ is the median probe loss under the *training* transforms; the clean protocol
            # weights with eval-transform losses, which are smaller, so that τ is too large for them.
            raise UserError("--tau paper (the official τ, a median of training-transform losses) needs --protocol "
                            "paper; under the clean protocol use --tau median")
        parse_tau(cfg.tau, cfg.paper_tau)
    for key in ("epochs", "probe_epochs", "refit_epochs", "demo_epochs"):
        if getattr(cfg, key) < 0:
            raise UserError(f"{key} must be ≥ 0, got {getattr(cfg, key)}")
    if cfg.finetune and cfg.epochs < 1:
        raise UserError(f"method '{cfg.method}' fine-tunes: epochs must be ≥ 1 (got {cfg.epochs})")
    for key in ("lr", "probe_lr", "refit_lr", "demo_lr", "batch_size", "demo_batch_size"):
        if not getattr(cfg, key) > 0:
            raise UserError(f"{key} must be > 0, got {getattr(cfg, key)}")
    for key in ("l2sp_lambda", "l2sp_beta", "ewc_lambda", "lwf_lambda"):
        if getattr(cfg, key) < 0:
            raise UserError(f"{key} must be ≥ 0, got {getattr(cfg, key)}")
    if not cfg.lwf_temperature > 0:
        raise UserError(f"lwf_temperature must be > 0 (the softmax temperature of LwF's targets), got {cfg.lwf_temperature}")
    if cfg.ewc_draws < 1:
        raise UserError(f"ewc_draws must be ≥ 1 (labels drawn per image for the Fisher), got {cfg.ewc_draws}")
    alphas = cfg.wise_alphas + ((cfg.wise_alpha,) if cfg.wise_alpha is not None else ())
    if any(not 0 <= a <= 1 for a in alphas):
        raise UserError(f"WiSE-FT α must lie in [0, 1]; got {', '.join(map(str, alphas))}")
    if cfg.source_eval_dir and cfg.model == "demo":
        raise UserError("--source-eval is for ImageNet models; the demo model's forgetting is measured on its "
                        "own held-out shapes")
    check_log(cfg.log)
    for key in ("imagenet_subset", "wise_subset"):
        if getattr(cfg, key) is not None and getattr(cfg, key) < 1:
            raise UserError(f"{key} must be ≥ 1 (or none for every image), got {getattr(cfg, key)}")


def check_log(name: str) -> None:
    """A one-line UserError for an unknown tracker (``--log``), or one whose package is not installed here."""
    import importlib.util

    from .registry import LOGGER_PACKAGES, LOGGERS

    if name not in LOGGERS:
        raise UserError(f"log '{name}' is not valid; choose one of: {', '.join(LOGGERS)}")
    package = LOGGER_PACKAGES.get(name)
    if package and importlib.util.find_spec(package) is None:
        extra = " (or pip install 'flowvision[log]')" if package == "tensorboard" else ""
        raise UserError(f"--log {name}: the {package} package is not installed here; pip install {package}{extra}, "
                        "or run without --log")
