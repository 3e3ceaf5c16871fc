"""Fake CUDA on the CPU: flowvision's CUDA code paths run with tensors on a "cuda" device that holds no data.

    with fake_cuda() as syncs:            # tensors created or moved to "cuda" are fake: shapes, dtypes, devices
        value = stage.compute(inputs)     # a CPU tensor meeting a CUDA one raises FakeTensorDeviceMismatchError
    syncs.count("scalar")                 # what would have made the host wait for the GPU, with where it happened

PyTorch's ``FakeTensorMode`` creates tensors on ``cuda:0`` on this CUDA build of torch without a GPU, and mixing
them with CPU tensors raises where a GPU would. What a real run needs beyond that, and what stands in for it here
(ENV-NOTES.md, "The CUDA path without a GPU"):

- torch asks whether a GPU is there (autocast, the DataLoader's pinning, ``resolve_device``): it is told yes, a
  GPU of ``capability`` (bf16 from 8.0 on, as NVIDIA's), and ``torch.autocast("cuda")`` switches the CUDA
  autocast state on as it would on that GPU;
- the autograd engine wants a real device: ``backward`` and ``torch.autograd.grad`` give every leaf a zero
  gradient of its own shape, device and dtype, found by walking ``grad_fn`` (the backward's kernels are not
  checked; the optimiser's step, which meets every gradient, is);
- a scalar read (``.item()``, ``bool()``, ``float()``, ``.tolist()``) is answered with a dummy (``_dummy``;
  ``.tolist()`` zeros),
  so value-dependent branches take one side;
- a module moved to the device keeps its parameters' identity (as ``param.data = ...`` keeps it on a GPU): the
  fake tensor is swapped into the parameter object, so an optimiser or a regulariser built before the move sees
  the moved parameter;
- data loaders are iterated outside the fake mode (their batches are real CPU tensors; pinning marks them);
- kornia's augmentations draw their parameters for real on the CPU and apply them to the fake batch (or, where
  the apply needs values, run for real on a CPU batch of the same shape and hand back a fake one).

Counted (``Syncs``): every scalar read of a CUDA tensor, every host->device copy (blocking unless made with
``non_blocking=True``) and every device->host copy, each with the flowvision line that made it. What this cannot
see: kernels (NaN, speed, memory, determinism), a CPU tensor indexed with CUDA indices, NCCL, compile.
"""
from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch._subclasses.fake_tensor import (DataDependentOutputException, DynamicOutputShapeException, FakeTensor,
                                          FakeTensorMode)
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes

aten = torch.ops.aten
CUDA = torch.device("cuda", 0)


@dataclass
class Event:
    kind: str          # scalar | h2d | d2h | device-draws (kornia drawing on the device)
    blocking: bool
    where: str         # the innermost flowvision frame, "methods/train.py:212 (train)"


@dataclass
class Syncs:
    """What the host would have waited for, in order."""

    events: list = field(default_factory=list)
    on: bool = True    # counting (off while the harness itself works)

    def count(self, kind: str, blocking: Optional[bool] = None) -> int:
        return sum(1 for e in self.events if e.kind == kind and (blocking is None or e.blocking == blocking))

    def mark(self) -> int:
        return len(self.events)

    def since(self, mark: int) -> "Syncs":
        return Syncs(self.events[mark:])

    def waits(self) -> list:
        """The events that stop the host until the GPU is done: scalar reads, device->host and blocking copies."""
        return [e for e in self.events if e.kind != "h2d" or e.blocking]

    def __str__(self) -> str:
        """Each kind of event once, with how often, in the order first seen."""
        from collections import Counter

        counts = Counter((e.kind + (" blocking" if e.blocking and e.kind == "h2d" else ""), e.where) for e in self.events)
        return "\n".join(f"{n} × {kind} at {where}" for (kind, where), n in counts.items())


