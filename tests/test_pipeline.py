"""Declared stages (derived keys, undeclared reads) and end to end on tiny synthetic data:
records, stage cache, method presets."""
import json
from pathlib import Path

import pytest
import torch

from flowvision.core import config, identity
from flowvision.stages import pipeline
from flowvision.stages.run import run as run_one
from flowvision.methods.evaluate import hard_count
from flowvision.core.files import load_checked


def test_flow_run_writes_a_complete_record_and_a_second_run_skips_every_stage(tiny):
    cfg = config.resolve("gratings", "demo", "flow", tiny)
    first = run_one(cfg)
    run_dir = first.pop("run_dir")
    saved = json.loads(open(f"{run_dir}/result.json").read())
    for key in ("target_acc", "source_acc_before", "source_acc_after", "source_drop", "tau", "weight_stats",
                "stage_seconds", "wall_seconds", "git_sha", "versions", "seed", "weights"):
        assert key in saved, key
    assert saved["weights"].startswith("demo:") and saved["versions"]["torch"] == torch.__version__
    assert saved["source_drop"] == pytest.approx(saved["source_acc_before"] - saved["source_acc_after"])
    assert first["stages"] == dict.fromkeys(
        ["source_eval", "probe", "losses", "finetune", "refit", "target_eval", "probe_test", "forgetting"], "computed")
    assert saved["hard10_n"] == hard_count(tiny["n_test"]) and 0.0 <= saved["hard10_acc"] <= 1.0
    assert saved["tau_rule"] == "median" and saved["source_eval_name"] == "shapes val" and saved["device"] == "cpu"
    assert saved["target_data"]["n_train"] == tiny["n_train"] and saved["schema_version"] == 9 and saved["config"]["epochs"] == saved["epochs"]
    assert 0.0 <= saved["source_agreement"] <= 1.0 and saved["source_kl"] >= 0.0
    assert saved["task_specific"] == "head+bn" and saved["source_eval_partial"] is False
    assert saved["source_eval_images"] == tiny["demo_n_test"] and saved["source_eval_classes"] >= 2
    lines = open(f"{run_dir}/weights.csv").read().splitlines()
    assert lines[0] == "index,label,loss,weight,noisy" and len(lines) == 1 + tiny["n_train"]
    noisy = [int(line.split(",")[4]) for line in lines[1:]]
    assert sum(noisy) == saved["label_noise"]["n_noisy"]
    summary = open(f"{run_dir}/summary.csv").read().splitlines()
    assert summary[0].startswith("stage,epoch,loss") and {l.split(",")[0] for l in summary[1:]} == {"probe", "finetune", "refit head"}
    assert "tau: median" in open(f"{run_dir}/config.yaml").read()

    second = run_one(cfg)
    assert second["stages"] == dict.fromkeys(first["stages"], "cached")
    assert second["stage_keys"] == first["stage_keys"]
    for key in ("target_acc", "source_acc_after", "tau"):
        assert second[key] == first[key]


def test_linear_probe_cannot_forget_and_ft_shares_its_finetuning_with_wiseft(tiny):
    lp = run_one(config.resolve("gratings", "demo", "lp", tiny))
    assert lp["source_drop"] == 0.0 and "finetune" not in lp["stages"]
    stored = Path(tiny["results_dir"]) / "cache" / "v2" / f"forgetting-{lp['stage_keys']['forgetting']}.pt"
    assert load_checked(stored, {"stage": "forgetting"})["reused"] == "source_eval"  # no second evaluation
    assert lp["source_agreement"] == 1.0 and lp["source_kl"] == 0.0  # the measured model is the source, exactly
    ft = run_one(config.resolve("gratings", "demo", "ft", tiny))
    assert ft["source_agreement"] < 1.0 and ft["source_kl"] > 0.0  # fine-tuning moved the shared weights
    # lp measured the source already; ft's only use of the probe (Table 5's difficulty) is lp's, cached
    assert ft["stages"]["probe"] == ft["stages"]["probe_test"] == "cached" and ft["stages"]["source_eval"] == "cached"
    wise = run_one(config.resolve("gratings", "demo", "wiseft", tiny))
    assert {k for k, v in wise["stages"].items() if v == "computed"} == {"wise"}  # one fine-tuning, many α
    by_alpha = {w["alpha"]: w for w in wise["wise"]}
    assert by_alpha[1.0]["target_acc"] == ft["target_acc"]
    assert by_alpha[1.0]["source_acc_after"] == ft["source_acc_after"]
    assert by_alpha[0.0]["source_drop"] == 0.0  # pre-trained shared weights, source head/BN
    assert by_alpha[0.0]["source_agreement"] == 1.0 and by_alpha[0.0]["source_kl"] == 0.0
    assert by_alpha[1.0]["source_kl"] == ft["source_kl"]
    assert wise["target_acc"] == by_alpha[0.5]["target_acc"]
    assert by_alpha[1.0]["hard10_acc"] == ft["hard10_acc"] and wise["hard10_acc"] == by_alpha[0.5]["hard10_acc"]


