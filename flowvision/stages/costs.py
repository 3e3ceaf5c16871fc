"""A small cost model of a grid: images through the model per stage kind, and GPU-hours at stated rates.

    flowvision reproduce --model resnet18 --dry-run      # ... "estimate for what is left: 4.1 GPU-hours ..."

Every stage a grid reaches is counted once per key (the stages runs share are computed once), by the
kind of pass it makes, because the three run at very different speeds:

    training    finetune: epochs x N_train training steps through every parameter (twice for LwF through the
                pre-trained parts: the student's second pass); EWC's fisher: ewc_samples
                (default N_train) x ewc_draws per-sample gradients (a lower bound: a per-sample gradient costs
                more than its share of a batch's step)
    frozen      probe, refit: epochs x N_train through the frozen backbone (no graph there) to a head that trains
    inference   losses (N_train); target_eval, probe_test (N_test); source_eval, forgetting (the source images:
                50,000 for IN-1K val); every WiSE-FT point not reused (N_test, and the source images: the
                reported α on all of them, the others on ``wise_subset``); online FLOW weights (the probe on
                every fine-tuning batch); LwF's targets (the pre-trained model on every fine-tuning batch);
                EWC's label draws (ewc_samples); the paper protocol's test pass after every epoch of a
                trained stage

Rates are images/s per model, precision (fp32 | bf16: what ``config.speed_defaults`` gives a run on a
CUDA device) and kind. ``make gpu-check`` measures them and writes results/gpu-check.json
(``MEASURED``), which ``rates`` reads and names the GPU of; without it the rates are assumptions for one
A6000 at 224 px, each labelled with where it comes from (``ASSUMED_SOURCES``). The demo model is a
CPU-sized toy at 32 px: no GPU rate applies to it, so its cells are counted in images only (``toy``).

Runs that compute on the CPU (``--device cpu``, or auto on a machine that shows no NVIDIA GPU: ``runs_on``)
are priced in CPU-hours at the rates measured on a 2-core CPU machine (``CPU_RATES``, ``cpu_estimate``), the
demo model's included. ``report`` puts it together for a dry run: the total per protocol on one GPU (the
clean protocol in bf16 and fp32, the paper protocol priced as its own grid), the CPU's where the runs go
there, and where every rate comes from; a time reads in minutes or hours, never "0.0" (``duration``).
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Optional

KINDS = ("train", "frozen", "inference")
KIND_NAMES = {"train": "training", "frozen": "frozen backbone", "inference": "inference"}
PRECISIONS = ("fp32", "bf16")
MEASURED = "gpu-check.json"  # under the results folder: what `make gpu-check` writes and ``rates`` reads

# Round numbers for one A6000 at 224 px in fp32, not measured by flowvision (no GPU had run it); a frozen
# backbone's pass costs about an inference pass (no backward through it).
A6000_FP32 = {"resnet18": {"train": 1200.0, "frozen": 4000.0, "inference": 4000.0},
              "resnet50": {"train": 400.0, "frozen": 1300.0, "inference": 1300.0}}
BF16_FACTOR = 2.0
ASSUMED_SOURCES = {
    "fp32": "round numbers for one A6000 at 224 px, not measured (frozen backbone at inference speed)",
    "bf16": "the fp32 assumption × 2: NVIDIA's ResNet-50 v1.5 reference (DeepLearningExamples, PyTorch) states "
            "mixed precision trains \"over 2x faster\" on Volta, Turing and Ampere",
}
IN1K_VAL = 50_000


def assumed_rates() -> dict:
    """{model: {precision: {kind: images/s}}} for one A6000 (``ASSUMED_SOURCES`` says where each comes from)."""
    return {m: {"fp32": dict(r), "bf16": {k: v * BF16_FACTOR for k, v in r.items()}} for m, r in A6000_FP32.items()}


def read_measured(path: Path) -> Optional[dict]:
    """results/gpu-check.json's rates, or None when there is none: {"device": GPU name, "measured_at",
    "rates": {model: {precision: {kind: images/s}}}}. A file without rates (a gpu-check that stopped
    early) counts as none."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    rates = data.get("rates") if isinstance(data, dict) else None
    if not isinstance(rates, dict) or not rates:
        return None
    return {"device": data.get("device", "an unnamed GPU"), "measured_at": data.get("measured_at"), "rates": rates}


