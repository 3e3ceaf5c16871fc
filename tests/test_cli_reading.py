"""The CLI as a person reads it at 100 columns: nothing that must be copied is cut, every number has its
unit, help reads cleanly, and an unknown value gets a "did you mean"."""
import io
import re
from pathlib import Path

import pytest
import typer
from rich.cells import cell_len
from typer.testing import CliRunner

from flowvision.reporting import report
from flowvision.cli import app
from flowvision.core.console import out
from flowvision.stages.record import read_record
from test_tables import write_run

runner = CliRunner()
WIDTH = 100
MODEL = "tf_efficientnet_lite0"
DATASETS = ("cifar10", "cifar100", "stanford_cars", "stanford_dogs")


@pytest.fixture
def narrow(monkeypatch):
    """Every table printed at 100 columns, as a terminal (or COLUMNS=100 on a pipe) has it."""
    monkeypatch.setattr(out, "width", WIDTH)


def _runs(root: Path) -> list[str]:
    ids = []
    for dataset in DATASETS:
        for method in ("ft", "flow"):
            run_id = f"{dataset}-{MODEL}-{method}-s0-0123abcd"
            write_run(root, run_id, dataset=dataset, model=MODEL, weights=MODEL, method=method)
            ids.append(run_id)
    return ids


def _whole(output: str, *texts: str) -> None:
    """Each text on one printed line, uncut; no cell ends in '…'; every table line fits the width."""
    lines = output.splitlines()
    for text in texts:
        assert any(text in line for line in lines), f"{text!r} is cut or missing in:\n{output}"
    assert "…" not in output, output
    for line in lines:
        if line[:1] in "┏┃┡│└┌":
            assert cell_len(line) <= WIDTH, line


def test_every_commands_main_table_at_100_columns_keeps_ids_paths_and_commands_whole(tmp_path, narrow):
    ids = _runs(tmp_path)
    table = runner.invoke(app, ["table", "--results-dir", str(tmp_path)])
    assert table.exit_code == 0, table.output
    _whole(table.output, *DATASETS, MODEL, "flowvision finetune --dataset cifar10 --model resnet18 --method ft --seed 0")

    status = runner.invoke(app, ["status", "--results-dir", str(tmp_path), "--all"])
    assert status.exit_code == 0, status.output
    _whole(status.output, *ids)

    deep = tmp_path / "a-data-root-whose-path-is-long" / "enough-to-need-more-than-one-line-of-a-table-cell"
    dry = runner.invoke(app, ["finetune", "--dataset", "cifar100", "--model", "resnet18", "--dry-run",
                              "--data-root", str(deep), "--results-dir", str(tmp_path)])
    assert dry.exit_code == 2, dry.output  # the data, the weights and ImageNet are missing: the run would stop
    run_folder = next(line for line in dry.output.splitlines() if line.startswith("run folder: "))
    assert run_folder.split(": ", 1)[1].startswith(str(tmp_path / "runs" / "cifar100-resnet18-flow-s0-"))
    _whole(dry.output, str(deep / "cifar100"), f"flowvision data download cifar100 --data-root {deep}",
           "config file: " + str(Path("configs/resnet18/cifar100.yaml").resolve()))
    assert "│ data_root" in dry.output and "(below)" in dry.output and f"data_root: {deep}" in dry.output
    dogs = runner.invoke(app, ["finetune", "--dataset", "stanford_dogs", "--model", "resnet18", "--dry-run",
                               "--data-root", str(deep), "--results-dir", str(tmp_path)])
    _whole(dogs.output, f"flowvision data prepare stanford_dogs --images images.tar --lists lists.tar --data-root {deep}",
           "flowvision data prepare imagenet --val-tar ILSVRC2012_img_val.tar --devkit ILSVRC2012_devkit_t12.tar.gz "
           "--out DIR", "python -c \"import timm; timm.create_model('resnet18.tv_in1k', pretrained=True)\"")

    imagenet = tmp_path / "an-imagenet-val-folder-outside-the-data-root"
    data = runner.invoke(app, ["data", "status", "--data-root", str(deep), "--imagenet", str(imagenet)])
    assert data.exit_code == 0, data.output
    _whole(data.output, f"data root: {deep}", f"imagenet folder: {imagenet}",
           *(f"flowvision data download {name} --data-root {deep}" for name in ("cifar10", "cifar100")),
           f"flowvision data prepare stanford_cars --archive FILE --data-root {deep}",
           f"flowvision data prepare stanford_dogs --images images.tar --lists lists.tar --data-root {deep}")

    record, _ = read_record(tmp_path / "runs" / ids[3] / "result.json")
    result = dict(record.to_dict(), run_dir=str(tmp_path / "runs" / ids[3]))
    with out.capture() as printed:
        report.print_result(result)
        out.print(report.demo_table([dict(result, seed=s) for s in (0, 1)]))
    _whole(printed.get(), ids[3], f"run folder: {result['run_dir']}", "flow")