def test_tau_sweep_shares_probe_and_losses_and_changes_weights(tiny):
    a = run_one(config.resolve("gratings", "demo", "flow", dict(tiny, tau="0.5")))
    b = run_one(config.resolve("gratings", "demo", "flow", dict(tiny, tau="p25")))
    assert a["stages"]["probe"] == "computed"
    assert {k for k, v in b["stages"].items() if v == "computed"} == {"finetune", "refit", "target_eval", "forgetting"}
    assert a["tau"] == 0.5 and b["tau"] != 0.5 and b["tau_rule"] == "p25"
    assert a["run_id"] != b["run_id"]


def test_online_weighting_trains_a_different_model_than_static_and_uniform(tiny):
    def finetuned_states(results):
        return {p.name: load_checked(p, {"stage": "finetune"})["model"] for p in Path(results).glob("cache/v*/finetune-*.pt")}

    online = run_one(config.resolve("gratings", "demo", "flow", dict(tiny, weighting="flow-online")))
    assert online["weighting"] == "flow-online" and online["tau"] > 0
    static = run_one(config.resolve("gratings", "demo", "flow", tiny))
    assert static["stages"]["probe"] == "cached" and static["stages"]["finetune"] == "computed"
    run_one(config.resolve("gratings", "demo", "lpft", tiny))
    states = list(finetuned_states(tiny["results_dir"]).values())
    assert len(states) == 3
    key = "layer1.0.conv1.weight"
    assert not torch.equal(states[0][key], states[1][key]) and not torch.equal(states[1][key], states[2][key])
    assert not torch.equal(states[0][key], states[2][key])


def test_flow_weights_from_a_different_probe_recompute_the_finetuning(tiny):
    base = dict(tiny, weighting="flow", tau="0.5")
    a = run_one(config.resolve("gratings", "demo", "ft", base))
    b = run_one(config.resolve("gratings", "demo", "ft", dict(base, probe_epochs=2)))
    assert b["stages"]["source_eval"] == "cached" and b["stages"]["probe"] == "computed"
    assert b["stages"]["finetune"] == "computed" and b["stage_keys"]["finetune"] != a["stage_keys"]["finetune"]


@pytest.mark.parametrize("method,knobs", [
    ("ft", dict(weighting="uniform", head_init="random", finetune=True, regularizer="none", refit=False)),
    ("lp", dict(weighting="uniform", head_init="probe", finetune=False)),
    ("lpft", dict(weighting="uniform", head_init="probe", finetune=True, refit=False)),
    ("l2sp", dict(weighting="uniform", head_init="random", regularizer="l2sp")),
    ("wiseft", dict(weighting="uniform", head_init="random", wise_alpha=0.5)),
    ("flow", dict(weighting="flow", head_init="probe", refit=True, regularizer="none", wise_alpha=None)),
    ("flow+l2sp", dict(weighting="flow", regularizer="l2sp", refit=True)),
    ("flow+wiseft", dict(weighting="flow", wise_alpha=0.5, refit=True)),
    ("lwf", dict(weighting="uniform", head_init="probe", distill="lwf", regularizer="none", refit=False,
                 lwf_lambda=1.0, lwf_temperature=2.0)),
    ("ewc", dict(weighting="uniform", head_init="random", regularizer="ewc", distill="none", refit=False)),
    ("flow+lwf", dict(weighting="flow", distill="lwf", regularizer="none", refit=True)),
    ("flow+ewc", dict(weighting="flow", regularizer="ewc", distill="none", refit=True)),
])
def test_method_presets_set_their_knobs(method, knobs):
    cfg = config.resolve("gratings", "demo", method)
    for key, value in knobs.items():
        assert getattr(cfg, key) == value, (method, key)