def precision(cfg) -> str:
    """'bf16' | 'fp32': what ``cfg`` computes in on a CUDA device."""
    from ..core.config import speed_defaults

    return "bf16" if speed_defaults(cfg, "cuda").amp else "fp32"


def _sizes(cfg) -> tuple[int, int]:
    """(N_train, N_test) of a run's target data set: the official counts of a real set, the
    configured or default sizes of a synthetic one, the images a folder holds (0 when it cannot be read)."""
    from ..core.registry import is_folder, is_synthetic

    if is_folder(cfg.dataset):
        from ..data.folder import folder_status

        row = folder_status(cfg.dataset, cfg.split_ratio, cfg.data_seed)
        return row["n_train"] or 0, row["n_test"] or 0

    if is_synthetic(cfg.dataset):
        from ..data.synthetic import SPECS

        spec = SPECS[cfg.dataset]
        return cfg.n_train or spec.n_train, cfg.n_test or spec.n_test
    from ..data.specs import REAL_TASKS

    return REAL_TASKS[cfg.dataset].sizes


def _source_task_size() -> int:
    from ..data.synthetic import SOURCE_TASK, SPECS

    return SPECS[SOURCE_TASK].n_test


def _source_images(cfg) -> int:
    """The images forgetting is measured on: the demo's source val set, the images of a --source-eval folder
    (counted by name, none opened), else IN-1K val (or its subset)."""
    if cfg.model == "demo":
        return cfg.demo_n_test or _source_task_size()
    if cfg.source_eval_dir:
        return _images_in(str(Path(cfg.source_eval_dir).expanduser()))
    return cfg.imagenet_subset or IN1K_VAL


