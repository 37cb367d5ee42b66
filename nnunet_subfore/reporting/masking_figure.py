"""A picture of the HU-based foreground masking of one CT image, next to random masking.

:func:`draw_masking` crops a central patch of a CT image in Hounsfield units, partitions it into
``s x s x s`` subvolumes, finds the foreground subvolumes with the paper's criterion
(:func:`nnunet_subfore.masking.foreground_subvolumes`), draws one foreground masking (each foreground
subvolume masked with probability ``ratio``, the authors' bernoulli selection) and, for comparison,
one random masking at the same ratio (every subvolume masked with probability ``ratio``, the
ablation's baseline), and draws mid axial, coronal and sagittal slices of

- (a) the image, with the subvolume grid and the foreground subvolumes outlined,
- (b) the foreground-masked network input,
- (c) the random-masked network input,

titled with the numbers (:class:`MaskingStatistics`). The images show the windowed intensity
``u = clip((HU - low) / (high - low), 0, 1)`` that the criterion reads (and the authors' network
input); masked voxels are filled as in training (N(0, 1) noise by default), and masked subvolumes
are outlined in red.

:func:`masking_example` returns the arrays and :func:`masking_statistics` the numbers, for use
without a figure.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch

from nnunet_subfore.crops import center_crop
from nnunet_subfore.errors import UserError
from nnunet_subfore.masking import (
    expand_subvolume_mask,
    fill_masked,
    foreground_subvolumes,
    otsu_thresholds,
    sample_subvolume_mask,
    threshold_in_input_units,
    windowed_block_means,
    windowed_intensity,
)
from nnunet_subfore.reporting.canvas import check_figure_output, save_figure, wrap_title
from nnunet_subfore.reporting.slices import frame_slice, outline_subvolumes
from nnunet_subfore.recipe import AIR_HU, BODY_THRESHOLD_HU, PAPER_MASKING, check_masking_settings

MAX_DEFAULT_SIDE = 96

ImageLike = Union[str, Path, np.ndarray]


# --------------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MaskCounts:
    """How many subvolumes one masking masked.

    Attributes:
        n_subvolumes: subvolumes in the patch.
        n_foreground: foreground subvolumes in the patch.
        n_masked: masked subvolumes.
        n_masked_foreground: masked subvolumes that are foreground.
    """

    n_subvolumes: int
    n_foreground: int
    n_masked: int
    n_masked_foreground: int

    @property
    def n_masked_background(self) -> int:
        return self.n_masked - self.n_masked_foreground

    @property
    def fraction_of_all(self) -> float:
        """Masked subvolumes / all subvolumes."""
        return self.n_masked / self.n_subvolumes

    @property
    def fraction_of_foreground(self) -> float:
        """Masked foreground subvolumes / foreground subvolumes (NaN without foreground)."""
        return self.n_masked_foreground / self.n_foreground if self.n_foreground else math.nan


@dataclass(frozen=True)
class MaskingStatistics:
    """The numbers of a :func:`masking_example`.

    Attributes:
        patch_size: (D, H, W) of the patch, in voxels of the image.
        offset: (z, y, x) index in the image of the patch's first voxel (negative where padded).
        subvolume_size: s.
        grid: (D/s, H/s, W/s), the subvolume grid.
        window: (low, high) HU window of the criterion.
        threshold: lambda, on the windowed intensity.
        threshold_hu: the HU of a uniform subvolume exactly on the threshold (-132.5 for the defaults).
        ratio: masking ratio.
        seed: seed of the torch.Generator that drew both maskings.
        n_subvolumes: subvolumes in the patch.
        n_foreground: foreground subvolumes.
        foreground_masking: counts of the foreground (bernoulli) masking.
        random_masking: counts of the random masking.
        criterion: ``"fixed"`` or ``"otsu"``.
        patch_threshold: the threshold the criterion used on this patch (Otsu: max(Otsu's, lambda)).
    """

    patch_size: Tuple[int, int, int]
    offset: Tuple[int, int, int]
    subvolume_size: int
    grid: Tuple[int, int, int]
    window: Tuple[float, float]
    threshold: float
    threshold_hu: float
    ratio: float
    seed: int
    n_subvolumes: int
    n_foreground: int
    foreground_masking: MaskCounts
    random_masking: MaskCounts
    criterion: str = "fixed"
    patch_threshold: Optional[float] = None

    @property
    def foreground_fraction(self) -> float:
        """Foreground subvolumes / all subvolumes."""
        return self.n_foreground / self.n_subvolumes

    def describe(self) -> str:
        """The numbers as a few lines of text (the figure's title)."""

        def pct(x: float) -> str:
            return "n/a" if math.isnan(x) else f"{100 * x:.1f}%"

        def counts(c: MaskCounts) -> str:
            return (
                f"{c.n_masked}/{c.n_subvolumes} masked = {pct(c.fraction_of_all)} of all, "
                f"{pct(c.fraction_of_foreground)} of foreground, {c.n_masked_background} in background"
            )

        lo, hi = self.window
        if self.criterion == "nonzero":
            return "\n".join([
                f"foreground (nonzero criterion): {self.n_foreground}/{self.n_subvolumes} subvolumes "
                f"({pct(self.foreground_fraction)}); share of the subvolume inside the nonzero region >= {self.threshold:g}",
                f"(b) foreground masking, r={self.ratio:g}: {counts(self.foreground_masking)}",
                f"(c) random masking, r={self.ratio:g}: {counts(self.random_masking)}",
                f"patch {'x'.join(map(str, self.patch_size))} voxels at (z, y, x) = {self.offset}, "
                f"subvolumes {self.subvolume_size}^3, grid {'x'.join(map(str, self.grid))}, seed {self.seed}",
            ])
        if self.criterion == "fixed":
            rule = f">= {self.threshold:g}, i.e. {self.threshold_hu:g} HU for a uniform subvolume"
        else:
            used = self.threshold if self.patch_threshold is None else self.patch_threshold
            rule = (f">= max(Otsu over the patch's block means, {self.threshold:g}) = {used:.3f}, i.e. "
                    f"{lo + used * (hi - lo):.1f} HU for a uniform subvolume")
        return "\n".join(
            [
                f"foreground ({self.criterion} criterion): {self.n_foreground}/{self.n_subvolumes} subvolumes "
                f"({pct(self.foreground_fraction)}); mean of clip((HU{-lo:+g})/{hi - lo:g}, 0, 1) {rule}",
                f"(b) foreground masking, r={self.ratio:g}: {counts(self.foreground_masking)}",
                f"(c) random masking, r={self.ratio:g}: {counts(self.random_masking)}",
                f"patch {'x'.join(map(str, self.patch_size))} voxels at (z, y, x) = {self.offset}, "
                f"subvolumes {self.subvolume_size}^3, grid {'x'.join(map(str, self.grid))}, seed {self.seed}",
            ]
        )


@dataclass
class MaskingExample:
    """One patch, its foreground subvolumes and the two maskings (numpy, (z, y, x) order).

    Attributes:
        patch: float32 (D, H, W), the patch in HU (padding: -1000).
        spacing: (z, y, x) voxel spacing, for the figure's aspect ratios.
        foreground: bool grid (D/s, H/s, W/s), True on foreground subvolumes.
        foreground_mask: bool grid, the subvolumes masked by foreground masking.
        random_mask: bool grid, the subvolumes masked by random masking.
        windowed: float32 (D, H, W), ``clip((HU - low) / (high - low), 0, 1)``, the unmasked input.
        foreground_masked: ``windowed`` with the foreground-masked subvolumes filled.
        random_masked: ``windowed`` with the random-masked subvolumes filled.
        statistics: the numbers.
    """

    patch: np.ndarray
    spacing: Tuple[float, float, float]
    foreground: np.ndarray
    foreground_mask: np.ndarray
    random_mask: np.ndarray
    windowed: np.ndarray
    foreground_masked: np.ndarray
    random_masked: np.ndarray
    statistics: MaskingStatistics


# --------------------------------------------------------------------------------------------------
# input
# --------------------------------------------------------------------------------------------------


def load_ct(image: ImageLike, spacing: Optional[Sequence[float]] = None,
            expect_hu: bool = True) -> Tuple[np.ndarray, Tuple[float, float, float]]:
    """A CT volume in HU as float32 (z, y, x) and its (z, y, x) spacing.

    Args:
        image: a file SimpleITK reads (NIfTI, MHA/MHD, NRRD, ...), a folder holding one DICOM
            series, or a numpy array (z, y, x) already in HU. Files are reoriented to LPS (axial
            slices with anterior up, patient's right on the left), see :func:`nnunet_subfore.data.ct_io.read_ct`.
        spacing: (z, y, x) spacing for a numpy array (default 1, 1, 1); ignored for files.
        expect_hu: warn when the volume holds no air (False for MRI and the nonzero criterion).
    """
    if isinstance(image, np.ndarray):
        if image.ndim != 3:
            raise UserError(f"image must be a 3D array (z, y, x) in HU, got shape {image.shape}.")
        sp = tuple(float(v) for v in (spacing if spacing is not None else (1.0, 1.0, 1.0)))
        if len(sp) != 3 or min(sp) <= 0:
            raise UserError(f"spacing must be three positive numbers (z, y, x), got {spacing}.")
        volume = np.asarray(image, dtype=np.float32)
    else:
        from nnunet_subfore.data.ct_io import read_ct

        volume, sp = read_ct(image)
    if expect_hu and volume.size and float(volume.min()) > BODY_THRESHOLD_HU:
        warnings.warn(
            f"The image's lowest value is {float(volume.min()):g}, no air (about {AIR_HU:g} HU): it does not look like "
            f"CT in Hounsfield units. The foreground criterion assumes HU; pass a raw CT image, not a normalized one.",
            stacklevel=2,
        )
    return volume, sp


def default_patch_size(shape: Sequence[int], subvolume_size: int, max_side: int = MAX_DEFAULT_SIDE) -> Tuple[int, int, int]:
    """Per side, the largest multiple of ``subvolume_size`` that fits the image and ``max_side``.

    At least one subvolume per side (the image is padded with air where it is smaller).
    """
    cap = max(max_side // subvolume_size, 1) * subvolume_size
    return tuple(max(min(cap, (int(side) // subvolume_size) * subvolume_size), subvolume_size) for side in shape)


# --------------------------------------------------------------------------------------------------
# computation
# --------------------------------------------------------------------------------------------------


def _check_arguments(patch_size, subvolume_size, window, threshold, ratio, fill, criterion) -> Tuple[float, float]:
    checked = check_masking_settings(window=window, threshold=threshold, subvolume_size=subvolume_size,
                                     ratio=ratio, fill=fill, criterion=criterion, error=UserError)
    if patch_size is not None:
        if len(patch_size) != 3 or any(int(p) < 1 for p in patch_size):
            raise UserError(f"patch_size must be three positive integers (D, H, W), got {list(patch_size)}.")
        bad = [int(p) for p in patch_size if int(p) % subvolume_size]
        if bad:
            raise UserError(
                f"patch_size {list(patch_size)} is not divisible by the subvolume size {subvolume_size} (offending "
                f"sides: {bad}). Use multiples of {subvolume_size}, e.g. "
                f"{[max(round(int(p) / subvolume_size), 1) * subvolume_size for p in patch_size]}, or leave it out."
            )
    return checked["window"]


def _counts(mask: torch.Tensor, fg: torch.Tensor) -> MaskCounts:
    return MaskCounts(int(fg.numel()), int(fg.sum()), int(mask.sum()), int((mask & fg).sum()))


def masking_example(
    image: ImageLike,
    patch_size: Optional[Sequence[int]] = None,
    subvolume_size: int = PAPER_MASKING.subvolume_size,
    window: Sequence[float] = PAPER_MASKING.window,
    threshold: float = PAPER_MASKING.threshold,
    ratio: float = PAPER_MASKING.ratio,
    seed: int = 0,
    fill: str = PAPER_MASKING.fill,
    spacing: Optional[Sequence[float]] = None,
    criterion: str = PAPER_MASKING.criterion,
) -> MaskingExample:
    """Crop a central patch, find its foreground subvolumes, draw a foreground and a random masking.

    Args:
        image: CT in HU: a file or DICOM folder SimpleITK reads, or a numpy array (z, y, x).
        patch_size: (D, H, W) in voxels, multiples of ``subvolume_size``; default per side the
            largest multiple of ``subvolume_size`` up to 96 that fits the image. Padded with -1000 HU
            where the image is smaller.
        subvolume_size: side of the cubic subvolumes (paper: 16).
        window: (low, high) HU window of the criterion (authors' code: (-175, 250)).
        threshold: lambda on the windowed intensity (paper: 0.1, i.e. -132.5 HU with the default window).
        ratio: masking ratio of both maskings (paper: 0.6).
        seed: seed of the torch.Generator; draws foreground masking, random masking, then the fills.
        fill: ``"noise"`` (N(0, 1), the authors' code) or ``"zero"``, applied to the windowed input.
        spacing: (z, y, x) spacing of a numpy ``image`` (default 1, 1, 1).
        criterion: ``"fixed"`` (the paper's) or ``"otsu"`` (per patch, bounded below by ``threshold``).

    Returns:
        A :class:`MaskingExample`; its ``statistics`` hold the numbers.
    """
    lo, hi = _check_arguments(patch_size, subvolume_size, window, threshold, ratio, fill, criterion)
    nonzero = criterion == "nonzero"
    s = int(subvolume_size)
    patch, offset, size, spacing = _central_patch(image, patch_size, s, spacing, nonzero)
    if nonzero:  # MRI: shown scaled to [0, 1] by its own range; the criterion reads the nonzero region only
        lo, hi = _nonzero_display_window(patch)

    x = torch.from_numpy(patch)[None, None]
    fg = foreground_subvolumes(x, s, (lo, hi), threshold, criterion)
    patch_threshold = _patch_threshold(x, s, (lo, hi), threshold, criterion)
    u = windowed_intensity(x, (lo, hi))
    fg_mask, rnd_mask, fg_input, rnd_input = _foreground_and_random_masking(fg, u, s, ratio, fill, seed)

    stats = MaskingStatistics(
        patch_size=size, offset=offset, subvolume_size=s, grid=tuple(int(n) for n in fg.shape[1:]), window=(lo, hi),
        threshold=float(threshold), threshold_hu=threshold_in_input_units((lo, hi), threshold), ratio=float(ratio),
        seed=int(seed), n_subvolumes=int(fg.numel()), n_foreground=int(fg.sum()),
        foreground_masking=_counts(fg_mask, fg), random_masking=_counts(rnd_mask, fg), criterion=criterion,
        patch_threshold=patch_threshold,
    )
    return MaskingExample(patch=patch, spacing=spacing, foreground=fg[0].numpy(), foreground_mask=fg_mask[0].numpy(),
                          random_mask=rnd_mask[0].numpy(), windowed=u[0, 0].numpy(),
                          foreground_masked=fg_input[0, 0].numpy(), random_masked=rnd_input[0, 0].numpy(),
                          statistics=stats)


def _central_patch(image: ImageLike, patch_size: Optional[Sequence[int]], s: int, spacing: Optional[Sequence[float]],
                   nonzero: bool) -> Tuple[np.ndarray, Tuple[int, int, int], Tuple[int, int, int], Tuple[float, float, float]]:
    """The central patch of ``image`` (padded with air, or with 0 for the nonzero criterion), its offset, its size and
    the image's spacing (see :func:`masking_example`)."""
    volume, spacing = load_ct(image, spacing, expect_hu=not nonzero)
    size = tuple(int(p) for p in patch_size) if patch_size is not None else default_patch_size(volume.shape, s)
    patch, offset = center_crop(volume, size, pad_value=0.0 if nonzero else AIR_HU)
    return patch, offset, size, spacing


def _nonzero_display_window(patch: np.ndarray) -> Tuple[float, float]:
    """(0, the 99.5th percentile of |intensity| over the nonzero voxels), or (0, 1) where that is 0 or there are none."""
    inside = patch[patch != 0]
    return (0.0, float(np.percentile(np.abs(inside), 99.5)) or 1.0) if inside.size else (0.0, 1.0)


def _patch_threshold(x: torch.Tensor, s: int, window: Tuple[float, float], threshold: float, criterion: str) -> float:
    """The threshold the criterion used on the patch ``x``: Otsu's over its block means bounded below by ``threshold``
    for ``"otsu"``, else ``threshold``."""
    patch_threshold = float(threshold)
    if criterion == "otsu":
        patch_threshold = max(float(otsu_thresholds(windowed_block_means(x, s, window).flatten(1))[0]), patch_threshold)
    return patch_threshold


def _foreground_and_random_masking(fg: torch.Tensor, u: torch.Tensor, s: int, ratio: float, fill: str, seed: int):
    """The foreground (bernoulli) and random subvolume masks and the inputs ``u`` filled under them, drawn from one
    generator seeded with ``seed``: foreground masking, random masking, then the fills."""
    gen = torch.Generator().manual_seed(int(seed))
    fg_mask = sample_subvolume_mask(fg, ratio, "bernoulli", gen)
    rnd_mask = sample_subvolume_mask(fg, ratio, "random", gen)
    fg_input = fill_masked(u, expand_subvolume_mask(fg_mask, s), fill, gen)
    rnd_input = fill_masked(u, expand_subvolume_mask(rnd_mask, s), fill, gen)
    return fg_mask, rnd_mask, fg_input, rnd_input


def masking_statistics(
    image: ImageLike,
    patch_size: Optional[Sequence[int]] = None,
    subvolume_size: int = PAPER_MASKING.subvolume_size,
    window: Sequence[float] = PAPER_MASKING.window,
    threshold: float = PAPER_MASKING.threshold,
    ratio: float = PAPER_MASKING.ratio,
    seed: int = 0,
    spacing: Optional[Sequence[float]] = None,
    criterion: str = PAPER_MASKING.criterion,
) -> MaskingStatistics:
    """The numbers of :func:`masking_example` (same arguments, same draws), without a figure."""
    return masking_example(image, patch_size, subvolume_size, window, threshold, ratio, seed, spacing=spacing,
                           criterion=criterion).statistics


# --------------------------------------------------------------------------------------------------
# figure
# --------------------------------------------------------------------------------------------------


def _views(example: MaskingExample):
    """Per view: name, slice label, 2D index into the volume, 2D index into the grid, aspect, origin."""
    s = example.statistics.subvolume_size
    nd, nh, nw = example.statistics.grid
    kz, ky, kx = nd // 2, nh // 2, nw // 2  # the middle subvolume; slice through its centre
    z, y, x = kz * s + s // 2, ky * s + s // 2, kx * s + s // 2
    sz, sy, sx = example.spacing
    oz, oy, ox = example.statistics.offset
    return [
        ("axial", f"z={z + oz}", (z, slice(None), slice(None)), (kz, slice(None), slice(None)), sy / sx, "upper"),
        ("coronal", f"y={y + oy}", (slice(None), y, slice(None)), (slice(None), ky, slice(None)), sz / sx, "lower"),
        ("sagittal", f"x={x + ox}", (slice(None), slice(None), x), (slice(None), slice(None), kx), sz / sy, "lower"),
    ]


def draw_masking(
    image: ImageLike,
    output: Union[str, Path],
    patch_size: Optional[Sequence[int]] = None,
    subvolume_size: int = PAPER_MASKING.subvolume_size,
    window: Sequence[float] = PAPER_MASKING.window,
    threshold: float = PAPER_MASKING.threshold,
    ratio: float = PAPER_MASKING.ratio,
    seed: int = 0,
    fill: str = PAPER_MASKING.fill,
    spacing: Optional[Sequence[float]] = None,
    force: bool = False,
    criterion: str = PAPER_MASKING.criterion,
) -> Path:
    """Draw the foreground masking and a random masking of a CT image's central patch.

    Args:
        image: CT in HU: a file or DICOM folder SimpleITK reads, or a numpy array (z, y, x).
        force: overwrite an existing ``output`` (refused without).
        output: figure file (``.png``; any format matplotlib writes by its suffix). Parent folders
            are created; an existing file is overwritten.
        patch_size, subvolume_size, window, threshold, ratio, seed, fill, spacing, criterion: see
            :func:`masking_example`.

    Returns:
        ``output`` as a Path.
    """
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    output = check_figure_output(output, force, "masking.png")
    fig = Figure(figsize=(11.0, 12.0), layout="constrained")
    example = masking_example(image, patch_size, subvolume_size, window, threshold, ratio, seed, fill, spacing, criterion)
    stats = example.statistics
    _draw_panels(fig, example)
    title = (("Nonzero-region" if stats.criterion == "nonzero" else "HU-based") + " foreground masking vs random masking\n"
             + stats.describe())
    fig.suptitle(wrap_title(fig, title, 9), fontsize=9, horizontalalignment="center")
    output.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, output, dpi=110)
    return output


def _draw_panels(fig, example: MaskingExample) -> None:
    """Rows (a) image, (b) foreground masking, (c) random masking; columns the axial, coronal and sagittal views."""
    rows = [
        ("(a) image, subvolume grid,\nforeground subvolumes (yellow)", example.windowed, None),
        ("(b) foreground masking\n(masked: red)", example.foreground_masked, example.foreground_mask),
        ("(c) random masking\n(masked: red)", example.random_masked, example.random_mask),
    ]
    axes = fig.subplots(3, 3)
    for j, (view, where, idx, gidx, aspect, origin) in enumerate(_views(example)):
        fg2d = example.foreground[gidx]
        for i, (row_title, volume, mask) in enumerate(rows):
            ax = axes[i, j]
            _draw_slice(ax, volume[idx], fg2d, None if mask is None else mask[gidx], example.statistics.subvolume_size,
                        aspect, origin)
            if i == 0:
                ax.set_title(f"{view} ({where})", fontsize=10)
            if j == 0:
                ax.set_ylabel(row_title, fontsize=10)


def _draw_slice(ax, img2d: np.ndarray, fg2d: np.ndarray, mask2d: Optional[np.ndarray], s: int, aspect: float,
                origin: str) -> None:
    """One slice: the image with the foreground subvolumes outlined in gold and, without a mask, the subvolume grid;
    with a mask, the foreground dashed and the masked subvolumes outlined in red."""
    ax.imshow(img2d, cmap="gray", vmin=0.0, vmax=1.0, aspect=aspect, origin=origin, interpolation="nearest")
    if mask2d is None:
        for k in range(1, img2d.shape[0] // s):
            ax.axhline(k * s - 0.5, color="white", linewidth=0.5, alpha=0.4)
        for k in range(1, img2d.shape[1] // s):
            ax.axvline(k * s - 0.5, color="white", linewidth=0.5, alpha=0.4)
        outline_subvolumes(ax, fg2d, s, edgecolor="gold", linewidth=1.2)
    else:
        outline_subvolumes(ax, fg2d, s, edgecolor="gold", linewidth=0.6, linestyle="--")
        outline_subvolumes(ax, mask2d, s, edgecolor="red", linewidth=1.2)
    frame_slice(ax, img2d.shape, origin)
