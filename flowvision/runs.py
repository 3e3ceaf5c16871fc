"""Runs as a frame: every ``results/runs/*/result.json`` read through the record schema, grouped, summarised
over seeds, and formatted; and the paper's own numbers (``results/paper/vision.csv``) to look up beside them.

The views built on this (``tables``: the paper's tables, Table 5, the demo and other runs; ``ledger``:
REPRODUCIBILITY.md; the demo's report) share these pieces, so a number means the same thing in all of them.
Accuracies in ``result.json`` are fractions; everything summarised here is in percent (KL in nats).

Cell markers: ``—`` we have no run for this cell; ``n/a`` the paper's number is not known to us;
an empty cell does not apply (e.g. the drop of the pre-trained model).
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Optional

import pandas as pd

from flowvision.errors import UserError
from flowvision.record import COLUMNS as RECORD_COLUMNS, read_record
from flowvision.registry import PAPER_DATASETS, is_synthetic

log = logging.getLogger(__name__)

SEEDS = (0, 1, 2)
PAPER_CSV = Path(__file__).resolve().parents[1] / "results" / "paper" / "vision.csv"

MISSING = "—"   # no run of ours for this cell
UNKNOWN = "n/a"  # the paper's number is not known to us
NO_STD = "–"     # std of a single seed (ddof=1 leaves it undefined)

METRICS = ("target_acc", "source_acc_before", "source_acc_after", "source_drop", "source_agreement", "source_kl",
           "hard10_acc")
NOT_PERCENT = ("source_kl",)  # nats; every other metric is a fraction shown in percent
PARTIAL = "‡"    # measured on a folder with some of the classes only (a labelled sample)
GROUP_KEYS = ("synthetic", "model", "dataset", "method", "tau_rule", "protocol")
PROTOCOL_LABELS = {"clean": "clean", "paper": "paper protocol"}  # how a column names its protocol
# The run record's columns (its dict fields are flattened into "field.key" columns), plus the run folder.
RUN_COLUMNS = (*RECORD_COLUMNS, "run_dir")
SUMMARY_COLUMNS = (*GROUP_KEYS, "n_seeds", "seeds", "partial",
                   *(f"{m}_{s}" for m in METRICS for s in ("mean", "std")))
PAPER_COLUMNS = ("table", "model", "dataset", "method", "metric", "value", "note")


# ---------------------------------------------------------------------------------------- runs
def load_runs(results_dir: Path) -> pd.DataFrame:
    """One row per ``results_dir/runs/*/result.json``, read through the record schema; nested dicts
    flattened with ``.`` (``weight_stats.mean``, ``versions.torch``); ``wise`` stays a list;
    ``run_dir`` is added.

    Unreadable files and files that are not run records are skipped with a warning that names them.
    Records of an older schema are read with their missing fields as unknown, and one warning
    says how many and which fields. With no runs the frame is empty but has the record's columns,
    so every view downstream still works.
    """
    records, notes = [], []
    for path in sorted(Path(results_dir).glob("runs/*/result.json")):
        try:
            record, record_notes = read_record(path)
        except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            log.warning("skipping unreadable run record %s (%s)", path, err)
            continue
        notes += record_notes
        records.append(dict(record.to_dict(), run_dir=str(path.parent)))
    for note in notes[:5]:
        log.warning("%s", note)
    if len(notes) > 5:
        log.warning("... and %d more notes on older or hand-edited run records", len(notes) - 5)
    if not records:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in RUN_COLUMNS})
    df = pd.json_normalize(records, sep=".")
    for column in RUN_COLUMNS:
        if column not in df.columns:
            df[column] = None
    df["protocol"] = df["protocol"].where(df["protocol"].notna(), "clean")  # no protocol field: a clean run
    if df["synthetic"].isna().any():  # older records: infer from the task name
        df["synthetic"] = df["synthetic"].where(df["synthetic"].notna(), df["dataset"].map(is_synthetic))
    df["synthetic"] = df["synthetic"].astype(bool)
    df["seed"] = df["seed"].astype(int)
    for column in METRICS:
        df[column] = pd.to_numeric(df[column], errors="coerce")
    return df.sort_values(["model", "dataset", "method", "seed"], kind="stable").reset_index(drop=True)


