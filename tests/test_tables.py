"""Tables from run folders: hand-computed means and stds, paper values read from the CSV,
missing cells and the commands that fill them, an empty results folder, files that round-trip."""
import json
import logging
import math

import pandas as pd
import pytest

from flowvision.reporting import formats, runs as runframe, tables
from flowvision.core.errors import UserError
from flowvision.stages.record import RunRecord, write_record


def write_run(root, run_id, **overrides):
    """A result.json written through the record schema (fractions), with these fields set."""
    values = dict(
        run_id=run_id, dataset="cifar10", model="resnet50", weights="resnet50.ram_in1k",
        method="flow", seed=0, synthetic=False, weighting="flow", tau_rule="median",
        tau=0.2, normalize="mean", regularizer="none", head_init="probe", refit=True, epochs=3, lr=0.01,
        target_acc=0.71, source_acc_before=0.79, source_acc_after=0.76, source_drop=0.03,
        source_eval_name="IN-1K val", source_eval="imagenet-val(50000)",
        weight_stats={"mean": 1.0, "std": 0.2, "min": 0.1, "max": 2.0, "median": 1.0, "ess_frac": 0.9},
        stage_seconds={"probe": 1.2, "finetune": 3.4}, wall_seconds=5.0, git_sha="abc123",
        versions={"flowvision": "0.1.0", "torch": "2", "torchvision": "0", "timm": "1"},
        created="2025-06-01T12:00:00")
    if overrides.get("method") in ("ft", "lp", "l2sp", "wiseft"):
        values.update(weighting="uniform", tau_rule=None, tau=None, weight_stats=None)
    values.update(overrides)
    folder = root / "runs" / run_id
    write_record(folder / "result.json", RunRecord(**values))
    return folder


def frame(tabs, title):
    found = [f for t, f in tabs if t == title]
    assert found, f"no table titled {title!r} in {[t for t, _ in tabs]}"
    return found[0]


def cell(df, column, **where):
    rows = df
    for key, value in where.items():
        rows = rows[rows[key] == value]
    assert len(rows) == 1, (where, len(rows))
    return rows.iloc[0][column]


def three_seeds(root, **kw):
    for seed, acc, drop in ((0, 0.70, 0.03), (1, 0.72, 0.05), (2, 0.77, 0.04)):
        write_run(root, f"flow-s{seed}", seed=seed, target_acc=acc, source_drop=drop,
                  source_acc_after=0.79 - drop, **kw)


def test_summary_mean_and_sample_std_match_hand_computation(tmp_path):
    three_seeds(tmp_path)
    summ = runframe.summarise(runframe.load_runs(tmp_path))
    assert len(summ) == 1
    row = summ.iloc[0]
    # 70, 72, 77: mean 73; deviations -3, -1, 4 -> sum of squares 26, /(3-1) -> sqrt(13) = 3.6056
    assert row["target_acc_mean"] == pytest.approx(73.0)
    assert row["target_acc_std"] == pytest.approx(math.sqrt(13.0))
    assert row["source_drop_mean"] == pytest.approx(4.0)
    assert row["source_drop_std"] == pytest.approx(1.0)
    assert (row["n_seeds"], row["seeds"]) == (3, "0 1 2")
    per_set = frame(tables.paper_tables(runframe.load_runs(tmp_path)), "resnet50: per data set vs paper")
    assert cell(per_set, "target (ours, clean)", method="flow", dataset="cifar10") == "73.00 ± 3.61"
    assert cell(per_set, "IN-1K drop (ours, clean)", method="flow", dataset="cifar10") == "4.00 ± 1.00"
    assert cell(per_set, "n (clean)", method="flow", dataset="cifar10") == 3


def test_one_seed_has_no_std(tmp_path):
    write_run(tmp_path, "ft-s0", method="ft", target_acc=0.9)
    summ = runframe.summarise(runframe.load_runs(tmp_path))
    assert math.isnan(summ.iloc[0]["target_acc_std"])
    per_set = frame(tables.paper_tables(runframe.load_runs(tmp_path)), "resnet50: per data set vs paper")
    assert cell(per_set, "target (ours, clean)", method="ft", dataset="cifar10") == "90.00 ± –"


