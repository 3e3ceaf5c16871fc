"""Every command the tool prints works: the commands in REPRODUCIBILITY.md, in `table`'s fill list, in the
dry runs' fixes, in `data status`, in hints and in warnings are each parsed against the CLI (the docs' own
checker, ``test_docs.command_problems``: the command exists, every option is one of its options), and a
sample of them, covering every value each option takes, is run with ``--dry-run`` through Typer's runner
(a value the CLI rejects, such as a method that does not exist, fails there). Every option a message names
in its prose is an option of the command that printed it."""
import re
import shlex
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from flowvision.cli import app
from flowvision.core.config import resolve
from flowvision.core.identity import keyed_values
from test_docs import ELLIPSIS, PLACEHOLDER, command_problems
from test_tables import write_run

runner = CliRunner()
ROOT = typer.main.get_command(app)
RUN_COMMANDS = ("finetune", "demo", "frontier", "weights", "reproduce")  # every command that starts runs

QUOTED = re.compile(r"`(flowvision [^`]+)`")
OPTION = re.compile(r"(?<![\w`/-])(--[a-z][a-z0-9-]*)")


def printed_commands(text: str) -> list[str]:
    """Every flowvision command in printed text: a `quoted` one, or a line that is one command."""
    found = [m.group(1) for m in QUOTED.finditer(text)]
    for line in text.splitlines():
        line = line.strip().strip("│").strip()
        if line.startswith("flowvision ") and "`" not in line:
            found.append(line)
    return list(dict.fromkeys(" ".join(c.split()) for c in found))


def _args(command: str) -> list[str]:
    return shlex.split(command)[1:]


def _options(name: str) -> set[str]:
    cmd = ROOT
    for part in name.split():
        cmd = cmd.commands[part]
    return {o for p in cmd.params if p.param_type_name == "option" for o in (*p.opts, *p.secondary_opts)}


def _subcommand(args: list[str]) -> list[str]:
    """The (sub)command path of an argument list: ['data', 'status'], ['finetune']."""
    cmd, path = ROOT, []
    for a in args:
        if not isinstance(getattr(cmd, "commands", None), dict) or a not in cmd.commands:
            break
        cmd = cmd.commands[a]
        path.append(a)
    return path


def _pairs(args: list[str]) -> set:
    """(command, option, value) of one argument list: what a sample must cover."""
    path = " ".join(_subcommand(args))
    pairs, i = set(), len(path.split())
    while i < len(args):
        token = args[i]
        if token.startswith("--"):
            value = args[i + 1] if i + 1 < len(args) and not args[i + 1].startswith("--") else ""
            pairs.add((path, token, value if token != "--seed" else ""))  # a seed never decides what parses
            i += 2 if value else 1
        else:
            i += 1
    return pairs | {(path, "", "")}


def covering(commands: list[str]) -> list[str]:
    """A few commands between which every command × option × value of ``commands`` appears at least once."""
    left = {c: _pairs(_args(c)) for c in commands}
    seen, chosen = set(), []
    while left:
        best = max(left, key=lambda c: len(left[c] - seen))
        if not left[best] - seen:
            break
        chosen.append(best)
        seen |= left.pop(best)
    return chosen


def check_commands(text: str, where: str, run: int = 0, tmp: Path = None) -> list[str]:
    """Parse every command printed in ``text``; with ``run``, run a covering sample of at most ``run`` of them with
    --dry-run (those that have it): each exits 0, or 2 naming only missing inputs (no 'error:' line)."""
    commands = printed_commands(text)
    problems = [f"{where}: `{c}`: {p}" for c in commands for p in command_problems(_args(c), ROOT)]
    dry = [c for c in commands if "--dry-run" in _options(" ".join(_subcommand(_args(c))) or "finetune")
           and _subcommand(_args(c)) and not any(PLACEHOLDER.match(a) or a in ELLIPSIS for a in _args(c))]
    sample = covering(dry)
    assert len(sample) <= max(run, 0) or not run, (where, len(sample), sample)
    for command in sample if run else ():
        args = _args(command)
        args += [] if "--dry-run" in args else ["--dry-run"]
        if (tmp is not None and "--results-dir" not in args and "results_dir=" not in command
                and "--results-dir" in _options(_subcommand(args)[0])):
            args += ["--results-dir", str(tmp / "results")]
        res = runner.invoke(app, args)
        errors = [line for line in res.output.splitlines() if line.startswith("error:") or "Usage:" in line]
        if res.exit_code not in (0, 2) or errors or res.exception and not isinstance(res.exception, SystemExit):
            problems.append(f"{where}: `{command}` --dry-run: exit {res.exit_code}: {errors or res.output[-400:]}")
    return problems


def options_named(text: str, command: str) -> list[str]:
    """The options the prose of a message names (commands quoted in it left out) that ``command`` lacks."""
    prose = QUOTED.sub("", text)
    prose = "\n".join(line for line in prose.splitlines() if not line.strip().startswith("flowvision "))
    own = _options(command)
    return sorted({o for o in OPTION.findall(prose) if o not in own})


