"""The reproducibility ledger: ``results/REPRODUCIBILITY.md``, written by ``flowvision table``.

For every number in ``results/paper/vision.csv``: ours (mean ± std over seeds, which seeds), the
protocol, the commands that produce it, and what it was measured on. Like is compared with like: a
paper number gets an "ours" value only from real runs at the paper's settings (``runs.at_defaults``)
on the same data set (the paper's six for a six-set average), the same model family (the architecture
of the paper's model; other weights of it are named in the evidence) and one protocol per entry. The
synthetic stand-ins of the demo never stand in a paper row: they get a section of their own, since they
test the mechanism, not the paper's number. Every suggested command runs what it says (one command per τ
rule: a ``--set`` key given twice is an error).
"""
from __future__ import annotations

import math
from datetime import datetime, timezone

import pandas as pd

from ..core.registry import MODEL_TAGS, PAPER_DATASETS
from .runs import MISSING, PAPER_CSV, PROTOCOL_LABELS, at_defaults, fmt_ours, load_paper, preferred, six_set

FULL_IN1K = 50_000
METRIC_NAMES = {"in1k_acc": "IN-1K acc", "in1k_drop": "IN-1K drop", "target_acc": "target acc",
                "average": "Average", "delta_average": "Δ Average", "hard10_acc": "hardest-10% acc",
                "hard10_n": "# hardest 10%"}
COLUMN = {"in1k_acc": "source_acc_after", "in1k_drop": "source_drop", "target_acc": "target_acc",
          "hard10_acc": "hard10_acc"}
SIX_SET = {"in1k_acc": "in1k", "in1k_drop": "drop", "target_acc": "target", "average": "average"}
WHERE = " --imagenet /data/imagenet/val --data-root /data"  # where the commands look for the real inputs


def _evidence(runs: pd.DataFrame) -> str:
    """What some real runs were measured on, in words."""
    tags = set(runs["weights"].dropna().astype(str))
    real_weights = bool(tags) and tags <= set(MODEL_TAGS.values())
    sizes = set(runs["source_eval_images"].dropna().astype(int))
    full = sizes == {FULL_IN1K} and not runs["source_eval_partial"].eq(True).any()
    if real_weights and full:
        return f"real data, real weights ({', '.join(sorted(tags))}), full IN-1K val"
    parts = [] if real_weights else [f"other weights ({', '.join(sorted(tags)) or 'unknown'})"]
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


def commands(model: str, datasets: str, methods: str, seeds: int, protocol: str = "clean",
             rules: tuple = (), sets: str = "") -> list:
    """The ``flowvision reproduce`` commands that produce a number: one per τ rule off the default (a
    sweep is several commands, never a repeated ``--set``); ``sets``: the ``--set`` options of a configuration
    off the method's defaults (``_sets``)."""
    base = f"flowvision reproduce --model {model} --datasets {datasets} --methods {methods} --seeds {seeds}"
    base += ("" if model == "demo" else WHERE) + (" --set protocol=paper" if protocol == "paper" else "")
    base += f" {sets}" if sets else ""
    out = []
    for rule in rules or ("",):
        command = base if rule in ("", "median") else f"{base} --set tau={rule}"
        out += [command] if command not in out else []
    return out


def _family(runs: pd.DataFrame, model: str) -> pd.DataFrame:
    """Runs of the paper model's architecture (``resnet50``, ``resnet50.ram_in1k``, other resnet50 weights)."""
    return runs[runs["model"].astype(str).str.split(".").str[0] == model]


