"""`flowvision data ...`: what data is where, and fetching what can be fetched.

    flowvision data status --data-root /d [--imagenet /d/imagenet/val] [--dataset folder:PATH]
    flowvision data download cifar10 --data-root /d
    flowvision data sample-photos /d/in1k-sample      # 20 real labelled photos as a partial val folder
    flowvision data prepare imagenet --val-tar ILSVRC2012_img_val.tar --devkit ILSVRC2012_devkit_t12.tar.gz
    flowvision data prepare stanford_dogs --images images.tar --lists lists.tar --data-root /d
    flowvision data prepare stanford_cars --archive cars.zip --data-root /d

Thin on purpose: the logic lives in ``flowvision.data.fetch`` and ``flowvision.data.prepare``; torch/torchvision are imported
inside the commands so ``flowvision --help`` stays instant. A UserError becomes one line and exit
code 2 (``user_errors``).
"""
from __future__ import annotations

from typing import List, Optional

import typer

from ..core.console import user_errors
from ..core.registry import REAL_DATASETS

data_app = typer.Typer(help="Real data sets: status (what is where), download, and prepare (unpack the "
                                "archives downloaded by hand).", no_args_is_help=True)
prepare_app = typer.Typer(help="Unpack an archive downloaded by hand into the folder the loaders read, check it "
                               "as `data status` does, and put it in place only when complete.",
                          no_args_is_help=True)
data_app.add_typer(prepare_app, name="prepare")

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
    from rich.text import Text

    from ..core.console import Table, commands_apart, line, out, show
    from ..data.fetch import data_status, resolve_data_root, resolve_imagenet

    root = resolve_data_root(data_root)
    rows = data_status(root, imagenet=resolve_imagenet(imagenet), folders=folders)
    line(f"data root: {root}")  # whole on its own line: the folders in the table are under it
    table = Table()
    for column, justify in (("data set", "left"), ("found", "left"), ("classes", "right"), ("train", "right"),
                            ("test", "right"), ("folder", "left")):
        table.add_column(column, justify=justify, no_wrap=column == "data set")
    below = []  # a folder outside the data root, whole on its own line rather than folded in a cell
    for r in rows:
        folder = _folder(r["path"], root)
        if len(folder) > 30:
            below.append(f"{r['name']} folder: {folder}")
            folder = "(below)"
        table.add_row(escape(r["name"]), "[green]yes[/]" if r["found"] else "[red]no[/]", _count(r.get("classes")),
                      _count(r["n_train"]), _count(r["n_test"]), escape(folder))
    out.print(table)
    for text in below:
        line(text)
    # Steps and problems go below the table; commands each on a line of their own, whole at any width.
    for r in rows:
        lead = Text.assemble((r["name"], "bold"), ": ")
        # "not found" is the table's 'no'; how_to_get below says what to do
        said = not r["found"] and ("not found" in (r["problem"] or "") or r["path"] is None)
        if r["found"] and r.get("layout"):  # a folder of one's own images: how it was read
            show(Text.assemble(lead, f"{r['classes']} classes, {r['layout']}, {r['n_train']:,} train / "
                                     f"{r['n_test']:,} test images, fingerprint {r['fingerprint']}"))
        if r["problem"] and not said:
            for item in commands_apart(r["problem"], lead=lead):
                show(item)
        if not r["found"]:
            for item in commands_apart(r["how_to_get"], lead=lead):
                show(item)


def _folder(path, root) -> str:
    """A data set's folder as the table shows it: relative to the data root (the line above the table) when it is
    under it, else whole; '-' when there is none."""
    from pathlib import Path

    if not path:
        return "-"
    try:
        return f"{Path(path).relative_to(root)}/"
    except ValueError:
        return str(path)


def _count(n) -> str:
    return "-" if n is None else f"{n:,}"


@data_app.command()
def download(
    name: str = typer.Argument(..., help=f"{' | '.join(REAL_DATASETS)} | imagenet (for those torchvision "
                                         "cannot fetch it prints the manual steps)"),
    data_root: Optional[str] = typer.Option(None, "--data-root", help=DATA_ROOT_HELP),
) -> None:
    """Download a data set with torchvision into <data-root>/<name>/ and check it loads."""
    from ..core.console import out
    from ..data.fetch import download as fetch
    from ..data.fetch import resolve_data_root

    with user_errors():
        row = fetch(name, resolve_data_root(data_root))
    out.print(f"{name}: {row['n_train']:,} train / {row['n_test']:,} test images under {row['path']}", highlight=False,
              soft_wrap=True)


