"""`make gpu-check`: what the first minutes on a GPU must answer, from a checkout, in under 8 minutes, whatever breaks.

    make gpu-check                        # with the checkout's .venv
    make gpu-check PYTHON=python3         # with that interpreter as it is: its own torch, no .venv, no network
    make gpu-check CHECK_ARGS=--no-compile   # without the compile part (it needs a C compiler and minutes)
    python3 -m flowvision.scale.gpucheck        # the same, from the checkout's root

1. the packages: every one the check imports is there, else one line naming each missing one and how to
   bring it as wheels (``missing``), exit 2; no CUDA GPU visible: one line, exit 2
2. the CUDA tests (tests/test_cuda.py)
3. steady-state rates per model (resnet18, resnet50), precision (fp32 NCHW, as the paper protocol; bf16
   autocast with channels_last, the clean protocol's default) and stage kind (training, frozen backbone,
   inference), at 224 px through what a run does: a decoded cache's uint8 batches, the device augmentation,
   ``train``'s step with its reads, ``predict``'s pass; with each one's peak GPU memory
4. one pipeline cell at real scale on generated data (``gpucell``: resnet50, 2,400 training images), fp32
   and bf16 end to end: every stage's images/s, the share of its time the GPU was busy and its peak memory
5. EWC's Fisher pass (per-sample gradients) in images/s
6. the rates ``reproduce --dry-run`` then uses (``costs.read_measured``): the cell's, for the cell's model; the
   steady-state ones scaled by the cell's ratio for the others; and the paper-grid estimate of both models at them
7. last, torch.compile: seconds to compile and images/s against eager, resnet50 bf16 training and inference
   (skipped when the budget runs short, or with --no-compile)

Every part is guarded: one that raises is one line ("FAILED <part>: <error>") in the summary and the check goes on
to the next; the estimate uses whatever was measured. Every part is written to results/gpu-check.json as soon as
it is measured (a check cut short keeps what it had), and a summary table is printed at the end. This module
imports only the standard library until the packages are checked.
"""
from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Optional

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


# ---- steady-state rates, through the real data path ------------------------------------------------------------
def _decoded(n: int, sizes, kind: str):
    """``n`` uint8 images of ``sizes.jpeg_px`` as a decoded cache holds them, with the crop_jitter recipe's device
    transforms (training's or evaluation's): what a run on a real data set reads."""
    import numpy as np

    from ..data.base import Indexed
    from ..data.decoded import Decoded
    from ..data.device import recipe_transforms
    from ..methods.forgetting import IMAGENET_MEAN, IMAGENET_STD

    rng = np.random.default_rng(0)
    block = rng.integers(0, 256, (min(n, 64), 3, sizes.jpeg_px, sizes.jpeg_px), dtype=np.uint8)
    images = np.resize(block, (n, 3, sizes.jpeg_px, sizes.jpeg_px))  # repeats the block: content does not set speed
    train_tf, eval_tf = recipe_transforms("crop_jitter", sizes.image_size, IMAGENET_MEAN, IMAGENET_STD)
    return Indexed(Decoded(images, rng.integers(0, 1000, n)), batch_transform=eval_tf if kind == "inference" else train_tf)


