"""The documentation as a newcomer meets it: README.md and docs/*.md link only to files (and headings)
that exist, and every `flowvision ...` command they show names a command, options and config keys that
exist.

Commands are checked against Click's view of the CLI (``typer.main.get_command``: commands, their
params with ``opts``/``secondary_opts``), not by running them: parsing every command line of the docs
takes milliseconds, a subprocess each would take minutes. Typer ships its own copy of Click, so the
objects are read by their attributes (``commands``, ``param_type_name``), not by isinstance.
What is checked is what ``--help`` would tell: the (sub)command exists, every ``--option`` is one of
its options, an option that takes a value has one, a flag has none, no more positional arguments than
it takes, and every ``--set KEY=...`` names a config key. Values themselves (a data set's name, a path)
are not checked: the docs use placeholders (``PATH``, ``/data``, ``...``).
"""
from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path
from urllib.parse import unquote

import pytest
import typer

from flowvision.cli import app
from flowvision.core.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_MAX_LINES = 200   # the front door: set-up, the user's own run, results, where to read on

FENCE = re.compile(r"^\s*(```|~~~)")
# [text](target) and ![alt](target), with an optional "title"; target may be <wrapped>.
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"`([^`]+)`", re.S)
HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:|^//")
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*$")       # COMMAND, NAME, PATH: stands for any value
ELLIPSIS = ("...", "…")
SET_KEY = re.compile(r"--set[ =]([A-Za-z_][A-Za-z0-9_]*)=")


def doc_files() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


# ---- reading markdown -----------------------------------------------------------------------------
def split_code(text: str) -> tuple[str, list[tuple[int, str]]]:
    """(the text with fenced blocks blanked, line numbers kept; the fenced blocks' logical lines as
    (first line number, line), continuation lines ending in a backslash joined)."""
    prose, code = [], []
    fenced, pending, start = False, "", 0
    for n, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            prose.append("")
            continue
        if not fenced:
            prose.append(line)
            continue
        prose.append("")
        if not pending:
            start = n
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        code.append((start, pending + line))
        pending = ""
    if pending:
        code.append((start, pending))
    return "\n".join(prose), code


