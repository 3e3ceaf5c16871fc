"""The `flowvision` command line: parse options, call one library function, print with rich.

    flowvision demo                                            # offline: FT vs FLOW on a synthetic task
    flowvision finetune --dataset gratings --model demo --method flow --tau median
    flowvision finetune --dataset cifar10 --tau 1.0 --imagenet /data/imagenet/val   # resnet18.tv_in1k
    flowvision finetune --dataset cifar10 --tau 1.0 --dry-run                       # what it would do
"""
from __future__ import annotations

import inspect
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer
from typer.core import TyperCommand, TyperGroup

from .cli_data import DATA_ROOT_HELP
from .config import parse_sets
from .console import commands_apart, console, line, out, plural, show, user_errors
from .errors import UserError
from .registry import (DATASET_GROUPS, DEMO_DATASETS, DEMO_METHODS, METHODS, PAPER_METHODS, PROTOCOLS,
                       REAL_DATASETS, model_help, resolve_dataset_group)

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
                from .config import SETTABLE
                from .errors import closest

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


def _overrides(**options) -> dict:
    """Options given on the command line plus --set key=value; one key given both ways is an error
    (which one should win is not obvious, so neither silently does)."""
    sets = parse_sets(options.pop("sets") or [])
    given = {k: v for k, v in options.items() if v is not None}
    both = sorted(set(given) & set(sets))
    if both:
        key = both[0]
        raise UserError(f"--{key.replace('_', '-')} {given[key]} and --set {key}={sets[key]} both set {key}; give it once")
    return {**given, **sets}


def _print_estimate(cfgs: list, results: Path) -> None:
    """The cost of the runs ``cfgs`` (costs.py), at the rates measured under ``results`` or assumed."""
    from .costs import describe, estimate, rates

    for text in describe(estimate(cfgs, rates(results))):
        out.print(text, highlight=False, soft_wrap=True)


@app.command()
def finetune(
    dataset: Optional[str] = typer.Option(None, help=DATASET_HELP + " Default: gratings."),
    model: Optional[str] = typer.Option(None, help=MODEL_HELP),
    method: str = typer.Option("flow", help=f"One of: {', '.join(METHODS)}."),
    tau: Optional[str] = typer.Option(None, help=TAU_HELP),
    protocol: Optional[str] = typer.Option(None, help=PROTOCOL_HELP),
    seed: Optional[int] = typer.Option(None, help="Training seed (head init, shuffling, augmentation). Default: 0."),
    epochs: Optional[int] = typer.Option(None, help="Fine-tuning epochs (default: the config file's)."),
    lr: Optional[float] = typer.Option(None, help="Fine-tuning learning rate (default: the config file's)."),
    batch_size: Optional[int] = typer.Option(None, help="Batch size (default: the config file's; paper: 128)."),
    weights: Optional[str] = typer.Option(None, help=WEIGHTS_HELP),
    data_root: Optional[str] = typer.Option(None, help=DATA_ROOT_HELP),
    imagenet: Optional[str] = typer.Option(None, help=IMAGENET_HELP),
    imagenet_subset: Optional[int] = typer.Option(None, help=IMAGENET_SUBSET_HELP),
    source_eval: Optional[str] = typer.Option(None, "--source-eval", help=SOURCE_EVAL_HELP),
    results_dir: Optional[str] = typer.Option(None, help=RESULTS_HELP),
    cache_dir: Optional[str] = typer.Option(None, help=CACHE_HELP),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda | cuda:N (default: auto, a GPU when there is one)."),
    log: Optional[str] = typer.Option(None, "--log", help=LOG_HELP),
    config_file: Optional[Path] = typer.Option(None, "--config", help="A YAML config instead of the default, "
                                                 "configs/<model>/<dataset>.yaml."),
    sets: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config (and where each value came "
                                 "from), the files it reads and the stage plan; run nothing."),
):
    """Run one experiment (probe, weights, fine-tuning, refit, forgetting) and record it."""
    with user_errors():
        from . import config

        sources: dict = {}
        cfg = config.resolve(dataset, model, method, _overrides(
            tau=tau, protocol=protocol, seed=seed, epochs=epochs, lr=lr, batch_size=batch_size, weights=weights,
            data_root=data_root, imagenet=imagenet, imagenet_subset=imagenet_subset, source_eval_dir=source_eval,
            results_dir=results_dir, cache_dir=cache_dir, device=device, log=log, sets=sets), config_file,
            trace=sources)
        if dry_run:
            from .dryrun import dry_run as plan_run
            from .console import show
            from .report import dry_run_tables

            if os.environ.get("RANK", "0") == "0":  # under torchrun: one plan, from rank 0
                report = plan_run(cfg, sources)
                for item in dry_run_tables(report):
                    show(item)
                _print_estimate([] if report["run"]["finished"] else [cfg], Path(cfg.results_dir))
            return
        from .run import run
        from .report import print_result

        result = run(cfg)
        if result is not None:  # None: a torchrun rank other than 0 (rank 0 prints the result)
            print_result(result)
            from .weighting import far_from_paper_tau

            far = far_from_paper_tau(result.get("tau"), cfg.paper_tau, cfg.dataset)
            if far:
                console.print(f"[yellow]note:[/] {far}", highlight=False, soft_wrap=True)


