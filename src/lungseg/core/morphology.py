"""Morphology on masks shared by the methods: bounding boxes, hole filling, block pooling, balls.

Written with numpy/scipy/cc3d because the methods need mask-box restricted, anisotropic
(mm-sized) versions that the libraries do not offer directly.

>>> import numpy as np
>>> ring = np.zeros((7, 7, 3), bool); ring[1:6, 1:6] = True; ring[3, 3] = False
>>> bool(fill_holes(ring, slice_axis=2)[3, 3, 1])
True
"""

from __future__ import annotations

from collections.abc import Sequence

import cc3d
import numpy as np
from scipy import ndimage


def bbox(mask: np.ndarray, pad: int = 1) -> tuple[slice, ...] | None:
    """Slices of the mask's bounding box grown by `pad` voxels (clipped); None if empty."""
    if not mask.any():
        return None
    out = []
    for ax in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != ax)
        idx = np.flatnonzero(mask.any(axis=other))
        out.append(slice(max(idx[0] - pad, 0), min(idx[-1] + 1 + pad, mask.shape[ax])))
    return tuple(out)


def holes(mask: np.ndarray) -> np.ndarray:
    """Background not connected to the array border (cc3d; fast even for large volumes)."""
    bg = ~mask
    lab, n = cc3d.connected_components(bg, connectivity=4 if mask.ndim == 2 else 6, return_N=True)
    inside = np.ones(n + 1, bool)  # a lookup table, not np.isin: several times faster
    for ax in range(mask.ndim):
        for idx in (0, -1):
            inside[np.take(lab, idx, axis=ax)] = False
    return bg & inside[lab]


def fill_holes(mask: np.ndarray, slice_axis: int | None = None) -> np.ndarray:
    """Fill holes in 3D and, when `slice_axis` is given, in every 2D slice along that axis.

    Works on the mask's bounding box, so it costs little for a lung inside a large grid.
    Openings to the array border (a lung cut by the field of view) are not holes.
    """
    mask = np.asarray(mask, bool)
    box = bbox(mask, pad=0)
    if box is None:
        return mask.copy()
    sub = mask[box].copy()
    if slice_axis is not None:
        moved = np.moveaxis(sub, slice_axis, 0)  # a view: writes go to `sub`
        for s in range(moved.shape[0]):
            if moved[s].any():
                moved[s] |= holes(moved[s])
    sub |= holes(sub)
    out = mask.copy()
    out[box] = sub
    return out


