"""Synthetic CT phantoms in Hounsfield units, and writers for nnU-Net raw datasets made of them.

A phantom is a torso-like volume: air outside an elliptic body cylinder, a subcutaneous fat layer,
a muscle wall, an abdominal cavity (visceral fat and bowel), lungs in the upper part joined by
bronchi to a trachea that leaves through the top end of the volume, a heart between the lungs, a
spine, and labelled organs below the diaphragm (1 liver, 2 spleen, 3 kidneys). Boundaries are
soft (about one voxel wide) and gaussian noise is added. Positions, sizes and the body shape vary
with the seed; the same seed gives the same phantom.

Arrays are in SimpleITK's numpy order ``(z, y, x)``; index 0 along z is the inferior end (with
an identity direction, z grows toward the head in LPS), so the trachea reaches the last slice.
The trachea reaching the volume's end is deliberate: it is what real chest CT looks like and why
:func:`nnunet_subfore.data.body_mask.body_mask` fills holes slice by slice.

Everything is vectorized numpy; a 64^3 phantom takes a few tens of milliseconds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from nnunet_subfore.data.staging import DatasetStaging
from nnunet_subfore.errors import UserError

Shape = Tuple[int, int, int]
Spacing = Tuple[float, float, float]

LABELS: Dict[str, int] = {"background": 0, "liver": 1, "spleen": 2, "kidneys": 3}
"""The phantoms' label map, as written into ``dataset.json``."""

HU = {
    "air": -1000.0,
    "fat": -100.0,
    "muscle": 40.0,
    "cavity": -50.0,  # visceral fat and bowel, a mix
    "lung": -850.0,
    "heart": 40.0,
    "bone": 700.0,
    "liver": 60.0,
    "spleen": 45.0,
    "kidneys": 30.0,
}
"""Mean intensity of each tissue (HU). Gaussian noise of 10-20 HU comes on top."""

FILE_FORMATS = ("nii.gz", "mha")

_EDGE_VOXELS = 0.35  # logistic width of the soft boundaries, in voxels


