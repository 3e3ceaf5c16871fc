"""The command line's frame: the Typer app, help that reads as a person reads it (``ReadableGroup``), the
help texts several commands share, and the two helpers every command uses to turn options into config
overrides and to print a cost. The commands themselves are in ``runs``, ``results``, ``tools`` and ``data``;
``cli/__init__.py`` registers them in the order ``flowvision --help`` lists them.
"""
from __future__ import annotations

import inspect
from pathlib import Path

import typer
from typer.core import TyperCommand, TyperGroup

from ..core.config import parse_sets
from ..core.console import out
from ..core.errors import UserError
from ..core.registry import DEMO_DATASETS, PROTOCOLS, REAL_DATASETS, model_help

DATASET_HELP = (f"Target data set: {', '.join(REAL_DATASETS)}, a synthetic task: {', '.join(DEMO_DATASETS)}, or "
                "folder:PATH, a folder of your own images (PATH/<class>/* or PATH/train|test/<class>/*).")
SOURCE_EVAL_HELP = ("Any folder of images to measure forgetting on instead of --imagenet: synset folders (some or all) "
                    "give accuracy, any images agreement and KL (default: none, --imagenet).")
MODEL_HELP = f"{model_help()}."
LOG_HELP = ("Experiment tracking: none (default) | tensorboard (event files in the run folder) | wandb; "
            "per-epoch loss, accuracy and learning rate of each training stage, and the final metrics.")
TAU_HELP = ("FLOW temperature: a number > 0, 'median', a percentile like p25, "
            "or 'paper' (the official script's; resnet18 and --protocol paper only). Default: median.")
IMAGENET_SUBSET_HELP = "Evaluate forgetting on a class-balanced subset of N images (default: all of them)."
PROTOCOL_HELP = (f"{' | '.join(PROTOCOLS)}: clean (default: last epoch, static weights, official splits) or "
                 "paper (the official code: best test epoch, online weights, τ from training-transform losses, "
                 "its Dogs split).")

IMAGENET_HELP = "ImageNet-1K val: a folder of 1000 synset folders (default: $FLOWVISION_IMAGENET)."
CACHE_HELP = ("Cache of demo source models (demo/), copied pre-trained weight files (weights/<tag>.safetensors) and "
              "decoded image arrays (decoded/) (default: $FLOWVISION_CACHE, else ~/.cache/flowvision).")
RESULTS_HELP = "Where run folders and the stage cache go (default: results)."
WEIGHTS_HELP = ("Local weights file (.safetensors/.pth) for --model (default: the cache's copy, else timm downloads "
                "the tag's weights).")
SOURCE_MODEL_HELP = "Source model, as for finetune (default: resnet18 for a real data set, demo for a synthetic task)."
SET_HELP = "Any config key, e.g. --set probe_epochs=2 (repeatable; default: none)."
DEVICE_HELP = "auto | cpu | cuda | cuda:N (default: auto, a GPU when there is one)."


def _readable(params: list) -> list:
    """Help as a person reads it: a flag shows no '<bool>' value to type, and an argument is named in
    capitals (CHECKPOINT, not checkpoint)."""
    for p in params:
        if getattr(p, "is_flag", False) and p.metavar is None:
            p.metavar = ""
        elif p.param_type_name == "argument" and p.metavar is None:
            p.metavar = p.name.upper()
    return params


class ReadableCommand(TyperCommand):
    def get_params(self, ctx):
        return _readable(super().get_params(ctx))

    def parse_args(self, ctx, args):
        """``--set epochs 2`` (a space for the '='): said as such, not as click's 'unexpected extra argument'."""
        for flag, item, extra in zip(args, args[1:], args[2:]):
            if flag == "--set" and "=" not in item and not extra.startswith("-"):
                from ..core.config import SETTABLE
                from ..core.errors import closest

                key = item if item in SETTABLE else closest(item, SETTABLE) or item
                raise typer.BadParameter(f"'{item} {extra}': write key=value (did you mean --set {key}={extra}?)",
                                         ctx=ctx, param_hint="--set")
        return super().parse_args(ctx, args)

    def collect_usage_pieces(self, ctx):
        """A required argument as plain RUN_DIR, not Typer's {RUN_DIR} (read as a placeholder to fill)."""
        return [p[1:-1] if p.startswith("{") and p.endswith("}") else p for p in super().collect_usage_pieces(ctx)]


class ReadableGroup(TyperGroup):
    """Every command of the group (and the group's own help) reads as ``_readable`` says."""

    def get_params(self, ctx):
        return _readable(super().get_params(ctx))

    def get_command(self, ctx, name):
        command = super().get_command(ctx, name)
        if command is not None and command.help and not command.short_help:
            # the list of commands shows the docstring's first paragraph as one flowing line, not its line breaks
            command.short_help = " ".join(inspect.cleandoc(command.help).split("\n\n")[0].split())
        if type(command) is TyperCommand:
            command.__class__ = ReadableCommand
        elif type(command) is TyperGroup:  # a sub-group (data prepare) and its commands read the same
            command.__class__ = ReadableGroup
        return command


app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, cls=ReadableGroup,
                  help="Fine-tune pre-trained vision models with FLOW sample weighting and measure forgetting.")


def overrides(**options) -> dict:
    """Options given on the command line plus --set key=value; one key given both ways is an error
    (which one should win is not obvious, so neither silently does)."""
    sets = parse_sets(options.pop("sets") or [])
    given = {k: v for k, v in options.items() if v is not None}
    both = sorted(set(given) & set(sets))
    if both:
        key = both[0]
        raise UserError(f"--{key.replace('_', '-')} {given[key]} and --set {key}={sets[key]} both set {key}; give it once")
    return {**given, **sets}


def warn_unread(given: dict, cfgs: list) -> None:
    """A one-line warning for each knob the user set that none of the runs ``cfgs`` reads (``knobs.unread``)."""
    from ..core.console import console
    from ..core.knobs import unread

    for text in unread(given, cfgs):
        console.print(f"[yellow]warning:[/] {text}", highlight=False, soft_wrap=True)


def print_estimate(cfgs, results: Path, ran: str | None = None) -> None:
    """The cost of the runs ``cfgs`` (a list, or {protocol: list} to price the grid under each protocol) on the
    device they will use (``costs.report``), at the rates measured under ``results`` or stated; nothing when
    nothing is left."""
    from ..stages.costs import report

    by_protocol = cfgs if isinstance(cfgs, dict) else {cfgs[0].protocol: cfgs} if cfgs else {}
    if not any(by_protocol.values()):
        return
    for text in report(by_protocol, results, ran):
        out.print(text, highlight=False, soft_wrap=True)


def print_missing(cfg) -> bool:
    """A dry run's inputs that are not there (``dryrun.missing_inputs``), each with its fix, printed; -> whether
    there were any (the run would stop on them: the dry run then exits 2, as the run would)."""
    from ..core.console import show
    from ..reporting.report import missing_items
    from ..stages.dryrun import missing_inputs

    rows = missing_inputs(cfg)
    for item in missing_items(rows):
        show(item)
    return bool(rows)
