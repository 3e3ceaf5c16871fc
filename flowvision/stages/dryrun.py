"""What a run would do, without doing it: ``flowvision finetune ... --dry-run``.

    sources = {}
    cfg = config.resolve("cifar10", None, "flow", {"tau": "1.0"}, trace=sources)
    report = dry_run(cfg, sources)    # {"run", "config", "files", "plan", "splits", "notes"}

It reads no image and loads no model. It gives the resolved config with where each value came from
(default, config file, preset, command line), the files the run would read (target data, pre-trained
weights, ImageNet val) with whether they are there and the fix for each missing one, and the stage
plan. Stage keys come from the declarations (``pipeline.plan``); the loading stages' fingerprints are
what is cheap to have: the pre-trained weights' identity (timm tag, file digest, demo recipe) always,
the data's (file lists and counts) only by loading it. So for a real data set the stages downstream
of ``task`` (and ``source_eval``, downstream of the ImageNet file count and transform) are listed as
keyed when the data loads, and torch is imported only to check a given ImageNet folder's class folders
against the model's classes, as the run checks them (``forgetting.source_folder``); for a synthetic
task the images are generated (they are small; this imports torch) and every stage is keyed exactly.
For Stanford Dogs under the paper protocol it draws the splits from the file list (``splits``: each
training stage's split, its sizes and how many of its test images an earlier stage trained on), still
without reading an image. The run id holds amp as given (auto by default) and is the same on every
machine; the stage keys hold the precision the device decides (``planned``), known here for an
explicit ``--device`` or a synthetic task.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from ..core.config import FIELDS, RunConfig
from ..core.registry import is_folder
from ..core.tau import far_from_paper_tau, is_paper_tau, parse_tau

# What an uncached stage does on every run (it loads, or it is cheap); the rest are cached files.
LOADS = {"task": "loads the target data", "source": "loads the pre-trained weights",
         "source_data": "loads the evaluation images", "weights": "τ and weights (cheap, every run)",
         "final": "the reported model (no work)"}


def config_rows(cfg: RunConfig, sources: dict) -> list[tuple[str, str, str]]:
    """(field, value, where it came from) for every field of the config, in the dataclass order."""
    from ..methods.source import resolve_tag

    values = {k: str(v) for k, v in cfg.to_dict().items()}
    values.update({k: "auto" for k in SPEED if getattr(cfg, k) is None})
    if resolve_tag(cfg.model) != cfg.model:
        values["model"] = f"{cfg.model} = {resolve_tag(cfg.model)}"
    return [(name, values[name], sources.get(name, "default")) for name in FIELDS]


def _row(what: str, path, found: Optional[bool], note: str = "", shown: Optional[str] = None) -> dict:
    """One input: found True (there) | False (missing: the run stops) | None (not checkable without loading, or
    made by the run); ``shown``: how the plan names its state where 'found' / 'NOT FOUND' / 'not checked' would
    mislead."""
    return {"what": what, "path": str(path), "found": found, "note": note,
            "shown": shown or {True: "found", False: "NOT FOUND", None: "not checked"}[found]}


def _data_row(cfg: RunConfig) -> dict:
    if cfg.synthetic:
        return _row("target data", f"synthetic {cfg.dataset}", True, "generated in memory")
    if is_folder(cfg.dataset):
        from ..data.folder import folder_status

        row = folder_status(cfg.dataset, cfg.split_ratio, cfg.data_seed)
        note = (f"{row['classes']} classes ({row['layout']}): {row['n_train']} train / {row['n_test']} test images, "
                f"fingerprint {row['fingerprint']}; every image is decoded and checked when the run loads it"
                if row["found"] else f"cannot be used: {row['problem']}")
        return _row("target data (your folder)", row["path"], row["found"], note)
    from ..data.fetch import how_to_get, resolve_data_root
    from ..data.specs import data_folder

    root = resolve_data_root(cfg.data_root)
    where = "--data-root" if cfg.data_root else "FLOWVISION_DATA" if os.environ.get("FLOWVISION_DATA") else "default"
    folder = data_folder(cfg.dataset, root)
    found = folder.is_dir() and any(folder.iterdir())
    note = (f"data root from {where}; its files are checked when the run loads them" if found
            else f"missing; fix: {how_to_get(cfg.dataset, root)}")
    return _row(f"target data ({cfg.dataset})", folder, found, note)


def _weights_row(cfg: RunConfig) -> dict:
    from ..methods.source import demo_path, resolve_tag

    if cfg.model == "demo":
        path = demo_path(cfg)
        if path.is_file():
            return _row("pre-trained weights (demo model)", path, True, "cached")
        return _row("pre-trained weights (demo model)", path, None,
                    "trained once by the first run (about a minute on 2 CPU cores)", shown="made by the run")
    if cfg.weights:
        path = Path(cfg.weights).expanduser()
        return _row("pre-trained weights (--weights)", path, path.is_file(),
                    "" if path.is_file() else
                    "missing; fix: pass --weights PATH to an existing .safetensors or .pth file")
    tag = resolve_tag(cfg.model)
    if "." not in tag:
        return _row("pre-trained weights", f"timm's default weights for {tag}", None,
                    f"found when the run loads timm; pin them with a full tag such as {tag}.<tag>")
    from huggingface_hub import try_to_load_from_cache

    from ..methods.source import hub_reachable, weights_folder

    copied = weights_folder(cfg) / f"{tag}.safetensors"
    if copied.is_file():
        return _row(f"pre-trained weights ({tag})", copied, True, "a copied weights file in the cache")
    repo = f"timm/{tag}"  # where timm keeps its weights on the Hugging Face hub
    hit = next((h for h in (try_to_load_from_cache(repo, f) for f in ("model.safetensors", "pytorch_model.bin"))
                if isinstance(h, str)), None)
    if hit:
        return _row(f"pre-trained weights ({tag})", hit, True, "in the local Hugging Face cache")
    if hub_reachable():
        return _row(f"pre-trained weights ({tag})", f"Hugging Face hub: {repo}", None,
                    "not here yet: the run downloads them (huggingface.co answers now)", shown="downloaded by the run")
    return _row(f"pre-trained weights ({tag})", f"Hugging Face cache: {repo}", False,
                f"missing; fix: the run downloads {repo} when huggingface.co answers; offline, pass --weights "
                f"PATH, or on a machine with internet run `python -c \"import timm; timm.create_model('{tag}', "
                f"pretrained=True)\"` and copy ~/.cache/huggingface/hub here")


def _imagenet_row(cfg: RunConfig) -> dict:
    if cfg.model == "demo":
        return _row("source evaluation", "shapes val (synthetic)", True, "generated in memory")
    from ..data.fetch import how_to_get, resolve_imagenet
    from ..core.errors import UserError
    from ..methods.forgetting import source_folder

    what = "source images (--source-eval)" if cfg.source_eval_dir else "ImageNet-1K val"
    if not cfg.source_eval_dir and resolve_imagenet(cfg.imagenet) is None:
        return _row(what, "not given (--imagenet or FLOWVISION_IMAGENET)", False,
                    f"missing; fix: {how_to_get('imagenet', Path('.'))}")
    try:  # the run's own check of the folder (its class names; no image is read)
        root, classes = source_folder(cfg)
    except UserError as e:
        return _row(what, cfg.source_eval_dir or resolve_imagenet(cfg.imagenet), False, f"cannot be used: {e}")
    if classes is None:
        note = "no synset folders: forgetting as agreement and KL with the pre-trained model (no accuracy)"
    elif len(classes) < N_CLASSES:
        note = (f"{len(classes)} of the {N_CLASSES} class folders: accuracy over these classes only, not comparable "
                "with the paper's (the run warns once)")
    else:
        note = f"{N_CLASSES} class folders"
    return _row(what, root, True, note + "; images counted when the run loads them")


N_CLASSES = 1000  # ImageNet-1K


def file_rows(cfg: RunConfig) -> list[dict]:
    """The files the run reads: what, path, found (True / False / None: not checkable without
    loading, or made by the run), shown (how the plan names that), and a note: the fix when something is
    missing."""
    return [_data_row(cfg), _weights_row(planned(cfg)), _imagenet_row(cfg)]


def missing_inputs(cfg: RunConfig) -> list[dict]:
    """The rows of ``file_rows`` the run cannot start without: what a dry run lists as NOT FOUND, and what
    makes both the dry run and the run itself stop with exit code 2, every one of them named at once."""
    return [row for row in file_rows(cfg) if row["found"] is False]


SPEED = ("amp", "channels_last")  # auto (None) until decided for the device (config.speed_defaults)


def planned(cfg: RunConfig) -> RunConfig:
    """``cfg`` with amp and channels_last decided for the device the run would use, where that is known
    without loading torch for a real data set: an explicit ``--device``, or a synthetic task (its images are
    generated, which loads torch anyway). Otherwise they stay auto, and the stages keyed by the precision
    (everything that runs a model) are keyed when the run starts."""
    from ..core.config import speed_defaults
    from ..core.distributed import device_type

    if cfg.device != "auto" or cfg.synthetic:
        return speed_defaults(cfg, device_type(cfg.device))
    return cfg


def precision_note(cfg: RunConfig) -> str:
    """One line: the precision and memory format the run computes in, and why."""
    given = planned(cfg)
    if given.amp is None:
        return ("precision: auto — bf16 autocast and channels_last on a CUDA GPU (clean protocol), fp32 on the CPU; "
                "--set amp=false keeps fp32")
    why = ("set" if cfg.amp is not None else "the paper protocol's fp32, as the official code" if cfg.protocol == "paper"
           else f"the clean protocol's default on {'CUDA' if given.amp else 'the CPU'}")
    return (f"precision: {'bf16 autocast' if given.amp else 'fp32'}"
            f"{', channels_last' if given.channels_last else ''} ({why})")


def fingerprints(cfg: RunConfig) -> dict:
    """What the loading stages would find, where that is cheap: the source's identity (as
    ``source.load_source`` keys it) when its weights are at hand; for synthetic tasks the generated
    data's descriptions (imports torch). Real data and ImageNet are left out: their fingerprints
    are file lists and counts that only loading gives."""
    from ..methods import forgetting
    from ..methods.source import demo_key, file_key, resolve_tag

    cfg = planned(cfg)
    found = {}
    if cfg.model == "demo":
        found["source"] = demo_key(cfg)
    elif cfg.weights:
        path = Path(cfg.weights).expanduser()
        if path.is_file():
            found["source"] = file_key(path)
    elif "." in resolve_tag(cfg.model):
        found["source"] = resolve_tag(cfg.model)
    if cfg.synthetic:
        from ..data import load_task

        found["task"] = load_task(cfg).info
    if cfg.model == "demo":
        found["source_data"] = forgetting.eval_set(cfg).fingerprint
    return found


def split_report(cfg: RunConfig) -> Optional[dict]:
    """Stanford Dogs under the paper protocol: {"dogs_split", "seed", "images", "folder", "stages":
    ``data.real.seen_shares`` for the run's training stages (None when the images are not there)};
    None for any other run. Lists the files under Images/ (no image is read, torch is not imported)."""
    if cfg.dogs_split is None:
        return None
    from ..data.fetch import resolve_data_root
    from ..data.splits import folder_relpaths, paper_splits, seen_shares
    from ..data.specs import data_folder
    from .training import training_splits

    images = data_folder(cfg.dataset, resolve_data_root(cfg.data_root)) / "Images"
    relpaths = folder_relpaths(images) if images.is_dir() else []
    stages = seen_shares(training_splits(cfg), paper_splits(relpaths, cfg.data_seed, cfg.dogs_split)) if relpaths else None
    return {"dogs_split": cfg.dogs_split, "seed": cfg.data_seed, "images": len(relpaths), "folder": str(images),
            "stages": stages}


def plan_rows(cfg: RunConfig, found: dict) -> list[dict]:
    """One row per stage the run reaches, upstream first: stage, key (None: known once the data
    loads, or once the device decides amp) and status: cached | to compute | what an uncached stage does."""
    from . import pipeline
    from .store import stage_path

    cfg = planned(cfg)
    # an undecided precision (amp auto, the device unknown here) is in the key of every stage that runs a
    # model, the source's first: they are keyed when the run starts
    undecided = cfg.amp is None and "source" in found
    if undecided:
        found = {k: v for k, v in found.items() if k != "source"}
    keys = pipeline.plan(cfg, found)

    def loading_upstream(name: str) -> set:
        stage = pipeline.STAGES[name]
        own = {name} if stage.fingerprint is not None and name not in found and not (undecided and name == "source") else set()
        return own.union(*(loading_upstream(n) for n in stage.needs_for(cfg)))

    def after_source(name: str) -> bool:
        return name == "source" or any(after_source(n) for n in pipeline.STAGES[name].needs_for(cfg))

    rows = []
    for name, stage in pipeline.STAGES.items():
        if name not in keys:
            continue
        key = keys[name]
        if not stage.cached:
            status = LOADS.get(name, "computed every run")
        elif key is None:
            waiting = [n for n in pipeline.STAGES if n in loading_upstream(name)]
            status = (f"keyed when {' and '.join(waiting)} {'has' if len(waiting) == 1 else 'have'} loaded" if waiting
                      else "keyed when the run starts")
            if undecided and after_source(name):
                status += " and the device decides amp (auto)"
        else:
            status = "cached" if stage_path(Path(cfg.results_dir) / "cache", name, key).is_file() else "to compute"
        rows.append({"stage": name, "key": key, "status": status, "doc": stage.doc})
    return rows


def dry_run(cfg: RunConfig, sources: dict) -> dict:
    """Everything ``--dry-run`` prints, as data (see the module docstring)."""
    from ..core.config import DEFAULT_CONFIG, FAMILY_DIR
    from ..core.identity import run_id

    rid = run_id(cfg)
    finished = (Path(cfg.results_dir) / "runs" / rid / "result.json").is_file()
    notes = []
    if cfg.protocol == "paper":
        passes = [f"{n}: {e}" for n, e in (("probe", cfg.probe_epochs), ("finetune", cfg.epochs if cfg.finetune else 0),
                                           ("refit", cfg.refit_epochs if cfg.finetune and cfg.refit else 0)) if e]
        notes.append("paper protocol: one target test pass after every epoch to keep the best one ("
                     + ", ".join(passes) + " test passes)")
    if cfg.hparams_note:
        notes.append(cfg.hparams_note)
    rule = parse_tau(cfg.tau, cfg.paper_tau if is_paper_tau(cfg.tau) else None)
    far = far_from_paper_tau(rule.value, cfg.paper_tau, cfg.dataset) if rule.kind == "value" else None
    if far:
        notes.append(far)
    notes.append(precision_note(cfg))
    default = next((where for where in sources.values() if where.startswith("config file ")
                    and where.split(" (")[0].endswith(f"/{DEFAULT_CONFIG}")), None)
    if default:
        notes.append(f"no config file names {cfg.dataset}: the values marked '{default.split(' (')[0]}' apply")
    files = {Path(where.split(" (")[0][len("config file "):]) for where in sources.values()
             if where.startswith("config file ")}
    family = next((path for path in files if path.parent == FAMILY_DIR), None)
    if family:
        from ..core.registry import RECIPE_FAMILIES

        kind = ("a LayerNorm network (its name starts like " + ", ".join(RECIPE_FAMILIES["transformer"][:4]) + ", …)"
                if Path(family).stem == "transformer" else "a BatchNorm convnet (its name is none of the LayerNorm "
                "families')")
        notes.append(f"no configs/{cfg.model.split('.')[0]}/ folder: {cfg.model} is taken for {kind}, so its "
                     f"family's recipe applies: the values marked 'config file' come from configs/families/"
                     f"{Path(family).name}; --set key=value or --config FILE overrides them, and `flowvision frontier` "
                     "finds a learning rate and τ for it")
    splits = split_report(cfg)
    if splits and splits["stages"] is None:
        notes.append(f"Stanford Dogs splits (dogs_split={cfg.dogs_split}): drawn from the file list once the images "
                     f"are under {splits['folder']}")
    return {"run": {"run_id": rid, "finished": finished, "folder": str(Path(cfg.results_dir) / "runs" / rid)},
            "config": config_rows(cfg, sources), "files": file_rows(cfg),
            "plan": plan_rows(cfg, fingerprints(cfg)), "splits": splits, "notes": notes}