# ---- what prints commands --------------------------------------------------------------------------------------
def _results(root: Path) -> Path:
    """A results folder with what the ledger and the tables show: demo runs at the defaults and off them, a
    folder run, and real runs of the paper grid under both protocols, at and off the paper's settings."""
    demo_off = keyed_values(resolve("gratings", "demo", "ft", {"lr": 0.001, "epochs": 1}))
    for seed in (0, 1):
        write_run(root, f"g-ft-s{seed}", model="demo", dataset="gratings", synthetic=True, method="ft", seed=seed,
                  source_eval_name="shapes val", source_eval="shapes(1000)")
        write_run(root, f"g-ft-lr-s{seed}", model="demo", dataset="gratings", synthetic=True, method="ft", seed=seed,
                  lr=0.001, epochs=1, config=demo_off, config_id="0ff1")
        write_run(root, f"g-flow-s{seed}", model="demo", dataset="gratings", synthetic=True, seed=seed, tau_rule="p25")
    write_run(root, "birds-flow", dataset="folder:/home/someone/birds", model="tf_efficientnet_lite0",
              weights="tf_efficientnet_lite0.in1k")
    for protocol in ("clean", "paper"):
        write_run(root, f"c10-flow-{protocol}", dataset="cifar10", model="resnet18", weights="resnet18.tv_in1k",
                  protocol=protocol)
    write_run(root, "c10-ft-off", dataset="cifar10", model="resnet18", weights="resnet18.tv_in1k", method="ft",
              config=keyed_values(resolve("cifar10", "resnet18", "ft", {"epochs": 1})), config_id="0ff2")
    return root


def test_every_command_in_the_ledger_the_fill_list_and_the_table_hints_parses_and_dry_runs(tmp_path):
    results = _results(tmp_path / "results")
    res = runner.invoke(app, ["table", "--results-dir", str(results), "--show-commands", "1000"])
    assert res.exit_code == 0, res.output
    ledger = (results / "REPRODUCIBILITY.md").read_text()
    assert len(printed_commands(ledger)) >= 20 and len(printed_commands(res.output)) >= 200
    # one sample for both (a value the ledger's commands cover needs no second dry run from the table's)
    problems = check_commands(ledger + "\n" + res.output, "REPRODUCIBILITY.md and flowvision table", run=16, tmp=tmp_path)
    problems += [f"flowvision table names {o}" for o in options_named(res.output, "table")]
    assert not problems, "\n".join(problems)


def test_every_command_in_data_status_and_the_dry_runs_parses(tmp_path):
    folder = tmp_path / "birds" / "robin"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("not an image")
    root = ["--data-root", str(tmp_path / "data")]
    outputs = {
        "data status": runner.invoke(app, ["data", "status", *root, "--dataset", f"folder:{tmp_path / 'birds'}"]),
        "reproduce": runner.invoke(app, ["reproduce", "--model", "resnet18", "--datasets", "paper", "--seeds", "1",
                                         "--dry-run", *root, "--results-dir", str(tmp_path / "r")]),
        "finetune": runner.invoke(app, ["finetune", "--dataset", "cifar10", "--dry-run", *root,
                                        "--results-dir", str(tmp_path / "r")]),
        "frontier": runner.invoke(app, ["frontier", "--dataset", "cifar10", "--dry-run", *root,
                                        "--results-dir", str(tmp_path / "r")]),
    }
    problems = []
    for name, res in outputs.items():
        assert res.exit_code in (0, 2) and "Traceback" not in res.output, (name, res.output)
        assert printed_commands(res.output), (name, res.output)
        problems += check_commands(res.output, name, run=8, tmp=tmp_path)
        problems += [f"{name} names {o}" for o in options_named(res.output, name)]
    assert not problems, "\n".join(problems)


def test_the_cuda_build_warning_names_an_option_every_command_that_prints_it_has():
    from flowvision.core.hardware import cuda_build_without_gpu

    import torch

    warning = cuda_build_without_gpu()
    if warning is None:
        pytest.skip(f"torch {torch.__version__} here is a CPU build or sees a GPU: the warning is not printed")
    assert "--device cpu" in warning
    for command in RUN_COMMANDS:
        assert not options_named(warning, command), (command, warning)


def test_hints_after_a_grid_and_without_runs_name_commands_that_parse(tiny):
    results = tiny["results_dir"]
    sets = [a for k, v in tiny.items() if k not in ("results_dir",) for a in ("--set", f"{k}={v}")]
    grid = runner.invoke(app, ["reproduce", "--model", "demo", "--datasets", "gratings", "--methods", "lp",
                               "--seeds", "1", "--results-dir", results, *sets])
    status = runner.invoke(app, ["status", "--results-dir", results])
    plot = runner.invoke(app, ["plot", "--results-dir", str(Path(results) / "nothing")])
    problems = []
    for name, res in (("reproduce", grid), ("status", status), ("plot", plot)):
        assert printed_commands(res.output), (name, res.output)
        problems += check_commands(res.output, name)
        problems += [f"{name} names {o}" for o in options_named(res.output, name)]
    assert not problems, "\n".join(problems)


def test_the_checks_here_can_fail():
    """The checker finds a method the CLI rejects, an option a command lacks, and a prose option."""
    bad = "fill it with `flowvision reproduce --model resnet18 --methods pretrained --seeds 1` or\n" \
          "  flowvision finetune --no-such-option 1\n"
    problems = check_commands(bad, "here", run=2)
    assert any("--no-such-option" in p for p in problems) and any("pretrained" in p for p in problems), problems
    assert options_named("pass --device cpu to say so", "frontier") == []  # every command that starts runs has it
    assert options_named("pass --device cpu to say so", "table") == ["--device"]
    assert options_named("pass --nope to say so; `flowvision finetune --nope`", "table") == ["--nope"]