def make_phantom(
    seed: int,
    shape: Sequence[int] = (64, 64, 64),
    spacing: Sequence[float] = (1.5, 1.5, 1.5),
) -> Tuple[np.ndarray, np.ndarray, Spacing]:
    """One synthetic CT volume with its organ labels.

    Args:
        seed: any non-negative integer; the same seed gives the same phantom.
        shape: ``(z, y, x)`` size in voxels, each side at least 16.
        spacing: ``(z, y, x)`` voxel size in mm (returned as given; the anatomy is laid out in
            voxels, so a phantom fills its volume whatever the spacing).

    Returns:
        ``(image, label, spacing)``: ``image`` int16 HU in ``(z, y, x)`` order, ``label`` uint8
        with :data:`LABELS` values, ``spacing`` a tuple of floats ``(z, y, x)``.
    """
    shape = _check_shape(shape)
    spacing = _check_spacing(spacing)
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    hz, hy, hx = (nz - 1) / 2.0, (ny - 1) / 2.0, (nx - 1) / 2.0
    # voxel coordinates centred on the volume, as open grids that broadcast to (z, y, x)
    z = (np.arange(nz, dtype=np.float32) - hz).reshape(-1, 1, 1)
    y = (np.arange(ny, dtype=np.float32) - hy).reshape(1, -1, 1)
    x = (np.arange(nx, dtype=np.float32) - hx).reshape(1, 1, -1)
    zn = z / hz  # -1 (inferior end) .. +1 (superior end)

    image = np.full(shape, HU["air"], dtype=np.float32)
    label = np.zeros(shape, dtype=np.uint8)

    def paint(alpha: np.ndarray, value: float, label_value: Optional[int] = 0) -> None:
        nonlocal image
        image = image + alpha * (np.float32(value) - image)
        if label_value is not None:
            label[np.broadcast_to(alpha > 0.5, shape)] = label_value

    # body: elliptic cylinder, slightly tapered along z, off-centre by a few voxels
    by = rng.uniform(0.62, 0.80) * hy  # semi-axes in voxels (y is anterior-posterior)
    bx = rng.uniform(0.80, 0.92) * hx
    cy = rng.uniform(-0.04, 0.04) * hy
    cx = rng.uniform(-0.04, 0.04) * hx
    taper = 1.0 + rng.uniform(-0.06, 0.06) * zn
    r_body = np.sqrt(((y - cy) / (by * taper)) ** 2 + ((x - cx) / (bx * taper)) ** 2)
    scale = min(by, bx) * taper  # voxels per unit of r_body
    fat = rng.uniform(0.07, 0.14)
    wall = rng.uniform(0.06, 0.10)
    paint(_soft((1.0 - r_body) * scale), HU["fat"], None)
    paint(_soft((1.0 - fat - r_body) * scale), HU["muscle"], None)
    cavity = _soft((1.0 - fat - wall - r_body) * scale)
    paint(cavity, HU["cavity"], None)

    def body_point(zf: float, yf: float, xf: float) -> Tuple[float, float, float]:
        """Voxel coordinates of a point given as fractions of the half-length (z) and body semi-axes (y, x)."""
        return zf * hz, cy + yf * by, cx + xf * bx

    def organ(zf, yf, xf, sz, sy, sx) -> np.ndarray:
        zc, yc, xc = body_point(zf, yf, xf)
        return _ellipsoid(z, y, x, (zc, yc, xc), (sz * hz, sy * by, sx * bx))

    # thorax: diaphragm height, heart, lungs, trachea and bronchi
    z_d = rng.uniform(-0.05, 0.2)  # diaphragm, as a fraction of the half-length
    lung_half = rng.uniform(0.5, 0.75)
    z_lung = z_d + 0.03 + lung_half
    below_diaphragm = _soft((z_d * hz - z))
    above_diaphragm = _soft((z - (z_d + 0.03) * hz))
    paint(organ(z_d + 0.2, -0.25, 0.12, 0.2, 0.3, 0.3) * cavity * above_diaphragm, HU["heart"], None)
    lung_y = rng.uniform(0.0, 0.1)
    for side in (-1.0, 1.0):
        lung = organ(z_lung, lung_y, side * rng.uniform(0.38, 0.45), lung_half, 0.55, rng.uniform(0.28, 0.34))
        paint(lung * cavity * above_diaphragm, HU["lung"], None)
    z_carina = min(z_lung + 0.1, 0.8)
    top = body_point(1.5, -0.2, 0.0)  # beyond the last slice: the trachea leaves the volume
    carina = body_point(z_carina, -0.2, 0.0)
    trachea_radius = max(0.07 * min(by, bx), 1.2)
    airways = _capsule(z, y, x, top, carina, trachea_radius)
    for side in (-1.0, 1.0):
        lung_centre = body_point(z_lung - 0.1, lung_y, side * 0.38)
        airways = np.maximum(airways, _capsule(z, y, x, carina, lung_centre, max(0.8 * trachea_radius, 1.2)))
    paint(airways * cavity, HU["air"], None)

    # spine: a cylinder along z in the posterior cavity
    spine_y, spine_x = body_point(0.0, rng.uniform(0.52, 0.6), 0.0)[1:]
    spine_radius = rng.uniform(0.10, 0.13) * min(by, bx)
    spine = _soft(spine_radius - np.sqrt((y - spine_y) ** 2 + (x - spine_x) ** 2))
    paint(np.broadcast_to(spine, shape), HU["bone"], 0)

    # labelled organs below the diaphragm (jittered centres and sizes)
    def jitter(v: float, amount: float = 0.04) -> float:
        return v + rng.uniform(-amount, amount)

    def grow(v: float) -> float:
        return v * rng.uniform(0.85, 1.15)

    liver_half = rng.uniform(0.25, 0.35)
    liver = organ(z_d - liver_half, jitter(0.0), jitter(-0.35), liver_half, grow(0.38), grow(0.33))
    paint(liver * cavity * below_diaphragm, HU["liver"], LABELS["liver"])
    spleen = organ(z_d - 0.17, jitter(0.3), jitter(0.5), grow(0.17), grow(0.2), grow(0.17))
    paint(spleen * cavity * below_diaphragm, HU["spleen"], LABELS["spleen"])
    z_kidney = z_d - rng.uniform(0.5, 0.6)
    for side in (-1.0, 1.0):
        kidney = organ(z_kidney, jitter(0.33), side * jitter(0.36), grow(0.16), grow(0.14), grow(0.12))
        paint(kidney * cavity, HU["kidneys"], LABELS["kidneys"])

    noise_sd = rng.uniform(10.0, 20.0)
    image += rng.normal(0.0, noise_sd, size=shape).astype(np.float32)
    np.clip(np.rint(image), -1024, 3071, out=image)
    return image.astype(np.int16), label, spacing


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
    spacing: Sequence[float] = (1.5, 1.5, 1.5),
    force: bool = False,
) -> Path:
    """Write a complete labelled nnU-Net raw dataset of phantoms.

    Training cases go to ``imagesTr``/``labelsTr``, held-out cases to ``imagesTs``/``labelsTs``
    (case ``phantom_XXX``, numbered on from the training cases). Case ``i`` uses a seed derived
    from ``(seed, i)``, so two datasets with different ``seed`` share no phantom.

    Args:
        raw_root: the ``nnUNet_raw`` folder (created if missing).
        dataset_id: 1..999.
        name: dataset name (letters, digits, '-').
        num_training: number of training cases (>= 1).
        num_test: number of held-out cases.
        seed: base seed.
        shape: ``(z, y, x)`` size of each phantom.
        spacing: ``(z, y, x)`` voxel size in mm.
        force: replace an existing ``DatasetXXX_name``; without it that is refused. A dataset with this
            ID and another name is refused even with ``force`` (see :mod:`nnunet_subfore.data.staging`).

    Returns:
        The dataset folder ``raw_root/DatasetXXX_name``.

    Raises:
        UserError: the dataset exists and ``force`` is False, or the ID is used by another dataset name.
        ValueError: bad counts, shape or spacing.
    """
    if int(num_training) < 1:
        raise ValueError(f"num_training must be at least 1, got {num_training}.")
    if int(num_test) < 0:
        raise ValueError(f"num_test must be 0 or more, got {num_test}.")
    shape = _check_shape(shape)
    spacing = _check_spacing(spacing)
    with DatasetStaging(Path(raw_root), dataset_id, name, force=force) as staging:
        folder = staging.path
        for i in range(int(num_training) + int(num_test)):
            split = "Tr" if i < num_training else "Ts"
            image, label, _ = make_phantom(_case_seed(seed, i), shape, spacing)
            case = f"phantom_{i:03d}"
            for sub, array, ending in ((f"images{split}", image, "_0000.nii.gz"), (f"labels{split}", label, ".nii.gz")):
                (folder / sub).mkdir(exist_ok=True)
                sitk.WriteImage(to_sitk(array, spacing), str(folder / sub / f"{case}{ending}"), True)
        dataset_json = {
            "channel_names": {"0": "CT"},
            "labels": dict(LABELS),
            "numTraining": int(num_training),
            "file_ending": ".nii.gz",
            "name": name,
            "description": (
                f"Synthetic CT phantoms (nnunet-subfore, seed {seed}): HU images with liver, spleen "
                f"and kidney labels; imagesTs/labelsTs hold {int(num_test)} held-out cases."
            ),
        }
        (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=2) + "\n")
        return staging.commit()


