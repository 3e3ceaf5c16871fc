"""One run over several processes: ``torchrun --nproc-per-node N -m flowvision finetune ...``.

Under torchrun (``WORLD_SIZE`` > 1 in the environment) every process runs the same stages in the same
order; what differs is who does which share and who writes:

- Training (probe, fine-tuning, refit): DistributedDataParallel over the model; each process takes
  ``batch_size / N`` samples of every step from a ``DistributedSampler`` seeded per epoch (``set_epoch``),
  so the global batch, the steps per epoch and a resumed run's order are those the config says. Samples
  keep their index, so FLOW weights stay aligned.
- Evaluation (``evaluate.predict``): process r evaluates batches r, r + N, ... of the one-process batch
  sequence, and the per-sample results are gathered by index: every sample is counted exactly once and
  its numbers are bit for bit those of one process (the same batches go through the same kernels).
- Files: rank 0 writes every file (stage store, demo model, decoded caches, run folder, checkpoints);
  the other ranks read rank 0's file after a barrier. A stage that loads from outside (data set,
  pre-trained weights) runs on rank 0 first, alone (``rank0_first``), then on the others, which find
  what rank 0 wrote.

Backends: nccl on CUDA (process r uses ``cuda:<LOCAL_RANK>``), gloo on the CPU. Barriers and small
objects go through a gloo group whose timeout (``FLOWVISION_DIST_TIMEOUT_S``, default 24 h) covers
rank 0 waiting for a stage another run is computing.
"""
from __future__ import annotations

import contextlib
import os
import sys
from datetime import timedelta
from typing import Optional

from .errors import UserError

_cpu_group = None   # gloo group for barriers and objects (None: not distributed)
_device = None      # where tensors are gathered: cuda:<local rank> under nccl, else cpu
_suspended = 0      # > 0 inside rank0_first: this process works alone


