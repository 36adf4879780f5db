"""Linear resampling between an image's grid and the network's grid, axis by axis.

The network's grid is MONAI's: `Orientationd` (RAS) then `Spacingd` (keeps the image's
direction, changes the spacing). Its index axes are therefore the image's index axes,
permuted, flipped and scaled, and trilinear interpolation between the two grids factors into
three 1-D linear interpolations. Done that way, with border clamping like MONAI's
`padding_mode="border"`, it gives MONAI's values at a fraction of the time and memory, only
ever on a box of the image, and back to the full grid slab by slab.

A sheared image grid (a gantry-tilted CT series: its slices stack along the table, not along
their normal) has no such network grid: MONAI would rotate it, so the network would see a
tilted chest. It gets an upright RAS grid over the image's extent instead (`model_grid`), and
the two grids are then mapped by a full affine (`AffineMap`, scipy's `affine_transform`).
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
from scipy import ndimage

__all__ = ["AffineMap", "AxisMap", "axis_map", "box_corners", "index_map", "is_sheared", "model_grid",
           "resample_linear"]

#: Rows of the interpolation matrix multiplied at a time (it is banded: 2 entries a row).
BAND_ROWS = 32
#: Output rows (first axis) resampled at a time when every axis shrinks.
SLAB_ROWS = 16


#: array axes whose directions meet at more than this cosine are sheared (a tilt of ~0.06 deg)
SHEAR_COS = 1e-3


def is_sheared(affine: np.ndarray) -> bool:
    """True when the array axes are not perpendicular in the world (a gantry-tilted series)."""
    lin = np.asarray(affine, float)[:3, :3]
    d = lin / np.linalg.norm(lin, axis=0)
    cos = d.T @ d
    return bool(np.abs(cos - np.eye(3)).max() > SHEAR_COS)


def box_corners(matrix: np.ndarray, first, last) -> np.ndarray:
    """The 8 corners of the index box [first, last] mapped by the 4x4 `matrix` (3 x 8)."""
    c = np.array(np.meshgrid(*[[f, la] for f, la in zip(first, last, strict=True)], indexing="ij"), float)
    matrix = np.asarray(matrix, float)
    return matrix[:3, :3] @ c.reshape(3, -1) + matrix[:3, 3:4]


def model_grid(shape, affine: np.ndarray, spacing) -> tuple[tuple[int, ...], np.ndarray]:
    """(shape, affine) of the grid MONAI's `Orientationd(RAS)` + `Spacingd(spacing)` produce;
    for a sheared image, the upright RAS grid of `spacing` over the image's extent."""
    from monai.data.utils import compute_shape_offset, zoom_affine

    affine = np.asarray(affine, float)
    if is_sheared(affine):
        world = box_corners(affine, np.zeros(3), np.array(shape) - 1)
        lo, hi = world.min(axis=1), world.max(axis=1)
        step = np.asarray(spacing, float)
        out = np.eye(4)
        out[:3, :3] = np.diag(step)
        out[:3, 3] = lo
        return tuple(int(n) for n in np.ceil((hi - lo) / step - 1e-6).astype(int) + 1), out
    ornt = nib.orientations.io_orientation(affine)
    ras_shape = [0, 0, 0]
    for i, (k, _) in enumerate(ornt):  # input axis i becomes RAS axis k
        ras_shape[int(k)] = int(shape[i])
    ras_aff = affine @ nib.orientations.inv_ornt_aff(ornt, shape)
    new_aff = zoom_affine(ras_aff, np.asarray(spacing, float), diagonal=False)
    out_shape, offset = compute_shape_offset(ras_shape, ras_aff, new_aff)
    new_aff = np.array(new_aff, float)
    new_aff[:3, 3] = offset
    return tuple(int(n) for n in out_shape), new_aff


class AxisMap:
    """dst index -> src index, one axis at a time: src axis `perm[j]` = `scale[j]` * k + `offset[j]`."""

    def __init__(self, perm, scale, offset):
        self.perm = tuple(int(p) for p in perm)
        self.scale = np.asarray(scale, float)
        self.offset = np.asarray(offset, float)

    def shifted(self, dst_start) -> AxisMap:
        """The same map for a dst box starting at `dst_start`."""
        return AxisMap(self.perm, self.scale, self.offset + self.scale * np.asarray(dst_start, float))


class AffineMap:
    """dst index -> src index by a full 4x4 matrix, for grids oblique to each other."""

    def __init__(self, matrix):
        self.matrix = np.asarray(matrix, float)

    def shifted(self, dst_start) -> AffineMap:
        """The same map for a dst box starting at `dst_start`."""
        m = self.matrix.copy()
        m[:3, 3] += m[:3, :3] @ np.asarray(dst_start, float)
        return AffineMap(m)

    def inverse(self) -> AffineMap:
        return AffineMap(np.linalg.inv(self.matrix))


def index_map(src_affine: np.ndarray, dst_affine: np.ndarray) -> AxisMap | AffineMap:
    """dst index -> src index: axis by axis where the grids allow (`axis_map`), else a full affine."""
    amap = axis_map(src_affine, dst_affine)
    if amap is not None:
        return amap
    return AffineMap(np.linalg.solve(np.asarray(src_affine, float), np.asarray(dst_affine, float)))


