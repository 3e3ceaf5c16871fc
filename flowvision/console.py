"""One rich console (stderr, so stdout stays clean for tables) and one progress-bar style."""
from __future__ import annotations

import contextlib
import os
import sys
import time

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

# Piped or captured output is not cut to 80 columns: tables stay whole in logs and files.
_WIDTH = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", 160))
console = Console(stderr=True, width=_WIDTH)
out = Console(width=_WIDTH)


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
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
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


class PlainProgress:
    """The part of rich's Progress the loops use, printing a timestamped line every ``every`` steps
    and when a task completes (rich's live display writes nothing to a file until it stops)."""

    def __init__(self, every: int = 100, disable: bool = False):
        self.every, self.disable, self.tasks = max(1, every), disable, []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def add_task(self, description: str, total: int, completed: int = 0, info: str = "") -> int:
        self.tasks.append({"desc": description, "total": total, "done": completed, "info": info,
                           "t0": time.time(), "start": completed})
        return len(self.tasks) - 1

    def update(self, task: int, advance: int = 0, info: str | None = None) -> None:
        t = self.tasks[task]
        t["info"] = t["info"] if info is None else info
        if not advance:
            return
        t["done"] += advance
        if t["done"] % self.every == 0 or t["done"] == t["total"]:
            self._line(t)

    def advance(self, task: int, advance: int = 1) -> None:
        self.update(task, advance=advance)

    def _line(self, t: dict) -> None:
        if self.disable:
            return
        spent = time.time() - t["t0"]
        rate = (t["done"] - t["start"]) / spent if spent > 0 else 0
        eta = f" eta {(t['total'] - t['done']) / rate:.0f} s" if rate and t["done"] < t["total"] else ""
        console.print(f"{time.strftime('%H:%M:%S')} {t['desc']}: {t['done']}/{t['total']} {t['info']} "
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