def block_sum(a: np.ndarray, factors: Sequence[int], edge: bool = False) -> np.ndarray:
    """Sums (int32) over blocks of `factors` of a bool or integer array; a partial block at an
    edge is padded with zeros, or with `edge` by repeating the last element (np.pad's modes).

    The same integers as padding and summing a (n/f, f, ...) view, without the padded copy:
    axis by axis, as f strided slices added element-wise (a reduction over small interleaved
    axes is numpy's slow path; for a 512x512x300 CT this is ~5x faster).
    """
    # a mask's counts fit in a byte (a quarter of the memory traffic); the result is int32
    small = a.dtype == bool and int(np.prod(factors)) < 256
    out = a
    for ax, f in enumerate(factors):
        if f == 1:
            continue
        n = out.shape[ax]
        m = -(-n // f)
        shape = list(out.shape)
        shape[ax] = m
        acc = np.zeros(shape, np.uint8 if small else np.int32)

        def at(sl, ax=ax, ndim=out.ndim):
            return (slice(None),) * ax + (sl,) + (slice(None),) * (ndim - ax - 1)

        for d in range(f):
            k = len(range(d, n, f))
            acc[at(slice(0, k))] += out[at(slice(d, n, f))]
            if edge and k < m:  # the partial last block repeats the last element
                acc[at(slice(k, m))] += out[at(slice(n - 1, n))]
        out = acc
    return out.astype(np.int32, copy=False)


def pool_any(mask: np.ndarray, factors: Sequence[int], frac: float) -> np.ndarray:
    """Block-reduce a mask: a block is on where at least `frac` of it is on."""
    counts = block_sum(mask, factors)
    return counts >= max(1, int(np.ceil(frac * np.prod(factors))))


def pool_mean(a: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Block mean (float32) of an integer volume; edges padded by repetition."""
    if max(factors) == 1:
        return a.astype(np.float32)
    s = block_sum(a, factors, edge=True)
    return (s / float(np.prod(factors))).astype(np.float32)


def upsample_nearest(low: np.ndarray, factors: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    """Undo a block reduction by repetition, onto the full grid `shape`."""
    if max(factors) == 1:
        return low
    if all(n <= m * f for n, f, m in zip(shape, factors, low.shape, strict=True)):
        out = low  # repeat copies runs of memory: several times faster than fancy indexing
        for ax, f in enumerate(factors):
            if f > 1:
                out = np.repeat(out, f, axis=ax)
        return out[tuple(slice(0, n) for n in shape)]
    ii = [np.minimum(np.arange(n) // f, m - 1) for n, f, m in zip(shape, factors, low.shape, strict=True)]
    return low[np.ix_(*ii)]


def ball(radius_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """Boolean ball of `radius_mm` on a grid of `spacing` (an ellipsoid in voxels when anisotropic)."""
    half = [int(np.floor(radius_mm / s + 1e-6)) for s in spacing]
    grid = np.meshgrid(*[np.arange(-h, h + 1) * s for h, s in zip(half, spacing, strict=True)], indexing="ij")
    return sum(g**2 for g in grid) <= radius_mm**2 + 1e-6


def disc(radius_mm: float, spacing: Sequence[float], axis: int) -> np.ndarray:
    """`ball` one voxel thick across `axis`: a disc in the plane of the other two axes."""
    b = ball(radius_mm, spacing)
    return np.take(b, [b.shape[axis] // 2], axis=axis)


def square(half_mm: float, spacing: Sequence[float], axis: int) -> np.ndarray:
    """A box reaching `half_mm` (at least one voxel) either side of its centre in the plane
    across `axis`, one voxel thick along it: an in-plane margin of a slab's slices."""
    size = [1 if a == axis else 2 * max(1, round(half_mm / float(s))) + 1 for a, s in enumerate(spacing)]
    return np.ones(size, bool)


def share_per_piece(mask: np.ndarray, flag: np.ndarray,
                    within: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(the 26-connected pieces of `mask`, the share of each piece's voxels where `flag` holds;
    index 0 is the background, share 0), in one pass over the mask's voxels: `ndimage.median`
    per piece sorts the whole array (7 s and 0.8 GiB more on a 512x512x275 chest). With
    `within`, the share counts only each piece's voxels inside it (e.g. its core)."""
    pieces, n = cc3d.connected_components(mask, connectivity=26, return_N=True)
    counted = mask if within is None else mask & within
    which = pieces[counted]
    total = np.bincount(which, minlength=n + 1)
    hits = np.bincount(which, weights=np.asarray(flag)[counted], minlength=n + 1)
    share = np.divide(hits, total, out=np.zeros(n + 1), where=total > 0)
    share[0] = 0.0
    return pieces, share


def distance_to(target: np.ndarray, piece: np.ndarray, box: tuple[slice, ...], spacing: Sequence[float],
                reach_mm: float, axes: Sequence[int] = (0, 1, 2), edge_is_target: bool = False) -> float:
    """Smallest distance (mm, along `axes` only) from a piece's voxels to a `target` voxel,
    looked for within `reach_mm` (beyond it: inf). `piece`: bool on `box` (slices of
    `target`'s grid); with `edge_is_target`, the image's faces across `axes` count as target
    (the body's surface where a field of view cuts the body). Only the box grown by `reach_mm`
    is read: a piece's own neighbourhood, not the whole grid, for each of a few pieces."""
    shape = target.shape
    axes = tuple(int(a) for a in axes)
    grown, pad = [], []
    for a in range(3):
        r = int(np.ceil(reach_mm / float(spacing[a]))) + 1 if a in axes else 0
        lo, hi = max(0, box[a].start - r), min(shape[a], box[a].stop + r)
        grown.append(slice(lo, hi))
        pad.append((int(edge_is_target and a in axes and lo == 0),
                    int(edge_is_target and a in axes and hi == shape[a])))
    t = np.pad(np.asarray(target[tuple(grown)], bool), pad, constant_values=True)
    if not t.any():
        return float("inf")
    far = 1e6 * (1.0 + reach_mm)  # axes not in `axes`: weighted out of reach
    d = ndimage.distance_transform_edt(~t, sampling=[float(spacing[a]) if a in axes else far for a in range(3)])
    inner = tuple(slice(box[a].start - grown[a].start + pad[a][0], box[a].stop - grown[a].start + pad[a][0])
                  for a in range(3))
    best = float(d[inner][np.asarray(piece, bool)].min()) if np.any(piece) else float("inf")
    return best if best <= reach_mm else float("inf")
