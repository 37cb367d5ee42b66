"""Synthetic CT phantoms in Hounsfield units, and writers for nnU-Net raw datasets made of them.

A phantom looks like the CT people pretrain on (:mod:`nnunet_subfore.data.phantom_anatomy` draws it):
a field of view wider than the body, a patient table, optional arms, large lungs, bone, fat, bowel,
textured organs with labels (1 liver, 2 spleen, 3 kidneys), and case-to-case variety in body size
and position, scan range, voxel spacing, noise, contrast phase and scanner offset, drawn from a
:class:`~nnunet_subfore.data.phantom_variety.PhantomVariety` (``"wide"`` or ``"narrow"``; see
:data:`VARIETIES`). The same seed and variety give the same phantom. ``docs/datasets.md``
("Synthetic CT phantoms") says what they model, what they do not, and their foreground share.

Arrays are in SimpleITK's numpy order ``(z, y, x)``; index 0 along z is the inferior end (with an
identity direction, z grows toward the head in LPS), so the trachea reaches the last slice: what
real chest CT looks like, and why :func:`nnunet_subfore.data.body_mask.body_mask` fills holes slice
by slice. Everything is vectorized numpy; a 64^3 phantom takes about 0.2 s.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from nnunet_subfore.data.body_mask import DEFAULT_THRESHOLD
from nnunet_subfore.data.phantom_anatomy import LABELS, render
from nnunet_subfore.data.phantom_variety import HU, VARIETIES, PhantomCase, PhantomVariety, draw_case, resolve_variety
from nnunet_subfore.data.register import body_label, write_body_dataset_json
from nnunet_subfore.data.staging import DatasetStaging
from nnunet_subfore.errors import UserError
from nnunet_subfore.paths import nnunet_folder

__all__ = ["FILE_FORMATS", "HU", "LABELS", "PHANTOMS_FILE", "VARIETIES", "PhantomVariety", "heldout_cases",
           "make_phantom", "phantom_case", "to_sitk", "write_labelled_dataset", "write_phantom_dataset",
           "write_unlabeled_images"]

Shape = Tuple[int, int, int]
Spacing = Tuple[float, float, float]
Variety = Union[str, PhantomVariety]

FILE_FORMATS = ("nii.gz", "mha")

#: Written into every phantom dataset: the seed, the varieties and each case's drawn settings.
PHANTOMS_FILE = "subfore_phantoms.json"

_UNLABELED_STREAM = 1  # unlabeled datasets draw their cases from another seed stream than labelled ones


def phantom_case(seed: int, shape: Sequence[int] = (64, 64, 64), spacing: Optional[Sequence[float]] = None,
                 variety: Variety = "wide") -> PhantomCase:
    """The settings drawn for one phantom (spacing, contrast phase, organ HU, noise, body, ...), without its voxels.

    Args: as :func:`make_phantom`.
    """
    shape = _check_shape(shape)
    spacing = None if spacing is None else _check_spacing(spacing)
    return draw_case(int(seed), shape, resolve_variety(variety), spacing)


def make_phantom(
    seed: int,
    shape: Sequence[int] = (64, 64, 64),
    spacing: Optional[Sequence[float]] = None,
    variety: Variety = "wide",
) -> Tuple[np.ndarray, np.ndarray, Spacing]:
    """One synthetic CT volume with its organ labels.

    Args:
        seed: any non-negative integer; the same seed (and variety) gives the same phantom.
        shape: ``(z, y, x)`` size in voxels, each side at least 16.
        spacing: ``(z, y, x)`` voxel size in mm; None draws it from the variety (the in-plane spacing
            from its range, the slice thickness from its scan range and the slice count). Anatomy is laid
            out in mm relative to the field of view, so a phantom keeps air around the body at any spacing.
        variety: ``"wide"``, ``"narrow"`` (:data:`VARIETIES`) or a :class:`PhantomVariety`.

    Returns:
        ``(image, label, spacing)``: ``image`` int16 HU in ``(z, y, x)`` order, ``label`` uint8
        with :data:`LABELS` values, ``spacing`` a tuple of floats ``(z, y, x)``.

    Raises:
        ValueError: bad shape, spacing or variety.
    """
    case = phantom_case(seed, shape, spacing, variety)
    image, label = render(case)
    return image, label, case.spacing


def to_sitk(
    array: np.ndarray,
    spacing: Sequence[float],
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    direction: Optional[Sequence[float]] = None,
) -> sitk.Image:
    """A SimpleITK image from a ``(z, y, x)`` array and ``(z, y, x)`` spacing.

    Args:
        array: 3D array in SimpleITK numpy order.
        spacing: ``(z, y, x)`` voxel size in mm.
        origin: physical position of voxel ``(0, 0, 0)`` in SimpleITK's ``(x, y, z)`` order.
        direction: 9 numbers (row-major 3x3, SimpleITK's convention); identity if None.
    """
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in reversed(tuple(spacing))))
    image.SetOrigin(tuple(float(o) for o in origin))
    if direction is not None:
        image.SetDirection(tuple(float(d) for d in direction))
    return image


def write_labelled_dataset(
    raw_root: Union[str, Path],
    dataset_id: int,
    name: str,
    num_training: int,
    num_test: int = 0,
    seed: int = 0,
    shape: Sequence[int] = (64, 64, 64),
    spacing: Optional[Sequence[float]] = None,
    force: bool = False,
    variety: Variety = "wide",
    test_variety: Optional[Variety] = None,
    heldout_in_training_folder: bool = False,
) -> Path:
    """Write a complete labelled nnU-Net raw dataset of phantoms.

    Training cases go to ``imagesTr``/``labelsTr``, held-out cases to ``imagesTs``/``labelsTs``
    (case ``phantom_XXX``, numbered on from the training cases). Case ``i`` uses a seed derived
    from ``(seed, i)``, so two datasets with different ``seed`` share no phantom. ``subfore_phantoms.json``
    records each case's drawn settings and the names of the held-out cases (:func:`heldout_cases` reads them).

    Args:
        raw_root: the ``nnUNet_raw`` folder (created if missing).
        dataset_id: 1..999.
        name: dataset name (letters, digits, '-').
        num_training: number of training cases (>= 1).
        num_test: number of held-out cases.
        seed: base seed.
        shape: ``(z, y, x)`` size of each phantom.
        spacing: ``(z, y, x)`` voxel size in mm; None: drawn per case from its variety.
        force: replace an existing ``DatasetXXX_name``; without it that is refused. A dataset with this
            ID and another name is refused even with ``force`` (see :mod:`nnunet_subfore.data.staging`).
        variety: what the training cases are drawn from (:data:`VARIETIES` name or :class:`PhantomVariety`).
        test_variety: what the held-out cases are drawn from; None: ``variety``. A benchmark of label
            efficiency draws training cases from ``"narrow"`` and held-out cases from ``"wide"``.
        heldout_in_training_folder: the held-out cases go to ``imagesTr``/``labelsTr`` (for ``label-efficiency
            --heldout-cases`` with :func:`heldout_cases`); ``numTraining`` counts them.

    Returns:
        The dataset folder ``raw_root/DatasetXXX_name``.

    Raises:
        UserError: the dataset exists and ``force`` is False, or the ID is used by another dataset name.
        ValueError: bad counts, shape, spacing or variety.
    """
    if int(num_training) < 1 or int(num_test) < 0:
        raise ValueError(f"num_training must be at least 1 and num_test 0 or more, got {num_training} and {num_test}.")
    shape = _check_shape(shape)
    spacing = None if spacing is None else _check_spacing(spacing)
    train_variety = resolve_variety(variety)
    held_out_variety = train_variety if test_variety is None else resolve_variety(test_variety)
    with DatasetStaging(Path(raw_root), dataset_id, name, force=force) as staging:
        cases = _write_labelled_cases(staging.path, int(num_training), int(num_test), seed, shape, spacing,
                                      train_variety, held_out_variety, "Tr" if heldout_in_training_folder else "Ts")
        _write_labelled_dataset_json(staging.path, name, seed, int(num_training), int(num_test),
                                     heldout_in_training_folder)
        _write_record(staging.path, seed, {"training": train_variety, "test": held_out_variety}, cases,
                      heldout=list(cases)[int(num_training):])
        return staging.commit()


def _write_labelled_dataset_json(folder: Path, name: str, seed: int, num_training: int, num_test: int,
                                 heldout_in_training_folder: bool) -> None:
    """``dataset.json`` of a labelled phantom dataset; ``numTraining`` counts what ``imagesTr`` holds."""
    where = "imagesTr/labelsTr also hold" if heldout_in_training_folder else "imagesTs/labelsTs hold"
    description = (f"Synthetic CT phantoms (nnunet-subfore, seed {seed}): HU images with liver, spleen and kidney "
                   f"labels; {where} {num_test} held-out cases. Settings: {PHANTOMS_FILE}.")
    in_training_folder = num_training + (num_test if heldout_in_training_folder else 0)
    _write_json(folder / "dataset.json", {"channel_names": {"0": "CT"}, "labels": dict(LABELS),
                                          "numTraining": in_training_folder, "file_ending": ".nii.gz",
                                          "name": name, "description": description})


def heldout_cases(dataset_folder: Union[str, Path]) -> List[str]:
    """The held-out cases of a labelled phantom dataset (:func:`write_labelled_dataset`), from its
    ``subfore_phantoms.json``: with ``heldout_in_training_folder`` the cases of ``imagesTr`` to hold out.

    Raises:
        UserError: the folder holds no phantom record, or one written before held-out cases were recorded.
    """
    record_file = Path(dataset_folder) / PHANTOMS_FILE
    try:
        return list(json.loads(record_file.read_text(encoding="utf-8"))["heldout"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{record_file} names no held-out cases ({type(e).__name__}: {e}); write the dataset again "
                        f"with nnunet_subfore.data.phantoms.write_labelled_dataset.") from e


def _write_labelled_cases(folder: Path, num_training: int, num_test: int, seed: int, shape: Shape,
                          spacing: Optional[Spacing], train_variety: PhantomVariety,
                          held_out_variety: PhantomVariety, heldout_split: str = "Ts") -> Dict[str, dict]:
    """Draw, render and write the training (``Tr``) then held-out (``heldout_split``) cases; their drawn settings
    by case."""
    cases = {}
    for i in range(num_training + num_test):
        training = i < num_training
        case = draw_case(_case_seed(seed, i), shape, train_variety if training else held_out_variety, spacing)
        image, label = render(case)
        cases[f"phantom_{i:03d}"] = case.summary()
        _write_case(folder, "Tr" if training else heldout_split, f"phantom_{i:03d}", image, label, case.spacing)
    return cases


def write_unlabeled_images(
    folder: Union[str, Path],
    num_images: int,
    seed: int = 0,
    shape: Sequence[int] = (64, 64, 64),
    spacing: Optional[Sequence[float]] = None,
    file_format: str = "nii.gz",
    force: bool = False,
    variety: Variety = "wide",
) -> List[Path]:
    """Write phantom images (no labels) as a user's unlabeled CT collection would look.

    Files are ``ct_XXX.<file_format>`` with a seed-dependent origin (scanner coordinates), the
    kind of input :func:`nnunet_subfore.data.register.register_unlabeled` takes.

    Args:
        folder: output folder (created if missing).
        num_images: number of images (>= 1).
        seed: base seed; image ``i`` uses a seed derived from ``(seed, i)``.
        shape: ``(z, y, x)`` size of each image.
        spacing: ``(z, y, x)`` voxel size in mm; None: drawn per image from the variety.
        file_format: ``"nii.gz"`` or ``"mha"``.
        force: overwrite files of the same names; without it existing files are refused.
        variety: what the images are drawn from (:data:`VARIETIES` name or :class:`PhantomVariety`).

    Returns:
        The written paths, in order.
    """
    if file_format not in FILE_FORMATS:
        raise ValueError(f"file_format must be one of {FILE_FORMATS}, got {file_format!r}.")
    if int(num_images) < 1:
        raise ValueError(f"num_images must be at least 1, got {num_images}.")
    shape = _check_shape(shape)
    spacing = None if spacing is None else _check_spacing(spacing)
    variety = resolve_variety(variety)
    folder = Path(folder)
    paths = [folder / f"ct_{i:03d}.{file_format}" for i in range(int(num_images))]
    existing = [p for p in paths if p.exists()]
    if existing and not force:
        raise UserError(
            f"{existing[0]} already exists ({len(existing)} of the {len(paths)} files to write do). "
            f"Choose another folder or pass force=True to overwrite them."
        )
    folder.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(paths):
        case = draw_case(_case_seed(seed, i), shape, variety, spacing)
        image, _ = render(case)
        sitk.WriteImage(to_sitk(image, case.spacing, origin=_scanner_origin(case)), str(path), True)
    return paths


def write_phantom_dataset(
    dataset_id: int,
    name: str,
    num_cases: int,
    seed: int = 0,
    unlabeled: bool = False,
    raw_root: Optional[Union[str, Path]] = None,
    num_test: int = 0,
    variety: Variety = "wide",
    test_variety: Optional[Variety] = None,
    shape: Sequence[int] = (64, 64, 64),
    force: bool = False,
) -> Path:
    """A synthetic nnU-Net raw dataset (``nnunet-subfore phantoms``): organ labels, or body labels for pretraining.

    Args:
        dataset_id: 1..999.
        name: dataset name (letters, digits, '-').
        num_cases: training cases (>= 1).
        seed: base seed; the same arguments give the same dataset. Labelled and unlabeled datasets of one
            seed share no case.
        unlabeled: write a pretraining set: each image with its body mask as label 1, exactly as
            ``register-unlabeled`` writes it (same body mask, same ``dataset.json``); otherwise organ labels.
        raw_root: the nnU-Net raw folder; ``$nnUNet_raw`` if None.
        num_test: held-out cases (``imagesTs``/``labelsTs``, labelled datasets only).
        variety, test_variety: see :func:`write_labelled_dataset`.
        shape: ``(z, y, x)`` size of each phantom.
        force: replace an existing ``DatasetXXX_name`` (refused without it).

    Returns:
        The dataset folder.

    Raises:
        UserError: no raw root, the dataset exists and ``force`` is False, the ID is used by another name.
        ValueError: bad counts, shape or variety.
    """
    root = nnunet_folder("raw", raw_root)
    if not unlabeled:
        return write_labelled_dataset(root, dataset_id, name, num_cases, num_test=num_test, seed=seed, shape=shape,
                                      force=force, variety=variety, test_variety=test_variety)
    if int(num_test) != 0 or test_variety is not None:
        raise ValueError("an unlabeled (pretraining) dataset has no held-out cases: leave num_test and "
                         "test_variety unset.")
    if int(num_cases) < 1:
        raise ValueError(f"num_cases must be at least 1, got {num_cases}.")
    shape = _check_shape(shape)
    variety = resolve_variety(variety)
    with DatasetStaging(root, dataset_id, name, force=force) as staging:
        cases = {}
        for i in range(int(num_cases)):
            case = draw_case(_case_seed(seed, i, _UNLABELED_STREAM), shape, variety)
            image = to_sitk(render(case)[0], case.spacing, origin=_scanner_origin(case))
            cases[f"phantom_{i:03d}"] = case.summary()
            _write_case(staging.path, "Tr", f"phantom_{i:03d}", image, body_label(image, DEFAULT_THRESHOLD))
        write_body_dataset_json(staging.path, name, int(num_cases), DEFAULT_THRESHOLD, sources=PHANTOMS_FILE,
                                kind="Synthetic CT phantoms written")
        _write_record(staging.path, seed, {"training": variety}, cases)
        return staging.commit()


def _write_case(folder: Path, split: str, case: str, image, label, spacing: Optional[Spacing] = None) -> None:
    """Write one case's image (``_0000``) and label; arrays need ``spacing``, SimpleITK images carry theirs."""
    for sub, data, ending in ((f"images{split}", image, "_0000.nii.gz"), (f"labels{split}", label, ".nii.gz")):
        (folder / sub).mkdir(exist_ok=True)
        if isinstance(data, np.ndarray):
            data = to_sitk(data, spacing)
        sitk.WriteImage(data, str(folder / sub / f"{case}{ending}"), True)


def _write_record(folder: Path, seed: int, varieties: Dict[str, PhantomVariety], cases: Dict[str, dict],
                  heldout: Optional[List[str]] = None) -> None:
    """``subfore_phantoms.json``: the seed, the varieties (by name, or all their ranges), each case's settings and
    (labelled datasets) the held-out cases."""
    record = {"generator": "nnunet_subfore.data.phantoms", "seed": int(seed),
              "varieties": {split: _variety_record(v) for split, v in varieties.items()}, "cases": cases}
    if heldout is not None:
        record["heldout"] = list(heldout)
    _write_json(folder / PHANTOMS_FILE, record)


def _variety_record(variety: PhantomVariety) -> Union[str, dict]:
    for name, named in VARIETIES.items():
        if named == variety:
            return name
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(variety).items()}