def test_six_set_averages_are_per_seed_means_over_data_sets(tmp_path):
    for seed, (t10, s10, t100, s100) in enumerate(((0.80, 0.70, 0.60, 0.72), (0.90, 0.74, 0.70, 0.76))):
        write_run(tmp_path, f"c10-s{seed}", seed=seed, target_acc=t10, source_acc_after=s10, source_drop=0.79 - s10)
        write_run(tmp_path, f"c100-s{seed}", seed=seed, dataset="cifar100", target_acc=t100,
                  source_acc_after=s100, source_drop=0.79 - s100)
    summary = frame(tables.paper_tables(runframe.load_runs(tmp_path)), "resnet50: 6-set averages vs paper")
    # per seed: target (80+60)/2=70, (90+70)/2=80; IN-1K (70+72)/2=71, (74+76)/2=75;
    # Average = mean(IN-1K, target): 70.5, 77.5 -> 74.00 ± 4.95
    assert cell(summary, "avg target (ours, clean)", method="flow") == "75.00 ± 7.07"
    assert cell(summary, "IN-1K acc (ours, clean)", method="flow") == "73.00 ± 2.83"
    assert cell(summary, "Average (ours, clean)", method="flow") == "74.00 ± 4.95"
    assert cell(summary, "data sets (clean)", method="flow") == "2/6"
    assert cell(summary, "IN-1K acc (ours, clean)", method="pretrained") == "79.00 ± 0.00"


def test_paper_column_holds_the_csv_value(tmp_path):
    tabs = tables.paper_tables(runframe.load_runs(tmp_path))
    r50 = frame(tabs, "resnet50: 6-set averages vs paper")
    assert cell(r50, "IN-1K drop (paper)", method="flow") == "2.93"
    assert cell(r50, "avg target (paper)", method="flow") == "86.25"
    assert cell(r50, "Average (paper)", method="ft") == "64.34"
    assert cell(r50, "IN-1K acc (paper)", method="pretrained") == "79.02"
    assert cell(r50, "IN-1K acc (paper)", method="flow") == "76.09"  # 79.02 - 2.93: the drop's definition
    assert cell(r50, "Average (paper)", method="flow+wiseft") == "n/a"
    r18 = frame(tabs, "resnet18: 6-set averages vs paper")
    assert cell(r18, "IN-1K drop (paper)", method="flow") == "n/a"
    t3 = frame(tabs, "Table 3: FLOW+WiSE-FT vs WiSE-FT")
    assert cell(t3, "Δ Average (paper)", model="resnet18") == "4.18"
    t5 = frame(tabs, "Table 5: hardest 10% of test samples, ours beside the paper")
    assert cell(t5, "hardest 10% (paper)", dataset="stanford_cars", method="flow") == "13.18"
    assert cell(t5, "# hard (paper)", dataset="stanford_cars", method="ft") == "805"
    assert cell(t5, "hardest 10% (ours)", dataset="stanford_cars", method="ft") == runframe.MISSING

    # the value comes from the file, not from the code
    edited = pd.read_csv(runframe.PAPER_CSV, keep_default_na=False)
    edited.loc[(edited["method"] == "flow") & (edited["metric"] == "in1k_drop"), "value"] = 9.99
    edited.to_csv(tmp_path / "paper.csv", index=False)
    r50 = frame(tables.paper_tables(runframe.load_runs(tmp_path), tmp_path / "paper.csv"),
                "resnet50: 6-set averages vs paper")
    assert cell(r50, "IN-1K drop (paper)", method="flow") == "9.99"


def test_paper_csv_is_self_consistent():
    paper = pd.read_csv(runframe.PAPER_CSV, keep_default_na=False)
    assert list(paper.columns) == list(runframe.PAPER_COLUMNS)
    assert set(paper["model"]) <= {"resnet18", "resnet50", ""}
    assert set(paper["dataset"]) <= {"avg6", "imagenet", *runframe.PAPER_DATASETS}
    assert set(paper["method"]) <= {*tables.PAPER_METHODS, "pretrained", ""}
    value = {(r.model, r.method, r.metric): r.value for r in paper.itertuples() if r.dataset in ("avg6", "imagenet")}
    pre = value[("resnet50", "pretrained", "in1k_acc")]
    for method in ("ft", "flow"):  # the paper's Average = mean(IN-1K acc, avg target acc)
        mean = (pre - value[("resnet50", method, "in1k_drop")] + value[("resnet50", method, "target_acc")]) / 2
        assert mean == pytest.approx(value[("resnet50", method, "average")], abs=0.006)


