"""Fronts on equal terms, and the comparisons a sceptic accepts (what ``frontier`` reports).

Input: one row per run and setting (``seed_points``: method, setting, seed, source and target in percent,
the knobs the setting was swept over) and, per seed, two anchors every method can reach without
training anything of its own:

* the pre-trained model: its source accuracy, and chance on the target task (it has no head for it);
* the linear probe: the pre-trained backbone with a target head (restored BatchNorms: no forgetting).

Every method's front includes both anchors, so no method owns a point the others lack (WiSE-FT's α = 0
sits at the pre-trained source accuracy; a front without it would look better merely for being swept
that far). The area a front dominates is measured above chance, from (100/K_source, 100/K_target), as a
percent of the square above it: what is below chance is not a trade-off anyone makes.

Beside the area, the target accuracy each method reaches at a fixed forgetting (a source drop of at most
``DROPS`` points), read off the staircase (``stats.attainable``: the best setting that forgets no more,
no interpolation between settings), per seed.

Each method's best setting is chosen by the paper's Average, mean(source, target), of the seed means on
the *selection* numbers (``select`` columns: validation numbers where the runs have them, else the test
numbers themselves — the summary says which) and reported on the test numbers; a best setting at the edge
of an open-ended knob's grid (learning rate, epochs, λ, τ's quantile) is flagged: the best may lie beyond.

Every comparison with FT is paired over seeds (the same seed: the same source model and data order),
with its t-interval over the seeds both ran and a verdict (``stats.verdict``): "not distinguishable at 95%
with N seeds" is an answer, and is said.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import pandas as pd

from ..core.stats import attainable, dominated_area, interval, paired_t, pareto_front, verdict

DROPS = (5.0, 10.0, 20.0)  # source drops (points) at which target accuracies are compared
OPEN_KNOBS = ("lr", "epochs", "λ", "τ")  # knobs whose grid could go further; α ends at 0 and 1 by definition
ANCHORS = ("pre-trained", "linear probe")


def anchors(seed_pts: pd.DataFrame, before: dict, chance_target: float) -> dict:
    """seed -> [(source, target)] of the anchors: the pre-trained model (``before[seed]``, chance) and the
    linear probe (the ``lp`` rows of ``seed_pts``, when the sweep ran it)."""
    out = {}
    for seed, source in before.items():
        lp = seed_pts[(seed_pts["method"] == "lp") & (seed_pts["seed"] == seed)]
        out[seed] = [(source, chance_target)] + list(zip(lp["source"], lp["target"]))
    return out


def _area(points: Sequence[tuple], chance: tuple) -> float:
    """The dominated area above ``chance`` of the front of ``points``, in percent of the square above it."""
    front = [points[i] for i in pareto_front(points)]
    return 100.0 * dominated_area(front, reference=chance) / ((100.0 - chance[0]) * (100.0 - chance[1]))


def per_seed(seed_pts: pd.DataFrame, method: str, anchor: dict, before: dict, chance: tuple) -> dict:
    """seed -> {"area", "drop<d>"...} for one method's own points plus the anchors."""
    own = seed_pts[(seed_pts["method"] == method) & ~seed_pts["diverged"]]
    out = {}
    for seed, rows in own.groupby("seed"):
        xy = list(zip(rows["source"], rows["target"])) + anchor.get(seed, [])
        out[seed] = {"area": _area(xy, chance),
                     **{f"drop{d:g}": attainable(xy, before[seed] - d) for d in DROPS}}
    return out


def best_setting(seed_pts: pd.DataFrame, method: str) -> Optional[pd.Series]:
    """The setting whose seed-mean selection Average is highest (``select_average``), with its test rows."""
    own = seed_pts[(seed_pts["method"] == method) & ~seed_pts["diverged"]]
    if own.empty:
        return None
    means = own.groupby("setting", sort=False)["select_average"].mean()
    return means.idxmax()


def at_edge(seed_pts: pd.DataFrame, method: str, setting: str) -> str:
    """'' when the setting is inside its method's grid on every open-ended knob, else the knobs it ends:
    'lr (smallest)', 'λ (largest)'."""
    own = seed_pts[seed_pts["method"] == method]
    knobs = own.set_index("setting")["knobs"].to_dict()
    mine = dict(knobs[setting])
    ends = []
    for name in OPEN_KNOBS:
        if name not in mine:
            continue
        values = sorted({dict(k).get(name) for k in knobs.values()} - {None})
        if len(values) > 1 and mine[name] == values[0]:
            ends.append(f"{name} (smallest)")
        elif len(values) > 1 and mine[name] == values[-1]:
            ends.append(f"{name} (largest)")
    return ", ".join(ends)


