"""`make gpu-check`: what the first minutes on a GPU must answer, from a checkout, in under 8 minutes.

    make gpu-check                        # with the checkout's .venv
    make gpu-check PYTHON=python3         # with that interpreter as it is: its own torch, no .venv, no network
    python3 -m flowvision.scale.gpucheck        # the same, from the checkout's root

1. the packages: every one the check imports is there, else one line naming each missing one and how to
   bring it as wheels (``missing``), exit 2; no CUDA GPU visible: one line, exit 2
2. the CUDA tests (tests/test_cuda.py)
3. steady-state rates per model (resnet18, resnet50), precision (fp32 NCHW, as the paper protocol; bf16
   autocast with channels_last, the clean protocol's default) and stage kind (training, frozen backbone,
   inference), at 224 px from uint8 batches through the device augmentation: the rates
   ``reproduce --dry-run`` then uses (``costs.read_measured``)
4. one pipeline cell at real scale on generated data (``gpucell``: resnet50, 2,400 training images), fp32
   and bf16 end to end: every stage's images/s and the share of its time the GPU was busy
5. torch.compile: seconds to compile and images/s against eager, resnet50 bf16 training and inference
6. the paper-grid estimate of both models from the measured rates

Every part is written to results/gpu-check.json as soon as it is measured (a check cut short keeps what
it had), and a summary table is printed at the end. This module imports only the standard library until
the packages are checked.
"""
from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

OUT = Path("results") / "gpu-check.json"
BUDGET_S = 450  # compile (the slowest part) is skipped when less than COMPILE_S of this is left
COMPILE_S = 150
# import name -> pip name: everything the check imports (the flowvision package itself runs from the checkout)
NEEDS = {"torch": "torch", "torchvision": "torchvision", "timm": "timm", "kornia": "kornia", "filelock": "filelock",
         "yaml": "pyyaml", "safetensors": "safetensors", "numpy": "numpy", "PIL": "pillow", "rich": "rich",
         "pandas": "pandas", "matplotlib": "matplotlib", "huggingface_hub": "huggingface-hub", "pytest": "pytest"}


def missing() -> list[str]:
    """The pip names of the packages this interpreter lacks (found without importing them)."""
    return [pip for name, pip in NEEDS.items() if importlib.util.find_spec(name) is None]


def pinned() -> dict:
    """pip name -> the requirement setup.cfg states for it (``torch==2.14.1``, ``timm>=1.0,<2``)."""
    import configparser
    import re

    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).resolve().parents[2] / "setup.cfg")
    lines = cfg.get("options", "install_requires", fallback="") + "\n" + cfg.get("options.extras_require", "test",
                                                                                fallback="")
    reqs = [line.split("#")[0].strip() for line in lines.splitlines()]
    return {re.split(r"[<>=!~ ]", r)[0].lower(): r for r in reqs if r}


def missing_line(lacking: list[str]) -> str:
    """One line: what is missing and how to bring it to a machine without network, as wheels (torch and
    torchvision from PyTorch's index of builds for a CUDA version)."""
    py, specs = f"{sys.version_info.major}.{sys.version_info.minor}", pinned()
    torch = [f"'{specs.get(n, n)}'" for n in lacking if n in ("torch", "torchvision")]
    rest = [f"'{specs.get(n, n)}'" for n in lacking if n not in ("torch", "torchvision")]
    download = f"pip download -d wheels --only-binary=:all: --python-version {py} --platform manylinux_2_28_x86_64"
    steps = ([f"`{download} {' '.join(rest)}`"] if rest else []) + (
        [f"`{download} --index-url https://download.pytorch.org/whl/cuXYZ {' '.join(torch)}` (cuXYZ: a CUDA "
         "version your driver supports, docs/speed.md)"] if torch else [])
    return (f"gpu-check: {sys.executable} (Python {py}) lacks {', '.join(lacking)}; bring them as wheels: on a machine "
            f"with network run {' and '.join(steps)}, copy wheels/ here, then `{sys.executable} -m pip install "
            f"--no-index --find-links wheels {' '.join(torch + rest)}`")