def test_missing_cells_are_marked_and_commands_fill_them(tmp_path):
    write_run(tmp_path, "a", model="resnet18", seed=0)
    write_run(tmp_path, "b", model="resnet18", seed=1)
    write_run(tmp_path, "demo", model="demo", dataset="gratings", synthetic=True)
    runs = runframe.load_runs(tmp_path)
    per_set = frame(tables.paper_tables(runs), "resnet18: per data set vs paper")
    assert cell(per_set, "target (ours, clean)", method="flow", dataset="cifar10") != runframe.MISSING
    assert cell(per_set, "target (ours, clean)", method="flow", dataset="cifar100") == runframe.MISSING
    assert cell(per_set, "target (ours, clean)", method="ft", dataset="cifar10") == runframe.MISSING
    assert cell(per_set, "n (clean)", method="ft", dataset="cifar10") == 0

    commands = tables.missing_commands(runs)
    assert len(commands) == 2 * 6 * 6 * 3 - 2
    assert "flowvision finetune --dataset cifar10 --model resnet18 --method flow --seed 2" in commands
    assert "flowvision finetune --dataset cifar10 --model resnet18 --method flow --seed 0" not in commands
    assert "flowvision finetune --dataset cifar10 --model resnet18 --method flow --seed 1" not in commands
    assert "flowvision finetune --dataset stanford_dogs --model resnet50 --method wiseft --seed 0" in commands
    assert "flowvision finetune --dataset caltech101 --model resnet50 --method flow+wiseft --seed 1" in commands
    assert commands[0] == "flowvision finetune --dataset cifar10 --model resnet18 --method ft --seed 0"


def test_empty_results_dir(tmp_path):
    runs = runframe.load_runs(tmp_path)
    assert runs.empty and set(runframe.RUN_COLUMNS) <= set(runs.columns)
    assert runframe.summarise(runs).empty
    tabs = tables.paper_tables(runs)
    assert len(tabs) == 6  # 2 models x (averages, per data set), Table 3, Table 5; no demo table
    r50 = frame(tabs, "resnet50: 6-set averages vs paper")
    assert list(r50["method"]) == ["pretrained", *tables.PAPER_METHODS]
    assert set(r50["avg target (ours, clean)"]) == {runframe.MISSING, ""}
    assert cell(r50, "IN-1K drop (paper)", method="flow") == "2.93"
    assert len(tables.missing_commands(runs)) == 2 * 6 * 6 * 3
    paths = formats.write_tables(tabs, tmp_path / "tables")
    assert all(p.stat().st_size > 0 for p in paths)


def test_unreadable_records_are_skipped_with_a_warning_naming_them(tmp_path, capsys):
    write_run(tmp_path, "good")
    (tmp_path / "runs" / "broken").mkdir()
    (tmp_path / "runs" / "broken" / "result.json").write_text("{not json")
    (tmp_path / "runs" / "partial").mkdir()
    (tmp_path / "runs" / "partial" / "result.json").write_text(json.dumps({"run_id": "partial"}))
    runs = runframe.load_runs(tmp_path)
    assert list(runs["run_id"]) == ["good"]
    said = " ".join(capsys.readouterr().err.split())  # the run folder reader's warnings (stages/runfolder.py)
    assert f"skipping {tmp_path / 'runs' / 'broken' / 'result.json'}" in said
    assert f"skipping {tmp_path / 'runs' / 'partial' / 'result.json'}" in said
    assert runs.loc[0, "weight_stats.ess_frac"] == pytest.approx(0.9)  # nested keys flattened


def test_an_older_record_is_read_with_a_note_naming_its_missing_fields(tmp_path, caplog):
    """A schema-1 result.json (no schema_version, device, source_eval_name; target_data a string;
    a hand-edited numeric 'created') is read, shown, and the gaps are named once."""
    old = {"run_id": "old", "dataset": "cifar10", "model": "resnet50", "method": "ft", "seed": 1,
           "target_acc": 0.9, "source_acc_before": 0.79, "source_acc_after": 0.5, "source_drop": 0.29,
           "source_eval": "imagenet-val(50000)", "target_data": "{'dataset': 'cifar10'}", "created": 17}
    (tmp_path / "runs" / "old").mkdir(parents=True)
    (tmp_path / "runs" / "old" / "result.json").write_text(json.dumps(old))
    write_run(tmp_path, "new", method="ft", seed=0, target_acc=0.88)
    with caplog.at_level(logging.WARNING, logger="flowvision.reporting.runs"):
        runs = runframe.load_runs(tmp_path)
    assert sorted(runs["run_id"]) == ["new", "old"]
    row = runs.set_index("run_id").loc["old"]
    assert row["schema_version"] == 1 and row["source_eval_name"] == "IN-1K val" and row["device"] is None
    assert row["protocol"] == "clean"  # before protocols existed every run was a clean one
    assert "has no" in caplog.text and "device" in caplog.text and "created, target_data (wrong type)" in caplog.text
    per_set = frame(tables.paper_tables(runs), "resnet50: per data set vs paper")
    assert cell(per_set, "target (ours, clean)", method="ft", dataset="cifar10") == "89.00 ± 1.41"


