"""Robustness of lung masks on the real CT users bring (../shared/data), per method.

Why: a mask should not depend on how much of the chest the user scanned, tumours inside the
lung belong to it, and the trachea and main bronchi do not. The scans are unlabelled, so the
checks are self-consistency and anatomy, not Dice against a truth:

1. crop consistency on the four whole chests: segment the whole scan once (reference),
   then crop the IMAGE (bases only, apex only, slabs of 1/2/5 slices at 25/50/75 % of the
   lung extent, right or left side up to 2 cm past the midline; `--sweep` adds views of other
   heights, slabs of 3 / 10 / 30 mm at four heights, single slices at 17 heights, 3 to 99 %
   of the lung height, apex and base tips included, 1- / 5-slice views of each side crop at
   five heights, coronal / sagittal 1- and 5-slice views, and a field of view cut 5 mm inside the
   lungs' box, whole and in three single slices) and compare each crop's mask with the
   same crop of the reference (binary Dice, label Dice, right/left agreement);
2. pathology: share of tumour/nodule voxels inside the lung mask (real_pathology/), in the
   whole scan and in 1/2/5-slice slabs through the lesion segmented on their own;
3. central airways (bench/airways.py, independent of lungseg): volume and share inside the
   lung mask;
4. scans that hold no lung (the abdomen series): mL called lung, which should be 0 (bowel
   gas, the air between the arms and the body), in the whole scan and in thin views of it
   (1/2/5/10 slices at its bottom, middle and top: the worst of the three);
5. seconds per case; 6. overlays of the worst crops and of every lesion (the lesion's largest
   slice and the slice least inside the mask).

Uses only lungseg's public API (read_volume, Volume, segment, Predictor).

    python bench/real_robustness.py [--methods unet,classical] [--model PATH] [--quick] [--sweep]
        [--shared ../shared/data] [--out runs/real_robustness] [--figures docs/images]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: whole chests (name -> path under ../shared/data); A0002 (30 slices of 8 mm, a hilar mass) since
#: session 18: its table pad and its thick slices found faults the first three did not show
CHESTS = {
    "4dct": "real_unlabeled/chest_4dct_phase00.nii.gz",
    "lidc0314": "real_unlabeled/chest_lidc0314_thin.nii.gz",
    "lungpetctdx_a0001": "real_unlabeled/chest_lungpetctdx_a0001_5mm.nii.gz",
    "lungpetctdx_a0002": "real_pathology/ct_lungpetctdx_a0002_8mm.nii.gz",
}
#: scans with no lung in them (name -> path under ../shared/data)
NO_LUNG = {"abdomen_ct_dicom": "abdomen_ct_dicom"}
#: thin views of the no-lung scans (slices), from the scan's bottom to its top in steps of half
#: a view (every slice for 1 and 2): a pocket of bowel gas lies at some heights only
NO_LUNG_VIEWS = (1, 2, 5, 10)
SLAB_SLICES = (1, 2, 5)
SLAB_LEVELS = (0.25, 0.50, 0.75)
BASES_FRACTION = 0.25
APEX_FRACTION = 0.20
MIDLINE_MARGIN_MM = 20.0
#: `--sweep` adds these: apex / bases views of other heights, slabs of a given thickness in mm
#: (what a user's slab is, whatever the slice spacing) at four heights, the middle half of the
#: lungs, and the front / back 60 % of the field of view
SWEEP_FRACTIONS = (0.10, 0.30, 0.45)
SWEEP_SLAB_MM = (3.0, 10.0, 30.0)
SWEEP_LEVELS = (0.10, 0.40, 0.60, 0.90)
#: `--sweep` also segments single axial slices at these heights (share of the lung height,
#: from its lowest slice): a user's one slice can come from anywhere, the apex tip included
SWEEP_SLICE_LEVELS = tuple(round(0.03 + 0.06 * i, 2) for i in range(17))
SINGLE = "1 slice@"
#: `--sweep` also segments thin views of the lateral crops (one side of the body up to
#: `MIDLINE_MARGIN_MM` past the midline): 1 and 5 slices at these heights, named
#: "<side> <k> sl@<height>": one lung in a slab, its side from the spine or, without one, the cut
SIDE_THIN_SLICES = (1, 5)
SIDE_THIN_LEVELS = (0.10, 0.30, 0.50, 0.70, 0.90)
SIDE_THIN = " sl@"
#: `--sweep` also segments coronal and sagittal thin views: 1 and 5 slices at these shares of
#: the lungs' front-back (coronal) and right-left (sagittal: through each lung) extent, named
#: "coronal <k> sl@<f>" / "sagittal <k> sl@<f>"
ORTHO_SLICES = (1, 5)
CORONAL_LEVELS = (0.25, 0.50, 0.75)
SAGITTAL_LEVELS = (0.20, 0.80)
ORTHO = ("coronal ", "sagittal ")
#: `--sweep` also segments a field of view drawn tight round the lungs, `TIGHT_MM` inside their
#: box on the four in-plane sides (a target reconstruction that cuts both lungs), whole and in
#: single slices at `TIGHT_LEVELS` of the lung height
TIGHT_MM = 5.0
TIGHT_LEVELS = (0.25, 0.50, 0.75)
N_WORST = 4


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- geometry and metrics


def axis_of(affine: np.ndarray, codes: str) -> tuple[int, int]:
    """(voxel axis, +1/-1) of the world direction named by `codes[0]` (e.g. "SI" -> superior)."""
    import nibabel as nib

    ax = nib.aff2axcodes(affine)
    for i, c in enumerate(ax):
        if c in codes:
            return i, (1 if c == codes[0] else -1)
    raise ValueError(f"no {codes} axis in {ax}")


def crop_volume(volume, box: tuple[slice, slice, slice]):
    """The image cropped to `box`, with the origin moved so every voxel keeps its world position."""
    import lungseg

    start = np.array([s.start for s in box], float)
    affine = volume.affine.copy()
    affine[:3, 3] = volume.affine[:3, :3] @ start + volume.affine[:3, 3]
    return lungseg.Volume(np.ascontiguousarray(volume.array[box]), affine)


def _box(axis: int, lo: int, hi: int, shape) -> tuple[slice, slice, slice]:
    box = [slice(0, n) for n in shape]
    box[axis] = slice(max(0, lo), min(shape[axis], hi + 1))
    return tuple(box)


def make_crops(volume, ref: np.ndarray, sweep: bool = False) -> list[tuple[str, tuple[slice, slice, slice]]]:
    """The crops of a whole chest, placed from the reference mask's lung extent (`sweep`: and
    the `SWEEP_*` ones)."""
    s_ax, s_sign = axis_of(volume.affine, "SI")
    n = volume.shape[s_ax]
    lung_idx = np.nonzero((ref > 0).any(axis=tuple(a for a in range(3) if a != s_ax)))[0]
    if lung_idx.size == 0:
        return []

    def to_index(p0: int, p1: int) -> tuple[int, int]:  # superior positions -> index range
        return (p0, p1) if s_sign > 0 else (n - 1 - p1, n - 1 - p0)

    pos = lung_idx if s_sign > 0 else n - 1 - lung_idx  # 0 = most inferior slice of the scan
    p_lo, p_hi = int(pos.min()), int(pos.max())
    extent = p_hi - p_lo + 1
    crops = [("bases", _box(s_ax, *to_index(0, p_lo + round(BASES_FRACTION * extent)), volume.shape)),
             ("apex", _box(s_ax, *to_index(p_hi - round(APEX_FRACTION * extent), n - 1), volume.shape))]
    for level in SLAB_LEVELS:
        centre = p_lo + round(level * (extent - 1))
        for k in SLAB_SLICES:
            p0 = centre - (k - 1) // 2
            crops.append((f"slab{k}@{round(level * 100)}%",
                          _box(s_ax, *to_index(p0, p0 + k - 1), volume.shape)))
    # lateral: one side of the body up to MIDLINE_MARGIN_MM past the lungs' midline
    x_ax, _ = axis_of(volume.affine, "RL")
    idx = np.arange(volume.shape[x_ax])
    centre_vox = (np.array(volume.shape) - 1) / 2
    world_x = volume.affine[0, 3] + volume.affine[0, :3] @ centre_vox \
        + volume.affine[0, x_ax] * (idx - centre_vox[x_ax])
    lung_x = world_x[np.nonzero((ref > 0).any(axis=tuple(a for a in range(3) if a != x_ax)))[0]]
    mid = 0.5 * (lung_x.min() + lung_x.max())
    sides = []
    for name, keep in (("right side", world_x >= mid - MIDLINE_MARGIN_MM),  # RAS: right = larger x
                       ("left side", world_x <= mid + MIDLINE_MARGIN_MM)):
        sel = np.nonzero(keep)[0]
        sides.append((name, _box(x_ax, int(sel.min()), int(sel.max()), volume.shape)))
    crops += sides
    if sweep:
        for f in SWEEP_FRACTIONS:
            crops.append((f"apex {f:.0%}", _box(s_ax, *to_index(p_hi - round(f * extent), n - 1), volume.shape)))
            crops.append((f"bases {f:.0%}", _box(s_ax, *to_index(0, p_lo + round(f * extent)), volume.shape)))
        step = float(np.abs(volume.affine[:3, s_ax]).max())
        for mm in SWEEP_SLAB_MM:
            k = max(1, round(mm / step))
            for level in SWEEP_LEVELS:
                p0 = p_lo + round(level * (extent - 1)) - (k - 1) // 2
                crops.append((f"{mm:.0f} mm@{level:.0%}", _box(s_ax, *to_index(p0, p0 + k - 1), volume.shape)))
        crops.append(("middle half", _box(s_ax, *to_index(p_lo + round(0.25 * extent), p_lo + round(0.75 * extent)),
                                          volume.shape)))
        y_ax, y_sign = axis_of(volume.affine, "AP")
        ny = volume.shape[y_ax]
        front, back = (int(0.4 * ny), ny - 1), (0, int(0.6 * ny))
        if y_sign < 0:
            front, back = back, front
        crops.append(("front 60%", _box(y_ax, *front, volume.shape)))
        crops.append(("back 60%", _box(y_ax, *back, volume.shape)))
        for level in SWEEP_SLICE_LEVELS:
            p0 = p_lo + round(level * (extent - 1))
            crops.append((f"{SINGLE}{level:.0%}", _box(s_ax, *to_index(p0, p0), volume.shape)))
        for name, side in sides:
            for k in SIDE_THIN_SLICES:
                for level in SIDE_THIN_LEVELS:
                    p0 = p_lo + round(level * (extent - 1)) - (k - 1) // 2
                    box = list(side)
                    box[s_ax] = _box(s_ax, *to_index(p0, p0 + k - 1), volume.shape)[s_ax]
                    crops.append((f"{name} {k}{SIDE_THIN}{level:.0%}", tuple(box)))
        tight = list(_box(s_ax, 0, n - 1, volume.shape))
        for ax_name in ("RL", "AP"):
            ax, _ = axis_of(volume.affine, ax_name)
            occ = np.nonzero((ref > 0).any(axis=tuple(a for a in range(3) if a != ax)))[0]
            cut = int(round(TIGHT_MM / float(np.abs(volume.affine[:3, ax]).max())))
            tight[ax] = _box(ax, int(occ.min()) + cut, int(occ.max()) - cut, volume.shape)[ax]
        crops.append(("tight fov", tuple(tight)))
        for level in TIGHT_LEVELS:
            box = list(tight)
            p0 = p_lo + round(level * (extent - 1))
            box[s_ax] = _box(s_ax, *to_index(p0, p0), volume.shape)[s_ax]
            crops.append((f"tight fov, one slice at {level:.0%}", tuple(box)))
        for plane, (ax_name, levels) in zip(ORTHO, (("AP", CORONAL_LEVELS), ("RL", SAGITTAL_LEVELS)), strict=True):
            ax, _ = axis_of(volume.affine, ax_name)
            occ = np.nonzero((ref > 0).any(axis=tuple(a for a in range(3) if a != ax)))[0]
            for k in ORTHO_SLICES:
                for level in levels:
                    p0 = int(occ.min() + round(level * (occ.max() - occ.min()))) - (k - 1) // 2
                    crops.append((f"{plane}{k} sl@{level:.0%}", _box(ax, p0, p0 + k - 1, volume.shape)))
    return crops


def compare(pred: np.ndarray, ref: np.ndarray) -> dict:
    """Binary Dice, label Dice (mean over labels 1, 2 present in either) and R/L agreement."""
    p, r = pred > 0, ref > 0
    denom = int(p.sum() + r.sum())
    binary = 2 * int((p & r).sum()) / denom if denom else 1.0
    per = {}
    for lab, side in ((1, "right"), (2, "left")):
        pl, rl = pred == lab, ref == lab
        d = int(pl.sum() + rl.sum())
        per[f"dice_{side}"] = 2 * int((pl & rl).sum()) / d if d else None
        per[f"ref_{side}_voxels"] = int(rl.sum())
    dices = [v for k, v in per.items() if k.startswith("dice_") and v is not None]
    both = p & r
    agree = float((pred[both] == ref[both]).mean()) if both.any() else None
    return {"binary_dice": binary, "label_dice": float(np.mean(dices)) if dices else 1.0,
            "rl_agreement": agree, **per, "pred_lung_voxels": int(p.sum()), "ref_lung_voxels": int(r.sum())}


# ---------------------------------------------------------------- figures


def save_fig(fig, paths) -> list[str]:
    """Save a figure to each path through a temporary file (never a half-written PNG)."""
    import matplotlib.pyplot as plt

    out = []
    for path in paths:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".png", dir=path.parent)
        os.close(fd)
        fig.savefig(tmp, dpi=80)
        os.replace(tmp, path)
        out.append(str(path))
    plt.close(fig)
    return out


def crop_views(image, pred: np.ndarray, ref: np.ndarray) -> dict:
    """2D axial and coronal views (RAS display order) where the crop and reference differ most."""
    from airways import to_ras

    ct, sp, _ = to_ras(image.array, image.affine)
    pr = to_ras(pred, image.affine)[0]
    rf = to_ras(ref, image.affine)[0]
    diff = pr != rf
    lung = (pr > 0) | (rf > 0)
    z = int(np.argmax(diff.sum(axis=(0, 1)))) if diff.any() else ct.shape[2] // 2
    y = int(np.argmax(diff.sum(axis=(0, 2)))) if diff.any() else (
        int(np.median(np.nonzero(lung)[1])) if lung.any() else ct.shape[1] // 2)
    return {"sp": sp, "axial": [a[:, :, z].copy() for a in (ct, pr, rf)],
            "coronal": [a[:, y, :].copy() for a in (ct, pr, rf)] if ct.shape[2] * sp[2] >= 10 else None}


def plot_crop(views: dict, title: str, paths,
              labels: tuple[str, str] = ("crop's mask", "whole-scan mask, same crop")) -> list[str]:
    """Crop's mask vs the whole-scan mask on the same crop (right lung orange, left cyan)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    cmap = ListedColormap(["none", "tab:orange", "tab:cyan"])
    sp = views["sp"]
    rows = [("axial", sp[1] / sp[0])] + ([("coronal", sp[2] / sp[0])] if views["coronal"] else [])
    heights = [views[n][0].shape[1] * a / views[n][0].shape[0] for n, a in rows]  # panel h / w
    fig, axes = plt.subplots(len(rows), 3, figsize=(13, 0.6 + 4.2 * sum(heights) + 0.4 * len(rows)),
                             squeeze=False, gridspec_kw={"height_ratios": heights})
    for r, (name, aspect) in enumerate(rows):
        ct, pr, rf = (a[::-1, ::-1].T for a in views[name])  # patient right on image left, A/S up
        for c, (m, label) in enumerate(((pr, labels[0]), (rf, labels[1]))):
            axes[r, c].imshow(ct, cmap="gray", vmin=-1000, vmax=200, aspect=aspect)
            axes[r, c].imshow(m, cmap=cmap, vmin=0, vmax=2, alpha=0.45, aspect=aspect,
                              interpolation="nearest")
            axes[r, c].set_title(f"{name}: {label}", fontsize=9)
        axes[r, 2].imshow(ct, cmap="gray", vmin=-1000, vmax=200, aspect=aspect)
        axes[r, 2].imshow(np.ma.masked_equal((pr != rf).astype(np.uint8), 0), cmap="autumn",
                          alpha=0.8, aspect=aspect, interpolation="nearest")
        axes[r, 2].set_title(f"{name}: disagreement (red)", fontsize=9)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.text(0.01, 0.99, "R", color="yellow", transform=ax.transAxes, va="top")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_fig(fig, paths)


