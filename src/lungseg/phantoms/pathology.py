"""Lung pathology that stays lung label: nodules, masses at the pleura, consolidation, ground
glass, emphysema.
(Pleural effusion is not lung; `Anatomy.effusion_sdf` carves it out of the lung shape.)

Sites come in normalised lung coordinates (`params._pathology_spots`); here they are placed
at real positions inside the lung and painted into the coarse lung-HU channel.
"""

from __future__ import annotations

import numpy as np

from lungseg.phantoms.anatomy import SIDE_L, SIDE_R, Anatomy
from lungseg.phantoms.grid import Frame, Grid
from lungseg.phantoms.shapes import draw_capsules


def place(an: Anatomy, spot: dict, rng: np.random.Generator) -> np.ndarray | None:
    """Patient-frame centre inside the lung for a site (pleural sites touch the pleura)."""
    side = SIDE_R if spot["side"] == "right" else SIDE_L
    r = spot["radius"]
    ax, ay = an.cav_ax, an.cav_ay
    base = np.array([side * (15 + spot["u"] * (ax - 30)), an.cav_cy - 0.85 * ay + spot["v"] * 1.6 * ay,
                     an.cp_z + 25 + spot["w"] * (an.lung_height - 50)])
    cand = base + rng.normal(0, 18, size=(96, 3))
    cand[0] = base
    f = an.lung_sdf(side, cand[:, 0], cand[:, 1], cand[:, 2])
    want = 0.5 * r if spot.get("pleural") else r + 3
    ok = f > want
    if not ok.any():
        ok = f > 2
        if not ok.any():
            return None
    score = np.abs(f - want) if spot.get("pleural") else np.linalg.norm(cand - base, axis=1)
    score = np.where(ok, score, np.inf)
    return cand[int(np.argmin(score))]


def _local(grid: Grid, centre_w: np.ndarray, reach: float):
    sx, sy, sz = grid.spacing
    nz, ny, nx = grid.shape_zyx
    sl = []
    for c, o, s, n in ((centre_w[2], grid.zs[0], sz, nz), (centre_w[1], grid.ys[0], sy, ny),
                       (centre_w[0], grid.xs[0], sx, nx)):
        i0 = max(0, int(np.floor((c - reach - o) / s)))
        i1 = min(n, int(np.ceil((c + reach - o) / s)) + 1)
        if i1 <= i0:
            return None
        sl.append(slice(i0, i1))
    zz = grid.zs[sl[0]][:, None, None] - centre_w[2]
    yy = grid.ys[sl[1]][None, :, None] - centre_w[1]
    xx = grid.xs[sl[2]][None, None, :] - centre_w[0]
    return tuple(sl), xx, yy, zz


def _blob(lhu, grid, centre_w, radius, hu, irregular, rng, cs):
    loc = _local(grid, centre_w, radius * (1.6 if irregular else 1.2) + 2 * cs)
    if loc is None:
        return
    sl, xx, yy, zz = loc
    axes = radius * (rng.uniform(0.7, 1.3, 3) if irregular else np.ones(3))
    d = np.sqrt((xx / axes[0]) ** 2 + (yy / axes[1]) ** 2 + (zz / axes[2]) ** 2) + 1e-6
    sdf = (1 - d) * radius
    if irregular:
        from scipy.ndimage import gaussian_filter

        n = gaussian_filter(rng.standard_normal(sdf.shape).astype(np.float32), 1.5)
        sdf = sdf + 0.45 * radius * n / max(float(n.std()), 1e-6)
    occ = np.clip(0.5 + sdf / cs, 0, 1).astype(np.float32)
    sub = lhu[sl]
    sub += occ * (hu - sub)


def paint_pathology(lhu: np.ndarray, an: Anatomy, grid: Grid, frame: Frame,
                    rng: np.random.Generator, tex: np.random.Generator, cs: float) -> None:
    """Paint the phantom's pathology into the lung-HU channel; records where each site went."""
    p = an.p
    for kind, irregular in (("ground_glass", True), ("consolidation", True), ("masses", True),
                            ("nodules", False)):
        for spot in getattr(p, kind):
            c = place(an, spot, rng)
            if c is None:
                spot["placed_mm"] = None
                continue
            spot["placed_mm"] = [round(float(v), 1) for v in c]
            cw = frame.to_world(c)[0]
            hu = spot["hu"]
            _blob(lhu, grid, cw, spot["radius"], hu, irregular, tex, cs)
    if p.emphysema > 0:
        _emphysema(lhu, an, grid, frame, rng, cs)


def _emphysema(lhu, an: Anatomy, grid: Grid, frame: Frame, rng, cs) -> None:
    """Clusters of low-attenuation holes (< -950 HU), upper zones first."""
    n = int(40 + 400 * an.p.emphysema)
    pts = np.stack([rng.uniform(-an.cav_ax, an.cav_ax, n), an.cav_cy + rng.uniform(-an.cav_ay, an.cav_ay, n),
                    an.apex_z - an.lung_height * rng.beta(1.2, 2.5, n)], axis=1)
    r = rng.uniform(1.5, 4.0, n) + rng.exponential(1.5, n)
    f = np.maximum(an.lung_sdf(SIDE_R, *pts.T), an.lung_sdf(SIDE_L, *pts.T))
    pts, r = pts[f > r], r[f > r]
    if len(pts) == 0:
        return
    field = np.full(grid.shape_zyx, -10.0, np.float32)
    w = frame.to_world(pts)
    draw_capsules(field, grid, w, w, r, r, reach=2 * cs)
    occ = np.clip(0.5 + field / cs, 0, 1)
    lhu += occ * (-995.0 - lhu)
    lhu -= 25.0 * an.p.emphysema * (lhu > -950)  # background destruction