def test_tau_rules_get_their_own_rows_and_the_newest_rerun_wins(tmp_path, caplog):
    write_run(tmp_path, "median", tau_rule="median", target_acc=0.80)
    write_run(tmp_path, "fixed-old", tau_rule="0.1", target_acc=0.10, created="2025-01-01T00:00:00")
    write_run(tmp_path, "fixed-new", tau_rule="0.1", target_acc=0.60, created="2025-03-01T00:00:00")
    with caplog.at_level(logging.WARNING, logger="flowvision.reporting.runs"):
        tabs = tables.paper_tables(runframe.load_runs(tmp_path))
    assert "fixed-old" in caplog.text
    per_set = frame(tabs, "resnet50: per data set vs paper")
    assert cell(per_set, "target (ours, clean)", method="flow [τ=0.1]", dataset="cifar10") == "60.00 ± –"
    assert cell(per_set, "target (ours, clean)", method="flow [τ=median]", dataset="cifar10") == "80.00 ± –"
    summary = frame(tabs, "resnet50: 6-set averages vs paper")
    assert cell(summary, "IN-1K drop (paper)", method="flow [τ=median]") == "2.93"


def test_demo_table_from_synthetic_runs(tmp_path):
    for seed, acc in ((0, 0.5), (1, 0.7)):
        write_run(tmp_path, f"g-flow-{seed}", model="demo", dataset="gratings", synthetic=True, seed=seed,
                  target_acc=acc, source_acc_before=1.0, source_acc_after=0.9, source_drop=0.1,
                  source_eval="shapes:val(1000)")
    write_run(tmp_path, "g-ft", model="demo", dataset="gratings", synthetic=True, method="ft",
              target_acc=0.8, source_acc_before=1.0, source_acc_after=0.6, source_drop=0.4)
    tabs = tables.paper_tables(runframe.load_runs(tmp_path))
    demo = frame(tabs, "demo: synthetic tasks")
    assert cell(demo, "target acc", method="flow") == "60.00 ± 14.14"
    assert cell(demo, "source acc before", method="ft") == "100.00 ± –"
    assert cell(demo, "source drop", method="ft") == "40.00 ± –"
    assert cell(demo, "n", method="flow") == 2
    # synthetic runs never fill the paper tables
    summary = frame(tabs, "resnet50: 6-set averages vs paper")
    assert cell(summary, "avg target (ours, clean)", method="flow") == runframe.MISSING


def test_written_tables_exist_and_round_trip(tmp_path):
    three_seeds(tmp_path)
    tabs = tables.paper_tables(runframe.load_runs(tmp_path))
    paths = formats.write_tables(tabs, tmp_path / "out")
    for title, df in tabs:
        stem = tmp_path / "out" / formats.slug(title)
        back = pd.read_csv(stem.with_suffix(".csv"), keep_default_na=False, dtype=str)
        assert back.equals(df.astype(str)), title
        markdown = stem.with_suffix(".md").read_text(encoding="utf-8")
        assert "| " + " | ".join(df.columns) + " |" in markdown
        assert markdown.count("\n| ") == len(df) + 1  # header and one line per row
        latex = stem.with_suffix(".tex").read_text(encoding="utf-8")
        assert "\\begin{tabular}" in latex and "±" not in latex and "10%" not in latex
    assert (tmp_path / "out" / "all.md") in paths
    assert "73.00 ± 3.61" in (tmp_path / "out" / "resnet50_per_data_set_vs_paper.md").read_text(encoding="utf-8")


def test_render_and_bad_paper_csv(tmp_path):
    title, df = tables.table5()
    rich_table = formats.render((title, df))
    assert rich_table.row_count == 6  # 3 data sets × (ft, flow)
    # with no run of ours, settings, config, protocol, # hard (ours) and seeds are empty in every row: not printed
    headers = [str(c.header).split("\n")[0] for c in rich_table.columns]
    assert headers == [c for c in df.columns if df[c].astype(str).str.strip().ne("").any()]
    assert "settings" not in headers and "config" not in headers and "settings" in df.columns
    with pytest.raises(UserError, match="not found"):
        tables.paper_tables(runframe.load_runs(tmp_path), tmp_path / "nope.csv")


