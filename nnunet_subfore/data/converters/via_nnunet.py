"""AMOS22 and MSD BraTS through nnU-Net's own converters.

We check the source first (:func:`nnunet_subfore.data.converters.checks.inspect_case`) and hand
nnU-Net's converter a *view* of it (links to the files of the cases that passed, plus the metadata
it reads), so one bad case is reported instead of a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence

from nnunet_subfore.data.converters.checks import inspect_case
from nnunet_subfore.data.converters.layout import Case, Listing, locate_root
from nnunet_subfore.data.converters.report import ConversionReport, case_progress, skip_case
from nnunet_subfore.data.converters.specs import DatasetSpec
from nnunet_subfore.errors import UserError


AMOS_LAST_CT_ID = 500
"""AMOS numbers its CT scans 1..500 and its MRI scans above; nnU-Net's task-1 converter keeps CT only."""


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


def _check_for_nnunet(spec: DatasetSpec, listing: Listing, report: ConversionReport) -> List[Case]:
    """The cases that pass :func:`inspect_case` (the others go to the report)."""
    passed = []
    for case in case_progress(listing.cases, spec, "checking"):
        _, problem = inspect_case(case, spec)
        if problem:
            skip_case(report, case.case_id, problem)
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
            skip_case(report, case.case_id, f"passed the checks but nnU-Net's converter did not write it ({case.label}).")


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