def _finetuned(results_dir, record) -> dict:
    path = Path(results_dir) / "cache" / "v2" / f"finetune-{record['stage_keys']['finetune']}.pt"
    return load_checked(path, {"stage": "finetune"})["model"]


def test_ewc_at_zero_lambda_is_plain_ft_bit_for_bit(tiny):
    ft = run_one(config.resolve("gratings", "demo", "ft", tiny))
    zero = run_one(config.resolve("gratings", "demo", "ewc", dict(tiny, ewc_lambda=0.0, ewc_samples=6)))
    assert zero["stages"]["fisher"] == "computed" and zero["stage_keys"]["finetune"] != ft["stage_keys"]["finetune"]
    a, b = _finetuned(tiny["results_dir"], ft), _finetuned(tiny["results_dir"], zero)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert zero["regularizer"] == "ewc" and zero["ewc_lambda"] == 0.0 and zero["ewc_samples"] == 6
    assert zero["ewc_draws"] == 1 and zero["ewc_fisher_max"] >= zero["ewc_fisher_mean"] > 0 and zero["distill"] == "none"
    assert zero["lwf_lambda"] is None


@pytest.mark.slow  # two fine-tunings and a Fisher pass: ~6 s on 2 shared cores; the walk test below checks the keys
def test_a_new_ewc_lambda_reruns_the_finetuning_not_the_fisher_pass(tiny):
    few = dict(tiny, ewc_samples=6)  # the Fisher pass costs a per-sample gradient per image
    weak = run_one(config.resolve("gratings", "demo", "ewc", dict(few, ewc_lambda=0.01)))
    strong = run_one(config.resolve("gratings", "demo", "ewc", dict(few, ewc_lambda=50.0)))
    assert weak["stages"]["fisher"] == "computed"
    assert strong["stages"]["fisher"] == "cached" and strong["stages"]["finetune"] == "computed"
    assert strong["stage_keys"]["fisher"] == weak["stage_keys"]["fisher"]
    a, b = _finetuned(tiny["results_dir"], weak), _finetuned(tiny["results_dir"], strong)
    assert not torch.equal(a["layer1.0.conv1.weight"], b["layer1.0.conv1.weight"])


@pytest.mark.parametrize("parts", ["source", "training"])
def test_lwf_at_zero_lambda_is_plain_finetuning_from_the_probe_bit_for_bit(tiny, parts):
    """Either student (the measured model's source outputs, or the network's own BatchNorms through the
    pre-trained head) runs a whole run, and adds nothing at λ = 0."""
    lpft = run_one(config.resolve("gratings", "demo", "lpft", tiny))
    zero = run_one(config.resolve("gratings", "demo", "lwf", dict(tiny, lwf_lambda=0.0, lwf_parts=parts)))
    assert zero["stages"]["probe"] == "cached" and zero["stages"]["finetune"] == "computed"
    a, b = _finetuned(tiny["results_dir"], lpft), _finetuned(tiny["results_dir"], zero)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (zero["distill"], zero["lwf_lambda"], zero["lwf_temperature"], zero["lwf_targets"]) == ("lwf", 0.0, 2.0, "online")
    assert zero["regularizer"] == "none" and zero["ewc_lambda"] is None


def test_record_files_are_readable_by_others(tiny):
    import os
    import stat

    r = run_one(config.resolve("gratings", "demo", "lp", tiny))
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(f"{r['run_dir']}/result.json").st_mode) == 0o666 & ~umask  # not mkstemp's 0600


