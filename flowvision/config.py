"""RunConfig: typed defaults -> configs/*.yaml -> method preset -> CLI overrides, resolved once.

    cfg = resolve(dataset="gratings", model="demo", method="flow", overrides={"tau": "p25"})

Order (later wins): the dataclass defaults; the top-level keys of the config file for
(model, dataset) — ``configs/<model>/<dataset>.yaml``, else ``configs/<model>/default.yaml`` (for a
data set no file names, such as a folder of the user's own images), else ``configs/<model>.yaml``; the method
preset's knobs; the file's ``methods:`` section for that method (a method inherits its base's
entry first, e.g. ``wiseft`` uses ``ft``'s learning rate); then explicit overrides.
The presets, like every data set and model name, are defined in ``registry.py``.
Unknown keys and values of the wrong type are a UserError naming the key. Importing this module
does not import torch, so the CLI stays instant for --help and bad input.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Optional

from .errors import UserError, closest, did_you_mean
from .files import stable_hash
from .registry import METHODS, MODEL_TAGS  # noqa: F401 (MODEL_TAGS: source.py reads it from here)
from .registry import (DOGS_SPLITS, PAPER_SPLITS, PAPER_TAU_MODELS, PROTOCOLS, dataset_slug, default_model, folder_dataset,
                       is_folder, model_alias)
from .registry import REAL_DATASETS as REAL_TASKS
from .registry import SYNTHETIC_DATASETS as SYNTHETIC_TASKS

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

WEIGHTINGS = ("uniform", "flow", "flow-online")
HEAD_INITS = ("random", "probe")
REGULARIZERS = ("none", "l2sp", "ewc")
DISTILLS = ("none", "lwf")
LWF_PARTS = ("source", "training")
IMAGENET_TRANSFORMS = ("auto", "official", "timm")


def _where(default):
    """A field that never changes a number by itself (where files are, how fast to run, a method's
    name): it is in no stage's key and no run id hash (a stage may still *use* it; see
    stages.Stage.uses)."""
    return field(default=default, metadata={"keyed": False})


@dataclass(frozen=True)
class RunConfig:
    # what to run
    dataset: str = "gratings"
    model: str = "demo"                 # demo | resnet18 | resnet50 | any timm name or tag
    weights: Optional[str] = None       # a local .safetensors/.pth file for --model
    method: str = _where("flow")        # a name for a preset of the knobs below; stages read the knobs
    seed: int = 0
    protocol: str = "clean"             # clean (ours) | paper (the official code's choices; registry.PROTOCOLS)
    dogs_split: Optional[str] = None    # stanford_dogs under --protocol paper: per-stage (default: one split per
    #                                     official script, as the official code drew them) | single; none elsewhere
    # method knobs (set by the preset; an explicit value wins)
    weighting: str = "flow"
    tau: str = "median"                 # a number > 0 | median | pNN | paper (= paper_tau, kept as the rule; paper protocol only)
    paper_tau: Optional[float] = None   # the official run script's τ for this model and data set
    normalize: str = "mean"             # mean: mean(w·ℓ) (official) | sum: Σwℓ/Σw
    head_init: str = "probe"
    finetune: bool = True
    regularizer: str = "none"            # none | l2sp | ewc (REGULARIZERS)
    l2sp_lambda: float = 0.01           # (λ/2)·Σ‖θ − θ_source‖² over the shared tensors. No published source: the paper
    #                                     gives no vision λ (its language experiments used 1e-3); 0.01 is flowvision's
    #                                     own untuned choice, so `flowvision frontier` sweeps it (× 0.1, 1, 10)
    ewc_lambda: float = 10.0            # EWC's λ on the Fisher scaled to max 1: L2-SP's λ at its stiffest entry (docs/methods.md)
    ewc_samples: Optional[int] = None   # target training images the Fisher is averaged over (None: all)
    ewc_draws: int = 1                  # labels drawn per image from the pre-trained model's source predictions
    distill: str = "none"               # none | lwf: keep the pre-trained model's source outputs (DISTILLS)
    lwf_lambda: float = 1.0             # LwF's λ_o (Li & Hoiem 2016: 1)
    lwf_temperature: float = 2.0        # LwF's T (Li & Hoiem 2016: 2)
    lwf_parts: str = "source"           # the student's source outputs: through the pre-trained BatchNorms and head, the
    #                                     model forgetting measures (source) | the training network's own (training)
    refit: bool = True
    wise_alpha: Optional[float] = None
    wise_alphas: tuple = ()
    wise_subset: Optional[int] = 10_000  # WiSE-FT points other than α = 0, 1 and the reported α: source accuracy on a
                                         # seeded class-balanced subset of this many images (none: the whole set)
    # optimisation (official code: SGD, momentum 0.9, weight decay 5e-4, cosine per epoch, batch 128)
    epochs: int = 3
    lr: float = 0.01
    batch_size: int = 128
    momentum: float = 0.9
    weight_decay: float = 5e-4
    probe_epochs: int = 1
    probe_lr: float = 0.01
    probe_bn_train: bool = True         # official: BN in train mode during the probe (stats adapt)
    refit_epochs: int = 1
    refit_lr: float = 0.01
    augment: bool = True
    # data
    image_size: Optional[int] = None    # None: the task's own size (32 synthetic, 224 real)
    n_train: Optional[int] = None       # synthetic tasks only: sizes of the splits
    n_test: Optional[int] = None
    data_seed: int = 0                  # synthetic tasks: which images (the run seed varies training); the split of
                                        # a data set without one (caltech101, a folder of class folders)
    split_ratio: float = 0.8            # a folder of class folders: the share of each class that trains, the rest tests
    data_path: Optional[str] = None     # device: decoded uint8 caches + batched augmentation on the device |
                                        # pil: per-sample host transforms (the reference); none: device for
                                        # real data sets, pil for the synthetic tasks (already in memory)
    data_root: Optional[str] = _where(None)
    imagenet: Optional[str] = _where(None)
    imagenet_subset: Optional[int] = None
    imagenet_transform: str = "auto"    # official: bilinear Resize(256)+CenterCrop(224) | timm: the weights' own |
    #                                     auto: official for the paper's two tags, the weights' own otherwise
    source_eval_dir: Optional[str] = _where(None)  # any folder of images (labelled synset folders or not) instead of --imagenet
    # an unreadable image file (data/images.py) stops the run; true: leave it out and go on. Not keyed by
    # itself: the files left out join the data's fingerprint, and so every stage key after it
    skip_bad_images: bool = _where(False)
    restore: str = "task-specific"      # forgetting model: head + every BN from the source (Appendix B) | none: source head only
    task_specific: str = "auto"         # which parts are task-specific: auto (per timm family) | head | head+bn | head+norms
    # the demo source model (trained once on the synthetic source task, cached)
    demo_arch: str = "resnet18"
    demo_epochs: int = 4
    demo_lr: float = 0.001
    demo_batch_size: int = 32
    demo_n_train: Optional[int] = None
    # the source task's val set (the ImageNet stand-in forgetting is measured on, and the demo model's
    # val accuracy): its own size, so that n_test, the target task's, never redefines the source
    demo_n_test: Optional[int] = None
    # where
    results_dir: str = _where("results")
    hparams_note: Optional[str] = _where(None)  # where the config file's numbers come from, when not this model's own
    sweep: Optional[str] = _where(None)  # e.g. "frontier": a sweep point off its method's defaults; tables and plots leave it out
    cache_dir: Optional[str] = _where(None)  # demo models, copied weights, decoded images; default $FLOWVISION_CACHE or ~/.cache/flowvision
    # hardware: where and how fast. amp (bf16) changes numbers and is keyed; the others are not keyed
    # (channels_last and compile may move the last bits of a float, never a result's meaning).
    # amp and channels_last none (auto): on under the clean protocol on a CUDA device, off otherwise
    # (``speed_defaults``); a run id keeps "auto", the stage keys the precision that ran
    device: str = _where("auto")
    amp: Optional[bool] = None
    channels_last: Optional[bool] = _where(None)
    compile: bool = _where(False)
    deterministic: bool = _where(False)  # deterministic algorithms, no cuDNN autotuning (slower; recorded)
    num_workers: Optional[int] = _where(None)  # none: min(8, cores) for real data on the PIL path, else 0
    # experiment tracking (trackers.py): none | tensorboard | wandb; never changes a number
    log: str = _where("none")

    @property
    def synthetic(self) -> bool:
        return self.dataset in SYNTHETIC_TASKS

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["wise_alphas"] = list(self.wise_alphas)
        return d


_HINTS = typing.get_type_hints(RunConfig)
FIELDS = tuple(f.name for f in fields(RunConfig))
# What a person sets with --set: not the run's names (their own options) nor the labels flowvision writes itself
# (a frontier's sweep tag, a config file's note on where its numbers come from).
SETTABLE = tuple(f for f in FIELDS if f not in ("dataset", "model", "method", "sweep", "hparams_note"))
# The fields that can change a number: everything but locations, device and speed switches.
KEYED_FIELDS = tuple(f.name for f in fields(RunConfig) if f.metadata.get("keyed", True))
RESTORE_RULES = ("task-specific", "none")
DATA_PATHS = ("device", "pil")
TASK_SPECIFIC_RULES = ("auto", "head", "head+bn", "head+norms")  # see models.task_specific_keys


def _coerce(key: str, value):
    """Convert a YAML or command-line value to the field's type, or raise a UserError naming key."""
    hint = _HINTS[key]
    optional = typing.get_origin(hint) is typing.Union and type(None) in typing.get_args(hint)
    base = next(a for a in typing.get_args(hint) if a is not type(None)) if optional else hint
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null", "")
                         + (("auto",) if base is bool else ())):
        if optional:
            return None
        raise UserError(f"config key '{key}' cannot be empty")
    try:
        if base is bool:
            if isinstance(value, bool):
                return value
            text = str(value).lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if base is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if base is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if base is tuple:
            items = value if isinstance(value, (list, tuple)) else str(value).replace(",", " ").split()
            return tuple(float(v) for v in items)
        if isinstance(value, (dict, list, tuple)):
            raise TypeError
        return str(value)
    except (TypeError, ValueError):
        kind = {bool: "true, false or auto" if optional else "true or false", int: "an integer", float: "a number",
                tuple: "a list of numbers"}
        raise UserError(f"config key '{key}': {value!r} is not {kind.get(base, 'a string')}") from None


