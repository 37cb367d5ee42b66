"""Slices of a patch cut into subvolumes: the panels of the masking and reconstruction figures."""

from __future__ import annotations

import numpy as np


def outline_subvolumes(ax, blocks: np.ndarray, s: int, edgecolor, facecolor="none", linewidth=1.0,
                       linestyle="-") -> None:
    """Outline the True cells of a 2D subvolume grid ``blocks`` (cells of ``s x s`` pixels) on an image axes."""
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    cells = np.argwhere(blocks)
    if len(cells):
        rects = [Rectangle((c * s - 0.5, r * s - 0.5), s, s) for r, c in cells]
        ax.add_collection(
            PatchCollection(rects, facecolor=facecolor, edgecolor=edgecolor, linewidth=linewidth, linestyle=linestyle)
        )


def frame_slice(ax, shape, origin: str) -> None:
    """Limits to the slice's pixels (``shape`` rows, columns), no ticks."""
    ax.set_xlim(-0.5, shape[1] - 0.5)
    ax.set_ylim(*((shape[0] - 0.5, -0.5) if origin == "upper" else (-0.5, shape[0] - 0.5)))
    ax.set_xticks([])
    ax.set_yticks([])