def test_table5_puts_our_hardest_tenth_beside_the_papers_and_keeps_synthetic_rows(tmp_path):
    for seed, hard in ((0, 0.30), (1, 0.40)):
        write_run(tmp_path, f"c10-flow-s{seed}", dataset="cifar10", model="resnet18", seed=seed,
                  hard10_acc=hard, hard10_n=1000)
        write_run(tmp_path, f"grat-ft-s{seed}", dataset="gratings", model="demo", method="ft", seed=seed,
                  synthetic=True, hard10_acc=0.5 + hard, hard10_n=100)
    write_run(tmp_path, "old-ft", dataset="cifar10", model="resnet18", method="ft")  # no number: no row
    t5 = frame(tables.paper_tables(runframe.load_runs(tmp_path)), "Table 5: hardest 10% of test samples, ours beside the paper")
    assert cell(t5, "hardest 10% (ours)", dataset="cifar10", method="flow") == "35.00 ± 7.07"
    assert cell(t5, "hardest 10% (paper)", dataset="cifar10", method="flow") == "30.70"
    assert cell(t5, "# hard (ours)", dataset="cifar10", method="flow") == "1000"
    assert cell(t5, "model", dataset="cifar10", method="ft") == runframe.MISSING  # the paper's cell, no run of ours
    assert cell(t5, "hardest 10% (ours)", dataset="gratings", method="ft") == "85.00 ± 7.07"
    assert cell(t5, "hardest 10% (paper)", dataset="gratings", method="ft") == ""
    assert list(t5["dataset"]).index("gratings") > list(t5["dataset"]).index("stanford_cars")


def _configured(dataset, model, method, **changes):
    """(config dict, config id) of a method's own configuration with ``changes``, as a run records them."""
    from flowvision.core import config, identity

    cfg = config.resolve(dataset, model, method, changes)
    return identity.keyed_values(cfg), identity.config_id(cfg)


def test_methods_the_paper_does_not_report_come_after_its_own_and_are_marked(tmp_path):
    for method, knobs in (("lwf", dict(distill="lwf", lwf_lambda=1.0)), ("ewc", dict(regularizer="ewc", ewc_lambda=0.01)),
                          ("ft", {}), ("flow", {})):
        uniform = dict(weighting="uniform", tau_rule=None, tau=None, weight_stats=None) if method != "flow" else {}
        write_run(tmp_path, f"c10-{method}", method=method, **{**uniform, **knobs})
        write_run(tmp_path, f"g-{method}", method=method, model="demo", dataset="gratings", synthetic=True,
                  source_eval="shapes:val(1000)", **{**uniform, **knobs})
    tabs = tables.paper_tables(runframe.load_runs(tmp_path))
    summary = frame(tabs, "resnet50: 6-set averages vs paper")
    assert list(summary["method"]) == ["pretrained", "ft", "l2sp", "wiseft", "lp", "flow", "flow+wiseft",
                                       "ewc (not in the paper)", "lwf (not in the paper)"]
    assert cell(summary, "avg target (paper)", method="lwf (not in the paper)") == ""  # nothing to compare with
    assert cell(summary, "avg target (paper)", method="ft") != ""
    assert cell(summary, "avg target (ours, clean)", method="ewc (not in the paper)") == "71.00 ± –"
    per_set = frame(tabs, "resnet50: per data set vs paper")
    assert cell(per_set, "target (paper)", method="lwf (not in the paper)", dataset="cifar10") == ""
    demo = frame(tabs, "demo: synthetic tasks")
    assert list(demo["method"]) == ["ft", "flow", "ewc (not in the paper)", "lwf (not in the paper)"]


