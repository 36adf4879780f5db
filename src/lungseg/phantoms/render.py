"""Scanner model: resample the coarse channels onto the output grid, threshold the distance
fields at full resolution (labels and edges stay sharp), mix tissue HU with partial-volume
ramps, add the table, kernel-shaped noise, shoulder streaks and a HU offset.

Work is done a slab of slices at a time so memory stays ~100 MB for a 512x512x300 case.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter, gaussian_filter1d

from lungseg.phantoms.anatomy import Anatomy
from lungseg.phantoms.grid import Frame, Grid

CHANNELS = ("body", "bone", "lung", "soft", "lung_hu")
AIR = -1000.0
SLAB = 8


def _table(an: Anatomy, out: Grid, frame: Frame, body_bottom_y: float) -> np.ndarray:
    """Background (y, x) HU: air plus the patient table under the back (scanner frame)."""
    x = out.xs[None, :].astype(np.float32)
    y = out.ys[:, None].astype(np.float32)
    xc = float(frame.to_world(np.zeros(3))[0, 0])
    top = body_bottom_y - 1.0 + 0.0005 * (x - xc) ** 2
    depth = top - y  # > 0 below the table surface
    bg = np.full((len(out.ys), len(out.xs)), AIR, np.float32)
    inside = (depth > 0) & (depth < 38) & (np.abs(x - xc) < 235)
    bg[inside] = -880.0  # foam / honeycomb core
    shell = inside & ((depth < 2.5) | (depth > 35.5))
    bg[shell] = 320.0  # carbon-fibre skins
    rails = (depth > 38) & (depth < 62) & (np.abs(np.abs(x - xc) - 150) < 8)
    bg[rails] = 180.0
    return bg


def _noise_bank(rng: np.random.Generator, ny: int, nx: int, sharp: bool, n: int = 12):
    pad = 40
    bank = rng.standard_normal((n, ny + pad, nx + pad), dtype=np.float32)
    sigma = 0.55 if sharp else 1.1
    bank = gaussian_filter(bank, (0, sigma, sigma), mode="wrap")
    bank /= max(float(bank.std()), 1e-6)
    return torch.from_numpy(bank), pad


def _streaks(an: Anatomy, out: Grid, frame: Frame, rng: np.random.Generator) -> np.ndarray:
    """In-plane streak pattern from the shoulders (bright/dark lines), unit amplitude."""
    x = out.xs[None, :].astype(np.float32)
    y = out.ys[:, None].astype(np.float32)
    pattern = np.zeros((len(out.ys), len(out.xs)), np.float32)
    width = max(1.2, 0.8 * out.spacing[0])
    for side in (-1, 1):
        src = frame.to_world(np.array([side * (an.cav_ax + 25), -15.0, 0.0]))[0]
        for _ in range(int(rng.integers(4, 9))):
            th = rng.uniform(-0.5, 0.5) + (0 if side < 0 else np.pi)
            d = (x - src[0]) * np.sin(th) - (y - src[1]) * np.cos(th)
            pattern += float(rng.choice([-1.0, 1.0]) * rng.uniform(0.4, 1.0)) * np.exp(-(d / width) ** 2)
    return pattern


def render(ch: dict[str, np.ndarray], an: Anatomy, coarse: Grid, out: Grid, frame: Frame,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(image int16, label uint8), both (z, y, x) on the output grid."""
    p = an.p
    nz, ny, nx = out.shape_zyx
    cdz, odz = coarse.spacing[2], out.spacing[2]
    stack = np.stack([ch[c] for c in CHANNELS])
    if odz > 1.3 * cdz:  # slice thickness: average along z before sampling
        sigma = np.sqrt(odz**2 - cdz**2) / 2.355 / cdz
        stack = gaussian_filter1d(stack, sigma, axis=1, mode="nearest")
    t = torch.from_numpy(np.ascontiguousarray(stack))[None]
    t = F.interpolate(t, size=(nz, t.shape[-2], t.shape[-1]), mode="trilinear", align_corners=False)[0]
    t = t.permute(1, 0, 2, 3)  # (z, C, yc, xc)

    body_rows = np.nonzero((ch["body"] > 0).any(axis=(0, 2)))[0]
    bottom = float(coarse.ys[body_rows[0]]) if len(body_rows) else float(out.ys[0])
    bg = torch.from_numpy(_table(an, out, frame, bottom))
    bank, pad = _noise_bank(rng, ny, nx, p.kernel == "sharp")
    sharp = p.kernel == "sharp"
    ramp = max(0.6 if sharp else 1.2, 0.7 * out.spacing[0])
    k_edge = 1.0 / ramp
    trab = float(rng.uniform(180, 380))
    cort = float(rng.uniform(750, 1150))
    streak = torch.from_numpy(_streaks(an, out, frame, rng)) * p.streaks if p.streaks > 0 else None
    zp = out.zs - frame.shift[2]
    streak_w = np.clip((zp - (an.apex_z - 45)) / 40.0, 0, 1)
    xp, _ = frame.patient_xy(out)  # patient x > 0: patient's left
    side = torch.from_numpy(np.where(xp > 0, 2, 1).astype(np.uint8))
    bank_idx = rng.integers(0, bank.shape[0], nz)
    offs = rng.integers(0, pad, (nz, 2))

    image = np.empty((nz, ny, nx), np.int16)
    label = np.empty((nz, ny, nx), np.uint8)
    down = ny < t.shape[-2]
    for k0 in range(0, nz, SLAB):
        k1 = min(nz, k0 + SLAB)
        up = F.interpolate(t[k0:k1], size=(ny, nx), mode="bilinear", align_corners=False,
                           antialias=down)
        body, bone, lung, soft, lhu = up.unbind(1)
        occ = (bone * k_edge + 0.5).clamp_(0, 1)
        bone_hu = (1 - bone / 1.8).clamp_(0, 1).mul_(cort - trab).add_(trab)
        hu = torch.lerp(soft, bone_hu, occ)
        lab = (lung > 0).to(torch.uint8).mul_(side)
        occ = lung.mul_(k_edge).add_(0.5).clamp_(0, 1)
        hu = torch.lerp(hu, lhu, occ)
        occ = body.mul(k_edge).add_(0.5).clamp_(0, 1)
        hu = torch.lerp(bg.expand_as(hu), hu, occ)
        noise = torch.stack([bank[bank_idx[k], offs[k, 0]:offs[k, 0] + ny, offs[k, 1]:offs[k, 1] + nx]
                             for k in range(k0, k1)])
        hu.add_(noise, alpha=float(p.noise_sd)).add_(float(p.hu_offset))
        if streak is not None and streak_w[k0:k1].max() > 0:
            w = torch.from_numpy(streak_w[k0:k1].astype(np.float32))[:, None, None]
            hu.add_(streak * w * occ)
        image[k0:k1] = hu.clamp_(-1024, 3071).round_().numpy().astype(np.int16)
        label[k0:k1] = lab.numpy()
    return image, label