# ---- declared stages: derived keys -------------------------------------------------------------------
FINGERPRINTS = {"task": "task-files", "source": "source-weights", "source_data": "source-images"}

# Configurations that, together, make every stage and every conditional declaration appear.
BASES = {
    "flow": ("gratings", "demo", "flow", {}),
    "ft": ("gratings", "demo", "ft", {}),
    "l2sp": ("gratings", "demo", "l2sp", {}),
    "ewc": ("gratings", "demo", "ewc", {}),
    "lwf": ("gratings", "demo", "flow+lwf", {}),
    "wiseft": ("gratings", "demo", "wiseft", {}),
    "lp": ("gratings", "demo", "lp", {}),
    "online": ("gratings", "demo", "flow", {"weighting": "flow-online", "tau": "0.5"}),
    "imagenet": ("cifar10", "resnet18", "flow+wiseft", {"tau": "0.5", "weights": "/w/r18.safetensors"}),
    "paper": ("gratings", "demo", "flow", {"protocol": "paper"}),
    "dogs": ("stanford_dogs", "resnet18", "flow", {"protocol": "paper", "tau": "paper"}),
    "folder": ("folder:/data/birds", "resnet18", "flow", {"weights": "/w/r18.safetensors"}),
}

# An alternative value for every field that can change a number: a new field must be added here,
# and then some stage must declare it, or the walk fails.
ALTERNATIVES = {
    "dataset": ["patterns", "cifar100"], "model": ["resnet50", "demo"], "weights": ["/w/other.pth", None],
    "seed": [7], "protocol": ["paper", "clean"],
    "weighting": ["flow-online", "flow"], "tau": ["p25", "median"], "paper_tau": [0.2],
    "normalize": ["sum"], "head_init": ["random", "probe"], "finetune": [False, True],
    "regularizer": ["l2sp", "none"], "l2sp_lambda": [0.5], "l2sp_beta": [0.5], "pull": ["gradient", "proximal"],
    "term_scale": ["none", "weights"], "wise_keys": ["all", "shared"], "val_split": [0.2], "ewc_lambda": [0.5], "ewc_samples": [17, None],
    "ewc_draws": [3], "distill": ["lwf", "none"], "lwf_lambda": [0.5], "lwf_temperature": [4.0], "lwf_parts": ["training", "source"], "refit": [False, True],
    "wise_alpha": [0.25, None], "wise_alphas": [(0.0, 1.0)], "wise_subset": [100], "epochs": [9], "lr": [0.123],
    "batch_size": [7], "momentum": [0.5],
    "weight_decay": [0.01], "probe_epochs": [9], "probe_lr": [0.123], "probe_bn_train": [False, True],
    "refit_epochs": [9], "refit_lr": [0.123], "augment": [False, True], "image_size": [24],
    "n_train": [17], "n_test": [17], "data_seed": [3], "imagenet_subset": [100],
    "imagenet_transform": ["timm"], "restore": ["none"], "task_specific": ["head"], "demo_arch": ["resnet10t"],
    "demo_epochs": [9], "demo_lr": [0.123], "demo_batch_size": [7], "demo_n_train": [17], "demo_n_test": [17], "amp": [True],
    "amp_dtype": ["float16"], "tf32": [False],
    "data_path": ["device", "pil"], "split_ratio": [0.5], "dogs_split": ["single", "per-stage"],
}


def _alternative(cfg, field):
    return next(v for v in ALTERNATIVES[field] if v != getattr(cfg, field))


def _expected_changes(before, after, field, common):
    """Stages that declare ``field`` (in either config), whose upstream set changed, or whose
    upstream is expected to change — in STAGES' order, which is upstream first."""
    expected = set()
    for name, stage in pipeline.STAGES.items():
        if name not in common:
            continue
        needs = stage.needs_for(after)
        if (field in stage.keyed_reads(before) or field in stage.keyed_reads(after)
                or set(stage.needs_for(before)) != set(needs) or any(n in expected for n in needs)):
            expected.add(name)
    return expected


