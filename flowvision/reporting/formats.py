"""A table as a person reads it and as files: its Markdown, CSV and LaTeX under ``results/tables/`` and its
console form (``render``: ids whole, units on a second header line, long settings as a key into a legend).
A table is ``(title, DataFrame)``, the frame's ``attrs["note"]`` its footnote; what goes into one is
``tables``'s.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence, Tuple

import pandas as pd

TABLES_DIR = Path("results") / "tables"
Table = Tuple[str, pd.DataFrame]  # (title, frame); frame.attrs["note"] is an optional footnote
SHORT_SETTINGS = 24  # longer settings print as a key into a legend under the table (files keep them whole)

def slug(title: str) -> str:
    """File stem of a table: 'resnet18: 6-set averages vs paper' -> 'resnet18_6_set_averages_vs_paper'."""
    return re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_")


def to_markdown(title: str, frame: pd.DataFrame) -> str:
    """A GitHub Markdown table (written here: pandas' to_markdown needs tabulate, not a dependency)."""
    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")
    lines = [f"### {title}", "", "| " + " | ".join(map(cell, frame.columns)) + " |",
             "|" + "|".join("---" for _ in frame.columns) + "|"]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in frame.itertuples(index=False)]
    if frame.attrs.get("note"):
        lines += ["", frame.attrs["note"]]
    return "\n".join(lines) + "\n"


_LATEX = {"±": r"$\pm$", "—": "---", "–": "--", "τ": r"$\tau$", "Δ": r"$\Delta$", "−": "$-$"}


def to_latex(title: str, frame: pd.DataFrame) -> str:
    """A booktabs table; cells are escaped by pandas, the caption here (pandas leaves it raw)."""
    caption = re.sub(r"([&%$#_{}])", r"\\\1", title)
    text = frame.to_latex(index=False, escape=True, caption=caption, label=f"tab:{slug(title)}")
    for char, macro in _LATEX.items():
        text = text.replace(char, macro)
    return text


def write_tables(tables: Sequence[Table], out_dir: Path = TABLES_DIR) -> list:
    """Each table as ``<slug>.md``, ``<slug>.csv`` (the printed strings; read back with
    ``keep_default_na=False`` so 'n/a' stays text) and ``<slug>.tex``; plus ``all.md``."""
    from ..core.files import atomic_write_text, owned_folder

    out_dir = owned_folder(Path(out_dir), "the tables folder")
    paths, markdown = [], []
    for title, frame in tables:
        stem = out_dir / slug(title)
        text = to_markdown(title, frame)
        markdown.append(text)
        for suffix, content in ((".md", text), (".tex", to_latex(title, frame))):
            atomic_write_text(stem.with_suffix(suffix), content)
            paths.append(stem.with_suffix(suffix))
        atomic_write_text(stem.with_suffix(".csv"), frame.to_csv(index=False))
        paths.append(stem.with_suffix(".csv"))
    atomic_write_text(out_dir / "all.md", "\n".join(markdown))
    return paths + [out_dir / "all.md"]


def unit(column: str) -> str:
    """The unit a printed header carries on its second line: accuracies and their averages in %, drops
    and differences of two accuracies in points, KL in nats; '' for counts, names and columns that
    already say it. Cross-entropy losses are in nats too."""
    name = column.lower()
    if "%)" in name or name.startswith(("#", "seeds", "n", "data sets", "points", "on front")) and "acc" not in name:
        return ""
    if "drop" in name or name.startswith("δ"):
        return "points"
    if name.startswith("kl") or "loss" in name:
        return "nats"
    if any(word in name for word in ("acc", "average", "agreement", "hardest", "all test", "target", "there")):
        return "%"
    return ""


IDS = ("class", "method", "dataset", "model", "settings", "config", "protocol")  # whole at any width (console.Table)


def render(table: Table):
    """A rich Table for printing one (title, DataFrame); the footnote becomes the caption. A settings text
    too long for a column is shown as a key, S1, S2, ..., spelled out whole under the table, so that no
    row is cut or wrapped into unreadable pieces. A column empty in every row (no settings off the defaults,
    no config id) is left out of the printed form — split at a narrow width it was repeated, empty, in every
    part; the files keep it."""
    from rich.text import Text

    from ..core.console import Table as RichTable

    title, frame = table
    if len(frame):
        note = frame.attrs.get("note")
        frame = frame[[c for c in frame.columns if not frame[c].astype(str).str.strip().eq("").all()]]
        frame.attrs["note"] = note
    legend = {}
    if "settings" in frame.columns:
        for text in frame["settings"]:
            if len(str(text)) > SHORT_SETTINGS and text not in legend:
                legend[text] = f"S{len(legend) + 1}"
    caption = frame.attrs.get("note") or ""
    if legend:
        caption += "".join(f"\nsettings {key}: {text}" for text, key in legend.items())
    out = RichTable(title=Text(title), caption=Text(caption) if caption else None, caption_justify="left")
    for column in frame.columns:
        label = str(column) + (f"\n{unit(str(column))}" if unit(str(column)) else "")
        out.add_column(label, justify="left" if column in IDS else "right", no_wrap=column in IDS)
    for row in frame.itertuples(index=False):
        out.add_row(*(Text(legend.get(v, str(v)) if c == "settings" else str(v)) for c, v in zip(frame.columns, row)))
    return out