def test_a_table_too_wide_is_split_by_columns_with_its_ids_in_each_part(narrow):
    from flowvision.core.console import Table

    t = Table(title="wide")
    t.add_column("model", no_wrap=True)
    for i in range(12):
        t.add_column(f"metric number {i}")
    t.add_row(MODEL, *(f"{i}.25 ± 0.{i}" for i in range(12)))
    with out.capture() as printed:
        out.print(t)
    text = printed.get()
    _whole(text, *(f"{i}.25" for i in range(12)))
    parts = re.findall(r"wide \((\d) of (\d)\)", text)
    assert len(parts) >= 2 and text.count(MODEL) == len(parts)  # the id column in every part


def test_a_table_that_fits_only_at_its_least_widths_is_not_cut_at_the_right(narrow):
    """rich narrows the widest columns first and the least widths pushed them back: the table came out wider
    than the console, its last column cut off at the edge. Now each line ends in the table's right border."""
    from flowvision.core.console import Table

    t = Table(title="fits only narrowed")
    for header in ("method", "seeds", "target acc (%)", "source acc before (%)", "source acc after (%)",
                   "drop (points)", "agreement (%)", "KL (nats)"):
        t.add_column(header, no_wrap=header == "method")
    t.add_row("flow", "6", "73.80 ± 1.87", "96.12 ± 0.00", "63.50 ± 1.87", "32.62 ± 1.87", "—", "—")
    with out.capture() as printed:
        out.print(t)
    table = [line for line in printed.get().splitlines() if line[:1] in "┏┃┡│└"]
    assert all(line.rstrip()[-1] in "┓┃┩│┘" for line in table), printed.get()
    assert "(nats)" in printed.get() and "fits only narrowed (1 of" not in printed.get()  # one table, whole


def test_run_printout_numbers_carry_units_and_read_as_words(tmp_path, narrow):
    write_run(tmp_path, "r", tau=1.0, tau_rule="1.0", target_acc=0.0071, source_acc_before=0.001,
              source_acc_after=0.002, source_drop=-0.001, source_eval_name="shapes val", source_eval="shapes:val(1000)",
              source_eval_images=1000)
    record, _ = read_record(tmp_path / "runs" / "r" / "result.json")
    with out.capture() as printed:
        report.print_result(dict(record.to_dict(), run_dir=str(tmp_path / "runs" / "r")))
    text = " ".join(printed.get().replace("│", " ").split())
    assert "target accuracy 0.71 %" in text
    assert "0.10 % → 0.20 % (before → after, on shapes val, 1,000 images)" in text
    assert "drop -0.10 points" in text
    assert "shapes:val(1000)" not in text
    assert "τ 1; " in text and "(1.0)" not in text  # the number once
    assert "ESS (effective sample size" in text and "90.00 % of the training samples" in text
    assert report.plural(1, "run") == "1 run" and report.plural(2, "epoch") == "2 epochs"


def test_table_headers_carry_their_units(tmp_path):
    from flowvision.reporting import formats, tables

    assert [formats.unit(c) for c in ("target acc", "IN-1K acc (ours)", "source drop", "Δ Average (ours)", "KL",
                                     "mean_loss", "# hard (ours)", "seeds", "dominated area (%)", "method")] == [
        "%", "%", "points", "points", "nats", "nats", "", "", "", ""]
    write_run(tmp_path, "a", dataset="gratings", model="demo", synthetic=True)
    record, _ = read_record(tmp_path / "runs" / "a" / "result.json")
    headers = [c.header for t in report.demo_table([record.to_dict()]).renderables for c in t.columns]
    assert all(h in ("method", "seeds") or h.endswith(("(%)", "(points)", "(nats)")) for h in headers), headers
    printed = formats.render(tables.table5())
    assert "hardest 10% (ours)\n%" in [c.header for c in printed.columns]


