"""Where and how tensors run: device choice, bf16 autocast, channels_last, torch.compile.

The device is chosen per run; bf16 autocast and channels_last default on under the clean protocol on a
CUDA device and off elsewhere (``config.speed_defaults``; ``on_device`` applies it). On the CPU (this
project's CI) nothing is switched on unless asked: ``--set amp=true`` there runs CPU bf16 autocast (how
the tests check the bf16 path without a GPU). ``torch.compile`` stays opt-in.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from . import distributed
from .distributed import resolve_device  # noqa: F401 (part of this module's API: where a run's tensors go)


@dataclass(frozen=True)
class Hardware:
    device: torch.device
    amp: bool = False            # bf16 autocast (on the CPU too, when asked)
    channels_last: bool = False  # NHWC memory format (helps convs on GPUs and at 224 px on CPUs)
    compile: bool = False        # torch.compile the forward pass (slow to start; opt-in)
    num_workers: int = 0

    def autocast(self):
        if self.amp:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def prepare(self, model: nn.Module) -> nn.Module:
        """Move ``model`` in place; return the callable to run forward passes with."""
        return self.compiled(self.place(model))

    def place(self, model: nn.Module) -> nn.Module:
        """Move ``model`` in place to the device (and memory format); -> ``model``."""
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def compiled(self, module: nn.Module) -> nn.Module:
        return torch.compile(module) if self.compile else module

    def images(self, x: torch.Tensor, dataset=None) -> torch.Tensor:
        """A batch on the device, through the data set's batch transform when it has one (uint8
        images from a decoded cache are augmented and normalised there)."""
        x = x.to(self.device, non_blocking=True)
        transform = getattr(dataset, "batch_transform", None)
        if transform is not None:
            x = transform(x)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


# The pinned torch build's CUDA version needs at least this NVIDIA driver (CUDA 13.x: 580, Linux).
MIN_DRIVER = {"13": "580", "12": "525"}


def cuda_build_without_gpu() -> str | None:
    """A one-line warning when torch was built for CUDA but sees no GPU (no driver, or one older
    than the build needs), else None."""
    if torch.version.cuda is None or torch.cuda.is_available():
        return None
    driver = MIN_DRIVER.get(torch.version.cuda.split(".")[0], "a recent")
    return (f"torch {torch.__version__} was built for CUDA {torch.version.cuda} but sees no GPU (no NVIDIA driver, "
            f"or one older than {driver}): running on the CPU; install the driver, or pass --device cpu to say "
            "that is what you want")


def start(cfg) -> str:
    """At the start of a run: apply the reproducibility switch (deterministic algorithms and no
    cuDNN autotuning, or the fast default: autotuning on), say in one line which device runs it, and
    warn once when a CUDA build of torch falls back to the CPU. -> the device's name; under torchrun
    rank 0's GPU and the process count, e.g. 'cuda:0 (NVIDIA H200) × 4 processes (DDP)' (rank 0 says it)."""
    import os

    from .console import log_steps

    log_steps()  # a bad FLOWVISION_LOG_STEPS is said now, not at the first progress line
    dev = distributed.device(resolve_device(cfg.device))
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS needs it
    torch.use_deterministic_algorithms(bool(cfg.deterministic))
    torch.backends.cudnn.benchmark = not cfg.deterministic
    name = (f"{dev} ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else str(dev)) + distributed.describe()
    from .console import console

    if not distributed.is_main():
        return name
    console.print(f"device: {name}" + (", deterministic algorithms" if cfg.deterministic else ""), highlight=False)
    note = cuda_build_without_gpu() if cfg.device == "auto" else None
    if note and note not in _WARNED:
        _WARNED.add(note)
        console.print(f"[yellow]warning:[/] {note}", highlight=False, soft_wrap=True)
    return name


_WARNED: set = set()


def on_device(cfg):
    """``cfg`` with amp and channels_last decided for the device it runs on here (``config.speed_defaults``)."""
    from .config import speed_defaults

    return speed_defaults(cfg, distributed.device_type(cfg.device))


def hardware(cfg) -> Hardware:
    """The Hardware a run's config asks for (device, amp, channels_last, compile, num_workers), once
    ``on_device`` has decided amp and channels_last (``stages.Run`` does); under torchrun, ``cuda`` is the
    GPU of this process's local rank."""
    if cfg.amp is None or cfg.channels_last is None:
        raise ValueError("amp and channels_last are undecided: pass the config through hardware.on_device first")
    return Hardware(distributed.device(resolve_device(cfg.device)), amp=cfg.amp, channels_last=cfg.channels_last,
                    compile=cfg.compile, num_workers=cfg.num_workers)


CPU = Hardware(torch.device("cpu"))


@contextlib.contextmanager
def torch_threads(n):
    """Run the block with ``n`` torch threads (None: as they are), whatever OMP_NUM_THREADS said, then
    put the count back. The CPU's float rounding depends on the thread count, so a computation that
    must give the same bits wherever it runs names its count."""
    before = torch.get_num_threads()
    torch.set_num_threads(n or before)
    try:
        yield
    finally:
        torch.set_num_threads(before)