@pytest.mark.parametrize("base", list(BASES))
def test_changing_a_field_changes_exactly_the_stages_that_declare_it_and_their_downstream(base):
    import dataclasses

    dataset, model, method, overrides = BASES[base]
    cfg = config.resolve(dataset, model, method, overrides)
    keys = pipeline.plan(cfg, FINGERPRINTS)
    assert set(ALTERNATIVES) == set(config.KEYED_FIELDS), "every field that can change a number needs an alternative here"
    for field in config.KEYED_FIELDS:
        changed_cfg = dataclasses.replace(cfg, **{field: _alternative(cfg, field)})
        changed_keys = pipeline.plan(changed_cfg, FINGERPRINTS)
        common = set(keys) & set(changed_keys)
        changed = {name for name in common if keys[name] != changed_keys[name]}
        assert changed == _expected_changes(cfg, changed_cfg, field, common), (base, field)


def test_every_field_that_can_change_a_number_is_declared_by_some_stage():
    declared = set()
    for dataset, model, method, overrides in BASES.values():
        cfg = config.resolve(dataset, model, method, overrides)
        for name in pipeline.plan(cfg, FINGERPRINTS):
            declared |= set(pipeline.STAGES[name].reads_for(cfg))
    assert declared == set(config.KEYED_FIELDS)


def test_what_a_loading_stage_found_changes_every_key_downstream_of_it():
    cfg = config.resolve("gratings", "demo", "flow")
    keys = pipeline.plan(cfg, FINGERPRINTS)
    other = pipeline.plan(cfg, dict(FINGERPRINTS, source="other-weights"))
    assert {n for n in keys if keys[n] != other[n]} == set(keys) - {"task", "source_data"}


def test_a_stage_reading_a_field_it_did_not_declare_fails_loudly(tiny):
    import dataclasses

    from flowvision.stages.store import Run, Store, UndeclaredRead

    probe = pipeline.STAGES["probe"]
    forgetful = dataclasses.replace(probe, reads=tuple(f for f in probe.reads if f != "probe_lr"))
    stages = dict(pipeline.STAGES, probe=forgetful)
    cfg = config.resolve("gratings", "demo", "flow", tiny)
    run = Run(cfg, stages, Store(Path(tiny["results_dir"]) / "cache"))
    with pytest.raises(UndeclaredRead, match="stage 'probe' read config field 'probe_lr'"):
        run["probe"]
    assert not list(Path(tiny["results_dir"]).glob("cache/*/probe-*.pt"))  # nothing was stored under the short key


def test_a_declaration_that_looks_at_an_undeclared_field_is_refused():
    import dataclasses

    from flowvision.stages.store import UndeclaredRead, check_declarations

    sneaky = dataclasses.replace(pipeline.STAGES["final"], reads=("finetune",))  # its needs also look at refit
    with pytest.raises(UndeclaredRead, match="'refit'"):
        check_declarations(dict(pipeline.STAGES, final=sneaky), config.resolve("gratings", "demo", "flow"))


def test_paper_protocol_changes_the_loss_pass_not_the_one_epoch_probe(tiny):
    """With one probe epoch, selection has nothing to choose: the paper protocol's probe equals the
    clean one, yet τ differs because its loss pass uses the training transforms."""
    clean = run_one(config.resolve("gratings", "demo", "flow", tiny))
    paper = run_one(config.resolve("gratings", "demo", "flow", dict(tiny, protocol="paper")))
    assert (clean["protocol"], paper["protocol"]) == ("clean", "paper")
    assert clean["best_epochs"] == {} and paper["best_epochs"] == {"probe": 1, "finetune": 1, "refit": 1}
    assert paper["stages"]["source_eval"] == "cached" and paper["stages"]["probe"] == "computed"
    files = Path(tiny["results_dir"]).glob("cache/v*/probe-*.pt")
    probes = [load_checked(p, {"stage": "probe"})["model"] for p in files]
    assert len(probes) == 2 and all(torch.equal(v, probes[1][k]) for k, v in probes[0].items())
    assert paper["tau"] != clean["tau"] and paper["weighting"] == "flow-online"


