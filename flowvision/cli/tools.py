"""Tools around the runs: foreign checkpoints into timm's names (``import-weights``) and speed ratios
(``bench``)."""
from __future__ import annotations

from pathlib import Path

import typer

from ..core.console import commands_apart, out, show, user_errors
from ..core.errors import UserError


def import_weights(
    checkpoint: Path = typer.Argument(..., help="A .pth/.pt/.bin state dict (or .safetensors already in timm's names)."),
    arch: str = typer.Option(..., "--arch", help="The timm architecture it holds, e.g. tf_efficientnet_lite0."),
    out_file: Path = typer.Option(..., "--out", help="The .safetensors file to write (for --weights)."),
):
    """Turn a checkpoint that names its tensors another library's way into a timm .safetensors:
    tensors mapped by order, every shape, kind and name part checked, anything uncertain refused."""
    with user_errors():
        from ..methods.importing import import_weights as run_import

        res = run_import(checkpoint, arch, out_file)
        for item in commands_apart(f"wrote {res['out']}: {res['tensors']} tensors of {res['arch']} ({res['renamed']} "
                                   f"renamed); use it with `flowvision finetune --model {res['arch']} --weights "
                                   f"{res['out']}`"):
            show(item)



def bench(
    model: str = typer.Option("resnet18", help="timm architecture (random weights)."),
    image_size: int = typer.Option(32, min=8, help="Side of the random square images, in pixels."),
    batch_size: int = typer.Option(32, min=1, help="Images per training step."),
    steps: int = typer.Option(5, min=1, help="Training steps per variant per repeat."),
    repeats: int = typer.Option(3, min=1, help="Interleaved repeats of every variant; the table shows their median."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
    data: bool = typer.Option(False, "--data", help="Time the data path instead: PIL per sample vs the decoded cache."),
    images: int = typer.Option(64, min=8, help="With --data: generated images per recipe."),
    fisher: bool = typer.Option(False, "--fisher", help="Time EWC's Fisher pass instead: per-sample gradients one "
                                "backward at a time vs batched (torch.func), --images images of --model."),
):
    """Speed ratios of the training step, variants interleaved in one run (see flowvision/scale/bench.py)."""
    with user_errors():
        from ..core.console import Table
        from ..scale.bench import bench as run_bench, bench_data
        from ..core.hardware import resolve_device
        from ..methods.models import is_arch

        if data:
            rows = bench_data(images, repeats)
            t = Table(title=f"data path at 224 px, {images} images, one core — median of {repeats} interleaved repeats")
            for col in ("recipe", "path", "images/s", "× vs PIL"):
                t.add_column(col, justify="left" if col in ("recipe", "path") else "right", no_wrap=col in ("recipe", "path"))
            for r in rows:
                t.add_row(r["recipe"], r["path"], f"{r['images_per_s']:.0f}", f"{r['ratio']:.1f}")
            out.print(t)
            return
        if not is_arch(model):
            raise UserError(f"--model {model} is not a timm architecture; e.g. resnet18 or resnet50")
        dev = resolve_device(device)
        if fisher:
            from ..scale.bench import bench_fisher

            rows = bench_fisher(model, image_size, images, repeats, dev)
            t = Table(title=f"EWC's Fisher, {model} @ {image_size} px, {images} images, {dev} — median of {repeats} "
                            "interleaved repeats")
            for col in ("variant", "images/s", "× vs the loop"):
                t.add_column(col, justify="left" if col == "variant" else "right", no_wrap=col == "variant")
            for r in rows:
                t.add_row(r["variant"], f"{r['images_per_s']:.1f}", f"{r['ratio']:.2f}")
            out.print(t)
            return
        rows = run_bench(model, image_size, batch_size, steps, repeats, dev)
        t = Table(title=f"{model} @ {image_size} px, batch {batch_size}, {dev} — median of {repeats} interleaved repeats")
        for col in ("variant", "images/s", "× vs its baseline"):
            t.add_column(col, justify="left" if col == "variant" else "right", no_wrap=col == "variant")
        for r in rows:
            t.add_row(r["variant"], f"{r['images_per_s']:.0f}", f"{r['ratio']:.2f}")
        out.print(t)
        baselines = list(dict.fromkeys(r["baseline"] for r in rows))
        out.print(f"× compares each row with the first row of its group: {' and '.join(repr(b) for b in baselines)}", highlight=False)