def _entry(row, runs: pd.DataFrame):
    """(ours as text, the runs used, --datasets, --methods) for one paper number from one protocol's real
    runs at the paper's settings, or None when none gives it."""
    metric, method = row.metric, row.method
    if row.model:
        runs = _family(runs, row.model)
    if runs.empty:
        return None
    if row.dataset == "imagenet" and metric == "in1k_acc":  # the pre-trained model's own source accuracy
        per_seed = runs.drop_duplicates(["model", "seed"])
        return (_pm(100 * per_seed["source_acc_before"]), per_seed, ",".join(sorted(set(per_seed["dataset"]))),
                ",".join(sorted(set(per_seed["method"]))))
    if row.dataset == "avg6":
        runs = runs[runs["dataset"].isin(PAPER_DATASETS)]
        if metric == "delta_average":
            wise, both = preferred(runs, "wiseft"), preferred(runs, "flow+wiseft")
            common = set(wise["dataset"]) & set(both["dataset"])
            if not common:
                return None
            a = six_set(wise[wise["dataset"].isin(common)])["average"][0]
            b = six_set(both[both["dataset"].isin(common)])["average"][0]
            used = pd.concat([wise, both])
            used = used[used["dataset"].isin(common)]
            return (f"{b - a:+.2f} over {len(common)}/{len(PAPER_DATASETS)} sets", used, ",".join(sorted(common)),
                    "wiseft,flow+wiseft")
        own = preferred(runs, method)
        if own.empty:
            return None
        mean, std = six_set(own)[SIX_SET[metric]]
        return f"{fmt_ours(mean, std)} over {six_set(own)['k']}/{len(PAPER_DATASETS)} sets", own, "paper", method
    runs = runs[runs["dataset"] == row.dataset]
    if metric == "hard10_n":
        own = runs[runs["hard10_n"].notna()]
        if own.empty:
            return None
        counts = sorted({int(v) for v in own["hard10_n"]})
        return "/".join(map(str, counts)), own, row.dataset, ",".join(sorted(set(own["method"])))
    own = preferred(runs, method)
    if own.empty or own[COLUMN[metric]].dropna().empty:
        return None
    return _pm(100 * own[COLUMN[metric]]), own, row.dataset, method


def _paper_rows(paper: pd.DataFrame, real: pd.DataFrame) -> list:
    lines = ["| paper number | paper | ours | protocol | seeds | evidence | command |", "|---|---|---|---|---|---|---|"]
    for row in paper.itertuples(index=False):
        name = " · ".join(p for p in (row.table, row.model or "model not named", row.dataset,
                                      row.method or "—", METRIC_NAMES.get(row.metric, row.metric)) if p)
        value = f"{int(row.value)}" if row.metric == "hard10_n" else f"{row.value:.2f}"
        found = []
        for protocol in PROTOCOL_LABELS:
            got = _entry(row, real[real["protocol"] == protocol])
            if got is not None:
                text, used, datasets, methods = got
                model = row.model or ",".join(sorted(set(used["model"].astype(str))))
                cmds = commands(model, datasets, methods, used["seed"].nunique(), protocol,
                                tuple(sorted(set(used["tau_rule"]))))
                found.append((text, PROTOCOL_LABELS[protocol], _seeds(used), _evidence(used), cmds))
        if not found and row.method == "pretrained":  # every run measures the pre-trained model; lp costs least
            found = [(MISSING, "", "0", "no run", commands(row.model or "resnet18", "cifar10", "lp", 1))]
        elif not found:
            datasets = "paper" if row.dataset == "avg6" else row.dataset
            methods = {"delta_average": "wiseft,flow+wiseft"}.get(row.metric, row.method or "ft,flow")
            found = [(MISSING, "", "0", "no run", commands(row.model or "resnet18", datasets, methods, 3))]
        for ours, protocol, seeds, evidence, cmds in found:
            shown = "<br>".join(f"`{c}`" for c in cmds)
            lines.append(f"| {name} | {value} | {ours} | {protocol} | {seeds} | {evidence} | {shown} |")
    return lines


