"""The ImageNet-1K class list and the check of a folder of synset folders, without torch: the dry run,
``data status`` and a grid's input check ask it before anything loads a model (``imagenet.py`` reads the
images).

    check_classes(Path("/d/imagenet/val"), imagenet_synsets())   # its class folders, or a UserError
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from ..core.errors import UserError

LAYOUT_HELP = ("pass --imagenet DIR (or FLOWVISION_IMAGENET), the val set in 1000 synset folders: "
               "`flowvision data prepare imagenet --val-tar ILSVRC2012_img_val.tar --devkit "
               "ILSVRC2012_devkit_t12.tar.gz --out DIR` makes it")
SOURCE_EVAL_HELP = ("give --source-eval a folder of images: synset folders named after the model's classes "
                    "(n01440764/, ...; some of them are enough) for accuracy, or any images for agreement and KL")


def layout_help(flag: str) -> str:
    """What to do, in the words of the option that named the folder (--imagenet or --source-eval)."""
    return SOURCE_EVAL_HELP if flag == "--source-eval" else LAYOUT_HELP


def imagenet_synsets() -> list[str]:
    """timm's ImageNet-1K class order: 1000 WordNet ids, the order of every ``*_in1k`` head. Read from the
    file timm's ``ImageNetInfo("imagenet-1k")`` reads, found without importing timm (which imports torch)."""
    import importlib.util

    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("timm is not installed: pip install timm")
    path = Path(spec.submodule_search_locations[0]) / "data" / "_info" / "imagenet_synsets.txt"
    return path.read_text(encoding="utf-8").splitlines()


def class_folders(root: Path) -> list[str]:
    """Names of the class folders under ``root``, sorted; hidden folders (.ipynb_checkpoints, ...)
    hold no classes (labels come from names) and are skipped."""
    return sorted(e.name for e in root.iterdir() if e.is_dir() and not e.name.startswith("."))


def folder_what(root: Path, flag: str) -> str:
    """'ImageNet val at ROOT' or 'source images at ROOT': the folder in the words of the option that named it."""
    return f"{'source images' if flag == '--source-eval' else 'ImageNet val'} at {root}"


def check_classes(root: Path, expected: Sequence[str], flag: str = "--imagenet") -> list[str]:
    """The class folders under ``root`` (sorted), all of them in ``expected``; some of ``expected``
    may be absent (a partial folder). UserError for a folder that is not an expected class; ``flag``
    is the option that named the folder, which the message tells the user to fix."""
    if not root.is_dir():
        raise UserError(f"{folder_what(root, flag).replace(' at ', ' not found at ')}: {layout_help(flag)}")
    found = class_folders(root)
    if not found:
        raise UserError(f"{folder_what(root, flag)} has no class folders (the raw val archive is flat): "
                        f"{layout_help(flag)}")
    expected_set, found_set = set(expected), set(found)
    extra = [f for f in found if f not in expected_set]
    if extra:
        missing = [e for e in expected if e not in found_set]
        parts = [f"{len(found)} class folders, expected {len(expected)}", f"first unexpected folder {extra[0]!r}"]
        if missing:
            parts.append(f"first missing {missing[0]!r}")
        raise UserError(f"{folder_what(root, flag)} does not match the model's classes "
                        f"({'; '.join(parts)}): {layout_help(flag)}")
    return found


def is_synset_folder(root: Path, expected: Optional[Sequence[str]] = None) -> bool:
    """Whether ``root`` holds class folders named after the model's classes (any of them)."""
    names = set(expected if expected is not None else imagenet_synsets())
    return root.is_dir() and any(name in names for name in class_folders(root))
