"""A configuration's identity: the run folder's name (``run_id``), the id its seeds share (``config_id``),
and the command line that makes it again (``finetune_command``).

Both ids hash every field that can change a number (``config.KEYED_FIELDS``), but the method's own
knobs only where the method uses them (``knobs.used``, the table the stage keys read too) and fields
added after ids were in use only off their old default, so run folders keep their names as flowvision grows.
"""
from __future__ import annotations

from pathlib import Path

from .config import KEYED_FIELDS, RunConfig, resolve
from .files import stable_hash
from .knobs import in_identity
from .registry import dataset_slug


# ---- a configuration's identity: the run folder's name and the id its seeds share -----------------------
# Fields added after run ids were in use, with their defaults: left out of a configuration's identity
# while at the default, so that the run folders and config ids written before them keep their names.
LATER_FIELDS = {"demo_n_test": None, "distill": "none", "amp_dtype": None, "tf32": None, "wise_keys": "shared",
                "val_split": 0.0}


def _numbers(cfg: RunConfig) -> dict:
    values = cfg.to_dict()

    def counts(k):
        if k in LATER_FIELDS and values[k] == LATER_FIELDS[k]:
            return False
        return in_identity(k, values)
    return {k: values[k] for k in KEYED_FIELDS if counts(k)}


def keyed_values(cfg: RunConfig) -> dict:
    """Every field that can change a number, but the seed: what runs of one configuration share."""
    return {k: v for k, v in _numbers(cfg).items() if k != "seed"}


def run_id(cfg: RunConfig) -> str:
    """<dataset>-<model>-<method>-s<seed>-<hash of every field that can change a number>; a folder data
    set is named by its base name (the hash holds its full path)."""
    return f"{dataset_slug(cfg.dataset)}-{model_slug(cfg)}-{cfg.method}-s{cfg.seed}-{stable_hash(_numbers(cfg))[:8]}"


def config_id(cfg: RunConfig) -> str:
    """Like run_id's hash but without the seed: runs that differ only in seed share it."""
    return stable_hash(keyed_values(cfg))[:8]


def model_slug(cfg: RunConfig) -> str:
    return Path(cfg.model).name.replace(".", "_")


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
            parts += ["--set", f"{key}={set_text(value)}"]
    return " ".join(shlex.quote(p) for p in parts)


def set_text(value) -> str:
    """A config value as ``--set key=VALUE`` writes it: '0,0.5,1' for a tuple, 'none', 'true'/'false'."""
    if isinstance(value, (tuple, list)):
        return ",".join(f"{v:g}" for v in value)
    return "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