def test_progress_lines_count_batches_in_words_and_say_each_epoch_once(tiny):
    from flowvision.core import console

    with console.console.capture() as cap:
        bar = console.PlainProgress(every=1)
        task = bar.add_task("finetune", total=4, info="", epoch_steps=2)
        for step in range(4):
            bar.update(task, advance=1, info=f"epoch {step // 2 + 1} of 2, loss 0.5")
    lines = [line.split(" ", 1)[1] for line in cap.get().splitlines()]
    # the steps that end an epoch are the epoch's own summary line (train.train's log_line), not a second one
    assert [", ".join(line.split(", ")[:3]) for line in lines] == ["finetune: epoch 1 of 2, loss 0.5, batch 1 of 4",
                                                        "finetune: epoch 2 of 2, loss 0.5, batch 3 of 4"]
    assert not any(re.search(r"\b\d+/\d+\b", line) for line in lines)


# ---- --help ----------------------------------------------------------------------------------------
def _commands(command, path=()):
    if hasattr(command, "commands"):
        yield path, command
        for name, sub in command.commands.items():
            yield from _commands(sub, (*path, name))
    else:
        yield path, command


def test_every_help_page_reads_cleanly():
    """No '<bool>' after a flag, no space before a period, no {ARG} in a usage line, help text on every
    option, and a default named (Typer's [default: …] or the help's own words) for every optional value."""
    pages = 0
    for path, command in _commands(typer.main.get_command(app)):
        res = runner.invoke(app, [*path, "--help"], env={"COLUMNS": str(WIDTH)})
        assert res.exit_code == 0, (path, res.output)
        pages += 1
        text = res.output
        flat = " ".join(text.replace("│", " ").split())
        assert "<bool>" not in text, path
        assert not re.search(r"\s[.,;](\s|$)", flat), (path, re.findall(r"\S+\s[.,;](?:\s|$)", flat))
        assert not any("{" in line for line in text.splitlines() if "Usage:" in line), path
        for p in command.params:
            if getattr(p, "hidden", False):
                continue
            assert (p.help or "").strip(), (path, p.opts, "has no help text")
            takes_value = p.param_type_name == "option" and not p.is_flag and not p.required
            if takes_value and p.default is None:
                assert "default" in p.help.lower(), (path, p.opts, "names no default")
    assert pages >= 16  # the group, its commands, the data group and its commands


def test_cache_dir_help_says_everything_it_holds():
    res = runner.invoke(app, ["finetune", "--help"], env={"COLUMNS": "200"})
    text = " ".join(res.output.replace("│", " ").split())
    assert "Demo model cache" not in text
    for part in ("demo/", "weights/<tag>.safetensors", "decoded/", "$FLOWVISION_CACHE"):
        assert part in text


# ---- did you mean --------------------------------------------------------------------------------------
@pytest.mark.parametrize("args,hint", [
    (["--set", "epoch=2"], "unknown config key epoch (did you mean epochs?)"),
    (["--dataset", "cifar-10"], "unknown dataset 'cifar-10' (did you mean cifar10?)"),
    (["--tau", "medain"], "--tau medain is not understood (did you mean median?)"),
    (["--set", "epochs", "2"], "'epochs 2': write key=value (did you mean --set epochs=2?)"),
    (["--set", "epoch", "2"], "(did you mean --set epochs=2?)"),
    (["--set", "epochs", "--seed", "1"], "--set 'epochs': write key=value, e.g. --set epochs=3"),
    (["--method", "flw"], "unknown method 'flw' (did you mean flow?)"),
])
def test_an_unknown_value_gets_a_did_you_mean(args, hint):
    res = runner.invoke(app, ["finetune", *args, "--dry-run"], env={"COLUMNS": "200"})
    assert res.exit_code == 2, res.output
    assert hint in " ".join(res.output.replace("│", " ").split()), res.output
    assert "Traceback" not in res.output


