"""Soft shapes and smooth random fields on a voxel grid in millimetres: the drawing tools of the phantoms.

Coordinates are open grids (``z`` of shape ``(nz, 1, 1)``, ``y`` ``(1, ny, 1)``, ``x`` ``(1, 1, nx)``)
in mm, so a shape that does not depend on ``z`` stays a ``(1, ny, nx)`` array until it is painted.
Memberships are in (0, 1) with a logistic edge about a third of a voxel wide: partial volume at the
boundaries, as a scanner's point-spread gives. Everything is vectorized numpy.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
from scipy import ndimage

Point = Tuple[float, float, float]


class Grid:
    """Voxel-centre coordinates (mm, centred on the volume) of a ``(z, y, x)`` grid, and soft membership.

    Args:
        shape: ``(z, y, x)`` voxels.
        spacing: ``(z, y, x)`` mm.
        edge_voxels: logistic width of the soft boundaries, in voxels.
    """

    def __init__(self, shape: Sequence[int], spacing: Sequence[float], edge_voxels: float = 0.35) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.spacing = tuple(float(s) for s in spacing)
        axes = [(np.arange(n, dtype=np.float32) - (n - 1) / 2.0) * np.float32(s)
                for n, s in zip(self.shape, self.spacing)]
        self.z = axes[0].reshape(-1, 1, 1)
        self.y = axes[1].reshape(1, -1, 1)
        self.x = axes[2].reshape(1, 1, -1)
        self.half = tuple(n * s / 2.0 for n, s in zip(self.shape, self.spacing))  # half field of view, mm
        self.edge = float(edge_voxels) * float(np.mean(self.spacing))

    def soft(self, signed_mm: np.ndarray) -> np.ndarray:
        """Membership in (0, 1) from an (approximate) signed distance in mm, positive inside."""
        t = np.clip(np.asarray(signed_mm, dtype=np.float32) / np.float32(self.edge), -30.0, 30.0)
        return (1.0 / (1.0 + np.exp(-t))).astype(np.float32)

    def ellipsoid(self, centre: Point, semi: Point, z_power: float = 2.0) -> np.ndarray:
        """An ellipsoid; ``z_power`` > 2 flattens its top and bottom (a cross-section that stays wide longer)."""
        (zc, yc, xc), (az, ay, ax) = centre, semi
        in_plane = ((self.y - yc) / ay) ** 2 + ((self.x - xc) / ax) ** 2
        r = (np.abs((self.z - zc) / az) ** z_power + in_plane ** (z_power / 2.0)) ** (1.0 / z_power)
        return self.soft((1.0 - r) * min(az, ay, ax))

    def ellipse(self, centre_yx: Tuple[float, float], semi_yx: Tuple[float, float], power: float = 2.0) -> np.ndarray:
        """A (super)ellipse in every slice: a ``(1, ny, nx)`` membership; ``power`` > 2 squares it off."""
        (yc, xc), (ay, ax) = centre_yx, semi_yx
        r = (np.abs((self.y - yc) / ay) ** power + np.abs((self.x - xc) / ax) ** power) ** (1.0 / power)
        return self.soft((1.0 - r) * np.minimum(ay, ax))

    def capsule(self, p0: Point, p1: Point, radius: float) -> np.ndarray:
        """Membership of the points within ``radius`` mm of the segment ``p0``-``p1``."""
        p0 = np.asarray(p0, dtype=np.float32)
        v = np.asarray(p1, dtype=np.float32) - p0
        dz, dy, dx = self.z - p0[0], self.y - p0[1], self.x - p0[2]
        t = np.clip((dz * v[0] + dy * v[1] + dx * v[2]) / float(v @ v), 0.0, 1.0)
        d = np.sqrt((dz - t * v[0]) ** 2 + (dy - t * v[1]) ** 2 + (dx - t * v[2]) ** 2)
        return self.soft(radius - d)

    def above(self, z_mm) -> np.ndarray:
        """Membership of the voxels above (superior to) the height ``z_mm`` (a number or a ``(1, ny, nx)`` surface)."""
        return self.soft(self.z - z_mm)

    def smooth_field(self, rng: np.random.Generator, scale_mm: float) -> np.ndarray:
        """A smooth gaussian random field of unit standard deviation, with features about ``scale_mm`` across.

        White noise on a grid of ``scale_mm / 2`` cells, smoothed over one cell and interpolated linearly
        to the voxels: cheap at any volume size.
        """
        cell = max(float(scale_mm) / 2.0, 1e-3)
        positions = [(np.arange(n) * s) / cell for n, s in zip(self.shape, self.spacing)]
        coarse = rng.standard_normal([int(p[-1]) + 3 for p in positions]).astype(np.float32)
        coarse = ndimage.gaussian_filter(coarse, 1.0, mode="wrap")
        field = coarse
        for axis, p in enumerate(positions):
            i0 = np.floor(p).astype(int)
            w = (p - i0).astype(np.float32).reshape([-1 if k == axis else 1 for k in range(3)])
            field = np.take(field, i0, axis=axis) * (1.0 - w) + np.take(field, i0 + 1, axis=axis) * w
        return ((field - field.mean()) / max(float(field.std()), 1e-6)).astype(np.float32)

    def noise(self, rng: np.random.Generator, sd: float) -> np.ndarray:
        """Image noise of standard deviation ``sd``, correlated over about a voxel (a reconstruction kernel's grain)."""
        white = rng.standard_normal(self.shape).astype(np.float32)
        grain = ndimage.gaussian_filter(white, 0.6)
        return grain * np.float32(sd / max(float(grain.std()), 1e-6))
