"""`flowvision bench`: speed ratios measured side by side, in one process, interleaved.

Every variant runs the same number of training steps on the same random batch; the variants take
turns (A B C A B C ...) so that a noisy, shared machine slows them alike, and the median of the
repeats is reported. Ratios, not absolute numbers, are the result.

  flow step, static vs online   ours (Algorithm 1): weights looked up by index. Official code: a
                                second forward pass of the probe model on every batch.
  default vs fused optimiser    torch's default SGD (the official code's; a loop over the tensors on
                                the CPU) vs the one flowvision trains with (fused on the CPU; the
                                same weights bit for bit); the same for Adam, which trains the demo
                                model (fused Adam rounds differently).
  channels_last vs contiguous   NHWC memory format for the convolutions.
  bf16 autocast vs fp32         CUDA only.
"""
from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from ..methods import models
from ..core.hardware import Hardware
from ..methods.train import Schedule, make_optimizer
from ..methods.weighting import reduce_losses


def _step_fn(model, probe, hw: Hardware, online: bool, losses, ours: bool = True, optimizer: str = "sgd"):
    """One FLOW training step; with ``ours`` the optimiser training uses (``train.make_optimizer``:
    fused on the CPU), else torch's default (the official code's SGD: a for-loop over the tensors on
    the CPU). ``optimizer`` adam: the demo model's (its pre-training)."""
    sched = Schedule(epochs=1, lr=1e-3, momentum=0.9, weight_decay=5e-4, optimizer=optimizer)
    opt = make_optimizer(list(model.parameters()), sched, hw, fused=ours)
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
        loss = reduce_losses(F.cross_entropy(logits.float(), y, reduction="none"), None, "mean",
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
    official, adam = "flow step, online weights (official)", "Adam step (demo model), torch's default"
    variants = {  # name -> (hardware, online weights, flowvision's optimiser, optimiser, baseline)
        official: (plain, True, False, "sgd", official),
        "flow step, static weights, torch's default SGD": (plain, False, False, "sgd", official),
        "flow step, static weights": (plain, False, True, "sgd", official),
        "flow step, static + channels_last": (Hardware(device, channels_last=True), False, True, "sgd", official),
    }
    if device.type == "cuda":
        variants["flow step, static + bf16 autocast"] = (Hardware(device, amp=True), False, True, "sgd", official)
        variants["flow step, static + bf16 + channels_last"] = (Hardware(device, amp=True, channels_last=True), False,
                                                                 True, "sgd", official)
    variants[adam] = (plain, False, False, "adam", adam)
    variants["Adam step (demo model), flowvision's"] = (plain, False, True, "adam", adam)
    fns = {}
    for name, (hw, online, ours, optimizer, _) in variants.items():
        m = models.with_new_head(base, 10, 0)
        fns[name] = (_step_fn(m, models.with_new_head(probe, 10, 0).eval(), hw, online, losses, ours, optimizer), hw)
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
    return [{"variant": name, "baseline": variants[name][-1], "images_per_s": speed[name],
             "ratio": speed[name] / speed[variants[name][-1]]} for name in fns]


# ---- the data path: host-side images/s, JPEG + PIL per sample vs the decoded cache ----------------------
def _write_jpegs(folder, n: int, size=(500, 375)) -> None:
    """A generated ImageFolder of ``n`` noisy JPEGs of a typical photo size (2 classes)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        sub = folder / f"c{i % 2}"
        sub.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
        Image.fromarray(base).resize(size, Image.BILINEAR).save(sub / f"{i}.jpg", quality=90)


def bench_data(n: int = 64, repeats: int = 3, batch_size: int = 64) -> list[dict]:
    """Host-side images/s on one core (no DataLoader workers) of each recipe through the PIL path
    (decode + per-sample transforms, the reference) and through the decoded cache (a uint8 batch
    read from the memory map; the recipe then runs on the device), measured in turns in one process.
    Also the device-side cost of the cached path's batch transforms on this machine's device, so
    that on a machine without a GPU nothing is hidden. -> rows: path, recipe, images/s, ratio."""
    import tempfile
    from pathlib import Path

    import numpy as np
    from torchvision.datasets import ImageFolder

    from ..data.decoded import decoded, stored
    from ..data.device import recipe_transforms
    from ..data.recipes import Transformed, build_transforms
    from ..methods.forgetting import official_imagenet_transform

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _write_jpegs(tmp / "jpeg", n)
        photos = ImageFolder(str(tmp / "jpeg"))
        rng = np.random.default_rng(0)
        cifar_images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        from PIL import Image

        cifar_pil = [(Image.fromarray(x.transpose(1, 2, 0)), 0) for x in cifar_images]
        mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
        cases = {}  # recipe -> (PIL data set, decoded data set, device batch transform)
        for recipe, pil_tf, source, store in (
            ("caltech train (RandomResizedCrop, flip, jitter)", build_transforms("caltech101", 224, True)[0],
             photos, stored("crop_jitter", 224)),
            ("IN-1K eval (Resize 256, CenterCrop 224)", official_imagenet_transform(), photos, stored("imagenet", 224)),
            ("CIFAR train (32 -> 224, flip)", build_transforms("cifar10", 224, True)[0], cifar_pil,
             stored("resize", 224, native=(32, 32))),
        ):
            cache, _ = decoded(source, store.prepare, store.size, {"bench": recipe}, tmp / "cache", recipe, workers=0)
            kind = {"caltech": "crop_jitter", "IN-1K": "imagenet", "CIFAR": "resize"}[recipe.split()[0]]
            train_b, eval_b = recipe_transforms(kind, 224, mean, std)
            cases[recipe] = (Transformed(source, pil_tf), cache, eval_b if kind == "imagenet" else train_b)

        def pil_pass(ds):
            for i in range(len(ds)):
                ds[i]

        def cached_pass(cache):
            for start in range(0, len(cache), batch_size):
                torch.from_numpy(np.array(cache.images[start:start + batch_size]))

        def device_pass(cache, transform):
            for start in range(0, len(cache), batch_size):
                transform(torch.from_numpy(np.array(cache.images[start:start + batch_size])))

        times = {}
        for r in range(repeats + 1):  # the first round warms caches up and is dropped
            for recipe, (pil_ds, cache, transform) in cases.items():
                for path, fn in (("PIL per sample (host)", lambda: pil_pass(pil_ds)),
                                 ("decoded cache (host)", lambda: cached_pass(cache)),
                                 ("decoded cache + batch transform on this device", lambda: device_pass(cache, transform))):
                    t0 = time.perf_counter()
                    fn()
                    if r:
                        times.setdefault((recipe, path), []).append(time.perf_counter() - t0)
    rows = []
    for (recipe, path), ts in times.items():
        speed = n / statistics.median(ts)
        base = n / statistics.median(times[(recipe, "PIL per sample (host)")])
        rows.append({"recipe": recipe, "path": path, "images_per_s": speed, "ratio": speed / base})
    return rows


# ---- EWC's Fisher: per-sample gradients one at a time vs batched with torch.func -------------------------------
def _fisher_loop(model, x: torch.Tensor, y: torch.Tensor) -> dict:
    """The diagonal Fisher the way it is usually written: one backward per (image, label), its gradients squared
    and summed (the reference ``evaluate.fisher_diagonal``'s vmap is timed against)."""
    params = dict(model.named_parameters())
    sums = {k: torch.zeros_like(p) for k, p in params.items()}
    for i in range(len(x)):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[i:i + 1]).float(), y[i:i + 1]).backward()
        for k, p in params.items():
            sums[k] += p.grad.square()
    return sums