def _where() -> str:
    """The innermost frame of flowvision's own code on the stack (the line that asked for the wait)."""
    frame = sys._getframe(1)
    while frame is not None:
        path = frame.f_code.co_filename.replace("\\", "/")
        if "/flowvision/" in path and "/tests/" not in path:
            return f"{path.split('/flowvision/')[-1]}:{frame.f_lineno} ({frame.f_code.co_name})"
        frame = frame.f_back
    return "outside flowvision"


def _dummy(t: torch.Tensor):
    """A scalar read's answer: True for a flag; 0 for a number on the GPU (a loss, an overflow count: nothing
    overflowed, so fp16's scaler steps); 1.0 for a float on the CPU (a positive number passes the checks a real
    one would, as EWC's largest Fisher entry)."""
    if t.dtype == torch.bool:
        return True
    if t.dtype.is_floating_point:
        return 0.0 if t.device.type == "cuda" else 1.0
    return 0


class _Counter(TorchDispatchMode):
    """Above the fake mode: sees each op first, counts the ones that make the host wait, answers scalar reads and
    ops whose output shape depends on values (``nonzero``, a boolean mask's selection): on a CUDA tensor those
    wait for the GPU too (counted as a scalar read); they are answered from dummy values (masks all True)."""

    def __init__(self, syncs: Syncs, mode: FakeTensorMode):
        super().__init__()
        self.syncs, self.mode = syncs, mode

    def _dynamic(self, func, args, kwargs):
        from torch.utils._pytree import tree_map

        devices = {t.device for t in tensors((args, kwargs))}
        if self.syncs.on and any(d.type == "cuda" for d in devices):
            self.syncs.events.append(Event("scalar", True, _where()))
        with _disable_current_modes():
            def real(t):
                if not isinstance(t, torch.Tensor):
                    return t
                return torch.ones(t.shape, dtype=t.dtype) if t.dtype == torch.bool else torch.zeros(t.shape, dtype=t.dtype)
            out = func(*tree_map(real, args), **tree_map(real, kwargs))
        device = next(iter(devices), torch.device("cpu"))
        return tree_map(lambda t: self.mode.from_tensor(t).to(device) if isinstance(t, torch.Tensor) else t, out)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is aten._local_scalar_dense.default:
            if self.syncs.on and args[0].device.type == "cuda":
                self.syncs.events.append(Event("scalar", True, _where()))
            return _dummy(args[0])
        if self.syncs.on and func in (aten._to_copy.default, aten.copy_.default):
            if func is aten._to_copy.default:
                src, dst = args[0].device, kwargs.get("device") or args[0].device
            else:
                dst, src = args[0].device, args[1].device
            non_blocking = kwargs.get("non_blocking", args[2] if func is aten.copy_.default and len(args) > 2 else False)
            if src.type == "cpu" and dst.type == "cuda":
                self.syncs.events.append(Event("h2d", not non_blocking, _where()))
            elif src.type == "cuda" and dst.type == "cpu":
                self.syncs.events.append(Event("d2h", True, _where()))
        try:
            return func(*args, **kwargs)
        except (DynamicOutputShapeException, DataDependentOutputException):
            return self._dynamic(func, args, kwargs)


def _zero_grads(outputs, inputs=None):
    """Give every leaf that ``outputs`` depend on (or ``inputs``) a zero gradient, walking ``grad_fn``."""
    if inputs is not None:
        return tuple(torch.zeros_like(t) for t in inputs)
    outputs = [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)
    stack, seen = [t.grad_fn for t in outputs], set()
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        leaf = getattr(fn, "variable", None)
        if leaf is not None:
            if leaf.grad is None:
                leaf.grad = torch.zeros_like(leaf)
            continue
        stack += [f for f, _ in fn.next_functions]
    return None


