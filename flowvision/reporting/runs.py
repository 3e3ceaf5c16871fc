"""Runs as a frame: every ``results/runs/*/result.json`` read through the record schema, grouped, summarised
over seeds, and formatted; and the paper's own numbers (``results/paper/vision.csv``) to look up beside them.

The views built on this (``tables``: the paper's tables, Table 5, the demo and other runs; ``ledger``:
REPRODUCIBILITY.md; the demo's report) share these pieces, so a number means the same thing in all of them.
Accuracies in ``result.json`` are fractions; everything summarised here is in percent (KL in nats).

Cell markers: ``—`` we have no run for this cell; ``n/a`` the paper's number is not known to us;
an empty cell does not apply (e.g. the drop of the pre-trained model).
"""
from __future__ import annotations

import functools
import logging
import math
from pathlib import Path
from typing import Optional

import pandas as pd

from flowvision.core.console import plural
from flowvision.core.errors import UserError
from flowvision.stages.record import COLUMNS as RECORD_COLUMNS
from flowvision.stages.runfolder import records as run_records
from flowvision.core.registry import PAPER_DATASETS, is_synthetic

log = logging.getLogger(__name__)

SEEDS = (0, 1, 2)
PAPER_CSV = Path(__file__).resolve().parents[2] / "results" / "paper" / "vision.csv"

MISSING = "—"   # no run of ours for this cell
UNKNOWN = "n/a"  # the paper's number is not known to us
NO_STD = "–"     # std of a single seed (ddof=1 leaves it undefined)

METRICS = ("target_acc", "source_acc_before", "source_acc_after", "source_drop", "source_agreement", "source_kl",
           "hard10_acc")