# ---------------------------------------------------------------- the checks


def run_segment(volume, method: str, predictor) -> tuple[np.ndarray | None, float, str | None]:
    """(mask array or None, seconds, error text): a refusal is a result, not a crash."""
    import lungseg

    t0 = time.perf_counter()
    try:
        mask = lungseg.segment(volume, method=method, predictor=predictor)
        arr = np.asarray(mask.array)
        if arr.shape != volume.shape:
            raise ValueError(f"mask shape {arr.shape} != image shape {volume.shape}")
        return arr, time.perf_counter() - t0, None
    except Exception as exc:  # noqa: BLE001  (any failure is recorded and scored 0)
        return None, time.perf_counter() - t0, f"{type(exc).__name__}: {exc}"


def check_chest(name: str, image, method: str, predictor, worst: list, sweep: bool = False) -> dict:
    """Whole-scan reference, then every crop against the same crop of the reference."""
    ref, secs, err = run_segment(image, method, predictor)
    vox_ml = float(np.prod(image.spacing)) / 1000
    whole = {"chest": name, "shape": list(image.shape), "spacing_mm": [round(s, 3) for s in image.spacing],
             "seconds": round(secs, 2), "error": err}
    if ref is None:
        return {"whole": whole, "crops": [], "ref": None}
    whole.update(right_ml=round(float((ref == 1).sum() * vox_ml), 1),
                 left_ml=round(float((ref == 2).sum() * vox_ml), 1))
    log(f"  {method} {name} whole: {secs:.1f} s, R {whole['right_ml']} mL, L {whole['left_ml']} mL")
    rows = []
    for crop_name, box in make_crops(image, ref, sweep):
        sub = crop_volume(image, box)
        pred, secs, err = run_segment(sub, method, predictor)
        ref_crop = ref[box]
        if pred is None:
            m = compare(np.zeros_like(ref_crop), ref_crop)
            m.update(binary_dice=0.0, label_dice=0.0, rl_agreement=None, dice_right=0.0, dice_left=0.0)
        else:
            m = compare(pred, ref_crop)
        row = {"chest": name, "crop": crop_name, "shape": list(sub.shape),
               "index_range": [[s.start, s.stop] for s in box], "seconds": round(secs, 2),
               "error": err, **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.items()}}
        rows.append(row)
        log(f"    {crop_name:>12} {sub.shape}: label Dice {row['label_dice']:.3f}, {secs:.1f} s"
            + (f"  [{err}]" if err else ""))
        score = row["label_dice"]
        if crop_name.startswith(SINGLE) or SIDE_THIN in crop_name:  # the overlays show views; a slice at a lung tip holds ~1 mL
            continue
        if len(worst) < N_WORST or score < max(w[0] for w in worst):
            views = crop_views(sub, pred if pred is not None else np.zeros_like(ref_crop), ref_crop)
            worst.append((score, row, views))
            worst.sort(key=lambda w: w[0])
            del worst[N_WORST:]
    return {"whole": whole, "crops": rows, "ref": ref}


