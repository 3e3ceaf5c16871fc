"""End to end on tiny synthetic data: records, stage cache, method presets."""
import json

import pytest
import torch

from flowvision import config, pipeline


def test_flow_run_writes_a_complete_record_and_a_second_run_skips_every_stage(tiny):
    cfg = config.resolve("gratings", "demo", "flow", tiny)
    first = pipeline.run(cfg)
    run_dir = first.pop("run_dir")
    saved = json.loads(open(f"{run_dir}/result.json").read())
    for key in ("target_acc", "source_acc_before", "source_acc_after", "source_drop", "tau", "weight_stats",
                "stage_seconds", "wall_seconds", "git_sha", "versions", "seed", "weights"):
        assert key in saved, key
    assert saved["weights"].startswith("demo:") and saved["versions"]["torch"] == torch.__version__
    assert saved["source_drop"] == pytest.approx(saved["source_acc_before"] - saved["source_acc_after"])
    assert set(first["stages"].values()) == {"computed"}
    assert first["stages"]["finetune"] == "computed" and first["stages"]["refit"] == "computed"
    lines = open(f"{run_dir}/weights.csv").read().splitlines()
    assert lines[0] == "index,label,loss,weight" and len(lines) == 1 + tiny["n_train"]
    summary = open(f"{run_dir}/summary.csv").read().splitlines()
    assert summary[0].startswith("stage,epoch,loss") and {l.split(",")[0] for l in summary[1:]} == {"probe", "finetune", "refit head"}
    assert "tau: median" in open(f"{run_dir}/config.yaml").read()

    second = pipeline.run(cfg)
    assert set(second["stages"].values()) == {"cached"}
    for key in ("target_acc", "source_acc_after", "tau"):
        assert second[key] == first[key]


def test_linear_probe_cannot_forget_and_ft_shares_its_finetuning_with_wiseft(tiny):
    lp = pipeline.run(config.resolve("gratings", "demo", "lp", tiny))
    assert lp["source_drop"] == 0.0 and "finetune" not in lp["stages"]
    ft = pipeline.run(config.resolve("gratings", "demo", "ft", tiny))
    assert "probe" not in ft["stages"] and ft["stages"]["finetune"] == "computed"
    wise = pipeline.run(config.resolve("gratings", "demo", "wiseft", tiny))
    assert wise["stages"]["finetune"] == "cached"  # one fine-tuning, many α
    by_alpha = {w["alpha"]: w for w in wise["wise"]}
    assert by_alpha[1.0]["target_acc"] == ft["target_acc"]
    assert by_alpha[1.0]["source_acc_after"] == ft["source_acc_after"]
    assert by_alpha[0.0]["source_drop"] == 0.0  # pre-trained shared weights, source head/BN
    assert wise["target_acc"] == by_alpha[0.5]["target_acc"]


def test_tau_sweep_shares_probe_and_losses_and_changes_weights(tiny):
    a = pipeline.run(config.resolve("gratings", "demo", "flow", dict(tiny, tau="0.5")))
    b = pipeline.run(config.resolve("gratings", "demo", "flow", dict(tiny, tau="p25")))
    assert b["stages"]["probe"] == "cached" and b["stages"]["losses"] == "cached"
    assert b["stages"]["finetune"] == "computed" and a["tau"] == 0.5 and b["tau"] != 0.5
    assert a["run_id"] != b["run_id"]


def test_online_weighting_trains_a_different_model_than_static_and_uniform(tiny):
    from pathlib import Path

    def finetuned_states(results):
        return {p.name: torch.load(p, weights_only=True)["model"] for p in Path(results).glob("cache/v*/finetune-*.pt")}

    online = pipeline.run(config.resolve("gratings", "demo", "flow", dict(tiny, weighting="flow-online")))
    assert online["weighting"] == "flow-online" and online["tau"] > 0 and online["stages"]["finetune"] == "computed"
    pipeline.run(config.resolve("gratings", "demo", "flow", tiny))
    pipeline.run(config.resolve("gratings", "demo", "lpft", tiny))
    states = list(finetuned_states(tiny["results_dir"]).values())
    assert len(states) == 3
    key = "layer1.0.conv1.weight"
    assert not torch.equal(states[0][key], states[1][key]) and not torch.equal(states[1][key], states[2][key])
    assert not torch.equal(states[0][key], states[2][key])


def test_flow_weights_from_a_different_probe_recompute_the_finetuning(tiny):
    base = dict(tiny, weighting="flow", tau="0.5")
    a = pipeline.run(config.resolve("gratings", "demo", "ft", base))
    b = pipeline.run(config.resolve("gratings", "demo", "ft", dict(base, probe_epochs=2)))
    assert a["stages"]["finetune"] == "computed" and b["stages"]["finetune"] == "computed"


@pytest.mark.parametrize("method,knobs", [
    ("ft", dict(weighting="uniform", head_init="random", finetune=True, regularizer="none", refit=False)),
    ("lp", dict(weighting="uniform", head_init="probe", finetune=False)),
    ("lpft", dict(weighting="uniform", head_init="probe", finetune=True, refit=False)),
    ("l2sp", dict(weighting="uniform", head_init="random", regularizer="l2sp")),
    ("wiseft", dict(weighting="uniform", head_init="random", wise_alpha=0.5)),
    ("flow", dict(weighting="flow", head_init="probe", refit=True, regularizer="none", wise_alpha=None)),
    ("flow+l2sp", dict(weighting="flow", regularizer="l2sp", refit=True)),
    ("flow+wiseft", dict(weighting="flow", wise_alpha=0.5, refit=True)),
])
def test_method_presets_set_their_knobs(method, knobs):
    cfg = config.resolve("gratings", "demo", method)
    for key, value in knobs.items():
        assert getattr(cfg, key) == value, (method, key)


def test_record_files_are_readable_by_others(tiny):
    import os
    import stat

    r = pipeline.run(config.resolve("gratings", "demo", "lp", tiny))
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(f"{r['run_dir']}/result.json").st_mode) == 0o666 & ~umask  # not mkstemp's 0600
