"""Phantom geometry: the output voxel grid, the coarse grid anatomy is drawn on, and the
one conversion between the patient frame (x to the patient's LEFT, y anterior, z superior,
origin at the carina) and the RAS+ world of the affine (x to the patient's RIGHT).

Both grids are stored internally as (z, y, x) arrays in canonical RAS order and share the
same field of view (cell edges aligned), so resampling one onto the other is exact up to
interpolation. `to_orientation` turns a canonical array into any 3-letter axcode.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform

from lungseg.core.errors import LungsegError
from lungseg.phantoms.params import FULL_INPLANE, PhantomParams


@dataclass
class Grid:
    """A canonical RAS grid: voxel centres along world x, y, z (1D arrays, mm)."""

    xs: np.ndarray
    ys: np.ndarray
    zs: np.ndarray

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        return (len(self.zs), len(self.ys), len(self.xs))

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(a[1] - a[0]) if len(a) > 1 else 1.0 for a in (self.xs, self.ys, self.zs))

    def affine(self) -> np.ndarray:
        sx, sy, sz = self.spacing
        return np.array(
            [[sx, 0, 0, self.xs[0]], [0, sy, 0, self.ys[0]], [0, 0, sz, self.zs[0]], [0, 0, 0, 1]],
            dtype=np.float64,
        )

    def index_of(self, world: np.ndarray) -> np.ndarray:
        """Continuous (z, y, x) indices of world points (n, 3)."""
        world = np.atleast_2d(world)
        sx, sy, sz = self.spacing
        return np.stack(
            [(world[:, 2] - self.zs[0]) / sz, (world[:, 1] - self.ys[0]) / sy,
             (world[:, 0] - self.xs[0]) / sx], axis=1)


def _centres(lo: float, hi: float, n: int) -> np.ndarray:
    step = (hi - lo) / n
    return lo + step * (np.arange(n) + 0.5)


@dataclass
class Frame:
    """Rigid map patient frame -> world (RAS+): flip x, rotate about z, shift."""

    rotation_deg: float
    shift: tuple[float, float, float]

    def to_world(self, p: np.ndarray) -> np.ndarray:
        p = np.atleast_2d(np.asarray(p, dtype=np.float64))
        a = np.deg2rad(self.rotation_deg)
        x, y = -p[:, 0], p[:, 1]  # patient-left x -> RAS x
        xr = np.cos(a) * x - np.sin(a) * y
        yr = np.sin(a) * x + np.cos(a) * y
        return np.stack([xr + self.shift[0], yr + self.shift[1], p[:, 2] + self.shift[2]], axis=1)

    def patient_xy(self, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
        """Patient x, y of every in-plane voxel centre, as (ny, nx) float32 arrays."""
        a = np.deg2rad(self.rotation_deg)
        xw = (grid.xs - self.shift[0])[None, :]
        yw = (grid.ys - self.shift[1])[:, None]
        x = np.cos(a) * xw + np.sin(a) * yw  # inverse rotation
        y = -np.sin(a) * xw + np.cos(a) * yw
        return (-x).astype(np.float32), y.astype(np.float32)

    def patient_z(self, grid: Grid) -> np.ndarray:
        return (grid.zs - self.shift[2]).astype(np.float32)


#: `size` bounds: below 32 the in-plane spacing of a wide patient exceeds the 20 mm lungseg
#: accepts; above 1024 one phantom needs several GiB.
MIN_SIZE, MAX_SIZE = 32, 1024
#: Slices of small phantoms are capped below lungseg's 20 mm spacing limit (`io.checks`).
MAX_SLICE_MM = 19.0


def output_shape(p: PhantomParams, size: int | None) -> tuple[int, float, int, float]:
    """(n_inplane, spacing_inplane, n_slices, slice_spacing) for a requested `size`."""
    n = p.n_inplane if size is None else int(size)
    if not MIN_SIZE <= n <= MAX_SIZE:
        raise LungsegError(f"size must be {MIN_SIZE}-{MAX_SIZE} voxels, got {n}")
    scale = p.n_inplane / n
    sxy = p.spacing_inplane * scale
    sz = min(p.slice_thickness * scale, MAX_SLICE_MM)
    nz = max(4, int(round(p.fov_z / sz)))
    return n, sxy, nz, p.fov_z / nz


def make_grids(p: PhantomParams, size: int | None) -> tuple[Grid, Grid, Frame]:
    """Output grid, coarse drawing grid (same FOV) and the patient->world frame."""
    n, sxy, nz, sz = output_shape(p, size)
    fov_xy = n * sxy
    frame = Frame(p.rotation_deg, (0.0, 0.0, p.table_z))
    cx, cy, cz = frame.to_world(np.array(p.fov_center))[0]
    # FOV centre: in-plane offset from the patient, in world axes (scanner centres the FOV)
    out = Grid(
        _centres(cx - fov_xy / 2, cx + fov_xy / 2, n),
        _centres(cy - fov_xy / 2, cy + fov_xy / 2, n),
        _centres(cz - p.fov_z / 2, cz + p.fov_z / 2, nz),
    )
    # coarse grid: ~2.5 mm, or ~2/3 of the output spacing when that is coarser
    cs = max(2.5, 0.66 * sxy)
    ncx = max(8, int(round(fov_xy / cs)))
    czs = max(2.5, 0.66 * sz)
    ncz = max(4, int(round(p.fov_z / czs)))
    coarse = Grid(
        _centres(out.xs[0] - sxy / 2, out.xs[-1] + sxy / 2, ncx),
        _centres(out.ys[0] - sxy / 2, out.ys[-1] + sxy / 2, ncx),
        _centres(out.zs[0] - sz / 2, out.zs[-1] + sz / 2, ncz),
    )
    return out, coarse, frame


def to_orientation(array_zyx: np.ndarray, grid: Grid, axcodes: str) -> tuple[np.ndarray, np.ndarray]:
    """Canonical (z, y, x) array -> (array, affine) stored with the given axcodes, e.g. 'LPS'."""
    codes = tuple(axcodes.upper())
    try:
        target = axcodes2ornt(codes)
    except Exception:
        target = None
    if len(codes) != 3 or target is None or np.isnan(target).any() or len(set(target[:, 0])) != 3:
        raise LungsegError(f"orientation must be a 3-letter axcode such as RAS or LPS, got {axcodes!r}")
    ras = array_zyx.transpose(2, 1, 0)  # (x, y, z) view, RAS
    ornt = ornt_transform(axcodes2ornt(("R", "A", "S")), target)
    arr = apply_orientation(ras, ornt)
    affine = grid.affine() @ inv_ornt_aff(ornt, ras.shape)
    if any(s < 0 for s in arr.strides):
        arr = np.asfortranarray(arr)
    return arr, affine


__all__ = ["Grid", "Frame", "make_grids", "output_shape", "to_orientation", "FULL_INPLANE"]
