"""Convert public datasets, as their downloads unpack, into nnU-Net v2 raw datasets.

One spec per dataset (:data:`DATASETS`) says where the files are, how images pair with labels, the
label table and the remap of source label values, and the paper's train/validation counts. Three
writers share the checks (files present and paired, image/label geometry, label values):

- ``native`` (BTCV, FLARE22, MM-WHS): read, check and write each case ourselves;
- ``nnunet-amos`` / ``nnunet-msd`` (AMOS22, MSD BraTS): nnU-Net's own converters write the
  dataset. We check the source first and hand them a *view* of it (links to the files of the cases
  that passed, plus the metadata they read), so one bad case is reported instead of a traceback;
- ``unlabeled`` (LUNA16, TCIA-COVID19): :func:`nnunet_subfore.data.register.register_unlabeled`,
  after a layout check (:func:`luna16_sources`, :func:`covid19_sources`) that is reusable on its own.

Every output folder is claimed through :class:`nnunet_subfore.data.staging.DatasetStaging` (the
rule for existing folders and IDs used by another name), built in a hidden staging folder next to
the target and renamed into place at the end, so a refused or failed run leaves an earlier output
intact. Sources are only read.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from nnunet_subfore.data.staging import DatasetStaging, check_dataset_free
from nnunet_subfore.errors import UserError
from nnunet_subfore.paths import nnunet_folder

# --------------------------------------------------------------------------------------------------
# Tolerances of the image/label geometry check.
# --------------------------------------------------------------------------------------------------

SPACING_RTOL = 1e-5
"""Relative spacing tolerance: nnU-Net's own integrity check (``np.allclose``) uses this, so a case
that passes here passes there."""
SPACING_ATOL = 1e-8
ORIGIN_ATOL_MM = 1e-2
"""Origin tolerance in mm (nnU-Net only warns on origin mismatches; we refuse real shifts)."""
DIRECTION_ATOL = 1e-4
"""Tolerance on each entry of the 3x3 direction cosine matrix."""

SPLIT_SEED = 12345
"""nnU-Net's seed for its 5-fold split (``nnUNetTrainer.do_split``); also seeds the paper split."""

AMOS_LAST_CT_ID = 500
"""AMOS numbers its CT scans 1..500 and its MRI scans above; nnU-Net's task-1 converter keeps CT only."""

NIFTI_ENDINGS = (".nii.gz", ".nii")
MASK_NAME = re.compile(r"(^|[_\-.])(seg|segmentation|label|labels|mask|lung|lungs)([_\-.]|$)", re.IGNORECASE)
"""File names that mark a segmentation/mask rather than a CT volume (e.g. ``..._seg.nii.gz``)."""


