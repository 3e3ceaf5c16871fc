"""Small statistics the reports need, on plain numbers (no runs, no models):

    paired_t([11.2, 9.8, 14.0])              # mean difference over seeds and its 95% t-interval
    verdict(paired_t(diffs), "flow", "ft")   # what that interval says, in words ("not distinguishable ...")
    interval(p, bounds=(-100, 100))          # '+27.98 [+17.99, +37.98]', clipped only as printed
    pareto_front([(s, t), ...])              # the points no other point beats on both axes
    dominated_area(front, reference=(0, 0))  # the area a front dominates (hypervolume in 2-D)
    attainable([(s, t), ...], 85.0)          # the best t among points with s ≥ 85 (None: none reaches it)

Accuracies go in as the caller has them (the frontier uses percent). Every computation keeps the raw
numbers: an interval that runs past what a percentage can be is clipped only where it is printed.
"""
from __future__ import annotations

import math
from typing import Sequence


def paired_t(diffs: Sequence[float], level: float = 0.95) -> dict:
    """Mean of per-seed differences, their sample std (ddof=1) and the two-sided ``level`` t-interval
    over seeds, mean ± t_{n−1}·std/√n: {"n", "mean", "std", "lo", "hi"}. One difference has no
    interval (std, lo, hi are NaN)."""
    from scipy.stats import t

    values = [float(d) for d in diffs]
    n = len(values)
    if n == 0:
        raise ValueError("no paired differences")
    mean = sum(values) / n
    if n == 1:
        return {"n": 1, "mean": mean, "std": math.nan, "lo": math.nan, "hi": math.nan}
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "lo": mean - half, "hi": mean + half}


def pareto_front(points: Sequence[tuple]) -> list[int]:
    """Indices of the points (x, y), both to be maximised, that no other point dominates (at least as
    good on both axes and better on one), ordered by x ascending (then y descending). Duplicates of
    a front point are kept once: the lowest index."""
    order = sorted(range(len(points)), key=lambda i: (-points[i][0], -points[i][1], i))
    front, best_y = [], -math.inf
    for i in order:  # x descending: a point is on the front when its y beats every point with larger x
        x, y = points[i]
        if y > best_y:
            front.append(i)
            best_y = y
    return front[::-1]


def dominated_area(front: Sequence[tuple], reference: tuple = (0.0, 0.0)) -> float:
    """The area of the set of (x, y) ≥ reference that some front point dominates (the 2-D hypervolume):
    a staircase under the front. ``front``: mutually non-dominated points (``pareto_front``) in any order;
    points not beyond the reference on both axes add nothing."""
    rx, ry = reference
    pts = sorted(((x, y) for x, y in front if x > rx and y > ry), key=lambda p: -p[0])
    area, y_done = 0.0, ry
    for x, y in pts:  # x descending, y ascending along a front
        if y > y_done:
            area += (x - rx) * (y - y_done)
            y_done = y
    return area


def verdict(p: dict, a: str, b: str, what: str = "is higher", level: float = 0.95) -> str:
    """The words for a paired difference ``a − b`` over seeds (``paired_t``): which is higher when the
    ``level`` interval excludes 0, else "not distinguishable at 95% with N seeds"; one seed is no test."""
    n = p["n"]
    if n < 2:
        return f"one seed: no test of {a} against {b}"
    if p["lo"] > 0:
        return f"{a} {what} than {b} at {level:.0%} (paired over {n} seeds)"
    if p["hi"] < 0:
        return f"{b} {what} than {a} at {level:.0%} (paired over {n} seeds)"
    return f"{a} and {b} not distinguishable at {level:.0%} with {n} seeds"


def interval(p: dict, bounds: tuple = (-math.inf, math.inf), sign: bool = False) -> str:
    """'12.30 [10.10, 14.50]' from ``paired_t`` (the mean alone for one seed); the interval's ends are
    clipped to ``bounds`` (what the quantity can be: (0, 100) for a percentage, (-100, 100) for a
    difference of two) only here, where it is printed."""
    form = "+.2f" if sign else ".2f"
    if p["n"] < 2:
        return f"{p['mean']:{form}}"
    lo, hi = max(p["lo"], bounds[0]), min(p["hi"], bounds[1])
    return f"{p['mean']:{form}} [{lo:{form}}, {hi:{form}}]"


def attainable(points: Sequence[tuple], x: float) -> float | None:
    """The best y among the points (x_i, y_i) with x_i ≥ ``x``: what the staircase under a front gives at
    ``x``, i.e. the target accuracy one tested setting reaches while keeping at least ``x`` of the source
    measure (no interpolation between settings: a point between two is not a setting anyone ran). None
    when no point reaches ``x``."""
    ys = [y for xi, y in points if xi >= x]
    return max(ys) if ys else None
