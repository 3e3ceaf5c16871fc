"""What the CLI prints after a run or the demo (rich tables); the numbers come from result dicts."""
from __future__ import annotations

from typing import Optional

from rich.console import Group
from rich.text import Text

from ..core.console import Table, commands_apart, console, line, out, plural


def pct(x, unit: str = " %") -> str:
    """A fraction as a percentage with its unit ('71.30 %'); points for a difference of two."""
    return "—" if x is None else f"{100 * x:.2f}{unit}"


def tau_text(tau: float, rule: str) -> str:
    """τ and the rule that chose it, the rule only when it is not the number itself ('1', '0.23 (median)')."""
    try:
        same = float(rule) == tau
    except (TypeError, ValueError):
        same = False
    return f"{tau:.4g}" if same else f"{tau:.4g} ({rule})"


def result_table(r: dict) -> Table:
    """One run: accuracies in percent, τ, stages computed or cached, and where the files are."""
    t = Table(title=f"{r['run_id']}", show_header=False, title_justify="left")
    t.add_column(no_wrap=True)
    t.add_column()
    t.add_row("target accuracy", pct(r["target_acc"]))
    from .labels import source_label

    on = source_label(r["source_eval_name"], r.get("source_eval"))
    on += f", {r['source_eval_images']:,} images" if r.get("source_eval_images") and on in ("IN-1K val", r["source_eval_name"]) else ""
    t.add_row("source accuracy", f"{pct(r['source_acc_before'])} → {pct(r['source_acc_after'])} (before → after, on {on})")
    t.add_row("drop", pct(r["source_drop"], " points"))
    if r.get("source_agreement") is not None:
        t.add_row("agreement with the pre-trained model",
                  f"{pct(r['source_agreement'])} of top-1 classes; KL {r['source_kl']:.4f} nats")
    if r.get("tau") is not None:
        ws = r["weight_stats"] or {}
        t.add_row("τ", tau_text(r["tau"], r["tau_rule"])
                  + (f"; weights mean {ws['mean']:.3f}; ESS (effective sample size, (Σw)²/Σw²) "
                     f"{pct(ws['ess_frac'], ' %')} of the training samples" if ws else ""))
    if r.get("label_noise"):
        t.add_row("FLOW weights on wrong labels", noise_text(r["label_noise"]))
    if r.get("hard10_acc") is not None:
        t.add_row(f"hardest 10 % of test samples ({r['hard10_n']}, by probe loss)", pct(r["hard10_acc"]))
    elif r.get("hard10_note"):
        t.add_row("hardest 10 % of test samples", "not measured: no linear probe was trained (--set hard10=true)")
    for w in r.get("wise") or []:
        t.add_row(f"WiSE-FT α={w['alpha']:g}", f"target {pct(w['target_acc'])}, source {pct(w['source_acc_after'])}"
                  + (f" (on {w['source_images']:,} of the images)" if w.get("source_subset") else ""))
    if r.get("protocol"):
        best = ", ".join(f"{k} epoch {v}" for k, v in (r.get("best_epochs") or {}).items())
        t.add_row("protocol", r["protocol"] + (f" (kept the best test epoch: {best})" if best else ""))
    if r.get("dogs_split"):
        t.add_row("Stanford Dogs splits", f"{r['dogs_split']}: " + overlap_text(r.get("split_overlap") or {}))
    if r.get("hparams_note"):
        t.add_row("hyper-parameters", r["hparams_note"])
    t.add_row("stages", ", ".join(f"{k} {v}" for k, v in r["stages"].items()))
    t.add_row("wall time", f"{r['wall_seconds']:.1f} s on {r['device']}")
    return t


def print_result(r: dict) -> None:
    """A finished run as the CLI shows it: ``result_table``, then the run folder whole on its own line."""
    out.print(result_table(r))
    line(f"run folder: {r.get('run_dir', '')}")