def _tau_key(value) -> str:
    """τ rule as a grouping key: '' for methods without τ, the rule's text otherwise."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def dedupe_runs(df: pd.DataFrame) -> pd.DataFrame:
    """Normalised keys, and the newest run per group and seed (older reruns named, then dropped).
    Sweep runs (``sweep`` set: a frontier's learning rates, epochs and τ off the method's defaults)
    are left out, so they never replace or pool with a method's own runs."""
    df = df.copy()
    df["tau_rule"] = df["tau_rule"].map(_tau_key).astype(object)
    df["protocol"] = df["protocol"].where(df["protocol"].notna(), "clean").astype(object)
    df["synthetic"] = df["synthetic"].astype(bool)
    if "sweep" in df and df["sweep"].notna().any():  # frontier points off a method's defaults: their own view
        log.info("leaving out %d sweep runs (flowvision frontier shows them)", int(df["sweep"].notna().sum()))
        df = df[df["sweep"].isna()]
    df = df.sort_values("created", na_position="first", kind="stable")
    dup = df.duplicated([*GROUP_KEYS, "seed"], keep="last")
    if dup.any():
        log.warning("several runs share model/dataset/method/tau rule/protocol/seed; keeping the newest, "
                    "ignoring %s", ", ".join(map(str, df.loc[dup, "run_id"])))
    return df[~dup]


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and std (ddof=1, NaN for one seed) over seeds, in percent, per
    synthetic × model × dataset × method × τ rule × protocol; ``n_seeds`` and ``seeds`` ("0 1 2") say what
    went in. Columns: ``SUMMARY_COLUMNS`` (``target_acc_mean``, ``source_drop_std``, ...)."""
    if df.empty:
        return pd.DataFrame(columns=list(SUMMARY_COLUMNS))
    runs = dedupe_runs(df)
    rows = []
    for key, group in runs.groupby(list(GROUP_KEYS), sort=True):
        row = dict(zip(GROUP_KEYS, key))
        seeds = sorted(int(s) for s in group["seed"].unique())
        row.update(n_seeds=len(seeds), seeds=" ".join(map(str, seeds)))
        if "config_id" in group and group["config_id"].dropna().nunique() > 1:
            # e.g. a one-epoch smoke run beside the real ones: pooled, but never silently
            log.warning("%s pools runs of %d different configurations (epochs, lr, subset, ...): %s",
                        " / ".join(map(str, key)), group["config_id"].nunique(), ", ".join(map(str, group["run_id"])))
        row["partial"] = bool(group["source_eval_partial"].eq(True).any())
        for metric in METRICS:
            values = (1.0 if metric in NOT_PERCENT else 100.0) * group[metric].dropna().astype(float)
            row[f"{metric}_mean"] = values.mean() if len(values) else math.nan
            row[f"{metric}_std"] = values.std(ddof=1) if len(values) > 1 else math.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


# ------------------------------------------------------------------------------------ formatting
def _isnan(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def fmt_ours(mean, std, digits: int = 2) -> str:
    """'73.00 ± 3.61'; '73.00 ± –' for one seed; '—' when there is no run."""
    if _isnan(mean):
        return MISSING
    return f"{mean:.{digits}f} ± {NO_STD if _isnan(std) else f'{std:.{digits}f}'}"


def fmt_summary(row, metric: str) -> str:
    """A summary row's metric as 'mean ± std' (KL with 3 decimals), '‡' after source accuracies
    measured on a partial folder."""
    if row is None:
        return MISSING
    text = fmt_ours(row[f"{metric}_mean"], row[f"{metric}_std"], 3 if metric in NOT_PERCENT else 2)
    partial = metric in ("source_acc_before", "source_acc_after", "source_drop") and bool(row.get("partial"))
    return text + (f" {PARTIAL}" if partial and text != MISSING else "")


def fmt_paper(value) -> str:
    return UNKNOWN if _isnan(value) else f"{value:.2f}"


# ------------------------------------------------------------------------------------ paper csv
def load_paper(paper_csv: Path = PAPER_CSV) -> pd.DataFrame:
    """The paper's numbers, long format (``PAPER_COLUMNS``); ``value`` in percent (counts for
    ``hard10_n``). Blank model/method cells stay '' (Table 5 names no model)."""
    path = Path(paper_csv)
    if not path.is_file():
        raise UserError(f"paper numbers not found at {path}; pass --paper-csv or restore "
                        "results/paper/vision.csv from git")
    paper = pd.read_csv(path, keep_default_na=False, dtype={"value": float})
    missing = [c for c in PAPER_COLUMNS if c not in paper.columns]
    if missing:
        raise UserError(f"{path} lacks columns {', '.join(missing)}; expected {', '.join(PAPER_COLUMNS)}")
    return paper


class PaperNumbers:
    """Look-ups into the paper CSV; ``None`` where the paper's number is unknown to us."""

    def __init__(self, paper: pd.DataFrame):
        self.values = {}
        for row in paper.itertuples(index=False):
            self.values.setdefault((row.model, row.dataset, row.method, row.metric), float(row.value))

    def get(self, model, dataset, method, metric) -> Optional[float]:
        return self.values.get((model, dataset, method, metric))

    def in1k_acc(self, model, dataset, method) -> Optional[float]:
        """Reported IN-1K accuracy, else pre-trained minus the reported drop (the drop's definition)."""
        acc = self.get(model, dataset, method, "in1k_acc")
        drop = self.get(model, dataset, method, "in1k_drop")
        pre = self.get(model, "imagenet", "pretrained", "in1k_acc")
        if acc is None and drop is not None and pre is not None:
            acc = pre - drop
        return acc



