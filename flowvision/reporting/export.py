"""A finished run -> a model to keep and load anywhere: ``flowvision export RUN_DIR --out DIR``.

    DIR/model.safetensors          the model the run reports (the fine-tuned network, or the WiSE-FT
                                   point its method reports): a timm state dict
    DIR/config.json                timm's pretrained-config form (``timm.models.save_for_hf``):
                                   architecture, num_classes, label_names in class order, and the eval
                                   transform the run used (input size, mean/std, interpolation, crop_pct)
    DIR/source_parts.safetensors   the pre-trained task-specific tensors (head and BatchNorms, per
                                   ``models.FAMILIES``; the head alone under ``restore=none``): with the
                                   shared tensors of model.safetensors they are the source model the
                                   run measured forgetting on (Appendix B: one backbone, two sets of
                                   task-specific parts)
    DIR/README.md                  a model card: data, method, τ, target accuracy, forgetting, the
                                   command that made it, versions, the run id

Loading needs timm alone::

    import timm
    model = timm.create_model("local-dir:DIR", pretrained=True)   # architecture, classes, eval transform from DIR

The model card names the data set by its base name and fingerprint and every local path by its base name:
a card is shared, its owner's file system is not.

Everything is read from the run folder's files and the stage store beside it (``<results>/cache``),
each stage file verified; the pre-trained weights are loaded as the run loaded them and must be the
ones its record names. A run that is not finished, or whose files are gone or damaged, is a one-line
UserError. The four files are written to a temporary folder first and then moved into DIR.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..core.errors import UserError

FILES = ("model.safetensors", "config.json", "source_parts.safetensors", "README.md")


def _finished(run_dir: Path):
    """(RunRecord, RunConfig) of a finished run folder whose record holds what an export reads (the run folder
    reader's ``finished``), or a one-line UserError naming the file and field that is not so."""
    from ..stages.runfolder import RESULT, finished

    record, cfg = finished(run_dir)
    data, keys = record.target_data if isinstance(record.target_data, dict) else {}, record.stage_keys
    n = data.get("num_classes")
    classes = data.get("classes")
    usable = {  # what the export reads from the record, each as the record schema writes it
        "weights": isinstance(record.weights, str) and bool(record.weights),
        "stage_keys": bool(keys) and all(isinstance(k, str) and isinstance(v, str) for k, v in keys.items()),
        "target_data": isinstance(record.target_data, dict),
        "target_data.num_classes": type(n) is int and 1 <= n <= 1_000_000,
        "target_data.classes": classes is None or (isinstance(classes, list) and len(classes) == n
                                                   and all(isinstance(c, str) for c in classes)),
    }
    wrong = next((name for name, ok in usable.items() if not ok), None)
    if wrong:
        raise UserError(f"{Path(run_dir).absolute() / RESULT} has no usable {wrong} (missing or of the wrong type: "
                        "edited or damaged); rerun the run to write it again, then export")
    return record, cfg


def _stage_value(run_dir: Path, record, name: str):
    """A cached stage's saved value, verified, from the store beside the run folder."""
    from ..core.cache import read_cached
    from ..stages.store import STORE_VERSION, stage_path

    key = record.stage_keys.get(name)
    if not key:
        raise UserError(f"run {record.run_id}'s record names no {name} stage; rerun it with a current flowvision")
    # the store beside the run folder: <results>/runs/<run id> -> <results>/cache (from "." too)
    return read_cached(stage_path(Path(run_dir).absolute().parent.parent / "cache", name, key),
                  {"stage": name, "key": key, "store": STORE_VERSION}, f"the {name} stage file of run {record.run_id}",
                  "rerun the run (it recomputes the stage), then export")


def as_run(cfg, record):
    """``cfg`` (a run's config.yaml, precision "auto") with the precision the run resolved and recorded, so
    that what depends on it (the demo model's key) is what the run used."""
    import dataclasses

    from ..core.config import speed_defaults

    ran = speed_defaults(cfg, "cuda" if str(record.device or "cpu").startswith("cuda") else "cpu")
    return dataclasses.replace(ran, device="cpu", amp=ran.amp if record.amp is None else record.amp,
                               channels_last=ran.channels_last if record.channels_last is None else record.channels_last)


def reported_model(run_dir: Path):
    """(model, source, record, cfg): the model a finished run reports, rebuilt from its stage files
    (the final stage's upstream, WiSE-FT applied when the method reports a point), and the source. Only
    read: nothing is computed and nothing is written (a demo model that is not cached is an error)."""
    from ..methods import models
    from ..core.hardware import CPU
    from ..stages.pipeline import STAGES
    from ..methods.source import demo_key, load_source

    run_dir = Path(run_dir)
    record, cfg = _finished(run_dir)
    (upstream,) = STAGES["final"].needs_for(cfg)
    saved = _stage_value(run_dir, record, upstream)
    ran = as_run(cfg, record)
    if cfg.model == "demo" and demo_key(ran) != record.weights:
        raise UserError(f"run {record.run_id}'s config.yaml makes the demo model {demo_key(ran)}, its record names "
                        f"{record.weights}: the run folder's files do not belong together; rerun the run, then export")
    source = load_source(ran, CPU, build=False)
    if source.key != record.weights:
        raise UserError(f"the pre-trained weights found now ({source.key}) are not run {record.run_id}'s "
                        f"({record.weights}); put those back (--weights or the weights cache), then export")
    model = models.with_new_head(source.model, record.target_data["num_classes"], 0)
    try:
        model.load_state_dict(saved["model"])
    except (KeyError, RuntimeError, TypeError) as e:
        raise UserError(f"the {upstream} stage file of run {record.run_id} does not fit its model "
                        f"({str(e).splitlines()[0][:80]}); rerun the run, then export") from None
    if cfg.wise_alpha is not None:
        model = models.interpolate_shared(source.model, model, cfg.wise_alpha, cfg.task_specific)
    return model.eval(), source, record, cfg


def data_config(record, cfg) -> dict:
    """The eval transform the run's target data went through, in timm's terms (``real.timm_eval_config``)."""
    from ..data import normalisation
    from ..data.recipes import RECIPES, timm_eval_config

    info = record.target_data or {}
    recipe = info.get("recipe", "synthetic" if cfg.synthetic else None)
    size = info.get("image_size") or cfg.image_size or (32 if cfg.synthetic else 224)
    if recipe not in RECIPES or type(size) is not int or not 8 <= size <= 4096:
        raise UserError(f"run {record.run_id}'s result.json names the recipe {str(recipe)[:40]!r} at "
                        f"{str(size)[:20]} px, not one flowvision knows; rerun the run, then export")
    mean, std = normalisation(cfg.dataset)
    return timm_eval_config(recipe, size, mean, std)


def export(run_dir: Path, out: Path) -> dict:
    """Write the four files (module docstring) for the finished run in ``run_dir`` into ``out``;
    -> {"out", "files", "architecture", "num_classes", "source_parts"}."""
    from safetensors.torch import save_file
    from timm.models import save_for_hf

    from ..core.files import not_a_link, owned_folder, remove_tree, shareable
    from ..methods.forgetting import restored_keys, source_data_config
    from ..methods.models import family_rule

    model, source, record, cfg = reported_model(Path(run_dir))
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; pass a folder (it is made if missing)")
    owned_folder(out, "the export folder (--out)")  # a link there would carry the files elsewhere
    for name in FILES:
        not_a_link(out / name, "a file of the export")
    labels = _labels(record)
    rule = family_rule(source.model, cfg.task_specific) if cfg.restore == "task-specific" else "head"
    keys = sorted(restored_keys(source.model, cfg.restore, cfg.task_specific))
    state = source.model.state_dict()
    arch = model.pretrained_cfg.get("architecture") or type(model).__name__
    tmp = out / f".export-{os.getpid()}.tmp"
    remove_tree(tmp, "a leftover of an earlier export")
    try:
        # the tag names this model, not the source weights' (timm's config would keep theirs)
        save_for_hf(model, str(tmp), model_config={"label_names": labels,
                                                   "pretrained_cfg": {"tag": f"flowvision_{record.run_id}"}},
                    safe_serialization=True, data_config=data_config(record, cfg))
        save_file({k: state[k].detach().contiguous() for k in keys}, str(tmp / "source_parts.safetensors"),
                  metadata={"architecture": arch, "num_classes": str(source.model.num_classes), "rule": rule,
                            "source_weights": record.weights or "", "run_id": record.run_id,
                            # the transform the run's source images went through, for timm's create_transform
                            "data_config": json.dumps(source_data_config(cfg))})
        (tmp / "README.md").write_text(model_card(record, cfg, model, rule, len(keys)))
        for name in FILES:
            shareable(tmp / name)
            os.replace(tmp / name, out / name)
    except OSError as e:
        raise UserError(f"cannot write the export into {out} ({e.strerror}); choose a folder you can write") from None
    finally:
        remove_tree(tmp, "the export's temporary folder")
    return {"out": str(out), "files": [str(out / n) for n in FILES], "architecture": arch,
            "num_classes": model.num_classes, "source_parts": len(keys), "rule": rule}


def _labels(record) -> list:
    """Class names in label order: a folder's class folders, else 'class_<i>' for each output."""
    info = record.target_data or {}
    return list(info.get("classes") or [f"class_{i}" for i in range(info["num_classes"])])


def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:.2f} %"


