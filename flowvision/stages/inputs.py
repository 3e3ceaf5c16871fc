"""What a run needs before it starts, every input checked at once: the target data, the pre-trained weights and
the images forgetting is measured on.

    problems = check_inputs([cfg, ...])   # one line per problem, each input checked once over a grid
    require_inputs(cfg)                   # a run: one UserError naming every problem, or nothing

The checks are the run's own (the data set's file lists, the weights' presence, the evaluation folder's class
names), so a run that passes them meets none of these errors later; they read folder listings and split files,
load no model and decode no image. A run stops on them before any work with every problem named at once, not
the first one it meets (``stages.run``); ``reproduce --dry-run`` lists them (``scale.grid``), and ``--dry-run`` of
one run shows the same inputs as rows (``dryrun.file_rows``); all three end with exit code 2.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

from ..core.errors import UserError


def input_checks(cfg) -> list[tuple[tuple, Callable[[], object]]]:
    """(what, check) for each input of one run: ``what`` names the input (a grid checks each once), ``check()``
    raises the run's own UserError when the input is missing or unusable."""
    from ..core.registry import folder_path, is_folder, is_real
    from ..data.fetch import resolve_data_root
    from ..methods.forgetting import source_folder
    from ..methods.source import preflight

    checks = []
    if is_real(cfg.dataset):
        from ..data.loaders import load_real_splits

        root = resolve_data_root(cfg.data_root)
        checks.append((("data", cfg.dataset, str(root), cfg.protocol),  # its error says how; the paper protocol's
                       lambda: load_real_splits(cfg.dataset, root, protocol=cfg.protocol)))  # Dogs split needs no lists
    elif is_folder(cfg.dataset):
        from ..data.folder import scan

        checks.append((("data", cfg.dataset), lambda: scan(Path(folder_path(cfg.dataset)))))
    checks.append((("weights", cfg.model, cfg.weights), lambda: (preflight(cfg), weights_found(cfg))))
    if cfg.model != "demo":
        checks.append((("imagenet", cfg.imagenet, cfg.source_eval_dir), lambda: source_folder(cfg)))
    return checks


def check_inputs(cfgs: Iterable) -> list[str]:
    """What is missing before anything starts, one line each, each input once over all of ``cfgs``."""
    problems, seen = [], set()
    for cfg in cfgs:
        for what, check in input_checks(cfg):
            if what in seen:
                continue
            seen.add(what)
            try:
                check()
            except UserError as e:
                problems.append(str(e))
    return problems


def require_inputs(cfg) -> None:
    """Nothing when every input of the run is there; else one UserError (one line) naming every problem."""
    problems = check_inputs([cfg])
    if len(problems) == 1:
        raise UserError(problems[0])
    if problems:
        raise UserError(f"{len(problems)} inputs are missing or unusable, so nothing ran: "
                        + "; ".join(f"({i}) {p}" for i, p in enumerate(problems, 1)))


def weights_found(cfg) -> None:
    """A timm tag's weights in the weights cache or the local Hugging Face cache (a --weights file is checked by
    ``preflight``); a tag that would be downloaded is fine only when the hub answers (``source.pretrained_model``
    looks in the same places, in this order)."""
    from ..methods.source import hub_reachable, model_tag, weights_folder, where_from

    if cfg.model == "demo" or cfg.weights:
        return
    import timm
    from huggingface_hub import try_to_load_from_cache

    tag, _ = model_tag(cfg.model)
    copied = weights_folder(cfg) / f"{tag}.safetensors"
    hub_id = timm.models.get_pretrained_cfg(tag).to_dict().get("hf_hub_id") if "." in tag else None
    if copied.is_file() or hub_id and any(isinstance(try_to_load_from_cache(hub_id, f), str)
                                          for f in ("model.safetensors", "pytorch_model.bin")):
        return
    if not hub_reachable():  # the run's own words
        raise UserError(f"no weights for {tag} here and the model hub cannot be reached: "
                        f"{where_from(tag, hub_id, copied)}")