def check_pathology(shared: Path, method: str, predictor, views: list | None = None) -> list[dict]:
    """Share of tumour / nodule voxels the lung mask keeps, per real_pathology case (with
    `views`, a list, also its `lesion_views` for the overlay figure)."""
    import lungseg

    rows = []
    for lab_path in sorted((shared / "real_pathology").glob("*_tumour.nii.gz")):
        name = lab_path.name.removesuffix("_tumour.nii.gz")
        img_path = lab_path.with_name(f"{name}.nii.gz")
        if not img_path.exists():
            continue
        image = lungseg.read_volume(img_path)
        label = np.asarray(lungseg.read_volume(lab_path).array)
        if "lidc" in name:
            sel, kind = label >= 2, "nodule, readers >= 2"
        elif "ibsi" in name:
            sel, kind = label > 0, "GTV"
        else:
            sel, kind = label > 0, "box (coarse)"
        mask, secs, err = run_segment(image, method, predictor)
        row = {"case": name, "label": kind, "label_voxels": int(sel.sum()), "seconds": round(secs, 2),
               "error": err}
        if mask is not None and sel.any():
            inside = mask[sel]
            row.update(inside_lung=round(float((inside > 0).mean()), 4),
                       in_right=round(float((inside == 1).mean()), 4),
                       in_left=round(float((inside == 2).mean()), 4))
            row["slabs"] = lesion_slabs(image, sel, mask, method, predictor)
            if views is not None:
                views.append((name, kind, row["inside_lung"], lesion_views(image, sel, mask)))
        else:
            row["inside_lung"] = 0.0 if err else None
        rows.append(row)
        slabs = " ".join(f"{r['crop']} {fmt(r['inside_lung'])}" for r in row.get("slabs", []))
        log(f"  {method} {name}: {row.get('inside_lung')} inside ({slabs}), {secs:.1f} s" + (f" [{err}]" if err else ""))
    return rows