@app.command()
def demo(
    dataset: str = typer.Option("gratings", help=f"Synthetic target task: {' or '.join(DEMO_DATASETS)}."),
    seeds: int = typer.Option(6, min=1, help="Number of seeds (0..N-1); docs/findings.md says in which CPU configurations 6 kept the paired FT−FLOW interval off 0."),
    methods: str = typer.Option(",".join(DEMO_METHODS), help=f"Comma-separated methods: {', '.join(METHODS)}."),
    results_dir: Optional[str] = typer.Option(None, help="Where run folders go (default: results)."),
    cache_dir: Optional[str] = typer.Option(None, help=CACHE_HELP),
    sets: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP),
):
    """The offline demo: standard fine-tuning vs FLOW on a synthetic task, over several seeds."""
    with user_errors():
        from .config import seed_list
        from .report import run_demo

        run_demo(dataset, len(seed_list(seeds)), [m.strip() for m in methods.split(",") if m.strip()],
                 _overrides(results_dir=results_dir, cache_dir=cache_dir, sets=sets))


@app.command()
def frontier(
    dataset: str = typer.Option("gratings", help=DATASET_HELP),
    model: Optional[str] = typer.Option(None, help=SOURCE_MODEL_HELP),
    seeds: int = typer.Option(1, min=1, help="Seeds 0..N-1 (each point is the mean over them)."),
    lrs: Optional[str] = typer.Option(None, help="FT learning rates, comma-separated (default: the config's × 0.1, 0.3, 1)."),
    epochs: Optional[str] = typer.Option(None, help="FT epochs, comma-separated (default: 1 and the config's)."),
    taus: Optional[str] = typer.Option(None, help="FLOW τ rules, comma-separated (default: p10,p25,median,p75,p90)."),
    l2sp_lambdas: Optional[str] = typer.Option(None, "--l2sp-lambdas", help="ℓ2-SP strengths λ, comma-separated "
                                               "(default: the config's l2sp_lambda × 0.1, 1, 10)."),
    lwf_lambdas: Optional[str] = typer.Option(None, help="LwF λ values, comma-separated (default: 0.1,0.3,1,3,10)."),
    ewc_lambdas: Optional[str] = typer.Option(None, help="EWC λ values, comma-separated (default: 0.1,1,10,100)."),
    weights_file: Optional[str] = typer.Option(None, "--weights", help=WEIGHTS_HELP),
    data_root: Optional[str] = typer.Option(None, help=DATA_ROOT_HELP),
    imagenet: Optional[str] = typer.Option(None, help=IMAGENET_HELP),
    source_eval: Optional[str] = typer.Option(None, "--source-eval", help=SOURCE_EVAL_HELP),
    results_dir: Optional[str] = typer.Option(None, help=RESULTS_HELP),
    cache_dir: Optional[str] = typer.Option(None, help=CACHE_HELP),
    sets: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP.replace("key,", "key for every run,")),
):
    """Trade-off frontiers: FT over learning rates and epochs, ℓ2-SP, LwF and EWC over their λ, WiSE-FT over α,
    FLOW over τ, FLOW+WiSE-FT over α; a PNG of target vs source accuracy with each method's Pareto front,
    and a table."""
    with user_errors():
        from .frontier import frontier as run_frontier
        from .tables import render

        def numbers(text, kind, name):
            if text is None:
                return None
            try:
                return [kind(v) for v in text.split(",") if v.strip()]
            except ValueError:
                raise UserError(f"--{name} {text!r}: expected comma-separated {kind.__name__}s") from None

        from .config import seed_list
        from .registry import dataset_slug, default_model

        model = model or default_model(dataset)
        res = run_frontier(dataset, model, _overrides(weights=weights_file, data_root=data_root, imagenet=imagenet,
                                                      source_eval_dir=source_eval, results_dir=results_dir,
                                                      cache_dir=cache_dir, sets=sets),
                           seed_list(seeds), lrs=numbers(lrs, float, "lrs"), epochs=numbers(epochs, int, "epochs"),
                           taus=[t.strip() for t in taus.split(",") if t.strip()] if taus else None,
                           lambdas={"l2sp": numbers(l2sp_lambdas, float, "l2sp-lambdas"),
                                    "lwf": numbers(lwf_lambdas, float, "lwf-lambdas"),
                                    "ewc": numbers(ewc_lambdas, float, "ewc-lambdas")})
        table = res["summary"].astype(str)
        table.attrs["note"] = (f"source: {res['measure']}. Percent; mean over seeds [95% t-interval over seeds]. "
                               "dominated area: of the 100 × 100 square (source %, target %) under each seed's front, "
                               "from the origin; Average: mean(source, target), the paper's metric on source accuracy, "
                               "at the setting whose seed-mean Average is best. Pre-trained: "
                               f"{res['source_before']:.2f}%. One seed is a sketch: --seeds 3 or more for intervals.")
        out.print(render((f"frontiers — {dataset_slug(dataset)} / {model}", table)))
        out.print(f"figure: {res['png']}; points: {res['folder']}/points.csv; {plural(len(res['runs']), 'run')}, "
                  f"{res['seconds']:.0f} s", highlight=False, soft_wrap=True)


