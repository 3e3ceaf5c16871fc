"""The stage store: declared inputs -> derived key -> file.

A stage names what decides its output and nothing else decides it:

    Stage("refit", compute, reads=("refit_epochs", "refit_lr", ...), needs=("finetune", "task"))

- ``reads``: the RunConfig fields whose values decide the output. They, the stage's ``version`` and
  the keys of the upstream stages in ``needs`` are hashed into the stage's key; no key is typed by hand.
  A field of ``LATER_READS`` at its old value is left out, so keys written before it existed stay.
- ``uses``: fields that only say where files are or how fast to run (never keyed; config marks them).
- ``needs``: upstream stages; their values are handed to ``compute``, their keys go into this key.
- ``reads`` and ``needs`` may be functions of the config when a knob matters only in some settings
  (``l2sp_lambda`` only with the l2sp regulariser), so runs that differ in a knob they do not use
  still share the stage.
- ``compute`` sees the config through a view that holds only the declared fields: reading any other
  field raises ``UndeclaredRead``, so a forgotten declaration is a failing test, not a stale number.
- A ``cached`` stage's output (a dict of tensors and plain values) is saved as
  ``<folder>/<name>-<key>.pt`` and loaded on every later run with the same key. A stage that loads
  something from outside (a data set, pre-trained weights) is not cached; its ``fingerprint`` of what
  it loaded (file list, weight digest) joins its key, so a changed file changes every key downstream.

``Run`` resolves stages on demand, upstream first, and records which were computed or loaded and
how long each took.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Union

from ..core import distributed
from ..core.config import FIELDS, KEYED_FIELDS, RunConfig
from ..core.cache import load_or_compute
from ..core.files import stable_hash

# The layout of the store's folder; bump when the file format changes (a stage's own computation
# has its own ``version``).
STORE_VERSION = 2

# What a stage that runs a model on the device reads (the precision changes numbers) and uses (where, how fast).
HARDWARE_READS = ("amp", "amp_dtype", "tf32")
HARDWARE_USES = ("device", "channels_last", "compile", "num_workers", "deterministic")
# Fields added to the reads after stage keys were in use, with the value they have wherever they do not apply:
# left out of a key at that value, so the stage files written before them keep their keys (decided, the dtype is
# none but for fp16 and TF32 none on the CPU; ``config.speed_defaults``; WiSE-FT interpolating the shared tensors
# and no held-out validation images are what every run did before those fields).
LATER_READS = {"amp_dtype": None, "tf32": None, "wise_keys": "shared", "val_split": 0.0}

Decl = Union[tuple, Callable[[RunConfig], Iterable[str]]]


class UndeclaredRead(RuntimeError):
    """A stage read a config field it did not declare: a bug in the stage's declaration."""


class ConfigView:
    """``cfg`` with only ``allowed`` fields readable; properties of RunConfig are evaluated on the
    view, so they too may read only declared fields."""

    def __init__(self, cfg: RunConfig, allowed: Iterable[str], stage: str):
        object.__setattr__(self, "_cfg", cfg)
        object.__setattr__(self, "_allowed", frozenset(allowed))
        object.__setattr__(self, "_stage", stage)

    def __getattr__(self, name: str):
        if name in FIELDS:
            if name not in self._allowed:
                raise UndeclaredRead(f"stage '{self._stage}' read config field '{name}' without declaring it; "
                                     f"add it to the stage's reads (or uses, if it never changes a number)")
            return getattr(self._cfg, name)
        attr = getattr(type(self._cfg), name, None)
        if isinstance(attr, property):
            return attr.fget(self)
        raise AttributeError(name)

    def __setattr__(self, name, value):
        raise dataclasses.FrozenInstanceError(f"cannot assign to field '{name}'")