@functools.lru_cache(maxsize=None)
def _images_in(folder: str) -> int:
    from ..data.folder import IMAGE_SUFFIXES  # what torchvision reads as an image

    return sum(1 for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def stage_images(name: str, cfg) -> dict:
    """{kind: images} one computation of stage ``name`` pushes through the model (``KINDS``)."""
    n_train, n_test = _sizes(cfg)
    source = _source_images(cfg)
    selecting = cfg.protocol == "paper"  # one target test pass after every epoch (train.train's ``select``)
    out = dict.fromkeys(KINDS, 0.0)
    if name in ("probe", "refit"):
        epochs = cfg.probe_epochs if name == "probe" else cfg.refit_epochs
        out["frozen"], out["inference"] = epochs * n_train, epochs * n_test * selecting
    elif name == "finetune":
        online = cfg.weighting == "flow-online" or (selecting and cfg.weighting != "uniform")
        teachers = online + (cfg.distill == "lwf")  # the probe (online weights) and LwF's pre-trained model
        out["train"] = cfg.epochs * n_train * (1 + (cfg.distill == "lwf" and cfg.lwf_parts == "source"))  # LwF's
        # student pass through the pre-trained parts is a second forward and backward of the backbone
        out["inference"] = cfg.epochs * (n_train * teachers + n_test * selecting)
    elif name == "fisher":
        n = min(cfg.ewc_samples or n_train, n_train)
        out["train"], out["inference"] = n * cfg.ewc_draws, n
    elif name == "losses":
        out["inference"] = n_train
    elif name in ("target_eval", "probe_test"):
        out["inference"] = n_test
    elif name in ("source_eval", "forgetting"):
        out["inference"] = source
    elif name == "wise":
        from .measuring import wise_alphas

        alphas = wise_alphas(cfg)
        interior = [a for a in alphas if a not in (0.0, 1.0)]
        on_subset = min(source, cfg.wise_subset or source)
        out["inference"] = (len(interior) * n_test + (n_test if 0.0 in alphas else 0)
                            + sum(source if a == cfg.wise_alpha else on_subset for a in interior))
    return out


def rates(results_dir: Optional[Path] = None) -> dict:
    """The rates an estimate uses: measured (results_dir/gpu-check.json) when there, else assumed.
    -> {"rates": {model: {precision: {kind: images/s}}}, "measured": None | {"device", "measured_at"},
    "sources": {precision: where the assumption comes from} (empty when measured)}."""
    measured = read_measured(Path(results_dir) / MEASURED) if results_dir is not None else None
    if measured:
        return {"rates": measured["rates"], "measured": {k: measured[k] for k in ("device", "measured_at")},
                "sources": {}}
    return {"rates": assumed_rates(), "measured": None, "sources": dict(ASSUMED_SOURCES)}


def estimate(cfgs: list, table: Optional[dict] = None) -> dict:
    """GPU-hours of a grid on one GPU, each stage key counted once, at ``table`` (``rates()``; default:
    the assumed A6000 rates). -> {"hours", "by_kind": {kind: {"hours", "images"}}, "used": {(model,
    precision): {kind: images/s}}, "fp32_hours": the same grid in fp32, "measured", "sources", "toy": {"runs",
    "images": {kind: images}} of the demo model's cells, not costed}. A model the table has no rates for is
    costed at resnet50's (the larger of the two)."""
    from ..core.registry import DEMO_MODEL

    table = table or rates()
    by_kind = {k: {"hours": 0.0, "images": 0.0} for k in KINDS}
    toy = {"runs": sum(cfg.model == DEMO_MODEL for cfg in cfgs), "images": dict.fromkeys(KINDS, 0.0)}
    used, fp32_hours, last = {}, 0.0, None
    for cfg, name in _stages(cfgs):
        demo = cfg.model == DEMO_MODEL  # no GPU rate describes it: its images are counted, not costed
        if cfg is not last:
            last = cfg
            if not demo:
                arch, prec = cfg.model.split(".")[0], precision(cfg)
                per_model = (table["rates"].get(arch) or table["rates"].get("resnet50")
                             or next(iter(table["rates"].values())))
                rate = per_model.get(prec) or per_model["fp32"]
                used[(arch, prec)] = rate
        for kind, images in stage_images(name, cfg).items():
            if demo:
                toy["images"][kind] += images
                continue
            by_kind[kind]["images"] += images
            by_kind[kind]["hours"] += images / rate[kind] / 3600
            fp32_hours += images / per_model["fp32"][kind] / 3600
    return {"hours": sum(v["hours"] for v in by_kind.values()), "by_kind": by_kind, "used": used,
            "fp32_hours": fp32_hours, "measured": table["measured"], "sources": table["sources"], "toy": toy}


def _stages(cfgs: list):
    """(cfg, stage name) for every stage the runs ``cfgs`` reach, each stage key once (the runs of a grid share
    it), in grid order."""
    from .pipeline import grid_plan

    seen = set()
    for cfg in cfgs:
        for name, key in grid_plan(cfg).items():
            if (name, key) in seen or name == "forgetting" and not cfg.finetune:
                continue  # computed once per grid; a linear probe's forgetting reuses the source evaluation
            seen.add((name, key))
            yield cfg, name


def describe(cost: dict) -> list[str]:
    """The estimate as lines for a person: the total and hours per kind, the rates per model and
    precision, and where they come from (measured on which GPU, or assumed and why); for demo-model runs
    the images they compute and that no GPU rate applies."""
    toy = cost.get("toy") or {"runs": 0}
    lines = []
    if toy["runs"]:
        images = ", ".join(f"{KIND_NAMES[k]} {v:,.0f}" for k, v in toy["images"].items() if v)
        lines.append(f"estimate: GPU-hours do not apply to the demo model ({toy['runs']} run{'s' * (toy['runs'] != 1)}), "
                     f"a toy network sized for a CPU; what is left pushes {images} images through it")
    if not cost["used"]:
        return lines
    where = f"one {cost['measured']['device']}" if cost["measured"] else "one A6000"
    kinds = ", ".join(f"{KIND_NAMES[k]} {v['hours']:.1f} h ({v['images'] / 1e6:.1f} M images)"
                      for k, v in cost["by_kind"].items() if v["images"])
    lines += [f"estimate for what is left: {cost['hours']:.1f} GPU-hours on {where} — {kinds}"]
    for (model, prec), rate in sorted(cost["used"].items()):
        lines.append(f"  {model} {prec}: " + " / ".join(f"{KIND_NAMES[k]} {rate[k]:,.0f}" for k in KINDS) + " images/s")
    if any(prec == "bf16" for _, prec in cost["used"]):
        lines.append(f"  in fp32 instead (--set amp=false): {cost['fp32_hours']:.1f} GPU-hours (the paper protocol's "
                     "own total, with its test passes and online weights, is another number: reproduce --dry-run "
                     "prints it)")
    if cost["measured"]:
        when = f" ({cost['measured']['measured_at']})" if cost["measured"].get("measured_at") else ""
        lines.append(f"  rates measured on {cost['measured']['device']} by `make gpu-check`{when}")
    else:
        lines += [f"  assumed {prec} rates: {source}" for prec, source in cost["sources"].items()]
        lines.append(f"  measure them on your GPU with `make gpu-check` (it writes results/{MEASURED}, "
                     "which this estimate then uses)")
    return lines


# ---- the CPU, and the device a run will use --------------------------------------------------------------
# Images/s on one 2-core CPU machine of the kind flowvision is developed on (batch 32, fp32, both cores;
# measured with timm's resnet18/resnet50 at each image side, docs/speed.md), per architecture and image side; a
# frozen backbone's pass at inference speed, as for the GPU. A run on another CPU scales with its cores.
CPU_RATES = {("resnet18", 32): {"train": 460.0, "frozen": 1780.0, "inference": 1780.0},
             ("resnet18", 64): {"train": 150.0, "frozen": 560.0, "inference": 560.0},
             ("resnet18", 224): {"train": 12.0, "frozen": 35.0, "inference": 35.0},
             ("resnet50", 32): {"train": 140.0, "frozen": 570.0, "inference": 570.0},
             ("resnet50", 64): {"train": 60.0, "frozen": 225.0, "inference": 225.0},
             ("resnet50", 224): {"train": 3.6, "frozen": 13.0, "inference": 13.0}}
CPU_SOURCE = ("measured on a 2-core CPU machine, batch 32, fp32 (docs/speed.md); a real-size resnet18 run there "
              "fine-tuned at about 11 images/s")


def cpu_rate(cfg) -> tuple[tuple[str, int], dict, bool]:
    """((architecture, image side), {kind: images/s}, exact) for a run on the CPU: the measured rates of its
    architecture (the demo model's: ``demo_arch``) at the nearest measured side; an architecture without
    measured rates gets resnet50's (the slower of the two, so an estimate errs long), ``exact`` False."""
    import math

    from ..core.registry import DEMO_MODEL

    arch = cfg.demo_arch if cfg.model == DEMO_MODEL else cfg.model.split(".")[0]
    side = cfg.image_size or (32 if cfg.synthetic else 224)
    exact = any(a == arch for a, _ in CPU_RATES)
    known = arch if exact else "resnet50"
    near = min((s for a, s in CPU_RATES if a == known), key=lambda s: abs(math.log(s / side)))
    return (known, near), CPU_RATES[(known, near)], exact


def cpu_estimate(cfgs: list) -> dict:
    """Hours of ``cfgs`` on the CPU, in fp32 (the CPU's precision), each stage key once: {"hours", "by_kind",
    "used": {(arch, side): rates}, "guessed": architectures costed at another's rates}."""
    by_kind = {k: {"hours": 0.0, "images": 0.0} for k in KINDS}
    used, guessed = {}, set()
    for cfg, name in _stages(cfgs):
        which, rate, exact = cpu_rate(cfg)
        used[which] = rate
        if not exact:
            guessed.add(cfg.model.split(".")[0])
        for kind, images in stage_images(name, cfg).items():
            by_kind[kind]["images"] += images
            by_kind[kind]["hours"] += images / rate[kind] / 3600
    return {"hours": sum(v["hours"] for v in by_kind.values()), "by_kind": by_kind, "used": used,
            "guessed": sorted(guessed)}


def duration(hours: float) -> str:
    """A time as a person reads it, never '0.0': '< 1 min', '12 min', '3.4 h', '1,234 h'."""
    minutes = hours * 60
    if minutes < 1:
        return "< 1 min"
    if minutes < 90:
        return f"{minutes:.0f} min"
    return f"{hours:,.1f} h" if hours < 100 else f"{hours:,.0f} h"


def nvidia_visible() -> bool:
    """Whether this machine shows an NVIDIA GPU to a run on ``--device auto``, told without importing torch (a
    dry run stays under a second): the driver's files, and CUDA_VISIBLE_DEVICES not hiding every GPU."""
    import os

    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidiactl").exists()


def runs_on(cfgs: list) -> str:
    """'cpu' | 'gpu': where the runs ``cfgs`` compute, from their ``device`` (auto: a GPU where one shows)."""
    devices = {cfg.device for cfg in cfgs}
    if devices and all(d == "cpu" for d in devices):
        return "cpu"
    if any(d.startswith("cuda") for d in devices):
        return "gpu"
    return "gpu" if nvidia_visible() else "cpu"


PROTOCOL_NOTES = {"clean": "bf16 on a GPU, the default", "paper": "fp32, a test pass after every epoch, online weights"}


def report(by_protocol: dict, results_dir: Optional[Path] = None, ran: Optional[str] = None) -> list[str]:
    """What is left, priced once for the device the runs will use: ``by_protocol`` {protocol: [cfg]} (the runs
    this command would do under ``ran``, and the same grid under the other protocol where the caller has it).
    Lines: the total per protocol on one GPU (measured or assumed rates; the clean protocol in bf16 and in fp32),
    on this machine's CPU when the runs compute there (or a line saying they would), then where the rates
    come from (``describe``'s detail for the protocol that runs)."""
    from ..core.registry import DEMO_MODEL

    ran = ran or next(iter(by_protocol))
    mine = by_protocol.get(ran, [])
    if not any(by_protocol.values()):
        return ["estimate: nothing left to run"]
    everything = [cfg for cfgs in by_protocol.values() for cfg in cfgs]
    device = runs_on(mine or everything)
    table = rates(results_dir)
    real = {p: [c for c in cfgs if c.model != DEMO_MODEL] for p, cfgs in by_protocol.items()}
    lines, n = [], len(mine)
    head = f"estimate for what is left ({n} run{'s' * (n != 1)})"
    if any(real.values()):
        gpu = f"one {table['measured']['device']}" if table["measured"] else "one A6000 (assumed rates)"
        parts = []
        for protocol, cfgs in real.items():
            if not cfgs:
                continue
            cost = estimate(cfgs, table)
            here = " (this command)" if protocol == ran and len(real) > 1 else ""
            text = (f"{duration(cost['hours'])} in bf16, {duration(cost['fp32_hours'])} in fp32 (--set amp=false)"
                    if protocol == "clean" and cost["hours"] != cost["fp32_hours"] else
                    f"{duration(cost['fp32_hours'])} ({PROTOCOL_NOTES.get(protocol, 'fp32')})")
            parts.append(f"  {protocol} protocol{here}: {text}")
        lines += [f"{head}, in GPU-hours on {gpu}:", *parts]
    toy = [c for c in mine if c.model == DEMO_MODEL]
    if device == "gpu" and toy:
        lines += [text for text in describe(estimate(toy, table)) if text.startswith("estimate")]
    if device == "cpu":
        cpu = cpu_estimate(mine)
        why = ("--device cpu" if all(c.device == "cpu" for c in mine)
               else "--device auto finds no NVIDIA GPU on this machine")
        kinds = ", ".join(f"{KIND_NAMES[k]} {duration(v['hours'])}" for k, v in cpu["by_kind"].items() if v["images"])
        lines.append(f"{head + ' on this machine' if not lines else 'this command runs on this machine'}'s CPU "
                     f"({why}): about {duration(cpu['hours'])} on 2 cores — {kinds}")
        lines.append("  at " + "; ".join(f"{arch} {side} px: " + " / ".join(f"{KIND_NAMES[k]} {r[k]:,.4g}" for k in KINDS)
                                        + " images/s" for (arch, side), r in sorted(cpu["used"].items()))
                     + f", {CPU_SOURCE}")
        if cpu["guessed"]:
            lines.append(f"  {', '.join(cpu['guessed'])}: no CPU rate measured; costed at resnet50's (the slower)")
        if _demo_model_missing(mine):
            lines.append("  and before them the demo model is trained once (not cached yet): about a minute on 2 cores")
    if real.get(ran):
        lines += [text for text in describe(estimate(real[ran], table))[1:] if text.startswith("  ")
                  and "in fp32 instead" not in text]
    return lines


def _demo_model_missing(cfgs: list) -> bool:
    """Whether a demo-model run among ``cfgs`` would train the demo model first (no cached file for it)."""
    from ..core.registry import DEMO_MODEL

    demo = next((cfg for cfg in cfgs if cfg.model == DEMO_MODEL), None)
    if demo is None:
        return False
    from ..methods.source import demo_path
    from .dryrun import planned

    return not demo_path(planned(demo)).is_file()