def axis_map(src_affine: np.ndarray, dst_affine: np.ndarray, tol: float = 1e-4) -> AxisMap | None:
    """The per-axis map from dst indices to src indices, or None when the grids are oblique to each other."""
    m = np.linalg.solve(np.asarray(src_affine, float), np.asarray(dst_affine, float))  # dst idx -> src idx
    lin = m[:3, :3]
    perm = np.argmax(np.abs(lin), axis=0)  # for dst axis j, the src axis it runs along
    if sorted(perm.tolist()) != [0, 1, 2]:
        return None
    scale = lin[perm, [0, 1, 2]]
    off_diag = lin.copy()
    off_diag[perm, [0, 1, 2]] = 0.0
    if np.abs(off_diag).max() > tol * max(1.0, float(np.abs(scale).max())):
        return None
    return AxisMap(perm, scale, m[perm, 3])


def _weights(n: int, coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Left neighbour index and weight of the right one, for `coords` clamped to [0, n-1]."""
    c = np.clip(coords, 0.0, n - 1.0)
    i0 = np.minimum(np.floor(c).astype(np.intp), max(n - 2, 0))
    return i0, (c - i0).astype(np.float32)


def _interp_axis(a: np.ndarray, axis: int, coords: np.ndarray) -> np.ndarray:
    """1-D linear interpolation of `a` along `axis` at `coords`, clamped at the border (float32).

    Shrinking axes gather the two neighbours; growing ones multiply by the (n_out x n_in)
    interpolation matrix, a band of rows at a time (two entries a row): BLAS does it on every
    core, far faster than gathering neighbours into an array larger than the source.
    """
    n = a.shape[axis]
    if n == 1:
        return np.repeat(a.astype(np.float32), len(coords), axis=axis)
    i0, w = _weights(n, coords)
    if len(coords) <= n:  # shrinking: gather the two neighbours (basic fancy indexing, not np.take: 8x faster)
        shape = [1] * a.ndim
        shape[axis] = len(coords)
        lead = (slice(None),) * axis
        lo = a[lead + (i0,)].astype(np.float32, copy=False)
        hi = a[lead + (i0 + 1,)].astype(np.float32, copy=False)
        hi -= lo
        hi *= w.reshape(shape)
        lo += hi
        return lo
    rows_at_once = BAND_ROWS
    a = a.astype(np.float32, copy=False)
    out = np.empty((*a.shape[:axis], len(coords), *a.shape[axis + 1:]), np.float32)
    for r0 in range(0, len(coords), rows_at_once):  # the matrix is banded: one block of rows at a time
        r1 = min(r0 + rows_at_once, len(coords))
        c0, c1 = int(i0[r0:r1].min()), int(i0[r0:r1].max()) + 2
        m = np.zeros((r1 - r0, c1 - c0), np.float32)
        rows = np.arange(r1 - r0)
        m[rows, i0[r0:r1] - c0] = 1.0 - w[r0:r1]
        m[rows, i0[r0:r1] + 1 - c0] += w[r0:r1]
        part = a[(slice(None),) * axis + (slice(c0, c1),)]
        if axis == a.ndim - 1:
            out[..., r0:r1] = part @ m.T
        elif axis == 0:
            out[r0:r1] = (m @ part.reshape(c1 - c0, -1)).reshape((r1 - r0, *a.shape[1:]))
        else:
            out[(slice(None),) * axis + (slice(r0, r1),)] = np.matmul(m, part)
    return out

def resample_linear(src: np.ndarray, amap: AxisMap | AffineMap, dst_shape) -> np.ndarray:
    """Trilinear resampling of `src` onto a dst grid of `dst_shape` (float32, dst axis order).

    The axis that shrinks most goes first, so a 512x512x300 box costs one pass at full size.
    An `AffineMap` (oblique grids) goes through `scipy.ndimage.affine_transform`, clamped at
    the border alike.
    """
    if isinstance(amap, AffineMap):
        return ndimage.affine_transform(np.asarray(src, np.float32), amap.matrix[:3, :3], amap.matrix[:3, 3],
                                        output_shape=tuple(int(n) for n in dst_shape), output=np.float32,
                                        order=1, mode="nearest")
    coords = {amap.perm[j]: amap.offset[j] + amap.scale[j] * np.arange(dst_shape[j]) for j in range(3)}
    # shrinking axes first, in memory order (a gather along the first axis copies whole
    # planes); then the growing ones, least growth first
    order = sorted(range(3), key=lambda a: (len(coords[a]) > src.shape[a], len(coords[a]) / max(1, src.shape[a]) if len(coords[a]) > src.shape[a] else a))
    if all(len(coords[a]) <= src.shape[a] for a in range(3)) and src.flags.c_contiguous:
        # every axis shrinks: gathers only, each output row of axis 0 from its own two planes,
        # so a few rows at a time give the same values without a whole float32 intermediate
        out = np.empty(tuple(len(coords[a]) for a in range(3)), np.float32)
        for r0 in range(0, out.shape[0], SLAB_ROWS):
            part = src
            for ax in order:
                c = coords[ax][r0:r0 + SLAB_ROWS] if ax == 0 else coords[ax]
                part = _interp_axis(part, ax, c)
            out[r0:r0 + SLAB_ROWS] = part
    else:
        out = src
        for ax in order:
            out = _interp_axis(out, ax, coords[ax])
    # out's axes are src axes (resized); lay them out in dst order
    return np.ascontiguousarray(np.transpose(out, amap.perm)) if amap.perm != (0, 1, 2) else out