def test_runs_of_two_configurations_never_share_a_row_in_any_table_or_the_ledger(tmp_path):
    """Default runs and one-epoch runs of the same method and seeds, in the demo and in the paper grid:
    every table row, Table 5 row and ledger number comes from one configuration, and the written md/csv
    say which."""
    for dataset, model, method, synthetic in (("gratings", "demo", "ft", True), ("cifar10", "resnet50", "flow", False)):
        for changes, acc in (({}, 0.70), ({"epochs": 1}, 0.20)):
            cfg, cid = _configured(dataset, model, method, **changes)
            for seed in (0, 1):
                write_run(tmp_path, f"{dataset}-{method}-{cid}-s{seed}", dataset=dataset, model=model, method=method,
                          synthetic=synthetic, seed=seed, config=cfg, config_id=cid, target_acc=acc + seed / 100,
                          source_drop=0.1 if changes else 0.02, hard10_acc=acc / 2, hard10_n=10,
                          created=f"2025-06-0{2 if changes else 1}T12:00:00")  # the smoke runs are the newest
    tabs, paths, _ = tables.make_tables(tmp_path, tmp_path / "tables")
    demo = frame(tabs, "demo: synthetic tasks")
    assert sorted(demo["settings"]) == ["", "epochs=1"] and list(demo["n"]) == [2, 2]
    assert cell(demo, "target acc", settings="") == "70.50 ± 0.71"
    assert cell(demo, "target acc", settings="epochs=1") == "20.50 ± 0.71"
    per_set = frame(tabs, "resnet50: per data set vs paper")  # the paper tables: the paper's settings only
    assert cell(per_set, "target (ours, clean)", method="flow", dataset="cifar10") == "70.50 ± 0.71"
    assert cell(per_set, "n (clean)", method="flow", dataset="cifar10") == 2
    off = frame(tabs, "paper grid runs off the paper's settings (left out of the paper tables)")
    assert list(off["settings"]) == ["epochs=1"] and "not the paper's settings" in off["why left out"].iloc[0]
    other = frame(tabs, "other runs (outside the paper grid or off its settings)")
    assert list(other["settings"]) == ["epochs=1"] and cell(other, "target acc", settings="epochs=1") == "20.50 ± 0.71"
    t5 = frame(tabs, "Table 5: hardest 10% of test samples, ours beside the paper")
    mine = t5[t5["model"] == "demo"]
    assert sorted(mine["settings"]) == ["", "epochs=1"] and sorted(mine["hardest 10% (ours)"]) == ["10.00 ± 0.00", "35.00 ± 0.00"]
    written = (tmp_path / "tables" / "demo_synthetic_tasks.csv").read_text()
    assert "settings" in written.splitlines()[0] and "epochs=1" in written
    assert "One row per configuration" in (tmp_path / "tables" / "demo_synthetic_tasks.md").read_text()
    book = (tmp_path / "REPRODUCIBILITY.md").read_text()
    flow_target = next(line for line in book.splitlines() if line.startswith("| Sec. 5-6 / Fig. 1 · resnet50 · avg6 · flow · target acc"))
    assert "70.50 ± 0.71 over 1/6 sets" in flow_target   # the one-epoch runs never enter a paper number
    assert "real run(s) off the paper's settings are not counted above (epochs=1)" in book
    stand_ins = book.split("## Synthetic stand-ins")[1]
    assert "| defaults |" in stand_ins and "| epochs=1 |" in stand_ins


def test_two_configurations_that_differ_only_where_the_weights_lie_are_still_two_rows(tmp_path):
    for path, weights in (("a.safetensors", "file:a@1"), ("b.safetensors", "file:b@2")):
        cfg, cid = _configured("gratings", "demo", "ft", weights=path)
        write_run(tmp_path, f"ft-{cid}", dataset="gratings", model="demo", method="ft", synthetic=True, config=cfg,
                  config_id=cid, weights=weights)
    demo = frame(tables.paper_tables(runframe.load_runs(tmp_path)), "demo: synthetic tasks")
    assert sorted(demo["settings"]) == ["weights file:a@1", "weights file:b@2"]


def test_protocols_are_never_pooled_and_the_paper_column_follows_the_paper_protocol_cells(tmp_path):
    write_run(tmp_path, "clean", target_acc=0.70, hparams_note="ResNet-18 hyper-parameters (ResNet-50's were not published)")
    write_run(tmp_path, "paper", protocol="paper", target_acc=0.90, best_epochs={"finetune": 2})
    write_run(tmp_path, "old", dataset="cifar100", protocol=None, target_acc=0.50)  # no protocol: a clean run
    runs = runframe.load_runs(tmp_path)
    assert sorted(runframe.summarise(runs)["protocol"]) == ["clean", "clean", "paper"]
    per_set = frame(tables.paper_tables(runs), "resnet50: per data set vs paper")
    columns = list(per_set.columns)
    assert columns[2:5] == ["target (ours, clean)", "target (ours, paper protocol)", "target (paper)"]
    assert cell(per_set, "target (ours, clean)", method="flow", dataset="cifar10") == "70.00 ± –"
    assert cell(per_set, "target (ours, paper protocol)", method="flow", dataset="cifar10") == "90.00 ± –"
    assert cell(per_set, "target (ours, clean)", method="flow", dataset="cifar100") == "50.00 ± –"
    assert cell(per_set, "hyper-parameters", method="flow", dataset="cifar10").startswith("ResNet-18 hyper-parameters")
    summary = frame(tables.paper_tables(runs), "resnet50: 6-set averages vs paper")
    assert cell(summary, "data sets (clean)", method="flow") == "2/6"
    assert cell(summary, "data sets (paper protocol)", method="flow") == "1/6"
    t3 = frame(tables.paper_tables(runs), "Table 3: FLOW+WiSE-FT vs WiSE-FT")
    assert list(t3.loc[t3["model"] == "resnet50", "protocol"]) == ["clean", "paper protocol"]
    assert all("ours" not in c or "(ours, clean)" in c for c in frame(tables.paper_tables(
        runframe.load_runs(tmp_path / "none")), "resnet18: per data set vs paper").columns)  # no paper runs: no column


