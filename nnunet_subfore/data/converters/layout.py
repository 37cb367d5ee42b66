"""Finding a dataset in a download: its root folder, its files by case-number template, and what a
layout check found (:class:`Case`, :class:`Listing`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Tuple

from nnunet_subfore.data.converters.specs import DatasetSpec
from nnunet_subfore.errors import UserError


@dataclass(frozen=True)
class Case:
    """One labelled case as found in the source.

    Attributes:
        case_id: nnU-Net case identifier in the output.
        images: the image file(s) the case is read from (one per file; BraTS has one 4D file).
        label: the label file.
        group: ``"train"``/``"val"`` where the source has an official partition (AMOS), else ``""``.
    """

    case_id: str
    images: Tuple[Path, ...]
    label: Path
    group: str = ""


@dataclass
class Listing:
    """What a layout check found: the dataset root, usable cases, problems by case, and extras."""

    root: Path
    cases: List[Case]
    problems: List[Tuple[str, str]]
    metadata: dict = field(default_factory=dict)
    test_images: List[Path] = field(default_factory=list)


def locate_root(source: Path, is_root: Callable[[Path], bool], spec: DatasetSpec, depth: int = 2) -> Path:
    """The folder under ``source`` (itself or up to ``depth`` levels down) that holds the dataset.

    Args:
        source: the folder the user passed.
        is_root: predicate that recognises the dataset root.
        spec: the dataset, for messages.
        depth: how many folder levels below ``source`` to search.

    Raises:
        UserError: no such folder, or several.
    """
    level = [source]
    for _ in range(depth + 1):
        found = [d for d in level if is_root(d)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise UserError(f"Several {spec.title} folders under {source}: {[str(f) for f in found]}. Pass one of them.")
        level = [c for d in level for c in subfolders(d)]
    raise UserError(f"No {spec.title} data found in {source}. Expected {spec.layout_hint}. Download {spec.source_hint} "
                    f"and pass the folder it unpacks to.")


def subfolders(folder: Path) -> List[Path]:
    """The visible subfolders of ``folder``, sorted (none if it cannot be listed)."""
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    except OSError:
        return []


def _template_regex(template: str) -> re.Pattern:
    parts = template.split("{num}")
    return re.compile(r"(?P<num>\d+)".join(re.escape(p) for p in parts))


def match_template(root: Path, template: str) -> Dict[str, Path]:
    """Files under ``root`` matching a layout template, by case number.

    Args:
        root: dataset root.
        template: relative path with ``{num}`` for the case number, e.g. ``Training/img/img{num}.nii.gz``.

    Returns:
        ``{num: path}``; hidden files (``._img0001.nii.gz``) are ignored.
    """
    regex = _template_regex(template)
    found = {}
    for path in root.glob(template.replace("{num}", "*")):
        match = regex.fullmatch(path.relative_to(root).as_posix())
        if match and path.is_file():
            found[match.group("num")] = path
    return found