def overlap_text(stages: dict) -> str:
    """A run's split overlap (record.split_overlap) in one line: per stage, the share of its test images
    that an earlier stage trained on."""
    parts = [f"{stage} tested on {', '.join(f'{100 * v:.1f}% ({who})' for who, v in row['seen'].items())}"
             for stage, row in stages.items() if row["seen"]]
    return "; ".join(parts) + " of its test images trained an earlier stage" if parts else "one stage, no overlap"


def noise_text(n: dict) -> str:
    """The noisy-label audit in one line (audit.noise_audit's dict)."""
    if not n["n_noisy"]:
        return f"wrong training labels: none of {n['n']}"
    return (f"wrong training labels: {n['n_noisy']} of {n['n']} ({100 * n['base_rate']:.1f}%); mean weight "
            f"{n['mean_weight_noisy']:.3f} (wrong) vs {n['mean_weight_clean']:.3f} (right); wrong labels are "
            f"{100 * n['noisy_share_bottom_k']:.0f}% of the {n['k']} most down-weighted and "
            f"{100 * n['noisy_share_bottom_n_noisy']:.0f}% of the {n['n_noisy']} most down-weighted "
            f"(a random ranking: {100 * n['base_rate']:.1f}%)")


def dry_run_tables(report: dict) -> list:
    """`finetune --dry-run`: the resolved config with each value's origin, the files the run reads,
    the stage plan (dryrun.dry_run's dict). Tables, and lines (str) for paths and commands, which
    ``console.show`` prints whole."""
    import re

    run = report["run"]
    config = Table(title=f"{run['run_id']} — resolved config", title_justify="left")
    config.add_column("key", no_wrap=True)
    config.add_column("value")
    config.add_column("from")
    below: list[str] = []  # paths and long values: whole, under the table, never cut in a cell
    files_named: dict = {}
    for key, value, origin in report["config"]:
        found = re.match(r"config file (\S+)", origin)
        if found:
            name = files_named.setdefault(found[1], f"config file {len(files_named) + 1}" if files_named else "config file")
            origin = origin.replace(found[0], name)
        if len(value) > 30:
            below.append(f"{key}: {value}")
            value = "(below)"
        config.add_row(key, value, origin)
    if len(files_named) > 1:
        below += [f"{name}: {path}" for path, name in files_named.items()]
    elif files_named:
        below.append(f"config file: {next(iter(files_named))}")
    files = ["files the run reads:"]
    for row in report["files"]:
        files.append(f"  {row['what']}: {row['shown']}: {row['path']}")
        files += commands_apart(row["note"], indent="    ")  # each command alone on its line, to copy whole
    plan = Table(title="stage plan", title_justify="left")
    plan.add_column("stage", no_wrap=True)
    plan.add_column("key", no_wrap=True)
    plan.add_column("status")
    plan.add_column("what")
    for row in report["plan"]:
        plan.add_row(row["stage"], row["key"] or "—", row["status"], row["doc"])
    folder = [f"run folder: {run['folder']}",
              "  finished (result.json exists); running again re-reads every stage" if run["finished"] else
              "  not finished"] + [Text(note) for note in report["notes"]]  # prose: wraps
    splits = report.get("splits")
    return ([config, *below, *files, plan, *folder]
            + ([split_table(splits)] if splits and splits["stages"] else []))


def missing_items(rows: list[dict]) -> list:
    """Every missing input (``dryrun.missing_inputs``) as items for ``show``: 'missing: what (path)' and its fix,
    each command on a line of its own."""
    from rich.text import Text

    items = []
    for row in rows:
        fix = row["note"].split("missing; fix: ", 1)[-1]
        items += commands_apart(f"{row['what']} ({row['path']}): {fix}", lead=Text.assemble(("missing: ", "bold red")))
    return items