def test_agreement_and_kl_columns_and_partial_folders_are_marked(tmp_path):
    for seed, agree, kl in ((0, 0.90, 0.10), (1, 0.80, 0.30)):
        write_run(tmp_path, f"lite0-flow-{seed}", model="tf_efficientnet_lite0", dataset="gratings", synthetic=True,
                  seed=seed, source_agreement=agree, source_kl=kl, source_eval_partial=True,
                  source_eval="imagenet-partial(20 images, 20 classes), timm transform")
    write_run(tmp_path, "r50-flow", seed=0, source_agreement=0.95, source_kl=0.05, source_eval_partial=False)
    tabs = tables.paper_tables(runframe.load_runs(tmp_path))
    demo = frame(tabs, "demo: synthetic tasks")
    assert cell(demo, "agreement", method="flow") == "85.00 ± 7.07"
    assert cell(demo, "KL", method="flow") == "0.200 ± 0.141"   # nats, not percent
    assert cell(demo, "source acc after", method="flow").endswith(runframe.PARTIAL)
    assert not cell(demo, "target acc", method="flow").endswith(runframe.PARTIAL)
    per_set = frame(tabs, "resnet50: per data set vs paper")
    assert cell(per_set, "agreement (ours, clean)", method="flow", dataset="cifar10") == "95.00 ± –"
    assert cell(per_set, "KL (ours, clean)", method="flow", dataset="cifar10") == "0.050 ± –"
    assert not cell(per_set, "IN-1K acc (ours, clean)", method="flow", dataset="cifar10").endswith(runframe.PARTIAL)


def test_reproducibility_ledger_names_ours_the_evidence_and_the_command(tmp_path):
    for seed, drop in ((0, 0.03), (1, 0.05)):
        write_run(tmp_path, f"c10-s{seed}", model="resnet50", seed=seed, source_drop=drop, source_acc_after=0.79 - drop,
                  source_eval_images=5000, source_eval="imagenet-val:subset(5000)", hard10_acc=0.3, hard10_n=1000)
        write_run(tmp_path, f"demo-ft-s{seed}", dataset="gratings", model="demo", method="ft", seed=seed,
                  synthetic=True, source_drop=0.5 + drop, hard10_acc=0.8, hard10_n=100)
    _, paths, _ = tables.make_tables(tmp_path, tmp_path / "tables")
    book = tmp_path / "REPRODUCIBILITY.md"
    assert book in paths
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in book.read_text().splitlines()
            if line.startswith("| ") and "paper number" not in line}
    drop = rows["Sec. 5-6 / Fig. 1 · resnet50 · avg6 · flow · IN-1K drop"]
    assert drop[1] == "2.93" and drop[2] == "4.00 ± 1.41 over 1/6 sets" and drop[3] == "clean" and drop[4] == "2 (0 1)"
    assert drop[5] == "real data; IN-1K stand-in (imagenet-val:subset(5000))"
    assert drop[6].startswith("`flowvision reproduce --model resnet50 --datasets paper --methods flow --seeds 2")
    ft = rows["Sec. 5-6 / Fig. 1 · resnet50 · avg6 · ft · IN-1K drop"]  # only the demo has ft: no stand-in here
    assert ft[2] == "—" and ft[5] == "no run"
    hard = rows["Table 5 · model not named · cifar10 · flow · hardest-10% acc"]
    assert hard[2] == "30.00 ± 0.00" and hard[1] == "30.70"
    assert rows["Table 5 · model not named · stanford_cars · ft · hardest-10% acc"][2] == "—"
    assert rows["Sec. 5-6 / Fig. 1 · resnet50 · imagenet · pretrained · IN-1K acc"][2] == "79.00 ± 0.00"  # resnet50 runs only
    paper_rows = [r for name, r in rows.items() if " · " in name]
    assert len(paper_rows) == len(pd.read_csv(runframe.PAPER_CSV))  # one row per paper number (one protocol here)
    stand_in = book.read_text().split("## Synthetic stand-ins")[1]
    assert "| gratings | demo | ft | clean | defaults | 2 (0 1) | 71.00 ± 0.00 | 54.00 ± 1.41 | 80.00 ± 0.00 |" in stand_in


