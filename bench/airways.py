"""Trachea and main-bronchi extraction for the robustness bench, independent of lungseg.

Why here and not in lungseg: the bench checks that lung masks exclude the central airways,
so the airways must come from code that shares nothing with the methods under test.

Steps, on a RAS-reoriented copy of the CT (any stored orientation works):

1. light smoothing (Gaussian, ~1 mm) so the lumen reads below -900 HU and lung noise does not;
2. trachea seed: in the upper half of the scan, a round (circularity > 0.6), 40-700 mm^2,
   air-filled (< -900 HU) 2D component inside the body, within 30 mm of the body's midline,
   present at the same place on many consecutive slices (a vertical tube);
3. region growing = the 3D connected component of "smoothed HU < T" holding the seed, for
   T from -990 HU upwards in 10 HU steps; leak control: stop before the step where the
   volume more than doubles by over 30 mL or passes 300 mL (the front entered the lung);
4. carina: going down the trachea, the first level where the airway's cross-section splits
   into two branches of >= 10 mm^2 on either side of the trachea for >= 4 mm;
5. the tree is cut by geodesic (along-the-lumen) distance at the carina + 40 mm, which keeps
   the main bronchi and the first lobar branches.
"""

from __future__ import annotations

import cc3d
import nibabel as nib
import numpy as np
from scipy import ndimage
from skimage.graph import MCP_Geometric
from skimage.measure import perimeter

LUMEN_HU = -900.0
BELOW_CARINA_MM = 40.0
MAX_AIRWAY_ML = 300.0
LEAK_STEP_ML = 30.0  # one 10 HU step adding more than this (and doubling) is a leak