from .cli_data import data_app  # noqa: E402

app.add_typer(data_app, name="data", cls=ReadableGroup)


@app.command()
def table(results_dir: str = typer.Option("results", help="Folder holding runs/ (tables go to <it>/tables)."),
          show_commands: int = typer.Option(10, help="How many of the commands that would fill missing cells to list.")):
    """Print the paper's vision tables with our runs beside the paper's numbers; write md/csv/tex."""
    with user_errors():
        from .tables import empty_tables, make_tables, render

        if not Path(results_dir).is_dir():
            raise UserError(f"results folder {results_dir} does not exist; pass --results-dir (default: results)")
        tables, paths, missing = make_tables(Path(results_dir))
        empty = empty_tables(tables)
        for t in tables:
            if t[0] not in empty:
                out.print(render(t))
        if empty:
            out.print(f"no run of ours yet at the paper's settings for: {'; '.join(empty)}; the files under "
                      f"{Path(results_dir) / 'tables'} hold the paper's numbers, and these commands fill them:",
                      highlight=False)
            for model in ("resnet18", "resnet50"):
                line(f"  flowvision reproduce --model {model} --seeds 3")
        line(f"wrote {plural(len(paths), 'file')} under {Path(results_dir) / 'tables'}")
        if missing:
            out.print(f"{len(missing)} paper cells have no run of ours; commands that fill them "
                      f"(or `flowvision reproduce`):")
            for cmd in missing[:show_commands]:
                out.print(f"  {cmd}", highlight=False, soft_wrap=True)


@app.command()
def plot(results_dir: str = typer.Option("results", help="Folder holding runs/."),
         out_dir: Optional[str] = typer.Option(None, help="Where PNGs go (default: <results-dir>/figures).")):
    """Figures: target vs source accuracy per method, FLOW weight histograms, τ sweeps, WiSE-FT α curves."""
    with user_errors():
        from .plots import make_all

        paths = make_all(Path(results_dir), Path(out_dir) if out_dir else None)
        for p in paths:
            out.print(str(p))
        if not paths:
            raise UserError(f"no runs under {results_dir}/runs to plot; run `flowvision demo` or `flowvision finetune` first")