def check_no_lung(shared: Path, method: str, predictor) -> list[dict]:
    """mL called lung on each scan of `NO_LUNG` that is present (should be 0)."""
    import lungseg

    rows = []
    for name, rel in NO_LUNG.items():
        if not (shared / rel).exists():
            continue
        image = lungseg.read_volume(shared / rel)
        mask, secs, err = run_segment(image, method, predictor)
        ml = None if mask is None else round(float((mask > 0).sum() * image.voxel_ml), 1)
        rows.append({"case": name, "shape": list(image.shape), "lung_ml": ml, "seconds": round(secs, 2), "error": err})
        log(f"  {method} {name} (no lung): {ml} mL called lung, {secs:.1f} s" + (f" [{err}]" if err else ""))
        s_ax, _ = axis_of(image.affine, "SI")
        n = image.shape[s_ax]
        for k in NO_LUNG_VIEWS:
            if k >= n:
                continue
            views, total_s, errs = [], 0.0, []
            for start in sorted(set(range(0, n - k + 1, max(1, k // 2))) | {n - k}):
                crop = crop_volume(image, _box(s_ax, start, start + k - 1, image.shape))
                mask, secs, err = run_segment(crop, method, predictor)
                total_s += secs
                errs += [err] if err else []
                views.append(None if mask is None else round(float((mask > 0).sum() * crop.voxel_ml), 1))
            worst = None if None in views else max(views)
            rows.append({"case": f"{name}, {k}-slice views ({len(views)}, bottom to top; worst)", "shape": list(crop.shape),
                         "lung_ml": worst, "views_ml": views, "seconds": round(total_s, 2),
                         "error": "; ".join(errs) or None})
            log(f"  {method} {name} {k}-slice views: {views} mL called lung, {total_s:.1f} s")
    return rows


def lesion_slabs(image, sel: np.ndarray, whole: np.ndarray, method: str, predictor) -> list[dict]:
    """A thin scan through the lesion: slabs of SLAB_SLICES slices around the axial slice that
    holds most of the label, each segmented on its own; the share of the label inside the
    slab's mask next to the whole-scan mask's share on the same slices."""
    s_ax, _ = axis_of(image.affine, "SI")
    per_slice = sel.sum(axis=tuple(a for a in range(3) if a != s_ax))
    centre = int(np.argmax(per_slice))
    rows = []
    for k in SLAB_SLICES:
        box = _box(s_ax, centre - (k - 1) // 2, centre - (k - 1) // 2 + k - 1, image.shape)
        mask, secs, err = run_segment(crop_volume(image, box), method, predictor)
        row = {"crop": f"slab{k}", "error": err, "seconds": round(secs, 2),
               "whole_scan_inside": round(float((whole[box][sel[box]] > 0).mean()), 4)}
        row["inside_lung"] = None if mask is None else round(float((mask[sel[box]] > 0).mean()), 4)
        rows.append(row)
    return rows


def airway_row(name: str, airway: np.ndarray, info: dict, ref: np.ndarray | None) -> dict:
    """Airway volume and how much of it (whole tree; trachea above the carina) the lung mask takes."""
    row = {"chest": name, "airway_ml": info.get("volume_ml"), "threshold_hu": info.get("threshold_hu"),
           "carina_found": info.get("carina_ras_z") is not None, "error": info.get("error")}
    if ref is not None and airway.any():
        row["inside_lung"] = round(float((ref[airway > 0] > 0).mean()), 4)
        tr = airway == 1
        row["trachea_inside_lung"] = round(float((ref[tr] > 0).mean()), 4) if tr.any() else None
    return row


# ---------------------------------------------------------------- output


def fmt(v, nd=3) -> str:
    return "–" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))


def table(method: str, res: dict) -> str:
    """One markdown table per method: crops, pathology, airways, seconds."""
    lines = [f"\n### {method}\n",
             "| case | check | binary Dice | label Dice | R/L agree | inside lung | s | note |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for ch in res["chests"]:
        w = ch["whole"]
        note = w["error"] or f"whole scan {tuple(w['shape'])}: R {w['right_ml']:.0f} mL, L {w['left_ml']:.0f} mL"
        lines.append(f"| {w['chest']} | whole (reference) | | | | | {w['seconds']:.1f} | {note} |")
        for r in ch["crops"]:
            if r["error"]:
                note = r["error"][:90]
            elif r["ref_lung_voxels"] and r["pred_lung_voxels"] == 0:
                note = "crop mask empty"
            else:
                note = f"Dice R {fmt(r['dice_right'], 2)} / L {fmt(r['dice_left'], 2)}"
            lines.append(f"| {r['chest']} | {r['crop']} {tuple(r['shape'])} | {fmt(r['binary_dice'])} | "
                         f"{fmt(r['label_dice'])} | {fmt(r['rl_agreement'])} | | {r['seconds']:.1f} | {note} |")
    every = [r for ch in res["chests"] for r in ch["crops"]]
    single = [r for r in every if r["crop"].startswith(SINGLE)]
    ortho = [r for r in every if r["crop"].startswith(ORTHO)]
    side_thin = [r for r in every if SIDE_THIN in r["crop"] and r not in ortho]
    for what, crops in (("crops", [r for r in every if r not in single and r not in side_thin and r not in ortho]),
                        ("single slices (3-99 % of the lung height)", single),
                        ("1- and 5-slice views of one side", side_thin),
                        ("1- and 5-slice coronal / sagittal views", ortho)):
        if crops:
            agree = [r["rl_agreement"] for r in crops if r["rl_agreement"] is not None]
            lines.append(f"| all chests | mean over {len(crops)} {what} | "
                         f"{np.mean([r['binary_dice'] for r in crops]):.3f} | "
                         f"{np.mean([r['label_dice'] for r in crops]):.3f} | "
                         f"{np.mean(agree) if agree else float('nan'):.3f} | | "
                         f"{sum(r['seconds'] for r in crops):.1f} | "
                         f"{sum(bool(r['error']) for r in crops)} errors; "
                         f"{sum(a < 0.98 for a in agree)} with R/L agreement < 0.98 |")
    for r in res["pathology"]:
        side = f"R {r['in_right']:.2f} / L {r['in_left']:.2f}" if "in_right" in r else ""
        lines.append(f"| {r['case']} | {r['label']} ({r['label_voxels']} vox) | | | | "
                     f"{fmt(r['inside_lung'])} | {r['seconds']:.1f} | {(r['error'] or side)[:90]} |")
        for sl in r.get("slabs", []):
            lines.append(f"| {r['case']} | {sl['crop']} through the lesion | | | | {fmt(sl['inside_lung'])} | "
                         f"{sl['seconds']:.1f} | whole-scan mask on these slices: {fmt(sl['whole_scan_inside'])} |")
    for r in res["airways"]:
        note = r["error"] or f"airway {r['airway_ml']} mL; trachea inside lung {fmt(r.get('trachea_inside_lung'))}"
        lines.append(f"| {r['chest']} | airways (trachea to lobar bronchi) | | | | "
                     f"{fmt(r.get('inside_lung'))} | | {note} |")
    for r in res.get("no_lung", []):
        hit = [v for v in r.get("views_ml") or [] if v]
        views = (f" ({len(hit)} of {len(r['views_ml'])} views: {' / '.join(fmt(v, 1) for v in hit) or 'none'})"
                 if r.get("views_ml") else "")
        note = r["error"] or f"{fmt(r['lung_ml'], 1)} mL called lung{views} (no lung in this scan: 0 expected)"
        lines.append(f"| {r['case']} {tuple(r['shape'])} | no lung | | | | | {r['seconds']:.1f} | {note} |")
    return "\n".join(lines)


def write_json(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".json", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=1, default=lambda o: o.item() if hasattr(o, "item") else str(o))
    os.replace(tmp, path)


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_")


def bench_parser(doc: str, out: str) -> argparse.ArgumentParser:
    """The options every real-data bench takes (methods, model, shared data, output, figures)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default="unet,classical")
    p.add_argument("--model", default=None, help="model file for unet (default: the packaged model)")
    p.add_argument("--shared", default=None, help="default: <repo>/../shared/data")
    p.add_argument("--out", default=out)
    p.add_argument("--figures", default=None, help="also save the figures here (e.g. docs/images)")
    return p


def shared_and_methods(p: argparse.ArgumentParser, args) -> tuple[Path, list[str]] | None:
    """(shared data folder, methods), or None (printed: skipped) when ../shared is absent."""
    shared = Path(args.shared) if args.shared else Path(__file__).resolve().parents[2] / "shared" / "data"
    if not (shared / "real_unlabeled").is_dir():
        print(f"skipped: ../shared/data not found ({shared})")
        return None
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods or any(m not in ("unet", "classical") for m in methods):
        p.error("--methods takes unet and/or classical")
    return shared, methods


def bench_setup(p: argparse.ArgumentParser):
    """Parse the options, find ../shared, load the model once and make the output folder for
    every real-data bench: (args, shared, methods, predictor or None, out folder), or None
    (printed: skipped) without ../shared."""
    args = p.parse_args()
    found = shared_and_methods(p, args)
    if found is None:
        return None
    shared, methods = found
    import lungseg

    predictor = lungseg.Predictor(args.model) if "unet" in methods else None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return args, shared, methods, predictor, out


class CleanCase(NamedTuple):
    """One shared chest and method with the clean scan's masks, as a painted bench starts from."""
    name: str
    image: object  # lungseg.Volume
    method: str
    predictor: object  # the Predictor for "unet", None for "classical"
    clean: np.ndarray  # the clean scan's mask
    crops: dict  # view name -> box (`make_crops`, those named in `views`)
    clean_views: dict  # view name -> the clean scan's view segmented on its own (with `view_masks`)


def clean_cases(shared: Path, methods: list[str], predictor, views=(), view_masks: bool = True,
                chests: dict[str, str] | None = None):
    """Each shared chest (`chests`, default `CHESTS`) and method with its clean masks: the loop
    every painted bench runs; a chest or method without a clean mask is logged and skipped."""
    for name, image in shared_chests(shared, CHESTS if chests is None else chests):
        for method in methods:
            pred = predictor if method == "unet" else None
            clean, _, err = run_segment(image, method, pred)
            if clean is None or not (clean > 0).any():
                log(f"  {method} {name}: no clean mask ({err})")
                continue
            crops = {v: box for v, box in make_crops(image, clean) if v in views}
            clean_views = ({v: run_segment(crop_volume(image, box), method, pred)[0] for v, box in crops.items()}
                           if view_masks else {})
            yield CleanCase(name, image, method, pred, clean, crops, clean_views)


def shared_chests(shared: Path, chests: dict[str, str]):
    """(name, Volume) of each chest found under `shared`; the missing ones are logged and skipped."""
    import lungseg

    for name, rel in chests.items():
        path = shared / rel
        if not path.exists():
            log(f"skip {name}: {path} not found")
            continue
        yield name, lungseg.read_volume(path)


def painted_row(painted, clean: np.ndarray, boxes: dict, refs: dict, method: str,
                predictor) -> tuple[dict, np.ndarray]:
    """(row, the painted scan's mask): that mask against the clean scan's (label Dice, mL lost
    and added, seconds), whole and in each view of `boxes` against `refs[view]` (views with no
    lung there skipped): the scoring every painted-pathology bench shares."""
    mask, secs, err = run_segment(painted, method, predictor)
    mask = np.zeros_like(clean) if mask is None else mask
    a, b = mask > 0, clean > 0
    voxel_ml = float(np.prod(painted.spacing)) / 1000
    row = {"whole": round(compare(mask, clean)["label_dice"], 4),
           "lost_ml": round(float((b & ~a).sum() * voxel_ml), 1),
           "added_ml": round(float((a & ~b).sum() * voxel_ml), 1),
           "seconds": round(secs, 1), "error": err}
    for view, box in boxes.items():
        ref = refs.get(view)
        if ref is None or not (ref > 0).any():
            continue
        vm, _, _ = run_segment(crop_volume(painted, box), method, predictor)
        row[view] = round(compare(np.zeros_like(ref) if vm is None else vm, ref)["label_dice"], 4)
    return row, mask


class Painting(NamedTuple):
    """A painted scan and what its masks should be (`run_painted`)."""
    volume: object  # lungseg.Volume: the painted scan
    truth: np.ndarray  # its whole mask should be this (the clean mask, or less of it)
    refs: dict  # view name -> that view's mask should be this
    fields: object  # mask -> the row's own columns (dict), from the painted scan's mask


def run_painted(shared: Path, methods: list[str], predictor, levels, paint, views,
                figure_level=None) -> tuple[dict, dict]:
    """The painted benches' loop: for each shared chest and method (`clean_cases`) and each level
    (the i-th painted with `numpy.random.default_rng(i)`), `paint(case, level, rng)` gives a
    `Painting`, scored whole and per view by `painted_row`. Returns ({method: rows}, {method: the
    worst whole scan at `figure_level` as (row, `crop_views`) or None}) for `save_worst_figures`."""
    rows = {m: [] for m in methods}
    worst = {m: None for m in methods}
    for case in clean_cases(shared, methods, predictor, views):
        for i, level in enumerate(levels):
            painting = paint(case, level, np.random.default_rng(i))
            scored, mask = painted_row(painting.volume, painting.truth, case.crops, painting.refs, case.method,
                                       case.predictor)
            row = {"chest": case.name, "level": level, **painting.fields(mask), **scored}
            if level == figure_level and (worst[case.method] is None or row["whole"] < worst[case.method][0]["whole"]):
                worst[case.method] = (row, crop_views(painting.volume, mask, painting.truth))
            rows[case.method].append(row)
            log(f"  {case.method} {case.name} {level}: {row}")
    return rows, worst


def save_worst_figures(worst: dict, out: Path, figures: str | None, stem: str, title,
                       reference: str = "clean scan's mask") -> dict:
    """Each method's worst painted case (`worst[method]`: (row, `crop_views`) or None) drawn as the
    painted scan's mask against the clean one (`reference` names it), `<stem>_<method>.png` in
    `out` and in `figures` when given; `title(method, row)` is its title. {method: the paths
    written}."""
    saved = {}
    for method, found in worst.items():
        if found is None:
            continue
        row, views = found
        paths = [out / f"{stem}_{method}.png"] + ([Path(figures) / f"{stem}_{method}.png"] if figures else [])
        saved[method] = plot_crop(views, title(method, row), paths,
                                  labels=("painted scan's mask", reference))
    return saved


def lesion_views(image, sel: np.ndarray, mask: np.ndarray, margin_mm: float = 40.0) -> list[tuple]:
    """Two axial views (RAS display order, zoomed on the lesion): the slice with the most lesion
    voxels, and the lesion slice whose voxels are least inside the mask (among slices holding
    at least a quarter of the largest one's area). Each: (CT, mask, lesion, axial index, inside)."""
    from airways import to_ras

    ct, sp, _ = to_ras(image.array, image.affine)
    m = to_ras(mask, image.affine)[0]
    t = to_ras(sel.astype(np.uint8), image.affine)[0] > 0
    area = t.sum(axis=(0, 1))
    inside = np.array([(m[:, :, z][t[:, :, z]] > 0).mean() if area[z] else 1.0 for z in range(t.shape[2])])
    big = int(np.argmax(area))
    cand = np.flatnonzero(area >= 0.25 * area.max())
    low = int(cand[np.argmin(inside[cand])])
    ij = np.argwhere(t.any(axis=2))
    pad = np.ceil(margin_mm / sp[:2]).astype(int)
    lo = np.maximum(ij.min(0) - pad, 0)
    hi = np.minimum(ij.max(0) + pad + 1, t.shape[:2])
    box = (slice(lo[0], hi[0]), slice(lo[1], hi[1]))
    return [(ct[box + (z,)].copy(), m[box + (z,)].copy(), t[box + (z,)].copy(), z, float(inside[z]))
            for z in dict.fromkeys((big, low))]


def plot_lesions(views: list, method: str, paths) -> list[str]:
    """One row per pathology case: the lung mask (right orange, left cyan) and the lesion's outline
    (red) on the views of `lesion_views`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    cmap = ListedColormap(["none", "tab:orange", "tab:cyan"])
    fig, axes = plt.subplots(len(views), 2, figsize=(8, 3.6 * len(views)), squeeze=False)
    for r, (name, kind, total, panels) in enumerate(views):
        for c in range(2):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(panels):
                ax.axis("off")
                continue
            ct, m, t, z, inside = panels[c]
            ax.imshow(ct[::-1, ::-1].T, cmap="gray", vmin=-1000, vmax=200)
            ax.imshow(m[::-1, ::-1].T, cmap=cmap, vmin=0, vmax=2, alpha=0.35, interpolation="nearest")
            if t.any():
                ax.contour(t[::-1, ::-1].T.astype(float), [0.5], colors="red", linewidths=1.0)
            which = "largest lesion slice" if c == 0 else "lesion slice least inside"
            ax.set_title(f"{name} ({kind})\n{which} (axial {z}): {inside:.0%} inside; whole lesion {total:.0%}",
                         fontsize=8)
            ax.text(0.01, 0.99, "R", color="yellow", transform=ax.transAxes, va="top")
    fig.suptitle(f"{method}: lesions (red outline) and the lung mask (right orange, left cyan)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.25 / fig.get_figheight()))
    return save_fig(fig, paths)


def main() -> int:
    p = bench_parser(__doc__, "runs/real_robustness")
    p.add_argument("--quick", action="store_true", help="one chest only")
    p.add_argument("--sweep", action="store_true", help="also apex / bases views of 10-45 %%, slabs of "
                   "3 / 10 / 30 mm at four heights, the middle half, the front / back 60 %%, single "
                   "slices at 17 heights")
    t_start = time.perf_counter()
    setup = bench_setup(p)
    if setup is None:
        return 0
    args, shared, methods, predictor, out = setup

    from airways import extract_airways, plot_airways

    import lungseg

    fig_dirs = [out] + ([Path(args.figures)] if args.figures else [])
    chests = dict(list(CHESTS.items())[:1]) if args.quick else CHESTS
    results = {m: {"chests": [], "pathology": [], "airways": [], "no_lung": []} for m in methods}
    worst = {m: [] for m in methods}
    airway_info = {}
    for name, image in shared_chests(shared, chests):
        t0 = time.perf_counter()
        airway, info = extract_airways(np.asarray(image.array), image.affine)
        info["seconds"] = round(time.perf_counter() - t0, 1)
        airway_info[name] = info
        log(f"{name} {image.shape}: airways {info.get('volume_ml')} mL in {info['seconds']} s")
        first_ref = None
        for method in methods:
            ch = check_chest(name, image, method, predictor if method == "unet" else None,
                             worst[method], args.sweep)
            ref = ch.pop("ref")
            first_ref = ref if first_ref is None else first_ref
            results[method]["chests"].append(ch)
            results[method]["airways"].append(airway_row(name, airway, info, ref))
        fig_name = f"robustness_airways_{name}.png"
        lung_from = methods[0]
        for d in fig_dirs:
            d.mkdir(parents=True, exist_ok=True)
            plot_airways(np.asarray(image.array), image.affine, airway, first_ref, info, d / fig_name,
                         f"{name} airways (lung outline: {lung_from})")
        info["figure"] = str(out / fig_name)
        del image, airway, first_ref
    for method in methods:
        lesions = []
        results[method]["pathology"] = check_pathology(shared, method,
                                                       predictor if method == "unet" else None, lesions)
        if lesions:
            fname = f"robustness_lesions_{method}.png"
            results[method]["lesion_figure"] = plot_lesions(lesions, method, [d / fname for d in fig_dirs])[0]
        del lesions
        results[method]["no_lung"] = check_no_lung(shared, method, predictor if method == "unet" else None)
        figs = []
        for rank, (score, row, views) in enumerate(worst[method], start=1):
            fname = f"robustness_worst_{method}_{rank}_{row['chest']}_{slug(row['crop'])}.png"
            title = (f"{method}, {row['chest']}, crop '{row['crop']}' {tuple(row['shape'])}: label Dice "
                     f"{score:.3f}, binary {row['binary_dice']:.3f}" + (f"\n{row['error'][:120]}" if row["error"] else ""))
            figs.append(plot_crop(views, title, [d / fname for d in fig_dirs])[0])
        results[method]["worst_figures"] = figs

    for method in methods:
        print(table(method, results[method]))
    runtime = time.perf_counter() - t_start
    write_json({"shared": str(shared), "methods": methods, "model": args.model, "quick": args.quick,
                "lungseg_version": lungseg.__version__, "runtime_s": round(runtime, 1),
                "airways": airway_info, "results": results}, out / "results.json")
    print(f"\nruntime {runtime:.0f} s; results in {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