def _check_keys(values: dict, where: str) -> None:
    bad = [k for k in values if not isinstance(k, str)]
    if bad:
        raise UserError(f"config key {bad[0]!r} in {where} is not a name; keys are names such as epochs or lr")
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        named = ", ".join(k + did_you_mean(k, SETTABLE) for k in unknown)
        raise UserError(f"unknown config key{'s' if len(unknown) > 1 else ''} {named} in {where}; "
                        f"valid keys: {', '.join(SETTABLE)}")


def _check_not_identity(values: dict, where: str) -> None:
    """dataset, model and method name the run; they come from their own options, never from --set
    or a config file (a silently ignored value there would run something else than asked)."""
    for key in ("dataset", "model", "method"):
        if key in values:
            raise UserError(f"'{key}' cannot be set in {where}; use --{key}")


DEFAULT_CONFIG = "default.yaml"  # configs/<model>/default.yaml: for data sets no config file names


def config_file_for(model: str, dataset: str) -> Optional[Path]:
    """configs/<model>/<dataset>.yaml, else configs/<model>/default.yaml (a folder data set never has
    a file of its own), else configs/<model>.yaml, else None."""
    slug = model.split(".")[0] if model in MODEL_TAGS.values() else model
    own = () if is_folder(dataset) else (CONFIG_DIR / slug / f"{dataset}.yaml",)
    for path in (*own, CONFIG_DIR / slug / DEFAULT_CONFIG, CONFIG_DIR / f"{slug}.yaml"):
        if path.is_file():
            return path
    return None


