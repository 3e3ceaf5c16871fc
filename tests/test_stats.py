"""Paired t-interval and Pareto fronts on hand-made numbers."""
import math

import pytest

from flowvision.core.stats import dominated_area, paired_t, pareto_front


def test_paired_t_interval_by_hand():
    got = paired_t([10.0, 12.0, 14.0])  # mean 12, std 2, t_{0.975, 2} = 4.302653
    assert got["mean"] == 12.0 and got["std"] == pytest.approx(2.0)
    half = 4.302653 * 2.0 / math.sqrt(3)
    assert got["lo"] == pytest.approx(12.0 - half, abs=1e-5) and got["hi"] == pytest.approx(12.0 + half, abs=1e-5)
    one = paired_t([3.0])
    assert one["mean"] == 3.0 and math.isnan(one["lo"])


def test_pareto_front_on_hand_made_points():
    # (source acc, target acc); both higher is better
    points = [(90, 50), (80, 70), (85, 60), (70, 65), (60, 90), (80, 70), (50, 80), (91, 40)]
    #          front     front     front     under (80,70) front   dup of 1  under (60,90) front
    assert pareto_front(points) == [4, 1, 2, 0, 7]
    front = [points[i] for i in pareto_front(points)]
    # staircase from the right: 91·40 + 90·10 + 85·10 + 80·10 + 60·20
    assert dominated_area(front) == 91 * 40 + 90 * 10 + 85 * 10 + 80 * 10 + 60 * 20
    # from (70, 45): (90,50) adds 20·5, (85,60) 15·10, (80,70) 10·10; (91,40) and (60,90) lie outside
    assert dominated_area(front, reference=(70, 45)) == 100 + 150 + 100
    assert dominated_area([(90, 50)], reference=(50, 20)) == 40 * 30


def test_frontier_sweep_tags_only_runs_off_a_methods_defaults():
    from flowvision.reporting.frontier import sweep

    cfgs = sweep("gratings", "demo", {}, seeds=(0,))
    ft = [c for c in cfgs if c.method == "ft"]
    lwf, ewc = ([c for c in cfgs if c.method == m] for m in ("lwf", "ewc"))
    assert len(ft) == 6 and len(cfgs) == 1 + 6 + 1 + 5 + 1 + 3 + len(lwf) + len(ewc)  # LP; lr × 0.1, 0.3, 1 by epochs 1, 3; α, τ, λ
    untagged = [(c.method, c.lr, c.epochs, c.tau) for c in cfgs if c.sweep is None]
    assert untagged == [("lp", 0.01, 3, "median"), ("ft", 0.01, 3, "median"), ("wiseft", 0.01, 3, "median"), ("flow", 0.01, 3, "median"),
                        ("flow+wiseft", 0.01, 3, "median"), ("l2sp", 0.01, 3, "median"), ("lwf", 0.01, 3, "median"),
                        ("ewc", 0.01, 3, "median")]
    assert {c.tau for c in cfgs if c.method == "flow"} == {"p10", "p25", "median", "p75", "p90"}
    assert [c.lwf_lambda for c in lwf] == [0.0, 0.1, 0.3, 1.0, 3.0, 10.0] and [c.ewc_lambda for c in ewc] == [0.0, 0.1, 1.0, 10.0, 100.0]
    assert [c.sweep for c in lwf if c.lwf_lambda == 1.0] == [None]  # Li & Hoiem's λ is the method's own run
    custom = sweep("gratings", "demo", {}, seeds=(0,), lambdas={"lwf": [0.5], "ewc": [2.0, 4.0]})
    assert [(c.method, c.lwf_lambda if c.method == "lwf" else c.ewc_lambda) for c in custom
            if c.method in ("lwf", "ewc")] == [("lwf", 0.5), ("ewc", 2.0), ("ewc", 4.0)]


def test_frontier_sweeps_l2sp_over_lambda_at_ft_settings():
    """The frontier sweeps the ℓ2 baseline's λ like FT's learning rate: the preset's λ (0.1, L2-SP's own code's α)
    × 0.1, 1, 10 at FT's lr and epochs, the preset's own λ being the method's ordinary run."""
    from flowvision.core import config
    from flowvision.reporting.frontier import sweep

    overrides = {"lr": 0.02, "epochs": 2}
    l2sp = [c for c in sweep("gratings", "demo", overrides, seeds=(0,)) if c.method == "l2sp"]
    ft = config.resolve("gratings", "demo", "ft", overrides)
    assert [c.l2sp_lambda for c in l2sp] == [0.01, 0.1, 1.0]
    assert all((c.regularizer, c.weighting, c.lr, c.epochs) == ("l2sp", "uniform", ft.lr, ft.epochs) for c in l2sp)
    assert [c.sweep for c in l2sp] == ["frontier", None, "frontier"]
    given = sweep("gratings", "demo", {}, seeds=(0, 1), lambdas={"l2sp": [0.5]})
    assert [(c.seed, c.l2sp_lambda, c.sweep) for c in given if c.method == "l2sp"] == [(0, 0.5, "frontier"),
                                                                                       (1, 0.5, "frontier")]


def test_verdict_interval_and_attainable_on_hand_made_numbers():
    from flowvision.core.stats import attainable, interval, verdict

    up = paired_t([10.0, 12.0, 14.0])
    assert verdict(up, "flow", "ft", "keeps more") == "flow keeps more than ft at 95% (paired over 3 seeds)"
    assert verdict(paired_t([-10.0, -12.0, -14.0]), "flow", "ft", "keeps more") == "ft keeps more than flow at 95% (paired over 3 seeds)"
    assert verdict(paired_t([5.0, -4.0, 1.0]), "a", "b") == "a and b not distinguishable at 95% with 3 seeds"
    assert verdict(paired_t([5.0]), "a", "b") == "one seed: no test of a against b"
    wide = paired_t([1.0, 99.0])  # mean 50, half-width 12.706 * 69.3 / sqrt(2) ≈ 622.6
    assert wide["lo"] < -500 and wide["hi"] > 600  # the computation keeps the raw interval ...
    assert interval(wide, (0, 100)) == "50.00 [0.00, 100.00]"  # ... only the printed one is clipped
    assert interval(up, sign=True) == f"+12.00 [{up['lo']:+.2f}, {up['hi']:+.2f}]" and interval(paired_t([3.0])) == "3.00"
    pts = [(90, 50), (80, 70), (85, 60), (60, 90)]
    assert attainable(pts, 85) == 60 and attainable(pts, 80) == 70 and attainable(pts, 0) == 90
    assert attainable(pts, 95) is None