@dataclass(frozen=True)
class Stage:
    name: str
    compute: Callable[["Inputs"], Any]
    reads: Decl = ()
    needs: Decl = ()
    uses: tuple = ()
    version: Union[int, Callable[[RunConfig], int]] = 1  # a function of the config where a change of the
    #                                  computation reached some settings only (their keys move, the others' stay)
    hardware: bool = False          # runs a model: reads HARDWARE_READS, uses HARDWARE_USES
    full_precision: bool = False    # a hardware stage that computes in fp32 whatever amp says: run and keyed as
    #                                 amp=false (a loss ranking must not come from bf16 logits)
    cached: bool = True
    fingerprint: Optional[Callable[[Any], Any]] = None  # uncached stages that load from outside
    load: Optional[Callable[[Any, "Inputs"], Any]] = None  # saved dict -> what downstream stages get
    resumable: bool = False         # compute gets a checkpoint path for its partial state
    doc: str = ""

    def reads_for(self, cfg: RunConfig) -> tuple:
        names = tuple(self.reads(cfg) if callable(self.reads) else self.reads)
        return names + (HARDWARE_READS if self.hardware else ())

    def needs_for(self, cfg: RunConfig) -> tuple:
        return tuple(self.needs(cfg) if callable(self.needs) else self.needs)

    def uses_for(self) -> tuple:
        return tuple(self.uses) + (HARDWARE_USES if self.hardware else ())

    def version_for(self, cfg: RunConfig) -> int:
        return self.version(cfg) if callable(self.version) else self.version

    def keyed_reads(self, cfg: RunConfig) -> tuple:
        """The declared fields whose values can change this stage's key (a full-precision stage's autocast cannot)."""
        return tuple(f for f in self.reads_for(cfg) if not (self.full_precision and f in ("amp", "amp_dtype")))

    def sees(self, cfg: RunConfig) -> RunConfig:
        """The config this stage runs and is keyed under: a full-precision stage's has autocast off."""
        return dataclasses.replace(cfg, amp=False, amp_dtype=None) if self.full_precision else cfg


def check_declarations(stages: dict[str, Stage], cfg: RunConfig) -> None:
    """Bugs in a declaration, found before anything runs: an unknown field or stage, a keyed field
    under ``uses``, or a ``reads``/``needs`` function that itself looks at an undeclared field (they
    are evaluated on the view of what they declare)."""
    for stage in stages.values():
        reads = stage.reads_for(cfg)
        for name in reads:
            if name not in FIELDS:
                raise ValueError(f"stage '{stage.name}' reads unknown config field '{name}'")
        for name in stage.uses_for():
            if name in KEYED_FIELDS:
                raise ValueError(f"stage '{stage.name}' uses '{name}', which can change a number: declare it in reads")
        view = ConfigView(cfg, reads, stage.name)
        if callable(stage.reads):
            stage.reads(view)
        for name in stage.needs(view) if callable(stage.needs) else stage.needs:
            if name not in stages:
                raise ValueError(f"stage '{stage.name}' needs unknown stage '{name}'")


def derive_key(stage: Stage, cfg: RunConfig, upstream: dict, fingerprint: Any = None) -> str:
    """sha256 over the stage's name and version, its declared fields' values, its upstream keys
    and (for stages that load from outside) the fingerprint of what they loaded."""
    cfg = stage.sees(cfg)
    values = cfg.to_dict()
    reads = [f for f in sorted(set(stage.reads_for(cfg))) if not (f in LATER_READS and values[f] == LATER_READS[f])]
    return stable_hash(stage.name, stage.version_for(cfg), {f: values[f] for f in reads},
                       {name: upstream[name] for name in stage.needs_for(cfg)}, fingerprint)


def plan_keys(stages: dict[str, Stage], cfg: RunConfig, targets: Iterable[str], fingerprints: dict) -> dict:
    """The key of every stage ``targets`` reach, without running anything; ``fingerprints`` stands in
    for what the uncached stages would load (name -> value). A loading stage not in ``fingerprints``
    cannot be keyed before it loads: its key, and that of every stage downstream, is None."""
    keys: dict[str, Optional[str]] = {}

    def key(name: str) -> Optional[str]:
        if name not in keys:
            stage = stages[name]
            upstream = {n: key(n) for n in stage.needs_for(cfg)}
            unknown = (stage.fingerprint is not None and name not in fingerprints) or None in upstream.values()
            keys[name] = None if unknown else derive_key(stage, cfg, upstream, fingerprints.get(name)
                                                         if stage.fingerprint else None)
        return keys[name]

    for target in targets:
        key(target)
    return keys


