"""Thoracic anatomy as analytic fields in the patient frame (x LEFT, y anterior, z superior, mm,
origin at the carina). Every `*_sdf` is inside-positive and broadcasts over (x, y, z), so the
same code draws the coarse grid and answers point queries (vessel growth, pathology sites).

Tubes (aorta, airways, ...) are lists of tapered capsules `(a, b, ra, rb)`; the grid drawer
in `shapes.draw_capsules` rasterises them, `shapes.capsule_sdf_points` queries them.
"""

from __future__ import annotations

import numpy as np

from lungseg.phantoms.params import PhantomParams
from lungseg.phantoms.shapes import ellipse_sdf, ellipsoid_sdf, rotate2

SIDE_R, SIDE_L = -1, +1  # sign of patient-frame x on each side (not the 1/2 mask labels of core.labels)


def _sig(t):
    return 1.0 / (1.0 + np.exp(-t))


class Anatomy:
    """Derived dimensions and shape functions of one phantom."""

    def __init__(self, p: PhantomParams, rng: np.random.Generator):
        self.p = p
        ls, h = p.lung_scale, p.habitus
        self.ls, self.h = ls, h
        exp = p.breath == "expiration"
        self.apex_z = 60 + 15 * ls
        self.lung_height = 270 * ls - (45 if exp else 0)
        self.cp_z = self.apex_z - self.lung_height  # deepest posterior costophrenic recess
        self.dome_depth = 72 * ls - (10 if exp else 0)
        self.dome_top = {SIDE_R: self.cp_z + self.dome_depth + 3,
                         SIDE_L: self.cp_z + self.dome_depth + 3 - p.right_dome_mm}
        self.cav_cy = -5 * ls
        self.cav_ax, self.cav_ay = 124 * ls * (0.93 + 0.07 * h), 86 * ls * (0.93 + 0.07 * h)
        self.z_mid = -60.0
        # chest wall (muscle + ribs) and body outline
        self.wall_lat, self.wall_ant, self.wall_post = 20 * h, 18 * h, 44 * h
        self.fat = p.fat_mm
        # spine
        self.vb_y = self.cav_cy - self.cav_ay + 28 * ls
        self.vb_ax, self.vb_ay = 21 * ls, 16 * ls
        self.canal_y = self.cav_cy - self.cav_ay - 4
        # heart
        hz = self.dome_top[SIDE_L] + 46 * ls
        self.heart = dict(c=(26 * ls, 24 * ls, hz), ax=(61 * ls, 47 * ls, 53 * ls), rot=35.0)
        self.trachea_r = 8.5 * ls**0.5
        self.tubes = self._tubes(rng)

    # ---------------------------------------------------------------- outline
    def cavity_axes(self, z):
        t = np.clip((self.z_mid - z) / 120.0, -1.0, 1.2)
        return self.cav_ax * (1 + 0.14 * t), self.cav_ay * (1 + 0.08 * t)

    def cavity_sdf(self, x, y, z):
        """Inner chest wall (elliptic cylinder widening downwards)."""
        ax, ay = self.cavity_axes(z)
        return ellipse_sdf(x, y - self.cav_cy, ax, ay)

    def torso_sdf(self, x, y, z):
        ax, ay = self.cavity_axes(z)
        h, fat = self.h, self.fat
        bx = ax + self.wall_lat + fat
        by = ay + 0.5 * (self.wall_ant + self.wall_post) + 0.85 * fat
        cy = self.cav_cy - 0.5 * (self.wall_post - self.wall_ant) - 0.2 * fat
        # neck above the thoracic inlet
        t = np.clip((z - self.apex_z - 15) / 60.0, 0, 1)
        t = t * t * (3 - 2 * t)
        bx = bx + (62 * h - bx) * t
        by = by + (58 * h - by) * t
        cy = cy + (-25 - cy) * t
        back = cy - 0.92 * by
        return np.minimum(ellipse_sdf(x, y - cy, bx, by), y - back)

    def arm_centres(self, z):
        """Arms down: centres (x, y) of both upper arms, radius; None when arms are up."""
        if self.p.arms != "down":
            return None
        ax, _ = self.cavity_axes(z)
        r = 42 * self.h
        gap = 14 * np.clip((self.apex_z - 10 - z) / 60.0, 0, 1)
        xc = ax + self.wall_lat + self.fat + gap + r
        return xc, -15 * self.h, r

    def body_sdf(self, x, y, z):
        f = self.torso_sdf(x, y, z)
        arms = self.arm_centres(z)
        if arms is not None:
            xc, yc, r = arms
            for s in (SIDE_R, SIDE_L):
                f = np.maximum(f, r - np.sqrt((x - s * xc) ** 2 + (y - yc) ** 2))
        return f

    # ---------------------------------------------------------------- lungs
    def diaphragm_z(self, x, y):
        """Height of the diaphragm surface and the slope factor sqrt(1 + |grad|^2)."""
        ls, D = self.ls, self.dome_depth
        ax, ay = 112 * ls, 96 * ls
        zs, gs = [], []
        for s in (SIDE_R, SIDE_L):
            dx, dy = (x - s * 58 * ls) / ax, (y - 12 * ls) / ay
            zs.append(self.dome_top[s] - D * (dx * dx + dy * dy))
            gs.append(np.sqrt(1 + (2 * D * dx / ax) ** 2 + (2 * D * dy / ay) ** 2))
        w = _sig(x / 15.0)  # 0 on the right, 1 on the left
        return zs[0] + (zs[1] - zs[0]) * w, gs[0] + (gs[1] - gs[0]) * w

    def mediastinum_halfwidth(self, y, z):
        mid = 9.0 * _sig((10 - y) / 8.0) * (1 + 0.8 * _sig((y + 40) / 6.0))
        superior = 30.0 * _sig((z - 18) / 10.0) * _sig((y + 45) / 8.0)
        return 2.5 + mid + superior

    def heart_sdf(self, x, y, z):
        (cx, cy, cz), (a, b, c) = self.heart["c"], self.heart["ax"]
        u, v = rotate2(x - cx, y - cy, self.heart["rot"])
        return ellipsoid_sdf(u, v, z - cz, a, b, c)

    def spine_body_sdf(self, x, y):
        return ellipse_sdf(x, y - self.vb_y, self.vb_ax, self.vb_ay)

    def effusion_sdf(self, x, y, z, side: int):
        thick = self.p.effusion_mm[0 if side == SIDE_R else 1]
        if thick <= 0:
            return None
        ztop = self.cp_z + 50 + 2.5 * thick
        zf = np.sqrt(np.clip((ztop - z) / (ztop - self.cp_z), 0, 1))
        yf = np.clip((self.cav_cy - y) / self.cav_ay + 0.35, 0, 1)
        t = thick * zf * yf
        dia, g = self.diaphragm_z(x, y)
        cav = self.cavity_sdf(x, y, z)
        f = np.minimum(cav, t - cav)
        f = np.minimum(f, side * x - 8)
        return np.minimum(f, (z - dia) / g + 4)

    def lung_sdf(self, side: int, x, y, z):
        """One lung before carving by tubes (those need the grid drawer or point queries)."""
        ls = self.ls
        f = self.cavity_sdf(x, y, z)
        cap_h = 95 * ls
        zc = self.apex_z - cap_h
        cap = ellipsoid_sdf(x - side * 64 * ls, y + 12 * ls, np.maximum(z - zc, 0), 72 * ls, 78 * ls, cap_h)
        f = np.minimum(f, cap + 10 * np.maximum(zc - z, 0))
        f = np.minimum(f, side * x - self.mediastinum_halfwidth(y, z))
        dia, g = self.diaphragm_z(x, y)
        f = np.minimum(f, (z - dia) / g - 2)
        heart = self.heart_sdf(x, y, z)
        f = np.minimum(f, -heart - 3)
        f = np.minimum(f, -self.spine_body_sdf(x, y) - 3)
        eff = self.effusion_sdf(x, y, z, side)
        if eff is not None:
            f = np.minimum(f, -eff - 1)
        return f

    # ---------------------------------------------------------------- tubes
    def _tubes(self, rng: np.random.Generator) -> dict[str, list[tuple]]:
        """Capsule chains (patient frame) for vessels, airways and oesophagus."""
        ls = self.ls
        (hx, hy, hz) = self.heart["c"]
        top = self.apex_z + 200
        low = self.cp_z - 60
        j = lambda s=3.0: float(rng.normal(0, s))  # noqa: E731
        ao = [(4, 22 * ls, hz + 30), (2 + j(), 20 * ls, 12), (8, 12 * ls, 30 + j()),
              (20, -8 * ls, 36), (30, -28 * ls, 28), (31, -38 * ls, 8), (28, -42 * ls, -80),
              (16, -48 * ls, low)]
        ao_r = [15, 15, 13, 13, 12, 12, 11.5, 11]
        tubes = {
            "aorta": _chain(ao, [r * ls**0.5 for r in ao_r]),
            "pulmonary_trunk": _chain([(14, 32 * ls, hz + 35), (10, 10 * ls, -25)], [13, 12]),
            "pa_right": _chain([(10, 10 * ls, -25), (-24, 4 * ls, -28), (-42 * ls, -4, -32)], [11, 10, 8]),
            "pa_left": _chain([(10, 10 * ls, -25), (30, 0, -20), (46 * ls, -10, -24)], [11, 10, 8]),
            "pv_right": _chain([(-40 * ls, -2, -58), (0, 4, hz + 22)], [8, 9]),
            "pv_left": _chain([(42 * ls, -6, -52), (12, 4, hz + 22)], [8, 9]),
            "svc": _chain([(-30, 16 * ls, top), (-27, 18 * ls, hz + 45)], [10, 11]),
            "neck_vessels": [((5, 15, 30), (-20, 8, top), 7, 7), ((12, 6, 34), (18, 4, top), 5, 5),
                             ((20, -4, 34), (36, -6, top), 6, 6)],
            "oesophagus": _chain([(4, -34 * ls, top), (6, -34 * ls, -40), (22, -22 * ls, low)], [8, 8, 9]),
        }
        tr = self.trachea_r
        carina = (1.0, -15 * ls, 0.0)
        self.carina = carina
        rb_end = (-40 * ls, -18 * ls, -24 * ls)
        lb_end = (44 * ls, -22 * ls, -36 * ls)
        self.bronchus_ends = {SIDE_R: rb_end, SIDE_L: lb_end}
        airway = [((1.0, -12 * ls, top), carina, tr, tr), (carina, rb_end, 0.85 * tr, 0.8 * tr),
                  (carina, lb_end, 0.75 * tr, 0.7 * tr)]
        tubes["airway"] = airway  # lumen radii; wall = +2.5 mm
        tubes["airway_wall"] = [(a, b, ra + 2.5, rb + 2.5) for a, b, ra, rb in airway]
        return tubes


def _chain(points, radii) -> list[tuple]:
    return [(tuple(map(float, points[i])), tuple(map(float, points[i + 1])),
             float(radii[i]), float(radii[i + 1])) for i in range(len(points) - 1)]