MAX_CONFIG_BYTES = 1 << 20  # the largest config in configs/ is under 1 KiB


def _yaml_loader():
    """yaml.SafeLoader without aliases: an alias (*name) can expand a small file into gigabytes
    (an 'alias bomb'), and no flowvision config needs one."""
    import yaml

    class Loader(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in flowvision configs",
                                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)
    return Loader


def read_config_file(path: Path) -> dict:
    """A config file's mapping, or a one-line UserError naming the file and what is wrong with it:
    missing, not a regular file, too large, not UTF-8 text, empty, not YAML, aliases, too deep,
    not a mapping, a ``methods`` section that is not a mapping of method names to mappings, or no
    newline at its end.

    A file cut short mid-way often still parses (``lr: 0.0`` from ``lr: 0.01``), and the keys it lost
    would silently keep their defaults. What can be told from the file alone is its end: every editor
    and ``yaml.safe_dump`` end a file with a newline, a cut rarely falls right after one, so a missing
    final newline is refused (a cut right after a line's end, or inside a number, cannot be seen).
    A key left without a value is refused where the key needs one (``_coerce``)."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise UserError(f"config file {path} does not exist")
    if not path.is_file():
        raise UserError(f"config file {path} is not a regular file; pass a .yaml file")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise UserError(f"config file {path} is larger than {MAX_CONFIG_BYTES >> 20} MiB; a config is a few lines of YAML")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"config file {path} is not UTF-8 text; pass a .yaml file") from None
    except OSError as e:
        raise UserError(f"config file {path} cannot be read: {e.strerror}") from None
    if "\0" in text:
        raise UserError(f"config file {path} holds a NUL byte; it is not a text file")
    if not text.strip():
        raise UserError(f"config file {path} is empty; write key: value lines, e.g. 'epochs: 3'")
    try:
        data = yaml.load(text, Loader=_yaml_loader())
    except yaml.YAMLError as e:
        raise UserError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    except RecursionError:
        raise UserError(f"config file {path} is nested too deeply; a config is a flat mapping") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of keys to values, not {type(data).__name__}")
    methods = data.get("methods", {})
    if methods is not None and not isinstance(methods, dict):
        raise UserError(f"config file {path}: 'methods' must map method names to key: value mappings")
    for name, values in (methods or {}).items():
        if name not in METHODS:
            raise UserError(f"config file {path}: methods.{name} is not a method; choose among {', '.join(METHODS)}")
        if not isinstance(values, dict):
            raise UserError(f"config file {path}: methods.{name} must be a mapping of keys to values")
    if not text.endswith("\n"):
        last = text.rstrip().splitlines()[-1].strip()
        raise UserError(f"config file {path} does not end with a newline, as a file cut short would not (its last "
                        f"line: {last[:60]!r}); check that line and end the file with a newline")
    return data


def resolve(dataset: Optional[str] = "gratings", model: Optional[str] = None, method: str = "flow",
            overrides: Optional[dict] = None, config_file: Optional[Path] = None,
            trace: Optional[dict] = None) -> RunConfig:
    """Build and validate the RunConfig for one run (see the module docstring for the order).
    ``model`` None: ``registry.default_model(dataset)``. ``trace``, when given, is filled with
    where each field's value came from: default, config file <path>, preset <method>, command line."""
    origin = {"dataset": "command line" if dataset else "default", "method": "command line"}
    dataset = dataset or RunConfig.dataset
    if is_folder(dataset):
        dataset = _folder(dataset)
    origin["model"] = ("command line" if model else
                       f"default for {'a synthetic task' if dataset in SYNTHETIC_TASKS else 'a real data set'}")
    model = model or default_model(dataset)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    _check_keys(overrides, "the overrides")
    _check_not_identity(overrides, "--set")
    if method not in METHODS:
        raise UserError(f"unknown method '{method}'{did_you_mean(method, METHODS)}; choose one of: {', '.join(METHODS)}")
    check_model_name(model)
    path = Path(config_file) if config_file else config_file_for(model, dataset)
    values: dict = {}
    if path is not None:
        data = read_config_file(path)
        per_method = data.pop("methods", {}) or {}
        _check_keys(data, str(path))
        _check_not_identity(data, str(path))
        values.update(data)
        origin.update(dict.fromkeys(data, f"config file {path}"))
    values.update(METHODS[method][1])
    origin.update(dict.fromkeys(METHODS[method][1], f"preset {method}"))
    if path is not None:
        for name in (METHODS[method][0], method):
            if name and name in per_method:
                _check_keys(per_method[name], f"{path} (methods.{name})")
                values.update(per_method[name])
                origin.update(dict.fromkeys(per_method[name], f"config file {path} (methods.{name})"))
    values.update(overrides)
    origin.update(dict.fromkeys(overrides, "command line"))
    values.update(dataset=dataset, model=model, method=method)
    values = {k: _coerce(k, v) for k, v in values.items()}
    real = dataset in REAL_TASKS or is_folder(dataset)
    if values.get("data_path") is None:
        values["data_path"] = "device" if real else "pil"
    if values.get("dogs_split") is None and dataset in PAPER_SPLITS and values.get("protocol") == "paper":
        values["dogs_split"] = DOGS_SPLITS[0]  # docs/protocols.md says why per-stage is the paper protocol's
    if values.get("num_workers") is None:  # decoding JPEGs needs every core; arrays in memory need none
        values["num_workers"] = min(8, os.cpu_count() or 1) if real and values["data_path"] == "pil" else 0
    cfg = RunConfig(**values)
    validate(cfg)
    if trace is not None:
        trace.update({f: origin.get(f, "default") for f in FIELDS})
    return cfg


