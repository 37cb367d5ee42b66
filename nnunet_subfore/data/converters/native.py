"""Our own writer (BTCV, FLARE22, MM-WHS): one image and one label file per case, named by number;
each case is read, checked, its labels remapped, and written."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Mapping, Optional

import numpy as np
import SimpleITK as sitk

from nnunet_subfore.data.converters.checks import Inspected, inspect_case
from nnunet_subfore.data.ct_io import sitk_message
from nnunet_subfore.data.converters.layout import Case, Listing, locate_root, match_template
from nnunet_subfore.data.converters.report import ConversionReport, case_progress, skip_case
from nnunet_subfore.data.converters.specs import DatasetSpec


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
    for case in case_progress(listing.cases, spec, "converting"):
        inspected, problem = inspect_case(case, spec)
        if problem:
            skip_case(report, case.case_id, problem)
            continue
        try:
            _write_case(case, inspected, spec, out)
        except (RuntimeError, OSError) as error:
            _remove_case(case.case_id, out)
            skip_case(report, case.case_id, f"writing failed ({sitk_message(error)}).")
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
