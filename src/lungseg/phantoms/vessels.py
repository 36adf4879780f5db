"""Pulmonary vessel trees: bifurcating capsules grown from each hilum into the lung.

Growth works a generation at a time on arrays of tips, so the lung shape is queried once per
generation for all tips. Branches that would leave the lung are shortened, then dropped.
"""

from __future__ import annotations

import numpy as np

from lungseg.phantoms.anatomy import SIDE_L, SIDE_R, Anatomy

GENERATIONS = 8


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


def _perpendicular(d: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    r = rng.standard_normal(d.shape)
    r -= (r * d).sum(-1, keepdims=True) * d
    return _unit(r)


def grow_trees(an: Anatomy, rng: np.random.Generator) -> tuple[list[tuple], list[tuple]]:
    """Capsules (a, b, ra, rb) of arteries and veins of both lungs, and of the bronchial
    lumens that run beside the first arterial generations (patient frame). Both are
    inside the lung and stay lung label."""
    ls = an.ls
    roots = []  # (side, start, direction, radius, length)
    for side in (SIDE_R, SIDE_L):
        hx = side * 44 * ls
        art = np.array([hx, -6 * ls, -28.0 if side == SIDE_R else -22.0])
        vein = np.array([side * 40 * ls, 4 * ls, -56.0])
        for d, r in (((0.25, 0.0, 1.0), 4.5), ((0.6, -0.5, 0.6), 4.0), ((0.6, 0.7, -0.2), 4.0),
                     ((0.35, -0.6, -1.0), 5.0), ((0.8, 0.1, -0.6), 4.5)):
            roots.append((side, art, np.array([side * d[0], d[1], d[2]]), r * ls**0.5, 34 * ls, 1))
        for d, r in (((0.7, 0.4, 0.5), 4.0), ((0.6, -0.3, -0.8), 4.5), ((0.7, 0.6, -0.6), 4.0)):
            roots.append((side, vein, np.array([side * d[0], d[1], d[2]]), r * ls**0.5, 30 * ls, 0))
    side = np.array([r[0] for r in roots], dtype=np.float64)
    pos = np.stack([r[1] for r in roots]).astype(np.float64)
    dirs = _unit(np.stack([r[2] for r in roots]).astype(np.float64))
    rad = np.array([r[3] for r in roots])
    length = np.array([r[4] for r in roots])
    art = np.array([r[5] for r in roots], dtype=bool)
    hilum = pos.copy()
    out, bronchi = [], []
    for gen in range(GENERATIONS):
        if len(pos) == 0:
            break
        keep = np.ones(len(pos), bool)
        end = pos + dirs * length[:, None]
        for _ in range(2):  # shorten branches that leave the lung
            inside = _lung_at(an, side, end) > 1.5 + rad
            shrink = ~inside & keep
            length = np.where(shrink, length * 0.55, length)
            end = pos + dirs * length[:, None]
        inside = _lung_at(an, side, end) > 1.0 + 0.5 * rad
        if gen > 0:
            keep &= inside
        for i in np.nonzero(keep)[0]:
            out.append((tuple(pos[i]), tuple(end[i]), float(rad[i]), float(rad[i] * 0.9)))
            if art[i] and gen <= 3 and rad[i] > 1.2:
                lumen = 0.8 * rad[i]
                side_dir = np.cross(dirs[i], (0.0, 0.0, 1.0))
                if np.linalg.norm(side_dir) < 0.2:
                    side_dir = np.array([0.0, 1.0, 0.0])
                o = _unit(side_dir) * (rad[i] + lumen + 1.5)
                bronchi.append((tuple(pos[i] + o), tuple(end[i] + o), float(lumen), float(lumen * 0.9)))
        if gen == GENERATIONS - 1:
            break
        pos, dirs, rad, length, side, hilum, art = (
            a[keep] for a in (end, dirs, rad, length, side, hilum, art))
        # two children: rotated about a random perpendicular, biased away from the hilum
        n = len(pos)
        perp = _perpendicular(dirs, rng)
        ang = np.deg2rad(rng.uniform(22, 42, size=(n, 1)))
        away = _unit(pos - hilum)
        kids = []
        for sgn in (1, -1):
            d = _unit(np.cos(ang) * dirs + sgn * np.sin(ang) * perp + 0.25 * away)
            kids.append(d)
        pos = np.concatenate([pos, pos])
        dirs = np.concatenate(kids)
        rad = np.concatenate([rad, rad]) * rng.uniform(0.68, 0.8, size=2 * n)
        length = np.concatenate([length, length]) * rng.uniform(0.7, 0.9, size=2 * n)
        side = np.concatenate([side, side])
        hilum = np.concatenate([hilum, hilum])
        art = np.concatenate([art, art])
        big = rad >= 0.6
        pos, dirs, rad, length, side, hilum, art = (
            a[big] for a in (pos, dirs, rad, length, side, hilum, art))
    return out, bronchi


def _lung_at(an: Anatomy, side: np.ndarray, pts: np.ndarray) -> np.ndarray:
    x, y, z = pts[:, 0], pts[:, 1], pts[:, 2]
    r = an.lung_sdf(SIDE_R, x, y, z)
    lf = an.lung_sdf(SIDE_L, x, y, z)
    return np.where(side < 0, r, lf)
