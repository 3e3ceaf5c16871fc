"""`flowvision bench`: speed ratios measured side by side, in one process, interleaved.

Every variant runs the same number of training steps on the same random batch; the variants take
turns (A B C A B C ...) so that a noisy, shared machine slows them alike, and the median of the
repeats is reported. Ratios, not absolute numbers, are the result.

  flow step, static vs online   ours (Algorithm 1): weights looked up by index. Official code: a
                                second forward pass of the probe model on every batch.
  channels_last vs contiguous   NHWC memory format for the convolutions.
  bf16 autocast vs fp32         CUDA only.
"""
from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from . import models
from .hardware import Hardware
from .weighting import weighted_loss


def _step_fn(model, probe, hw: Hardware, online: bool, losses):
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    forward = hw.prepare(model)
    probe_fwd = hw.prepare(probe) if online else None

    def step(x, y, idx):
        with hw.autocast():
            logits = forward(x)
            if online:
                with torch.no_grad():
                    ref = F.cross_entropy(probe_fwd(x).float(), y, reduction="none")
            else:
                ref = losses[idx]
        loss = weighted_loss(F.cross_entropy(logits.float(), y, reduction="none"), None, "mean",
                             ref_losses=ref, tau=1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def bench(arch: str = "resnet18", image_size: int = 32, batch_size: int = 32, steps: int = 5, repeats: int = 3,
          device: torch.device = torch.device("cpu")) -> list[dict]:
    """-> rows: variant, baseline, images/s (median), ratio (variant speed / baseline speed)."""
    torch.manual_seed(0)
    base = models.create(arch, 10)
    probe = models.create(arch, 10).eval()
    x = torch.randn(batch_size, 3, image_size, image_size)
    y = torch.randint(0, 10, (batch_size,))
    idx = torch.arange(batch_size)
    losses = torch.rand(batch_size, device=device)
    plain = Hardware(device)
    variants = {
        "flow step, online weights (official)": (plain, True),
        "flow step, static weights": (plain, False),
        "flow step, static + channels_last": (Hardware(device, channels_last=True), False),
    }
    if device.type == "cuda":
        variants["flow step, static + bf16 autocast"] = (Hardware(device, amp=True), False)
        variants["flow step, static + bf16 + channels_last"] = (Hardware(device, amp=True, channels_last=True), False)
    fns = {}
    for name, (hw, online) in variants.items():
        m = models.with_new_head(base, 10, 0)
        fns[name] = (_step_fn(m, models.with_new_head(probe, 10, 0).eval(), hw, online, losses), hw)
    times = {name: [] for name in fns}
    for r in range(repeats + 1):  # the first round warms up (allocator, cudnn autotune) and is dropped
        for name, (fn, hw) in fns.items():
            xb, yb = hw.images(x), y.to(device)
            fn(xb, yb, idx)
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(steps):
                fn(xb, yb, idx)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if r:
                times[name].append(time.perf_counter() - t0)
    speed = {name: steps * batch_size / statistics.median(ts) for name, ts in times.items()}
    baseline = "flow step, online weights (official)"
    return [{"variant": name, "baseline": baseline, "images_per_s": speed[name],
             "ratio": speed[name] / speed[baseline]} for name in fns]