def validate(cfg: RunConfig) -> None:
    """Reject values no run can use, naming the key and the valid choices."""
    from .weighting import NORMALIZATIONS, is_paper_tau, parse_tau

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
    for key in ("l2sp_lambda", "ewc_lambda", "lwf_lambda"):
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


def speed_defaults(cfg: RunConfig, device_type: str) -> RunConfig:
    """``cfg`` with amp and channels_last decided for a device of ``device_type`` ('cuda' | 'cpu'): a value
    given stays; none (auto) is on under the clean protocol on CUDA (bf16 autocast, NHWC: what fast ResNet
    recipes run), off otherwise: the paper protocol computes in fp32 as the official code did, and the CPU
    keeps fp32 (its numbers and stage keys are the ones they always were).

    A run id hashes the config as given ("auto"), so it is the same wherever it is computed (a dry run
    on a laptop, a Slurm login node, the GPU that runs it); the stage keys hash the precision that
    actually ran (``stages.Run`` applies this), so a GPU run never reads a stage the CPU computed in fp32."""
    fast = cfg.protocol == "clean" and device_type == "cuda"
    return dataclasses.replace(cfg, amp=fast if cfg.amp is None else cfg.amp,
                               channels_last=fast if cfg.channels_last is None else cfg.channels_last)


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


