"""The CUDA path without a GPU: every compute stage of every method preset, and every augmentation recipe, run
with tensors on a fake "cuda" device (tests/fakecuda.py). A CPU tensor meeting a CUDA one fails here where it
would fail on a GPU; the host waits a GPU would make (scalar reads, blocking copies) are counted and held to a
budget. The fast suite runs a representative part; the whole matrix is marked slow (docs/testing.md)."""
import copy
import dataclasses
import traceback

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorDeviceMismatchError

from fakecuda import fake_cuda, tensors
from flowvision.core import config
from flowvision.stages import pipeline
from flowvision.stages.store import ConfigView, Inputs, Run

# Every method preset, as (method, overrides); the paper protocol's FLOW weighs online and selects epochs on test.
PRESETS = {
    "ft": ("ft", {}), "lp": ("lp", {}), "lpft": ("lpft", {}), "l2sp": ("l2sp", {}), "wiseft": ("wiseft", {}),
    "flow": ("flow", {}), "flow+l2sp": ("flow+l2sp", {}), "flow+wiseft": ("flow+wiseft", {}),
    "lwf (source parts)": ("lwf", {"lwf_parts": "source"}), "lwf (training parts)": ("lwf", {"lwf_parts": "training"}),
    "ewc": ("ewc", {}), "flow+ewc": ("flow+ewc", {}), "flow+lwf": ("flow+lwf", {}),
    "flow, paper protocol (online weights)": ("flow", {"protocol": "paper"}),
}
PRECISIONS = {"bf16+channels_last": {"amp": True, "channels_last": True}, "fp32": {"amp": False, "channels_last": False}}
FAST = ("flow+ewc", "bf16+channels_last")  # the fast suite's preset: every training and measuring stage, EWC's Fisher


def _fresh(value):
    """An upstream value a fake stage may move to the device without touching the CPU run's (a model's parameters
    become fake tensors when moved)."""
    return copy.deepcopy(value)


def run_stages_on_fake_cuda(method: str, overrides: dict, tiny: dict, precision: dict) -> dict:
    """The run on the CPU, for real (the upstream values every stage reads), then every stage it computed again,
    each on its own, under fake CUDA with the config decided for a CUDA device. -> stage -> value."""
    cpu_cfg = config.resolve("gratings", "demo", method, dict(tiny, **overrides))
    r = pipeline.start(cpu_cfg)
    r["source_data"], r["source"]
    for name in pipeline.targets(r.cfg):
        r[name]
    out = {}
    gpu_cfg = dataclasses.replace(cpu_cfg, device="cuda", **precision)
    for name, value in r.values.items():
        stage = r.stages[name]
        if stage.fingerprint or not stage.hardware:  # loading (data, weights) or pure CPU arithmetic (τ, Table 5)
            continue
        up = {n: _fresh(r.values[n]) for n in stage.needs_for(r.cfg)}
        with fake_cuda():
            run = Run(gpu_cfg, pipeline.STAGES, r.store)
            view = ConfigView(stage.sees(run.cfg), stage.reads_for(run.cfg) + stage.uses_for(), name)
            inputs = Inputs(view, up)
            assert not stage.hardware or inputs.hw.device.type == "cuda"
            out[name] = stage.compute(inputs)
        stored = [t for t in tensors(out[name]) if t.device.type != "cpu"]
        assert not stored, f"stage {name} returned tensors on {stored[0].device}: the store keeps CPU tensors"
    return out


def _cases(pairs):
    return [pytest.param(preset, precision, id=f"{preset} / {precision}") for preset, precision in pairs]


ALL = [(preset, precision) for preset in PRESETS for precision in PRECISIONS]


@pytest.mark.parametrize("preset,precision", _cases([FAST]))
def test_every_stage_of_a_preset_runs_on_fake_cuda(preset, precision, tiny):
    method, overrides = PRESETS[preset]
    values = run_stages_on_fake_cuda(method, overrides, tiny, PRECISIONS[precision])
    assert {"probe", "losses", "fisher", "finetune", "refit", "target_eval", "probe_test", "source_eval",
            "forgetting"} <= set(values)


@pytest.mark.slow
@pytest.mark.parametrize("preset,precision", _cases([c for c in ALL if c != FAST]))
def test_every_stage_of_every_preset_runs_on_fake_cuda(preset, precision, tiny):
    method, overrides = PRESETS[preset]
    values = run_stages_on_fake_cuda(method, overrides, tiny, PRECISIONS[precision])
    assert {"target_eval", "source_eval"} <= set(values)


# ---- the augmentation recipes: a training epoch and an evaluation pass on each, with the sync budget ----------
RECIPES = ("resize", "resize_square", "square_crop_jitter", "crop_jitter", "imagenet", "synthetic", "pil")
FAST_RECIPES = ("crop_jitter",)


