"""Where a report's files go, and the rule that nothing existing is overwritten without ``--force``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict, Iterable, List

from nnunet_subfore.errors import UserError

#: The files a report command writes, by extension.
REPORT_EXTENSIONS = ("png", "md", "csv", "json")


def report_paths(output_dir: Path, stem: str) -> Dict[str, Path]:
    """``{ext: output_dir/stem.ext}`` for every file of a report."""
    return {ext: Path(output_dir) / f"{stem}.{ext}" for ext in REPORT_EXTENSIONS}


def refuse_existing(paths: Iterable[Path], force: bool) -> None:
    """UserError naming the first existing output when ``force`` is False (a folder in its place always)."""
    for path in paths:
        path = Path(path)
        if path.is_dir():
            raise UserError(f"{path} is a folder; choose another output folder.")
        if path.exists() and not force:
            raise UserError(f"{path} exists; pass --force to overwrite it.")


def write_report(paths: Dict[str, Path], force: bool, draw: Callable[[Path], object], markdown: Callable[[], str],
                 csv_text: Callable[[], str], record: Callable[[], dict], json_indent: int = 2) -> List[Path]:
    """Write a report's files (:func:`report_paths`): refuse existing ones without ``force``, then the PNG
    (``draw(path)``), the Markdown, the CSV and the JSON ``record``, each made when its turn comes."""
    refuse_existing(paths.values(), force)
    paths["png"].parent.mkdir(parents=True, exist_ok=True)
    draw(paths["png"])
    paths["md"].write_text(markdown(), encoding="utf-8")
    paths["csv"].write_text(csv_text(), encoding="utf-8")
    paths["json"].write_text(json.dumps(record(), indent=json_indent), encoding="utf-8")
    return list(paths.values())