def summary(seed_pts: pd.DataFrame, before: dict, chance: tuple, labels: dict,
            methods: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary, comparisons). ``before``: seed -> the pre-trained source value (percent); ``chance``:
    (source, target) chance levels in percent; ``labels``: method -> its row label. The summary has one row
    per method; the comparisons one per method other than FT, each paired with FT over shared seeds."""
    anchor = anchors(seed_pts, before, chance[1])
    validated = bool(seed_pts["validated"].all())
    stats, rows = {}, []
    for method in methods:
        own = seed_pts[seed_pts["method"] == method]
        if own.empty:
            continue
        seeds = per_seed(seed_pts, method, anchor, before, chance)
        best = best_setting(seed_pts, method)
        at = own[(own["setting"] == best) & ~own["diverged"]] if best is not None else own.iloc[0:0]
        stats[method] = {"seeds": seeds, "best": at.set_index("seed")["average"].to_dict()}
        means = own[~own["diverged"]].groupby("setting", sort=False)[["source", "target"]].mean()
        front = pareto_front(list(zip(means["source"], means["target"]))) if len(means) else []
        edge = at_edge(seed_pts, method, best) if best is not None else ""
        row = {"method": labels.get(method, method), "seeds": own["seed"].nunique(), "points": len(means),
               "on front": len(front), "diverged": int(own["diverged"].sum()),
               "area above chance (%)": interval(paired_t([s["area"] for s in seeds.values()]), (0, 100))
               if seeds else "—",
               "best (chosen on " + ("validation" if validated else "test") + ")": best or "—",
               "at grid edge": edge or "no",
               "Average there": interval(paired_t(list(at["average"])), (0, 100)) if len(at) else "—",
               "source / target there": f"{at['source'].mean():.1f} / {at['target'].mean():.1f}" if len(at) else "—"}
        for d in DROPS:
            reached = [s[f"drop{d:g}"] for s in seeds.values() if s[f"drop{d:g}"] is not None]
            row[f"target at drop ≤ {d:g}"] = (f"{sum(reached) / len(reached):.1f}" +
                                              (f" ({len(reached)} of {len(seeds)} seeds)" if len(reached) < len(seeds) else "")
                                              if reached else "—")
        rows.append(row)
    return pd.DataFrame(rows), comparisons(stats, labels, "ft")


def comparisons(stats: dict, labels: dict, base: str = "ft") -> pd.DataFrame:
    """Each method against ``base``, paired over the seeds both ran: the difference of the best setting's
    Average, of the area above chance and of the target accuracy at a source drop ≤ 10 points (seeds where
    both reach it), each a t-interval over seeds, and the verdict on the Average."""
    if base not in stats:
        return pd.DataFrame()
    rows = []
    for method, st in stats.items():
        if method in (base, "lp"):  # the probe is an anchor every front holds, not a contender
            continue
        seeds = sorted(set(st["best"]) & set(stats[base]["best"]))
        avg = [st["best"][s] - stats[base]["best"][s] for s in seeds]
        both = sorted(set(st["seeds"]) & set(stats[base]["seeds"]))
        area = [st["seeds"][s]["area"] - stats[base]["seeds"][s]["area"] for s in both]
        at10 = [st["seeds"][s]["drop10"] - stats[base]["seeds"][s]["drop10"] for s in both
                if st["seeds"][s]["drop10"] is not None and stats[base]["seeds"][s]["drop10"] is not None]
        a, b = labels.get(method, method).split(" (")[0], labels.get(base, base).split(" (")[0]
        rows.append({"method": labels.get(method, method),
                     "Δ best Average (points)": interval(paired_t(avg), (-100, 100), sign=True) if avg else "—",
                     "Δ area above chance (points)": interval(paired_t(area), (-100, 100), sign=True) if area else "—",
                     "Δ target at drop ≤ 10 (points)": interval(paired_t(at10), (-100, 100), sign=True) if at10 else "—",
                     "verdict (best Average)": verdict(paired_t(avg), a, b, "scores higher") if avg else "—"})
    return pd.DataFrame(rows)


def chance_levels(records: Sequence[dict], measure: str) -> tuple:
    """(source, target) chance in percent: 100/K of the source classes (labelled source images; on
    unlabelled ones the agreement with the pre-trained top-1, 100/K of the model's source classes too) and
    of the target classes."""
    first = records[0]
    k_target = (first.get("target_data") or {}).get("num_classes") or 2
    k_source = first.get("source_eval_classes") or 1000  # unlabelled photos: an IN-1K model's 1000 classes
    return (100.0 / k_source, 100.0 / k_target)


def nan_to_none(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x
