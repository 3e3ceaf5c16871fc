"""The names flowvision knows: data sets, methods and model aliases, each listed once.

    from flowvision import registry
    registry.resolve_dataset_group("paper")   # ['cifar10', 'cifar100', ..., 'stanford_dogs']
    registry.METHODS["flow+wiseft"]           # ('flow', {knobs})
    registry.MODEL_TAGS["resnet18"]           # 'resnet18.tv_in1k'
    registry.folder_dataset("~/photos")       # 'folder:/home/me/photos': the user's own images

Everything else (config, data loaders, tables, figures, the CLI's help) reads these lists. How a
data set is loaded stays with its loader (``data/real.py`` and ``data/synthetic.py`` hold one spec
per name here; a test checks they agree). Plain data and stdlib only: importing it is instant.
"""
from __future__ import annotations

from typing import Optional, Sequence

from .errors import UserError, did_you_mean

# ------------------------------------------------------------------------------------- data sets
PAPER_DATASETS = ("cifar10", "cifar100", "flowers102", "caltech101", "stanford_cars", "stanford_dogs")
EXTRA_DATASETS = ("dtd", "oxford_pets")          # real targets the paper does not report
REAL_DATASETS = PAPER_DATASETS + EXTRA_DATASETS
SOURCE_TASK = "shapes"                            # the demo model's pre-training task (stands in for IN-1K)
DEMO_DATASETS = ("gratings", "patterns")          # synthetic targets for the demo model
SYNTHETIC_DATASETS = DEMO_DATASETS + (SOURCE_TASK,)
DATASETS = REAL_DATASETS + SYNTHETIC_DATASETS
DATASET_GROUPS = {"paper": PAPER_DATASETS, "demo": DEMO_DATASETS}   # for `reproduce --datasets`
# Any other data set is a folder of the user's own images: ``folder:PATH`` (``data/folder.py``), its
# path made absolute when a config is resolved; runs name it by the folder's base name.
FOLDER_PREFIX = "folder:"

# --------------------------------------------------------------------------------------- methods
# Methods are presets of orthogonal knobs; a new baseline is a new entry here, not a new loop.
#   weighting   uniform | flow (static, Algorithm 1) | flow-online (official code)
#   head_init   random (a fresh head, as the official standard FT) | probe (start from the linear probe)
#   finetune    False: stop after the probe (linear probing)
#   regularizer none | l2sp (pull the shared weights towards the pre-trained ones, strength l2sp_lambda)
#               | ewc (the same pull weighted by a diagonal Fisher of the pre-trained model, ewc_lambda)
#   distill     none | lwf (keep the pre-trained model's source-task outputs on the target images, lwf_lambda)
#   refit       Appendix-B stage 2: retrain the head on the frozen fine-tuned backbone, plain loss
#   wise_alpha  WiSE-FT: report the model whose shared weights are (1-α)·pre-trained + α·fine-tuned
_FT = dict(weighting="uniform", head_init="random", finetune=True, regularizer="none", distill="none", refit=False,
           wise_alpha=None)
_FLOW = dict(weighting="flow", head_init="probe", finetune=True, regularizer="none", distill="none", refit=True,
             wise_alpha=None)
_WISE = dict(wise_alpha=0.5, wise_alphas=(0.0, 0.25, 0.5, 0.75, 1.0))
# L2-SP (Li, Grandvalet & Davoine 2018) with its own code's α = 0.1 (the pull) and β = 0.01 (the plain L2 of what
# the pull does not cover: RunConfig.l2sp_beta); the FLOW paper gives no vision λ for its ℓ2 baseline
_L2SP = dict(regularizer="l2sp", l2sp_lambda=0.1)
METHODS: dict[str, tuple[Optional[str], dict]] = {
    # name: (base method whose config-file settings it inherits, knobs)
    "ft": (None, _FT),
    "lp": (None, dict(_FT, head_init="probe", finetune=False)),
    "lpft": ("ft", dict(_FT, head_init="probe")),
    "l2sp": ("ft", dict(_FT, **_L2SP)),
    "wiseft": ("ft", dict(_FT, **_WISE)),
    "flow": (None, _FLOW),
    "flow+l2sp": ("flow", dict(_FLOW, **_L2SP)),
    "flow+wiseft": ("flow", dict(_FLOW, **_WISE)),
    # not in the paper: the source-data-free baselines a sceptic names next (docs/methods.md). LwF starts
    # from the probe: Li & Hoiem's warm-up step (the new head trained on the frozen network) is the probe.
    "lwf": ("ft", dict(_FT, head_init="probe", distill="lwf")),
    "ewc": ("ft", dict(_FT, regularizer="ewc")),
    "flow+lwf": ("flow", dict(_FLOW, distill="lwf")),
    "flow+ewc": ("flow", dict(_FLOW, regularizer="ewc")),
}
PAPER_METHODS = ("ft", "l2sp", "wiseft", "lp", "flow", "flow+wiseft")   # the paper tables' row order
DEMO_METHODS = ("ft", "flow")                                           # `flowvision demo` compares these

