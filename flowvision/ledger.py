"""The reproducibility ledger: ``results/REPRODUCIBILITY.md``, written by ``flowvision table``.

For every number in ``results/paper/vision.csv``: ours (mean ± std over seeds, which seeds), the
protocol, the command that produces it, and what it was measured on — the paper's real data and
weights with the full IN-1K val, real data with a stand-in for part of it (other weights, a subset or
a partial folder of IN-1K val), or only the synthetic stand-ins of the demo (shapes for IN-1K, a
synthetic target task), which test the mechanism, not the paper's number. A reader sees at a glance
what is verified.
"""
from __future__ import annotations

import math
from datetime import datetime, timezone

import pandas as pd

from .registry import MODEL_TAGS, PAPER_DATASETS
from .runs import MISSING, PAPER_CSV, PROTOCOL_LABELS, fmt_ours, load_paper, preferred, six_set

FULL_IN1K = 50_000
METRIC_NAMES = {"in1k_acc": "IN-1K acc", "in1k_drop": "IN-1K drop", "target_acc": "target acc",
                "average": "Average", "delta_average": "Δ Average", "hard10_acc": "hardest-10% acc",
                "hard10_n": "# hardest 10%"}


def _evidence(runs: pd.DataFrame) -> str:
    """What some runs were measured on, in words."""
    if runs["synthetic"].astype(bool).all():
        tasks = ", ".join(sorted(set(runs["dataset"])))
        return f"stand-ins only: synthetic {tasks}, demo model, shapes val as the source task"
    tags = set(runs["weights"].dropna().astype(str))
    real_weights = tags <= set(MODEL_TAGS.values())
    sizes = set(runs["source_eval_images"].dropna().astype(int))
    full = sizes == {FULL_IN1K} and not runs["source_eval_partial"].eq(True).any()
    if real_weights and full:
        return f"real data, real weights ({', '.join(sorted(tags))}), full IN-1K val"
    parts = [] if real_weights else [f"other weights ({', '.join(sorted(tags))})"]
    if not full:
        parts.append(f"IN-1K stand-in ({', '.join(sorted(set(runs['source_eval'].dropna().astype(str))))})")
    return "real data; " + "; ".join(parts)


def _pm(values: pd.Series, digits: int = 2) -> str:
    values = values.dropna().astype(float)
    if not len(values):
        return MISSING
    return fmt_ours(values.mean(), values.std(ddof=1) if len(values) > 1 else math.nan, digits)


def _seeds(runs: pd.DataFrame) -> str:
    seeds = sorted(set(runs["seed"].astype(int)))
    return f"{len(seeds)} ({' '.join(map(str, seeds))})"


def _command(model: str, datasets: str, methods: str, runs: pd.DataFrame, protocol: str) -> str:
    n = len(set(runs["seed"])) if len(runs) else 3
    sets = " --set protocol=paper" if protocol == "paper" else ""
    rules = sorted(set(runs["tau_rule"]) - {"", "median"}) if len(runs) else []
    sets += "".join(f" --set tau={r}" for r in rules)
    where = " --imagenet /data/imagenet/val --data-root /data" if model != "demo" else ""
    return f"flowvision reproduce --model {model} --datasets {datasets} --methods {methods} --seeds {n}{where}{sets}"


def _ours(row, runs: pd.DataFrame) -> list:
    """[(ours, protocol, seeds, evidence, command)] for one paper number, from deduped runs; one entry
    per protocol with runs, and a stand-in entry from synthetic runs when no real run has it."""
    model = MODEL_TAGS.get(row.model, row.model) if row.model else None
    real = runs[~runs["synthetic"].astype(bool)]
    demo = runs[runs["synthetic"].astype(bool)]
    out = []
    for kind, pool in (("real", real), ("stand-in", demo)):
        if kind == "stand-in" and out:
            break
        for protocol in ("clean", "paper"):
            own = pool[pool["protocol"] == protocol]
            if kind == "real" and model:
                own = own[own["model"].isin({row.model, model})]
            got = _value(row, own, kind)
            if got is None:
                continue
            text, used, datasets, methods = got
            cmd_model = "demo" if kind == "stand-in" else (row.model or ",".join(sorted(set(used["model"]))))
            out.append((text, PROTOCOL_LABELS[protocol], _seeds(used), _evidence(used),
                        _command(cmd_model, datasets, methods, used, protocol)))
    return out