def test_dry_run_plans_the_keys_a_run_uses_and_sees_its_cached_stages(tiny):
    from flowvision.stages import dryrun

    cfg = config.resolve("gratings", "demo", "flow", tiny)
    before = {r["stage"]: r for r in dryrun.plan_rows(cfg, dryrun.fingerprints(cfg))}
    assert before["probe"]["status"] == "to compute"
    done = run_one(cfg)
    after = {r["stage"]: r for r in dryrun.plan_rows(cfg, dryrun.fingerprints(cfg))}
    assert {name: r["key"] for name, r in after.items()} == done["stage_keys"]
    assert {name for name, r in after.items() if r["status"] == "cached"} == set(done["stages"])


def test_each_training_stage_reads_its_own_split_and_the_run_is_measured_on_the_last_ones_test_set(tiny):
    """A task carrying one split per official script (Stanford Dogs under the paper protocol): the loss
    pass and FLOW's fine-tuning read round 1's training set, the target evaluations and Table 5 round 2's
    test set (the refit's); sizes tell the splits apart."""
    import dataclasses

    from flowvision.data.synthetic import load_synthetic_task
    from flowvision.stages.store import Run, Store
    from flowvision.stages.training import training_splits

    def task(i):
        own = load_synthetic_task("gratings", image_size=16, n_train=48, n_test=32)
        splits = {"round1": load_synthetic_task("gratings", seed=1, image_size=16, n_train=40, n_test=24),
                  "round2": load_synthetic_task("gratings", seed=2, image_size=16, n_train=32, n_test=16)}
        return dataclasses.replace(own, splits=splits)

    stages = dict(pipeline.STAGES, task=dataclasses.replace(pipeline.STAGES["task"], compute=task))
    cfg = config.resolve("gratings", "demo", "flow", tiny)
    r = Run(cfg, stages, Store(Path(tiny["results_dir"]) / "cache"))
    assert len(r["losses"]["losses"]) == 40  # round 1's training set: static weights index its samples
    assert (r["finetune"].split, r["refit"].split, r["final"].split) == ("round1", "round2", "round2")
    assert r["target_eval"]["n"] == 16 and r["hard"]["n"] == hard_count(16)
    assert {k: len(v["losses"]) for k, v in r["probe_test"]["splits"].items()} == {"round1": 24, "round2": 16}
    assert len(r["probe_test"]["losses"]) == 32  # the probe's own split
    ft = config.resolve("gratings", "demo", "ft", tiny)
    assert training_splits(ft) == [("probe", "probe"), ("finetune", "probe")]  # standard_ft.py's split
    lp = config.resolve("gratings", "demo", "lp", tiny)
    assert training_splits(lp) == [("probe", "probe")]


def test_precision_auto_is_fp32_on_the_cpu_and_bf16_on_cuda_under_the_clean_protocol_only():
    """amp and channels_last default to auto: the run id keeps 'auto' (one id on every machine, so a dry
    run on a laptop names the folder the GPU run writes), the stage keys hold the precision that runs: on
    the CPU exactly amp=false's (nothing cached moves), on CUDA amp=true's, fp32 under the paper protocol."""
    import dataclasses

    from flowvision.core.config import speed_defaults

    for protocol, on_cuda in (("clean", True), ("paper", False)):
        auto = config.resolve("gratings", "demo", "flow", {"protocol": protocol})
        off, on = (dataclasses.replace(auto, amp=v) for v in (False, True))
        assert (auto.amp, auto.channels_last) == (None, None)
        plan = {name: pipeline.plan(speed_defaults(cfg, dev), FINGERPRINTS)
                for name, cfg, dev in (("cpu", auto, "cpu"), ("cuda", auto, "cuda"), ("off", off, "cuda"), ("on", on, "cpu"))}
        assert plan["cpu"] == plan["off"] and plan["cuda"] == plan["on" if on_cuda else "off"]
        assert speed_defaults(auto, "cuda").channels_last is on_cuda and speed_defaults(auto, "cpu").channels_last is False
        assert len({identity.run_id(c) for c in (auto, off, on)}) == 3
    assert config.resolve("gratings", "demo", "flow", {"amp": "auto"}).amp is None


