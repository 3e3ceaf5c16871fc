"""One rich console (stderr, so stdout stays clean for tables) and one progress-bar style."""
from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from dataclasses import replace
from typing import Callable, Optional

from rich.console import Console, Group
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table as RichTable
from rich.text import Text

# Piped or captured output is not cut to 80 columns: tables stay whole in logs and files.
_WIDTH = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", 160))
console = Console(stderr=True, width=_WIDTH)
out = Console(width=_WIDTH)


class Table(RichTable):
    """The one table every command prints: it never cuts what a person must copy.

    A column added with ``no_wrap=True`` holds ids, names or keys (a run id, a data set, a model, a
    config id): it keeps its longest cell on one line. Every other cell wraps (and folds a long word)
    instead of ending in '…'. A table that is still wider than the console is printed as several,
    each repeating the ``no_wrap`` columns beside as many of the others as fit. Where the ``no_wrap``
    columns themselves leave no room for another (a folder path and a long model tag at 80 columns),
    each row is printed as a block of ``header  value`` lines, its values folded at the console's edge:
    a table prints at any width and with any content. Paths and commands too long for any column are
    printed under the table as plain lines (``line``), not put in a cell."""

    def __rich_console__(self, console, options):
        for column in self.columns:
            body = list(column.cells)
            cells = [column.header, *body]
            if column.no_wrap:
                column.min_width = max(_cell_len(c) for c in cells)
            else:  # a short cell ('71.30 ± 0.52') stays on one line, a word in a longer one whole up to 24 columns
                whole = max((_cell_len(c) for c in body), default=0)
                word = max(_cell_len(c, words=True) for c in cells)
                column.overflow, column.min_width = "fold", max(word, whole) if whole <= 16 else min(word, 24)
        if isinstance(self.title, (str, Text)):  # a run id in the title is not folded either
            self.min_width = max(self.min_width or 0, _cell_len(self.title, words=True))
        width = options.max_width if self.width is None else self.width
        if len(self.columns) < 2 or _least(self) <= width:
            yield from RichTable.__rich_console__(_fitted(self, console, options, width), console, options)
        elif self._splits(width):
            yield Group(*self._parts(width, console, options))
        else:
            yield self._records()

    def _ids(self) -> list:
        return [c for c in self.columns if c.no_wrap] or self.columns[:1]

    def _splits(self, width: int) -> bool:
        """Whether the table can be cut by columns into parts that fit ``width``: the ids beside each
        other column, one at a time, fit."""
        ids = self._ids()
        rest = [c for c in self.columns if c not in ids]
        return bool(rest) and all(_least(self._part(ids + [c])) <= width for c in rest)

    def _parts(self, width: int, console, options) -> list:
        """The table cut by columns into tables that fit ``width``, ids repeated in each."""
        ids = self._ids()
        rest, parts = [c for c in self.columns if c not in ids], []
        while rest:
            chosen = [rest.pop(0)]
            while rest and _least(self._part(ids + chosen + rest[:1])) <= width:
                chosen.append(rest.pop(0))
            parts.append(chosen)
        tables = []
        for i, chosen in enumerate(parts):
            part = self._part([c for c in self.columns if c in ids or c in chosen])
            part.title = (f"{self.title} ({i + 1} of {len(parts)})" if self.title and isinstance(self.title, str)
                          else Text.assemble(self.title, f" ({i + 1} of {len(parts)})") if self.title else None)
            part.caption = None
            if part.title:  # the title on one line where the console has room for it
                part.min_width = max(part.min_width or 0, min(width, _cell_len(part.title)))
            tables.append(_fitted(part, console, options, width))
        if self.caption:  # under the last part, at the console's width rather than that part's
            tables.append(Text(self.caption) if isinstance(self.caption, str) else self.caption)
        return tables

    def _records(self) -> RichTable:
        """The table as one block per row: each column's header beside the row's value, every value
        folded where the console ends (ids included: at this width nothing else can hold them)."""
        block = RichTable(title=self.title, caption=self.caption, title_justify=self.title_justify,
                          caption_justify=self.caption_justify, show_header=False, box=self.box)
        block.add_column(overflow="fold", style="bold")
        block.add_column(overflow="fold")
        headers = [" ".join(str(c.header).split()) if isinstance(c.header, str) else c.header for c in self.columns]
        cells = [list(c.cells) for c in self.columns]
        for r in range(self.row_count):
            shown = [i for i in range(len(headers)) if str(cells[i][r]).strip()]
            for i in shown:  # an empty cell says nothing in this layout: its line is left out
                block.add_row(headers[i], cells[i][r], end_section=i == shown[-1])
        return block

    def _part(self, columns) -> RichTable:
        part = _plain_copy(self)
        part.columns = [replace(c, _index=i, _cells=list(c.cells)) for i, c in enumerate(columns)]
        return part