def split_table(splits: dict) -> Table:
    """The Stanford Dogs splits of a paper-protocol run (dryrun.split_report): per training stage, the
    official script whose split it reads, the sizes, and the share of its test images that an earlier
    stage trained on."""
    from ..data.specs import STAGE_SPLITS

    t = Table(title=f"Stanford Dogs splits — dogs_split={splits['dogs_split']}, data_seed {splits['seed']}, "
                    f"{splits['images']:,} images", title_justify="left")
    for col in ("stage", "split (official script)", "train", "test", "its test images an earlier stage trained on"):
        t.add_column(col, justify="right" if col in ("train", "test") else "left")
    for stage, row in splits["stages"].items():
        seen = row["seen"]
        text = ", ".join(f"{100 * share:.1f}% by {'any earlier stage' if who == 'any' else who}"
                         for who, share in seen.items()) or "— (the first stage)"
        split = (f"{row['split']} ({STAGE_SPLITS[row['split']]})" if splits["dogs_split"] == "per-stage"
                 else "the one split of every stage")
        t.add_row(stage, split, f"{row['n_train']:,}", f"{row['n_test']:,}", text)
    return t


DEMO_MAIN = (("target acc (%)", "target_acc"), ("source acc after (%)", "source_acc_after"),
             ("drop (points)", "source_drop"), ("hardest 10 % (%)", "hard10_acc"))
DEMO_MORE = (("source acc before (%)", "source_acc_before"), ("agreement (%)", "source_agreement"),
             ("KL (nats)", "source_kl"))


def demo_table(results: list[dict]) -> Group:
    """The demo's summary, mean ± sample std over seeds (the numbers `flowvision table` prints), as two
    tables that each fit 100 columns: what the demo compares (target accuracy, source accuracy after
    fine-tuning, its drop, the hardest 10% of test samples), then the source accuracy before fine-tuning
    and forgetting measured two more ways (agreement and KL with the pre-trained model's predictions)."""
    import pandas as pd

    from .runs import fmt_summary, summarise

    summary = summarise(pd.DataFrame(results))
    order = list(dict.fromkeys(r["method"] for r in results))
    rows = [row for _, row in summary.sort_values("method", key=lambda m: m.map(order.index)).iterrows()]
    tables = []
    for title, columns, seeds in (("flowvision demo — mean ± std over seeds", DEMO_MAIN, True),
                                  ("the same runs: source before, agreement, KL", DEMO_MORE,
                                   False)):
        t = Table(title=title, title_justify="left")
        t.add_column("method", no_wrap=True)
        if seeds:
            t.add_column("seeds", justify="right")
        for header, _ in columns:
            t.add_column(header, justify="right")
        for row in rows:
            label = row["method"] if row["protocol"] == "clean" else f"{row['method']} ({row['protocol']} protocol)"
            t.add_row(label, *([str(row["n_seeds"])] if seeds else []), *(fmt_summary(row, m) for _, m in columns))
        tables.append(t)
    return Group(*tables)


def paired_drops(results: list[dict], a: str = "ft", b: str = "flow") -> dict:
    """Per seed, ``a``'s source drop minus ``b``'s in points (the same seed: the same data order, head
    seed and source model), and ``stats.paired_t`` over the seeds both ran; also the target accuracy
    cost (b's target accuracy below a's). Seeds are paired because the seed-to-seed spread of each
    method is larger than the gap between them; the difference within a seed is much steadier."""
    from ..core.stats import paired_t

    by = {(r["method"], r["seed"]): r for r in results}
    seeds = sorted(s for m, s in by if m == a and (b, s) in by)
    drops = [100 * (by[a, s]["source_drop"] - by[b, s]["source_drop"]) for s in seeds]
    costs = [100 * (by[a, s]["target_acc"] - by[b, s]["target_acc"]) for s in seeds]
    ratio = [by[b, s]["source_drop"] / by[a, s]["source_drop"] for s in seeds if by[a, s]["source_drop"]]
    return {"a": a, "b": b, "seeds": seeds, "diffs": drops, "drop": paired_t(drops), "cost": paired_t(costs),
            "ratio": paired_t(ratio) if ratio else None}


