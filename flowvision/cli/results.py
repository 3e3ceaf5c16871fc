"""The commands that read runs back: frontiers, the paper's tables, figures, the sample audit of FLOW's
weights, a finished run exported for timm, and the stage store's contents."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..core.console import commands_apart, console, line, out, plural, show, user_errors
from ..core.errors import UserError
from .app import (CACHE_HELP, DATASET_HELP, DEVICE_HELP, IMAGENET_HELP, RESULTS_HELP, SET_HELP, SOURCE_EVAL_HELP, SOURCE_MODEL_HELP, WEIGHTS_HELP, overrides, print_estimate, print_missing)
from .data import DATA_ROOT_HELP


def frontier(
    dataset: str = typer.Option("gratings", help=DATASET_HELP),
    model: Optional[str] = typer.Option(None, help=SOURCE_MODEL_HELP),
    seeds: int = typer.Option(1, min=1, help="Seeds 0..N-1 (each point is the mean over them)."),
    lrs: Optional[str] = typer.Option(None, help="FT learning rates, comma-separated (default: the config's × 0.1, 0.3, 1)."),
    epochs: Optional[str] = typer.Option(None, help="FT epochs, comma-separated (default: 1 and the config's)."),
    taus: Optional[str] = typer.Option(None, help="FLOW τ rules, comma-separated (default: p10,p25,median,p75,p90)."),
    l2sp_lambdas: Optional[str] = typer.Option(None, "--l2sp-lambdas", help="ℓ2-SP strengths λ, comma-separated "
                                               "(default: the config's l2sp_lambda × 0.1, 1, 10)."),
    lwf_lambdas: Optional[str] = typer.Option(None, help="LwF λ values, comma-separated (default: 0,0.1,0.3,1,3,10; 0 is LP-FT)."),
    ewc_lambdas: Optional[str] = typer.Option(None, help="EWC λ values, comma-separated (default: 0,0.1,1,10,100; 0 is FT)."),
    weights_file: Optional[str] = typer.Option(None, "--weights", help=WEIGHTS_HELP),
    data_root: Optional[str] = typer.Option(None, help=DATA_ROOT_HELP),
    imagenet: Optional[str] = typer.Option(None, help=IMAGENET_HELP),
    source_eval: Optional[str] = typer.Option(None, "--source-eval", help=SOURCE_EVAL_HELP),
    results_dir: Optional[str] = typer.Option(None, help=RESULTS_HELP),
    cache_dir: Optional[str] = typer.Option(None, help=CACHE_HELP),
    val_split: float = typer.Option(0.1, help="Share of each training set held out (seeded) to choose each method's "
                                    "best setting on; the source images are halved likewise, one half to choose on, the "
                                    "other reported. 0: none (every image trains; the choice is made on the reported "
                                    "numbers, and the summary says so)."),
    methods: Optional[str] = typer.Option(None, help="Comma-separated methods to sweep (default: all): "
                                          "ft, l2sp, wiseft, flow, flow+wiseft, lwf, ewc."),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP),
    sets: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP.replace("key,", "key for every run,")),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the runs per method, what is finished, how long the "
                                 "rest takes and what is missing; run nothing."),
):
    """Trade-off frontiers: FT over learning rates and epochs, ℓ2-SP, LwF and EWC over their λ, WiSE-FT over α,
    FLOW over τ, FLOW+WiSE-FT over α; a PNG of target vs source accuracy with each method's Pareto front,
    a summary and each method paired with FT over seeds."""
    with user_errors():
        from ..reporting.frontier import frontier as run_frontier, plan, sweep
        from ..reporting.formats import render

        def numbers(text, kind, name):
            if text is None:
                return None
            try:
                return listed([kind(v) for v in text.split(",") if v.strip()], text, name)
            except ValueError:
                raise UserError(f"--{name} {text!r}: expected comma-separated {kind.__name__}s") from None

        from ..core.checks import listed, seed_list
        from ..core.registry import dataset_slug, default_model

        model = model or default_model(dataset)
        given = overrides(weights=weights_file, data_root=data_root, imagenet=imagenet, source_eval_dir=source_eval,
                          results_dir=results_dir, cache_dir=cache_dir, device=device, val_split=val_split, sets=sets)
        knobs = dict(lrs=numbers(lrs, float, "lrs"), epochs=numbers(epochs, int, "epochs"),
                     taus=listed([t.strip() for t in taus.split(",") if t.strip()], taus, "taus") if taus is not None else None,
                     lambdas={"l2sp": numbers(l2sp_lambdas, float, "l2sp-lambdas"),
                              "lwf": numbers(lwf_lambdas, float, "lwf-lambdas"),
                              "ewc": numbers(ewc_lambdas, float, "ewc-lambdas")},
                     methods=[m.strip() for m in methods.split(",") if m.strip()] if methods is not None else None)
        cfgs = sweep(dataset, model, given, seed_list(seeds), **knobs)
        if dry_run:
            from ..scale.grid import todo

            p = plan(cfgs)
            out.print(f"frontier — {dataset_slug(cfgs[0].dataset)} / {model}: {plural(p['runs'], 'run')} "
                      f"(seed{'s' * (len(p['seeds']) > 1)} {', '.join(map(str, p['seeds']))}), {p['finished']} "
                      "finished" + ("; a WiSE-FT run gives all its α" if any("α" in k for k in p["by_method"]) else "")
                      + ":", highlight=False, soft_wrap=True)
            for label, points in p["by_method"].items():
                out.print(f"  {label}: {'; '.join(points)}", highlight=False, soft_wrap=True)
            print_estimate([cfg for cfg, _ in todo([(cfg, "") for cfg in cfgs])], Path(cfgs[0].results_dir))
            if print_missing(cfgs[0]):  # what the first run would stop on (every run reads the same inputs)
                raise typer.Exit(2)
            return
        res = run_frontier(dataset, model, given, seed_list(seeds), cfgs=cfgs)
        table = res["summary"].astype(str)
        chance = res["chance"]
        table.attrs["note"] = (f"source: {res['measure']}. Percent; mean over seeds [95% t-interval over seeds, clipped to "
                               "0–100 only as printed]. Every front includes the anchors (the pre-trained model at "
                               f"target chance, {chance[1]:.1f}%, and the linear probe); area: of the square above chance "
                               f"(source {chance[0]:.1f}%, target {chance[1]:.1f}%) under each seed's front. Best: the "
                               "setting whose seed-mean Average, mean(source, target), is highest on the numbers named in "
                               "the column, reported on the test numbers; at grid edge: the best may lie beyond that end. "
                               f"target at drop ≤ d: the best target accuracy of a setting that forgets at most d points. "
                               f"Pre-trained: {res['source_before']:.2f}%.")
        out.print(render((f"frontiers — {dataset_slug(dataset)} / {model}", table)))
        if len(res["comparisons"]):
            compared = res["comparisons"].astype(str)
            compared.attrs["note"] = ("each method minus FT, paired over the seeds both ran (the same seed: the same source "
                                      "model and data order); mean [95% t-interval over seeds].")
            out.print(render(("each method against FT, paired over seeds", compared)))
        if res["diverged"]:
            console.print(f"[yellow]diverged[/] (recorded in their run folders, marked in the figure): "
                          f"{'; '.join(res['diverged'])}", highlight=False, soft_wrap=True)
        out.print(f"figure: {res['png']}; points: {res['folder']}/points.csv; {plural(len(res['runs']), 'run')}, "
                  f"{res['seconds']:.0f} s", highlight=False, soft_wrap=True)


def table(results_dir: str = typer.Option("results", help="Folder holding runs/ (tables go to <it>/tables)."),
          show_commands: int = typer.Option(10, min=0, help="How many of the commands that would fill missing cells to "
                                            "list (default: 10; the count of all is printed).")):
    """Print the paper's vision tables with our runs beside the paper's numbers; write md/csv/tex."""
    with user_errors():
        from ..reporting.tables import empty_tables, make_tables
        from ..reporting.formats import render

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
            shown = missing[:show_commands]
            more = (f"the first {len(shown)} of the {len(missing)} commands that fill them (--show-commands "
                    f"{len(missing)} lists all; `flowvision reproduce --model MODEL` runs a model's grid)"
                    if len(shown) < len(missing) else "the commands that fill them")
            out.print(f"{len(missing)} paper cells have no run of ours; {more}:", highlight=False, soft_wrap=True)
            for cmd in shown:
                out.print(f"  {cmd}", highlight=False, soft_wrap=True)



def plot(results_dir: str = typer.Option("results", help="Folder holding runs/."),
         out_dir: Optional[str] = typer.Option(None, help="Where PNGs go (default: <results-dir>/figures).")):
    """Figures: target vs source accuracy per method, FLOW weight histograms, τ sweeps, WiSE-FT α curves."""
    with user_errors():
        from ..reporting.plots import make_all

        paths = make_all(Path(results_dir), Path(out_dir) if out_dir else None)
        for p in paths:
            out.print(str(p))
        if not paths:
            raise UserError(f"no runs under {results_dir}/runs to plot; run `flowvision demo` or `flowvision finetune` first")



def weights(
    dataset: str = typer.Option("gratings", help=DATASET_HELP),
    model: Optional[str] = typer.Option(None, help=SOURCE_MODEL_HELP),
    tau: Optional[str] = typer.Option(None, help="τ rule (default: the config's, median)."),
    k: int = typer.Option(16, min=1, help="How many most up- and down-weighted samples to show."),
    seed: Optional[int] = typer.Option(None, help="Seed of the probe whose losses give the weights (default: 0)."),
    weights_file: Optional[str] = typer.Option(None, "--weights", help=WEIGHTS_HELP),
    data_root: Optional[str] = typer.Option(None, help=DATA_ROOT_HELP),
    results_dir: Optional[str] = typer.Option(None, help=RESULTS_HELP),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP),
    sets: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP),
):
    """The sample audit: which training samples FLOW up- and down-weights most, and per-class means."""
    with user_errors():
        from ..core import config
        from ..stages.audit import run_audit as audit

        cfg = config.resolve(dataset, model, "flow", overrides(tau=tau, seed=seed, weights=weights_file,
                                                                data_root=data_root, results_dir=results_dir,
                                                                device=device, sets=sets))
        res = audit(cfg, k)
        from ..reporting.formats import render

        from ..reporting.report import tau_text

        out.print(render((f"mean FLOW weight per class — {dataset}, τ = {tau_text(res['tau'], res['tau_rule'])}",
                          res["per_class"].map(lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)))))
        if res["label_noise"]:
            from ..reporting.report import noise_text

            out.print(noise_text(res["label_noise"]), highlight=False)
        line(f"contact sheet: {res['png']}")



def export_run(
    run_dir: Path = typer.Argument(..., help="A finished run folder, results/runs/<run id>."),
    out_dir: Path = typer.Option(..., "--out", help="The folder to write model.safetensors, config.json, "
                                 "source_parts.safetensors and README.md into (made if missing)."),
):
    """The run's reported model as files timm loads without flowvision: weights, timm's config (labels,
    eval transform), the pre-trained task-specific parts beside them, and a model card."""
    with user_errors():
        from ..reporting.export import export

        res = export(run_dir, out_dir)
        for item in commands_apart(f"wrote {res['out']}: {res['architecture']} with {res['num_classes']} classes, "
                                   f"and {res['source_parts']} source tensors ({res['rule']}); load it with "
                                   f"`timm.create_model(\"local-dir:{res['out']}\", pretrained=True)` or see its "
                                   "README.md"):
            show(item)



def cache(results_dir: str = typer.Option("results", help="Folder holding cache/ and runs/."),
          prune: bool = typer.Option(False, "--prune", help="Remove every stage file no run record refers to."),
          dry_run: bool = typer.Option(False, "--dry-run", help="With --prune: list what would go, remove nothing."),
          verify: bool = typer.Option(False, "--verify", help="Hash every decoded image cache in full (a run checks a "
                                      "stamp instead once a cache has passed); a damaged one is moved aside."),
          cache_dir: Optional[str] = typer.Option(None, help=CACHE_HELP)):
    """What the stage store holds (per stage and kind, with sizes), and pruning what no run refers to."""
    with user_errors():
        from ..core.console import Table
        from ..reporting.housekeeping import prune as prune_store, store_files

        if verify:
            from ..core.config import default_cache_dir
            from ..data.decoded import verify_all

            where = Path(cache_dir) if cache_dir else default_cache_dir()
            checked = verify_all(where)
            line(f"decoded image caches: {where / 'decoded'}")
            for row in checked:
                out.print(f"  {row['key']}  {row['bytes'] / 2**20:,.1f} MiB  "
                          + ("ok" if row["ok"] else f"damaged ({row['reason']}), moved aside"), highlight=False)
            out.print(f"{plural(len(checked), 'decoded cache')} hashed in full, "
                      f"{sum(not r['ok'] for r in checked)} damaged", highlight=False)
            if not Path(results_dir).is_dir():
                return
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
            from ..stages.runfolder import read_states

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
