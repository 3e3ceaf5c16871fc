"""Sample audit: which training samples does FLOW up-weight and which does it down-weight?

Input is a run's ``weights.csv`` (index, label, loss, weight: one row per training sample, keyed
by the data set index) and a way to fetch the image of an index; output is a contact sheet PNG of
the k most up-weighted and k most down-weighted samples, and per-class means. Nothing here knows
about models or training, so it works on any weights file, from any run, after the fact.

    weights = pd.read_csv("results/runs/<run-id>/weights.csv")
    by_class = sample_audit(weights, lambda i: np.asarray(data.train_eval.base[i][0]),
                            class_names, k=8, out_path=Path("results/figures/audit.png"))
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from flowvision.core.errors import UserError

WEIGHT_COLUMNS = ("index", "label", "loss", "weight")
DPI = 160  # a sheet of 8 tiles is 1408 px wide
TILE_INCHES = 1.1   # one tile, title included: 176 px
MAX_COLS = 8


def _check(weights: pd.DataFrame, k: int) -> None:
    missing = [c for c in WEIGHT_COLUMNS if c not in weights.columns]
    if missing:
        raise UserError(f"weights table lacks columns {', '.join(missing)}; expected a weights.csv "
                        f"with {', '.join(WEIGHT_COLUMNS)}")
    if not 1 <= int(k) <= len(weights):
        raise UserError(f"k={k} must be between 1 and the number of samples ({len(weights)})")


def pick_extremes(weights: pd.DataFrame, k: int) -> tuple:
    """(top, bottom): the k rows with the largest weights, largest first, and the k with the
    smallest, smallest first. Ties go to the lower index, so the pick is deterministic."""
    _check(weights, k)
    top = weights.sort_values(["weight", "index"], ascending=[False, True], kind="stable").head(k)
    bottom = weights.sort_values(["weight", "index"], ascending=[True, True], kind="stable").head(k)
    return top.reset_index(drop=True), bottom.reset_index(drop=True)


def noise_audit(weights: pd.DataFrame, k: int = 16) -> Optional[dict]:
    """How FLOW's weights treat the training labels known to be wrong (a weights.csv with a ``noisy``
    column, 1 where the label is not the sample's true class; synthetic tasks), else None:
    n_noisy, base_rate (share of noisy labels), mean weight of noisy and of clean samples, and the
    share of noisy labels among the k most down-weighted samples and among the n_noisy most
    down-weighted (where a perfect ranking gives 1 and a random one the base rate)."""
    if "noisy" not in weights.columns:
        return None
    _check(weights, k)
    noisy = weights["noisy"].astype(bool)
    n_noisy = int(noisy.sum())
    _, bottom = pick_extremes(weights, k)
    lowest = set(pick_extremes(weights, n_noisy)[1]["index"]) if n_noisy else set()
    return {"n": len(weights), "n_noisy": n_noisy, "base_rate": n_noisy / len(weights),
            "mean_weight_noisy": float(weights.loc[noisy, "weight"].mean()) if n_noisy else None,
            "mean_weight_clean": float(weights.loc[~noisy, "weight"].mean()) if n_noisy < len(weights) else None,
            "k": int(k), "noisy_share_bottom_k": float(noisy[weights["index"].isin(bottom["index"])].mean()),
            "noisy_share_bottom_n_noisy": float(noisy[weights["index"].isin(lowest)].mean()) if n_noisy else None}


def _class_name(label: int, class_names: Optional[Sequence[str]]) -> str:
    if class_names is None:
        return str(label)
    if not 0 <= label < len(class_names):
        raise UserError(f"label {label} has no class name ({len(class_names)} names given); "
                        "pass the class names of the data set the weights came from")
    return str(class_names[label])


def per_class(weights: pd.DataFrame, class_names: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """One row per label: class, label, n, mean_weight, mean_loss; sorted by mean_weight, highest
    first (ties by label). Classes FLOW favours come first, the ones it gives up on last."""
    _check(weights, 1)
    stats = (weights.groupby("label")
             .agg(n=("weight", "size"), mean_weight=("weight", "mean"), mean_loss=("loss", "mean"))
             .reset_index())
    stats.insert(0, "class", [_class_name(int(label), class_names) for label in stats["label"]])
    stats["label"] = stats["label"].astype(int)
    return stats.sort_values(["mean_weight", "label"], ascending=[False, True], kind="stable").reset_index(drop=True)


def _tile(ax, image: np.ndarray, title: str) -> None:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise ValueError(f"image_of must return HxWx3 (or HxW) arrays, got shape {image.shape}")
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, interpolation="nearest")
    ax.set_title(title, fontsize=5)
    ax.set_axis_off()


def sample_audit(weights: pd.DataFrame, image_of: Callable[[int], np.ndarray],
                 class_names: Optional[Sequence[str]], k: int, out_path: Path) -> pd.DataFrame:
    """Write a contact sheet of the k most up-weighted (upper block, largest first) and k most
    down-weighted (lower block, smallest first) samples to ``out_path`` (PNG, MAX_COLS tiles per
    row, TILE_INCHES × DPI px a tile), each titled with class, weight and loss; return
    ``per_class(weights, class_names)``.

    weights:  a weights.csv frame (index, label, loss, weight), one row per training sample
    image_of: sample index -> uint8 image, HxWx3 (HxW greyscale also drawn)
    """
    top, bottom = pick_extremes(weights, k)
    by_class = per_class(weights, class_names)
    cols = min(int(k), MAX_COLS)
    rows = math.ceil(int(k) / cols)
    fig = Figure(figsize=(cols * TILE_INCHES, 2 * rows * TILE_INCHES + 0.4), dpi=DPI, layout="constrained")
    for sub, picked, heading in zip(fig.subfigures(2, 1),
                                    (top, bottom), (f"{k} most up-weighted", f"{k} most down-weighted")):
        sub.suptitle(heading, fontsize=7)
        axes = sub.subplots(rows, cols, squeeze=False).ravel()
        for ax in axes[len(picked):]:
            ax.set_axis_off()
        for ax, row in zip(axes, picked.itertuples(index=False)):
            name = _class_name(int(row.label), class_names)
            wrong = " (wrong label)" if bool(getattr(row, "noisy", False)) else ""
            _tile(ax, image_of(int(row.index)), f"{name}{wrong}\nw={row.weight:.3g} ℓ={row.loss:.3g}")
    from ..core.files import atomic_write_stream

    atomic_write_stream(Path(out_path), lambda f: fig.savefig(f, format="png", dpi=DPI))
    return by_class


def label_noise(weights: dict, noisy, k: int = 16):
    """audit.noise_audit of a weights stage value, None where the task does not know its wrong labels."""
    if noisy is None or weights is None or weights["weights"] is None:
        return None
    import pandas as pd

    return noise_audit(pd.DataFrame({"index": range(len(weights["losses"])), "label": weights["labels"].numpy(),
                                     "loss": weights["losses"].numpy(), "weight": weights["weights"].numpy(),
                                     "noisy": noisy.numpy()}), k)


# ---- weights.csv and the audit command ------------------------------------------------------------------
def write_weights(path: Path, losses, weights, labels, noisy=None) -> None:
    """``weights.csv``: index, label, loss, weight per training sample; plus ``noisy`` (1: the label is not the true
    class) where the task knows it (synthetic tasks)."""
    import io

    from ..core.files import atomic_write_text

    buf = io.StringIO()
    buf.write("index,label,loss,weight" + (",noisy" if noisy is not None else "") + "\n")
    for i in range(len(losses)):
        tail = f",{int(noisy[i])}" if noisy is not None else ""
        buf.write(f"{i},{int(labels[i])},{float(losses[i]):.6g},{float(weights[i]):.6g}{tail}\n")
    atomic_write_text(path, buf.getvalue())


def run_audit(cfg, k: int = 16) -> dict:
    """The sample audit: probe -> losses -> FLOW weights (the same cached stages a run uses), then a
    contact sheet of the k most up- and down-weighted training samples and per-class mean weights.
    Writes ``<results>/audit/<dataset>-<model>-tau_<τ>-s<seed>-<config id>/{samples.png, per_class.csv,
    weights.csv}`` (the config id keeps audits of different settings apart). Measures no forgetting,
    so it needs no ImageNet."""
    import pandas as pd

    from ..core.identity import config_id, model_slug
    from ..core.registry import dataset_slug
    from ..data import class_names, display_image
    from ..core.files import atomic_write_text, owned_folder
    from .pipeline import start
    from .training import stage_split
    from ..methods.weighting import weight_stats

    tau_tag = cfg.tau.replace(".", "_")
    folder = (Path(cfg.results_dir) / "audit"
              / f"{dataset_slug(cfg.dataset)}-{model_slug(cfg)}-tau_{tau_tag}-s{cfg.seed}-{config_id(cfg)}")
    owned_folder(folder, "the audit folder", below=Path(cfg.results_dir))  # before anything runs: no link there
    r = start(cfg)
    w = r["weights"]
    task = r["task"].of_split(stage_split("losses", cfg))  # the training set the losses are indexed by
    if w["weights"] is None:  # online weights with a numeric τ never need every sample's loss
        raise UserError("the sample audit needs every training sample's weight: it uses static FLOW weights "
                        "(drop --set weighting=… and --set protocol=paper for the audit)")
    noisy = task.noisy
    write_weights(folder / "weights.csv", w["losses"], w["weights"], w["labels"], noisy)
    frame = pd.DataFrame({"index": range(len(w["losses"])), "label": w["labels"].numpy(),
                          "loss": w["losses"].numpy(), "weight": w["weights"].numpy(),
                          **({"noisy": noisy.numpy()} if noisy is not None else {})})
    per_class = sample_audit(frame, lambda i: display_image(task, i), class_names(task), k,
                             folder / "samples.png")
    atomic_write_text(folder / "per_class.csv", per_class.to_csv(index=False))
    return {"folder": str(folder), "png": str(folder / "samples.png"), "per_class": per_class, "tau": w["tau"],
            "tau_rule": w["rule"], "weight_stats": weight_stats(w["weights"]), "label_noise": label_noise(w, noisy, k)}
