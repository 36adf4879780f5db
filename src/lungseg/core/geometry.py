"""Geometry of voxel grids: spacing, voxel volume, one same-grid test, LPS<->RAS, axes.

Affines map (i, j, k) to RAS+ mm (nibabel). DICOM and ITK use LPS+: the same points with x
and y negated, so `lps_to_ras` is its own inverse.

>>> import numpy as np
>>> a = np.diag([0.5, 0.5, 2.0, 1.0])
>>> voxel_volume_ml(a), same_grid((4, 4, 4), a, (4, 4, 4), a + 1e-5)
(0.0005, True)
>>> lps_to_ras(np.eye(4))[:2, :2].tolist()
[[-1.0, 0.0], [0.0, -1.0]]
"""

from __future__ import annotations

from collections.abc import Sequence

import nibabel as nib
import numpy as np

from lungseg.core.errors import GeometryError

#: Multiply an LPS affine by this (on the left) to get the RAS affine, and back.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: Two grids are the same when no corner lies further apart than this (mm).
GRID_TOLERANCE_MM = 1e-3


def spacing_of(affine: np.ndarray) -> np.ndarray:
    """Voxel size in mm along each array axis (column norms of the affine)."""
    return np.linalg.norm(np.asarray(affine, float)[:3, :3], axis=0)


def voxel_volume_ml(affine: np.ndarray) -> float:
    """Volume of one voxel in mL (|det| of the affine's 3x3 part, mm^3 / 1000)."""
    return abs(float(np.linalg.det(np.asarray(affine, float)[:3, :3]))) / 1000.0


def lps_to_ras(affine: np.ndarray) -> np.ndarray:
    """An LPS affine as RAS (or a RAS affine as LPS: the flip is its own inverse)."""
    return LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)


def superior_axis(affine: np.ndarray) -> int:
    """Array axis closest to the patient's superior-inferior direction."""
    return _axis_coded(affine, ("S", "I"))


def right_left_axis(affine: np.ndarray) -> int:
    """Array axis closest to the patient's right-left direction."""
    return _axis_coded(affine, ("R", "L"))


def _axis_coded(affine: np.ndarray, codes: tuple[str, str]) -> int:
    return [c in codes for c in nib.orientations.aff2axcodes(np.asarray(affine, float))].index(True)


def shifted_affine(affine: np.ndarray, start: Sequence[float]) -> np.ndarray:
    """Affine of the sub-grid whose index 0 is `start` of the grid of `affine` (a crop or box)."""
    affine = np.asarray(affine, float)
    out = affine.copy()
    out[:3, 3] = affine[:3, :3] @ np.asarray(start, float) + affine[:3, 3]
    return out


def downsampled_affine(affine: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Affine of a grid block-reduced by integer `factors` (block centres, same world space)."""
    affine = np.asarray(affine, float)
    low = affine @ np.diag([*factors, 1.0])
    low[:3, 3] = affine[:3, :3] @ ((np.asarray(factors, float) - 1) / 2.0) + affine[:3, 3]
    return low


def _corners(shape: Sequence[int]) -> np.ndarray:
    n = np.asarray(shape[:3], dtype=np.float64) - 1
    return np.array([[i, j, k, 1.0] for i in (0, n[0]) for j in (0, n[1]) for k in (0, n[2])]).T


def grid_distance_mm(shape: Sequence[int], a: np.ndarray, b: np.ndarray) -> float:
    """Largest distance (mm) between the same grid corner placed by affines `a` and `b`."""
    c = _corners(shape)
    d = np.linalg.norm((np.asarray(a, float) @ c - np.asarray(b, float) @ c)[:3], axis=0).max()
    return float(d) if np.isfinite(d) else float("inf")


def same_grid(shape_a: Sequence[int], affine_a: np.ndarray, shape_b: Sequence[int],
              affine_b: np.ndarray, tolerance_mm: float = GRID_TOLERANCE_MM) -> bool:
    """True when both grids have the same shape and their corners lie within `tolerance_mm`."""
    return (tuple(shape_a) == tuple(shape_b)
            and grid_distance_mm(shape_a, affine_a, affine_b) <= tolerance_mm)


def check_same_grid(a, b, what: str = "mask and image", path=None,
                    tolerance_mm: float = GRID_TOLERANCE_MM) -> None:
    """Raise `GeometryError` (naming `path`, default `a`'s file) unless volumes a and b share a grid."""
    path = path if path is not None else a.meta.get("path")
    if tuple(a.shape) != tuple(b.shape):
        raise GeometryError(f"{what} differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}", path)
    dist = grid_distance_mm(a.shape, a.affine, b.affine)
    if dist > tolerance_mm:
        raise GeometryError(f"{what} lie on different grids ({dist:.3g} mm apart: another affine or "
                            "orientation); resample one onto the other first", path)
