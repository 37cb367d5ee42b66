"""A picture of what a pretraining checkpoint reconstructs: ``nnunet-subfore show-reconstruction``.

:func:`show_reconstruction` runs :func:`nnunet_subfore.reconstruction.reconstruct_from_checkpoint` (one
preprocessed patch of a raw image, masked as the checkpoint's trainer masks it, through the trained network)
and :func:`draw_reconstruction` draws three orthogonal slices (columns) through the centre of the masked
subvolume nearest the patch centre (the patch centre when nothing is masked) of

- (a) the image (the preprocessed patch, the network's target), foreground subvolumes dashed yellow;
- (b) the masked input (what the network sees);
- (c) the reconstruction;
- (d) the absolute error |reconstruction - image|;

with the masked subvolumes outlined in red in (b)-(d). (a)-(c) share one grey scale (the 0.5-99.5th
percentiles of the image; CT labelled in HU through the plans' normalization); (d) has its own scale. The
title holds the numbers: masked L1 (the trainer's loss on this patch), unmasked L1, masked fraction.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np

from nnunet_subfore.reconstruction import Reconstruction, reconstruct_from_checkpoint
from nnunet_subfore.reporting.canvas import check_figure_output, save_figure, wrap_title
from nnunet_subfore.reporting.slices import frame_slice, outline_subvolumes

#: Rows of the figure: (title, which array).
ROWS = (
    ("(a) image\n(foreground subvolumes: dashed yellow)", "image"),
    ("(b) masked input\n(masked subvolumes: red)", "masked_input"),
    ("(c) reconstruction", "reconstruction"),
    ("(d) |reconstruction - image|", "error"),
)


def show_reconstruction(checkpoint: Path, images: Sequence[Path], output: Path, find_trainer: Callable[[str], type],
                        center: Optional[Sequence[int]] = None, seed: int = 0, device: str = "cpu",
                        force: bool = False) -> Tuple[Reconstruction, Path]:
    """Reconstruct one masked patch with a pretraining checkpoint and draw it.

    Args:
        checkpoint, images, find_trainer, center, seed, device: see
            :func:`nnunet_subfore.reconstruction.reconstruct_from_checkpoint`.
        output: the figure file (``.png``; any suffix matplotlib writes); parent folders are created.
        force: overwrite an existing ``output`` (refused without, before any work).

    Returns:
        (the reconstruction with its numbers, ``output``).
    """
    output = check_figure_output(output, force, "reconstruction.png")
    result = reconstruct_from_checkpoint(checkpoint, images, find_trainer, center=center, seed=seed, device=device)
    return result, draw_reconstruction(result, output, force=force)


def slice_point(result: Reconstruction) -> Tuple[int, int, int]:
    """The voxel the three slices cross: the centre of the masked subvolume nearest the patch centre (ties: the
    first in index order), or the patch centre when nothing is masked."""
    s = result.subvolume_size
    centre = np.array(result.image.shape[1:]) / 2.0
    cells = np.argwhere(result.subvolume_mask)
    if not len(cells):
        return tuple(int(c) for c in centre)
    middles = cells * s + s // 2
    nearest = middles[int(np.argmin(((middles - centre) ** 2).sum(1)))]
    return tuple(int(v) for v in nearest)


def _views(result: Reconstruction, point: Sequence[int]):
    """Per view (one per axis): title, 2D voxel index, 2D grid index, aspect, origin (superior up, anterior up)."""
    s = result.subvolume_size
    z_axis = result.axis_names.index("axial") if "axial" in result.axis_names else 0
    views = []
    for axis in range(3):
        rows, cols = [a for a in range(3) if a != axis]
        idx = tuple(point[axis] if a == axis else slice(None) for a in range(3))
        gidx = tuple(point[axis] // s if a == axis else slice(None) for a in range(3))
        title = f"{result.axis_names[axis]} (slice {point[axis] + result.offset[axis]})"
        aspect = result.spacing[rows] / result.spacing[cols]
        views.append((title, idx, gidx, aspect, "lower" if rows == z_axis else "upper"))
    return views


def _scales(result: Reconstruction, channel: int) -> Tuple[Tuple[float, float], float]:
    """Grey range of the image rows (0.5-99.5th percentiles of the image) and the top of the error scale (99th
    percentile of the error over the masked voxels, or over all)."""
    image = result.image[channel]
    lo, hi = (float(v) for v in np.percentile(image, [0.5, 99.5]))
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    error = result.error[channel]
    inside = error[result.voxel_mask] if result.subvolume_mask.any() else error
    top = float(np.percentile(inside, 99)) if inside.size else 1.0
    return (lo, hi), top if top > 0 else 1.0


def _hu_ticks(colorbar, mapping, vmin: float, vmax: float, shift: bool) -> None:
    """Ticks at round HU values on a colorbar of normalized values (``shift``: values, else differences)."""
    from matplotlib.ticker import MaxNLocator

    to_hu = (lambda v: v * mapping.std + mapping.mean) if shift else (lambda v: v * mapping.std)
    ticks_hu = [t for t in MaxNLocator(6).tick_values(to_hu(vmin), to_hu(vmax)) if to_hu(vmin) <= t <= to_hu(vmax)]
    colorbar.set_ticks([((t - mapping.mean) if shift else t) / mapping.std for t in ticks_hu])
    colorbar.set_ticklabels([f"{t:g}" for t in ticks_hu])


def draw_reconstruction(result: Reconstruction, output: Union[str, Path], force: bool = False,
                        channel: int = 0) -> Path:
    """Draw ``result`` (see the module docstring) into ``output``; returns ``output`` as a Path.

    Args:
        result: from :func:`nnunet_subfore.reconstruction.reconstruct_from_checkpoint`.
        output: the figure file; parent folders are created.
        force: overwrite an existing ``output``.
        channel: the input channel to show (the numbers are over all channels).
    """
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    output = check_figure_output(output, force, "reconstruction.png")
    if not 0 <= channel < result.image.shape[0]:
        raise ValueError(f"channel must lie in [0, {result.image.shape[0]}), got {channel}.")
    fig = Figure(figsize=(10.0, 13.0), layout="constrained")
    axes = fig.subplots(len(ROWS), 3)
    (lo, hi), top = _scales(result, channel)
    s, point = result.subvolume_size, slice_point(result)
    arrays = {"image": result.image[channel], "masked_input": result.masked_input[channel],
              "reconstruction": result.reconstruction[channel], "error": result.error[channel]}
    shown: List = []
    for j, (title, idx, gidx, aspect, origin) in enumerate(_views(result, point)):
        for i, (row_title, key) in enumerate(ROWS):
            ax, img2d = axes[i, j], arrays[key][idx]
            style = dict(cmap="magma", vmin=0.0, vmax=top) if key == "error" else dict(cmap="gray", vmin=lo, vmax=hi)
            shown.append(ax.imshow(img2d, aspect=aspect, origin=origin, interpolation="nearest", **style))
            if key == "image" and result.foreground is not None:
                outline_subvolumes(ax, result.foreground[gidx], s, edgecolor="gold", linewidth=0.8, linestyle="--")
            elif key != "image":
                outline_subvolumes(ax, result.subvolume_mask[gidx], s, edgecolor="red", linewidth=1.2)
            frame_slice(ax, img2d.shape, origin)
            if i == 0:
                ax.set_title(title, fontsize=10)
            if j == 0:
                ax.set_ylabel(row_title if result.foreground is not None or key != "image" else "(a) image", fontsize=10)
    _colorbars(fig, axes, shown, result, (lo, hi), top)
    channels = result.image.shape[0]
    where = "" if channels == 1 else f", channel {channel} of {channels}"
    fig.suptitle(wrap_title(fig, f"What the network reconstructs{where}\n{result.describe()}", 9), fontsize=9)
    output.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, output, dpi=100)
    return output


def _colorbars(fig, axes, shown: List, result: Reconstruction, grey: Tuple[float, float], top: float) -> None:
    """One colorbar for the image rows, one for the error row; CT in HU, else nnU-Net's normalized units."""
    unit = "HU" if result.intensity is not None else "nnU-Net-normalized intensity"
    image_bar = fig.colorbar(shown[0], ax=axes[:-1, :].ravel().tolist(), shrink=0.6, label=unit)
    error_bar = fig.colorbar(shown[-1], ax=axes[-1, :].ravel().tolist(), shrink=0.9, label=f"|error| ({unit})")
    if result.intensity is not None:
        _hu_ticks(image_bar, result.intensity, grey[0], grey[1], shift=True)
        _hu_ticks(error_bar, result.intensity, 0.0, top, shift=False)
