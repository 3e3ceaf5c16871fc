"""Small statistics the reports need, on plain numbers (no runs, no models):

    paired_t([11.2, 9.8, 14.0])              # mean difference over seeds and its 95% t-interval
    pareto_front([(s, t), ...])              # the points no other point beats on both axes
    dominated_area(front, reference=(0, 0))  # the area a front dominates (hypervolume in 2-D)

Accuracies go in as the caller has them (the frontier uses percent).
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