def check_model_name(model: str) -> None:
    """A model is 'demo', an alias or a timm name/tag: letters, digits, '_' and one '.' before the tag
    (never a path: the name also picks a file under configs/)."""
    if not re.fullmatch(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)?", model):
        raise UserError(f"model '{model}' is not a model name; use demo, resnet18, resnet50 or a timm tag such as "
                        "resnet18.tv_in1k (a weights file goes to --weights)")


def parse_sets(items: list[str]) -> dict:
    """['key=value', ...] from --set -> {key: value}; a malformed item is a UserError."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            known = key if key in SETTABLE else closest(key, SETTABLE)
            default = getattr(RunConfig, known, None) if known else None
            example = (f"--set {known}={'VALUE' if default is None or isinstance(default, tuple) else default}"
                       if known else "--set probe_epochs=2")
            raise UserError(f"--set {item!r}: write key=value, e.g. {example}"
                            + (f"; unknown key {key}, valid keys: {', '.join(SETTABLE)}" if not known and key else ""))
        if key in out and out[key] != value.strip():
            # last-wins would silently drop a value (e.g. a τ sweep typed as repeated --set tau=…)
            raise UserError(f"--set {key} is given twice ({key}={out[key]} and {key}={value.strip()}); give it once "
                            f"(for a sweep, run one command per value, or `flowvision frontier`)")
        out[key] = value.strip()
    return out


def write_yaml(cfg: RunConfig) -> str:
    import yaml

    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def read_run_config(path: Path) -> RunConfig:
    """The RunConfig a run folder's config.yaml (``write_yaml``) holds: a UserError naming the file and
    key when a key is unknown or a value of the wrong type (whether it is the run's own is for the
    caller to check, e.g. against the record's run id)."""
    values = read_config_file(path)
    _check_keys(values, str(path))
    missing = [k for k in ("dataset", "model", "method") if k not in values]
    if missing:
        raise UserError(f"{path} is not a run's config: it has no {', '.join(missing)}")
    return RunConfig(**{k: _coerce(k, v) for k, v in values.items()})  # validated when the run resolved it


def finetune_command(cfg: RunConfig) -> str:
    """A ``flowvision finetune`` command line whose config is ``cfg``: the identity options, the places
    (weights, data, source images, results) it read and wrote, and ``--set`` for every field that can
    change a number whose value differs from what the identity options resolve to."""
    import shlex

    base = resolve(cfg.dataset, cfg.model, cfg.method, {"seed": cfg.seed, "weights": cfg.weights})
    parts = ["flowvision", "finetune", "--dataset", cfg.dataset, "--model", cfg.model, "--method", cfg.method,
             "--seed", str(cfg.seed)]
    for option, key in (("--weights", "weights"), ("--data-root", "data_root"), ("--imagenet", "imagenet"),
                        ("--source-eval", "source_eval_dir")):
        if getattr(cfg, key):
            parts += [option, str(getattr(cfg, key))]
    if cfg.results_dir != RunConfig.results_dir:
        parts += ["--results-dir", cfg.results_dir]
    for key in KEYED_FIELDS:
        value = getattr(cfg, key)
        if value != getattr(base, key):
            text = (",".join(f"{v:g}" for v in value) if isinstance(value, tuple) else "none" if value is None
                    else str(value).lower() if isinstance(value, bool) else str(value))
            parts += ["--set", f"{key}={text}"]
    return " ".join(shlex.quote(p) for p in parts)


def default_cache_dir() -> Path:
    return Path(os.environ.get("FLOWVISION_CACHE") or Path.home() / ".cache" / "flowvision")


# ---- a configuration's identity: the run folder's name and the id its seeds share -----------------------
# Fields added after run ids were in use, with their defaults: left out of a configuration's identity
# while at the default, so that the run folders and config ids written before them keep their names.
LATER_FIELDS = {"demo_n_test": None, "distill": "none"}
# A method's own knobs, also added later: in the identity only of runs whose method uses them (an ft run's
# ewc_lambda changes no number).
USED_WITH = {"ewc_lambda": ("regularizer", "ewc"), "ewc_samples": ("regularizer", "ewc"),
             "ewc_draws": ("regularizer", "ewc"), "lwf_lambda": ("distill", "lwf"),
             "lwf_temperature": ("distill", "lwf"), "lwf_parts": ("distill", "lwf")}


def _numbers(cfg: RunConfig) -> dict:
    values = cfg.to_dict()

    def counts(k):
        if k in LATER_FIELDS and values[k] == LATER_FIELDS[k]:
            return False
        return k not in USED_WITH or values[USED_WITH[k][0]] == USED_WITH[k][1]
    return {k: values[k] for k in KEYED_FIELDS if counts(k)}


def keyed_values(cfg: RunConfig) -> dict:
    """Every field that can change a number, but the seed: what runs of one configuration share."""
    return {k: v for k, v in _numbers(cfg).items() if k != "seed"}


def _folder(dataset: str) -> str:
    """``folder:PATH`` with PATH made absolute; an empty PATH is a UserError."""
    path = dataset.split(":", 1)[1]
    if not path.strip():
        raise UserError("--dataset folder:PATH needs the path of a folder of images, e.g. folder:~/photos")
    return folder_dataset(path)


def run_id(cfg: RunConfig) -> str:
    """<dataset>-<model>-<method>-s<seed>-<hash of every field that can change a number>; a folder data
    set is named by its base name (the hash holds its full path)."""
    return f"{dataset_slug(cfg.dataset)}-{model_slug(cfg)}-{cfg.method}-s{cfg.seed}-{stable_hash(_numbers(cfg))[:8]}"


def config_id(cfg: RunConfig) -> str:
    """Like run_id's hash but without the seed: runs that differ only in seed share it."""
    return stable_hash(keyed_values(cfg))[:8]


def model_slug(cfg: RunConfig) -> str:
    return Path(cfg.model).name.replace(".", "_")