def _write_json(path: Path, content: dict) -> None:
    path.write_text(json.dumps(content, indent=2) + "\n")


def _scanner_origin(case: PhantomCase) -> Tuple[float, float, float]:
    """A seed-dependent origin (SimpleITK ``(x, y, z)``): the volume's centre a few cm off the scanner's isocentre."""
    offset = np.random.default_rng(case.seed).uniform(-50.0, 50.0, size=3)
    extent = np.asarray(case.shape[::-1], dtype=float) * np.asarray(case.spacing[::-1])
    return tuple(float(o) for o in -extent / 2.0 + offset)


def _case_seed(seed: int, index: int, stream: int = 0) -> int:
    entropy = [int(seed), int(index)] + ([int(stream)] if stream else [])
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def _check_shape(shape: Sequence[int]) -> Shape:
    values = tuple(int(s) for s in shape)
    if len(values) != 3 or min(values) < 16:
        raise ValueError(f"shape must be three sides (z, y, x) of at least 16 voxels, got {tuple(shape)}.")
    return values  # type: ignore[return-value]


def _check_spacing(spacing: Sequence[float]) -> Spacing:
    values = tuple(float(s) for s in spacing)
    if len(values) != 3 or not all(s > 0 for s in values):
        raise ValueError(f"spacing must be three positive voxel sizes (z, y, x) in mm, got {tuple(spacing)}.")
    return values  # type: ignore[return-value]
