"""Where and how tensors run: device choice, autocast (bf16, or fp16 with a gradient scaler), channels_last,
TF32, torch.compile.

The device is chosen per run; autocast and channels_last default on under the clean protocol on a CUDA device
and off elsewhere (``config.speed_defaults``; ``on_device`` applies it). Autocast runs in bf16 where the GPU has
bf16 units (compute capability 8.0 on: A100, A6000, H100), else in fp16 with a gradient scaler (T4, V100), which
is what those GPUs compute fast; the decided dtype is keyed and recorded. On the CPU (this project's CI) nothing
is switched on unless asked: ``--set amp=true`` there runs CPU bf16 autocast (how the tests check the bf16 path
without a GPU). ``torch.compile`` stays opt-in.

TF32 (CUDA only): ``tf32`` none keeps torch's defaults, as the official code ran: convolutions in TF32 on Ampere
and newer, matmuls in IEEE fp32; false is IEEE fp32 everywhere ("true fp32"); true is TF32 everywhere. The
settings that ran are in every record of a CUDA run (``tf32_state``).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from . import distributed
from .distributed import resolve_device  # noqa: F401 (part of this module's API: where a run's tensors go)

BF16_CAPABILITY = (8, 0)  # NVIDIA GPUs with bf16 tensor cores: Ampere (sm 80, 86) and newer


def precision_name(amp: Optional[bool], amp_dtype: Optional[str]) -> str:
    """fp32 | bf16 | fp16 for autocast on or off and its dtype (None: bfloat16)."""
    return "fp16" if amp and amp_dtype == "float16" else "bf16" if amp else "fp32"


@dataclass(frozen=True)
class Hardware:
    device: torch.device
    amp: bool = False            # autocast (on the CPU too, when asked)
    channels_last: bool = False  # NHWC memory format (helps convs on GPUs and at 224 px on CPUs)
    compile: bool = False        # torch.compile the forward pass (slow to start; opt-in)
    num_workers: int = 0
    amp_dtype: Optional[str] = None  # float16 | bfloat16; None: bfloat16 (config.speed_defaults decides it)

    @property
    def precision(self) -> str:
        """fp32 | bf16 | fp16: what the training and evaluation passes compute in."""
        return precision_name(self.amp, self.amp_dtype)

    def autocast(self):
        """The precision of a forward pass: autocast in bf16 or fp16 with ``amp``; without it fp32, whatever autocast
        the caller runs under (a training script's ``torch.autocast`` does not reach a pass that must be fp32)."""
        if self.amp:
            return torch.autocast(self.device.type, dtype=torch.float16 if self.precision == "fp16" else torch.bfloat16)
        if torch.is_autocast_enabled(self.device.type):
            return torch.autocast(self.device.type, enabled=False)
        return contextlib.nullcontext()

    def scaler(self):
        """The gradient scaler fp16 autocast needs (its gradients underflow otherwise), or None."""
        return torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None

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

    def put(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` on the device without waiting for the GPU: a loader's batch is in pinned memory, so the copy runs
        beside the GPU's work; from pageable memory CUDA stages it before the call returns."""
        return t.to(self.device, non_blocking=True)

    def images(self, x: torch.Tensor, dataset=None) -> torch.Tensor:
        """A batch on the device, through the data set's batch transform when it has one (uint8
        images from a decoded cache are augmented and normalised there)."""
        x = self.put(x)
        transform = getattr(dataset, "batch_transform", None)
        if transform is not None:
            x = transform(x)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def full_precision(hw: Hardware) -> Hardware:
    """``hw`` without autocast: for the passes whose numbers rank samples (FLOW's losses, Table 5's difficulty)."""
    import dataclasses

    return dataclasses.replace(hw, amp=False, amp_dtype=None)


def device_of(model: nn.Module) -> torch.device:
    """Where ``model``'s parameters are (the CPU for a model without any): where a library call puts it back."""
    return next(iter(model.parameters()), torch.empty(0)).device


def for_model(device, model: nn.Module) -> Hardware:
    """The Hardware of a library call (``flowvision.per_sample_losses`` and its kin): ``device`` as given (a
    Hardware as it is; a device or its name, in fp32 with no workers), or None: where ``model``'s parameters are."""
    if isinstance(device, Hardware):
        return device
    if device is None:
        device = device_of(model)
    return Hardware(torch.device(device))


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
    """At the start of a run (``cfg`` decided for the device: ``on_device``): apply the reproducibility switch
    (deterministic algorithms and no cuDNN autotuning, or the fast default: autotuning on) and, on CUDA, the
    TF32 setting (``set_tf32``), say in one line which device runs it, and
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
    if dev.type == "cuda":
        set_tf32(cfg.tf32)
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


def set_tf32(setting: Optional[bool]) -> None:
    """TF32 for this process's CUDA work: None torch's defaults (convolutions TF32, matmuls IEEE fp32), False IEEE
    fp32 for both, True TF32 for both. Set at every run's start, so a run never inherits an earlier one's."""
    torch.backends.cudnn.allow_tf32 = setting is not False
    torch.backends.cuda.matmul.allow_tf32 = setting is True


def tf32_state() -> dict:
    """The TF32 settings in force: {"convolutions": bool, "matmul": bool} (they act on CUDA only)."""
    return {"convolutions": bool(torch.backends.cudnn.allow_tf32), "matmul": bool(torch.backends.cuda.matmul.allow_tf32)}


def bf16_units(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 in hardware: the CPU's autocast is bf16; a CUDA GPU from compute
    capability 8.0 (torch would emulate bf16 on older ones, slowly)."""
    if device.type != "cuda":
        return True
    return tuple(torch.cuda.get_device_capability(device)) >= BF16_CAPABILITY


def on_device(cfg):
    """``cfg`` with amp, its dtype, channels_last and TF32 decided for the device it runs on here
    (``config.speed_defaults``)."""
    from .config import speed_defaults

    kind = distributed.device_type(cfg.device)
    bf16 = True
    if kind == "cuda" and cfg.amp is not False and cfg.amp_dtype is None:
        bf16 = bf16_units(distributed.device(resolve_device(cfg.device)))
    return speed_defaults(cfg, kind, bf16=bf16)


def hardware(cfg) -> Hardware:
    """The Hardware a run's config asks for (device, amp and its dtype, channels_last, compile, num_workers), once
    ``on_device`` has decided amp and channels_last (``stages.Run`` does); under torchrun, ``cuda`` is the
    GPU of this process's local rank."""
    if cfg.amp is None or cfg.channels_last is None:
        raise ValueError("amp and channels_last are undecided: pass the config through hardware.on_device first")
    return Hardware(distributed.device(resolve_device(cfg.device)), amp=cfg.amp, channels_last=cfg.channels_last,
                    compile=cfg.compile, num_workers=cfg.num_workers, amp_dtype=cfg.amp_dtype)


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
