"""Which fields belong to which part of a method: declared once, read by run identity and stage keys.

A method is a preset of switches (``registry.METHODS``: weighting, regularizer, distill, ...). Some fields
mean something only when a switch is on: ℓ2-SP's λ when regularizer = l2sp, LwF's λ, T and parts when
distill = lwf. Each such knob names when it is on (``when``: usually one switch and the values that turn it on,
``on``) and the stage that reads it, here and nowhere else.
Two places must agree on it, and both read this table:

* a run's identity (``identity.run_id``): a knob its method does not use is left out, so an ft run's
  ``ewc_lambda`` changes no run id. Knobs that were in every run id before this table (``in_every_id``)
  stay there, so run folders written before it keep their names;
* the stage keys (``stages.training``, ``stages.measuring``): a stage reads exactly the knobs of its own that
  are on, so runs that differ in a knob they do not use share those stages.

Adding a knob to a method part is one line below (and its field in ``config.RunConfig``).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Knob:
    field: str                 # the RunConfig field
    stage: str                 # the stage that reads it
    when: tuple                # when it is read: any one clause, a clause being conditions that all hold,
    #                            a condition (switch, values): the switch holds one of the values ("set": any
    #                            value but none or empty)
    in_every_id: bool = False  # in every run id, used or not (knobs older than this table)


def on(switch: str, *values) -> tuple:
    """``when`` of a knob that one switch turns on: ``on("regularizer", "l2sp")``; no values: any value but none."""
    return (((switch, values or "set"),),)


FLOW, PULL = ("flow", "flow-online"), ("l2sp", "ewc")
KNOBS = (
    Knob("normalize", "finetune", on("weighting", *FLOW), in_every_id=True),
    Knob("l2sp_lambda", "finetune", on("regularizer", "l2sp"), in_every_id=True),
    Knob("l2sp_beta", "finetune", on("regularizer", "l2sp")),
    Knob("pull", "finetune", on("regularizer", *PULL)),
    Knob("ewc_lambda", "finetune", on("regularizer", "ewc")),
    Knob("ewc_samples", "fisher", on("regularizer", "ewc")),
    Knob("ewc_draws", "fisher", on("regularizer", "ewc")),
    Knob("lwf_lambda", "finetune", on("distill", "lwf")),
    Knob("lwf_temperature", "finetune", on("distill", "lwf")),
    Knob("lwf_parts", "finetune", on("distill", "lwf")),
    # FLOW's weighted loss scales the task gradient by the batch's mean weight; a pull or a distillation beside
    # it is scaled alike, or not: only FLOW combined with one of them reads it
    Knob("term_scale", "finetune", ((("weighting", FLOW), ("regularizer", PULL)), (("weighting", FLOW), ("distill", ("lwf",))))),
    Knob("wise_keys", "wise", on("wise_alpha") + on("wise_alphas")),  # a WiSE-FT run: a reported α or a curve
)


def _holds(values, switch: str, allowed) -> bool:
    value = values[switch] if isinstance(values, dict) else getattr(values, switch)
    return (value is not None and value != () and value != []) if allowed == "set" else value in allowed


def _table() -> dict:
    return {k.field: k for k in KNOBS}


def used(field: str, values) -> bool:
    """Whether ``field`` is read under ``values`` (a RunConfig, a view of one or its dict): a knob when one of
    its clauses holds, any other field always."""
    knob = _table().get(field)
    return knob is None or any(all(_holds(values, s, allowed) for s, allowed in clause) for clause in knob.when)


def in_identity(field: str, values: dict) -> bool:
    """Whether ``field`` joins the run id of a run with these config ``values``."""
    knob = _table().get(field)
    return knob is None or knob.in_every_id or used(field, values)


def unread(given, cfgs) -> list[str]:
    """For each knob in ``given`` (the fields a user set on the command line) that none of ``cfgs`` (the runs
    a command makes) reads, one line saying so and naming the methods that would (``registry.METHODS``: the
    presets under which it is on). A knob set and not read changes nothing: said, never silently dropped."""
    from .config import RunConfig
    from .registry import METHODS

    defaults = {f: getattr(RunConfig, f) for f in RunConfig.__dataclass_fields__}
    lines = []
    for field in given:
        knob = _table().get(field)
        if knob is None or not cfgs or any(used(field, cfg) for cfg in cfgs):
            continue
        readers = [name for name, (_, preset) in METHODS.items() if used(field, {**defaults, **preset})]
        methods = sorted({cfg.method for cfg in cfgs})
        lines.append(f"{field} is read only when {when_text(knob)}" + (f" (methods {', '.join(readers)})" if readers else "")
                     + f"; method{'s' if len(methods) > 1 else ''} {', '.join(methods)} "
                     f"ignore{'' if len(methods) > 1 else 's'} it, so it changes nothing here")
    return lines


def when_text(knob: Knob) -> str:
    """'distill is lwf'; 'weighting is flow or flow-online and regularizer is l2sp or ewc, or ...': a knob's clauses."""
    def condition(switch, allowed):
        return f"{switch} is set" if allowed == "set" else f"{switch} is {' or '.join(allowed)}"
    return ", or ".join(" and ".join(condition(*c) for c in clause) for clause in knob.when)


def read_by(stage: str, cfg=None) -> tuple:
    """The knobs ``stage`` reads under ``cfg``: its own that are on, in table order. Without ``cfg``, every knob
    of the stage: for a stage that runs only when its switch is on (the Fisher, EWC's), which need not read
    the switch itself."""
    return tuple(k.field for k in KNOBS if k.stage == stage and (cfg is None or used(k.field, cfg)))