def _value(row, runs: pd.DataFrame, kind: str):
    """(ours as text, the runs used, --datasets, --methods) or None when no run gives this number."""
    metric, method = row.metric, row.method
    if runs.empty:
        return None
    if row.dataset == "imagenet" and metric == "in1k_acc":  # the pre-trained model's source accuracy
        per_seed = runs.drop_duplicates(["model", "seed"])
        return (_pm(100 * per_seed["source_acc_before"]), per_seed, ",".join(sorted(set(per_seed["dataset"]))),
                ",".join(sorted(set(per_seed["method"]))))
    if row.dataset == "avg6" and metric == "delta_average":
        wise, both = preferred(runs, "wiseft"), preferred(runs, "flow+wiseft")
        common = set(wise["dataset"]) & set(both["dataset"])
        if kind == "real":
            common &= set(PAPER_DATASETS)
        if not common:
            return None
        a = _average(wise[wise["dataset"].isin(common)], kind)
        b = _average(both[both["dataset"].isin(common)], kind)
        used = pd.concat([wise, both])
        used = used[used["dataset"].isin(common)]
        return f"{b - a:+.2f} over {len(common)} set(s)", used, ",".join(sorted(common)), "wiseft,flow+wiseft"
    own = preferred(runs, method)
    if row.dataset != "avg6" and kind == "real":
        own = own[own["dataset"] == row.dataset]
    if metric == "hard10_n":
        own = runs[(runs["dataset"] == row.dataset) if kind == "real" else runs["hard10_n"].notna()]
        own = own[own["hard10_n"].notna()]
        if own.empty:
            return None
        counts = sorted({int(v) for v in own["hard10_n"]})
        return "/".join(map(str, counts)), own, ",".join(sorted(set(own["dataset"]))), ",".join(sorted(set(own["method"])))
    if own.empty:
        return None
    column = {"in1k_acc": "source_acc_after", "in1k_drop": "source_drop", "target_acc": "target_acc",
              "hard10_acc": "hard10_acc"}.get(metric)
    if row.dataset == "avg6" and kind == "real":
        avg = six_set(own)
        name = {"in1k_acc": "in1k", "in1k_drop": "drop", "target_acc": "target", "average": "average"}[metric]
        mean, std = avg[name]
        return f"{fmt_ours(mean, std)} over {avg['k']}/{len(PAPER_DATASETS)} sets", own, "paper", method
    if metric == "average":
        values = 100 * (own["source_acc_after"] + own["target_acc"]) / 2
    else:
        if own[column].dropna().empty:
            return None
        values = 100 * own[column]
    where = "" if kind == "real" else f" ({', '.join(sorted(set(own['dataset'])))})"
    return _pm(values) + where, own, ",".join(sorted(set(own["dataset"]))), method


def _average(runs: pd.DataFrame, kind: str) -> float:
    if kind == "real":
        return six_set(runs)["average"][0]
    return float((100 * (runs["source_acc_after"] + runs["target_acc"]) / 2).mean())


def ledger(runs: pd.DataFrame, paper_csv=PAPER_CSV) -> str:
    """REPRODUCIBILITY.md's text from ``runs.dedupe_runs`` output."""
    paper = load_paper(paper_csv)
    lines = ["# Reproducibility ledger", "",
             f"Written by `flowvision table` ({datetime.now(timezone.utc).isoformat(timespec='seconds')}) from the run "
             "records under `results/runs`. One row per paper number (`results/paper/vision.csv`) and per protocol we "
             "ran it under. *ours*: mean ± std over seeds in percent (std with ddof=1). *evidence*: real data and "
             "the paper's weights with the full IN-1K val verify the paper's number; anything else is marked — "
             "synthetic stand-ins (the demo) test the mechanism, not the number. A row with no run says what to run.",
             "", "| paper number | paper | ours | protocol | seeds | evidence | command |", "|---|---|---|---|---|---|---|"]
    if len(runs) == 0:
        runs = pd.DataFrame(columns=["synthetic", "protocol", "model", "dataset", "method", "seed", "tau_rule"])
    for row in paper.itertuples(index=False):
        name = " · ".join(p for p in (row.table, row.model or "model not named", row.dataset,
                                      row.method or "—", METRIC_NAMES.get(row.metric, row.metric)) if p)
        value = f"{int(row.value)}" if row.metric == "hard10_n" else f"{row.value:.2f}"
        entries = _ours(row, runs)
        if not entries:
            model = row.model or "resnet18"
            datasets = "paper" if row.dataset in ("avg6", "imagenet") else row.dataset
            methods = {"delta_average": "wiseft,flow+wiseft"}.get(row.metric, row.method or "ft,flow")
            entries = [(MISSING, "", "0", "no run", _command(model, datasets, methods, pd.DataFrame(), "clean"))]
        for ours, protocol, seeds, evidence, command in entries:
            lines.append(f"| {name} | {value} | {ours} | {protocol} | {seeds} | {evidence} | `{command}` |")
    return "\n".join(lines) + "\n"
