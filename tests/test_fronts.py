"""Fronts on equal terms (reporting/fronts.py) on hand-made points, and a sweep whose run diverges."""
import math

import pandas as pd
import pytest

from flowvision.reporting import fronts

LABELS = {"lp": "LP (anchor)", "ft": "FT (lr × epochs)", "flow": "FLOW (τ)", "wiseft": "WiSE-FT (α)"}


def seed_frame(rows):
    df = pd.DataFrame([{"order": 0.0, "diverged": False, **r} for r in rows])
    df["average"] = (df["source"] + df["target"]) / 2
    df["select_average"], df["validated"] = df["average"], False
    return df


def test_the_area_is_above_chance_and_every_front_holds_the_same_anchors():
    """Chance (10, 20); the pre-trained model at (90, 20), the probe at (90, 60). FT's one point (70, 80)
    and the anchors dominate, above chance: (90−10)·(60−20) from the probe + (70−10)·(80−60) from FT's point
    = 3200 + 1200 = 4400 of the 90 × 80 square above chance: 61.1 %. A WiSE-FT α = 0 point at the
    pre-trained source accuracy with the probe's target accuracy or less adds nothing."""
    base = [{"method": "lp", "setting": "probe", "seed": 0, "source": 90.0, "target": 60.0, "knobs": ()},
            {"method": "ft", "setting": "lr=0.01, 1 ep", "seed": 0, "source": 70.0, "target": 80.0,
             "knobs": (("lr", 0.01), ("epochs", 1))}]
    alpha0 = {"method": "ft", "setting": "α=0", "seed": 0, "source": 90.0, "target": 55.0, "knobs": ()}
    chance, before = (10.0, 20.0), {0: 90.0}
    for rows in (base, base + [alpha0]):
        df = seed_frame(rows)
        area = fronts.per_seed(df, "ft", fronts.anchors(df, before, chance[1]), before, chance)[0]["area"]
        assert area == pytest.approx(100 * 4400 / 7200)
    lone = seed_frame(base[1:])  # without the probe's run, the pre-trained anchor alone: (90, 20) adds nothing
    area = fronts.per_seed(lone, "ft", fronts.anchors(lone, before, chance[1]), before, chance)[0]["area"]
    assert area == pytest.approx(100 * (70 - 10) * (80 - 20) / 7200)


def test_target_at_a_fixed_drop_best_setting_edges_and_the_paired_comparison_with_ft():
    rows = []
    for seed, lift in ((0, 0.0), (1, 1.0), (2, 2.0)):
        rows += [{"method": "lp", "setting": "probe", "seed": seed, "source": 90.0, "target": 50.0 + lift, "knobs": ()},
                 {"method": "ft", "setting": "lr=0.001, 3 ep", "seed": seed, "source": 86.0, "target": 70.0 + lift,
                  "knobs": (("lr", 0.001), ("epochs", 3))},
                 {"method": "ft", "setting": "lr=0.01, 3 ep", "seed": seed, "source": 60.0, "target": 90.0 + lift,
                  "knobs": (("lr", 0.01), ("epochs", 3))},
                 {"method": "flow", "setting": "τ=p25", "seed": seed, "source": 84.0 + lift, "target": 80.0,
                  "knobs": (("τ", 25.0),)},
                 {"method": "flow", "setting": "τ=median", "seed": seed, "source": 70.0, "target": 82.0 + 2 * lift,
                  "knobs": (("τ", 50.0),)}]
    df = seed_frame(rows)
    summary, compared = fronts.summary(df, {0: 90.0, 1: 90.0, 2: 90.0}, (10.0, 25.0), LABELS, ("lp", "ft", "flow"))
    ft = summary.set_index("method").loc["FT (lr × epochs)"]
    # drop ≤ 5: only lr=0.001 (86) of FT's points forgets no more than 5 of 90; ≤ 10 the same; ≤ 20 the same (60 < 70)
    assert ft["target at drop ≤ 5"] == "71.0" and ft["target at drop ≤ 20"] == "71.0"
    assert ft["best (chosen on test)"] == "lr=0.001, 3 ep"  # Average 78.5 + lift/2 beats 75 + lift/2
    assert ft["at grid edge"] == "lr (smallest)"  # the best learning rate is the grid's smallest: a bound
    flow = summary.set_index("method").loc["FLOW (τ)"]
    assert flow["best (chosen on test)"] == "τ=p25" and flow["at grid edge"] == "τ (smallest)"
    # drop ≤ 10 with FLOW: τ=p25 at 84 + lift ≥ 80 → target 80 every seed; FT's 70 + lift: FLOW − FT = 10, 9, 8
    row = compared.set_index("method").loc["FLOW (τ)"]
    assert row["Δ target at drop ≤ 10 (points)"].startswith("+9.00 [")
    # best Average per seed: FLOW (84 + lift + 80) / 2, FT (86 + 70 + lift) / 2 → FLOW − FT = 4 for every seed
    assert row["Δ best Average (points)"] == "+4.00 [+4.00, +4.00]"
    assert row["verdict (best Average)"] == "FLOW scores higher than FT at 95% (paired over 3 seeds)"
    assert "LP (anchor)" not in set(compared["method"])  # an anchor, not a contender


def test_a_sweep_whose_run_diverges_goes_on_and_marks_the_point(tiny):
    """An absurd learning rate makes FT's loss NaN at its second step: the run ends as diverged (its state
    file says so), the sweep finishes, the summary counts it and the figure lists it."""
    import json
    from pathlib import Path

    from flowvision.reporting.frontier import frontier

    res = frontier("gratings", "demo", tiny, (0,), lrs=[1e30], epochs=[1], methods=("ft",))
    assert res["diverged"] == ["FT lr=1e+30, 1 ep, seed 0"]
    row = res["summary"].set_index("method").loc["FT (lr × epochs)"]
    assert row["diverged"] == 1 and row["points"] == 0
    assert Path(res["png"]).stat().st_size > 0 and set(res["points"]["method"]) == {"lp"}
    states = [json.loads(p.read_text()) for p in Path(tiny["results_dir"]).glob("runs/*/state.json")]
    failed = [s for s in states if s["status"] == "failed"]
    assert len(failed) == 1 and "the training loss became nan" in failed[0]["error"]


def test_the_best_setting_is_chosen_on_held_out_numbers_and_reported_on_the_test_numbers():
    """Where the runs held images out, the setting with the best held-out Average wins even when another has the
    better test Average: choosing on what is reported would favour the luckiest of many settings."""
    rows = [{"method": "ft", "setting": "lr=0.01, 1 ep", "seed": s, "source": 60.0, "target": 95.0,
             "knobs": (("lr", 0.01), ("epochs", 1)), "select": 70.0} for s in (0, 1)]
    rows += [{"method": "ft", "setting": "lr=0.003, 1 ep", "seed": s, "source": 80.0, "target": 70.0,
              "knobs": (("lr", 0.003), ("epochs", 1)), "select": 80.0} for s in (0, 1)]
    df = seed_frame([{k: v for k, v in r.items() if k != "select"} for r in rows])
    df["select_average"], df["validated"] = [r["select"] for r in rows], True
    summary, _ = fronts.summary(df, {0: 90.0, 1: 90.0}, (10.0, 10.0), LABELS, ("ft",))
    row = summary.iloc[0]
    assert row["best (chosen on validation)"] == "lr=0.003, 1 ep"  # test Average 75 < 77.5, held-out 80 > 70
    assert row["Average there"] == "75.00 [75.00, 75.00]" and row["source / target there"] == "80.0 / 70.0"