# ---- steady-state rates -------------------------------------------------------------------------------------
def rate(arch: str, precision: str, kind: str, sizes, device: str = "cuda", compile_: bool = False) -> dict:
    """images/s of ``arch`` in ``precision`` for one stage ``kind`` ('train': an SGD step through every
    parameter; 'frozen': the probe's and refit's step, no graph through the backbone; 'inference'),
    from random uint8 batches of ``sizes.jpeg_px`` through the data set recipe's device augmentation, as
    the decoded-cache path feeds a run. -> {"images_per_s", "first_step_s" (compiling, with compile_)}."""
    import types

    import torch
    import torch.nn.functional as F

    from ..methods import models
    from ..data.device import recipe_transforms
    from ..methods.forgetting import IMAGENET_MEAN, IMAGENET_STD
    from ..core.hardware import Hardware
    from ..methods.train import FrozenBackbone

    fast = precision == "bf16"
    hw = Hardware(torch.device(device), amp=fast, channels_last=fast, compile=compile_)
    torch.manual_seed(0)
    model = hw.place(models.create(arch, 1000))
    batch = sizes.batch_size * (2 if kind == "inference" else 1)  # evaluate.accuracy's 256 against training's 128
    raw = (torch.rand(batch, 3, sizes.jpeg_px, sizes.jpeg_px) * 255).to(torch.uint8)
    raw = raw.pin_memory() if hw.device.type == "cuda" else raw
    labels = torch.randint(0, 1000, (batch,), device=hw.device)
    train_tf, eval_tf = recipe_transforms("crop_jitter", sizes.image_size, IMAGENET_MEAN, IMAGENET_STD)
    data = types.SimpleNamespace(batch_transform=eval_tf if kind == "inference" else train_tf)
    net = hw.compiled(FrozenBackbone(model) if kind == "frozen" else model)
    params = model.get_classifier().parameters() if kind == "frozen" else model.parameters()
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    model.train(kind != "inference")

    def step():
        x = hw.images(raw, data)
        if kind == "inference":
            with torch.no_grad(), hw.autocast():
                net(x)
            return
        with hw.autocast():
            loss = F.cross_entropy(net(x).float(), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def timed(steps: int) -> float:
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(device)
        return time.perf_counter() - t0

    first = timed(1)
    timed(2)  # warm-up: cuDNN autotuning, allocator
    return {"images_per_s": round(sizes.rate_steps * batch / timed(sizes.rate_steps), 1), "first_step_s": round(first, 2)}


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ---- the check ------------------------------------------------------------------------------------------------
TESTS_S = 200  # the CUDA tests take about a minute; past this they are stopped and the rest is measured


def _tests() -> dict:
    import subprocess

    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-m", "cuda", "tests/test_cuda.py"],
                              capture_output=True, text=True, timeout=TESTS_S)
    except subprocess.TimeoutExpired:
        return {"exit_code": 124, "summary": f"stopped after {TESTS_S} s", "failures": []}
    lines = done.stdout.strip().splitlines()
    return {"exit_code": done.returncode, "summary": lines[-1] if lines else done.stderr.strip()[-300:],
            "failures": [line for line in lines if line.startswith("FAILED")]}


def _estimates(rates: dict, device_name: str) -> dict:
    """The paper grid (6 data sets × 6 methods × 3 seeds) of resnet18 and resnet50 at the measured rates."""
    from ..stages.costs import estimate
    from .grid import grid
    from ..core.registry import PAPER_METHODS, resolve_dataset_group

    table = {"rates": rates, "measured": {"device": device_name, "measured_at": None}, "sources": {}}
    out = {}
    for model in ("resnet18", "resnet50"):
        cfgs = [cfg for cfg, _ in grid(model, resolve_dataset_group("paper"), list(PAPER_METHODS), [0, 1, 2], {})]
        cost = estimate(cfgs, table)
        out[model] = {"hours": round(cost["hours"], 2), "fp32_hours": round(cost["fp32_hours"], 2),
                      "by_kind": {k: round(v["hours"], 2) for k, v in cost["by_kind"].items()}}
    return out


def check(out: Path = OUT, sizes=None, device: str = "cuda", budget_s: float = BUDGET_S) -> dict:
    """Measure everything (the module docstring) on ``device``; write ``out`` after every part. -> the result."""
    import shutil
    import tempfile
    from datetime import datetime, timezone

    import torch

    from ..stages.costs import KINDS, PRECISIONS
    from ..core.files import versions
    from .gpucell import REAL, run_cell

    sizes = sizes or REAL
    t0 = time.time()
    torch.backends.cudnn.benchmark = True  # as every run that is not deterministic (hardware.start)
    name = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else "cpu"
    result = {"device": name, "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "cuda": torch.version.cuda, **versions(), "skipped": []}

    def save(part: str, value) -> None:
        result[part] = value
        result["seconds"] = round(time.time() - t0, 1)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"gpu-check: {part} done ({result['seconds']:.0f} s)", flush=True)

    if sizes.tests:
        torch.cuda.empty_cache()
        save("tests", _tests())
    rates = {}
    for arch in sizes.models:
        for precision in PRECISIONS:
            for kind in KINDS:
                measured = rate(arch, precision, kind, sizes, device)
                rates.setdefault(arch, {}).setdefault(precision, {})[kind] = measured["images_per_s"]
                print(f"  {arch} {precision} {kind}: {measured['images_per_s']:,.0f} images/s", flush=True)
    save("rates", rates)
    work = Path(tempfile.mkdtemp(prefix="gpu-check-", dir=out.parent))
    try:
        cell = {precision: run_cell(work, precision, sizes, device) for precision in PRECISIONS}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cell["speedup"] = round(cell["fp32"]["compute_seconds"] / cell["bf16"]["compute_seconds"], 2)
    save("cell", cell)
    if sizes.compile:
        compiled = {}
        for kind in ("train", "inference"):
            if time.time() - t0 > budget_s - COMPILE_S:
                result["skipped"].append(f"compile, {kind}: less than {COMPILE_S} s of the {budget_s} s budget left")
                continue
            compiled[kind] = {"eager": rate(sizes.cell_model, "bf16", kind, sizes, device),
                              "compiled": rate(sizes.cell_model, "bf16", kind, sizes, device, compile_=True)}
        save("compile", compiled)
    save("estimate", _estimates(rates, name))
    return result