def rate(arch: str, precision: str, kind: str, sizes, device: str = "cuda", compile_: bool = False) -> dict:
    """images/s of ``arch`` in ``precision`` for one stage ``kind`` ('train': ``train.train``'s step through every
    parameter; 'frozen': the probe's and refit's, no graph through the backbone; 'inference': ``evaluate.predict``),
    through what a run does: a decoded cache's uint8 batches (read a batch ahead, pinned), the recipe's device
    augmentation, the loop's reads. A warm-up epoch of 2 batches (cuDNN autotuning; with ``compile_``, compiling:
    ``first_s``), then an epoch of ``sizes.rate_steps`` batches timed. -> {"images_per_s", "first_s", "peak_gib"}"""
    import torch

    from ..methods import models
    from ..core.hardware import Hardware
    from ..methods.evaluate import predict
    from ..methods.train import Schedule, train

    fast = precision == "bf16"
    hw = Hardware(torch.device(device), amp=fast, channels_last=fast, compile=compile_)
    torch.manual_seed(0)
    model = models.create(arch, 1000)
    batch = sizes.batch_size * (2 if kind == "inference" else 1)  # evaluate.accuracy's 256 against training's 128

    def epoch(batches: int) -> float:
        data = _decoded(batches * batch, sizes, kind)
        _sync(device)
        t0 = time.perf_counter()
        if kind == "inference":
            predict(model, data, batch_size=batch, hw=hw, desc=f"rate {arch} {precision} {kind}")
        else:
            train(model, data, Schedule(1, 1e-3, batch, head_only=kind == "frozen"), seed=0, hw=hw,
                  desc=f"rate {arch} {precision} {kind}")
        _sync(device)
        return time.perf_counter() - t0

    first = epoch(2)
    _peak_reset(device)
    seconds = epoch(sizes.rate_steps)
    return {"images_per_s": round(sizes.rate_steps * batch / seconds, 1), "first_s": round(first, 2),
            "peak_gib": _peak(device)}


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _peak_reset(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def _peak(device: str):
    """GiB the GPU's allocator held at most since the last reset (None on the CPU)."""
    import torch

    return round(torch.cuda.max_memory_allocated() / 2 ** 30, 2) if device.startswith("cuda") else None


def fisher_rate(sizes, device: str = "cuda") -> dict:
    """EWC's Fisher pass of the cell's model at its image size (``bench.bench_fisher``): per-sample gradients one
    backward at a time against torch.func's vmap at several chunks, side by side. -> {"images", "rows": [{"variant",
    "images_per_s", "ratio"}], "peak_gib"}"""
    import torch

    from .bench import bench_fisher

    n = sizes.fisher_images or 64
    _peak_reset(device)
    rows = bench_fisher(sizes.cell_model, sizes.image_size, n, repeats=1, device=torch.device(device))
    return {"images": n, "rows": [{k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()} for r in rows],
            "peak_gib": _peak(device)}


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


def cell_rates(cell: dict) -> dict:
    """{precision: {kind: images/s}} of the real-scale cell: each kind's images over its stages' seconds (the
    stages as they run: model moves, loaders, epoch ends and evaluation passes included)."""
    out = {}
    for precision, run in cell.items():
        if not isinstance(run, dict) or "stages" not in run:
            continue
        for kind in ("train", "frozen", "inference"):
            rows = [r for r in run["stages"] if r["kind"] == kind and r["seconds"]]
            if rows:
                out.setdefault(precision, {})[kind] = round(sum(r["images"] for r in rows) / sum(r["seconds"] for r in rows), 1)
    return out


def estimate_rates(steady: dict, cell: dict, cell_model: str) -> tuple[dict, str]:
    """The rates the estimate (and every later ``--dry-run``) uses -> (rates, basis). The cell's model at the
    cell's measured rates; every other model at its steady-state rate times the cell's model's ratio of cell to
    steady-state rate for that precision and kind (what a stage loses to its ends, measured on one model, applied
    to the other); without a cell, the steady-state rates."""
    import copy

    rates, measured = copy.deepcopy(steady), cell_rates(cell or {})
    if not measured:
        return rates, "steady-state rates through the data path (no real-scale cell)"
    base = steady.get(cell_model, {})
    for precision, per_kind in measured.items():
        for kind, value in per_kind.items():
            ratio = value / base[precision][kind] if base.get(precision, {}).get(kind) else None
            for model, per in rates.items():
                if model == cell_model:
                    per.setdefault(precision, {})[kind] = value
                elif ratio and kind in per.get(precision, {}):
                    per[precision][kind] = round(per[precision][kind] * ratio, 1)
    return rates, f"the real-scale cell's rates ({cell_model}; other models scaled by its cell / steady-state ratio)"


def _estimates(rates: dict, device_name: str) -> dict:
    """The paper grid (6 data sets × 6 methods × 3 seeds) of resnet18 and resnet50 at ``rates``."""
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


def check(out: Path = OUT, sizes=None, device: str = "cuda", budget_s: float = BUDGET_S,
          compile_: bool = True) -> dict:
    """Measure everything (the module docstring) on ``device``; write ``out`` after every part. Every part is
    guarded: one that raises is one line under "failed" (its error), and the others go on; the estimate uses what
    was measured. -> the result."""
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
              "cuda": torch.version.cuda, **versions(), "skipped": [], "failed": {}}

    def save(part: str, value) -> None:
        if value is not None:
            result[part] = value
        result["seconds"] = round(time.time() - t0, 1)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"gpu-check: {part} {'failed' if part in result['failed'] else 'done'} ({result['seconds']:.0f} s)",
              flush=True)

    def guarded(part: str, measure, keep: bool = True):
        try:
            value = measure()
        except Exception as err:  # noqa: BLE001 (a part that breaks is reported, the check goes on)
            result["failed"][part] = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:200]}"
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
            value = None
        if keep:
            save(part, value)
        return value

    if sizes.tests:
        guarded("tests", _tests)
    steady, peaks = {}, {}
    for arch in sizes.models:
        for precision in PRECISIONS:
            for kind in KINDS:
                measured = guarded(f"rate {arch} {precision} {kind}", lambda: rate(arch, precision, kind, sizes, device),
                                   keep=False)
                if measured:
                    steady.setdefault(arch, {}).setdefault(precision, {})[kind] = measured["images_per_s"]
                    peaks.setdefault(arch, {}).setdefault(precision, {})[kind] = measured["peak_gib"]
                    print(f"  {arch} {precision} {kind}: {measured['images_per_s']:,.0f} images/s", flush=True)
    save("steady_rates", steady)
    save("rate_peak_gib", peaks)
    work = Path(tempfile.mkdtemp(prefix="gpu-check-", dir=out.parent))
    try:
        cell = {precision: guarded(f"cell {precision}", lambda: run_cell(work, precision, sizes, device), keep=False)
                for precision in PRECISIONS}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cell = {p: c for p, c in cell.items() if c}
    if {"fp32", "bf16"} <= set(cell):
        cell["speedup"] = round(cell["fp32"]["compute_seconds"] / cell["bf16"]["compute_seconds"], 2)
    save("cell", cell or None)
    guarded("fisher", lambda: fisher_rate(sizes, device))
    rates, basis = estimate_rates(steady, cell, sizes.cell_model)
    result["rates_basis"] = basis
    save("rates", rates or None)  # what ``reproduce --dry-run`` reads (costs.read_measured)
    guarded("estimate", lambda: _estimates(rates, name))
    if sizes.compile and compile_:  # last: it needs a C compiler and minutes, and may fail where the rest ran
        compiled = {}
        for kind in ("train", "inference"):
            if time.time() - t0 > budget_s - COMPILE_S:
                result["skipped"].append(f"compile, {kind}: less than {COMPILE_S} s of the {budget_s} s budget left")
                continue
            pair = guarded(f"compile {kind}", lambda: {
                "eager": rate(sizes.cell_model, "bf16", kind, sizes, device),
                "compiled": rate(sizes.cell_model, "bf16", kind, sizes, device, compile_=True)}, keep=False)
            if pair:
                compiled[kind] = pair
        save("compile", compiled or None)
    elif sizes.compile:
        result["skipped"].append("compile: --no-compile")
    return result


