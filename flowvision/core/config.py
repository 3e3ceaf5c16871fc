"""RunConfig: typed defaults -> configs/*.yaml -> method preset -> CLI overrides, resolved once.

    cfg = resolve(dataset="gratings", model="demo", method="flow", overrides={"tau": "p25"})

Order (later wins): the dataclass defaults; the top-level keys of the config file for
(model, dataset) — ``configs/<model>/<dataset>.yaml``, else ``configs/<model>/default.yaml`` (for a
data set no file names, such as a folder of the user's own images), else ``configs/<model>.yaml``, else the
recipe of the model's family, ``configs/families/<family>.yaml`` (a timm model without configs); the method
preset's knobs; the file's ``methods:`` section for that method (a method inherits its base's
entry first, e.g. ``wiseft`` uses ``ft``'s learning rate); then explicit overrides.
The presets, like every data set and model name, are defined in ``registry.py``.
Unknown keys and values of the wrong type are a UserError naming the key. Importing this module
does not import torch, so the CLI stays instant for --help and bad input.
"""
from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Optional

from .errors import UserError, closest, did_you_mean
from .registry import METHODS, MODEL_TAGS  # noqa: F401 (MODEL_TAGS: source.py reads it from here)
from .checks import check_model_name, validate
from .distributed import usable_cores
from .registry import DOGS_SPLITS, PAPER_SPLITS, default_model, folder_dataset, is_folder
from .registry import REAL_DATASETS as REAL_TASKS
from .registry import SYNTHETIC_DATASETS as SYNTHETIC_TASKS

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


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
    l2sp_lambda: float = 0.01           # L2-SP's α, (α/2)·Σ‖θ − θ_source‖² on the shared tensors: the l2sp presets set 0.1
    #                                     (L2-SP's own code); this default, in every run id, runs without a pull carry
    l2sp_beta: float = 0.01             # L2-SP's β: (β/2)·‖θ‖² on the tensors the pull does not cover (the new head, the
    #                                     task-specific BatchNorms), as weight decay; the pulled tensors get no decay
    pull: str = "proximal"              # ℓ2-SP/EWC: proximal (a step after the optimiser's, stable at any lr·λ) | gradient
    term_scale: str = "weights"         # FLOW with a pull or LwF: that term scaled by the batch's mean FLOW weight, as the
    #                                     weighted task loss is (weights) | not (none: it weighs ≈ 1/mean weight more)
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
    wise_keys: str = "shared"           # what WiSE-FT interpolates: the shared tensors, the fine-tuned BatchNorms kept
    #                                     (shared) | every tensor but the head, BatchNorm statistics too (all: the official wise-ft)
    val_split: float = 0.0              # the share of the training images held out (seeded) to choose settings on
    #                                     (`frontier`); 0: none, every training image trains
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
    amp_dtype: Optional[str] = None     # autocast's dtype: bfloat16 | float16 (with a gradient scaler); none: decided for the
    #                                     device, bfloat16 where the GPU computes it (capability >= 8.0), else float16
    #                                     (decided, bfloat16 reads as none: what amp meant before the field)
    tf32: Optional[bool] = None         # CUDA only: none keeps torch's defaults (convolutions TF32, matmuls fp32: what the
    #                                     official code ran), false is IEEE fp32 throughout, true TF32 throughout
    channels_last: Optional[bool] = _where(None)
    compile: bool = _where(False)
    deterministic: bool = _where(False)  # deterministic algorithms, no cuDNN autotuning (slower; recorded)
    num_workers: Optional[int] = _where(None)  # none: min(8, cores) for real data on the PIL path, else 0
    # Table 5's hardest 10 % needs a linear probe and a test pass of it: none computes them where the run trains the
    # probe anyway or finds it cached (a grid's FLOW run shares it), true always, false never
    hard10: Optional[bool] = _where(None)
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


FAMILY_DIR = CONFIG_DIR / "families"  # configs/families/<family>.yaml: a model without configs of its own


def config_file_for(model: str, dataset: str) -> Optional[Path]:
    """configs/<model>/<dataset>.yaml, else configs/<model>/default.yaml (a folder data set never has
    a file of its own), else configs/<model>.yaml, else its family's recipe, configs/families/<family>.yaml
    (``registry.recipe_family``), else None."""
    from .registry import recipe_family

    slug = model.split(".")[0] if model in MODEL_TAGS.values() else model
    own = () if is_folder(dataset) else (CONFIG_DIR / slug / f"{dataset}.yaml",)
    for path in (*own, CONFIG_DIR / slug / DEFAULT_CONFIG, CONFIG_DIR / f"{slug}.yaml",
                 FAMILY_DIR / f"{recipe_family(model)}.yaml"):
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
        values["num_workers"] = min(8, usable_cores()) if real and values["data_path"] == "pil" else 0
    cfg = RunConfig(**values)
    validate(cfg)
    if trace is not None:
        trace.update({f: origin.get(f, "default") for f in FIELDS})
    return cfg


def speed_defaults(cfg: RunConfig, device_type: str, bf16: bool = True) -> RunConfig:
    """``cfg`` with amp and channels_last decided for a device of ``device_type`` ('cuda' | 'cpu'): a value
    given stays; none (auto) is on under the clean protocol on CUDA (autocast, NHWC: what fast ResNet
    recipes run), off otherwise: the paper protocol computes in fp32 as the official code did, and the CPU
    keeps fp32 (its numbers and stage keys are the ones they always were). Autocast's dtype, when not given:
    bfloat16 where ``bf16`` (the GPU has bf16 units; ``hardware.bf16_units``), else float16 (decided as
    "float16", or none for bfloat16); TF32 is kept on CUDA only.

    A run id hashes the config as given ("auto"), so it is the same wherever it is computed (a dry run
    on a laptop, a Slurm login node, the GPU that runs it); the stage keys hash the precision that
    actually ran (``stages.Run`` applies this), so a GPU run never reads a stage the CPU computed in fp32."""
    fast = cfg.protocol == "clean" and device_type == "cuda"
    amp = fast if cfg.amp is None else cfg.amp
    cuda = device_type == "cuda"
    # decided, the dtype is float16 or none (bfloat16, what amp always meant: its stage keys stay those of before
    # the field); TF32 exists on CUDA only (none on the CPU, whose fp32 has no TF32, so its keys stay too)
    fp16 = cfg.amp_dtype == "float16" or (cfg.amp_dtype is None and cuda and not bf16)
    dtype = "float16" if amp and fp16 else None
    return dataclasses.replace(cfg, amp=amp, channels_last=fast if cfg.channels_last is None else cfg.channels_last,
                               amp_dtype=dtype, tf32=cfg.tf32 if cuda else None)


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


def default_cache_dir() -> Path:
    return Path(os.environ.get("FLOWVISION_CACHE") or Path.home() / ".cache" / "flowvision")


def _folder(dataset: str) -> str:
    """``folder:PATH`` with PATH made absolute; an empty PATH is a UserError."""
    path = dataset.split(":", 1)[1]
    if not path.strip():
        raise UserError("--dataset folder:PATH needs the path of a folder of images, e.g. folder:~/photos")
    return folder_dataset(path)