@data_app.command("sample-photos")
def sample_photos(out_dir: str = typer.Argument(..., help="New folder to write <synset>/<photo>.jpg into.")) -> None:
    """A partial ImageNet val folder from the 20 labelled photos foolbox ships (for --imagenet or
    --source-eval; accuracy on it is marked partial)."""
    from ..core.console import out
    from ..data.imagenet import build_sample_folder

    with user_errors():
        res = build_sample_folder(out_dir)
    out.print(f"wrote {res['images']} photos of {res['classes']} classes under {res['folder']}", highlight=False,
              soft_wrap=True)


@prepare_app.command("imagenet")
def prepare_imagenet(
    val_tar: str = typer.Option(..., "--val-tar", help="ILSVRC2012_img_val.tar (the 50,000 val JPEGs in one folder)."),
    devkit: str = typer.Option(..., "--devkit", help="ILSVRC2012_devkit_t12.tar.gz (the val labels and synsets)."),
    out_dir: Optional[str] = typer.Option(
        None, "--out", help="Folder to write the 1000 synset folders into (default: $FLOWVISION_IMAGENET, else "
                            "<data-root>/imagenet/val)."),
    data_root: Optional[str] = typer.Option(None, "--data-root", help=DATA_ROOT_HELP),
) -> None:
    """Sort the ImageNet-1K val images into one folder per synset (the folder --imagenet reads)."""
    from rich.markup import escape

    from ..core.console import out
    from ..data.fetch import resolve_data_root, resolve_imagenet
    from ..data.prepare import prepare_imagenet as prepare

    with user_errors():
        folder = resolve_imagenet(out_dir) or resolve_data_root(data_root) / "imagenet" / "val"
        row = prepare(val_tar, devkit, folder)
    done = "already holds" if row["already"] else "now holds"
    out.print(f"{escape(row['path'])} {done} {row['n_test']:,} images in {row['classes']} synset folders; "
              f"use it with --imagenet {escape(row['path'])} or export FLOWVISION_IMAGENET={escape(row['path'])}",
              highlight=False, soft_wrap=True)
    if row["devkit_note"]:
        out.print(f"[yellow]note:[/] {escape(row['devkit_note'])}", highlight=False, soft_wrap=True)
    _print_note(row)


@prepare_app.command("stanford_dogs")
def prepare_dogs(
    images: str = typer.Option(..., "--images", help="images.tar from http://vision.stanford.edu/aditya86/ImageNetDogs/."),
    lists: str = typer.Option(..., "--lists", help="lists.tar from the same page (train_list.mat, test_list.mat)."),
    data_root: Optional[str] = typer.Option(None, "--data-root", help=DATA_ROOT_HELP),
) -> None:
    """Unpack Stanford Dogs into <data-root>/stanford_dogs/ (Images/<breed>/, the official lists)."""
    from ..data.fetch import resolve_data_root
    from ..data.prepare import prepare_dogs as prepare

    with user_errors():
        row = prepare(images, lists, resolve_data_root(data_root))
    _print_prepared(row)


@prepare_app.command("stanford_cars")
def prepare_cars(
    archive: str = typer.Option(..., "--archive", help="Stanford Cars sorted by class: a zip or tar holding "
                                                       "train/<class>/ and test/<class>/ (e.g. Kaggle's "
                                                       "stanford-car-dataset-by-classes-folder)."),
    data_root: Optional[str] = typer.Option(None, "--data-root", help=DATA_ROOT_HELP),
) -> None:
    """Unpack Stanford Cars into <data-root>/stanford_cars/{train,test}/<class>/."""
    from ..data.fetch import resolve_data_root
    from ..data.prepare import prepare_cars as prepare

    with user_errors():
        row = prepare(archive, resolve_data_root(data_root))
    _print_prepared(row)


def _print_prepared(row: dict) -> None:
    from rich.markup import escape

    from ..core.console import out

    done = "already holds" if row["already"] else "now holds"
    out.print(f"{row['name']}: {escape(row['path'])} {done} {row['n_train']:,} train / {row['n_test']:,} test "
              f"images (checked as `flowvision data status` checks it)", highlight=False, soft_wrap=True)
    _print_note(row)


def _print_note(row: dict) -> None:
    from rich.markup import escape

    from ..core.console import out

    if row["problem"]:
        out.print(f"[yellow]note:[/] {escape(row['problem'])}", highlight=False, soft_wrap=True)