def paired_text(p: dict) -> str:
    """One paragraph: the per-seed differences, their mean with the 95% t-interval, and what it says."""
    d, c = p["drop"], p["cost"]
    per_seed = ", ".join(f"{v:+.1f}" for v in p["diffs"])
    if d["n"] < 2:
        return f"{p['a']} − {p['b']} drop difference (seed {p['seeds'][0]}): {d['mean']:+.2f} points; one seed, no interval"
    verdict = (f"{p['b']} forgets less than {p['a']}" if d["lo"] > 0 else
               f"{p['b']} forgets more than {p['a']}" if d["hi"] < 0 else
               f"the interval includes 0: {p['a']} and {p['b']} not distinguishable at 95% with {d['n']} seeds")
    ratio = p["ratio"]
    share = (f"; {p['b']}'s drop is {100 * ratio['mean']:.0f}% of {p['a']}'s "
             f"(95% CI {100 * ratio['lo']:.0f}–{100 * ratio['hi']:.0f}%)") if ratio and ratio["n"] > 1 else ""
    return (f"paired over seeds {' '.join(map(str, p['seeds']))}: drop({p['a']}) − drop({p['b']}) = {per_seed} points; "
            f"mean {d['mean']:+.2f}, 95% t-interval [{d['lo']:+.2f}, {d['hi']:+.2f}] (n = {d['n']}): {verdict}{share}. "
            f"Target cost of {p['b']}: {c['mean']:+.2f} points [{c['lo']:+.2f}, {c['hi']:+.2f}].")


def demo_workers(n_runs: int, device: str = "cpu") -> int:
    """How many processes the demo runs on: on the CPU one per thread this process may use
    (OMP_NUM_THREADS, else the cores), at most one per run. Each computes with one thread: on 2 cores two
    32-px runs side by side use them better than one run on two threads, and the numbers do not depend
    on the thread count. On a GPU the runs go one after the other in this process, as any run. The count
    is read from the environment, not from torch (``device_type`` imports torch only for ``auto``)."""
    import os
    import re

    from ..core.distributed import device_type, usable_cores

    given = re.match(r"\s*(\d+)", os.environ.get("OMP_NUM_THREADS", ""))  # "2,1" (nested levels): the first
    threads = int(given.group(1)) if given and int(given.group(1)) > 0 else usable_cores()
    return max(1, min(threads, n_runs)) if device_type(device) == "cpu" else 1


def run_demo(dataset: str, seeds: int, methods: list[str], overrides: dict) -> list[dict]:
    """Run every (method, seed) on a synthetic task with the demo model, each with one torch thread, on
    ``demo_workers`` processes; print the comparison."""
    import time

    from ..core import config
    from ..core.distributed import device_type
    from ..core.errors import UserError
    from ..core.registry import DEMO_DATASETS, DEMO_MODEL

    if dataset not in DEMO_DATASETS:
        raise UserError(f"the demo runs on a synthetic target task: {' or '.join(DEMO_DATASETS)} (got '{dataset}')")
    from ..stages.pipeline import with_shared_probe

    cfgs = with_shared_probe([config.resolve(dataset, DEMO_MODEL, m, dict(overrides, seed=s))
                              for m in methods for s in range(seeds)])
    t0 = time.time()
    cpu = device_type(cfgs[0].device) == "cpu"
    workers = demo_workers(len(cfgs), cfgs[0].device)
    results = _demo_here(cfgs, threads=1 if cpu else None) if workers == 1 else _demo_workers(cfgs, workers)
    demo_info = results[0]["source_info"]
    out.print(demo_table(results))
    if {"ft", "flow"} <= {r["method"] for r in results}:
        out.print(paired_text(paired_drops(results)), highlight=False)
    if "demo_val_acc" in demo_info:
        recipe = demo_info["demo_recipe"]
        out.print(f"demo source model: {recipe['demo_arch']} trained on {recipe['task']}, "
                  f"val accuracy {pct(demo_info['demo_val_acc'])}")
        line(f"demo source model file: {demo_info['demo_model_file']}")
    from pathlib import Path

    folders = sorted({str(Path(r["run_dir"]).parent) for r in results})
    out.print(f"{plural(len(results), 'run')} under {', '.join(folders)}: "
              f"{', '.join(Path(r['run_dir']).name for r in results)}", highlight=False)
    how = (f"{workers} processes, one torch thread each" if workers > 1 else
           "1 process, one torch thread" if cpu else "1 process")
    out.print(f"total {time.time() - t0:.0f} s ({how})")
    return results