def six_set(runs: pd.DataFrame) -> dict:
    """Averages over the paper's data sets for one model × method × τ rule.

    Returns {"in1k"|"drop"|"target"|"average": (mean, std)} in percent, plus "k" (data sets
    covered) and "seeds" (min–max seeds per data set). mean = mean over data sets of per-data-set
    means; std = sample std over the seeds run on every covered data set of that seed's average
    (NaN with fewer than two such seeds). "average" is the paper's mean(IN-1K acc, target acc).
    """
    runs = runs[runs["dataset"].isin(PAPER_DATASETS)]
    if runs.empty:
        return {"k": 0, "seeds": ""}
    per_seed = {name: 100.0 * runs.pivot_table(index="seed", columns="dataset", values=col,
                                               aggfunc="mean", dropna=False)
                for name, col in (("in1k", "source_acc_after"), ("drop", "source_drop"),
                                  ("target", "target_acc"))}
    per_seed["average"] = (per_seed["in1k"] + per_seed["target"]) / 2
    out = {}
    for name, table in per_seed.items():
        complete = table.dropna(axis=0, how="any").mean(axis=1)
        out[name] = (table.mean(axis=0).mean(),
                     complete.std(ddof=1) if len(complete) > 1 else math.nan)
    counts = runs.groupby("dataset")["seed"].nunique()
    lo, hi = int(counts.min()), int(counts.max())
    out.update(k=int(runs["dataset"].nunique()), seeds=str(lo) if lo == hi else f"{lo}–{hi}")
    return out



def preferred(runs: pd.DataFrame, method: str) -> pd.DataFrame:
    """The runs of one method, at the τ rule the paper used (none, else median, else the first)."""
    runs = runs[runs["method"] == method]
    rules = sorted(set(runs["tau_rule"]))
    for rule in ("", "median", *rules):
        if rule in rules:
            return runs[runs["tau_rule"] == rule]
    return runs