def _purge(mode: FakeTensorMode, *tensors) -> None:
    """Drop the fake mode's weak references to ``tensors`` (its memo of converted tensors): swap_tensors refuses
    a tensor someone holds a weak reference to."""
    meta = mode.fake_tensor_converter.meta_converter
    ids = {id(t) for t in tensors}
    for memo in (meta.tensor_memo, meta.storage_memo):
        for key, value in list(memo.items()):
            if id(value) in ids:
                del memo[key]
    for lookup in (meta.describer.lookup_tensor,):
        for key in [k for k in list(lookup.keys()) if id(k) in ids]:
            del lookup[key]


class _Mode(FakeTensorMode):
    """The fake mode, told that no device may be initialised (it asks ``torch.cuda.is_available``, which says yes
    here)."""

    @property
    def avoid_device_init(self) -> bool:
        return True


class _Pinned:
    """Pinning without a driver: a tensor is marked, not moved (``is_pinned`` reads the mark)."""

    @staticmethod
    def pin_memory(self, device=None):
        self._fake_pinned = True
        return self

    @staticmethod
    def is_pinned(self, device=None):
        return bool(getattr(self, "_fake_pinned", False))


def _kornia_patch(stack: contextlib.ExitStack, mode: FakeTensorMode, syncs: Syncs) -> None:
    """kornia's augmentations draw their random parameters for real, on the CPU (fake tensors cannot be drawn
    from), then apply them to the fake batch, so the copies kornia makes to put them on the batch's device are
    counted. Where the apply reads values fake tensors do not have (RandomCrop's ``unique``, RandomResizedCrop's
    boxes as Python numbers), it runs for real on a CPU batch of the same shape, and a fake tensor of the output's
    shape is handed on: its copies are not counted (kornia 0.9 makes them with ``non_blocking``). A device
    mismatch is never hidden. An augmentation whose generator lives on the GPU is an event: its draws would be
    read back. kornia gives every augmentation class its own copy of ``forward``: each is wrapped."""
    from kornia.augmentation.base import _BasicAugmentationBase

    def wrap(real_forward):
        def forward(self, input, params=None, **kwargs):
            if not isinstance(input, FakeTensor):
                return real_forward(self, input, params, **kwargs)
            device = self.device
            if device.type != "cpu" and syncs.on:
                syncs.events.append(Event("device-draws", True, f"kornia {type(self).__name__} draws on {device}: "
                                                                f"its parameters are read back per batch ({_where()})"))
            with _disable_current_modes():
                if device.type != "cpu":  # drawn on the CPU here; the shapes are those a GPU draw has
                    self.set_rng_device_and_dtype(torch.device("cpu"), self.dtype)
                try:
                    drawn = self.forward_parameters(input.shape) if params is None else params
                finally:
                    self.device = device  # as it was (its samplers stay on the CPU)
            mark = syncs.mark()
            try:
                return real_forward(self, input, drawn, **kwargs)
            except Exception as err:  # noqa: BLE001 (a fake tensor's limit: run it for real below)
                if "device" in str(err):
                    raise
                del syncs.events[mark:]
            with _disable_current_modes():
                was, syncs.on = syncs.on, False
                try:
                    out = real_forward(self, torch.rand(input.shape, dtype=input.dtype), drawn, **kwargs)
                finally:
                    syncs.on = was
            with mode:
                return torch.empty(out.shape, dtype=out.dtype, device=input.device)
        return forward

    classes, todo = set(), [_BasicAugmentationBase]
    while todo:
        cls = todo.pop()
        if cls not in classes:
            classes.add(cls)
            todo += cls.__subclasses__()
    for cls in classes:
        if "forward" in cls.__dict__:
            stack.enter_context(_patched(cls, "forward", wrap(cls.__dict__["forward"])))


@contextlib.contextmanager
def _patched(owner, name, value):
    old = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, old)