def _recipe_data(recipe: str, n: int, s: int = 16):
    """(train, eval) data sets of ``n`` images as a run gets them: a decoded cache's uint8 arrays at the size the
    recipe stores, with its batch transforms (``data/device.py``); "pil": host transforms, float images."""
    import numpy as np

    from flowvision.data.base import Indexed
    from flowvision.data.decoded import Decoded, scaled
    from flowvision.data.device import recipe_transforms

    if recipe == "pil":
        from flowvision.data.synthetic import load_synthetic_task

        task = load_synthetic_task("gratings", image_size=s, n_train=n, n_test=n, data_path="pil")
        return task.train, task.test
    side = {"resize": s // 2, "square_crop_jitter": scaled(256, s), "crop_jitter": scaled(256, s)}.get(recipe, s)
    rng = np.random.default_rng(0)
    arrays = Decoded(rng.integers(0, 256, (n, 3, side, side), dtype=np.uint8), rng.integers(0, 4, n))
    train_tf, eval_tf = recipe_transforms(recipe, s, (0.5,) * 3, (0.25,) * 3)
    return Indexed(arrays, batch_transform=train_tf), Indexed(arrays, batch_transform=eval_tf)


def per_step(prepare, small: int, large: int) -> dict:
    """Events per step (or batch) under fake CUDA of ``prepare(n_batches)()`` (``prepare`` builds data and model on
    the CPU and returns what runs on the device): the difference between a run of ``large`` batches and one of
    ``small``, over the batches between, so what happens once (moving the model, a constant put on the device,
    the last read of an epoch) cancels. -> {"scalar", "blocking h2d", "d2h", "device-draws", "waits", "log"}"""
    counts = []
    for n in (small, large):
        go = prepare(n)
        with fake_cuda() as syncs:
            go()
        counts.append({"scalar": syncs.count("scalar"), "blocking h2d": syncs.count("h2d", blocking=True),
                       "d2h": syncs.count("d2h"), "device-draws": syncs.count("device-draws"),
                       "waits": len(syncs.waits()), "log": str(syncs)})
    return {k: (counts[1][k] - counts[0][k]) / (large - small) for k in counts[0] if k != "log"} | {"log": counts[1]["log"]}


B = 8  # the batch size of the budget runs


def _hw(precision: str):
    from flowvision.core.hardware import Hardware

    fast = precision != "fp32"
    return Hardware(torch.device("cuda"), amp=fast, channels_last=fast,
                    amp_dtype="float16" if precision == "fp16" else None)


def train_budget(recipe: str, precision: str = "bf16", **kwargs) -> dict:
    """A training step's events on ``recipe`` in ``precision``; ``kwargs`` go to ``train`` (a function of the model
    and the hardware builds its value, inside fake CUDA; FLOW's static weights unless a ``weigher`` is given)."""
    from flowvision.methods import models
    from flowvision.methods.train import Schedule, StaticWeights, train

    def prepare(n_batches):
        data, _ = _recipe_data(recipe, n_batches * B)
        torch.manual_seed(0)
        model, hw, losses = models.create("test_resnet", 4), _hw(precision), torch.rand(len(data))

        def go():  # the method's parts are built on the device, as the stage builds them
            extra = {k: v(model, hw) for k, v in kwargs.items()}
            extra.setdefault("weigher", StaticWeights(losses, 1.0))
            train(model, data, Schedule(1, 0.01, B), seed=0, hw=hw, **extra)
        return go
    return per_step(prepare, 2, 5)


def eval_budget(recipe: str, precision: str = "bf16") -> dict:
    from flowvision.methods import models
    from flowvision.methods.evaluate import predict

    def prepare(n_batches):
        _, data = _recipe_data(recipe, n_batches * B)
        model = models.create("test_resnet", 4)
        return lambda: predict(model, data, batch_size=B, hw=_hw(precision), keep_logprobs=True)
    return per_step(prepare, 1, 4)


def _recipe_cases(recipes):
    return [pytest.param(r, p, id=f"{r} / {p}") for r in recipes for p in ("bf16", "fp32")]


def _holds_the_budget(step: dict, what: str) -> None:
    assert step["scalar"] <= 1 and step["blocking h2d"] == 0 and step["device-draws"] == 0, f"{what}: {step}\n{step['log']}"


@pytest.mark.parametrize("recipe,precision", _recipe_cases(FAST_RECIPES)[:1])
def test_a_training_step_reads_no_scalar_and_copies_without_blocking_and_evaluation_keeps_results_on_the_gpu(
        recipe, precision):
    step = train_budget(recipe, precision)
    _holds_the_budget(step, f"a training step on {recipe}")
    assert step["scalar"] == 0 and step["d2h"] == 0, step["log"]  # the running numbers are read every READ_EVERY steps
    batch = eval_budget(recipe, precision)
    assert batch["waits"] == 0 and batch["blocking h2d"] == 0, f"an evaluation batch: {batch}\n{batch['log']}"


@pytest.mark.slow
@pytest.mark.parametrize("recipe,precision", [c for c in _recipe_cases(RECIPES) if c not in _recipe_cases(FAST_RECIPES)[:1]])
def test_every_recipe_trains_and_evaluates_on_fake_cuda_within_the_budget(recipe, precision):
    step = train_budget(recipe, precision)
    _holds_the_budget(step, f"a training step on {recipe}")
    batch = eval_budget(recipe, precision)
    assert batch["waits"] == 0 and batch["blocking h2d"] == 0, f"an evaluation batch: {batch}\n{batch['log']}"


# ---- the methods' own tensors: regularisers, distillation, online weights, fp16's gradient scaler ----------------
def _source_parts():
    from flowvision.methods import models

    torch.manual_seed(1)
    return models.create("test_resnet", 4)


def _l2sp(model, hw):
    from flowvision.methods import models
    from flowvision.methods.regularizers import L2SP

    hw.place(model)  # as the finetune stage: a pull is built on the placed model
    return L2SP(model, models.clone_state(_source_parts()), 0.01)


def _ewc(model, hw):
    from flowvision.methods import models
    from flowvision.methods.regularizers import EWC

    hw.place(model)
    fisher = {k: torch.rand(v.shape) for k, v in model.named_parameters()}  # on the CPU, as the fisher stage stores it
    return EWC(model, models.clone_state(_source_parts()), fisher, 10.0)


def _lwf(parts):
    def build(model, hw):
        from flowvision.methods.regularizers import LwF

        return LwF(hw.place(_source_parts()), 1.0, 2.0, parts)
    return build


def _online(model, hw):
    from flowvision.methods.train import OnlineWeights

    return OnlineWeights(hw.prepare(_source_parts()), 1.0)


METHOD_PARTS = {"l2sp": {"regularizer": _l2sp}, "ewc": {"regularizer": _ewc},
                "lwf (source parts)": {"distill": _lwf("source")}, "lwf (training parts)": {"distill": _lwf("training")},
                "online weights": {"weigher": _online}}


@pytest.mark.slow
@pytest.mark.parametrize("part", list(METHOD_PARTS))
def test_each_method_part_trains_within_the_budget_on_fake_cuda(part):
    step = train_budget("crop_jitter", "bf16", **METHOD_PARTS[part])
    _holds_the_budget(step, part)
    assert step["waits"] == 0, step["log"]


def test_fp16_autocast_with_its_gradient_scaler_reads_one_flag_per_step():
    """On a GPU without bf16 units autocast runs fp16 with a gradient scaler, whose step reads back whether a
    gradient overflowed: one scalar read per step, the budget's one."""
    step = train_budget("resize_square", "fp16")
    _holds_the_budget(step, "an fp16 step")
    assert step["scalar"] == 1, step["log"]


# ---- the suite can fail: a planted CPU tensor, and EWC as it was built before the fix ----------------------------
def test_a_planted_cpu_tensor_in_a_stage_is_caught_at_its_line(tiny, monkeypatch):
    from flowvision.methods import weighting

    real = weighting.reduce_losses

    def planted(per_sample, *args, **kwargs):
        return real(per_sample * torch.ones(len(per_sample)), *args, **kwargs)  # PLANTED: a CPU tensor
    monkeypatch.setattr(weighting, "reduce_losses", planted)
    with pytest.raises(FakeTensorDeviceMismatchError) as caught:
        run_stages_on_fake_cuda("flow", {}, tiny, PRECISIONS["fp32"])
    frames = traceback.extract_tb(caught.value.__traceback__)
    ours = [f for f in frames if f.filename.endswith("test_fakecuda.py") and "PLANTED" in (f.line or "")]
    assert ours, "the mismatch is reported at the planted line"
    assert any(f.filename.endswith("flowvision/methods/train.py") for f in frames)  # inside the training stage


def test_ewc_built_before_its_model_is_placed_fails_on_fake_cuda_as_it_did_on_a_gpu():
    """The defect the suite found: the finetune stage built EWC while the model was still on the CPU, so the scaled
    Fisher stayed there and the first step mixed devices. Built on the placed model (the stage now), it trains."""
    from flowvision.methods import models
    from flowvision.methods.regularizers import EWC

    def unplaced(model, hw):
        fisher = {k: torch.rand(v.shape) for k, v in model.named_parameters()}  # on the CPU, as the fisher stage stores it
        return EWC(model, models.clone_state(_source_parts()), fisher, 10.0)  # the model is on the CPU here
    with pytest.raises(FakeTensorDeviceMismatchError):
        train_budget("resize_square", "fp32", regularizer=unplaced)
    _holds_the_budget(train_budget("resize_square", "fp32", regularizer=_ewc), "EWC")