def to_ras(array: np.ndarray, affine: np.ndarray):
    """(array in RAS index order, spacing, function mapping a RAS array back to the input grid)."""
    ornt = nib.orientations.io_orientation(affine)
    ras = nib.orientations.apply_orientation(array, ornt)
    inv = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"), ornt)
    sp = np.zeros(3)
    for src, (dst, _) in enumerate(ornt):  # RAS axis dst comes from input axis src
        sp[int(dst)] = np.linalg.norm(affine[:3, src])

    def back(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(nib.orientations.apply_orientation(a, inv))

    return np.ascontiguousarray(ras), sp, back


def _body_slices(hu: np.ndarray) -> np.ndarray:
    """Per axial slice, the filled largest soft-tissue component (the patient, not the table)."""
    body = np.zeros(hu.shape, bool)
    for z in range(hu.shape[2]):
        tissue = hu[:, :, z] > -400
        lab, n = ndimage.label(tissue)
        if n == 0:
            continue
        big = np.argmax(np.bincount(lab.ravel())[1:]) + 1
        body[:, :, z] = ndimage.binary_fill_holes(lab == big)
    return body


def _find_seed(sm: np.ndarray, body: np.ndarray, sp: np.ndarray):
    """(x, y, z) voxel of the trachea, or None: the longest vertical chain of round central air."""
    px = sp[0] * sp[1]
    nz = sm.shape[2]
    cands = []  # (z, cx, cy)
    for z in range(nz // 3, nz):  # trachea lies in the upper part of a chest scan
        b = body[:, :, z]
        if b.sum() * px < 10_000:  # < 100 cm^2: above the shoulders or empty
            continue
        xs = np.nonzero(b.any(axis=1))[0]
        mid_x = 0.5 * (xs[0] + xs[-1])
        air = (sm[:, :, z] < LUMEN_HU) & b
        lab, n = ndimage.label(air)
        if n == 0:
            continue
        for i, sl in enumerate(ndimage.find_objects(lab), start=1):
            comp = lab[sl] == i
            area = comp.sum() * px
            if not 40 <= area <= 700:
                continue
            per = perimeter(comp) * np.sqrt(px)
            circ = 4 * np.pi * area / max(per, 1e-6) ** 2
            cx = sl[0].start + np.mean(np.nonzero(comp)[0])
            cy = sl[1].start + np.mean(np.nonzero(comp)[1])
            if circ > 0.6 and abs(cx - mid_x) * sp[0] < 30:
                cands.append((z, cx, cy))
    if not cands:
        return None
    cands = np.array(cands)
    best, best_len = None, 0
    for z0, x0, y0 in cands:  # chain: candidates within 8 mm in-plane of this one, contiguous in z
        near = cands[np.hypot((cands[:, 1] - x0) * sp[0], (cands[:, 2] - y0) * sp[1]) < 8]
        zs = np.unique(near[:, 0]).astype(int)
        run = _run_through(zs, int(z0))
        if run * sp[2] > best_len:
            best_len, best = run * sp[2], (int(round(x0)), int(round(y0)), int(z0))
    return best if best_len >= 20 else None


def _run_through(zs: np.ndarray, z0: int) -> int:
    """Length of the run of consecutive integers in sorted `zs` that contains z0."""
    s = set(zs.tolist())
    lo = hi = z0
    while lo - 1 in s:
        lo -= 1
    while hi + 1 in s:
        hi += 1
    return hi - lo + 1


def _grow(sm: np.ndarray, seed, sp: np.ndarray):
    """Seeded connected component under a rising threshold, stopped before it leaks."""
    voxel_ml = float(np.prod(sp)) / 1000
    prev, prev_t, prev_ml, trail = None, None, 0.0, []
    for t in range(-990, -790, 10):
        lab = cc3d.connected_components(sm < t, connectivity=6)
        idx = lab[seed]
        if idx == 0:
            trail.append((t, 0.0))
            continue
        comp = lab == idx
        ml = float(comp.sum() * voxel_ml)
        trail.append((t, round(ml, 1)))
        if ml > MAX_AIRWAY_ML or ml - prev_ml > max(LEAK_STEP_ML, prev_ml):  # leaked into the lung
            break
        prev, prev_t, prev_ml = comp, t, ml
    return prev, prev_t, trail


def _carina(tree: np.ndarray, seed, sp: np.ndarray):
    """Axial index of the carina: the airway below the seed splits into two side branches."""
    px = sp[0] * sp[1]
    need = max(1, int(np.ceil(4 / sp[2])))
    x_axis = seed[0]
    run = 0
    for z in range(seed[2], -1, -1):
        lab, n = ndimage.label(tree[:, :, z])
        if n == 0:
            run = 0
            continue
        areas = ndimage.sum(np.ones_like(lab), lab, range(1, n + 1)) * px
        cx = np.array(ndimage.center_of_mass(tree[:, :, z], lab, range(1, n + 1)))[:, 0]
        big = areas >= 10
        right = np.any(big & (cx > x_axis + 2 / sp[0]))  # RAS: larger x is patient right
        left = np.any(big & (cx < x_axis - 2 / sp[0]))
        run = run + 1 if (big.sum() >= 2 and right and left) else 0
        if run >= need:
            return z + need - 1
    return None


def extract_airways(hu: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, dict]:
    """Airway labels on the input grid (1 trachea above the carina, 2 bronchi below), plus what was found."""
    ras, sp, back = to_ras(hu, affine)
    sm = ndimage.gaussian_filter(ras.astype(np.float32), sigma=tuple(np.clip(1.0 / sp, 0.2, 1.5)))
    body = _body_slices(sm)
    seed = _find_seed(sm, body, sp)
    info: dict = {"seed_ras_index": seed}
    if seed is None:
        info["error"] = "no trachea found"
        return np.zeros(hu.shape, np.uint8), info
    tree, thr, trail = _grow(sm, seed, sp)
    info.update(threshold_hu=thr, growth_ml=trail)
    if tree is None:
        info["error"] = "region growing found nothing under -990..-800 HU"
        return np.zeros(hu.shape, np.uint8), info
    carina = _carina(tree, seed, sp)
    info["carina_ras_z"] = carina
    # geodesic distance along the lumen from the top of the tree
    nzs = np.nonzero(tree.any(axis=(0, 1)))[0]
    box = tuple(slice(max(0, a.min() - 1), a.max() + 2) for a in np.nonzero(tree))
    sub = tree[box]
    cost = np.where(sub, 1.0, np.inf)
    top = np.argwhere(sub[:, :, nzs.max() - box[2].start])
    starts = [(int(a), int(b), nzs.max() - box[2].start) for a, b in top]
    dist, _ = MCP_Geometric(cost, sampling=tuple(sp)).find_costs(starts)
    if carina is not None:
        at = sub[:, :, carina - box[2].start]
        d_carina = float(np.min(dist[:, :, carina - box[2].start][at]))
        keep = sub & (dist <= d_carina + BELOW_CARINA_MM)
        tree = np.zeros_like(tree)
        tree[box] = keep
        info["carina_geodesic_mm"] = round(d_carina, 1)
    else:
        info["warning"] = "no carina found: whole grown tree kept"
    labels = tree.astype(np.uint8)
    if carina is not None:
        labels[:, :, :carina] *= 2
    out = back(labels)
    info["volume_ml"] = round(float((out > 0).sum() * np.prod(sp) / 1000), 1)
    return out, info


def plot_airways(hu: np.ndarray, affine: np.ndarray, airway: np.ndarray, lung: np.ndarray | None,
                 info: dict, path, title: str) -> None:
    """Coronal minIP slab + coronal slice + axial slice below the carina, airway in red, lung outline cyan.

    Radiological view (patient right on image left); lets a reader judge the extraction.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ras, sp, _ = to_ras(hu, affine)
    aw, _, _ = to_ras((airway > 0).astype(np.uint8), affine)
    lg = to_ras((lung > 0).astype(np.uint8), affine)[0] if lung is not None else None
    carina = info.get("carina_ras_z")
    if aw.any():  # coronal plane through the airway at (or near) the carina
        z_ref = carina if carina is not None else int(np.median(np.nonzero(aw)[2]))
        near = aw[:, :, max(0, z_ref - 5):z_ref + 6]
        y0 = int(np.median(np.nonzero(near)[1])) if near.any() else int(np.median(np.nonzero(aw)[1]))
    else:
        y0 = ras.shape[1] // 2
    half = int(round(10 / sp[1]))
    ylo, yhi = max(0, y0 - half), min(ras.shape[1], y0 + half + 1)

    def cor(a):  # (x, z) -> rows superior first, columns patient right first
        return a[::-1, ::-1].T

    def axi(a):  # (x, y) -> rows anterior first, columns patient right first
        return a[::-1, ::-1].T

    minip = ras[:, ylo:yhi, :].min(axis=1)
    fig, axes = plt.subplots(1, 3, figsize=(16, 6))
    kw = dict(cmap="gray", vmin=-1000, vmax=200)
    axes[0].imshow(cor(minip), aspect=sp[2] / sp[0], **kw)
    axes[0].contour(cor(aw.max(axis=1)), levels=[0.5], colors="red", linewidths=0.8)
    axes[0].set_title(f"coronal minIP, {(yhi - ylo) * sp[1]:.0f} mm slab; airway outline red")
    axes[1].imshow(cor(ras[:, y0, :]), aspect=sp[2] / sp[0], **kw)
    axes[1].imshow(np.ma.masked_equal(cor(aw[:, y0, :]), 0), cmap="autumn", alpha=0.6,
                   aspect=sp[2] / sp[0])
    if lg is not None:
        axes[1].contour(cor(lg[:, y0, :]), levels=[0.5], colors="cyan", linewidths=0.8)
    axes[1].set_title("coronal slice; airway red, lung mask outline cyan")
    z = int(max(0, carina - round(15 / sp[2]))) if carina is not None else ras.shape[2] // 2
    axes[2].imshow(axi(ras[:, :, z]), aspect=sp[1] / sp[0], **kw)
    axes[2].imshow(np.ma.masked_equal(axi(aw[:, :, z]), 0), cmap="autumn", alpha=0.6,
                   aspect=sp[1] / sp[0])
    if lg is not None:
        axes[2].contour(axi(lg[:, :, z]), levels=[0.5], colors="cyan", linewidths=0.8)
    axes[2].set_title("axial, 15 mm below the carina")
    if carina is not None:
        for ax in axes[:2]:
            ax.axhline(ras.shape[2] - 1 - carina, color="yellow", lw=0.6, ls="--")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.text(0.01, 0.99, "R", color="yellow", transform=ax.transAxes, va="top")
        ax.text(0.97, 0.99, "L", color="yellow", transform=ax.transAxes, va="top")
    fig.suptitle(f"{title}: {info.get('volume_ml', 0)} mL, threshold {info.get('threshold_hu')} HU",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