def _fitted(table: RichTable, console, options, width: int) -> RichTable:
    """``table`` itself where its columns fit ``width`` at their natural widths; else a copy whose columns
    each get their least width plus a share of the room left, in proportion to what each lacks of its
    natural width. (rich's own collapse narrows the widest columns first; a column's least width then
    pushes it back, and the table came out wider than the console with its last column cut.)"""
    least = [c.min_width or 1 for c in table.columns]
    natural = [max(n, table._measure_column(console, options, c).maximum - table._get_padding_width(c._index))
               for n, c in zip(least, table.columns)]
    lack, room = [n - m for n, m in zip(natural, least)], width - _least(table)
    if room >= sum(lack):
        return table
    shares = [room * gap // sum(lack) for gap in lack]
    for i in sorted(range(len(lack)), key=lambda i: -lack[i])[:room - sum(shares)]:
        shares[i] += 1  # the rounding's leftover, to the columns that lack most
    fitted = _plain_copy(table)
    fitted.columns = [replace(c, _index=i, _cells=list(c.cells), width=base + share)
                      for i, (c, base, share) in enumerate(zip(table.columns, least, shares))]
    return fitted


def _plain_copy(table: Table) -> RichTable:
    """A plain rich Table with ``table``'s look, columns and rows (measured or printed as it is)."""
    plain = RichTable.__new__(RichTable)
    plain.__dict__.update(table.__dict__)
    return plain


def _least(table: RichTable) -> int:
    """The narrowest width at which no column is below its ``min_width`` (padding and borders as rich
    counts them)."""
    return sum((c.min_width or 1) + table._get_padding_width(i) for i, c in enumerate(table.columns)) + table._extra_width


def _cell_len(cell, words: bool = False) -> int:
    """The widest line (or with ``words`` the widest word) of a cell as printed, markup removed; 1 for
    a renderable that is not text."""
    from rich.errors import MarkupError

    try:
        text = Text.from_markup(cell) if isinstance(cell, str) else cell
    except MarkupError:
        text = Text(cell)
    if not isinstance(text, Text):
        return 1
    return max((Text(part).cell_len for part in (text.plain.split() if words else text.plain.splitlines())), default=1)


def line(text: str, style: str | None = None) -> None:
    """One line on stdout that is never wrapped or cut by the console (a path, a command): the terminal
    wraps it, a pipe gets it whole."""
    out.print(text, style=style, highlight=False, soft_wrap=True, markup=False)


# A command in prose: a `quoted` span, or a bare `flowvision …` that ends the text (after a ': ').
_COMMAND = re.compile(r"`([^`]+)`|(?:^|(?<=: ))(flowvision [^;`]*)$")


def commands_apart(text: str, lead: str | Text = "", indent: str = "") -> list:
    """Prose that names commands (``how_to_get``, a dry run's fix) as items for ``show``: the prose as Text
    that wraps (indented by ``indent`` on every line it takes), each command a line (str) of its own two
    columns in, never wrapped or cut. ``lead`` opens the first line (on a text that is one command, that
    command's line)."""
    from rich.padding import Padding

    items, at = [], 0

    def prose(part: str) -> None:
        opening = lead if not items else ""
        if part.strip() or opening:
            text = Text.assemble(opening, part.strip())
            text.rstrip()
            # indented prose keeps its indent on every line it wraps to (a fix under its file in a dry run)
            items.append(Padding(text, (0, 0, 0, len(indent)), expand=False) if indent else text)

    for match in _COMMAND.finditer(text):
        command = (match[1] or match[2]).strip()
        if at == 0 and lead and not text[:match.start()].strip():
            items.append(f"{indent}{lead.plain if isinstance(lead, Text) else lead}{command}")
        else:
            prose(text[at:match.start()])
            items.append(f"{indent}  {command}")
        at = match.end()
    prose(text[at:])
    return items


def plural(n: int, word: str) -> str:
    """'1 run', '2 runs': a count as a person reads it."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def show(item) -> None:
    """Print a table (or any rich renderable), or a str as a ``line`` (whole, never cut)."""
    if isinstance(item, str):
        line(item)
    else:
        out.print(item)


def _quiet() -> bool:
    return os.environ.get("FLOWVISION_QUIET") == "1" or not _main_process()


def _main_process() -> bool:
    """False in the ranks of a torchrun other than 0: rank 0 alone shows progress."""
    if "torch.distributed" not in sys.modules:
        return True
    from .distributed import is_main

    return is_main()


def plain() -> bool:
    """Progress as plain lines: stderr is a log file or pipe (nohup, Slurm), where a live bar would
    print nothing until it ends."""
    return not console.is_terminal


def progress():
    """A progress bar with count, elapsed time and ETA on a terminal; elsewhere ``PlainProgress``
    lines. FLOWVISION_QUIET=1 hides both (tests)."""
    if plain():
        return PlainProgress(every=log_steps(), disable=_quiet())
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(),
        TextColumn("{task.fields[unit]} {task.completed:.0f} of {task.total:.0f}"),
        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
        console=console, transient=False, disable=_quiet(),
    )


def log_steps() -> int:
    """FLOWVISION_LOG_STEPS: steps between two progress lines in a log (default 100); anything but a
    whole number ≥ 1 is a UserError."""
    from .errors import env_number

    return env_number("FLOWVISION_LOG_STEPS", 100, "give a whole number of steps ≥ 1 between progress lines in a "
                      "log (default 100), or unset it")


def log_line(text: str) -> None:
    """One line for a log file (an epoch's summary); on a terminal the progress bar shows it instead."""
    if plain() and not _quiet():
        console.print(f"{time.strftime('%H:%M:%S')} {text}", highlight=False, soft_wrap=True, markup=False)


# Who hears of each finished epoch (the run's state file, ``stages.runstate``): the training loop reports
# through ``epoch_done`` without knowing which run, if any, it serves.
_epoch_listener: Optional[Callable[[str, list, int], None]] = None


@contextlib.contextmanager
def epochs_to(listener: Callable[[str, list, int], None]):
    """While the block runs, ``listener(desc, rows, epochs)`` hears of every finished epoch."""
    global _epoch_listener
    _epoch_listener = listener
    try:
        yield
    finally:
        _epoch_listener = None


def epoch_done(desc: str, rows: list, epochs: int) -> None:
    """Called by the training loop after every epoch (and its checkpoint); a no-op outside a run."""
    if _epoch_listener is not None:
        _epoch_listener(desc, rows, epochs)


class PlainProgress:
    """The part of rich's Progress the loops use, printing a timestamped line every ``every`` steps
    and when a task completes (rich's live display writes nothing to a file until it stops)."""

    def __init__(self, every: int = 100, disable: bool = False):
        self.every, self.disable, self.tasks = max(1, every), disable, []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def add_task(self, description: str, total: int, completed: int = 0, info: str = "", unit: str = "batch",
                 epoch_steps: int = 0) -> int:
        """``unit``: what is counted ('batch 3 of 8'; rich's bar needs it given). ``epoch_steps``: the steps of
        one epoch, when the caller logs a line of its own at the end of each (``log_line``); no progress line
        is printed there, so an epoch is said once."""
        self.tasks.append({"desc": description, "total": total, "done": completed, "info": info, "unit": unit,
                           "t0": time.time(), "start": completed, "epoch_steps": epoch_steps})
        return len(self.tasks) - 1

    def update(self, task: int, advance: int = 0, info: str | None = None) -> None:
        t = self.tasks[task]
        t["info"] = t["info"] if info is None else info
        if not advance:
            return
        t["done"] += advance
        if t["epoch_steps"] and t["done"] % t["epoch_steps"] == 0:
            return
        if t["done"] % self.every == 0 or t["done"] == t["total"]:
            self._line(t)

    def advance(self, task: int, advance: int = 1) -> None:
        self.update(task, advance=advance)

    def _line(self, t: dict) -> None:
        if self.disable:
            return
        spent = time.time() - t["t0"]
        rate = (t["done"] - t["start"]) / spent if spent > 0 else 0
        eta = f", eta {(t['total'] - t['done']) / rate:.0f} s" if rate and t["done"] < t["total"] else ""
        info = f"{t['info']}, " if t["info"] else ""
        console.print(f"{time.strftime('%H:%M:%S')} {t['desc']}: {info}{t['unit']} {t['done']} of {t['total']}, "
                      f"{spent:.0f} s{eta}", highlight=False, soft_wrap=True, markup=False)


@contextlib.contextmanager
def user_errors():
    """Around a CLI command: a UserError becomes one red line on stderr and exit code 2 (no
    traceback); files already written stay as they are. Anything else is a bug and raises."""
    import typer

    from .errors import UserError

    try:
        yield
    except UserError as e:
        console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: finished stages are kept; run the same command again to resume")
        raise typer.Exit(130)
