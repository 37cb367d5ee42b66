"""Content fingerprints of images: the leakage guard between pretraining and evaluation.

The paper's authors pretrain on all BTCV images and validate on BTCV's test images, so evaluation
cases are seen during pretraining. A user who registers the same scans for pretraining and for
evaluation, renamed or in another format, gets no warning from nnU-Net. A *fingerprint* here is a
hash of an image's voxels, independent of file name and format:

- the image is reoriented to LPS (:func:`SimpleITK.DICOMOrient`), so a flipped or permuted storage
  order of the same scan gives the same voxel order;
- the voxels are cast to float32 (int16 in a ``.nii.gz`` and in a ``.mha`` give the same bytes;
  NIfTI scaling is applied by SimpleITK when it reads);
- the hash covers the shape and the spacing rounded to 1/1000 mm (NIfTI stores spacing as float32,
  MetaImage as text) and the voxel bytes; the origin and the file's metadata are left out.

The same scan resampled, cropped or re-quantized gives another fingerprint: the fingerprint finds copies.
:func:`nnunet_subfore.data.overlap.check_overlap` also finds near-duplicates (crops, resamples, rescaled or reoriented copies) with
the descriptors of :mod:`nnunet_subfore.data.near_duplicates`, both computed once per file by
:class:`nnunet_subfore.data.fingerprint_store.FingerprintStore`. Cases are read from a raw dataset through its own ``dataset.json`` (nnU-Net's
``get_filenames_of_train_images_and_targets``); a case is shared when any of its channel images has
the fingerprint of an image of the other set.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import SimpleITK as sitk

from nnunet_subfore.data.ct_io import read_image
from nnunet_subfore.errors import UserError

#: Fingerprint scheme, stored with every record (a record of another scheme is not compared).
FINGERPRINT_SCHEME = "subfore-voxels-v1: LPS, float32, shape, spacing rounded to 0.001 mm, blake2b-128"
#: Key of the fingerprints in a pretraining checkpoint, and the file that the pretraining trainers
#: write into their fold folder.
CHECKPOINT_KEY = "subfore_pretraining_fingerprints"
PRETRAINING_FINGERPRINTS_FILE = "pretraining_fingerprints.json"
#: The file that the fine-tuning trainers write into their fold folder.
OVERLAP_FILE = "pretraining_overlap.json"

CaseFingerprints = Dict[str, List[str]]


def image_fingerprint(image: sitk.Image) -> str:
    """The content fingerprint of one image (see the module's docstring)."""
    oriented = sitk.DICOMOrient(image, "LPS") if image.GetDimension() == 3 else image
    voxels = np.ascontiguousarray(sitk.GetArrayViewFromImage(oriented), dtype="<f4")
    h = hashlib.blake2b(digest_size=16)
    header = {
        "shape": list(voxels.shape),
        "components": oriented.GetNumberOfComponentsPerPixel(),
        "spacing": [round(float(s), 3) for s in oriented.GetSpacing()],
    }
    h.update(json.dumps(header, sort_keys=True).encode())
    h.update(voxels.tobytes())
    return h.hexdigest()


def file_fingerprint(path: Union[str, Path]) -> str:
    """The fingerprint of an image file (or DICOM folder), read by :func:`nnunet_subfore.data.ct_io.read_image`."""
    return image_fingerprint(read_image(path))


def dataset_cases(raw_folder: Path) -> Dict[str, List[Path]]:
    """``{case: [channel image files]}`` of a raw dataset's training cases, as nnU-Net lists them."""
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

    raw_folder = Path(raw_folder)
    if not (raw_folder / "dataset.json").is_file():
        raise UserError(f"{raw_folder} holds no dataset.json: not an nnU-Net raw dataset.")
    dataset_json = json.loads((raw_folder / "dataset.json").read_text(encoding="utf-8"))
    try:
        files = get_filenames_of_train_images_and_targets(str(raw_folder), dataset_json)
    except (OSError, KeyError) as e:
        raise UserError(f"Cannot list the training cases of {raw_folder}: {e}") from e
    return {case: [Path(p) for p in entry["images"]] for case, entry in sorted(files.items())}


def folder_cases(folder: Path, file_ending: Optional[str] = None) -> Dict[str, List[Path]]:
    """``{case: [files]}`` of a folder of images: nnU-Net's ``CASE_XXXX<ending>`` channel files are grouped
    into their case; other image files (and DICOM series folders) are one case each, named by the file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder of images.")
    cases: Dict[str, List[Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        name = path.name
        if file_ending and name.endswith(file_ending):
            stem = name[: -len(file_ending)]
        else:
            stem = re.sub(r"(\.nii\.gz|\.nii|\.mha|\.mhd|\.nrrd|\.nhdr|\.dcm)$", "", name, flags=re.IGNORECASE)
            if stem == name and path.is_file():
                continue  # not an image file (e.g. a .raw beside its .mhd, a README)
        match = re.fullmatch(r"(.+)_\d{4}", stem)
        cases.setdefault(match.group(1) if match else stem, []).append(path)
    if not cases:
        raise UserError(f"{folder} holds no image files.")
    return cases


def fingerprint_cases(cases: Mapping[str, Sequence[Path]],
                      progress: Optional[Callable[[str], None]] = None, store=None) -> CaseFingerprints:
    """``{case: [fingerprint per channel file]}``; ``progress`` is called with each case name. With a
    :class:`~nnunet_subfore.data.fingerprint_store.FingerprintStore`, stored fingerprints are reused."""
    out: CaseFingerprints = {}
    for case, files in cases.items():
        if progress is not None:
            progress(case)
        out[case] = [file_fingerprint(p) if store is None else store.exact(p) for p in files]
    return out


def fingerprint_record(fingerprints: CaseFingerprints, dataset: str, **extra) -> dict:
    """What a pretraining run stores: the scheme, the dataset and ``{case: [fingerprints]}``, as plain JSON
    values only (nnU-Net's split keys can be numpy strings, which a safe checkpoint load refuses)."""
    record = {"scheme": FINGERPRINT_SCHEME, "dataset": dataset, "cases": dict(fingerprints), **extra}
    return json.loads(json.dumps(record, default=str))


def record_fingerprints(record: Mapping) -> CaseFingerprints:
    """The ``{case: [fingerprints]}`` of a stored record; refuses a record of another scheme.

    A continued pretraining run's record also lists the sets of the runs it continued from (``earlier``): their
    cases are included as ``DATASET/case``, so a fine-tuning run checks against every image the weights have seen.
    """
    cases: CaseFingerprints = {}
    for i, part in enumerate([record, *record.get("earlier", [])]):
        if part.get("scheme") != FINGERPRINT_SCHEME:
            raise UserError(f"The stored fingerprints use the scheme {part.get('scheme')!r}, not "
                            f"{FINGERPRINT_SCHEME!r}; they cannot be compared.")
        prefix = "" if i == 0 else f"{part.get('dataset')}/"
        cases.update({f"{prefix}{k}": [str(f) for f in v] for k, v in part["cases"].items()})
    return cases


@dataclass
class SharedCase:
    """A case of one set whose image(s) also occur in the other.

    Attributes:
        case: the case's name in the checked set.
        role: which part of the checked set it belongs to (e.g. ``"validation"``, ``"imagesTs"``).
        seen_as: the names of the reference (pretraining) cases with an identical image (for a near-duplicate:
            the best-scoring one).
        kind: ``exact``, or what the near-duplicate is (:func:`nnunet_subfore.data.near_duplicates.match_kind`:
            ``crop``, ``resample``, ``reorientation``, ``intensity``).
        score: 1.0 for an exact copy, else the descriptors' NCC.
    """

    case: str
    role: str
    seen_as: List[str]
    kind: str = "exact"
    score: float = 1.0

    def describe(self) -> str:
        how = "exact copy" if self.kind == "exact" else f"near-duplicate: {self.kind}, score {self.score:.3f}"
        return f"  {self.role} case {self.case}: seen in pretraining as {', '.join(self.seen_as)} ({how})"


@dataclass
class OverlapReport:
    """Which cases of a checked set share an image with a reference set.

    Attributes:
        reference: name of the reference set (the pretraining dataset).
        checked: ``{role: number of cases checked}``.
        shared: the shared cases.
    """

    reference: str
    checked: Dict[str, int] = field(default_factory=dict)
    shared: List[SharedCase] = field(default_factory=list)
    near_skipped: List[str] = field(default_factory=list)

    def shared_in(self, role: str) -> List[SharedCase]:
        return [s for s in self.shared if s.role == role]

    def describe(self) -> str:
        checked = ", ".join(f"{n} {role}" for role, n in self.checked.items())
        if not self.shared:
            lines = [f"No case of {checked} shares an image with {self.reference}."]
        else:
            lines = [f"{len(self.shared)} case(s) of {checked} share an image with {self.reference}:"]
            lines += [s.describe() for s in self.shared]
        if self.near_skipped:
            from nnunet_subfore.data.near_duplicates import MIN_EXTENT_MM

            lines.append(f"Checked for exact copies only ({len(self.near_skipped)}: {', '.join(self.near_skipped[:5])}"
                         f"{', ...' if len(self.near_skipped) > 5 else ''}): smaller than "
                         f"{' x '.join(f'{m:g}' for m in MIN_EXTENT_MM)} mm (z, y, x), too small a field for the "
                         f"near-duplicate search to tell a crop from an unrelated scan.")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"scheme": FINGERPRINT_SCHEME, "reference": self.reference, "cases_checked": self.checked,
                "shared": [{"case": s.case, "role": s.role, "seen_in_pretraining_as": s.seen_as, "kind": s.kind,
                            "score": s.score} for s in self.shared],
                "near_search_skipped": list(self.near_skipped)}


def find_shared(reference: CaseFingerprints, checked: Mapping[str, CaseFingerprints],
                reference_name: str) -> OverlapReport:
    """Compare ``{role: {case: [fingerprints]}}`` with the reference cases.

    Args:
        reference: ``{case: [fingerprints]}`` of the pretraining cases.
        checked: per role (``"training"``, ``"validation"``, a folder name) the cases to check.
        reference_name: names the reference in messages.
    """
    by_print: Dict[str, List[str]] = {}
    for case, prints in reference.items():
        for fp in prints:
            by_print.setdefault(fp, []).append(case)
    report = OverlapReport(reference_name)
    for role, cases in checked.items():
        report.checked[role] = len(cases)
        for case, prints in cases.items():
            seen = sorted({ref for fp in prints for ref in by_print.get(fp, [])})
            if seen:
                report.shared.append(SharedCase(case, role, seen))
    return report


def split_roles(fingerprints: CaseFingerprints, train_keys: Sequence[str],
                val_keys: Sequence[str]) -> Dict[str, CaseFingerprints]:
    """``{"validation": ..., "training": ...}`` of a fold (a case in both, as with fold ``all``, counts as validation)."""
    val = set(val_keys)
    return {
        "validation": {k: fingerprints[k] for k in val_keys if k in fingerprints},
        "training": {k: fingerprints[k] for k in train_keys if k in fingerprints and k not in val},
    }


def raw_dataset_folder(raw_root: Union[str, Path, None], dataset_name: str) -> Optional[Path]:
    """``raw_root/dataset_name`` if it holds a ``dataset.json``, else None (raw data not on this machine)."""
    if not raw_root:
        return None
    folder = Path(raw_root) / dataset_name
    return folder if (folder / "dataset.json").is_file() else None

