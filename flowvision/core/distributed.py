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

Backends: nccl on CUDA (process r uses ``cuda:<LOCAL_RANK>``), gloo on the CPU. Two timeouts:

- start-up, ``FLOWVISION_DIST_START_TIMEOUT_S`` (default 600 s, torch's own for nccl): how long the
  processes wait for each other to form the group, and how long a collective of the training and
  evaluation steps may wait. A rank that never joins (or a rendezvous address nobody answers) ends
  every rank that did start with one line after this long, not after a day.
- long waits, ``FLOWVISION_DIST_TIMEOUT_S`` (default 24 h): barriers and small objects go through a
  gloo group of their own with this timeout, which covers rank 0 waiting for a stage another run is
  computing.

``WORLD_SIZE`` > 1 without ``RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` (what torchrun sets) is a
one-line error before anything starts.
"""
from __future__ import annotations

import contextlib
import os
import sys
from datetime import timedelta
from typing import Optional

from .errors import UserError, env_number


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: a container's or a Slurm job's cpuset, which
    can be smaller than the host's ``os.cpu_count()``); the one count every worker and thread default uses."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

_cpu_group = None   # gloo group for barriers and objects (None: not distributed)
_device = None      # where tensors are gathered: cuda:<local rank> under nccl, else cpu
_suspended = 0      # > 0 inside rank0_first: this process works alone


def env_world() -> int:
    """The process count torchrun (or any launcher setting WORLD_SIZE) asked for; 1 when none. A
    WORLD_SIZE that is not a whole number ≥ 1 is a UserError."""
    return env_number("WORLD_SIZE", 1, "give a process count ≥ 1 (torchrun sets it), or unset it to run one process")


def check_rendezvous() -> None:
    """Under WORLD_SIZE > 1: RANK, MASTER_ADDR and MASTER_PORT, as torchrun sets them, and sane; a
    one-line UserError naming what is missing otherwise (before any process waits for another)."""
    n = env_world()
    if n == 1:
        return
    missing = [v for v in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v, "").strip()]
    if missing:
        raise UserError(f"WORLD_SIZE={n} asks for {n} processes, but {', '.join(missing)} "
                        f"{'is' if len(missing) == 1 else 'are'} not set: start the processes with torchrun "
                        "(which sets them all), or unset WORLD_SIZE to run one process")
    rank_, port = os.environ["RANK"].strip(), os.environ["MASTER_PORT"].strip()
    if not rank_.isdigit() or int(rank_) >= n:
        raise UserError(f"RANK={rank_[:20]!r} is not a rank of WORLD_SIZE={n} (0 … {n - 1}); torchrun sets it")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"MASTER_PORT={port[:20]!r} is not a port (1 … 65535); torchrun sets it")


def _seconds(name: str, default: float) -> float:
    return env_number(name, default, f"give a number of seconds > 0 (default {default:g})", float, below=1e9)


START_TIMEOUT_S = 600.0  # torch's own default for nccl; a rank that never starts is known within it
LONG_TIMEOUT_S = 24 * 3600.0


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
    """The long waits' timeout (barriers and small objects: rank 0 computing a stage alone)."""
    return timedelta(seconds=_seconds("FLOWVISION_DIST_TIMEOUT_S", LONG_TIMEOUT_S))


def start_timeout() -> timedelta:
    """How long the processes wait for each other to form the group (and a step's collective waits)."""
    return timedelta(seconds=_seconds("FLOWVISION_DIST_START_TIMEOUT_S", START_TIMEOUT_S))


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
        check_rendezvous()
        start, long = start_timeout(), _timeout()
        dev = resolve_device(device)
        if dev.type == "cuda":
            if dev.index is not None:
                raise UserError(f"--device {device} under torchrun: each process takes the GPU of its local rank; "
                                "use --device cuda (or auto)")
            if local_rank() >= torch.cuda.device_count():
                raise UserError(f"torchrun started local rank {local_rank()} but {torch.cuda.device_count()} GPUs are "
                                "visible here; use --nproc-per-node up to the GPU count")
            torch.cuda.set_device(local_rank())
        # the group forms within the start-up timeout; the long waits go to a gloo group of their own
        backend = "nccl" if dev.type == "cuda" else "gloo"
        note = _waiting_note(start.total_seconds())
        try:
            if os.environ["RANK"].strip() != "0":
                _reach_master(start.total_seconds())
            dist.init_process_group(backend, timeout=start)
            _cpu_group = dist.new_group(backend="gloo", timeout=long)
        except (RuntimeError, ValueError, OSError) as e:  # torch's DistError (a timeout, a refused connection) included
            if initialised():
                dist.destroy_process_group()
            _cpu_group = None
            where = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            raise UserError(f"rank {os.environ['RANK']} of {env_world()}: the processes did not all join at {where} "
                            f"within {start.total_seconds():g} s ({reason}); start every rank (torchrun does), or "
                            "give slow starts more time with FLOWVISION_DIST_START_TIMEOUT_S") from None
        finally:
            note.cancel()
        own = True
    if initialised() and _cpu_group is None:  # a group the caller set up (tests)
        backend = dist.get_backend()
        _cpu_group = dist.new_group(backend="gloo", timeout=_timeout()) if backend != "gloo" else dist.group.WORLD
    if initialised() and _device is None:
        backend = dist.get_backend()
        _device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    try:
        yield
    finally:
        if initialised() and _cpu_group is not None and _cpu_group is not dist.group.WORLD:
            dist.destroy_process_group(_cpu_group)
        _cpu_group = _device = None
        if own:
            dist.destroy_process_group()


WAIT_NOTE_S = 10.0  # a rank still waiting for the others this long says so, once


def _waiting_note(seconds: float):
    """A started timer that, unless cancelled first, prints once that this rank is waiting for the others to join
    (after ``WAIT_NOTE_S``, or half the start-up timeout when that is shorter): a rank waiting up to ten minutes
    in silence reads as a hang."""
    import threading

    where = f"{os.environ['MASTER_ADDR'].strip()}:{os.environ['MASTER_PORT'].strip()}"
    text = (f"rank {os.environ['RANK'].strip()} of {env_world()}: waiting for the other processes to join at {where} "
            f"(at most {seconds:g} s, FLOWVISION_DIST_START_TIMEOUT_S; torchrun starts every rank)")
    timer = threading.Timer(min(WAIT_NOTE_S, seconds / 2), lambda: print(text, file=sys.stderr, flush=True))
    timer.daemon = True
    timer.start()
    return timer


def _reach_master(seconds: float) -> None:
    """Wait until the rendezvous address answers (at most ``seconds``): a rank 0 that never started is
    then a plain TimeoutError, not torch's client retrying (and logging each try) until it gives up."""
    import socket
    import time

    addr, port = os.environ["MASTER_ADDR"].strip(), int(os.environ["MASTER_PORT"])
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection((addr, port), timeout=max(0.1, min(1.0, deadline - time.monotonic()))).close()
            return
        except OSError:
            if time.monotonic() >= deadline:
                raise TimeoutError("no answer there") from None
            time.sleep(0.2)


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