@contextlib.contextmanager
def fake_cuda(capability: tuple = (8, 6), name: str = "NVIDIA RTX A6000 (fake)"):
    """Inside: a fake GPU of ``capability`` (8.6: an A6000; 7.5: a T4, without bf16). -> Syncs."""
    from torch.utils.data import dataloader

    syncs = Syncs()
    mode = _Mode(allow_non_fake_inputs=True)
    bf16 = capability >= (8, 0)
    with contextlib.ExitStack() as stack:
        for owner, attr, value in (
            (torch.cuda, "is_available", lambda: True),
            (torch.cuda, "device_count", lambda: 1),
            (torch.cuda, "current_device", lambda: 0),
            (torch.cuda, "get_device_name", lambda *a, **k: name),
            (torch.cuda, "get_device_capability", lambda *a, **k: capability),
            (torch.cuda, "is_bf16_supported", lambda *a, **k: bf16),
            (torch.cuda, "synchronize", lambda *a, **k: None),
            (torch.accelerator, "is_available", lambda: True),
            (torch.accelerator, "current_accelerator", lambda *a, **k: torch.device("cuda")),
            (torch.Tensor, "pin_memory", _Pinned.pin_memory),
            (torch.Tensor, "is_pinned", _Pinned.is_pinned),
        ):
            stack.enter_context(_patched(owner, attr, value))
        stack.enter_context(_patched(torch.Tensor, "backward",
                                     lambda self, gradient=None, *a, **k: _zero_grads(self)))
        stack.enter_context(_patched(torch.autograd, "backward", lambda tensors, *a, **k: _zero_grads(tensors)))
        stack.enter_context(_patched(torch.autograd, "grad", lambda outputs, inputs, *a, **k: _zero_grads(
            outputs, [inputs] if isinstance(inputs, torch.Tensor) else inputs)))
        real_tolist, fake_tolist = torch._C.TensorBase.tolist, FakeTensor.tolist

        def tolist(self):  # one read of the whole tensor, not one per element
            if self.device.type != "cuda":
                return fake_tolist(self)
            if syncs.on:
                syncs.events.append(Event("scalar", True, _where()))
            with _disable_current_modes():
                return real_tolist(torch.zeros(self.shape, dtype=self.dtype))
        stack.enter_context(_patched(FakeTensor, "tolist", tolist))
        for owner in (torch.Tensor, torch.nn.Parameter):  # a real tensor copied inside the mode stays real
            def deepcopy(self, memo, _real=owner.__deepcopy__):
                if isinstance(self, FakeTensor):
                    return _real(self, memo)
                with _disable_current_modes():
                    return _real(self, memo)
            stack.enter_context(_patched(owner, "__deepcopy__", deepcopy))
        real_swap = torch.utils.swap_tensors

        def swap(t1, t2):
            same = lambda t: (t.device, t.dtype, t.shape, t.stride())  # noqa: E731
            if isinstance(t1, FakeTensor) and same(t1) == same(t2):
                return None  # a move to where it is: the parameter stays (on a GPU ``param.data = param``)
            _purge(mode, t1, t2)
            return real_swap(t1, t2)
        stack.enter_context(_patched(torch.utils, "swap_tensors", swap))
        old_swap_flag = torch.__future__.get_swap_module_params_on_conversion()
        torch.__future__.set_swap_module_params_on_conversion(True)
        stack.callback(torch.__future__.set_swap_module_params_on_conversion, old_swap_flag)
        real_next = dataloader._BaseDataLoaderIter.__next__

        def next_batch(self):
            with _disable_current_modes():
                return real_next(self)
        stack.enter_context(_patched(dataloader._BaseDataLoaderIter, "__next__", next_batch))
        _kornia_patch(stack, mode, syncs)
        stack.enter_context(mode)
        stack.enter_context(_Counter(syncs, mode))
        yield syncs


def on_cuda(value) -> bool:
    return isinstance(value, torch.Tensor) and value.device.type == "cuda"


def tensors(value):
    """Every tensor inside ``value`` (dicts, lists, tuples, objects with __dict__ such as Trained)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from tensors(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from tensors(v)