def _blank_inline_code(prose: str) -> str:
    """Inline code spans replaced by spaces (newlines kept), so a link written as code is not a link."""
    return INLINE_CODE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), prose)


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def heading_anchors(text: str) -> set[str]:
    """GitHub's anchors for the headings of a markdown text: the rendered heading lower-cased, every
    character but letters, digits, '_', '-' and spaces dropped, spaces turned into '-'; a repeated
    heading gets -1, -2, ..."""
    prose, _ = split_code(text)
    anchors, seen = set(), {}
    for line in prose.splitlines():
        m = HEADING.match(line)
        if not m:
            continue
        rendered = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", m.group(1))   # a link renders as its text
        rendered = re.sub(r"[`*]", "", rendered)
        slug = re.sub(r"[^\w\- ]", "", rendered.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


# ---- links ----------------------------------------------------------------------------------------
def link_problems(doc: Path, text: str) -> list[str]:
    prose, _ = split_code(text)
    prose = _blank_inline_code(prose)
    problems = []
    for m in LINK.finditer(prose):
        target = m.group(1)
        if SCHEME.match(target):
            continue   # a web address: not checked here (no network in tests)
        where = f"{_rel(doc)}:{_line_of(prose, m.start())}"
        path_part, _, anchor = target.partition("#")
        dest = (doc.parent / unquote(path_part)).resolve() if path_part else doc
        if not dest.exists():
            problems.append(f"{where}: link to {target!r}: {_rel(dest)} does not exist")
            continue
        if anchor and dest.suffix == ".md" and dest.is_file():
            anchors = heading_anchors(dest.read_text(encoding="utf-8"))
            if anchor not in anchors:
                problems.append(f"{where}: link to {target!r}: {_rel(dest)} has no heading #{anchor} "
                                f"(it has: {', '.join(sorted(anchors)) or 'no headings'})")
    return problems


# ---- commands -------------------------------------------------------------------------------------
def _flowvision_args(line: str) -> list[str] | None:
    """The arguments after `flowvision` in one shell line, or None when the line runs no flowvision
    command. Knows `$ ` prompts, `# comments`, `VAR=value` prefixes, `.venv/bin/flowvision` and
    `torchrun ... -m flowvision` / `python -m flowvision`."""
    line = line.strip()
    if line.startswith("$ "):
        line = line[2:]
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError:
        return None
    while tokens and ENV_ASSIGNMENT.match(tokens[0]):
        tokens.pop(0)
    if not tokens:
        return None
    if Path(tokens[0]).name == "flowvision":
        return tokens[1:]
    for i in range(len(tokens) - 1):
        if tokens[i] == "-m" and tokens[i + 1] == "flowvision" and Path(tokens[0]).name in ("torchrun", "python",
                                                                                              "python3"):
            return tokens[i + 2:]
    return None


def _is_group(cmd) -> bool:
    return isinstance(getattr(cmd, "commands", None), dict)


def _options(cmd) -> dict:
    """Every spelling of every option of a Click command (``--dry-run``, and ``--no-x`` of a ``--x/--no-x``
    pair) -> its parameter."""
    return {name: p for p in cmd.params if p.param_type_name == "option" for name in (*p.opts, *p.secondary_opts)}


def _takes_value(option) -> bool:
    return not (option.is_flag or option.count)


def command_problems(args: list[str], root=None) -> list[str]:
    """What `--help` would object to in `flowvision ARGS`; [] when it parses."""
    root = root or typer.main.get_command(app)
    cmd, path, i = root, ["flowvision"], 0
    help_names = set(root.context_settings.get("help_option_names", ["--help"]))
    while _is_group(cmd):
        if i == len(args) or args[i] in help_names or args[i] in ELLIPSIS or PLACEHOLDER.match(args[i]):
            return []   # the group's own help, or a placeholder for any command
        sub = cmd.commands.get(args[i])
        if sub is None:
            return [f"`{' '.join(path)}` has no command {args[i]!r} (it has: {', '.join(sorted(cmd.commands))})"]
        cmd, i = sub, i + 1
        path.append(sub.name)
    name = " ".join(path)
    options = _options(cmd)
    n_args = [p.nargs for p in cmd.params if p.param_type_name == "argument"]
    most = float("inf") if any(n < 0 for n in n_args) else sum(n_args)
    problems, positional = [], 0
    while i < len(args):
        token = args[i]
        i += 1
        if token in ELLIPSIS:
            continue
        if not token.startswith("-") or token == "-" or re.match(r"^-\d", token):
            positional += 1
            continue
        opt, eq, _ = token.partition("=")
        if opt in help_names:
            continue
        option = options.get(opt)
        if option is None:
            problems.append(f"`{name}` has no option {opt} (it has: {', '.join(sorted(options))})")
            if not eq and i < len(args) and not args[i].startswith("-"):
                i += 1   # what follows is probably its value, not a positional argument
        elif _takes_value(option) and not eq:
            if i == len(args):
                problems.append(f"`{name}` {opt} needs a value")
            i += 1
        elif not _takes_value(option) and eq:
            problems.append(f"`{name}` {opt} is a flag and takes no value ({token})")
    if positional > most:
        problems.append(f"`{name}` takes {most} positional argument(s), the line gives {positional}")
    return problems


CONFIG_KEYS = {f.name for f in dataclasses.fields(RunConfig)}


def doc_commands(text: str) -> list[tuple[int, str, list[str]]]:
    """Every flowvision command a markdown text shows: (line, as written, arguments), from the lines
    of fenced code blocks and from inline code spans that start with `flowvision `."""
    prose, code = split_code(text)
    found = []
    for line_no, line in code:
        args = _flowvision_args(line)
        if args is not None:
            found.append((line_no, line.strip(), args))
    for m in INLINE_CODE.finditer(prose):
        span = " ".join(m.group(1).split())
        if span.startswith(("flowvision ", "$ flowvision ")):
            args = _flowvision_args(span)
            if args is not None:
                found.append((_line_of(prose, m.start()), span, args))
    return found


def doc_command_problems(doc: Path, text: str, root=None) -> list[str]:
    root = root or typer.main.get_command(app)
    problems = []
    for line_no, written, args in doc_commands(text):
        wrong = command_problems(args, root)
        if wrong:
            problems.append(f"{_rel(doc)}:{line_no}: {written}\n    -> " + "\n    -> ".join(wrong))
    # `--set KEY=value` anywhere (prose or code) names a config key.
    for m in SET_KEY.finditer(text):
        if m.group(1) not in CONFIG_KEYS:
            problems.append(f"{_rel(doc)}:{_line_of(text, m.start())}: --set {m.group(1)}=...: no config key "
                            f"{m.group(1)!r}")
    return problems


def problems_in(doc: Path) -> list[str]:
    text = doc.read_text(encoding="utf-8")
    return link_problems(doc, text) + doc_command_problems(doc, text)


def _report(problems: list[str]) -> str:
    return f"{len(problems)} problem(s) in the docs:\n" + "\n".join(problems)


# ---- the tests ------------------------------------------------------------------------------------
def test_every_relative_link_in_the_docs_resolves():
    problems = [p for doc in doc_files() for p in link_problems(doc, doc.read_text(encoding="utf-8"))]
    if problems:
        pytest.fail(_report(problems), pytrace=False)


def test_every_flowvision_command_in_the_docs_parses():
    root = typer.main.get_command(app)
    shown = [c for doc in doc_files() for c in doc_commands(doc.read_text(encoding="utf-8"))]
    assert len(shown) > 30, "the docs show fewer flowvision commands than expected: is the extraction broken?"
    problems = [p for doc in doc_files() for p in doc_command_problems(doc, doc.read_text(encoding="utf-8"), root)]
    if problems:
        pytest.fail(_report(problems), pytrace=False)


def test_readme_is_a_front_door_that_links_every_docs_page():
    text = README.read_text(encoding="utf-8")
    lines = text.count("\n") + (not text.endswith("\n"))
    assert lines <= README_MAX_LINES, (f"README.md has {lines} lines (at most {README_MAX_LINES}): move detail "
                                       "into a docs/ page and link it")
    assert "make demo" in text and "make test" in text
    linked = {(README.parent / unquote(t.partition("#")[0])).resolve()
              for t in LINK.findall(_blank_inline_code(split_code(text)[0]))}
    unlinked = [_rel(p) for p in doc_files()[1:] if p.resolve() not in linked]
    assert not unlinked, f"README.md does not link these docs pages: {', '.join(unlinked)}"


# The checker itself must be able to fail: a page with one of each mistake, and the forms it must accept.
BAD_PAGE = """# A page

## Good heading

[ok](other.md) [ok with anchor](other.md#a-heading) [here](#good-heading) ![fig](other.md)
[web](https://example.org/missing) `[not a link](nowhere.md)`
[missing](nowhere.md) [bad anchor](other.md#no-such-heading) ![missing figure](figures/none.png)

```bash
flowvision finetune --dataset cifar10 --tau 1.0 \\
    --set probe_epochs=2 --imagenet=PATH   # a comment --no-such-option
OMP_NUM_THREADS=1 flowvision demo --seeds 8
$ flowvision data status --data-root /data
torchrun --nproc-per-node 4 -m flowvision finetune --dataset cifar10 ...
flowvision import-weights CKPT.pth --arch ARCH --out FILE.safetensors
flowvision finetune --dataset cifar10 --no-such-option 3
flowvision finetune --dry-run=yes --seed
flowvision data nosuch
flowvision import-weights A.pth B.pth --arch ARCH --out F
torchrun --nproc-per-node 2 -m flowvision finetune --also-not-an-option
```

Run `flowvision frontier --taus p10,median` or `flowvision COMMAND --help`; not `flowvision
bench --no-such-flag`, and not `--set no_such_key=1`.
"""


def test_the_checker_reports_each_bad_link_command_and_key_and_accepts_the_good_ones(tmp_path):
    (tmp_path / "other.md").write_text("# Title\n\n## A heading\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(BAD_PAGE, encoding="utf-8")
    problems = problems_in(page)
    text = "\n".join(problems)
    expected = ["nowhere.md", "#no-such-heading", "figures/none.png", "--no-such-option", "--dry-run is a flag",
                "--seed needs a value", "no command 'nosuch'", "takes 1 positional argument(s), the line gives 2",
                "--also-not-an-option", "--no-such-flag", "no_such_key"]
    for needle in expected:
        assert sum(needle in p for p in problems) == 1, f"{needle!r} reported {sum(needle in p for p in problems)}× in:\n{text}"
    assert len(problems) == 10, text   # 3 links, 6 command lines (one with two mistakes), 1 config key
    # line numbers point at the offending line (a continued command: its first line)
    assert any(p.startswith(f"{page}:7: link to 'nowhere.md'") for p in problems), text
    assert any(p.startswith(f"{page}:16: flowvision finetune --dataset cifar10 --no-such-option") for p in problems), text


@pytest.mark.parametrize("heading,anchor", [
    ("## How a run's settings are resolved", "how-a-runs-settings-are-resolved"),
    ("## Protocols: `--protocol clean` and `paper`", "protocols---protocol-clean-and-paper"),
    ("### τ: the temperature", "τ-the-temperature"),
    ("## The store: run folders, stages and their keys", "the-store-run-folders-stages-and-their-keys"),
])
def test_heading_anchors_follow_github(heading, anchor):
    assert anchor in heading_anchors(heading + "\n")


def test_generated_outputs_are_ignored_by_git():
    """`make table` and `frontier` write into results/; what they write is regenerated, never committed."""
    import subprocess

    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    generated = ["results/REPRODUCIBILITY.md", "results/frontier/gratings-demo/points.csv",
                 "results/tables/vision.md", "results/runs/x/result.json", "results/figures/tradeoff_demo.pdf",
                 "results/logs/local-cpu0.log", "results/slurm/123_0_log.out"]
    kept = ["results/paper/vision.csv", "results/figures/readme-tau.png"]
    ignored = subprocess.run(["git", "check-ignore", *generated, *kept], cwd=ROOT, capture_output=True, text=True)
    assert ignored.stdout.split() == generated


def test_every_source_a_file_cites_is_in_the_repository():
    """A pointer such as "(see NOTES)" names a file of this repository (the measured facts live in docs/)."""
    cited = [p.relative_to(ROOT) for p in [README, *ROOT.glob("docs/*.md"), *ROOT.glob("flowvision/**/*.py")]
             if "ENV-NOTES" in p.read_text()]
    assert not cited
