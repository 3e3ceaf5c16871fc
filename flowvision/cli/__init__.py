"""The `flowvision` command line: parse options, call one library function, print with rich.

    flowvision demo                                            # offline: FT vs FLOW on a synthetic task
    flowvision finetune --dataset gratings --model demo --method flow --tau median
    flowvision finetune --dataset cifar10 --tau 1.0 --imagenet /data/imagenet/val   # resnet18.tv_in1k
    flowvision finetune --dataset cifar10 --tau 1.0 --dry-run                       # what it would do
"""
from __future__ import annotations

import os
import sys

from ..core.console import console
from ..core.errors import UserError
from . import results, runs, tools
from .app import ReadableGroup, app
from .data import data_app

# In the order `flowvision --help` lists them: a run, the demo, what reads runs back, the grid, the store.
for command, name in ((runs.finetune, None), (runs.demo, None), (results.frontier, None), (results.table, None),
                      (results.plot, None), (results.weights, None), (results.export_run, "export"),
                      (tools.import_weights, "import-weights"), (runs.reproduce, None), (runs.status, None),
                      (results.cache, None), (tools.bench, None)):
    app.command(name)(command)
app.add_typer(data_app, name="data", cls=ReadableGroup)


# What may run under torchrun (WORLD_SIZE > 1): one run shared by the processes. Everything else runs in
# one process (`reproduce` starts its own workers, one per GPU).
DISTRIBUTED_COMMANDS = ("finetune",)


def _refuse_torchrun() -> None:
    from ..core.distributed import env_world

    command = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
    if env_world() > 1 and command is not None and command not in DISTRIBUTED_COMMANDS:
        if os.environ.get("RANK", "0") == "0":
            console.print(f"[bold red]error:[/] `flowvision {command}` runs in one process; under torchrun only "
                          f"`flowvision finetune` (one run over several GPUs); for a grid over GPUs use "
                          "`flowvision reproduce --gpus`", highlight=False, soft_wrap=True)
        sys.exit(2)


def main() -> None:
    try:
        _refuse_torchrun()
        app()
    except UserError as e:  # raised outside a command's own handler (e.g. while mounting sub-apps)
        console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
