"""Where a report's files go, and the rule that nothing existing is overwritten without ``--force``."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable

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
