"""Unlabeled pretraining collections (LUNA16, TCIA-COVID19, BTCV's images): layout checks that find
the CT volumes, reusable on their own, then :func:`nnunet_subfore.data.register.register_unlabeled`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from nnunet_subfore.data.converters.layout import locate_root, match_template, subfolders
from nnunet_subfore.data.converters.report import ConversionReport
from nnunet_subfore.data.converters.specs import DATASETS, DatasetSpec
from nnunet_subfore.data.register import register_unlabeled
from nnunet_subfore.errors import UserError


NIFTI_ENDINGS = (".nii.gz", ".nii")
MASK_NAME = re.compile(r"(^|[_\-.])(seg|segmentation|label|labels|mask|lung|lungs)([_\-.]|$)", re.IGNORECASE)
"""File names that mark a segmentation/mask rather than a CT volume (e.g. ``..._seg.nii.gz``)."""


@dataclass
class SourceListing:
    """Files of an unlabeled collection that passed the layout check, and those that did not."""

    root: Path
    files: List[Path]
    problems: List[Tuple[str, str]]
    ignored: List[Path] = field(default_factory=list)


_SUBSET = re.compile(r"subset\d+")


def luna16_sources(source: Path) -> SourceListing:
    """The LUNA16 CT volumes (``subsetN/*.mhd`` with their data files) under ``source``.

    Only the ``subset0`` .. ``subset9`` folders are taken: the download's ``seg-lungs-LUNA16``
    holds lung masks in the same ``.mhd`` format, which must not be registered as CT.

    Args:
        source: the LUNA16 folder (holding ``subset*``) or one ``subsetN`` folder.

    Returns:
        The ``.mhd`` files whose data file exists, problems by file, and the ignored files.

    Raises:
        UserError: no ``subsetN`` folder with ``.mhd`` files.
    """
    spec = DATASETS["luna16"]
    source = Path(source)
    if _SUBSET.fullmatch(source.name):
        root, subsets = source.parent, [source]
    else:
        root = locate_root(source, lambda d: any(_SUBSET.fullmatch(s.name) for s in subfolders(d)), spec)
        subsets = [s for s in subfolders(root) if _SUBSET.fullmatch(s.name)]
    files, problems = [], []
    for header in sorted(p for s in subsets for p in s.rglob("*.mhd") if not p.name.startswith(".")):
        data_file = _mhd_data_file(header)
        if data_file is None or not data_file.is_file():
            problems.append((header.stem, f"{header}: its data file {data_file or '(ElementDataFile missing)'} is "
                                          f"missing; re-extract {header.parent.name}.zip."))
        else:
            files.append(header)
    if not files and not problems:
        raise UserError(f"No .mhd volumes in {', '.join(str(s) for s in subsets)}. Expected {spec.layout_hint}.")
    ignored = [] if len(subsets) == 1 and subsets[0] == source else sorted(
        p for p in root.rglob("*.mhd") if not any(s in p.parents for s in subsets))
    return SourceListing(root, files, problems, ignored)


def _mhd_data_file(header: Path) -> Optional[Path]:
    try:
        text = header.read_text(errors="replace")
    except OSError:
        return None
    match = re.search(r"^\s*ElementDataFile\s*=\s*(.+?)\s*$", text, re.MULTILINE)
    if not match or match.group(1).upper() == "LOCAL":
        return header if match else None
    return header.parent / match.group(1)


def covid19_sources(source: Path) -> SourceListing:
    """The TCIA-COVID19 CT volumes (NIfTI) under ``source``, masks left out.

    Files whose names mark a segmentation (``_seg``, ``label``, ``mask``, ``lung``) are ignored:
    some NIfTI redistributions ship lesion or lung masks next to the volumes.

    Args:
        source: folder holding the NIfTI volumes (any depth).

    Raises:
        UserError: no NIfTI volume found.
    """
    spec = DATASETS["covid19"]
    source = Path(source)
    found = sorted(p for p in source.rglob("*") if p.is_file() and p.name.endswith(NIFTI_ENDINGS)
                   and not any(part.startswith(".") for part in p.relative_to(source).parts))
    ignored = [p for p in found if MASK_NAME.search(_strip_nifti(p.name))]
    files = [p for p in found if p not in ignored]
    if not files:
        raise UserError(f"No NIfTI CT volumes in {source}. Expected {spec.layout_hint}; download {spec.source_hint}.")
    return SourceListing(source, files, [], ignored)


def _strip_nifti(name: str) -> str:
    for ending in NIFTI_ENDINGS:
        if name.endswith(ending):
            return name[: -len(ending)]
    return name


def btcv_images(source: Path) -> SourceListing:
    """The BTCV CT volumes (``Training/img/img*.nii.gz``) under ``source``, for pretraining.

    Args:
        source: the unpacked RawData folder (or a folder up to two levels above it).
    """
    spec = DATASETS["btcv"]
    root = locate_root(Path(source), lambda d: bool(match_template(d, spec.layout.image)), spec)
    images = match_template(root, spec.layout.image)
    return SourceListing(root, [images[num] for num in sorted(images)], [])


UNLABELED_SOURCES: Dict[str, Callable[[Path], SourceListing]] = {
    "luna16": luna16_sources, "covid19": covid19_sources, "btcv": btcv_images,
}


def pretraining_sources(**folders: Optional[Path]) -> Tuple[List[Path], List[Tuple[str, str]], List[Path]]:
    """The files of several pretraining collections, each through its layout check, for one
    :func:`register_unlabeled` call (the paper's set: ``btcv=..., covid19=..., luna16=...``).

    Args:
        folders: ``key=folder`` for keys of :data:`UNLABELED_SOURCES` (``luna16``, ``covid19``,
            ``btcv``); None values are left out.

    Returns:
        ``(files, problems, ignored)`` over all collections.

    Raises:
        UserError: an unknown key, or a collection whose layout is not recognised.
    """
    files, problems, ignored = [], [], []
    for key, folder in folders.items():
        if folder is None:
            continue
        if key not in UNLABELED_SOURCES:
            raise UserError(f"No pretraining layout {key!r}; known: {', '.join(UNLABELED_SOURCES)}.")
        listing = UNLABELED_SOURCES[key](Path(folder))
        files += listing.files
        problems += listing.problems
        ignored += listing.ignored
    return files, problems, ignored


def convert_unlabeled(spec: DatasetSpec, source: Path, dataset_id: int, raw_root: Path, force: bool) -> ConversionReport:
    """Layout check, then :func:`register_unlabeled` on the files that passed."""
    listing = UNLABELED_SOURCES[spec.key](source)
    report = ConversionReport(dataset=spec.key, skipped=list(listing.problems))
    for name, reason in listing.problems:
        print(f"skipped {name}: {reason}")
    if listing.ignored:
        report.notes.append(f"ignored {len(listing.ignored)} file(s) that are not CT volumes (masks), e.g. "
                            f"{listing.ignored[0]}")
        print(f"note: {report.notes[-1]}")
    if not listing.files:
        return report
    registration = register_unlabeled(sources=listing.files, dataset_id=dataset_id, name=spec.folder_name,
                                      raw_root=raw_root, force=force)
    report.output_dir = registration.output_dir
    report.converted = [case_id for case_id, _ in registration.registered]
    report.skipped.extend((str(path), reason) for path, reason in registration.skipped)
    return report