def summary(result: dict) -> str:
    """The result as one table of text lines: rates, the cell's stages, compile, the grid estimate."""
    lines = [f"gpu-check on {result['device']} (torch {result.get('torch')}, CUDA {result.get('cuda')}), "
             f"{result.get('seconds', 0):.0f} s"]
    if "tests" in result:
        lines.append(f"CUDA tests: {result['tests']['summary']}")
    lines.append(f"{'model':<12}{'precision':<10}{'training':>12}{'frozen':>12}{'inference':>12}  images/s (steady state)")
    for arch, per in result.get("rates", {}).items():
        for precision, r in per.items():
            lines.append(f"{arch:<12}{precision:<10}" + "".join(f"{r[k]:>12,.0f}" for k in ("train", "frozen", "inference")))
    cell = result.get("cell")
    if cell:
        lines.append(f"{'cell stage':<14}{'kind':<11}{'images':>8}" + "".join(
            f"{p + ' img/s':>12}{p + ' busy':>10}" for p in ("fp32", "bf16")))
        bf16 = {r["stage"]: r for r in cell["bf16"]["stages"]}
        for row in cell["fp32"]["stages"]:
            lines.append(f"{row['stage']:<14}{row['kind']:<11}{row['images']:>8}" + "".join(
                f"{_speed(r):>12}{_pct(r.get('gpu_busy')):>10}" for r in (row, bf16.get(row["stage"], {}))))
        lines.append(f"cell end to end, stages that compute: fp32 {cell['fp32']['compute_seconds']:.1f} s, bf16 "
                     f"{cell['bf16']['compute_seconds']:.1f} s ({cell['speedup']:.2f}x); whole runs "
                     f"{cell['fp32']['seconds']:.1f} s and {cell['bf16']['seconds']:.1f} s (the first decodes the images)")
    for kind, pair in (result.get("compile") or {}).items():
        lines.append(f"compile=true, {kind}: {pair['compiled']['images_per_s']:,.0f} vs eager "
                     f"{pair['eager']['images_per_s']:,.0f} images/s, first step {pair['compiled']['first_step_s']:.0f} s")
    for model, est in (result.get("estimate") or {}).items():
        kinds = ", ".join(f"{k} {h:.1f} h" for k, h in est["by_kind"].items())
        lines.append(f"paper grid, {model}: {est['hours']:.1f} GPU-hours in bf16 ({kinds}); fp32 {est['fp32_hours']:.1f}")
    lines += [f"skipped: {s}" for s in result.get("skipped", [])]
    return "\n".join(lines)


def _speed(row: dict) -> str:
    """A stage's images/s, or its seconds when it only loads."""
    if row.get("images_per_s"):
        return f"{row['images_per_s']:,.0f}"
    return f"{row['seconds']:.1f} s" if row.get("seconds") else "-"


def _pct(value) -> str:
    return f"{100 * value:.0f} %" if value is not None else "-"


def main(out: Path = OUT) -> int:
    if sys.version_info < (3, 10):
        print(f"gpu-check: {sys.executable} is Python {sys.version.split()[0]}; flowvision needs 3.10 or newer",
              file=sys.stderr)
        return 2
    lacking = missing()
    if lacking:
        print(missing_line(lacking), file=sys.stderr)
        return 2
    import torch

    if not torch.cuda.is_available():
        print(f"gpu-check: no CUDA GPU is visible (torch {torch.__version__}, built for CUDA {torch.version.cuda}); "
              "run it on a machine with a GPU and a driver for that CUDA version (docs/speed.md)", file=sys.stderr)
        return 2
    result = check(out)
    print(summary(result))
    print(f"wrote {out}")
    return 0 if result.get("tests", {}).get("exit_code", 0) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