def _stand_in_rows(synthetic: pd.DataFrame) -> list:
    """The demo's synthetic runs, one row per model × data set × method × τ rule × protocol × settings."""
    if synthetic.empty:
        return ["No synthetic runs."]
    lines = ["| data set | model | method | protocol | settings | seeds | target acc | source drop | hardest-10% acc | command |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    keys = ["dataset", "model", "method", "tau_rule", "protocol", "config_id"]
    for (dataset, model, method, rule, protocol, _), runs in synthetic.groupby(keys, sort=True):
        label = f"{method} [τ={rule}]" if rule else method
        settings = runs["settings"].iloc[0]
        sets = _sets(runs) if settings else ""
        cmds = ([] if sets is None else
                commands(model, dataset, method, runs["seed"].nunique(), protocol, (rule,) if rule else (), sets))
        cmds = [f"`{c}`" for c in cmds] or ["its configuration is not recorded (a record older than schema 5)"]
        lines.append(f"| {dataset} | {model} | {label} | {PROTOCOL_LABELS.get(protocol, protocol)} | {settings or 'defaults'} "
                     f"| {_seeds(runs)} | {_pm(100 * runs['target_acc'])} | {_pm(100 * runs['source_drop'])} "
                     f"| {_pm(100 * runs['hard10_acc'])} | {'<br>'.join(cmds)} |")
    return lines


def _sets(runs: pd.DataFrame):
    """The ``--set key=value`` options that turn a method's defaults into the configuration of ``runs`` (one
    configuration: its record's ``config``), or None where the records do not hold their configuration."""
    from ..core.config import resolve
    from ..core.errors import UserError
    from ..core.identity import keyed_values, set_text
    from .runs import NOT_SETTINGS

    row = runs.iloc[0]
    config = row["config"] if "config" in runs else None
    if not isinstance(config, dict):
        return None
    try:
        base = keyed_values(resolve(str(row["dataset"]), str(row["model"]), str(row["method"]),
                                    {"protocol": str(row["protocol"])}))
    except (UserError, TypeError, ValueError):
        return None
    return " ".join(f"--set {k}={set_text(v)}" for k, v in config.items()
                    if k not in NOT_SETTINGS and v != base.get(k, v))


def ledger(runs: pd.DataFrame, paper_csv=PAPER_CSV) -> str:
    """REPRODUCIBILITY.md's text from ``runs.dedupe_runs`` output."""
    paper = load_paper(paper_csv)
    if len(runs) == 0:
        runs = pd.DataFrame(columns=["synthetic", "protocol", "model", "dataset", "method", "seed", "tau_rule",
                                     "settings", "config_id", "weights", "source_eval_images", "source_eval_partial",
                                     "source_eval", "hard10_n"])
    synthetic = runs["synthetic"].astype(bool)
    real = at_defaults(runs[~synthetic])
    off = runs[~synthetic].drop(real.index)
    lines = ["# Reproducibility ledger", "",
             f"Written by `flowvision table` ({datetime.now(timezone.utc).isoformat(timespec='seconds')}) from the run "
             "records under `results/runs`. One row per paper number (`results/paper/vision.csv`) and per protocol we "
             "ran it under. *ours*: mean ± std over seeds in percent (std with ddof=1), only from real runs at the "
             "paper's settings on the same data set(s) and model family. *evidence*: real data and the paper's weights "
             "with the full IN-1K val verify the paper's number; anything else is named. A row with no run says what "
             "to run.", ""]
    lines += _paper_rows(paper, real)
    lines += ["", "## Synthetic stand-ins (not the paper's numbers)", "",
              "The demo's runs: a synthetic target task, the demo model, shapes val in place of IN-1K. They test the "
              "mechanism (does FLOW forget less than FT here?), not any number above.", ""]
    lines += _stand_in_rows(runs[synthetic])
    if len(off):
        lines += ["", f"{len(off)} real run(s) off the paper's settings are not counted above "
                      f"({', '.join(sorted(set(off['settings'].astype(str))))}); `flowvision table` lists them."]
    return "\n".join(lines) + "\n"