def test_key_lists_in_errors_name_only_what_a_person_sets():
    res = runner.invoke(app, ["finetune", "--set", "frobnicate=1", "--dry-run"])
    assert res.exit_code == 2
    listed = " ".join(res.output.split()).split("valid keys: ", 1)[1]
    keys = {k.strip() for k in listed.split(",")}
    assert {"epochs", "lr", "tau", "probe_epochs"} <= keys
    assert not keys & {"dataset", "model", "method", "sweep", "hparams_note"}
    assert "did you mean" not in res.output  # nothing is close to frobnicate


def test_the_list_of_commands_gives_each_one_flowing_paragraph():
    """A docstring's line breaks are not kept in `flowvision --help`'s list (they broke sentences mid-line)."""
    for args in ([], ["data"]):
        res = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "400"})
        panel = [line for line in res.output.split("─ Commands ─")[1].splitlines() if line.startswith("│")]
        assert panel and all(re.match(r"│ [a-z]", line) for line in panel), "\n".join(panel)


def _in_order(printed: str, text: str) -> bool:
    """Every visible character of ``text`` appears in ``printed`` in order (a folded cell is split over
    lines and interleaved with its row's other cells, but loses nothing); borders and spaces ignored."""
    visible = iter(re.sub(r"[\s│┃┏┓┗┛┡┩└┘┌┐├┤┼╇╋━─┬┴┳┻]", "", printed))
    return all(ch in visible for ch in text.replace(" ", ""))


LONGEST = dict(dataset="folder:/home/someone-with-a-long-name/projects/birds-of-the-world/train-images-2026",
               model="tf_efficientnet_lite0", weights="tf_efficientnet_lite0.in1k")


def test_a_table_prints_at_every_width_from_40_to_200_whatever_its_cells_hold():
    """The ids of a run on one's own folder do not fit 80 or 120 columns side by side (they crashed the
    column fitting): at any width each line fits, no cell is cut, and every cell's text is there."""
    from rich.console import Console

    from flowvision.core.console import Table
    from flowvision.core.registry import METHODS

    longest = max(METHODS, key=len)
    for width in range(40, 201):
        t = Table(title="Table 9: every id the project prints, at its longest")
        for header in ("method", "dataset", "model", "settings", "config", "protocol"):
            t.add_column(header, no_wrap=True)
        for header in ("target acc (%)", "source acc after (%)", "drop (points)"):
            t.add_column(header)
        rows = [(f"{m} (not in the paper)", LONGEST["dataset"], LONGEST["model"], "lr=0.003, epochs=3, lwf_lambda=1",
                 "0123abcd", "paper", "73.80 ± 1.87", "", "32.62 ± 1.87") for m in (longest, "ft")]
        for row in rows:
            t.add_row(*row)
        console = Console(width=width, record=True, file=io.StringIO())
        console.print(t)
        printed = console.export_text()
        assert all(cell_len(line) <= width for line in printed.splitlines()), (width, printed)
        assert "…" not in printed
        for row in rows:
            for cell in row:
                assert _in_order(printed, cell), (width, cell, printed)


def test_flowvision_table_prints_every_table_at_any_width_with_folder_lite0_demo_and_frontier_runs(tmp_path, monkeypatch):
    for seed in (0, 1):
        for method in ("ft", "flow", "ewc", "lwf"):
            write_run(tmp_path, f"birds-{method}-s{seed}", method=method, seed=seed, lr=0.003, **LONGEST)
        write_run(tmp_path, f"g-flow-s{seed}", model="demo", dataset="gratings", synthetic=True, seed=seed)
        write_run(tmp_path, f"g-ft-lr-s{seed}", model="demo", dataset="gratings", synthetic=True, seed=seed,
                  method="ft", lr=0.001, epochs=1, sweep="frontier")
    write_run(tmp_path, "c10-flow", dataset="cifar10", model="resnet18", weights="resnet18.tv_in1k", hard10_acc=0.3,
              hard10_n=1000)
    for width in (40, 57, 80, 100, 120, 143, 200):
        monkeypatch.setattr(out, "width", width)
        printed = runner.invoke(app, ["table", "--results-dir", str(tmp_path)])
        assert printed.exit_code == 0, (width, printed.output)
        assert all(cell_len(line) <= width for line in printed.output.splitlines() if line[:1] in "┏┃┡│└┌├"), width
        for text in ("ewc (not in the paper)", LONGEST["model"], "Table 5", "demo: synthetic tasks"):
            assert _in_order(printed.output, text), (width, text, printed.output)
