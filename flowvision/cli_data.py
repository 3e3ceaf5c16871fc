"""`flowvision data ...`: what data is where, and fetching what can be fetched.

    flowvision data status --data-root /d [--imagenet /d/imagenet/val] [--dataset folder:PATH]
    flowvision data download cifar10 --data-root /d
    flowvision data sample-photos /d/in1k-sample      # 20 real labelled photos as a partial val folder

Thin on purpose: the logic lives in ``flowvision.data.fetch``; torch/torchvision are imported
inside the commands so ``flowvision --help`` stays instant. A UserError becomes one line and exit
code 2 (``user_errors``).
"""
from __future__ import annotations

from typing import List, Optional

import typer

from .console import user_errors
from .registry import REAL_DATASETS

data_app = typer.Typer(help="Real data sets: status (what is where) and download.", no_args_is_help=True)

DATA_ROOT_HELP = "Folder holding one sub-folder per data set (default: $FLOWVISION_DATA, else ./data)."


@data_app.command()
def status(
    data_root: Optional[str] = typer.Option(None, "--data-root", help=DATA_ROOT_HELP),
    imagenet: Optional[str] = typer.Option(
        None, "--imagenet", help="ImageNet-1K val folder of 1000 synset folders (default: $FLOWVISION_IMAGENET)."),
    datasets: Optional[List[str]] = typer.Option(
        None, "--dataset", help="Also a folder of your own images, folder:PATH (repeatable; default: none): its classes, counts "
                                "and problems (no image is opened)."),
) -> None:
    """Show, per data set, whether it is found, its train/test sizes and how to get it."""
    with user_errors():
        _status(data_root, imagenet, datasets or [])


def _status(data_root, imagenet, folders) -> None:
    from rich.markup import escape

    from .console import Table, out
    from .data.fetch import data_status, resolve_data_root, resolve_imagenet

    root = resolve_data_root(data_root)
    rows = data_status(root, imagenet=resolve_imagenet(imagenet), folders=folders)
    table = Table(title=f"data sets under {escape(str(root))}")
    for column, justify in (("data set", "left"), ("found", "left"), ("train", "right"), ("test", "right"),
                            ("path", "left")):
        table.add_column(column, justify=justify, no_wrap=column == "data set")
    for r in rows:
        table.add_row(r["name"], "[green]yes[/]" if r["found"] else "[red]no[/]", _count(r["n_train"]),
                      _count(r["n_test"]), escape(r["path"] or "-"))
    out.print(table)
    # Steps and problems go below the table, one per line, so they stay readable at any width.
    for r in rows:
        plain_missing = (r["problem"] or "").startswith(f"{r['name']} not found")
        if r["problem"] and not plain_missing:
            out.print(f"[bold]{r['name']}[/]: [yellow]{escape(r['problem'])}[/]")
        if not r["found"]:
            out.print(f"[bold]{r['name']}[/]: {escape(r['how_to_get'])}")


def _count(n) -> str:
    return "-" if n is None else f"{n:,}"


@data_app.command()
def download(
    name: str = typer.Argument(..., help=f"{' | '.join(REAL_DATASETS)} | imagenet (for those torchvision "
                                         "cannot fetch it prints the manual steps)"),
    data_root: Optional[str] = typer.Option(None, "--data-root", help=DATA_ROOT_HELP),
) -> None:
    """Download a data set with torchvision into <data-root>/<name>/ and check it loads."""
    from .console import out
    from .data.fetch import download as fetch
    from .data.fetch import resolve_data_root

    with user_errors():
        row = fetch(name, resolve_data_root(data_root))
    out.print(f"{name}: {row['n_train']:,} train / {row['n_test']:,} test images under {row['path']}")


@data_app.command("sample-photos")
def sample_photos(out_dir: str = typer.Argument(..., help="New folder to write <synset>/<photo>.jpg into.")) -> None:
    """A partial ImageNet val folder from the 20 labelled photos foolbox ships (for --imagenet or
    --source-eval; accuracy on it is marked partial)."""
    from .console import out
    from .data.imagenet import build_sample_folder

    with user_errors():
        res = build_sample_folder(out_dir)
    out.print(f"wrote {res['images']} photos of {res['classes']} classes under {res['folder']}", highlight=False)