def stage_path(folder: Path, name: str, key: str, suffix: str = ".pt") -> Path:
    """Where a stage's file lives in the store under ``folder`` (nothing is created)."""
    return Path(folder) / f"v{STORE_VERSION}" / f"{name}-{key}{suffix}"


class Store:
    """Stage outputs in one folder: ``<folder>/v<STORE_VERSION>/<name>-<key>.pt``, checked files
    (files.save_checked) whose header names the stage and key, one lock per file."""

    def __init__(self, folder: Path):
        from ..core.files import owned_folder

        self.root = Path(folder)
        self.folder = self.root / f"v{STORE_VERSION}"
        if distributed.is_main():  # the other ranks of a torchrun never write
            owned_folder(self.folder, "the stage store", below=self.root.parent)  # no link at cache/ or cache/v2

    def path(self, name: str, key: str, suffix: str = ".pt") -> Path:
        return stage_path(self.root, name, key, suffix)

    def get(self, name: str, key: str, compute: Callable[[], Any], checkpoint: Optional[Path] = None):
        return load_or_compute(self.path(name, key), {"stage": name, "key": key, "store": STORE_VERSION},
                               compute, f"stage {name}", checkpoint)


@dataclass
class Inputs:
    """What a stage's compute gets: the config view, upstream values by name, the hardware (for
    stages that declare ``hardware``) and, for resumable stages, a checkpoint path."""

    cfg: ConfigView
    up: dict
    checkpoint: Optional[Path] = None

    def __getitem__(self, name: str):
        return self.up[name]

    @cached_property
    def hw(self):
        from ..core.hardware import hardware

        return hardware(self.cfg)


class Run:
    """One configuration's stages, resolved on demand (upstream first), each computed at most once.

    ``status``: stage -> "computed" | "cached" (cached stages only); ``seconds``: stage -> wall time
    of its own work (upstream excluded); ``keys``: stage -> key. ``on_stage(name, "start" | "done")``,
    when set, hears of each stage as it starts and once its value is there (the run's state file).
    ``configured`` is the config as given (its run id and config id); ``cfg``, what the stages see and
    are keyed by, has amp and channels_last decided for the device (``hardware.on_device``).
    """

    def __init__(self, cfg: RunConfig, stages: dict[str, Stage], store: Store):
        from ..core.hardware import on_device

        self.configured, cfg = cfg, on_device(cfg)
        check_declarations(stages, cfg)
        self.cfg, self.stages, self.store = cfg, stages, store
        self.values: dict[str, Any] = {}
        self.keys: dict[str, str] = {}
        self.status: dict[str, str] = {}
        self.seconds: dict[str, float] = {}
        self.device: Optional[str] = None  # where the stages run, once the run has started (hardware.start)
        self.on_stage: Optional[Callable[[str, str], None]] = None

    def __getitem__(self, name: str):
        if name not in self.values:
            self._resolve(name)
        return self.values[name]

    def _resolve(self, name: str) -> None:
        stage = self.stages[name]
        up = {n: self[n] for n in stage.needs_for(self.cfg)}
        if self.on_stage is not None:
            self.on_stage(name, "start")
        t0 = time.time()
        view = ConfigView(stage.sees(self.cfg), stage.reads_for(self.cfg) + stage.uses_for(), name)
        upstream_keys = {n: self.keys[n] for n in up}
        if not stage.cached:
            # a stage that loads from outside may write a cache of what it loaded (decoded images, a demo
            # model, downloaded weights): under torchrun rank 0 loads first, the others then read
            with (distributed.rank0_first() if stage.fingerprint else contextlib.nullcontext()):
                value = stage.compute(Inputs(view, up))
            fingerprint = stage.fingerprint(value) if stage.fingerprint else None
            self.keys[name] = derive_key(stage, self.cfg, upstream_keys, fingerprint)
        else:
            key = self.keys[name] = derive_key(stage, self.cfg, upstream_keys)
            inputs = Inputs(view, up, self.store.path(name, key, ".partial.pt") if stage.resumable else None)
            saved, self.status[name] = self.store.get(name, key, lambda: stage.compute(inputs), inputs.checkpoint)
            value = stage.load(saved, inputs) if stage.load else saved
        self.values[name] = value
        self.seconds[name] = round(time.time() - t0, 3)
        if self.on_stage is not None:
            self.on_stage(name, "done")