# ---------------------------------------------------------------------------------------- models
DEMO_MODEL = "demo"   # a small timm ResNet pre-trained on SOURCE_TASK, cached (see source.py)
MODEL_TAGS = {"resnet18": "resnet18.tv_in1k", "resnet50": "resnet50.ram_in1k"}   # alias -> pinned weights
PAPER_MODELS = ("resnet18", "resnet50")
# The recipe a timm model without a configs/<model>/ folder of its own gets, configs/families/<family>.yaml, told
# by its architecture's name (no model is built to decide it): LayerNorm networks by these prefixes; every other
# name is taken for a BatchNorm convnet (ResNet, EfficientNet, MobileNet, RegNet, ...). timm's tiny test models
# (test_vit, test_resnet) go with the family of the name after 'test_'.
RECIPE_FAMILIES = {"transformer": ("vit", "deit", "beit", "swin", "convnext", "convit", "eva", "cait", "xcit", "mixer",
                                   "maxvit", "levit", "pvt", "twins", "crossvit", "hiera", "mvit", "coat", "volo",
                                   "efficientformer", "fastvit", "poolformer", "tnt")}
DEFAULT_FAMILY = "convnet"

# The models whose τ the official run scripts give (configs/<model>/<dataset>.yaml: paper_tau).
# ResNet-50's τ and learning rates were not published; its configs carry ResNet-18's hyper-parameters.
PAPER_TAU_MODELS = ("resnet18",)

# ------------------------------------------------------------------------------------- protocols
# clean: last epoch, static weights from eval-transform losses, official split lists (our default).
# paper: what the official vision code does (best-test-epoch checkpoints, online weights, τ from
#        train-transform losses, its Stanford Dogs split). Never pooled in a table.
PROTOCOLS = ("clean", "paper")
PAPER_SPLITS = ("stanford_dogs",)      # data sets whose split differs under the paper protocol
# dogs_split under the paper protocol (data/real.py): one seeded 80/20 split per official script, as the
# official scripts each drew their own (the default), or a single one every stage shares.
DOGS_SPLITS = ("per-stage", "single")


# -------------------------------------------------------------------------- experiment trackers
LOGGERS = ("none", "tensorboard", "wandb")            # --log; each but none needs its package
LOGGER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}


# --------------------------------------------------------------------------------------- helpers
def is_synthetic(name: str) -> bool:
    return name in SYNTHETIC_DATASETS


def is_real(name: str) -> bool:
    return name in REAL_DATASETS


def is_folder(name: str) -> bool:
    """A folder of the user's own images (``folder:PATH``)."""
    return name.startswith(FOLDER_PREFIX)


def folder_dataset(path: str) -> str:
    """'folder:' + the absolute form of ``path`` (``~`` expanded): the name a run records."""
    import os

    return FOLDER_PREFIX + os.path.abspath(os.path.expanduser(path))


def folder_path(name: str) -> str:
    """The path of a ``folder:PATH`` data set."""
    return name[len(FOLDER_PREFIX):]


def dataset_slug(name: str) -> str:
    """How file and folder names call a data set: its name, or a folder's base name (characters other
    than letters, digits, '_', '.' and '-' replaced by '_')."""
    import re

    if not is_folder(name):
        return name
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", folder_path(name).rstrip("/").rsplit("/", 1)[-1]).strip(".")
    return base or "folder"


def check_dataset(name: str, among: Sequence[str] = DATASETS) -> str:
    """``name`` if it is one of ``among``, else a UserError listing them."""
    if name not in among:
        raise UserError(f"unknown data set {name!r}{did_you_mean(name, among)}: choose one of {', '.join(among)}")
    return name


def resolve_dataset_group(text: str) -> list[str]:
    """'paper' | 'demo' | 'cifar10,demo,folder:PATH,...' -> data set names, groups expanded, each once,
    in order. Names are not checked here (the run's config check names a bad one)."""
    names: list[str] = []
    for item in (part.strip() for part in text.split(",")):
        for name in DATASET_GROUPS.get(item, (item,) if item else ()):
            if name not in names:
                names.append(name)
    return names


def default_model(dataset: Optional[str]) -> str:
    """The model a run uses when --model is not given: the demo network for the synthetic tasks,
    ImageNet-1K ResNet-18 (the paper's smaller model, the official code's scripted one) otherwise."""
    return DEMO_MODEL if is_synthetic(dataset or "") else "resnet18"


def recipe_family(model: str) -> str:
    """'transformer' | 'convnet': whose recipe (configs/families/) a model without configs of its own gets."""
    arch = model.split(".")[0].lower()
    arch = arch[len("test_"):] if arch.startswith("test_") else arch
    return next((family for family, prefixes in RECIPE_FAMILIES.items() if arch.startswith(prefixes)), DEFAULT_FAMILY)


def model_alias(model: str) -> str:
    """'resnet18.tv_in1k' -> 'resnet18' (the alias whose pinned tag it is); other names unchanged."""
    return next((alias for alias, tag in MODEL_TAGS.items() if model in (alias, tag)), model)


def model_help() -> str:
    """The --model choices as the CLI's help lists them."""
    first_tag = next(iter(MODEL_TAGS.values()))
    return (f"{DEMO_MODEL} | {' | '.join(MODEL_TAGS)} | a timm tag such as {first_tag} "
            f"(default: resnet18 for a real data set, {DEMO_MODEL} for a synthetic task)")
