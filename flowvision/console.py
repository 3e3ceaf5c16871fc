"""One rich console (stderr, so stdout stays clean for tables) and one progress-bar style."""
from __future__ import annotations

import contextlib
import os
import sys

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

# Piped or captured output is not cut to 80 columns: tables stay whole in logs and files.
_WIDTH = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", 160))
console = Console(stderr=True, width=_WIDTH)
out = Console(width=_WIDTH)


def progress() -> Progress:
    """A progress bar with count, elapsed time and ETA; FLOWVISION_QUIET=1 hides it (tests, logs)."""
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
        console=console, transient=False, disable=os.environ.get("FLOWVISION_QUIET") == "1",
    )


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
