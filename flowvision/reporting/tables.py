"""Tables are views of the run folders: glob ``results/runs/*/result.json``, group, print.

    flowvision table            # reads results/runs/, writes results/tables/{*.md,*.csv,*.tex}

Nothing here trains or parses logs. The paper's numbers come from ``results/paper/vision.csv``
(long format: table, model, dataset, method, metric, value, note) so every cell we reproduce
sits beside the paper's. Accuracies in ``result.json`` are fractions; every table prints percent.

Cell markers: ``—`` we have no run for this cell; ``n/a`` the paper's number is not known to us;
an empty cell does not apply (e.g. the drop of the pre-trained model).

Rows (``runs.summarise``): one row per configuration — synthetic × model × dataset × method × τ rule ×
protocol × config id (every field that can change a number but the seed). Runs of two configurations are
never averaged: a τ sweep gets a row per rule, a best-test-epoch number (``paper``) is never pooled with a
last-epoch one (``clean``), and a one-epoch smoke run never joins the real runs. The paper tables count only
runs at the paper's settings (the method's own config file and preset, ``runs.at_defaults``); runs of the
paper grid at other settings are listed below them, each with what it changes, and get their own rows in
"other runs". Every other table gives each configuration its own row, its ``settings`` column naming what
it changes from the method's defaults (empty: the defaults). Rows built from configs whose numbers are not
the model's own (ResNet-50 runs on ResNet-18 hyper-parameters) carry that note in a ``hyper-parameters``
column. Mean ± std are over seeds, std with ddof=1 (the sample std), so one seed prints ``± –``.

A paper table with no run of ours folds, when printed, into one line naming the command that fills it
(``empty_tables``); its file is still written, with the paper's numbers.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import pandas as pd

from flowvision.core.registry import PAPER_DATASETS, PAPER_METHODS, PAPER_MODELS, PROTOCOLS
from flowvision.reporting.formats import Table, write_tables
from flowvision.reporting.labels import shareable
from flowvision.reporting.runs import MISSING, NO_STD, PAPER_CSV, PARTIAL, PROTOCOL_LABELS, SUMMARY_COLUMNS, UNKNOWN, PaperNumbers, SEEDS, at_defaults, dedupe_runs, fmt_ours, fmt_paper, fmt_summary, load_paper, load_runs, preferred, six_set, summarise, variant_label




# ----------------------------------------------------------------------------------- the tables
def _variants(runs: pd.DataFrame, methods: Sequence[str]) -> list:
    """(row label, method, τ rule) for the paper's methods, then any other method present. A method
    run with several τ rules gets one row per rule, labelled 'flow [τ=median]'."""
    extra = sorted(set(runs["method"]) - set(methods))
    out = []
    for method in [*methods, *extra]:
        rules = sorted(set(runs.loc[runs["method"] == method, "tau_rule"])) or [""]
        for rule in rules:
            out.append((_label(method, rule, len(rules) > 1), method, rule))
    return out


def _eval_note(runs: pd.DataFrame, what: str = "IN-1K") -> str:
    """Which source images the runs were measured on, in words (``labels.source_label``: a subset of IN-1K val,
    or photos of some of its classes, is not the paper's 50,000 images)."""
    evals = sorted(set(runs["source_eval_name"].dropna().astype(str))) if "source_eval_name" in runs else []
    return f" {what} accuracy measured on {'; '.join(evals)}." if evals else ""


NOTE = (f"ours: mean ± std over seeds in percent (std with ddof=1, '± {NO_STD}' for one seed); "
        f"'{MISSING}' no run of ours; '{UNKNOWN}' paper number unknown to us. agreement: share of source "
        f"images whose top-1 class is the pre-trained model's; KL: mean KL(pre-trained || after), nats; "
        f"'{PARTIAL}' measured on a folder with some of the classes only.")


def _protocols(runs: pd.DataFrame) -> list:
    """The protocols a table has columns for: clean always, paper when it has runs (in this order,
    so the paper's own column follows the paper-protocol cells)."""
    present = set(runs["protocol"]) if len(runs) else set()
    return [p for p in PROTOCOLS if p == "clean" or p in present]


def _ours(column: str, protocol: str) -> str:
    return f"{column} (ours, {PROTOCOL_LABELS[protocol]})"


def _hparams(runs: pd.DataFrame) -> str:
    """The hyper-parameter notes of some runs (e.g. ResNet-50 on ResNet-18's), '' when none."""
    notes = runs["hparams_note"].dropna() if "hparams_note" in runs else []
    return "; ".join(sorted(set(map(str, notes))))


def _model_tables(runs: pd.DataFrame, paper: PaperNumbers, model: str) -> list:
    """The two views of one model's vision table: 6-set averages, and per data set (long); every
    "ours" cell in the column of its protocol, the paper's value after the paper-protocol one."""
    runs = runs[runs["model"] == model]
    protocols = _protocols(runs)
    summary = [{"method": "pretrained"}]
    for protocol in protocols:
        pre = 100.0 * runs.loc[runs["protocol"] == protocol, "source_acc_before"].dropna()
        summary[0][_ours("IN-1K acc", protocol)] = fmt_ours(pre.mean() if len(pre) else math.nan,
                                                           pre.std(ddof=1) if len(pre) > 1 else math.nan)
    summary[0]["IN-1K acc (paper)"] = fmt_paper(paper.get(model, "imagenet", "pretrained", "in1k_acc"))
    per_set = []
    summ = summarise(runs).set_index(["dataset", "method", "tau_rule", "protocol"]) if len(runs) else None
    notes = _hparams(runs)
    for label, method, rule in _variants(runs, PAPER_METHODS):
        own = runs[(runs["method"] == method) & (runs["tau_rule"] == rule)]
        avg = {p: six_set(own[own["protocol"] == p]) for p in protocols}
        cell = {"method": label}
        for name, col, metric in (("in1k", "IN-1K acc", None), ("drop", "IN-1K drop", "in1k_drop"),
                                  ("target", "avg target", "target_acc"), ("average", "Average", "average")):
            for protocol in protocols:
                cell[_ours(col, protocol)] = fmt_ours(*avg[protocol].get(name, (math.nan, math.nan)))
            value = (paper.in1k_acc(model, "avg6", method) if metric is None
                     else paper.get(model, "avg6", method, metric))
            cell[f"{col} (paper)"] = _paper_cell(method, value)
        for protocol in protocols:
            cell[f"data sets ({PROTOCOL_LABELS[protocol]})"] = f"{avg[protocol]['k']}/{len(PAPER_DATASETS)}"
            cell[f"seeds ({PROTOCOL_LABELS[protocol]})"] = avg[protocol]["seeds"]
        if notes:
            cell["hyper-parameters"] = _hparams(own)
        summary.append(cell)
        for dataset in PAPER_DATASETS:
            row = {"method": label, "dataset": dataset}
            found = {}
            for protocol in protocols:
                key = (dataset, method, rule, protocol)
                found[protocol] = summ.loc[key] if summ is not None and key in summ.index else None
            for col, metric, value in (
                    ("target", "target_acc", paper.get(model, dataset, method, "target_acc")),
                    ("IN-1K acc", "source_acc_after", paper.in1k_acc(model, dataset, method)),
                    ("IN-1K drop", "source_drop", paper.get(model, dataset, method, "in1k_drop"))):
                for protocol, got in found.items():
                    row[_ours(col, protocol)] = fmt_summary(got, metric)
                row[f"{col} (paper)"] = _paper_cell(method, value)
            for col, metric in (("agreement", "source_agreement"), ("KL", "source_kl")):
                for protocol, got in found.items():
                    row[_ours(col, protocol)] = fmt_summary(got, metric)
            for protocol, got in found.items():
                row[f"n ({PROTOCOL_LABELS[protocol]})"] = int(got["n_seeds"]) if got is not None else 0
            if notes:
                row["hyper-parameters"] = _hparams(own[own["dataset"] == dataset])
            per_set.append(row)
    summary_df = pd.DataFrame(summary).fillna("")
    summary_df.attrs["note"] = (
        NOTE + " 6-set columns average the data sets we have ('data sets'); Average = mean(IN-1K "
        "acc, avg target acc); IN-1K acc (paper) = pre-trained − drop where only the drop is "
        "reported." + _PROTOCOL_NOTE + _eval_note(runs))
    per_set_df = pd.DataFrame(per_set)
    per_set_df.attrs["note"] = NOTE + _PROTOCOL_NOTE + _eval_note(runs)
    return [(f"{model}: 6-set averages vs paper", summary_df),
            (f"{model}: per data set vs paper", per_set_df)]


_PROTOCOL_NOTE = (" clean: the last epoch, static weights, official split lists; paper protocol: the official "
                  "code's choices (the best-test-epoch checkpoint, online weights; on Stanford Dogs one random split "
                  "per official script, so later stages test on images earlier ones trained on — runs with "
                  "dogs_split=single are listed apart); never pooled.")


def _table3(runs: pd.DataFrame, paper: PaperNumbers) -> Table:
    """FLOW+WiSE-FT vs WiSE-FT on the paper's Average, over the data sets both methods have."""
    rows = []
    for model in PAPER_MODELS:
        for protocol in _protocols(runs[runs["model"] == model]):
            own = runs[(runs["model"] == model) & (runs["protocol"] == protocol)]
            wise, both = preferred(own, "wiseft"), preferred(own, "flow+wiseft")
            common = set(wise["dataset"]) & set(both["dataset"]) & set(PAPER_DATASETS)
            a = six_set(wise[wise["dataset"].isin(common)]).get("average", (math.nan, math.nan))
            b = six_set(both[both["dataset"].isin(common)]).get("average", (math.nan, math.nan))
            rows.append({"model": model, "protocol": PROTOCOL_LABELS[protocol],
                         "WiSE-FT Average (ours)": fmt_ours(*a), "FLOW+WiSE-FT Average (ours)": fmt_ours(*b),
                         "Δ Average (ours)": MISSING if common == set() else f"{b[0] - a[0]:+.2f}",
                         "Δ Average (paper)": fmt_paper(paper.get(model, "avg6", "flow+wiseft", "delta_average")),
                         "data sets": f"{len(common)}/{len(PAPER_DATASETS)}"})
    frame = pd.DataFrame(rows)
    frame.attrs["note"] = (NOTE + " Δ = FLOW+WiSE-FT minus WiSE-FT, over the data sets both have; one row "
                           "per protocol." + _PROTOCOL_NOTE)
    return ("Table 3: FLOW+WiSE-FT vs WiSE-FT", frame)


TABLE5_METHODS = ("ft", "flow")  # the paper's Table 5 compares these two


def table5(runs: Optional[pd.DataFrame] = None, paper_csv: Path = PAPER_CSV) -> Table:
    """Table 5, accuracy on the hardest 10% of the test samples (highest pre-trained loss), ours
    beside the paper's: one row per data set × model × method (× τ rule) × protocol that has the
    number (every run records it, synthetic ones included), and a row for each of the paper's cells
    we have no run for. ``runs``: ``dedupe_runs`` output (None: the paper's rows only). The paper does
    not name the model, so its number stands beside every model's row of its data set and method."""
    paper = load_paper(paper_csv)
    t5 = PaperNumbers(paper[paper["table"] == "Table 5"])
    paper_sets = list(dict.fromkeys(paper.loc[paper["table"] == "Table 5", "dataset"]))
    have = runs[runs["hard10_acc"].notna()] if runs is not None and len(runs) else None
    summ = summarise(have) if have is not None and len(have) else pd.DataFrame(columns=list(SUMMARY_COLUMNS))
    counts = have.groupby("dataset")["hard10_n"].agg(lambda n: "/".join(sorted({str(int(v)) for v in n.dropna()}))) \
        if have is not None and len(have) else {}
    rows = []
    for dataset in paper_sets + sorted(set(summ["dataset"]) - set(paper_sets)):
        group = summ[summ["dataset"] == dataset]
        count = t5.get("", dataset, "", "hard10_n")
        paper_n = "" if dataset not in paper_sets else UNKNOWN if count is None else str(int(count))
        ours = list(group.itertuples(index=False))
        present = {row.method for row in ours}
        order = {m: i for i, m in enumerate([*TABLE5_METHODS, *PAPER_METHODS])}
        ours.sort(key=lambda r: (r.model, order.get(r.method, len(order)), r.method, r.tau_rule, r.settings != "", r.settings,
                                 PROTOCOLS.index(r.protocol) if r.protocol in PROTOCOLS else 9))
        for row in ours:
            several = group.loc[(group["model"] == row.model) & (group["method"] == row.method), "tau_rule"].nunique() > 1
            value = t5.get("", dataset, row.method, "hard10_acc") if dataset in paper_sets else None
            rows.append({"dataset": dataset, "model": row.model, "method": _label(row.method, row.tau_rule, several),
                         "settings": row.settings, "config": row.config_id,
                         "protocol": PROTOCOL_LABELS.get(row.protocol, row.protocol),
                         "hardest 10% (ours)": fmt_ours(row.hard10_acc_mean, row.hard10_acc_std),
                         "hardest 10% (paper)": fmt_paper(value) if row.method in TABLE5_METHODS and dataset in paper_sets
                         else "",
                         "all test (ours)": fmt_ours(row.target_acc_mean, row.target_acc_std),
                         "# hard (ours)": counts.get(dataset, ""),
                         "# hard (paper)": paper_n, "seeds": row.seeds})
        for method in TABLE5_METHODS if dataset in paper_sets else ():
            if method not in present:
                rows.append({"dataset": dataset, "model": MISSING, "method": method, "settings": "", "config": "",
                             "protocol": "",
                             "hardest 10% (ours)": MISSING,
                             "hardest 10% (paper)": fmt_paper(t5.get("", dataset, method, "hard10_acc")),
                             "all test (ours)": MISSING, "# hard (ours)": "", "# hard (paper)": paper_n,
                             "seeds": ""})
    columns = ["dataset", "model", "method", "settings", "config", "protocol", "hardest 10% (ours)", "hardest 10% (paper)",
               "all test (ours)", "# hard (ours)", "# hard (paper)", "seeds"]
    frame = pd.DataFrame(rows, columns=columns)
    absent = int(runs["hard10_acc"].isna().sum()) if runs is not None and len(runs) else 0
    frame.attrs["note"] = (
        (f"{absent} run(s) have no hardest-10% number: a standalone standard fine-tuning trains no linear probe "
         "(`flowvision finetune` with `--set hard10=true` measures it; a grid with a FLOW run shares its probe). " if absent else "") +
        "Accuracy (percent) on the test samples with the highest loss under the pre-trained model (the linear "
        "probe: pre-trained backbone, head fitted to the task), 10% of the test set (evaluate.hard_count). Ours: "
        "mean ± std over seeds, each seed ranked by its own probe; 'all test' is the same runs' full test accuracy. "
        "The paper does not name the model; its number stands beside every model's row. One row per configuration "
        "(settings: what it changes from the method's defaults). " + NOTE)
    return ("Table 5: hardest 10% of test samples, ours beside the paper", frame)


def _runs_table(runs: pd.DataFrame, title: str) -> Table:
    """Runs outside the paper tables (synthetic demo, own models or data sets, the paper grid off its
    settings): one row per configuration — model × dataset × method (× τ rule when it varies) × protocol ×
    settings — with all four accuracies; ``settings`` names what a row changes from the method's defaults."""
    summ = summarise(runs)
    rows = []
    for (model, dataset), group in summ.groupby(["model", "dataset"], sort=True):
        several = group.groupby(["method", "protocol"])["tau_rule"].transform("nunique") > 1
        group = group.assign(_several=several.values, _off=group["settings"] != "", _rank=group["method"].map(_rank))
        for _, row in group.sort_values(["_rank", "method", "tau_rule", "protocol", "_off", "settings"],
                                        kind="stable").iterrows():
            rows.append({"model": model, "dataset": dataset, "method": _label(row["method"], row["tau_rule"], row["_several"]),
                         "settings": row["settings"], "config": row["config_id"],
                         "protocol": PROTOCOL_LABELS.get(row["protocol"], row["protocol"]),
                         "target acc": fmt_summary(row, "target_acc"),
                         "source acc before": fmt_summary(row, "source_acc_before"),
                         "source acc after": fmt_summary(row, "source_acc_after"),
                         "source drop": fmt_summary(row, "source_drop"),
                         "agreement": fmt_summary(row, "source_agreement"),
                         "KL": fmt_summary(row, "source_kl"),
                         "n": int(row["n_seeds"])})
    frame = pd.DataFrame(rows)
    frame.attrs["note"] = NOTE + SETTINGS_NOTE + _eval_note(runs, "source")
    return (title, frame)


SETTINGS_NOTE = (" One row per configuration, never several pooled: settings = what it changes from the method's "
                 "own (configs/ file + preset), empty at the defaults; config = its id (runs of one id differ only "
                 "in seed).")


def paper_tables(df_runs: pd.DataFrame, paper_csv: Path = PAPER_CSV) -> list:
    """All views, as [(title, DataFrame)]: per paper model its 6-set-average table and per-data-set
    table (ours beside paper), Table 3 (FLOW+WiSE-FT vs WiSE-FT) — these from runs at the paper's settings
    only —, Table 5 (every configuration with the number, synthetic ones included, beside the paper's),
    then, each only when such runs exist: the paper grid's runs at other settings (what each changes), a
    table of synthetic runs and one of other real runs (every configuration its own row)."""
    paper = PaperNumbers(load_paper(paper_csv))
    runs = (shareable(dedupe_runs(df_runs)) if len(df_runs)
            else df_runs.assign(tau_rule="", synthetic=False, config_id="", settings=""))
    real = runs[~runs["synthetic"].astype(bool)]
    grid = real[real["model"].isin(PAPER_MODELS) & real["dataset"].isin(PAPER_DATASETS)]
    at_paper = at_defaults(grid)
    tables = []
    for model in PAPER_MODELS:
        tables += _model_tables(at_paper, paper, model)
    tables += [_table3(at_paper, paper), table5(runs, paper_csv)]
    off = grid.drop(at_paper.index)
    if len(off):
        tables.append(_off_settings(off))
    demo = runs[runs["synthetic"].astype(bool)]
    if len(demo):
        tables.append(_runs_table(demo, "demo: synthetic tasks"))
    other = real.drop(at_paper.index)
    if len(other):
        tables.append(_runs_table(other, "other runs (outside the paper grid or off its settings)"))
    return tables


def _off_settings(runs: pd.DataFrame) -> Table:
    """The paper grid's runs that the paper tables leave out, one row per configuration, and why."""
    summ = summarise(runs)
    frame = pd.DataFrame([{"model": r.model, "dataset": r.dataset, "method": _label(r.method, r.tau_rule, False),
                           "protocol": PROTOCOL_LABELS.get(r.protocol, r.protocol), "settings": r.settings,
                           "config": r.config_id, "seeds": r.seeds,
                           "why left out": "not the paper's settings (configs/<model>/<dataset>.yaml and the "
                                           "method's preset); its numbers are under 'other runs'"}
                          for r in summ.itertuples(index=False)])
    frame.attrs["note"] = ("settings: what the configuration changes from the method's own (config file + preset). "
                           "The paper tables above count only runs at the paper's settings.")
    return ("paper grid runs off the paper's settings (left out of the paper tables)", frame)


def _label(method: str, rule: str, several: bool) -> str:
    """A row's method label: ``runs.variant_label`` ('flow [τ=p25]' where the method has several τ rules; the
    settings have a column), NOT_IN_PAPER after a method the paper does not report."""
    return variant_label(method, rule, several) + (NOT_IN_PAPER if method not in PAPER_METHODS else "")


NOT_IN_PAPER = " (not in the paper)"


def _rank(method: str) -> int:
    """Row order: the paper's methods in its order, then every other method (after them, by name)."""
    return PAPER_METHODS.index(method) if method in PAPER_METHODS else len(PAPER_METHODS)


def _paper_cell(method: str, value) -> str:
    """The paper's number, 'n/a' where the paper has the method but we lack its number, empty for a method
    the paper does not report."""
    return fmt_paper(value) if method in PAPER_METHODS else ""


def empty_tables(tables: Sequence[Table]) -> list:
    """Titles of the paper tables (6-set, per data set, Table 3) without a single number of ours."""
    out = []
    for title, frame in tables:
        ours = [c for c in frame.columns if "(ours" in str(c)]
        if ours and title.startswith(PAPER_TABLE_PREFIXES) and frame[ours].isin([MISSING, "", f"0/{len(PAPER_DATASETS)}"]).all().all():
            out.append(title)
    return out


PAPER_TABLE_PREFIXES = tuple(f"{m}: " for m in PAPER_MODELS) + ("Table 3",)


def missing_commands(df_runs: pd.DataFrame, models: Sequence[str] = PAPER_MODELS,
                     datasets: Sequence[str] = PAPER_DATASETS, methods: Sequence[str] = PAPER_METHODS,
                     seeds: Sequence[int] = SEEDS) -> list:
    """The ``flowvision finetune`` commands that would fill every missing model × dataset ×
    method × seed cell of the paper grid (any τ rule counts as present; only clean-protocol runs at the
    paper's settings, the default, fill these cells), in table order."""
    have = set()
    if len(df_runs):
        real = at_defaults(df_runs[~df_runs["synthetic"].astype(bool)])
        real = real[real["protocol"].where(real["protocol"].notna(), "clean") == "clean"]
        have = set(zip(real["model"], real["dataset"], real["method"], real["seed"].astype(int)))
    return [f"flowvision finetune --dataset {d} --model {m} --method {meth} --seed {s}"
            for m in models for d in datasets for meth in methods for s in seeds
            if (m, d, meth, int(s)) not in have]




def make_tables(results_dir: Path, out_dir: Optional[Path] = None,
                paper_csv: Path = PAPER_CSV) -> tuple:
    """What ``flowvision table`` does: load runs, build every view, write them, and write the
    reproducibility ledger ``<results_dir>/REPRODUCIBILITY.md`` (``ledger``).
    Returns (tables, written paths, missing commands)."""
    from ..core.files import atomic_write_text
    from .ledger import ledger

    runs = load_runs(results_dir)
    tables = paper_tables(runs, paper_csv)
    paths = write_tables(tables, Path(results_dir) / "tables" if out_dir is None else out_dir)
    book = Path(results_dir) / "REPRODUCIBILITY.md"
    atomic_write_text(book, ledger(dedupe_runs(runs, warn=False) if len(runs) else runs, paper_csv))
    return tables, paths + [book], missing_commands(runs)