def env_world() -> int:
    """The process count torchrun (or any launcher setting WORLD_SIZE) asked for; 1 when none."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def initialised() -> bool:
    """Whether this process is in a process group (never true before torch is imported: the CLI's
    torch-free paths stay so)."""
    dist = sys.modules.get("torch.distributed")
    return dist is not None and dist.is_available() and dist.is_initialized()


def world() -> int:
    """Processes in the run (1 outside torchrun)."""
    if not initialised():
        return 1
    import torch.distributed as dist

    return dist.get_world_size()


def rank() -> int:
    if not initialised():
        return 0
    import torch.distributed as dist

    return dist.get_rank()


def is_main() -> bool:
    """Whether this process writes files and prints: rank 0, or the only process."""
    return rank() == 0


def active() -> bool:
    """Whether the work now is shared between processes (distributed and not inside ``rank0_first``)."""
    return world() > 1 and not _suspended


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", rank()))


def _timeout() -> timedelta:
    try:
        return timedelta(seconds=float(os.environ.get("FLOWVISION_DIST_TIMEOUT_S", 24 * 3600)))
    except ValueError:
        raise UserError("FLOWVISION_DIST_TIMEOUT_S must be a number of seconds") from None


def check_batch(batch_size: int, what: str = "batch_size") -> None:
    n = world() if initialised() else env_world()
    if n > 1 and batch_size % n:
        raise UserError(f"{what} {batch_size} does not split over {n} processes; the batch size is the global "
                        f"batch (each process takes batch_size / {n}): use a multiple of {n}")


@contextlib.contextmanager
def session(device: str, batch_size: Optional[int] = None):
    """Around one run: under torchrun, join the process group (nccl for CUDA, gloo for the CPU) for its
    duration; a group set up by the caller (tests) is used as it is; a single process does nothing."""
    global _cpu_group, _device
    import torch
    import torch.distributed as dist


    own = False
    if batch_size is not None:
        check_batch(batch_size)  # before joining: a wrong batch size costs no rendezvous
    if not initialised() and env_world() > 1:
        dev = resolve_device(device)
        if dev.type == "cuda":
            if dev.index is not None:
                raise UserError(f"--device {device} under torchrun: each process takes the GPU of its local rank; "
                                "use --device cuda (or auto)")
            if local_rank() >= torch.cuda.device_count():
                raise UserError(f"torchrun started local rank {local_rank()} but {torch.cuda.device_count()} GPUs are "
                                "visible here; use --nproc-per-node up to the GPU count")
            torch.cuda.set_device(local_rank())
        # gloo (CPU) carries the long waits itself; nccl keeps torch's own timeout, the waits go to a gloo group
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=_timeout() if backend == "gloo" else None)
        own = True
    if initialised() and _cpu_group is None:
        backend = dist.get_backend()
        _cpu_group = dist.new_group(backend="gloo", timeout=_timeout()) if backend != "gloo" else dist.group.WORLD
        _device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    try:
        yield
    finally:
        if initialised() and _cpu_group is not None and _cpu_group is not dist.group.WORLD:
            dist.destroy_process_group(_cpu_group)
        _cpu_group = _device = None
        if own:
            dist.destroy_process_group()


def resolve_device(name: str):
    """'auto' -> cuda when available, else cpu; 'cuda' without a GPU is a user error. -> torch.device"""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA GPU is visible here; use --device cpu (or auto)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name} is not a device: use auto, cpu, cuda or cuda:N") from None


def device_type(setting: str) -> str:
    """'cuda' | 'cpu' | …: the kind of device a run with ``device=setting`` uses on this machine: 'auto' is
    cuda when a GPU is visible (this imports torch); an explicit setting is taken at its word (no torch;
    ``resolve_device`` checks it when the run starts)."""
    if setting == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting.split(":")[0]


def device(dev):
    """The device this process runs on: under several processes, ``cuda`` means the GPU of its local rank."""
    import torch

    if world() > 1 and dev.type == "cuda" and dev.index is None:
        return torch.device("cuda", local_rank())
    return dev


def _dev():
    """Where collectives on tensors run: the current GPU under nccl, else the CPU."""
    import torch
    import torch.distributed as dist

    if _device is not None:
        return _device
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def barrier() -> None:
    if active():
        import torch.distributed as dist

        dist.barrier(group=_cpu_group)


def broadcast(obj):
    """rank 0's ``obj`` on every process (a small picklable value)."""
    if not active():
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0, group=_cpu_group)
    return box[0]


@contextlib.contextmanager
def rank0_first():
    """Rank 0 does the body alone (no collectives inside), then the other ranks do it: what rank 0 wrote
    (a decoded cache, a demo model, downloaded weights) is there for them to read."""
    global _suspended
    if not active():
        yield
        return
    if not is_main():
        barrier()
    _suspended += 1
    try:
        yield
    finally:
        _suspended -= 1
    if is_main():
        barrier()


def sum_(t):
    """The element-wise sum of ``t`` over the processes (a new CPU tensor); ``t`` itself when alone."""
    if not active():
        return t
    import torch.distributed as dist

    x = t.to(_dev()).clone()
    dist.all_reduce(x)
    return x.cpu()


def max_(value: int) -> int:
    """The largest ``value`` over the processes."""
    if not active():
        return value
    import torch
    import torch.distributed as dist

    x = torch.tensor([value], device=_dev())
    dist.all_reduce(x, op=dist.ReduceOp.MAX)
    return int(x.item())


def wrap(module, dev):
    """``module`` in DistributedDataParallel (gradients averaged, rank 0's parameters and buffers to
    every process at the start and before every forward); ``module`` itself when alone."""
    if not active():
        return module
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, device_ids=[dev.index] if dev.type == "cuda" else None)


def sync_buffers(model) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every process: each process's last training
    forward moved its own, and DDP re-broadcasts them only at the next forward."""
    if not active():
        return
    import torch.distributed as dist

    for buf in model.buffers():
        x = buf.data.to(_dev())
        dist.broadcast(x, src=0)
        buf.data.copy_(x.to(buf.device))


def describe() -> str:
    """'' alone; ' × N processes (DDP)' under several."""
    return f" × {world()} processes (DDP)" if world() > 1 else ""
