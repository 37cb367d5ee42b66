"""Register a collection of unlabeled CT volumes as an nnU-Net raw dataset for pretraining.

nnU-Net needs a label map per image, and takes its CT intensity statistics over labelled voxels
only (with no guard against empty label maps). Each registered volume therefore gets its body
mask as label 1 (:func:`nnunet_subfore.data.body_mask.body_mask`): the fingerprint then spans the
whole body, lungs included, and ``percentile_00_5`` lies near air, as the HU foreground masking
needs (``docs/intensity.md``).

Output, under ``raw_root/DatasetXXX_Name``::

    imagesTr/<case>_0000.nii.gz   the CT volume, geometry (spacing, origin, direction) preserved
    labelsTr/<case>.nii.gz        its body mask, uint8 label 1, same geometry
    dataset.json                  channel "CT", labels background/body
    subfore_registration.json     source file -> case, and the skipped files with reasons

The dataset folder is claimed through :class:`nnunet_subfore.data.staging.DatasetStaging`: an
existing ``DatasetXXX_Name`` is replaced only with ``force``, an ID used by another dataset name is
refused even then, and the dataset is written into a hidden folder beside its destination and moved
into place at the end, so an interrupted or failed run leaves any earlier dataset untouched.

At scale: ``num_processes`` workers register one volume each at a time (memory: one volume per
worker), and the work folder is resumable: the same command after a kill (at any moment) keeps the
finished cases and does the rest (:mod:`nnunet_subfore.data.register_journal`); ``force`` starts over.
``dataset.json`` is written last, then the folder is put in place in one rename. The content
fingerprints and near-duplicate descriptors of the leakage guard are computed while each volume is in
memory and kept in the fingerprint store (:mod:`nnunet_subfore.data.fingerprint_store`), so that
``check-overlap`` reads none of the registered images.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from nnunet_subfore.data.body_mask import DEFAULT_THRESHOLD, body_mask
from nnunet_subfore.data.ct_io import UnreadableImageError, read_image, sitk_message
from nnunet_subfore.data.fingerprint_store import FingerprintStore, default_store_folder
from nnunet_subfore.data.register_journal import (
    PARTIAL,
    RegistrationJournal,
    case_record,
    registered_records,
    write_json_atomically,
)
from nnunet_subfore.data.staging import DatasetStaging
from nnunet_subfore.errors import UserError
from nnunet_subfore.paths import dataset_folder_name, nnunet_folder
from nnunet_subfore.recipe import PAPER_MASKING

IMAGE_ENDINGS = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")
"""Single-file image formats read from folders (DICOM series are found separately)."""

DATA_ENDINGS = (".raw", ".zraw", ".raw.gz")
"""Pixel-data files that belong to a ``.mhd`` / ``.nhdr`` header; never read on their own."""

DICOM_ENDINGS = (".dcm", ".ima", ".dicom")

REGISTRATION_FILE = "subfore_registration.json"

#: A CT volume in HU has air: its 0.5th intensity percentile lies below the air/body boundary.
AIR_BODY_BOUNDARY_HU = DEFAULT_THRESHOLD

_SAMPLE_VOXELS = 1_000_000  # voxels sampled for the CT plausibility check


@dataclass
class RegistrationReport:
    """What :func:`register_unlabeled` did.

    Args:
        output_dir: the dataset folder (not written when nothing was registered).
        registered: ``(case_id, source)`` per registered volume; a DICOM series' source is its folder.
        skipped: ``(source, reason)`` per volume or file that was not registered.
        notes: ``(source, remark)`` per registered volume worth a look (e.g. smaller than one masking subvolume).
    """

    output_dir: Path
    registered: List[Tuple[str, Path]] = field(default_factory=list)
    skipped: List[Tuple[Path, str]] = field(default_factory=list)
    notes: List[Tuple[Path, str]] = field(default_factory=list)

    def exit_code(self) -> int:
        """0: nothing skipped; 1: some skipped, at least one registered; 2: nothing registered."""
        if not self.registered:
            return 2
        return 1 if self.skipped else 0


@dataclass(frozen=True)
class _Volume:
    """One input volume: an image file, or a DICOM series (its folder plus the series' files)."""

    path: Path
    name_parts: Tuple[str, ...]
    dicom_files: Tuple[str, ...] = ()
    series_uid: str = ""

    def read(self) -> sitk.Image:
        return read_image(self.path, self.dicom_files)


def register_unlabeled(
    sources: Sequence[Union[str, Path]],
    dataset_id: int,
    name: str,
    raw_root: Optional[Union[str, Path]] = None,
    force: bool = False,
    body_threshold: float = DEFAULT_THRESHOLD,
    progress: bool = True,
    num_processes: int = 1,
    store_folder: Optional[Union[str, Path]] = None,
) -> RegistrationReport:
    """Register unlabeled CT volumes as ``DatasetXXX_Name`` with body masks as labels.

    Inputs are files or folders (searched recursively, hidden entries ignored): NIfTI (``.nii``,
    ``.nii.gz``), MetaImage (``.mha``, ``.mhd``), NRRD (``.nrrd``, ``.nhdr``) and DICOM series
    (any folder holding DICOM files; each series a volume). Case names are the source folder's
    name plus the path below it, reduced to letters, digits and '-', with a counter on collision.
    Unreadable files, images that are not 3D single-channel volumes, intensities that are not CT
    in HU (no air, or a [0, 1] / non-negative range) and empty body masks are skipped and
    reported by name; the rest is registered.

    Args:
        sources: files and folders to register; they are only read.
        dataset_id: nnU-Net dataset ID, 1..999.
        name: dataset name (letters, digits, '-').
        raw_root: the nnU-Net raw folder; ``$nnUNet_raw`` if None.
        force: replace an existing ``DatasetXXX_name``, and start an unfinished registration of it over; refused
            without it. A dataset with this ID and another name is refused even with ``force`` (see
            :mod:`nnunet_subfore.data.staging`).
        body_threshold: HU above which a voxel may be body (see :func:`body_mask`).
        progress: show a progress bar with an ETA (on stderr).
        num_processes: worker processes, each registering one volume at a time (1: in this process).
        store_folder: the fingerprint store to fill (default: the default store folder).

    Returns:
        A :class:`RegistrationReport`; a short summary naming skipped files is printed.

    Raises:
        UserError: bad ID or name, a missing source, no raw root, the dataset exists and ``force``
            is False, the ID is used by another dataset name, the output and an input overlap, an unfinished
            registration of this dataset had other inputs, or ``num_processes`` < 1.
    """
    if int(num_processes) < 1:
        raise UserError(f"-np must be at least 1 (got {num_processes}).")
    folder_name = dataset_folder_name(dataset_id, name)
    root = nnunet_folder("raw", raw_root)
    sources = _checked_sources(sources)
    staging = DatasetStaging(root, dataset_id, name, force=force, protected=sources, resumable=True)
    volumes, skipped = _collect_volumes(sources)
    report = RegistrationReport(output_dir=staging.destination, skipped=skipped)
    if not volumes:
        _print_summary(report, dataset_id, body_threshold, found_any=bool(skipped))
        return report
    cases = _case_names(volumes)
    plan = {"body_threshold_hu": float(body_threshold),
            "volumes": [{"case": c, "source": str(v.path), "dicom_series_uid": v.series_uid} for v, c in zip(volumes, cases)]}
    store = str(Path(store_folder) if store_folder is not None else default_store_folder())
    with staging:
        journal = RegistrationJournal(staging.path, plan, staging.destination)
        records = _register_missing(journal, volumes, cases, float(body_threshold), store, int(num_processes),
                                    progress, folder_name)
        _fill_report(report, records)
        if not report.registered:
            staging.discard()
        else:
            journal.remove()
            _write_registration_file(staging.path, folder_name, body_threshold, registered_records(records),
                                     report.skipped)
            write_body_dataset_json(staging.path, name, len(report.registered), body_threshold)  # last
            staging.commit()
    _print_summary(report, dataset_id, body_threshold, found_any=True)
    return report


def _register_missing(journal: RegistrationJournal, volumes: Sequence[_Volume], cases: Sequence[str], threshold: float,
                      store: str, num_processes: int, progress: bool, folder_name: str) -> List[dict]:
    """Register the volumes the journal has no record of (with a progress bar and an ETA); every volume's record,
    in the order of ``cases``."""
    done = journal.records()
    if done:
        print(f"Resuming the registration of {folder_name}: {len(done)} of {len(volumes)} volume(s) done earlier.")
    tasks = [(v, c, journal.folder, threshold, store) for v, c in zip(volumes, cases) if c not in done]
    with tqdm(total=len(volumes), initial=len(done), desc=f"register {folder_name}", unit="volume",
              disable=not progress) as bar:
        for record in _run_tasks(tasks, num_processes):
            journal.finish(record)
            bar.update()
    records = journal.records()
    return [records[c] for c in cases]


def _run_tasks(tasks: Sequence[tuple], num_processes: int):
    """The journal record of each task, as it finishes (in this process, or in a pool of worker processes)."""
    if num_processes == 1 or len(tasks) <= 1:
        yield from map(_register_task, tasks)
        return
    with multiprocessing.get_context("spawn").Pool(min(num_processes, len(tasks))) as pool:
        yield from pool.imap_unordered(_register_task, tasks, chunksize=1)


def _register_task(task: tuple) -> dict:
    """Register one volume (a worker's unit of work): its journal record."""
    volume, case, folder, threshold, store = task
    reason = _register_volume(volume, Path(folder), case, threshold, FingerprintStore(store))
    note = None if reason else _small_volume_note(Path(folder) / "imagesTr" / f"{case}_0000.nii.gz")
    return case_record(case, volume.path, reason, note, volume.series_uid)


def _fill_report(report: RegistrationReport, records: Sequence[dict]) -> None:
    for record in records:
        source = Path(record["source"])
        if "skipped" in record:
            report.skipped.append((source, record["skipped"]))
            continue
        report.registered.append((record["case"], source))
        if record.get("note"):
            report.notes.append((source, record["note"]))


def _checked_sources(sources: Sequence[Union[str, Path]]) -> List[Path]:
    """``sources`` as Paths; a UserError when there are none or one does not exist."""
    sources = [Path(s) for s in sources]
    if not sources:
        raise UserError("No inputs given: pass the files or folders of unlabeled CT to register.")
    for source in sources:
        if not source.exists():
            raise UserError(f"Input {source} does not exist. Check the path.")
    return sources


def _write_registration_file(folder: Path, folder_name: str, threshold: float, records: List[dict],
                             skipped: Sequence[Tuple[Path, str]]) -> None:
    """``subfore_registration.json``: the dataset, the body threshold, source -> case, and the skipped files with reasons."""
    registration = {
        "dataset": folder_name,
        "body_threshold_hu": float(threshold),
        "registered": records,
        "skipped": [{"source": str(p), "reason": r} for p, r in skipped],
    }
    write_json_atomically(folder / REGISTRATION_FILE, registration)


def _register_volume(volume: _Volume, folder: Path, case: str, threshold: float,
                     store: Optional[FingerprintStore] = None) -> Optional[str]:
    """Write one case into ``folder`` (each file under a temporary name, then renamed: complete or absent) and
    its fingerprints into ``store``; return None, or the reason it was skipped."""
    try:
        image = volume.read()
    except UnreadableImageError as e:
        return f"unreadable: {e}"
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    if image.GetDimension() != 3:
        return f"not a 3D volume ({image.GetDimension()}D image of size {image.GetSize()})"
    if image.GetNumberOfComponentsPerPixel() != 1:
        return (
            f"{image.GetNumberOfComponentsPerPixel()} components per voxel ({image.GetPixelIDTypeAsString()}); "
            f"CT has one intensity per voxel"
        )
    if min(image.GetSize()) < 2:
        return f"a single slice (size {image.GetSize()}), not a volume"
    hu = sitk.GetArrayViewFromImage(image)
    reason = _not_ct_reason(hu)
    if reason is not None:
        return reason
    del hu
    label = body_label(image, threshold)
    if label is None:
        return f"empty body mask: no voxel above {threshold:g} HU"
    image_file = folder / "imagesTr" / f"{case}_0000.nii.gz"
    label_file = folder / "labelsTr" / f"{case}.nii.gz"
    written = []
    try:
        for content, path in ((label, label_file), (image, image_file)):
            partial = path.with_name(f".{path.name}{PARTIAL}{os.getpid()}.nii.gz")
            written.append(partial)
            sitk.WriteImage(content, str(partial), True)
            os.replace(partial, path)
    except RuntimeError as e:
        for path in (*written, image_file, label_file):
            path.unlink(missing_ok=True)
        return f"could not be written as NIfTI: {sitk_message(e)}"
    if store is not None:
        store.put(image_file, image)
    return None


def body_label(image: sitk.Image, threshold: float = DEFAULT_THRESHOLD) -> Optional[sitk.Image]:
    """The label image registered with a CT volume: its body mask (:func:`body_mask`) as uint8 label 1, same geometry.

    Args:
        image: a 3D CT volume in HU.
        threshold: HU above which a voxel may be body.

    Returns:
        The label image, or None when no voxel lies above ``threshold`` (such a volume is not registered).
    """
    mask = body_mask(sitk.GetArrayViewFromImage(image), threshold)
    if not mask.any():
        return None
    label = sitk.GetImageFromArray(mask.astype(np.uint8))
    label.CopyInformation(image)
    return label


def _small_volume_note(image_file: Path) -> Optional[str]:
    """A remark for a volume smaller than one masking subvolume along some axis (nnU-Net pads it; is it a scan?)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(image_file))
    reader.ReadImageInformation()
    size = reader.GetSize()
    side = PAPER_MASKING.subvolume_size
    if min(size) >= side:
        return None
    return (f"only {' x '.join(map(str, size))} voxels, fewer than one {side}^3 masking subvolume along some axis "
            f"(before nnU-Net resamples it): a thumbnail or a localizer rather than a scan? Remove it if so.")


def _not_ct_reason(hu: np.ndarray) -> Optional[str]:
    """None if the intensities look like CT in Hounsfield units, else why not."""
    flat = hu.reshape(-1)
    sample = flat[:: max(1, flat.size // _SAMPLE_VOXELS)].astype(np.float32)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return "no finite intensities (all NaN or infinite)"
    low, high = (float(v) for v in np.percentile(sample, [0.5, 99.5]))
    if low == high and low >= 0.0:
        return (f"the same intensity {low:.4g} in every voxel: an empty image, or NaN/inf voxels (SimpleITK reads "
                f"them as 0); not a CT scan")
    if low >= 0.0 and high <= 1.0:
        return f"intensities in [{low:.3g}, {high:.3g}]: normalized values, not CT in Hounsfield units"
    if low >= 0.0:
        return (
            f"no negative intensities (0.5th percentile {low:.4g}): MRI-like, or CT stored without its "
            f"rescale intercept; not Hounsfield units"
        )
    if low > AIR_BODY_BOUNDARY_HU:
        return (
            f"no air: 0.5th intensity percentile {low:.4g} is above {AIR_BODY_BOUNDARY_HU:g} HU; not CT in Hounsfield "
            f"units, or cropped to inside the body"
        )
    return None


def _collect_volumes(sources: Sequence[Path]) -> Tuple[List[_Volume], List[Tuple[Path, str]]]:
    """All volumes under ``sources`` (deduplicated, in a stable order), and inputs skipped on sight."""
    volumes: List[_Volume] = []
    skipped: List[Tuple[Path, str]] = []
    seen = set()

    def add(volume: _Volume, key) -> None:
        if key not in seen:
            seen.add(key)
            volumes.append(volume)

    for source in sources:
        source = Path(os.path.abspath(source))  # absolute, but names as the user gave them (no symlink resolution)
        if source.is_file():
            kind = _file_kind(source.name)
            if kind == "image":
                add(_Volume(source, (source.parent.name, _strip_ending(source.name))), source.resolve())
            elif kind == "data":
                skipped.append((source, "a pixel-data file: pass its .mhd or .nhdr header instead"))
            elif kind in ("dicom", "unknown-no-ending"):
                series = [s for s in _dicom_series(source.parent, (source.parent.name,)) if str(source) in s.dicom_files]
                if series:
                    add(series[0], (source.parent.resolve(), series[0].series_uid))
                else:
                    skipped.append((source, "not a readable DICOM image"))
            else:
                skipped.append(
                    (source, f"unsupported file type (supported: {', '.join(IMAGE_ENDINGS)}, DICOM folders)")
                )
            continue
        for dirpath, dirnames, filenames in os.walk(source):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            folder = Path(dirpath)
            prefix = (source.name, *folder.relative_to(source).parts)
            dicom_candidates = []
            for filename in sorted(f for f in filenames if not f.startswith(".")):
                kind = _file_kind(filename)
                if kind == "image":
                    path = folder / filename
                    add(_Volume(path, (*prefix, _strip_ending(filename))), path.resolve())
                elif kind in ("dicom", "unknown-no-ending"):
                    dicom_candidates.append(filename)
            if dicom_candidates:
                series = _dicom_series(folder, prefix)
                for volume in series:
                    add(volume, (folder.resolve(), volume.series_uid))
                named = [f for f in dicom_candidates if _file_kind(f) == "dicom"]
                if not series and named:
                    skipped.append((folder, f"{len(named)} DICOM file(s) but no readable DICOM series"))
    return volumes, skipped


def _dicom_series(folder: Path, name_parts: Tuple[str, ...]) -> List[_Volume]:
    """The DICOM series in ``folder`` (not its subfolders), one volume each, ordered by series UID."""
    warnings_shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # GDCM warns about every folder without a series
    try:
        uids = sorted(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    except RuntimeError:
        return []
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warnings_shown)
    volumes = []
    for index, uid in enumerate(uids):
        files = tuple(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
        parts = name_parts + ((f"series{index + 1}",) if len(uids) > 1 else ())
        volumes.append(_Volume(folder, parts, dicom_files=files, series_uid=uid))
    return volumes


def _file_kind(filename: str) -> str:
    """'image', 'data', 'dicom', 'unknown-no-ending' (may be DICOM) or 'unknown'."""
    lower = filename.lower()
    if lower.endswith(IMAGE_ENDINGS):
        return "image"
    if lower.endswith(DATA_ENDINGS):
        return "data"
    if lower.endswith(DICOM_ENDINGS):
        return "dicom"
    suffix = Path(lower).suffix
    if suffix == "" or suffix[1:].isdigit():  # DICOM files often have no ending, or end in a UID part
        return "unknown-no-ending"
    return "unknown"


def _strip_ending(filename: str) -> str:
    lower = filename.lower()
    for ending in IMAGE_ENDINGS:
        if lower.endswith(ending):
            return filename[: -len(ending)]
    return filename


def _case_names(volumes: Sequence[_Volume]) -> List[str]:
    """Unique case IDs made of ``[A-Za-z0-9-]``; a counter (``-2``, ``-3``, ...) resolves collisions."""
    used = set()
    names = []
    for volume in volumes:
        base = re.sub(r"[^A-Za-z0-9-]+", "-", "-".join(p for p in volume.name_parts if p))
        base = re.sub(r"-{2,}", "-", base).strip("-") or "case"
        candidate, counter = base, 1
        while candidate.lower() in used:  # case-insensitive: file systems may be
            counter += 1
            candidate = f"{base}-{counter}"
        used.add(candidate.lower())
        names.append(candidate)
    return names


def write_body_dataset_json(folder: Path, name: str, num_training: int, threshold: float,
                            sources: str = REGISTRATION_FILE, kind: str = "Unlabeled CT registered") -> None:
    """Write the ``dataset.json`` of a body-labelled pretraining dataset (labels background/body).

    Args:
        folder: the dataset folder.
        name: the dataset name.
        num_training: number of cases.
        threshold: the body threshold (HU) the labels were made with.
        sources: the file in the dataset folder that lists where the cases came from.
        kind: how the description starts (what the images are).
    """
    dataset_json = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "body": 1},
        "numTraining": int(num_training),
        "file_ending": ".nii.gz",
        "name": name,
        "description": (
            f"{kind} by nnunet-subfore for masked-image-modeling pretraining. labelsTr "
            f"holds body masks, not anatomy: label 1 = body (above {threshold:g} HU, largest connected "
            "component, holes filled slice by slice so lungs and airways count). They make nnU-Net's CT "
            f"intensity statistics span the whole body, air included. Sources: {sources}."
        ),
    }
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=2) + "\n")


def _print_summary(report: RegistrationReport, dataset_id: int, threshold: float, found_any: bool) -> None:
    n_reg, n_skip = len(report.registered), len(report.skipped)
    if n_reg:
        print(
            f"Registered {n_reg} of {n_reg + n_skip} volume(s) as {report.output_dir.name} in {report.output_dir.parent} "
            f"(labels: body masks above {threshold:g} HU)."
        )
    elif found_any:
        print(f"Nothing registered: every input was skipped; {report.output_dir} was not written.")
    else:
        print(
            f"Nothing registered: no image files or DICOM series found in the inputs (looked for "
            f"{', '.join(IMAGE_ENDINGS)} and DICOM); {report.output_dir} was not written."
        )
    if n_skip:
        print(f"Skipped {n_skip}:")
        for path, reason in report.skipped:
            print(f"  {path}: {reason}")
    if report.notes:
        print(f"Registered, but look at {len(report.notes)}:")
        for path, note in report.notes:
            print(f"  {path}: {note}")
    if n_reg:
        print(f"Next: nnUNetv2_plan_and_preprocess -d {int(dataset_id)} -c 3d_fullres --verify_dataset_integrity")
