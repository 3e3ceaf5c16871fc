"""The CUDA paths, run by `make gpu-check` on a machine with a GPU (skipped elsewhere): bf16 autocast,
channels_last, torch.compile, the device augmentation on the GPU, fp32 CUDA against the CPU on a tiny
run, a deterministic run repeated, EWC (its Fisher against the CPU's), LwF and ℓ2-SP end to end, and the sync
budget with CUDA's own sync detector. Without a GPU, tests/test_fakecuda.py runs the same paths on fake tensors."""
import pytest
import torch

from flowvision.core import config
from flowvision.stages.run import run as run_one

pytestmark = pytest.mark.cuda

# fp32 CUDA vs CPU: convolution kernels differ (cuDNN vs oneDNN), so a tiny run's accuracies may move by
# a few samples; losses by float rounding. 32 test images: one sample is 3.1 points.
ACC_TOLERANCE = 0.0626  # two of 32 samples


def _tiny(tiny, **extra):
    """On CUDA, fp32 (IEEE: TF32 off) and NCHW unless the test says otherwise (the clean protocol's default there
    is bf16)."""
    return dict(tiny, device="cuda", **{"amp": False, "channels_last": False, "tf32": False, **extra})


def test_fp32_cuda_matches_the_cpu_on_a_tiny_run_within_two_samples(tiny):
    cpu = run_one(config.resolve("gratings", "demo", "flow", dict(tiny, results_dir=tiny["results_dir"] + "-cpu")))
    gpu = run_one(config.resolve("gratings", "demo", "flow", _tiny(tiny, deterministic=True)))
    assert gpu["device"].startswith("cuda") and gpu["amp"] is False
    for key in ("target_acc", "source_acc_after"):
        assert abs(cpu[key] - gpu[key]) <= ACC_TOLERANCE, key
    assert gpu["tau"] == pytest.approx(cpu["tau"], rel=1e-3)


def test_a_deterministic_cuda_run_repeats_exactly(tiny):
    a = run_one(config.resolve("gratings", "demo", "flow", _tiny(tiny, deterministic=True)))
    b = run_one(config.resolve("gratings", "demo", "flow", _tiny(
        tiny, deterministic=True, results_dir=tiny["results_dir"] + "-again")))
    for key in ("target_acc", "source_acc_after", "tau", "weight_stats"):
        assert a[key] == b[key], key


def test_on_cuda_the_clean_protocol_runs_bf16_and_channels_last_by_default_the_paper_protocol_fp32(tiny):
    clean = run_one(config.resolve("gratings", "demo", "ft", dict(tiny, device="cuda")))
    paper = run_one(config.resolve("gratings", "demo", "ft", dict(tiny, device="cuda", protocol="paper")))
    assert (clean["amp"], clean["channels_last"], clean["config"]["amp"]) == (True, True, None)
    assert (paper["amp"], paper["channels_last"]) == (False, False)


@pytest.mark.parametrize("switch", [{"amp": True}, {"channels_last": True}, {"compile": True}])
def test_speed_switches_run_and_stay_close_to_fp32(switch, tiny):
    base = run_one(config.resolve("gratings", "demo", "ft", _tiny(tiny)))
    fast = run_one(config.resolve("gratings", "demo", "ft", _tiny(tiny, **switch)))
    for key in ("target_acc", "source_acc_after"):
        assert 0 <= fast[key] <= 1 and abs(fast[key] - base[key]) <= 0.25, key  # bf16 moves a 1-epoch run


def test_device_augmentation_on_the_gpu_draws_per_sample_and_matches_the_cpu_eval():
    from flowvision.data.device import recipe_transforms

    torch.manual_seed(0)
    x = (torch.rand(256, 3, 37, 37) * 255).to(torch.uint8)
    train, evaluate = recipe_transforms("crop_jitter", 32, (0.5,) * 3, (0.25,) * 3)
    out = train(x.cuda())
    assert out.is_cuda and out.shape == (256, 3, 32, 32)
    boxes = train.augment[0]._params["src"]
    assert len({tuple(b) for b in boxes[:, 0].tolist()}) > 50
    assert torch.allclose(evaluate(x.cuda()).cpu(), evaluate(x), atol=1e-5)


@pytest.mark.parametrize("method", ["ewc", "flow+ewc", "lwf", "flow+lwf", "l2sp"])
def test_the_pulled_and_distilled_methods_run_on_cuda_under_the_clean_protocols_defaults(method, tiny):
    r = run_one(config.resolve("gratings", "demo", method, dict(tiny, device="cuda")))
    assert r["device"].startswith("cuda") and r["precision"] in ("bf16", "fp16") and 0 <= r["target_acc"] <= 1
    assert r["tf32"] == {"convolutions": True, "matmul": False}  # torch's defaults, recorded


def test_the_fisher_on_cuda_equals_the_cpus_within_float_rounding():
    from flowvision.core.hardware import CPU, Hardware, set_tf32
    from flowvision.data.base import Indexed
    from flowvision.methods import models
    from flowvision.methods.evaluate import fisher_diagonal

    torch.manual_seed(0)
    data = Indexed(torch.utils.data.TensorDataset(torch.randn(24, 3, 32, 32), torch.zeros(24, dtype=torch.long)))
    model = models.create("test_resnet", 10)
    set_tf32(False)
    try:
        gpu = fisher_diagonal(model, data, hw=Hardware(torch.device("cuda")), chunk=8)
    finally:
        set_tf32(None)
    cpu = fisher_diagonal(model.cpu(), data, hw=CPU, chunk=8)
    assert torch.equal(gpu["labels"], cpu["labels"])  # drawn on the CPU from the same probabilities' seed
    for k, v in cpu["fisher"].items():
        assert torch.allclose(gpu["fisher"][k], v, rtol=1e-3, atol=1e-9), k


def test_a_training_step_on_cuda_makes_no_sync_the_detector_sees(monkeypatch):
    """CUDA's own sync detector (``torch.cuda.set_sync_debug_mode``), over the steps between a 2- and a 6-step
    epoch: no synchronising call per step (the fake-CUDA suite counts the same without a GPU)."""
    import warnings

    import numpy as np

    from flowvision.core.hardware import Hardware
    from flowvision.data.base import Indexed
    from flowvision.data.decoded import Decoded
    from flowvision.data.device import recipe_transforms
    from flowvision.methods import models
    from flowvision.methods.train import Schedule, StaticWeights, train

    def syncs(steps):
        rng = np.random.default_rng(0)
        n = steps * 16
        data = Indexed(Decoded(rng.integers(0, 256, (n, 3, 37, 37), dtype=np.uint8), rng.integers(0, 4, n)),
                       batch_transform=recipe_transforms("crop_jitter", 32, (0.5,) * 3, (0.25,) * 3)[0])
        model, hw = models.create("test_resnet", 4), Hardware(torch.device("cuda"), amp=True, channels_last=True)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                train(model, data, Schedule(1, 0.01, 16), seed=0, hw=hw, weigher=StaticWeights(torch.rand(n), 1.0))
        finally:
            torch.cuda.set_sync_debug_mode("default")
        return [str(w.message) for w in seen if "synchroniz" in str(w.message)]
    few, many = syncs(2), syncs(6)
    assert len(many) == len(few), many