def test_every_command_the_ledger_suggests_plans_the_cells_it_names(tmp_path):
    """Each suggested command, with --dry-run, plans exactly its model × data sets × methods × seeds (and
    protocol and τ rule): a τ sweep is one command per rule, never a repeated --set."""
    import re
    import shlex

    from typer.testing import CliRunner

    from flowvision.cli import app

    for seed in (0, 1):
        write_run(tmp_path, f"p-s{seed}", model="resnet50", protocol="paper", seed=seed, tau_rule="p25")
        write_run(tmp_path, f"m-s{seed}", model="resnet50", seed=seed, tau_rule="median", dataset="cifar100")
        write_run(tmp_path, f"d-s{seed}", dataset="gratings", model="demo", method="flow", synthetic=True, seed=seed,
                  tau_rule="p10")
    tables.make_tables(tmp_path, tmp_path / "tables")
    suggested = sorted(set(re.findall(r"`(flowvision reproduce [^`]*)`", (tmp_path / "REPRODUCIBILITY.md").read_text())))
    assert any("--set protocol=paper --set tau=p25" in c for c in suggested)
    assert any("--datasets gratings --methods flow --seeds 2 --set tau=p10" in c for c in suggested)
    assert not any(c.count("--set tau=") > 1 for c in suggested)
    for command in suggested:
        args = shlex.split(command)[1:] + ["--dry-run", "--results-dir", str(tmp_path / "plan")]
        res = CliRunner().invoke(app, args)
        # exit 2 where the real inputs are missing here (data, weights, ImageNet): the plan is printed first
        assert res.exit_code == 0 or (res.exit_code == 2 and "missing:" in res.output), (command, res.output)
        opts = dict(zip(args[1::2], args[2::2]))
        datasets = {"paper": 6}.get(opts["--datasets"], len(opts["--datasets"].split(",")))
        n = datasets * len(opts["--methods"].split(",")) * int(opts["--seeds"])
        assert f"{n} runs, 0 finished, {n} to do:" in res.output, (command, res.output)
        planned = [line for line in res.output.splitlines() if line.strip().startswith("flowvision finetune")]
        assert len(planned) == n
        for line in planned:
            assert f"--model {opts['--model']}" in line
            assert ("--set protocol=paper" in line) == ("protocol=paper" in command)
            rule = re.search(r"--set tau=(\S+)", command)
            assert (f"--set tau={rule.group(1)}" in line) if rule else ("--set tau=" not in line)


def test_a_set_key_given_twice_is_an_error_naming_both_values():
    from flowvision.core import config

    with pytest.raises(UserError, match=r"--set tau is given twice \(tau=p10 and tau=p90\)"):
        config.parse_sets(["tau=p10", "epochs=1", "tau=p90"])
    assert config.parse_sets(["tau=p10", "tau=p10"]) == {"tau": "p10"}  # the same value twice says one thing





def test_paper_protocol_dogs_runs_at_the_per_stage_default_count_and_single_split_runs_are_listed_apart(tmp_path):
    for split, acc in (("per-stage", 0.8), ("single", 0.6)):
        cfg, cid = _configured("stanford_dogs", "resnet50", "flow", protocol="paper", dogs_split=split)
        write_run(tmp_path, f"dogs-{split}", dataset="stanford_dogs", protocol="paper", config=cfg, config_id=cid,
                  target_acc=acc)
    tabs = tables.paper_tables(runframe.load_runs(tmp_path))
    per_set = frame(tabs, "resnet50: per data set vs paper")
    assert cell(per_set, "target (ours, paper protocol)", method="flow", dataset="stanford_dogs") == "80.00 ± –"
    off = frame(tabs, "paper grid runs off the paper's settings (left out of the paper tables)")
    assert list(off["settings"]) == ["dogs_split=single"]