def write_unlabeled_images(
    folder: Union[str, Path],
    num_images: int,
    seed: int = 0,
    shape: Sequence[int] = (64, 64, 64),
    spacing: Sequence[float] = (1.5, 1.5, 1.5),
    file_format: str = "nii.gz",
    force: bool = False,
) -> List[Path]:
    """Write phantom images (no labels) as a user's unlabeled CT collection would look.

    Files are ``ct_XXX.<file_format>`` with a seed-dependent origin (scanner coordinates), the
    kind of input :func:`nnunet_subfore.data.register.register_unlabeled` takes.

    Args:
        folder: output folder (created if missing).
        num_images: number of images (>= 1).
        seed: base seed; image ``i`` uses a seed derived from ``(seed, i)``.
        shape: ``(z, y, x)`` size of each image.
        spacing: ``(z, y, x)`` voxel size in mm.
        file_format: ``"nii.gz"`` or ``"mha"``.
        force: overwrite files of the same names; without it existing files are refused.

    Returns:
        The written paths, in order.
    """
    if file_format not in FILE_FORMATS:
        raise ValueError(f"file_format must be one of {FILE_FORMATS}, got {file_format!r}.")
    if int(num_images) < 1:
        raise ValueError(f"num_images must be at least 1, got {num_images}.")
    shape = _check_shape(shape)
    spacing = _check_spacing(spacing)
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
        case_seed = _case_seed(seed, i)
        image, _, _ = make_phantom(case_seed, shape, spacing)
        offset = np.random.default_rng(case_seed).uniform(-50.0, 50.0, size=3)
        extent = np.asarray(shape[::-1], dtype=float) * np.asarray(spacing[::-1])
        origin = tuple(-extent / 2.0 + offset)
        sitk.WriteImage(to_sitk(image, spacing, origin=origin), str(path), True)
    return paths


def _case_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def _soft(signed_distance: np.ndarray) -> np.ndarray:
    """Membership in (0, 1) from an (approximate) signed distance in voxels, positive inside."""
    t = np.clip(signed_distance / np.float32(_EDGE_VOXELS), -30.0, 30.0)
    return (1.0 / (1.0 + np.exp(-t))).astype(np.float32)


def _ellipsoid(z, y, x, centre, semi_axes) -> np.ndarray:
    (zc, yc, xc), (az, ay, ax) = centre, semi_axes
    r = np.sqrt(((z - zc) / az) ** 2 + ((y - yc) / ay) ** 2 + ((x - xc) / ax) ** 2)
    return _soft((1.0 - r) * min(az, ay, ax))


def _capsule(z, y, x, p0, p1, radius: float) -> np.ndarray:
    """Soft membership of the set of points within ``radius`` voxels of the segment ``p0``-``p1``."""
    p0 = np.asarray(p0, dtype=np.float32)
    v = np.asarray(p1, dtype=np.float32) - p0
    dz, dy, dx = z - p0[0], y - p0[1], x - p0[2]
    t = np.clip((dz * v[0] + dy * v[1] + dx * v[2]) / float(v @ v), 0.0, 1.0)
    d = np.sqrt((dz - t * v[0]) ** 2 + (dy - t * v[1]) ** 2 + (dx - t * v[2]) ** 2)
    return _soft(radius - d)


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
