"""The CUDA paths, run by `make gpu-check` on a machine with a GPU (skipped elsewhere): bf16 autocast,
channels_last, torch.compile, the device augmentation on the GPU, fp32 CUDA against the CPU on a tiny
run, and a deterministic run repeated."""
import pytest
import torch

from flowvision.core import config
from flowvision.stages.run import run as run_one

pytestmark = pytest.mark.cuda

# fp32 CUDA vs CPU: convolution kernels differ (cuDNN vs oneDNN), so a tiny run's accuracies may move by
# a few samples; losses by float rounding. 32 test images: one sample is 3.1 points.
ACC_TOLERANCE = 0.0626  # two of 32 samples


def _tiny(tiny, **extra):
    """On CUDA, fp32 and NCHW unless the test says otherwise (the clean protocol's default there is bf16)."""
    return dict(tiny, device="cuda", **{"amp": False, "channels_last": False, **extra})


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
