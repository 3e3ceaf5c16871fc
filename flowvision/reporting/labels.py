"""How the artefacts one shares (tables, figures, the model card) name the data a number was measured on.

    source_label("IN-1K val", "imagenet-partial(20 images, 20 classes), official transform")
        -> '20 photos of 20 IN-1K classes'
    dataset_label("folder:/home/me/birds", "9f2c41d07a1be3c5")  -> 'folder:birds (9f2c41d0)'

The source images: the full IN-1K val set, a class-balanced subset of it, a folder holding some of its classes
(photos, `data sample-photos`) or any unlabelled photos (``--source-eval``) are four different measurements;
the record's ``source_eval`` says which (``data.imagenet.describe``), and every shared artefact names it from
there rather than calling them all "IN-1K val". A folder of one's own images is named by its base name and the
fingerprint of its files (paths, sizes, times), never by its absolute path: sharing a table, a figure or a
model should not share the owner's file system.
"""
from __future__ import annotations

import re
from typing import Optional

import pandas as pd

from ..core.registry import dataset_slug, is_folder

_COUNT = r"\((\d+)(?: images)?(?:, (\d+) classes)?(?:, unlabelled)?\)"


def source_label(name: Optional[str], desc: Optional[str]) -> str:
    """What the source numbers were measured on, in words, from a record's ``source_eval_name`` and
    ``source_eval`` (its description): 'IN-1K val', 'IN-1K val subset (5,000 images)', '20 photos of 20 IN-1K
    classes', '12 unlabelled photos', or the name itself ('shapes val'); 'source' when neither is known."""
    text = str(desc or "")
    found = re.match(r"(imagenet-val:subset|imagenet-val|imagenet-partial|images)" + _COUNT, text)
    if not found:
        return str(name) if name else "source"
    kind, count, classes = found.group(1), int(found.group(2)), found.group(3)
    if kind == "imagenet-val":
        return "IN-1K val" if count == 50_000 else f"IN-1K val ({count:,} images)"
    if kind == "imagenet-val:subset":
        return f"IN-1K val subset ({count:,} images)"
    if kind == "imagenet-partial":
        return f"{count:,} photos of {classes} IN-1K classes"
    return f"{count:,} unlabelled photos"


def dataset_label(dataset: str, fingerprint: Optional[str] = None) -> str:
    """A data set as a shared artefact names it: its own name, or for a folder of one's images its base name
    and the first 8 hex digits of its fingerprint (``folder:birds (9f2c41d0)``)."""
    if not is_folder(str(dataset)):
        return str(dataset)
    return f"folder:{dataset_slug(dataset)}" + (f" ({str(fingerprint)[:8]})" if fingerprint else "")


def shareable(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` (``runs.load_runs``'s frame, or ``dedupe_runs``') with ``dataset`` named by ``dataset_label`` and
    ``source_eval_name`` by ``source_label``: what tables and figures print. Two folders with one base name stay
    apart by their fingerprints."""
    if runs.empty or "dataset" not in runs:
        return runs
    runs = runs.copy()
    prints = runs["target_data.fingerprint"] if "target_data.fingerprint" in runs else pd.Series(None, index=runs.index)
    runs["dataset"] = [dataset_label(d, f if isinstance(f, str) else None) for d, f in zip(runs["dataset"], prints)]
    if "source_eval_name" in runs:
        descs = runs["source_eval"] if "source_eval" in runs else pd.Series(None, index=runs.index)
        runs["source_eval_name"] = [source_label(n if isinstance(n, str) else None, d if isinstance(d, str) else None)
                                    for n, d in zip(runs["source_eval_name"], descs)]
    return runs
