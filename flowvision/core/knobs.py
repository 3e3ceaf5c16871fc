"""Which fields belong to which part of a method: declared once, read by run identity and stage keys.

A method is a preset of switches (``registry.METHODS``: weighting, regularizer, distill, ...). Some fields
mean something only when a switch is on: ℓ2-SP's λ when regularizer = l2sp, LwF's λ, T and parts when
distill = lwf. Each such knob names its switch, the switch's values that turn it on and the stage that
reads it, here and nowhere else. Two places must agree on it, and both read this table:

* a run's identity (``identity.run_id``): a knob its method does not use is left out, so an ft run's
  ``ewc_lambda`` changes no run id. Knobs that were in every run id before this table (``in_every_id``)
  stay there, so run folders written before it keep their names;
* the stage keys (``stages.training``): the finetune and fisher stages read exactly the knobs of theirs
  that are on, so runs that differ in a knob they do not use share those stages.

Adding a knob to a method part is one line below (and its field in ``config.RunConfig``).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Knob:
    field: str                 # the RunConfig field
    switch: str                # the field that turns it on
    on: tuple                  # the switch's values under which the knob is read
    stage: str                 # the stage that reads it
    in_every_id: bool = False  # in every run id, used or not (knobs older than this table)


KNOBS = (
    Knob("normalize", "weighting", ("flow", "flow-online"), "finetune", in_every_id=True),
    Knob("l2sp_lambda", "regularizer", ("l2sp",), "finetune", in_every_id=True),
    Knob("ewc_lambda", "regularizer", ("ewc",), "finetune"),
    Knob("ewc_samples", "regularizer", ("ewc",), "fisher"),
    Knob("ewc_draws", "regularizer", ("ewc",), "fisher"),
    Knob("lwf_lambda", "distill", ("lwf",), "finetune"),
    Knob("lwf_temperature", "distill", ("lwf",), "finetune"),
    Knob("lwf_parts", "distill", ("lwf",), "finetune"),
)


def _table() -> dict:
    return {k.field: k for k in KNOBS}


def used(field: str, values) -> bool:
    """Whether ``field`` is read under ``values`` (a RunConfig, a view of one or its dict): a knob when its
    switch is on, any other field always."""
    knob = _table().get(field)
    if knob is None:
        return True
    on = values[knob.switch] if isinstance(values, dict) else getattr(values, knob.switch)
    return on in knob.on


def in_identity(field: str, values: dict) -> bool:
    """Whether ``field`` joins the run id of a run with these config ``values``."""
    knob = _table().get(field)
    return knob is None or knob.in_every_id or used(field, values)


def unread(given, cfgs) -> list[str]:
    """For each knob in ``given`` (the fields a user set on the command line) that none of ``cfgs`` (the runs
    a command makes) reads, one line saying so and naming the methods that would (``registry.METHODS``: the
    presets whose switch turns it on). A knob set and not read changes nothing: said, never silently dropped."""
    from .registry import METHODS

    lines = []
    for field in given:
        knob = _table().get(field)
        if knob is None or not cfgs or any(used(field, cfg) for cfg in cfgs):
            continue
        readers = [name for name, (_, preset) in METHODS.items() if preset.get(knob.switch) in knob.on]
        methods = sorted({cfg.method for cfg in cfgs})
        lines.append(f"{field} is read only when {knob.switch} is {' or '.join(knob.on)} (methods "
                     f"{', '.join(readers)}); method{'s' if len(methods) > 1 else ''} {', '.join(methods)} "
                     f"ignore{'' if len(methods) > 1 else 's'} it, so it changes nothing here")
    return lines


def read_by(stage: str, cfg=None) -> tuple:
    """The knobs ``stage`` reads under ``cfg``: its own whose switch is on, in table order. Without ``cfg``,
    every knob of the stage: for a stage that runs only when its switch is on (the Fisher, EWC's), which
    need not read the switch itself."""
    return tuple(k.field for k in KNOBS if k.stage == stage and (cfg is None or used(k.field, cfg)))