NOT_PERCENT = ("source_kl",)  # nats; every other metric is a fraction shown in percent
PARTIAL = "‡"    # measured on a folder with some of the classes only (a labelled sample)
GROUP_KEYS = ("synthetic", "model", "dataset", "method", "tau_rule", "protocol")
ROW_KEYS = (*GROUP_KEYS, "config_id")  # a table row: one configuration, never several pooled
PROTOCOL_LABELS = {"clean": "clean", "paper": "paper protocol"}  # how a column names its protocol
# The run record's columns (its dict fields are flattened into "field.key" columns), plus the run folder.
RUN_COLUMNS = (*RECORD_COLUMNS, "run_dir", "settings")
SUMMARY_COLUMNS = (*ROW_KEYS, "settings", "n_seeds", "seeds", "partial",
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
    records, notes, configs = [], [], []
    for run_dir, record, record_notes in run_records(Path(results_dir)):  # a file that is no record: one warning
        notes += record_notes
        values = dict(record.to_dict(), run_dir=str(run_dir))
        configs.append(_settings_dict(values.pop("config"), run_dir))  # a dict column, not flattened
        records.append(values)
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
    df["config"] = pd.Series(configs, index=df.index, dtype=object)
    df["config_id"] = df["config_id"].where(df["config_id"].notna(), "").astype(str)
    df["protocol"] = df["protocol"].where(df["protocol"].notna(), "clean")  # no protocol field: a clean run
    if df["synthetic"].isna().any():  # older records: infer from the task name
        df["synthetic"] = df["synthetic"].where(df["synthetic"].notna(), df["dataset"].map(is_synthetic))
    df["synthetic"] = df["synthetic"].astype(bool)
    df["seed"] = df["seed"].astype(int)
    for column in METRICS:
        df[column] = pd.to_numeric(df[column], errors="coerce")
    df["tau_rule"] = df["tau_rule"].map(_tau_key).astype(object)
    df["settings"] = _settings(df)
    return df.sort_values(["model", "dataset", "method", "seed"], kind="stable").reset_index(drop=True)


def _tau_key(value) -> str:
    """τ rule as a grouping key: '' for methods without τ, the rule's text otherwise."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def dedupe_runs(df: pd.DataFrame, warn: bool = True) -> pd.DataFrame:
    """Normalised keys, and one run per configuration and seed. Sweep runs (``sweep`` set: a frontier's
    learning rates, epochs and τ off the method's defaults) are left out, so they never replace or pool
    with a method's own runs. Two runs of one configuration and seed are the same run written twice
    (e.g. copied folders): the newest counts and the others are named in one warning. Runs of different
    configurations are never dropped for each other: each configuration is its own row downstream."""
    df = df.copy()
    df["tau_rule"] = df["tau_rule"].map(_tau_key).astype(object)
    df["protocol"] = df["protocol"].where(df["protocol"].notna(), "clean").astype(object)
    df["synthetic"] = df["synthetic"].astype(bool)
    for column, empty in (("config_id", ""), ("settings", "")):
        df[column] = df[column].where(df[column].notna(), empty).astype(str) if column in df else empty
    if "sweep" in df and df["sweep"].notna().any():  # frontier points off a method's defaults: their own view
        log.info("leaving out %d sweep runs (flowvision frontier shows them)", int(df["sweep"].notna().sum()))
        df = df[df["sweep"].isna()]
    df = df.sort_values("created", na_position="first", kind="stable")
    dup = df.duplicated([*ROW_KEYS, "seed"], keep="last")
    if dup.any() and warn:
        log.warning("%d run folders repeat a configuration and seed of a newer one; the newest counts, these "
                    "do not: %s", int(dup.sum()), ", ".join(map(str, df.loc[dup, "run_dir"])))
    return df[~dup]


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and std (ddof=1, NaN for one seed) over seeds, in percent, per configuration: synthetic × model ×
    dataset × method × τ rule × protocol × config id (``ROW_KEYS``); ``settings`` names what the configuration
    changes from the method's defaults ('' at the defaults), ``n_seeds`` and ``seeds`` ("0 1 2") say what
    went in. Columns: ``SUMMARY_COLUMNS`` (``target_acc_mean``, ``source_drop_std``, ...)."""
    if df.empty:
        return pd.DataFrame(columns=list(SUMMARY_COLUMNS))
    runs = dedupe_runs(df, warn=False)
    rows = []
    for key, group in runs.groupby(list(ROW_KEYS), sort=True):
        row = dict(zip(ROW_KEYS, key))
        row["settings"] = group["settings"].iloc[0]
        seeds = sorted(int(s) for s in group["seed"].unique())
        row.update(n_seeds=len(seeds), seeds=" ".join(map(str, seeds)))
        row["partial"] = bool(group["source_eval_partial"].eq(True).any())
        for metric in METRICS:
            values = (1.0 if metric in NOT_PERCENT else 100.0) * group[metric].dropna().astype(float)
            row[f"{metric}_mean"] = values.mean() if len(values) else math.nan
            row[f"{metric}_std"] = values.std(ddof=1) if len(values) > 1 else math.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


# ------------------------------------------------------------------------------- configurations
# A configuration is every field that can change a number but the seed (``config.keyed_values``, hashed
# into ``config_id``). These fields are a row's own dimensions, or say where a file lies, not what ran
# (which weights ran is the record's ``weights``): they never make a configuration a variant.
NOT_SETTINGS = ("dataset", "model", "method", "seed", "tau", "protocol", "weights")


def _settings_dict(config, run_dir: Path) -> Optional[dict]:
    """A run's configuration: the record's ``config`` (schema 5), else its folder's config.yaml (older
    records), else None (unknown)."""
    if isinstance(config, dict):
        return config
    from ..core.config import KEYED_FIELDS
    from ..stages.runfolder import read_config_values

    data = read_config_values(run_dir)  # a regular file under its size cap, or None

    return {k: data[k] for k in KEYED_FIELDS if k in data and k != "seed"} if isinstance(data, dict) else None


@functools.lru_cache(maxsize=None)
def _defaults(dataset: str, model: str, method: str, protocol: str) -> Optional[dict]:
    """The method's own configuration for this data set, model and protocol (configs/ + its preset; the
    protocol decides defaults such as Stanford Dogs' split), or None where it cannot be resolved (a name
    this flowvision does not know)."""
    from ..core.config import resolve
    from ..core.identity import keyed_values

    try:
        return keyed_values(resolve(dataset, model, method, {"protocol": protocol}))
    except (UserError, TypeError, ValueError):
        return None


def _show(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def _settings(df: pd.DataFrame) -> pd.Series:
    """Per run, what its configuration changes from its method's defaults, e.g. 'epochs=1, n_train=300'
    ('' at the defaults). Runs of one model × data set × method × τ rule × protocol whose configurations
    differ never share a label: where two would (a configuration unknown, or differing only in where the
    weights file lies), the label adds the weights that ran or the config id."""
    labels = pd.Series("", index=df.index, dtype=object)
    for _, group in df.groupby(list(GROUP_KEYS), sort=False, dropna=False):
        by_config = {}
        for index, row in group.iterrows():
            config = row["config"] if isinstance(row["config"], dict) else None
            defaults = (_defaults(str(row["dataset"]), str(row["model"]), str(row["method"]), str(row["protocol"]))
                        if config else None)
            if config is None or defaults is None:
                label = None  # unknown: named by its id when it has a sibling
            else:
                label = ", ".join(f"{k}={_show(v)}" for k, v in config.items()
                                  if k not in NOT_SETTINGS and v != defaults.get(k, v))
            by_config.setdefault(row["config_id"], (label, row["weights"], []))[2].append(index)
        if len(by_config) == 1:
            (label, _, indices), = by_config.values()
            labels[indices] = label or ""
            continue
        seen = {}
        for cid, (label, _, _) in by_config.items():
            seen.setdefault(label, []).append(cid)
        for cid, (label, weights, indices) in by_config.items():
            if label is None or len(seen[label]) > 1:
                tag = f"weights {weights}" if label is not None and weights else f"config {cid or '?'}"
                label = f"{label}, {tag}" if label else tag
            labels[indices] = label
    return labels


def at_defaults(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs at their method's own settings (``settings`` empty): the only ones a paper table counts."""
    return runs[runs["settings"].fillna("") == ""]


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


def variant_label(method: str, rule: str, several: bool, settings: str = "", n_seeds=None) -> str:
    """How a table row and a figure's legend name a configuration: 'flow [τ=p25] {epochs=1}, 3 seeds' — the τ
    rule where the method has several, the settings off the method's defaults, the seed count (each only
    when given)."""
    text = f"{method} [τ={rule or 'none'}]" if several else method
    text += f" {{{settings}}}" if settings else ""
    return text + (f", {plural(int(n_seeds), 'seed')}" if n_seeds is not None else "")
