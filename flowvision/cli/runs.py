"""The commands that run: one experiment (``finetune``), the offline ``demo``, a grid (``reproduce``), and
where a grid is (``status``)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer

from ..core.console import console, out, plural, user_errors
from ..core.errors import UserError
from ..core.registry import DATASET_GROUPS, DEMO_DATASETS, DEMO_METHODS, METHODS, PAPER_METHODS, PROTOCOLS, resolve_dataset_group
from .app import (CACHE_HELP, DATASET_HELP, DEVICE_HELP, IMAGENET_HELP, IMAGENET_SUBSET_HELP, LOG_HELP, MODEL_HELP, PROTOCOL_HELP, RESULTS_HELP, SET_HELP, SOURCE_EVAL_HELP, TAU_HELP, WEIGHTS_HELP, overrides, print_estimate, warn_unread)
from .data import DATA_ROOT_HELP


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
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP),
    log: Optional[str] = typer.Option(None, "--log", help=LOG_HELP),
    config_file: Optional[Path] = typer.Option(None, "--config", help="A YAML config instead of the default, "
                                                 "configs/<model>/<dataset>.yaml."),
    sets: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config (and where each value came "
                                 "from), the files it reads and the stage plan; run nothing."),
):
    """Run one experiment (probe, weights, fine-tuning, refit, forgetting) and record it."""
    with user_errors():
        from ..core import config

        sources: dict = {}
        given = overrides(tau=tau, protocol=protocol, seed=seed, epochs=epochs, lr=lr, batch_size=batch_size,
                          weights=weights, data_root=data_root, imagenet=imagenet, imagenet_subset=imagenet_subset,
                          source_eval_dir=source_eval, results_dir=results_dir, cache_dir=cache_dir, device=device,
                          log=log, sets=sets)
        cfg = config.resolve(dataset, model, method, given, config_file, trace=sources)
        warn_unread(given, [cfg])
        if dry_run:
            from ..stages.dryrun import dry_run as plan_run
            from ..core.console import show
            from ..reporting.report import dry_run_tables

            report = plan_run(cfg, sources)
            if os.environ.get("RANK", "0") == "0":  # under torchrun: one plan, from rank 0
                for item in dry_run_tables(report):
                    show(item)
                print_estimate([] if report["run"]["finished"] else [cfg], Path(cfg.results_dir))
            if any(row["found"] is False for row in report["files"]):
                raise typer.Exit(2)  # the run would stop on these: a dry run says so as the run would (exit 2)
            return
        from ..stages.run import run
        from ..reporting.report import print_result

        result = run(cfg)
        if result is not None:  # None: a torchrun rank other than 0 (rank 0 prints the result)
            print_result(result)
            from ..core.tau import far_from_paper_tau

            far = far_from_paper_tau(result.get("tau"), cfg.paper_tau, cfg.dataset)
            if far:
                console.print(f"[yellow]note:[/] {far}", highlight=False, soft_wrap=True)



def demo(
    dataset: str = typer.Option("gratings", help=f"Synthetic target task: {' or '.join(DEMO_DATASETS)}."),
    seeds: int = typer.Option(6, min=1, help="Number of seeds (0..N-1); docs/findings.md says in which CPU configurations 6 kept the paired FT−FLOW interval off 0."),
    methods: str = typer.Option(",".join(DEMO_METHODS), help=f"Comma-separated methods: {', '.join(METHODS)}."),
    results_dir: Optional[str] = typer.Option(None, help="Where run folders go (default: results)."),
    cache_dir: Optional[str] = typer.Option(None, help=CACHE_HELP),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP),
    sets: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP),
):
    """The offline demo: standard fine-tuning vs FLOW on a synthetic task, over several seeds."""
    with user_errors():
        from ..core.checks import seed_list
        from ..reporting.report import run_demo

        run_demo(dataset, len(seed_list(seeds)), [m.strip() for m in methods.split(",") if m.strip()],
                 overrides(results_dir=results_dir, cache_dir=cache_dir, device=device, sets=sets))



def reproduce(
    model: Optional[str] = typer.Option(None, help=MODEL_HELP + " Several, comma-separated: the grid of each "
                                        "(--model resnet18,resnet50)."),
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
        from ..scale.grid import check_inputs, grid, reproduce as run_grid

        if launcher not in ("local", "slurm"):
            raise UserError(f"--launcher {launcher}: choose local or slurm")
        if gpus and device not in (None, "auto", "cuda"):
            raise UserError(f"--device {device} with --gpus: each worker sees one GPU as cuda; use --device cuda or auto")
        from ..scale.launch import minutes, slots

        if launcher == "slurm":  # the launcher's own options are checked before anything, --dry-run included
            if gpus:
                raise UserError("--gpus is for --launcher local; with slurm use --gpus-per-job")
            minutes(time_limit)
        else:
            slots(jobs, gpus)
        from ..core.checks import seed_list

        names = resolve_dataset_group(datasets)
        method_names = [m.strip() for m in methods.split(",") if m.strip()]
        if not names or not method_names:
            option, text = ("--datasets", datasets) if not names else ("--methods", methods)
            raise UserError(f"{option} {text!r} names nothing to run; give comma-separated names, e.g. "
                            + ("--datasets paper or --datasets cifar10,flowers102" if not names else "--methods ft,flow"))
        given = overrides(protocol=protocol, tau=tau, weights=weights, data_root=data_root, imagenet=imagenet,
                          imagenet_subset=imagenet_subset, source_eval_dir=source_eval, results_dir=results_dir,
                          cache_dir=cache_dir, device=device, log=log, sets=sets)
        cells = grid(model, names, method_names, seed_list(seeds), given)
        warn_unread(given, [cfg for cfg, _ in cells])
        if dry_run:
            summary = run_grid(cells, dry_run=True)
            problems = check_inputs(cells)
            out.print(f"{plural(summary['cells'], 'run')}, {summary['skipped']} finished, {len(summary['todo'])} to do:")
            for cmd in summary["todo"]:
                out.print(f"  {cmd}", highlight=False, soft_wrap=True)
            todo = {cmd for cmd in summary["todo"]}
            results = Path(cells[0][0].results_dir) if cells else Path("results")
            mine = cells[0][0].protocol if cells else "clean"
            by_protocol = {mine: [cfg for cfg, cmd in cells if cmd in todo]}
            other = next(p for p in PROTOCOLS if p != mine)
            try:  # the same grid under the other protocol, priced beside it (what is left of it)
                from ..scale.grid import todo as left

                by_protocol[other] = [cfg for cfg, _ in left(grid(model, names, method_names, seed_list(seeds),
                                                                   dict(given, protocol=other)))]
            except UserError:
                pass  # a setting only one protocol takes (--tau paper): no price for the other
            print_estimate(by_protocol, results, mine)
            if problems:
                for p in problems:
                    console.print(f"[bold red]missing:[/] {p}", highlight=False, soft_wrap=True)
                raise typer.Exit(2)
            out.print("inputs: every data set, the weights and the evaluation images are in place")
            return
        results = Path(cells[0][0].results_dir) if cells else Path("results")
        if launcher == "slurm":
            from ..scale.launch import slurm

            summary = slurm(cells, results / "slurm", partition=partition, time_limit=time_limit,
                            gpus_per_job=gpus_per_job, cpus_per_job=cpus_per_job, mem_gb=mem,
                            array_parallelism=array_parallelism, cluster=submitit_cluster, wait=wait)
            if not wait:
                out.print(f"{plural(summary['cells'], 'run')}, {summary['skipped']} already finished; submitted "
                          f"{plural(len(summary['jobs']), 'job')} ({', '.join(summary['jobs'][:3])}{'...' if len(summary['jobs']) > 3 else ''}), "
                          f"logs under {summary['folder']}. `flowvision status --results-dir {results}` shows them.")
                return
        elif jobs > 1 or gpus:
            from ..scale.launch import local, slots

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



def status(results_dir: str = typer.Option("results", help="Folder holding runs/."),
           watch: bool = typer.Option(False, "--watch", help="Refresh until Ctrl-C."),
           interval: float = typer.Option(5.0, min=0.5, help="Seconds between refreshes with --watch."),
           show_done: bool = typer.Option(False, "--all", help="List finished runs too (default: only their count).")):
    """Where a grid is: done, running (stage and epoch), failed (the error), waiting, from the run folders."""
    with user_errors():
        from ..reporting.report import status_table
        from ..stages.runfolder import read_states

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