def bench_fisher(arch: str = "resnet18", image_size: int = 32, n: int = 32, repeats: int = 3,
                 device: torch.device = torch.device("cpu")) -> list[dict]:
    """images/s of EWC's Fisher pass (per-sample gradients of ``n`` images, fp32, eval mode), interleaved in one
    process: one backward per image (the usual loop), and ``evaluate.fisher_diagonal``'s torch.func vmap over
    grad at chunks of 10 (resnet50's on the CPU), of this device type's FISHER_FLOATS, and of the GPU's.
    -> rows: variant, images/s (median), ratio to the loop."""
    from ..core.hardware import Hardware
    from ..data.base import Indexed
    from ..methods.evaluate import FISHER_FLOATS, fisher_chunk, fisher_diagonal

    torch.manual_seed(0)
    model = models.create(arch, 10).to(device).eval()
    x, y = torch.randn(n, 3, image_size, image_size), torch.randint(0, 10, (n,))
    data = Indexed(torch.utils.data.TensorDataset(x, y))
    hw = Hardware(device)
    weights = sum(p.numel() for p in model.parameters())
    loop = "one backward per image (the usual loop)"
    chunks = {10: "", fisher_chunk(model, device): f" ({device.type}'s chunk)",
              max(1, FISHER_FLOATS["cuda"] // weights): " (a GPU's chunk)"}
    variants = {loop: None}
    for chunk, why in chunks.items():  # a chunk past n runs as n: each size once
        variants.setdefault(f"vmap over grad, {min(chunk, n)} at a time{why}", min(chunk, n))
    xd, yd = x.to(device), y.to(device)
    times = {name: [] for name in variants}
    for r in range(repeats + 1):  # the first round warms up and is dropped
        for name, chunk in variants.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            if chunk is None:
                _fisher_loop(model, xd, yd)
            else:
                fisher_diagonal(model, data, hw=hw, chunk=chunk)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if r:
                times[name].append(time.perf_counter() - t0)
    speed = {name: n / statistics.median(ts) for name, ts in times.items()}
    return [{"variant": name, "images_per_s": speed[name], "ratio": speed[name] / speed[loop]} for name in variants]