@app.command()
def weights(
    dataset: str = typer.Option("gratings", help=DATASET_HELP),
    model: Optional[str] = typer.Option(None, help=SOURCE_MODEL_HELP),
    tau: Optional[str] = typer.Option(None, help="τ rule (default: the config's, median)."),
    k: int = typer.Option(16, min=1, help="How many most up- and down-weighted samples to show."),
    seed: Optional[int] = typer.Option(None, help="Seed of the probe whose losses give the weights (default: 0)."),
    weights_file: Optional[str] = typer.Option(None, "--weights", help=WEIGHTS_HELP),
    data_root: Optional[str] = typer.Option(None, help=DATA_ROOT_HELP),
    results_dir: Optional[str] = typer.Option(None, help=RESULTS_HELP),
    sets: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP),
):
    """The sample audit: which training samples FLOW up- and down-weights most, and per-class means."""
    with user_errors():
        from . import config
        from .audit import run_audit as audit

        cfg = config.resolve(dataset, model, "flow", _overrides(tau=tau, seed=seed, weights=weights_file,
                                                                data_root=data_root, results_dir=results_dir, sets=sets))
        res = audit(cfg, k)
        from .tables import render

        from .report import tau_text

        out.print(render((f"mean FLOW weight per class — {dataset}, τ = {tau_text(res['tau'], res['tau_rule'])}",
                          res["per_class"].map(lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)))))
        if res["label_noise"]:
            from .report import noise_text

            out.print(noise_text(res["label_noise"]), highlight=False)
        line(f"contact sheet: {res['png']}")


@app.command("export")
def export_run(
    run_dir: Path = typer.Argument(..., help="A finished run folder, results/runs/<run id>."),
    out_dir: Path = typer.Option(..., "--out", help="The folder to write model.safetensors, config.json, "
                                 "source_parts.safetensors and README.md into (made if missing)."),
):
    """The run's reported model as files timm loads without flowvision: weights, timm's config (labels,
    eval transform), the pre-trained task-specific parts beside them, and a model card."""
    with user_errors():
        from .export import export

        res = export(run_dir, out_dir)
        for item in commands_apart(f"wrote {res['out']}: {res['architecture']} with {res['num_classes']} classes, "
                                   f"and {res['source_parts']} source tensors ({res['rule']}); load it with "
                                   f"`timm.create_model(\"local-dir:{res['out']}\", pretrained=True)` or see its "
                                   "README.md"):
            show(item)


@app.command("import-weights")
def import_weights(
    checkpoint: Path = typer.Argument(..., help="A .pth/.pt/.bin state dict (or .safetensors already in timm's names)."),
    arch: str = typer.Option(..., "--arch", help="The timm architecture it holds, e.g. tf_efficientnet_lite0."),
    out_file: Path = typer.Option(..., "--out", help="The .safetensors file to write (for --weights)."),
):
    """Turn a checkpoint that names its tensors another library's way into a timm .safetensors:
    tensors mapped by order, every shape, kind and name part checked, anything uncertain refused."""
    with user_errors():
        from .importing import import_weights as run_import

        res = run_import(checkpoint, arch, out_file)
        for item in commands_apart(f"wrote {res['out']}: {res['tensors']} tensors of {res['arch']} ({res['renamed']} "
                                   f"renamed); use it with `flowvision finetune --model {res['arch']} --weights "
                                   f"{res['out']}`"):
            show(item)


