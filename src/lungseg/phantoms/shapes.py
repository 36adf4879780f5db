"""Signed distance fields (mm, positive inside) for the primitives the anatomy is made of.

Arguments broadcast: pass x, y as (ny, nx) and z as (nz, 1, 1) to evaluate on a grid, or
equal-length 1D arrays to evaluate at points. Ellipse and ellipsoid distances use the
first-order estimate f / |grad f|, exact on the surface and close to it nearby, which is
all the renderer needs (edge ramps, cortical shells, thresholds).
"""

from __future__ import annotations

import numpy as np

from lungseg.phantoms.grid import Grid


def ellipse_sdf(u, v, a, b):
    """Inside-positive distance to the ellipse (u/a)^2 + (v/b)^2 = 1."""
    ua, vb = u / a, v / b
    r = np.sqrt(ua * ua + vb * vb) + 1e-6
    g = np.sqrt((ua / a) ** 2 + (vb / b) ** 2) / r + 1e-6
    return (1.0 - r) / g


def ellipsoid_sdf(u, v, w, a, b, c):
    """Inside-positive distance to the ellipsoid with semi-axes a, b, c."""
    ua, vb, wc = u / a, v / b, w / c
    r = np.sqrt(ua * ua + vb * vb + wc * wc) + 1e-6
    g = np.sqrt((ua / a) ** 2 + (vb / b) ** 2 + (wc / c) ** 2) / r + 1e-6
    return (1.0 - r) / g


def rotate2(u, v, deg: float):
    """Coordinates of (u, v) in axes rotated by `deg` (counter-clockwise)."""
    t = np.deg2rad(deg)
    c, s = np.cos(t), np.sin(t)
    return c * u + s * v, -s * u + c * v


def capsule_sdf_points(pts: np.ndarray, a: np.ndarray, b: np.ndarray, ra, rb) -> np.ndarray:
    """Union of tapered capsules a->b (radius ra->rb), evaluated at points (n, 3)."""
    pts = np.asarray(pts, dtype=np.float64)[:, None, :]
    a, b = np.atleast_2d(a)[None], np.atleast_2d(b)[None]
    ab = b - a
    t = np.clip(((pts - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-9), 0, 1)
    d = np.linalg.norm(pts - a - t[..., None] * ab, axis=-1)
    r = np.asarray(ra)[None] * (1 - t) + np.asarray(rb)[None] * t
    return (r - d).max(axis=1)


def draw_capsules(field: np.ndarray, grid: Grid, a: np.ndarray, b: np.ndarray, ra, rb,
                  value: float | None = None, reach: float = 6.0) -> None:
    """Max-union tapered capsules (world mm, endpoints (n, 3)) into a (z, y, x) field.

    Each capsule touches only its bounding box grown by `reach` mm, so thousands of small
    vessels cost little. With `value` set, voxels inside are set to it instead.
    """
    a, b = np.atleast_2d(a).astype(np.float64), np.atleast_2d(b).astype(np.float64)
    ra = np.broadcast_to(np.asarray(ra, dtype=np.float64), (len(a),))
    rb = np.broadcast_to(np.asarray(rb, dtype=np.float64), (len(a),))
    sx, sy, sz = grid.spacing
    nz, ny, nx = field.shape
    for i in range(len(a)):
        pa, pb = a[i], b[i]
        pad = max(ra[i], rb[i]) + reach
        lo = np.minimum(pa, pb) - pad
        hi = np.maximum(pa, pb) + pad
        ix = _span(grid.xs[0], sx, lo[0], hi[0], nx)
        iy = _span(grid.ys[0], sy, lo[1], hi[1], ny)
        iz = _span(grid.zs[0], sz, lo[2], hi[2], nz)
        if ix is None or iy is None or iz is None:
            continue
        x = grid.xs[ix][None, None, :] - pa[0]
        y = grid.ys[iy][None, :, None] - pa[1]
        z = grid.zs[iz][:, None, None] - pa[2]
        ab = pb - pa
        L2 = max(float(ab @ ab), 1e-9)
        t = np.clip((x * ab[0] + y * ab[1] + z * ab[2]) / L2, 0, 1)
        dx, dy, dz = x - t * ab[0], y - t * ab[1], z - t * ab[2]
        sdf = (ra[i] + (rb[i] - ra[i]) * t) - np.sqrt(dx * dx + dy * dy + dz * dz)
        sub = field[iz, iy, ix]
        if value is None:
            np.maximum(sub, sdf, out=sub)
        else:
            sub[sdf > 0] = value
        field[iz, iy, ix] = sub


def _span(origin: float, step: float, lo: float, hi: float, n: int) -> slice | None:
    i0 = max(0, int(np.floor((lo - origin) / step)))
    i1 = min(n, int(np.ceil((hi - origin) / step)) + 1)
    return slice(i0, i1) if i1 > i0 else None


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Unit-variance smooth random field (float32)."""
    from scipy.ndimage import gaussian_filter

    f = gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma, mode="wrap")
    return f / max(float(f.std()), 1e-6)
