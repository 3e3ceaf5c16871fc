"""`make gpu-check`: one script for a CUDA machine, a few minutes: the CUDA-only tests, then the
training and inference speed at 224 px of resnet18 and resnet50 (the model step alone, and with the
decoded-cache data path), written to results/gpu-check.json.

    .venv/bin/python -m flowvision.gpucheck          # what `make gpu-check` runs
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path


def _speed(arch: str, batch: int, steps: int, data: bool, train: bool, amp: bool) -> float:
    """images/s of ``steps`` batches at 224 px on cuda: a training step (SGD) or an inference pass,
    from random float images (model only) or from a uint8 batch through the device augmentation."""
    import torch
    import torch.nn.functional as F

    from . import models
    from .data.device import recipe_transforms

    torch.manual_seed(0)
    model = models.create(arch, 100).cuda().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    raw = (torch.rand(batch, 3, 256, 256) * 255).to(torch.uint8).pin_memory()
    images = torch.randn(batch, 3, 224, 224, device="cuda")
    y = torch.randint(0, 100, (batch,), device="cuda")
    tf_train, tf_eval = recipe_transforms("square_crop_jitter", 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    transform = tf_train if train else tf_eval
    model.train(train)

    def step():
        x = transform(raw.cuda(non_blocking=True)) if data else images
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            if train:
                loss = F.cross_entropy(model(x).float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            else:
                with torch.no_grad():
                    model(x)
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def main(out: str = "results/gpu-check.json") -> int:
    import torch

    if not torch.cuda.is_available():
        print(f"gpu-check: no CUDA GPU is visible (torch {torch.__version__}, built for CUDA {torch.version.cuda}); "
              "run it on a machine with a GPU and a driver for that CUDA version", file=sys.stderr)
        return 2
    t0 = time.time()
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "tests/test_cuda.py"],
                           capture_output=True, text=True)
    print(tests.stdout[-3000:], tests.stderr[-2000:])
    speeds = []
    for arch, batch in (("resnet18", 256), ("resnet50", 128)):
        for train in (True, False):
            for data in (False, True):
                for amp in (False, True):
                    rate = _speed(arch, batch, 20, data, train, amp)
                    speeds.append({"arch": arch, "batch": batch, "mode": "train" if train else "inference",
                                   "input": "decoded uint8 + device augmentation" if data else "model only",
                                   "precision": "bf16 autocast" if amp else "fp32", "images_per_s": round(rate, 1)})
                    print(json.dumps(speeds[-1]), flush=True)
    result = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda,
              "tests_exit_code": tests.returncode, "tests_tail": tests.stdout.strip().splitlines()[-1:],
              "speeds": speeds, "seconds": round(time.time() - t0, 1)}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out} ({result['seconds']} s)")
    return 0 if tests.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
