"""Bones of the thorax as inside-positive distance fields in the patient frame: ribs (curved
bands following the chest wall, sloping down anteriorly), vertebrae (bodies with discs,
canal, arch and processes), sternum, scapulae, humeri. Costal cartilage and discs are
returned separately: they are soft tissue for the renderer, not bone.
"""

from __future__ import annotations

import numpy as np

from lungseg.phantoms.anatomy import Anatomy

N_RIBS = 12


def rib_fields(an: Anatomy, x, y, z):
    """(bone, cartilage) distance fields of the 12 rib pairs."""
    ls = an.ls
    cav = an.cavity_sdf(x, y, z)
    d_out = -cav  # distance outside the inner chest wall
    phi = np.arctan2(np.abs(x), an.cav_cy - y)  # 0 posterior .. pi anterior
    g = (phi / np.pi) ** 1.5
    sp = 23.5 * ls
    drop = 58 * ls
    z0 = an.apex_z - 4
    zline = z + drop * g
    k = np.clip(np.round((z0 - zline) / sp), 0, N_RIBS - 1)
    dz = zline - (z0 - k * sp)
    half_h = 4.6 + 2.0 * g  # ribs widen anteriorly
    ht = 3.4 * (0.9 + 0.1 * an.h)
    band = np.minimum(half_h - np.abs(dz), ht - np.abs(d_out - 1.5 - ht))
    band = np.minimum(band, (phi - 0.30) * 90)
    # bony part ends anteriorly (upper ribs ~0.72 pi, floating ribs much earlier)
    end = np.where(k < 7, 0.72 * np.pi, 0.72 * np.pi - (k - 6) * 0.09 * np.pi)
    bone = np.minimum(band, (end - phi) * 90)
    # costal cartilage from the bony end to the sternum (ribs 1-7 reach it)
    cart = np.minimum(band, np.minimum((phi - end) * 90, (np.pi - 0.12 - phi) * 90))
    cart = np.where(k < 10, cart, -10.0)
    return bone, cart


def spine_fields(an: Anatomy, x, y, z):
    """(bone, disc, canal) fields of the thoracic spine."""
    ls = an.ls
    level = 26.0 * ls
    zz = np.mod(z - 3.0, level) - level / 2
    gap = 10.8 * ls - np.abs(zz)  # > 0 inside a vertebra, < 0 in the disc
    vb = an.spine_body_sdf(x, y)
    body = np.minimum(vb, gap)
    disc = np.minimum(vb, -gap)
    cy = an.canal_y
    rc = 7.5
    rr = np.sqrt(x * x + (y - cy) ** 2)
    canal = rc - rr
    ring = np.minimum(rr - rc, rc + 7 - rr)
    spinous = np.minimum(3.5 - np.abs(x), np.minimum(cy - 7 - y, y - (cy - 40 * ls)))
    transverse = np.minimum(4.5 - np.abs(y - cy - 2), 30 * ls - np.abs(x))
    pedicle = np.minimum(4.0 - np.abs(np.abs(x) - 10), np.minimum(y - cy, an.vb_y - y))
    transverse = np.minimum(transverse, rr - rc)
    pedicle = np.minimum(pedicle, rr - rc)
    arch = np.maximum(np.maximum(ring, spinous), np.maximum(transverse, pedicle))
    arch = np.minimum(arch, gap + 2)
    return np.maximum(body, arch), disc, canal


def sternum_fields(an: Anatomy, x, y, z):
    cav = an.cavity_sdf(x, y, z)
    d_out = -cav
    ztop = an.apex_z - 22
    zlow = an.dome_top[-1] - 12
    width = 15 + 9 * np.clip((z - (ztop - 45)) / 45, 0, 1)  # manubrium wider
    f = np.minimum(width - np.abs(x), 5.5 - np.abs(d_out - 6.5))
    f = np.minimum(f, np.minimum(ztop - z, z - zlow))
    return np.minimum(f, y - an.cav_cy)


def scapula_fields(an: Anatomy, x, y, z):
    cav = an.cavity_sdf(x, y, z)
    d_out = -cav
    phi = np.arctan2(np.abs(x), an.cav_cy - y)
    ztop = an.apex_z + 5
    zlow = an.apex_z - 135 * an.ls
    t = np.clip((ztop - z) / (ztop - zlow), 0, 1)
    hi = 1.25 - 0.55 * t  # triangle: narrow toward the inferior angle
    f = np.minimum(2.6 - np.abs(d_out - 16 * an.h), np.minimum((phi - 0.45) * 100, (hi - phi) * 100))
    return np.minimum(f, np.minimum(ztop - z, z - zlow))


def humerus_fields(an: Anatomy, x, y, z):
    arms = an.arm_centres(z)
    if arms is None:
        return None
    xc, yc, _ = arms
    f = None
    for s in (-1, 1):
        g = 11.0 * an.h**0.5 - np.sqrt((x - s * xc) ** 2 + (y - yc) ** 2)
        f = g if f is None else np.maximum(f, g)
    return f


def bone_fields(an: Anatomy, x, y, z) -> tuple[np.ndarray, np.ndarray]:
    """(bone, soft-special) where soft-special holds cartilage/discs (> 0 inside)."""
    rib, cart = rib_fields(an, x, y, z)
    spine, disc, _ = spine_fields(an, x, y, z)
    bone = np.maximum(np.maximum(rib, spine), sternum_fields(an, x, y, z))
    bone = np.maximum(bone, scapula_fields(an, x, y, z))
    hum = humerus_fields(an, x, y, z)
    if hum is not None:
        bone = np.maximum(bone, hum)
    bone = np.maximum(bone, -12.0)
    return bone.astype(np.float32), np.maximum(cart, disc).astype(np.float32)


def canal_field(an: Anatomy, x, y):
    return 7.5 - np.sqrt(x * x + (y - an.canal_y) ** 2)