# --------------------------------------------------------------------------------------------------
# Specs: one per dataset.
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PairedLayout:
    """Where a dataset keeps its images and labels, as templates relative to the dataset root.

    ``{num}`` stands for the case number (digits); ``case_id`` names the nnU-Net case.
    """

    image: str
    label: str
    case_id: str


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the converter needs to know about one public dataset.

    Attributes:
        key: the name on the command line (``btcv``).
        title: the name in messages.
        folder_name: ``Name`` of the output ``DatasetXXX_Name``.
        kind: ``native``, ``nnunet-amos``, ``nnunet-msd`` or ``unlabeled`` (picks lister and writer).
        source_hint: where users get the data, in words.
        layout_hint: what the unpacked download contains, for messages.
        labels: the output label table, name -> value, background included.
        source_values: value in the source label files -> output value (the remap).
        layout: file templates, for ``native`` datasets.
        channels: nnU-Net ``channel_names``.
        paper_split: the paper's (train, validation) counts.
        reference: citation line for dataset.json.
        msd_task: the Decathlon folder name (``Task01_BrainTumour``), for ``nnunet-msd``.
    """

    key: str
    title: str
    folder_name: str
    kind: str
    source_hint: str
    layout_hint: str
    labels: Mapping[str, int] = field(default_factory=dict)
    source_values: Mapping[int, int] = field(default_factory=dict)
    layout: Optional[PairedLayout] = None
    channels: Mapping[str, str] = field(default_factory=lambda: {"0": "CT"})
    paper_split: Optional[Tuple[int, int]] = None
    reference: str = ""
    msd_task: str = ""


def _identity(labels: Mapping[str, int]) -> Dict[int, int]:
    return {int(v): int(v) for v in labels.values()}


BTCV_LABELS = {
    "background": 0, "spleen": 1, "right kidney": 2, "left kidney": 3, "gallbladder": 4, "esophagus": 5,
    "liver": 6, "stomach": 7, "aorta": 8, "inferior vena cava": 9, "portal and splenic veins": 10,
    "pancreas": 11, "right adrenal gland": 12, "left adrenal gland": 13,
}
FLARE22_LABELS = {
    "background": 0, "liver": 1, "right kidney": 2, "spleen": 3, "pancreas": 4, "aorta": 5,
    "inferior vena cava": 6, "right adrenal gland": 7, "left adrenal gland": 8, "gallbladder": 9,
    "esophagus": 10, "stomach": 11, "duodenum": 12, "left kidney": 13,
}
MMWHS_LABELS = {
    "background": 0, "left ventricle blood cavity": 1, "left ventricle myocardium": 2,
    "right ventricle blood cavity": 3, "left atrium blood cavity": 4, "right atrium blood cavity": 5,
    "ascending aorta": 6, "pulmonary artery": 7,
}
MMWHS_SOURCE_VALUES = {0: 0, 500: 1, 205: 2, 600: 3, 420: 4, 550: 5, 820: 6, 850: 7}
AMOS_LABELS = {
    "background": 0, "spleen": 1, "right kidney": 2, "left kidney": 3, "gallbladder": 4, "esophagus": 5,
    "liver": 6, "stomach": 7, "aorta": 8, "inferior vena cava": 9, "pancreas": 10,
    "right adrenal gland": 11, "left adrenal gland": 12, "duodenum": 13, "bladder": 14, "prostate/uterus": 15,
}
BRATS_LABELS = {"background": 0, "edema": 1, "non-enhancing tumor": 2, "enhancing tumour": 3}
BRATS_CHANNELS = {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}

DATASETS: Dict[str, DatasetSpec] = {
    spec.key: spec
    for spec in (
        DatasetSpec(
            key="btcv", title="BTCV", folder_name="BTCV", kind="native",
            source_hint="the 'RawData' archive of the Multi-Atlas Labeling Beyond the Cranial Vault challenge on Synapse",
            layout_hint="Training/img/img0001.nii.gz and Training/label/label0001.nii.gz (the unpacked RawData folder)",
            labels=BTCV_LABELS, source_values=_identity(BTCV_LABELS),
            layout=PairedLayout("Training/img/img{num}.nii.gz", "Training/label/label{num}.nii.gz", "BTCV_{num}"),
            paper_split=(24, 6),
            reference="Multi-Atlas Labeling Beyond the Cranial Vault (MICCAI 2015), Synapse",
        ),
        DatasetSpec(
            key="flare22", title="FLARE22", folder_name="FLARE22", kind="native",
            source_hint="the labelled training set of the MICCAI FLARE 2022 challenge (grand-challenge / Zenodo)",
            layout_hint="images/FLARE22_Tr_0001_0000.nii.gz and labels/FLARE22_Tr_0001.nii.gz",
            labels=FLARE22_LABELS, source_values=_identity(FLARE22_LABELS),
            layout=PairedLayout("images/FLARE22_Tr_{num}_0000.nii.gz", "labels/FLARE22_Tr_{num}.nii.gz",
                                "FLARE22_Tr_{num}"),
            paper_split=(100, 31),
            reference="MICCAI FLARE 2022 challenge",
        ),
        DatasetSpec(
            key="mmwhs", title="MM-WHS (CT)", folder_name="MMWHS", kind="native",
            source_hint="the CT training set of the MICCAI 2017 Multi-Modality Whole Heart Segmentation challenge",
            layout_hint="ct_train/ct_train_1001_image.nii.gz and ct_train/ct_train_1001_label.nii.gz",
            labels=MMWHS_LABELS, source_values=MMWHS_SOURCE_VALUES,
            layout=PairedLayout("ct_train/ct_train_{num}_image.nii.gz", "ct_train/ct_train_{num}_label.nii.gz",
                                "MMWHS_ct_{num}"),
            paper_split=(14, 6),
            reference="MICCAI 2017 Multi-Modality Whole Heart Segmentation (MM-WHS) challenge",
        ),
        DatasetSpec(
            key="amos22", title="AMOS22 (CT)", folder_name="AMOS22", kind="nnunet-amos",
            source_hint="the post-challenge AMOS 2022 release (amos22.zip on Zenodo, linked from amos22.grand-challenge.org)",
            layout_hint="dataset.json, imagesTr/, labelsTr/, imagesVa/, labelsVa/ and imagesTs/ (the unpacked amos22 folder)",
            labels=AMOS_LABELS, source_values=_identity(AMOS_LABELS),
            paper_split=(240, 120),
            reference="AMOS 2022 (amos22.grand-challenge.org)",
        ),
        DatasetSpec(
            key="brats", title="MSD BraTS (Task01_BrainTumour)", folder_name="BraTS", kind="nnunet-msd",
            source_hint="Task01_BrainTumour.tar of the Medical Segmentation Decathlon (medicaldecathlon.com)",
            layout_hint="dataset.json, imagesTr/BRATS_001.nii.gz (4D: FLAIR, T1w, t1gd, T2w), labelsTr/BRATS_001.nii.gz "
                        "and imagesTs/ (the unpacked Task01_BrainTumour folder)",
            labels=BRATS_LABELS, source_values=_identity(BRATS_LABELS), channels=BRATS_CHANNELS,
            paper_split=(388, 96), msd_task="Task01_BrainTumour",
            reference="Medical Segmentation Decathlon, Task01 BrainTumour",
        ),
        DatasetSpec(
            key="luna16", title="LUNA16", folder_name="LUNA16", kind="unlabeled",
            source_hint="the LUNA16 challenge download (subset0.zip .. subset9.zip, from luna16.grand-challenge.org / Zenodo)",
            layout_hint="subset0/ .. subset9/ holding <seriesuid>.mhd with its .raw",
        ),
        DatasetSpec(
            key="covid19", title="TCIA-COVID19", folder_name="COVID19", kind="unlabeled",
            source_hint="the 'CT Images in COVID-19' collection of The Cancer Imaging Archive (TCIA), as NIfTI volumes",
            layout_hint="NIfTI volumes such as volume-covid19-A-0003.nii.gz (any sub-folders)",
        ),
    )
}


# --------------------------------------------------------------------------------------------------
# Reports.
# --------------------------------------------------------------------------------------------------

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


@dataclass
class SourceListing:
    """Files of an unlabeled collection that passed the layout check, and those that did not."""

    root: Path
    files: List[Path]
    problems: List[Tuple[str, str]]
    ignored: List[Path] = field(default_factory=list)


@dataclass
class ConversionReport:
    """Outcome of :func:`convert_dataset`.

    Attributes:
        dataset: the dataset key (``btcv`` ...).
        output_dir: the nnU-Net raw dataset folder (None if nothing was written).
        converted: case identifiers written.
        skipped: ``(case or file, reason)`` for everything left out.
        notes: remarks worth reading (paper split adjustments, ignored files).
        splits_file: the ``splits_final.json`` written under ``nnUNet_preprocessed``, if any.
    """

    dataset: str
    output_dir: Optional[Path] = None
    converted: List[str] = field(default_factory=list)
    skipped: List[Tuple[str, str]] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    splits_file: Optional[Path] = None

    def exit_code(self) -> int:
        """0 all converted, 1 something skipped, 2 nothing converted."""
        if not self.converted:
            return 2
        return 1 if self.skipped else 0

    def describe(self) -> str:
        """A human-readable summary (printed by :func:`convert_dataset`)."""
        lines = []
        if self.converted:
            lines.append(f"{self.dataset}: converted {len(self.converted)} case(s) into {self.output_dir}")
        else:
            lines.append(f"{self.dataset}: nothing converted; any earlier output was left as it was.")
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)}:")
            lines.extend(f"  {name}: {reason}" for name, reason in self.skipped)
        lines.extend(f"note: {note}" for note in self.notes)
        if self.splits_file is not None:
            lines.append(f"wrote {self.splits_file} (nnU-Net's folds 0-4, paper split as fold 5)")
        if self.converted and self.output_dir is not None:
            dataset_id = self.output_dir.name[len("Dataset"):len("Dataset") + 3]
            lines.append(f"next: nnUNetv2_plan_and_preprocess -d {int(dataset_id)} --verify_dataset_integrity")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Entry point.
# --------------------------------------------------------------------------------------------------

def convert_dataset(
    name: str,
    source: Path,
    dataset_id: int,
    raw_root: Optional[Path] = None,
    force: bool = False,
    paper_split: bool = False,
    preprocessed_root: Optional[Path] = None,
    num_processes: Optional[int] = None,
) -> ConversionReport:
    """Convert one public dataset into ``<raw_root>/DatasetXXX_<Name>`` (nnU-Net v2 raw format).

    Args:
        name: dataset key, one of :data:`DATASETS` (btcv flare22 mmwhs amos22 brats luna16 covid19).
        source: the folder as the dataset's download unpacks it (or a folder up to two levels above it).
        dataset_id: nnU-Net dataset ID (1..999).
        raw_root: nnU-Net raw folder; default ``$nnUNet_raw``.
        force: replace an existing output dataset (and an existing ``splits_final.json``).
        paper_split: also write ``splits_final.json``: nnU-Net's 5 folds plus the paper's
            train/validation split as fold 5 (labelled datasets only).
        preprocessed_root: nnU-Net preprocessed folder for ``splits_final.json``; default
            ``$nnUNet_preprocessed``.
        num_processes: worker processes for nnU-Net's MSD converter; default min(4, CPUs).

    Returns:
        The report; ``report.exit_code()`` is the command's exit status. A summary is printed.

    Raises:
        UserError: unknown dataset, missing or unrecognised source layout, existing output without
            ``force``, a dataset ID taken by another dataset, or an impossible ``paper_split``.
    """
    spec = _spec(name)
    source = Path(source)
    if not source.is_dir():
        raise UserError(f"{source} is not a folder. Pass the folder the {spec.title} download unpacks to "
                        f"({spec.layout_hint}).")
    raw_root = nnunet_folder("raw", raw_root)
    if spec.kind == "unlabeled":
        if paper_split:
            raise UserError(f"--paper-split applies to the labelled downstream datasets; {spec.title} is unlabeled "
                            f"pretraining data. Drop --paper-split.")
        check_dataset_free(raw_root, dataset_id, spec.folder_name, force, protected=[source])
        return _convert_unlabeled(spec, source, dataset_id, raw_root, force)  # register_unlabeled prints its summary
    staging = DatasetStaging(raw_root, dataset_id, spec.folder_name, force=force, protected=[source])
    folder = staging.destination.name
    splits_target = _splits_target(folder, preprocessed_root, force) if paper_split else None
    listing = LISTERS[spec.kind](spec, source)
    report = _convert_labelled(spec, listing, staging, int(dataset_id), num_processes)
    if report.converted and splits_target is not None:
        _write_paper_split(spec, listing, report, splits_target)
    elif report.converted and force:
        _note_stale_splits(report, folder, preprocessed_root)
    print(report.describe())
    return report


def _splits_target(folder: str, preprocessed_root: Optional[Path], force: bool) -> Path:
    """Where --paper-split writes; refused when it exists and ``force`` is False."""
    target = nnunet_folder("preprocessed", preprocessed_root) / folder / "splits_final.json"
    if target.exists() and not force:
        raise UserError(f"{target} already exists. Pass --force to replace it, or convert without --paper-split.")
    return target


def _convert_labelled(spec: DatasetSpec, listing: Listing, staging: DatasetStaging, dataset_id: int,
                      num_processes: Optional[int]) -> ConversionReport:
    """Build the dataset in ``staging`` with the spec's writer; move it into place if any case made it.

    Args:
        spec: the dataset.
        listing: the cases found by the spec's lister (its problems go into the report).
        staging: the claimed output folder ``<raw_root>/DatasetXXX_Name`` (not yet entered).
        dataset_id: the nnU-Net dataset ID.
        num_processes: passed to the writer.
    """
    report = ConversionReport(dataset=spec.key, skipped=list(listing.problems))
    with staging:
        WRITERS[spec.kind](spec, listing, staging.path, dataset_id, report, num_processes)
        if report.converted:
            report.output_dir = staging.commit()
    return report


def _note_stale_splits(report: ConversionReport, folder: str, preprocessed_root: Optional[Path]) -> None:
    """After a --force re-conversion, point at a splits_final.json of the earlier output."""
    try:
        stale = nnunet_folder("preprocessed", preprocessed_root) / folder / "splits_final.json"
    except UserError:
        return
    if stale.is_file():
        report.notes.append(f"{stale} is from an earlier conversion; nnU-Net keeps using it. Delete it (or rerun with "
                            f"--paper-split --force) if the cases changed.")


def _spec(name: str) -> DatasetSpec:
    key = str(name).lower().replace("-", "")
    if key not in DATASETS:
        raise UserError(f"Unknown dataset {name!r}. Choose one of: {', '.join(DATASETS)}.")
    return DATASETS[key]


# --------------------------------------------------------------------------------------------------
# Finding the dataset root and the cases.
# --------------------------------------------------------------------------------------------------

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
        level = [c for d in level for c in _subfolders(d)]
    raise UserError(f"No {spec.title} data found in {source}. Expected {spec.layout_hint}. Download {spec.source_hint} "
                    f"and pass the folder it unpacks to.")


def _subfolders(folder: Path) -> List[Path]:
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


def list_paired(spec: DatasetSpec, source: Path) -> Listing:
    """Cases of a dataset with one image and one label file per case, named by number.

    Args:
        spec: a spec with a :class:`PairedLayout`.
        source: the folder the user passed.
    """
    layout = spec.layout
    root = locate_root(source, lambda d: bool(match_template(d, layout.image)), spec)
    images = match_template(root, layout.image)
    labels = match_template(root, layout.label)
    cases, problems = [], []
    for num in sorted(images):
        case_id = layout.case_id.format(num=num)
        if num not in labels:
            problems.append((case_id, f"{images[num]} has no label file {root / layout.label.format(num=num)}; "
                                      f"restore it from the download."))
            continue
        cases.append(Case(case_id, (images[num],), labels[num]))
    for num in sorted(set(labels) - set(images)):
        problems.append((layout.case_id.format(num=num),
                         f"{labels[num]} has no image {root / layout.image.format(num=num)}; restore it from the download."))
    return Listing(root, cases, problems)


def _load_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"Cannot read {path}: {error}. Restore it from the download.")


def _require_keys(meta: dict, keys: Sequence[str], path: Path) -> None:
    missing = [k for k in keys if k not in meta]
    if missing:
        raise UserError(f"{path} lacks {missing}; it does not look like the published file. Restore it from the download.")


def _require_label_table(meta_labels: Mapping, spec: DatasetSpec, path: Path) -> None:
    try:
        values = sorted(int(k) for k in meta_labels)
    except (TypeError, ValueError):
        values = None
    if values != sorted(spec.labels.values()):
        raise UserError(f"{path} lists labels {dict(meta_labels)}; the {spec.title} release has "
                        f"{sorted(spec.labels.values())}. Use the published release.")


def list_amos(spec: DatasetSpec, source: Path) -> Listing:
    """AMOS22 CT cases as nnU-Net's task-1 converter reads them (dataset.json, imagesTr/Va, labelsTr/Va).

    Args:
        spec: the AMOS22 spec.
        source: the folder the user passed.
    """
    root = locate_root(source, lambda d: (d / "dataset.json").is_file() and (d / "imagesTr").is_dir(), spec)
    meta = _load_json(root / "dataset.json")
    _require_keys(meta, ("labels", "training", "validation", "test"), root / "dataset.json")
    _require_label_table(meta["labels"], spec, root / "dataset.json")
    cases, problems = [], []
    for group, key, images, labels in (("train", "training", "imagesTr", "labelsTr"),
                                        ("val", "validation", "imagesVa", "labelsVa")):
        for entry in meta[key]:
            ident = _amos_identifier(entry)
            if ident is None or _amos_number(ident) > AMOS_LAST_CT_ID:
                continue
            image, label = root / images / f"{ident}.nii.gz", root / labels / f"{ident}.nii.gz"
            missing = [str(p) for p in (image, label) if not p.is_file()]
            if missing:
                problems.append((ident, f"listed in dataset.json['{key}'] but missing: {missing}; restore from the download."))
                continue
            cases.append(Case(ident, (image,), label, group))
    tests = []
    for entry in meta["test"]:
        ident = _amos_identifier(entry)
        if ident is not None and _amos_number(ident) <= AMOS_LAST_CT_ID:
            path = root / "imagesTs" / f"{ident}.nii.gz"
            if path.is_file():
                tests.append(path)
    return Listing(root, cases, problems, metadata=meta, test_images=tests)


def _amos_identifier(entry) -> Optional[str]:
    image = entry.get("image") if isinstance(entry, dict) else entry
    if not isinstance(image, str) or not image.endswith(".nii.gz"):
        return None
    return image.split("/")[-1][: -len(".nii.gz")]


def _amos_number(identifier: str) -> int:
    try:
        return int(identifier.split("_")[-1])
    except ValueError:
        return AMOS_LAST_CT_ID + 1


def _nifti_files(folder: Path) -> Dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {p.name: p for p in sorted(folder.iterdir())
            if p.is_file() and p.name.endswith(".nii.gz") and not p.name.startswith((".", "_"))}


def list_msd(spec: DatasetSpec, source: Path) -> Listing:
    """Cases of a Medical Segmentation Decathlon task as nnU-Net's MSD converter reads them.

    Args:
        spec: an MSD spec (``msd_task`` set).
        source: the folder the user passed.
    """
    root = locate_root(source, lambda d: all((d / s).exists() for s in ("dataset.json", "imagesTr", "labelsTr")), spec)
    meta = _load_json(root / "dataset.json")
    _require_keys(meta, ("modality", "labels"), root / "dataset.json")
    _require_label_table(meta["labels"], spec, root / "dataset.json")
    if len(meta["modality"]) != len(spec.channels):
        raise UserError(f"{root / 'dataset.json'} lists modalities {meta['modality']}; {spec.title} has "
                        f"{len(spec.channels)} ({list(spec.channels.values())}). Use the published release.")
    images, labels = _nifti_files(root / "imagesTr"), _nifti_files(root / "labelsTr")
    cases, problems = [], []
    for name in sorted(images):
        case_id = name[: -len(".nii.gz")]
        if name not in labels:
            problems.append((case_id, f"{images[name]} has no label {root / 'labelsTr' / name}; restore it from the download."))
            continue
        cases.append(Case(case_id, (images[name],), labels[name]))
    for name in sorted(set(labels) - set(images)):
        problems.append((name[: -len(".nii.gz")], f"{labels[name]} has no image {root / 'imagesTr' / name}; "
                                                  f"restore it from the download."))
    tests = list(_nifti_files(root / "imagesTs").values())
    return Listing(root, cases, problems, metadata=meta, test_images=tests)


# --------------------------------------------------------------------------------------------------
# Per-case checks.
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Geometry:
    """Spatial header of an image, reduced to its first three axes.

    ``channels`` is the size of a 4th axis (MSD stores its MRI channels that way), else 1;
    ``components`` the values per voxel (1 for scalar images).
    """

    size: Tuple[int, ...]
    spacing: Tuple[float, ...]
    origin: Tuple[float, ...]
    direction: Tuple[float, ...]
    dimension: int = 3
    channels: int = 1
    components: int = 1

    def describe(self) -> str:
        """E.g. ``3D`` or ``4D with 4 channels``, for messages."""
        text = f"{self.dimension}D" + (f" with {self.channels} channels" if self.dimension == 4 else "")
        return text + (f", {self.components} values per voxel" if self.components != 1 else "")


def _geometry(dimension: int, size, spacing, origin, direction, components: int = 1) -> Geometry:
    matrix = np.asarray(direction, dtype=float).reshape(dimension, dimension)[:3, :3]
    channels = int(size[3]) if dimension == 4 else 1
    return Geometry(tuple(int(s) for s in size[:3]), tuple(spacing[:3]), tuple(origin[:3]),
                    tuple(matrix.ravel()), dimension, channels, int(components))


def channel_problem(geometry: Geometry, channels: int) -> Optional[str]:
    """Why an image does not have the expected layout, or None.

    Args:
        geometry: the image's geometry.
        channels: expected channels: 1 means a 3D scalar image, more a 4D image with that many
            volumes along the 4th axis (the MSD layout nnU-Net's converter splits).
    """
    if channels == 1:
        ok = geometry.dimension == 3 and geometry.components == 1
        expected = "3D single-channel images"
    else:
        ok = geometry.dimension == 4 and geometry.channels == channels and geometry.components == 1
        expected = f"4D images with {channels} channels"
    return None if ok else f"is {geometry.describe()}; expected {expected}"


def read_geometry(path: Path) -> Geometry:
    """The geometry of an image file, from its header only.

    Args:
        path: any file SimpleITK reads (NIfTI, MHA/MHD, NRRD).

    Raises:
        RuntimeError: SimpleITK cannot read the header.
    """
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return _geometry(reader.GetDimension(), reader.GetSize(), reader.GetSpacing(), reader.GetOrigin(),
                     reader.GetDirection(), reader.GetNumberOfComponents())


def image_geometry(image: sitk.Image) -> Geometry:
    """The geometry of a loaded SimpleITK image."""
    return _geometry(image.GetDimension(), image.GetSize(), image.GetSpacing(), image.GetOrigin(),
                     image.GetDirection(), image.GetNumberOfComponentsPerPixel())


def geometry_mismatch(image: Geometry, label: Geometry) -> Optional[str]:
    """Why ``label`` does not lie on ``image``'s voxel grid, or None if it does (within the tolerances).

    Args:
        image: geometry of the image (first three axes).
        label: geometry of the label.
    """
    if image.size != label.size:
        return f"image size {image.size} != label size {label.size}"
    if not np.allclose(label.spacing, image.spacing, rtol=SPACING_RTOL, atol=SPACING_ATOL):
        return f"image spacing {_fmt(image.spacing)} != label spacing {_fmt(label.spacing)}"
    if not np.allclose(label.origin, image.origin, rtol=0, atol=ORIGIN_ATOL_MM):
        return f"image origin {_fmt(image.origin)} != label origin {_fmt(label.origin)} (tolerance {ORIGIN_ATOL_MM} mm)"
    if not np.allclose(label.direction, image.direction, rtol=0, atol=DIRECTION_ATOL):
        return f"image direction {_fmt(image.direction)} != label direction {_fmt(label.direction)}"
    return None


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def label_values(array: np.ndarray, slab: int = 16) -> Tuple[np.ndarray, Optional[str]]:
    """The distinct values of a label array, or why they are not usable labels.

    Works through ``slab`` slices of axis 0 at a time, so that a 512x512x300 label needs no
    full-size integer copy.

    Args:
        array: label voxels.
        slab: slices per step.

    Returns:
        ``(values, problem)``; ``problem`` names non-finite or non-integer values, else None.
    """
    if array.dtype.kind not in "iubf":
        return np.array([], dtype=np.int64), f"label has unsupported voxel type {array.dtype}"
    found = set()
    for start in range(0, max(array.shape[0], 1), slab):
        chunk = array[start:start + slab]
        if chunk.size == 0:
            continue
        if chunk.dtype.kind == "f":
            if not np.all(np.isfinite(chunk)):
                return np.array([], dtype=np.int64), "label contains NaN/inf values"
            if not np.array_equal(np.rint(chunk), chunk):
                return np.array([], dtype=np.int64), "label contains non-integer values"
        chunk = chunk.astype(np.int64)
        low, high = int(chunk.min()), int(chunk.max())
        if low >= 0 and high < 1 << 16:
            found.update(np.flatnonzero(np.bincount(chunk.ravel())).tolist())
        else:
            found.update(np.unique(chunk).tolist())
    return np.array(sorted(found), dtype=np.int64), None


def remap_labels(array: np.ndarray, source_values: Mapping[int, int]) -> np.ndarray:
    """Map source label values to output values (all values must be keys of ``source_values``).

    Args:
        array: label voxels with integral, non-negative values (checked by :func:`label_values`).
        source_values: ``{value in the source: value in the output}``.

    Returns:
        A uint8 array.
    """
    lut = np.zeros(max(source_values) + 1, dtype=np.uint8)
    for src, dst in source_values.items():
        lut[src] = dst
    index = array if array.dtype.kind in "iu" else array.astype(np.int32)  # bool would mask, float cannot index
    return lut[index]


@dataclass
class Inspected:
    """A case that passed the checks: the image geometry and the loaded label."""

    geometry: Geometry
    label: np.ndarray


def inspect_case(case: Case, spec: DatasetSpec) -> Tuple[Optional[Inspected], Optional[str]]:
    """Check a case: files readable, image channels, image/label geometry, label values.

    Args:
        case: the case.
        spec: its dataset (expected channels and label values).

    Returns:
        ``(inspected, None)`` if the case passes, else ``(None, reason)``; the reason names the
        file and what to do.
    """
    try:
        geometry = read_geometry(case.images[0])
    except RuntimeError as error:
        return None, f"cannot read {case.images[0]} ({_first_line(error)}); re-download it."
    try:
        label_image = sitk.ReadImage(str(case.label))
    except RuntimeError as error:
        return None, f"cannot read {case.label} ({_first_line(error)}); re-download it."
    problem = channel_problem(geometry, len(spec.channels))
    if problem:
        return None, f"{case.images[0]} {problem} ({spec.title}); re-download it."
    problem = geometry_mismatch(geometry, image_geometry(label_image))
    if problem:
        return None, f"geometry mismatch: {problem} ({case.images[0]} vs {case.label}); fix the header or leave the case out."
    array = sitk.GetArrayFromImage(label_image)
    values, problem = label_values(array)
    if problem:
        return None, f"{problem} in {case.label}; fix the file or leave the case out."
    unexpected = sorted(int(v) for v in values if int(v) not in spec.source_values)
    if unexpected:
        return None, (f"unexpected label value(s) {unexpected} in {case.label}; {spec.title} labels are "
                      f"{sorted(spec.source_values)}. Fix the file or leave the case out.")
    return Inspected(geometry, array), None


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def _progress(cases: Sequence[Case], spec: DatasetSpec, what: str):
    return tqdm(cases, desc=f"{spec.title}: {what}", unit="case", disable=None)


def _skip(report: ConversionReport, case_id: str, reason: str) -> None:
    report.skipped.append((case_id, reason))
    tqdm.write(f"skipped {case_id}: {reason}")


# --------------------------------------------------------------------------------------------------
# Writers.
# --------------------------------------------------------------------------------------------------

def write_native(spec: DatasetSpec, listing: Listing, out: Path, dataset_id: int, report: ConversionReport,
                 num_processes: Optional[int] = None) -> None:
    """Check and write each case, then dataset.json, into ``out``.

    Args:
        spec: the dataset.
        listing: cases found.
        out: the empty dataset folder to fill (inside the staging folder).
        dataset_id: unused (the folder name carries it).
        report: collects converted and skipped cases.
        num_processes: unused (one process; the work is I/O bound).
    """
    (out / "imagesTr").mkdir(parents=True)
    (out / "labelsTr").mkdir()
    for case in _progress(listing.cases, spec, "converting"):
        inspected, problem = inspect_case(case, spec)
        if problem:
            _skip(report, case.case_id, problem)
            continue
        try:
            _write_case(case, inspected, spec, out)
        except (RuntimeError, OSError) as error:
            _remove_case(case.case_id, out)
            _skip(report, case.case_id, f"writing failed ({_first_line(error)}).")
            continue
        report.converted.append(case.case_id)
    if report.converted:
        _write_dataset_json(spec, out, len(report.converted))


def _write_case(case: Case, inspected: Inspected, spec: DatasetSpec, out: Path) -> None:
    image_out = out / "imagesTr" / f"{case.case_id}_0000.nii.gz"
    if case.images[0].name.endswith(".nii.gz"):
        shutil.copyfile(case.images[0], image_out)
    else:
        sitk.WriteImage(sitk.ReadImage(str(case.images[0])), str(image_out), True)
    label = sitk.GetImageFromArray(remap_labels(inspected.label, spec.source_values))
    label.SetSpacing(inspected.geometry.spacing)
    label.SetOrigin(inspected.geometry.origin)
    label.SetDirection(inspected.geometry.direction)
    sitk.WriteImage(label, str(out / "labelsTr" / f"{case.case_id}.nii.gz"), True)


def _remove_case(case_id: str, out: Path) -> None:
    for path in (out / "imagesTr" / f"{case_id}_0000.nii.gz", out / "labelsTr" / f"{case_id}.nii.gz"):
        path.unlink(missing_ok=True)


def _write_dataset_json(spec: DatasetSpec, out: Path, num_training: int) -> None:
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    generate_dataset_json(
        str(out), dict(spec.channels), dict(spec.labels), num_training, ".nii.gz",
        dataset_name=out.name, reference=spec.reference, release=spec.source_hint,
        license=f"See the terms of use of {spec.source_hint}.", converted_by="nnunet-subfore convert",
        description=f"{spec.title} converted by `nnunet-subfore convert {spec.key}`.",
    )


def _check_for_nnunet(spec: DatasetSpec, listing: Listing, report: ConversionReport) -> List[Case]:
    """The cases that pass :func:`inspect_case` (the others go to the report)."""
    passed = []
    for case in _progress(listing.cases, spec, "checking"):
        _, problem = inspect_case(case, spec)
        if problem:
            _skip(report, case.case_id, problem)
        else:
            passed.append(case)
    return passed


def _link(source: Path, target: Path) -> None:
    """Make ``target`` show ``source`` without touching it: a symlink, else a hard link, else a copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    for make in (os.symlink, os.link, shutil.copyfile):
        try:
            make(os.path.abspath(source), target)
            return
        except OSError:
            continue
    raise UserError(f"Cannot link or copy {source} into {target.parent}; check that {target.parent} is writable.")


@contextmanager
def _nnunet_raw_env(raw: Path) -> Iterator[None]:
    """Point nnU-Net's folders at ``raw`` only, while one of its converters runs.

    nnunetv2 >= 2.8 reads ``nnUNet_raw`` & co. from the environment when used (``nnunetv2.paths``),
    so setting the variables redirects its converters into our staging folder. Preprocessed and
    results are hidden so that its "ID already taken" check sees the staging folder only; our own
    check (:func:`nnunet_subfore.data.staging.check_dataset_free`) ran before.
    """
    names = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
    saved = {n: os.environ.get(n) for n in names}
    os.environ["nnUNet_raw"] = str(raw)
    os.environ.pop("nnUNet_preprocessed", None)
    os.environ.pop("nnUNet_results", None)
    try:
        yield
    finally:
        for n, value in saved.items():
            if value is None:
                os.environ.pop(n, None)
            else:
                os.environ[n] = value


def _take_nnunet_output(spec: DatasetSpec, nnunet_raw: Path, out: Path, passed: Sequence[Case],
                        report: ConversionReport) -> None:
    """Rename what nnU-Net's converter wrote to ``out`` and record the converted cases.

    Args:
        spec: the dataset.
        nnunet_raw: the folder nnU-Net's converter wrote into (one dataset folder).
        out: the empty dataset folder that nnU-Net's output replaces.
        passed: the cases handed to the converter; any it did not write are reported.
        report: collects converted and skipped cases.
    """
    produced = [p for p in nnunet_raw.iterdir() if p.is_dir()]
    if len(produced) != 1:
        raise RuntimeError(f"nnU-Net's converter for {spec.title} wrote {produced} into {nnunet_raw}, expected one folder.")
    out.rmdir()
    produced[0].rename(out)
    meta = json.loads((out / "dataset.json").read_text())
    meta["name"] = out.name
    (out / "dataset.json").write_text(json.dumps(meta, indent=4))
    written = sorted(p.name[: -len(".nii.gz")] for p in (out / "labelsTr").glob("*.nii.gz"))
    report.converted.extend(written)
    for case in passed:
        if case.case_id not in written:
            _skip(report, case.case_id, f"passed the checks but nnU-Net's converter did not write it ({case.label}).")


def write_with_nnunet_amos(spec: DatasetSpec, listing: Listing, out: Path, dataset_id: int,
                           report: ConversionReport, num_processes: Optional[int] = None) -> None:
    """Check the AMOS cases, then run nnU-Net's ``convert_amos_task1`` on a view of those that passed.

    Args:
        spec: the AMOS22 spec.
        listing: from :func:`list_amos`.
        out: the empty dataset folder to fill; its parent (the staging folder) holds the view and
            nnU-Net's raw output.
        dataset_id: the ID nnU-Net's converter names its output with.
        report: collects converted and skipped cases.
        num_processes: unused (nnU-Net's AMOS converter copies files in one process).
    """
    passed = _check_for_nnunet(spec, listing, report)
    if not passed:
        return
    view = out.parent / "view" / "amos22"
    kept = {c.case_id for c in passed}
    for case in passed:
        image_dir, label_dir = ("imagesTr", "labelsTr") if case.group == "train" else ("imagesVa", "labelsVa")
        _link(case.images[0], view / image_dir / case.images[0].name)
        _link(case.label, view / label_dir / case.label.name)
    for path in listing.test_images:
        _link(path, view / "imagesTs" / path.name)
    tests = {p.name[: -len(".nii.gz")] for p in listing.test_images}
    meta = dict(listing.metadata)
    meta["training"] = [e for e in meta["training"] if _amos_identifier(e) in kept]
    meta["validation"] = [e for e in meta["validation"] if _amos_identifier(e) in kept]
    meta["test"] = [e for e in meta["test"] if _amos_identifier(e) in tests]
    (view / "dataset.json").write_text(json.dumps(meta, indent=4))
    for sub in ("imagesTr", "labelsTr", "imagesVa", "labelsVa", "imagesTs"):
        (view / sub).mkdir(parents=True, exist_ok=True)

    from importlib import import_module

    amos = import_module("nnunetv2.dataset_conversion.Dataset218_Amos2022_task1")
    nnunet_raw = out.parent / "nnunet_raw"
    nnunet_raw.mkdir()
    print(f"{spec.title}: running nnU-Net's converter (nnunetv2.dataset_conversion.Dataset218_Amos2022_task1) "
          f"on {len(passed)} checked case(s)...")
    with _nnunet_raw_env(nnunet_raw):
        amos.convert_amos_task1(str(view), dataset_id)
    _take_nnunet_output(spec, nnunet_raw, out, passed, report)


def write_with_nnunet_msd(spec: DatasetSpec, listing: Listing, out: Path, dataset_id: int,
                          report: ConversionReport, num_processes: Optional[int] = None) -> None:
    """Check the MSD cases, then run nnU-Net's ``convert_msd_dataset`` on a view of those that passed.

    Args:
        spec: an MSD spec.
        listing: from :func:`list_msd`.
        out: the empty dataset folder to fill; its parent (the staging folder) holds the view and
            nnU-Net's raw output.
        dataset_id: the ID nnU-Net's converter names its output with.
        report: collects converted and skipped cases.
        num_processes: worker processes for nnU-Net's converter (it splits the 4D images in a
            spawn pool); default min(4, CPUs).
    """
    passed = _check_for_nnunet(spec, listing, report)
    if not passed:
        return
    view = out.parent / "view" / spec.msd_task  # the converter parses TaskXX_Name from the folder name
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (view / sub).mkdir(parents=True)
    for case in passed:
        _link(case.images[0], view / "imagesTr" / case.images[0].name)
        _link(case.label, view / "labelsTr" / case.label.name)
    for path in listing.test_images:
        _link(path, view / "imagesTs" / path.name)
    meta = dict(listing.metadata)
    meta["numTraining"] = len(passed)
    meta.setdefault("training", [])
    meta.setdefault("test", [])
    (view / "dataset.json").write_text(json.dumps(meta, indent=4))

    from nnunetv2.dataset_conversion.convert_MSD_dataset import convert_msd_dataset

    processes = num_processes or max(1, min(4, os.cpu_count() or 1))
    nnunet_raw = out.parent / "nnunet_raw"
    nnunet_raw.mkdir()
    print(f"{spec.title}: running nnU-Net's MSD converter (nnunetv2.dataset_conversion.convert_MSD_dataset) "
          f"on {len(passed)} checked case(s) and {len(listing.test_images)} test image(s)...")
    with _nnunet_raw_env(nnunet_raw):
        convert_msd_dataset(str(view), overwrite_target_id=dataset_id, num_processes=processes)
    _take_nnunet_output(spec, nnunet_raw, out, passed, report)


LISTERS: Dict[str, Callable[[DatasetSpec, Path], Listing]] = {
    "native": list_paired,
    "nnunet-amos": list_amos,
    "nnunet-msd": list_msd,
}
WRITERS: Dict[str, Callable[..., None]] = {
    "native": write_native,
    "nnunet-amos": write_with_nnunet_amos,
    "nnunet-msd": write_with_nnunet_msd,
}


# --------------------------------------------------------------------------------------------------
# Unlabeled pretraining collections.
# --------------------------------------------------------------------------------------------------

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
        root = locate_root(source, lambda d: any(_SUBSET.fullmatch(s.name) for s in _subfolders(d)), spec)
        subsets = [s for s in _subfolders(root) if _SUBSET.fullmatch(s.name)]
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


def _convert_unlabeled(spec: DatasetSpec, source: Path, dataset_id: int, raw_root: Path, force: bool) -> ConversionReport:
    """Layout check, then :func:`register_unlabeled` on the files that passed."""
    from nnunet_subfore.data.register import register_unlabeled

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


# --------------------------------------------------------------------------------------------------
# The paper's train/validation split.
# --------------------------------------------------------------------------------------------------

def paper_fold(case_ids: Sequence[str], paper: Tuple[int, int], groups: Optional[Mapping[str, str]] = None,
               seed: int = SPLIT_SEED) -> Tuple[Dict[str, List[str]], str]:
    """One train/validation split in the paper's proportions.

    With an official partition (``groups`` covering every case with both ``train`` and ``val``), that
    partition is the split. Otherwise the validation set is a seeded random ``round(n * val/(train+val))``
    cases (at least one, and at least one left for training): exactly the paper's counts when the
    dataset has the paper's number of cases, the paper's validation fraction otherwise.

    Args:
        case_ids: the converted cases.
        paper: the paper's ``(train, validation)`` counts.
        groups: official ``{case_id: "train"|"val"}`` partition, if the source has one.
        seed: seed of the random choice.

    Returns:
        ``({"train": [...], "val": [...]}, note)``; ``note`` explains any deviation from the paper.

    Raises:
        ValueError: fewer than two cases.
    """
    ids = sorted(case_ids)
    if len(ids) < 2:
        raise ValueError("a train/validation split needs at least two cases")
    n_train, n_val = paper
    if groups and set(groups) >= set(ids) and {groups[i] for i in ids} == {"train", "val"}:
        fold = {"train": [i for i in ids if groups[i] == "train"], "val": [i for i in ids if groups[i] == "val"]}
        note = (f"paper split = the source's official train/validation partition: "
                f"{len(fold['train'])}/{len(fold['val'])} (paper: {n_train}/{n_val}).")
        return fold, note
    fraction = n_val / (n_train + n_val)
    count = min(max(int(round(len(ids) * fraction)), 1), len(ids) - 1)
    chosen = set(np.random.RandomState(seed).permutation(len(ids))[:count].tolist())
    fold = {"train": [c for k, c in enumerate(ids) if k not in chosen], "val": [c for k, c in enumerate(ids) if k in chosen]}
    if len(ids) == n_train + n_val:
        note = f"paper split {len(fold['train'])}/{len(fold['val'])} as in the paper."
    else:
        note = (f"the paper used {n_train}/{n_val} cases; this dataset has {len(ids)}, so the paper split keeps the "
                f"paper's validation fraction ({fraction:.0%}): {len(fold['train'])}/{len(fold['val'])}.")
    return fold, note


def paper_splits(case_ids: Sequence[str], paper: Tuple[int, int], groups: Optional[Mapping[str, str]] = None
                 ) -> Tuple[List[Dict[str, List[str]]], str]:
    """nnU-Net's five folds (as ``nnUNetTrainer.do_split`` makes them) followed by the paper split as fold 5.

    Args:
        case_ids: the converted cases.
        paper: the paper's ``(train, validation)`` counts.
        groups: official partition, see :func:`paper_fold`.

    Raises:
        ValueError: fewer than five cases (nnU-Net's 5-fold split needs five).
    """
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    ids = [str(i) for i in np.sort(list(case_ids))]
    if len(ids) < 5:
        raise ValueError(f"nnU-Net's 5-fold split needs at least 5 cases, got {len(ids)}")
    splits = generate_crossval_split(ids, seed=SPLIT_SEED, n_splits=5)
    splits = [{"train": [str(i) for i in s["train"]], "val": [str(i) for i in s["val"]]} for s in splits]
    fold, note = paper_fold(ids, paper, groups)
    return splits + [fold], note


def _write_paper_split(spec: DatasetSpec, listing: Listing, report: ConversionReport, target: Path) -> None:
    groups = {c.case_id: c.group for c in listing.cases if c.group}
    try:
        splits, note = paper_splits(report.converted, spec.paper_split, groups or None)
    except ValueError as error:
        report.skipped.append(("paper split", f"{error}; splits_final.json not written."))
        return
    text = json.dumps(splits, indent=4)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    (report.output_dir / "splits_final.json").write_text(text)
    report.splits_file = target
    report.notes.append(note + " Train with fold 5 for the paper split (nnUNetv2_train ... 5).")