@pytest.mark.slow  # two tiny demo runs at 32 px and a bf16 demo model: ~15 s on 2 cores (test_train checks the loop fast)
def test_a_bf16_run_of_the_demo_ends_within_tolerance_of_fp32_in_stages_of_its_own(tiny):
    """--set amp=true on the CPU runs bf16 autocast through the same stages (CUDA runs it by default).
    Tolerance: every epoch's training loss within 5% of fp32's, τ within 5%, target and source accuracy
    within 4 of the 32 test images (measured here: losses within 0.8%, τ 0.2%, accuracies 1 image)."""
    import csv

    sizes = dict(tiny, image_size=32)  # not 16: see test_train's bf16 test
    runs = [run_one(config.resolve("gratings", "demo", "flow", dict(sizes, amp=amp))) for amp in (False, True)]
    fp32, bf16 = runs
    assert (fp32["amp"], bf16["amp"]) == (False, True) and fp32["config"]["amp"] is False
    shared = {k for k, v in fp32["stage_keys"].items() if bf16["stage_keys"][k] == v}
    assert shared == {"task", "source_data"}  # every stage that runs a model is keyed by its precision
    rows = [list(csv.DictReader(open(Path(r["run_dir"]) / "summary.csv"))) for r in runs]
    assert [r["stage"] for r in rows[0]] == [r["stage"] for r in rows[1]] == ["probe", "finetune", "refit head"]
    for a, b in zip(*rows):
        assert abs(float(b["ce"]) / float(a["ce"]) - 1) <= 0.05, (a, b)
    assert abs(bf16["tau"] / fp32["tau"] - 1) <= 0.05
    for key in ("target_acc", "source_acc_after"):
        assert abs(bf16[key] - fp32[key]) <= 4 / 32, key


def test_the_fisher_pass_reads_the_split_its_finetuning_trains_on():
    """With one split per official script (Stanford Dogs, paper protocol) FLOW's fine-tuning trains on its
    own split, so EWC's Fisher for flow+ewc is not ewc's; with one split for all they share the pass."""
    from flowvision.core import config
    from flowvision.stages.pipeline import grid_plan

    def fisher_key(method, **sets):
        return grid_plan(config.resolve("stanford_dogs", "resnet18", method, dict(protocol="paper", **sets)))["fisher"]

    assert fisher_key("ewc") != fisher_key("flow+ewc")
    assert fisher_key("ewc", dogs_split="single") == fisher_key("flow+ewc", dogs_split="single")
    clean = [grid_plan(config.resolve("cifar10", "resnet18", m))["fisher"] for m in ("ewc", "flow+ewc")]
    assert clean[0] == clean[1]


def test_a_knob_is_declared_once_and_both_the_run_id_and_the_stage_key_follow_it(monkeypatch):
    """core.knobs is the one table of which method part reads which field: an ft run's lwf_temperature
    changes neither its run id nor its fine-tuning's key; declare it a knob of plain fine-tuning (one entry
    in the table) and it changes both."""
    from flowvision.core import knobs
    from flowvision.core.identity import run_id
    from flowvision.stages.pipeline import grid_plan

    def ids_and_keys():
        ft = config.resolve("gratings", "demo", "ft")
        warmer = config.resolve("gratings", "demo", "ft", {"lwf_temperature": "4"})
        return (run_id(ft) == run_id(warmer), grid_plan(ft)["finetune"] == grid_plan(warmer)["finetune"])

    assert ids_and_keys() == (True, True)
    moved = tuple(k for k in knobs.KNOBS if k.field != "lwf_temperature")
    monkeypatch.setattr(knobs, "KNOBS", moved + (knobs.Knob("lwf_temperature", "finetune", knobs.on("weighting", "uniform")),))
    assert ids_and_keys() == (False, False)