@app.command()
def reproduce(
    model: Optional[str] = typer.Option(None, help=MODEL_HELP),
    datasets: str = typer.Option("paper", help="Comma-separated data sets and groups: "
                                 + "; ".join(f"'{g}' = {', '.join(names)}" for g, names in DATASET_GROUPS.items())
                                 + "; folder:PATH for a folder of your own images."),
    methods: str = typer.Option(",".join(PAPER_METHODS), help=f"Comma-separated methods: {', '.join(METHODS)}."),
    seeds: int = typer.Option(3, min=1, help="Seeds 0..N-1."),
    protocol: Optional[str] = typer.Option(None, help=PROTOCOL_HELP),
    tau: Optional[str] = typer.Option(None, help=TAU_HELP),
    weights: Optional[str] = typer.Option(None, help=WEIGHTS_HELP),
    data_root: Optional[str] = typer.Option(None, help=DATA_ROOT_HELP),
    imagenet: Optional[str] = typer.Option(None, help=IMAGENET_HELP),
    imagenet_subset: Optional[int] = typer.Option(None, help=IMAGENET_SUBSET_HELP),
    source_eval: Optional[str] = typer.Option(None, "--source-eval", help=SOURCE_EVAL_HELP),
    results_dir: Optional[str] = typer.Option(None, help=RESULTS_HELP),
    cache_dir: Optional[str] = typer.Option(None, help=CACHE_HELP),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda | cuda:N (with --gpus: auto or cuda; "
                                                    "default: auto)."),
    log: Optional[str] = typer.Option(None, "--log", help=LOG_HELP),
    launcher: str = typer.Option("local", help="local: this machine (--jobs / --gpus) | slurm: a job array via submitit."),
    jobs: int = typer.Option(1, min=1, help="Local worker processes (1: run the cells in this process)."),
    gpus: Optional[str] = typer.Option(None, help="Local: one worker per GPU, '0,1,2,3' or 'all' (default: none, "
                                                  "--jobs workers)."),
    partition: Optional[str] = typer.Option(None, help="Slurm partition (default: the cluster's)."),
    time_limit: str = typer.Option("24:00:00", "--time", help="Slurm time limit per job (HH:MM:SS or minutes)."),
    gpus_per_job: int = typer.Option(1, min=0, help="Slurm GPUs per job."),
    cpus_per_job: int = typer.Option(8, min=1, help="Slurm CPUs per job (data loading workers)."),
    mem: Optional[float] = typer.Option(None, min=1, help="Slurm memory per job in GB (default: the partition's)."),
    array_parallelism: int = typer.Option(16, min=1, help="Slurm: at most this many array tasks at once."),
    wait: bool = typer.Option(False, "--wait", help="Slurm: wait for the jobs and print the summary."),
    submitit_cluster: str = typer.Option("slurm", hidden=True,
                                         help="submitit executor: slurm, or local (the same jobs as local processes)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check the inputs (data, weights, ImageNet) and list the runs still to do."),
    sets: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP.replace("key,", "key for every run,")),
):
    """Run a grid (model × data sets × methods × seeds), skipping finished runs; here, on N workers
    or GPUs, or as Slurm jobs. `flowvision status` shows where it is."""
    with user_errors():
        from .grid import check_inputs, grid, reproduce as run_grid

        if launcher not in ("local", "slurm"):
            raise UserError(f"--launcher {launcher}: choose local or slurm")
        if gpus and device not in (None, "auto", "cuda"):
            raise UserError(f"--device {device} with --gpus: each worker sees one GPU as cuda; use --device cuda or auto")
        from .launch import minutes, slots

        if launcher == "slurm":  # the launcher's own options are checked before anything, --dry-run included
            if gpus:
                raise UserError("--gpus is for --launcher local; with slurm use --gpus-per-job")
            minutes(time_limit)
        else:
            slots(jobs, gpus)
        from .config import seed_list

        names = resolve_dataset_group(datasets)
        method_names = [m.strip() for m in methods.split(",") if m.strip()]
        if not names or not method_names:
            option, text = ("--datasets", datasets) if not names else ("--methods", methods)
            raise UserError(f"{option} {text!r} names nothing to run; give comma-separated names, e.g. "
                            + ("--datasets paper or --datasets cifar10,flowers102" if not names else "--methods ft,flow"))
        cells = grid(model, names, method_names, seed_list(seeds),
                     _overrides(protocol=protocol, tau=tau, weights=weights, data_root=data_root, imagenet=imagenet,
                                imagenet_subset=imagenet_subset, source_eval_dir=source_eval, results_dir=results_dir,
                                cache_dir=cache_dir, device=device, log=log, sets=sets))
        if dry_run:
            summary = run_grid(cells, dry_run=True)
            problems = check_inputs(cells)
            out.print(f"{plural(summary['cells'], 'run')}, {summary['skipped']} finished, {len(summary['todo'])} to do:")
            for cmd in summary["todo"]:
                out.print(f"  {cmd}", highlight=False, soft_wrap=True)
            todo = {cmd for cmd in summary["todo"]}
            _print_estimate([cfg for cfg, cmd in cells if cmd in todo],
                            Path(cells[0][0].results_dir) if cells else Path("results"))
            if problems:
                for p in problems:
                    console.print(f"[bold red]missing:[/] {p}", highlight=False, soft_wrap=True)
                raise typer.Exit(2)
            out.print("inputs: every data set, the weights and the evaluation images are in place")
            return
        results = Path(cells[0][0].results_dir) if cells else Path("results")
        if launcher == "slurm":
            from .launch import slurm

            summary = slurm(cells, results / "slurm", partition=partition, time_limit=time_limit,
                            gpus_per_job=gpus_per_job, cpus_per_job=cpus_per_job, mem_gb=mem,
                            array_parallelism=array_parallelism, cluster=submitit_cluster, wait=wait)
            if not wait:
                out.print(f"{plural(summary['cells'], 'run')}, {summary['skipped']} already finished; submitted "
                          f"{plural(len(summary['jobs']), 'job')} ({', '.join(summary['jobs'][:3])}{'...' if len(summary['jobs']) > 3 else ''}), "
                          f"logs under {summary['folder']}. `flowvision status --results-dir {results}` shows them.")
                return
        elif jobs > 1 or gpus:
            from .launch import local, slots

            summary = local(cells, slots(jobs, gpus), results / "logs")
        else:
            summary = run_grid(cells)
        failed = summary["failed"]
        out.print(f"{plural(summary['cells'], 'run')}: {summary['ran']} ran, {summary['skipped']} already finished, "
                  f"{len(failed)} failed, {summary['seconds']:.0f} s. "
                  + (f"Each failure's error is above; `flowvision status --results-dir {results}` shows where the "
                     "runs are." if failed else "`flowvision table` shows them."), highlight=False, soft_wrap=True)
        if failed:
            raise typer.Exit(2)