def _base(path) -> str:
    """A file or folder by its base name (the card is shared; the owner's directories are not); a timm tag or
    any other name as it is."""
    text = str(path or "—")
    return os.path.basename(text.rstrip("/")) if os.path.isabs(text) else text


def _private_paths_out(command: str, cfg) -> str:
    """``command`` with every local path it names (the folder data set, weights, data root, ImageNet and source
    images, the results folder) cut to its base name."""
    from ..core.registry import folder_path, is_folder

    paths = [folder_path(cfg.dataset)] if is_folder(cfg.dataset) else []
    paths += [p for p in (cfg.weights, cfg.data_root, cfg.imagenet, cfg.source_eval_dir, cfg.results_dir, cfg.cache_dir)
              if p and os.path.isabs(str(p))]
    for path in sorted(map(str, paths), key=len, reverse=True):
        command = command.replace(path.rstrip("/"), _base(path))
    return command


def model_card(record, cfg, model, rule: str, n_parts: int) -> str:
    """The export's README.md: what the model is, how it was made and what it forgot."""
    from ..core.identity import finetune_command

    from .labels import dataset_label, source_label

    arch = model.pretrained_cfg.get("architecture") or type(model).__name__
    data = record.target_data or {}
    name = dataset_label(record.dataset, data.get("fingerprint"))
    source = source_label(record.source_eval_name, record.source_eval)
    tau = (f"rule `{record.tau_rule}`, τ = {record.tau:.4g} (in units of the pre-trained model's loss)"
           if record.tau is not None else "— (no FLOW weights)")
    if record.source_acc_before is not None and record.source_drop is not None:
        accuracy = (f"source accuracy {_pct(record.source_acc_before)} before → {_pct(record.source_acc_after)} "
                    f"after (drop {100 * record.source_drop:.2f} points); ")
    else:
        accuracy = "no labels, so no accuracy; "
    kl = "—" if record.source_kl is None else f"{record.source_kl:.4f} nats"
    licence = [f"license: {model.pretrained_cfg['license']}"] if model.pretrained_cfg.get("license") else []
    lines = [
        "---", "library_name: timm", *licence, "tags: [image-classification, timm, flowvision]", "---", "",
        f"# {arch} fine-tuned on {name}", "",
        f"Made by flowvision run `{record.run_id}` from the pre-trained weights `{_base(record.weights)}`: method "
        f"`{record.method}` ({record.weighting} weighting). Load it with timm alone, from the folder that holds "
        "these files:", "",
        "```python", "import timm",
        'model = timm.create_model("local-dir:.", pretrained=True).eval()   # "local-dir:PATH" from elsewhere',
        "transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))",
        "# images: PIL.Image.open(path).convert(\"RGB\"), as the run read them", "```", "",
        "## Data", "",
        f"- data set: `{name}`; {data.get('num_classes')} classes: "
        f"{', '.join(_labels(record)[:20])}{' …' if len(_labels(record)) > 20 else ''}",
        f"- {data.get('n_train')} training / {data.get('n_test')} test images; split: {data.get('split', '—')}"
        + (f" ({_base(data['split_file'])}, beside the images)" if data.get("split_file") else ""),
        f"- fingerprint of the image files (paths, sizes, modification times): `{data.get('fingerprint', '—')}`",
        f"- eval transform: {data.get('recipe', '—')} recipe at {data.get('image_size', cfg.image_size)} px "
        "(config.json holds it in timm's terms)", "",
        "## Method", "",
        f"- `{record.method}`: weighting {record.weighting}, head init {record.head_init}, regulariser "
        f"{record.regularizer}, distillation {record.distill or 'none'}, head refit {'yes' if record.refit else 'no'}, "
        "WiSE-FT α "
        f"{record.wise_alpha if record.wise_alpha is not None else '—'}",
        f"- τ: {tau}",
        f"- {record.epochs} fine-tuning epoch{'' if record.epochs == 1 else 's'} at learning rate {record.lr:g}; "
        f"protocol {record.protocol}",
        "", "## Results", "",
        f"- target test accuracy: {_pct(record.target_acc)}",
        f"- forgetting, on {source} ({record.source_eval}): "
        f"{accuracy}agreement with the pre-trained model's top-1 {_pct(record.source_agreement)}, "
        f"KL(pre-trained ‖ after) {kl}",
        f"- measured with the shared tensors of this model and the pre-trained task-specific parts "
        f"(`{rule}`: {n_parts} tensors), which `source_parts.safetensors` holds; loading them over "
        "model.safetensors (with a head of the source's classes) rebuilds that model; its source images go through "
        "`timm.data.create_transform(**json.loads(metadata[\"data_config\"]))` (its metadata), the transform the run used", "",
        "## Provenance", "",
        "```bash", _private_paths_out(finetune_command(cfg), cfg), "```", "",
        "(the folders and files it read are named by their base names: put yours in their place)", "",
        f"- run id `{record.run_id}`, created {record.created}, git {record.git_sha or '—'}, device {record.device}",
        f"- versions: {', '.join(f'{k} {v}' for k, v in sorted((record.versions or {}).items()))}", "",
    ]
    return "\n".join(lines)