def summary(result: dict) -> str:
    """The result as one table of text lines: rates, the cell's stages, compile, the grid estimate, and one line
    per part that failed."""
    lines = [f"gpu-check on {result['device']} (torch {result.get('torch')}, CUDA {result.get('cuda')}), "
             f"{result.get('seconds', 0):.0f} s"]
    if "tests" in result:
        lines.append(f"CUDA tests: {result['tests']['summary']}")
    lines.append(f"{'model':<12}{'precision':<10}{'training':>12}{'frozen':>12}{'inference':>12}  images/s "
                 "(steady state, through the data path; peak GiB)")
    peaks = result.get("rate_peak_gib", {})
    for arch, per in result.get("steady_rates", {}).items():
        for precision, r in per.items():
            peak = peaks.get(arch, {}).get(precision, {})
            lines.append(f"{arch:<12}{precision:<10}" + "".join(
                f"{r[k]:>12,.0f}" if k in r else f"{'-':>12}" for k in ("train", "frozen", "inference"))
                + "  " + " / ".join(f"{peak[k]:.1f}" for k in ("train", "frozen", "inference") if peak.get(k) is not None))
    cell = result.get("cell")
    if cell:
        ran = [p for p in ("fp32", "bf16") if p in cell]
        lines.append(f"{'cell stage':<14}{'kind':<11}{'images':>8}" + "".join(
            f"{p + ' img/s':>12}{p + ' busy':>10}{p + ' GiB':>9}" for p in ran))
        rows = {p: {r["stage"]: r for r in cell[p]["stages"]} for p in ran}
        for row in cell[ran[0]]["stages"]:
            lines.append(f"{row['stage']:<14}{row['kind']:<11}{row['images']:>8}" + "".join(
                f"{_speed(r):>12}{_pct(r.get('gpu_busy')):>10}{_gib(r.get('peak_gib')):>9}"
                for r in (rows[p].get(row["stage"], {}) for p in ran)))
        if "speedup" in cell:
            lines.append(f"cell end to end, stages that compute: fp32 {cell['fp32']['compute_seconds']:.1f} s, bf16 "
                         f"{cell['bf16']['compute_seconds']:.1f} s ({cell['speedup']:.2f}x); whole runs "
                         f"{cell['fp32']['seconds']:.1f} s and {cell['bf16']['seconds']:.1f} s (the first decodes the images)")
    if result.get("fisher"):
        lines.append("EWC's Fisher pass, images/s: " + "; ".join(
            f"{r['variant']} {r['images_per_s']:,.1f} ({r['ratio']:.2f}x)" for r in result["fisher"]["rows"]))
    for kind, pair in (result.get("compile") or {}).items():
        lines.append(f"compile=true, {kind}: {pair['compiled']['images_per_s']:,.0f} vs eager "
                     f"{pair['eager']['images_per_s']:,.0f} images/s, first epoch {pair['compiled']['first_s']:.0f} s")
    for model, est in (result.get("estimate") or {}).items():
        kinds = ", ".join(f"{k} {h:.1f} h" for k, h in est["by_kind"].items())
        lines.append(f"paper grid, {model}: {est['hours']:.1f} GPU-hours in bf16 ({kinds}); fp32 {est['fp32_hours']:.1f}")
    if result.get("rates_basis"):
        lines.append(f"estimate from {result['rates_basis']}")
    lines += [f"skipped: {s}" for s in result.get("skipped", [])]
    lines += [f"FAILED {part}: {why}" for part, why in result.get("failed", {}).items()]
    return "\n".join(lines)


def _gib(value) -> str:
    return f"{value:.1f}" if value is not None else "-"


def _speed(row: dict) -> str:
    """A stage's images/s, or its seconds when it only loads."""
    if row.get("images_per_s"):
        return f"{row['images_per_s']:,.0f}"
    return f"{row['seconds']:.1f} s" if row.get("seconds") else "-"


def _pct(value) -> str:
    return f"{100 * value:.0f} %" if value is not None else "-"


def main(out: Path = OUT, argv: Optional[list] = None) -> int:
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
    result = check(out, compile_="--no-compile" not in (sys.argv[1:] if argv is None else argv))
    print(summary(result))
    print(f"wrote {out}")
    return 0 if result.get("tests", {}).get("exit_code", 0) == 0 and not result["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