@app.command()
def status(results_dir: str = typer.Option("results", help="Folder holding runs/."),
           watch: bool = typer.Option(False, "--watch", help="Refresh until Ctrl-C."),
           interval: float = typer.Option(5.0, min=0.5, help="Seconds between refreshes with --watch."),
           show_done: bool = typer.Option(False, "--all", help="List finished runs too (default: only their count).")):
    """Where a grid is: done, running (stage and epoch), failed (the error), waiting, from the run folders."""
    with user_errors():
        from .report import status_table
        from .runstate import read_states

        if not Path(results_dir).is_dir():  # a mistyped folder, not one where nothing has run yet
            raise UserError(f"results folder {results_dir} does not exist; pass --results-dir (default: results)")
        if not watch or not Path(results_dir, "runs").is_dir():  # no runs/ yet: the line that says where to start
            rows = read_states(Path(results_dir)) if Path(results_dir, "runs").is_dir() else []
            out.print(status_table(rows, show_done, results_dir), highlight=False, soft_wrap=True)
            return
        import time

        from rich.live import Live

        try:
            with Live(status_table(read_states(Path(results_dir)), show_done, results_dir), console=out,
                      auto_refresh=False) as live:
                while True:
                    time.sleep(interval)
                    live.update(status_table(read_states(Path(results_dir)), show_done, results_dir), refresh=True)
        except KeyboardInterrupt:
            pass


@app.command()
def cache(results_dir: str = typer.Option("results", help="Folder holding cache/ and runs/."),
          prune: bool = typer.Option(False, "--prune", help="Remove every stage file no run record refers to."),
          dry_run: bool = typer.Option(False, "--dry-run", help="With --prune: list what would go, remove nothing.")):
    """What the stage store holds (per stage and kind, with sizes), and pruning what no run refers to."""
    with user_errors():
        from .console import Table
        from .housekeeping import prune as prune_store, store_files

        if not Path(results_dir).is_dir():
            raise UserError(f"results folder {results_dir} does not exist; pass --results-dir (default: results)")
        rows = store_files(Path(results_dir))
        line(f"stage store: {Path(results_dir) / 'cache'}")  # the path whole, on its own line
        if rows:
            t = Table(title="what it holds", title_justify="left")
            for col in ("stage", "kind", "files", "MiB"):
                t.add_column(col, justify="left" if col in ("stage", "kind") else "right",
                             no_wrap=col in ("stage", "kind"))
            groups: dict = {}
            for row in rows:
                g = groups.setdefault((row["stage"], row["kind"]), [0, 0])
                g[0], g[1] = g[0] + 1, g[1] + row["bytes"]
            for (stage, kind), (n, size) in sorted(groups.items()):
                t.add_row(stage, kind, str(n), f"{size / 2**20:.1f}")
            out.print(t)
        out.print(f"total {sum(r['bytes'] for r in rows) / 2**20:.1f} MiB in {plural(len(rows), 'file')}"
                  + ("" if rows else ": nothing cached yet (a run's stages fill it)"), highlight=False)
        if prune:
            from .runstate import read_states

            running = [r["run_id"] for r in read_states(Path(results_dir)) if r["status"] in ("running", "stale")]
            if running and not dry_run:  # their finished stages are in no record yet: pruning would take them
                raise UserError(f"{plural(len(running), 'run')} under {results_dir} {'is' if len(running) == 1 else 'are'}"
                                f" running (e.g. {running[0]}); prune when they have finished, or look first with "
                                "--dry-run")
            gone = prune_store(Path(results_dir), dry_run=dry_run)
            verb = "would remove" if dry_run else "removed"
            out.print(f"{verb} {plural(len(gone), 'file')}, {sum(r['bytes'] for r in gone) / 2**20:.1f} MiB "
                      "(outputs no run record refers to, partial checkpoints, damaged and temporary files)"
                      + (":" if dry_run and gone else ""), highlight=False)
            if dry_run:
                for row in gone:
                    out.print(f"  {row['path']} ({row['kind']}, {row['bytes'] / 2**20:.1f} MiB)", highlight=False,
                              soft_wrap=True)
            if running:
                console.print(f"[yellow]warning:[/] {plural(len(running), 'run')} under {results_dir} "
                              f"{'is' if len(running) == 1 else 'are'} running (e.g. {running[0]}): the stages they "
                              "have finished are in no run record yet, so they are listed here; prune once they have "
                              "finished", highlight=False, soft_wrap=True)