def _demo_here(cfgs: list, threads: Optional[int]) -> list[dict]:
    """The runs one after the other in this process, with ``threads`` torch threads (None: as they are)."""
    from ..core.hardware import torch_threads
    from ..stages.run import run

    results = []
    with torch_threads(threads):
        for i, cfg in enumerate(cfgs):
            console.print(f"[bold]run {i + 1} of {len(cfgs)}[/]: {cfg.method}, seed {cfg.seed}")
            results.append(run(cfg))
    return results


def _demo_workers(cfgs: list, workers: int) -> list[dict]:
    """The runs on ``workers`` local worker processes of one torch thread each (``launch.local``: a
    stage two runs share, the source model and a seed's probe, is computed once); -> their records."""
    from pathlib import Path

    from ..core.identity import run_id
    from ..core.errors import UserError
    from ..scale.grid import result_path
    from ..scale.launch import local
    from ..stages.record import read_record

    log_dir = Path(cfgs[0].results_dir) / "logs"
    console.print(f"{len(cfgs)} runs on {workers} processes, one torch thread each (their progress: {log_dir}/local-cpu*.log)",
                  highlight=False)
    # runs that start from the probe go first: they train it, the others (which read it last) then load it
    first = sorted(cfgs, key=lambda cfg: cfg.head_init != "probe")
    summary = local([(cfg, run_id(cfg)) for cfg in first], [None] * workers, log_dir, threads=1)
    if summary["failed"]:
        run, error = summary["failed"][0]
        raise UserError(f"demo run {run} failed: {error}")
    return [dict(read_record(result_path(cfg))[0].to_dict(), run_dir=str(result_path(cfg).parent)) for cfg in cfgs]


STATUS_ORDER = ("running", "failed", "stale", "waiting", "incomplete", "done")
STATUS_STYLE = {"running": "cyan", "failed": "red", "stale": "yellow", "waiting": "white", "incomplete": "yellow",
                "done": "green"}


def status_table(rows: list[dict], show_done: bool = False, results_dir: str = "results"):
    """The grid's state (runstate.read_states rows): counts per status in the title, then every run
    that is not done (or all with ``show_done``): running ones with their stage and epoch, failed
    ones with their error line, runs on other hosts with the time since their last update. With no
    run to list, one line instead of an empty table: that nothing runs, and where to look next."""
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUS_ORDER}
    title = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no runs"
    if not any(show_done or r["status"] != "done" for r in rows):
        where = "" if results_dir == "results" else f" --results-dir {results_dir}"
        if not rows:
            return (f"runs: none under {results_dir}/runs, nothing running; `flowvision demo` or `flowvision reproduce` "
                    "starts some")
        return (f"runs: {title}, nothing running; `flowvision table{where}` shows their results, "
                f"`flowvision status{where} --all` lists them")
    t = Table(title=f"runs: {title}", title_justify="left")
    for col in ("status", "run", "stage / epoch", "host", "updated", "error"):
        t.add_column(col, no_wrap=col in ("status", "run", "host"))
    for r in sorted(rows, key=lambda r: (STATUS_ORDER.index(r["status"]), r["run_id"])):
        if r["status"] == "done" and not show_done:
            continue
        age = "" if r["age_s"] is None else f"{r['age_s']:.0f} s ago"
        t.add_row(f"[{STATUS_STYLE[r['status']]}]{r['status']}[/]", r["run_id"], r["where"] or "",
                  r["host"] or "", age, r["error"] or "")
    return t