@app.command()
def bench(
    model: str = typer.Option("resnet18", help="timm architecture (random weights)."),
    image_size: int = typer.Option(32, min=8, help="Side of the random square images, in pixels."),
    batch_size: int = typer.Option(32, min=1, help="Images per training step."),
    steps: int = typer.Option(5, min=1, help="Training steps per variant per repeat."),
    repeats: int = typer.Option(3, min=1, help="Interleaved repeats of every variant; the table shows their median."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
    data: bool = typer.Option(False, "--data", help="Time the data path instead: PIL per sample vs the decoded cache."),
    images: int = typer.Option(64, min=8, help="With --data: generated images per recipe."),
):
    """Speed ratios of the training step, variants interleaved in one run (see flowvision/bench.py)."""
    with user_errors():
        from .console import Table
        from .bench import bench as run_bench, bench_data
        from .hardware import resolve_device
        from .models import is_arch

        if data:
            rows = bench_data(images, repeats)
            t = Table(title=f"data path at 224 px, {images} images, one core — median of {repeats} interleaved repeats")
            for col in ("recipe", "path", "images/s", "× vs PIL"):
                t.add_column(col, justify="left" if col in ("recipe", "path") else "right", no_wrap=col in ("recipe", "path"))
            for r in rows:
                t.add_row(r["recipe"], r["path"], f"{r['images_per_s']:.0f}", f"{r['ratio']:.1f}")
            out.print(t)
            return
        if not is_arch(model):
            raise UserError(f"--model {model} is not a timm architecture; e.g. resnet18 or resnet50")
        dev = resolve_device(device)
        rows = run_bench(model, image_size, batch_size, steps, repeats, dev)
        t = Table(title=f"{model} @ {image_size} px, batch {batch_size}, {dev} — median of {repeats} interleaved repeats")
        for col in ("variant", "images/s", "× vs its baseline"):
            t.add_column(col, justify="left" if col == "variant" else "right", no_wrap=col == "variant")
        for r in rows:
            t.add_row(r["variant"], f"{r['images_per_s']:.0f}", f"{r['ratio']:.2f}")
        out.print(t)
        baselines = list(dict.fromkeys(r["baseline"] for r in rows))
        out.print(f"× compares each row with the first row of its group: {' and '.join(repr(b) for b in baselines)}", highlight=False)


# What may run under torchrun (WORLD_SIZE > 1): one run shared by the processes. Everything else runs in
# one process (`reproduce` starts its own workers, one per GPU).
DISTRIBUTED_COMMANDS = ("finetune",)


def _refuse_torchrun() -> None:
    from .distributed import env_world

    command = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
    if env_world() > 1 and command is not None and command not in DISTRIBUTED_COMMANDS:
        if os.environ.get("RANK", "0") == "0":
            console.print(f"[bold red]error:[/] `flowvision {command}` runs in one process; under torchrun only "
                          f"`flowvision finetune` (one run over several GPUs); for a grid over GPUs use "
                          "`flowvision reproduce --gpus`", highlight=False, soft_wrap=True)
        sys.exit(2)


def main() -> None:
    try:
        _refuse_torchrun()
        app()
    except UserError as e:  # raised outside a command's own handler (e.g. while mounting sub-apps)
        console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
