"""Does the mask depend on how the scan is stored or sampled? (../shared/data, per method)

Why: the same chest reaches users stored in any voxel order (DICOM series sorted either way,
NIfTI in RAS or LPS, axes permuted by a converter) and at any spacing (thin or thick slices,
another reconstruction's pixel size). A mask that moves with the storage is a bug, one that
moves with the spacing is at least a limit worth knowing. Two faults were found this way by
hand before this bench existed (session 19, docs/model_notes.md): the classical method's edge was a
2 mm block staircase that a flipped storage put elsewhere (flip agreement 0.94-0.98), and a
10 mm-slice view of a neck-shoulder fold called lung.

For each whole chest of `real_robustness.CHESTS` and views of it (whole, top 22 %, bottom 25 %,
a mid slice, one half of that slice (the first half of the right-left axis as stored: one lung)), segmented as stored (the reference):

1. **storage**: the view stored otherwise (axes flipped and / or permuted; the affine keeps
   every voxel at its world place, nibabel's orientation tools) is segmented, its mask mapped
   back and compared with the reference. Expected identical; label Dice under
   `STORAGE_FLOOR` is flagged.
2. **spacing** (whole, top, bottom): the view resampled (linear HU, `scipy.ndimage.zoom`) to
   1.0 mm in-plane, or to half / twice its slice spacing (at most `THICKEST_MM`), is compared
   with the reference resampled the same way (nearest). Expected close, not identical: a thick
   slice averages a lung tip away, and the reference of a halved spacing repeats each slice
   where the interpolated image does not (at a 8 mm scan's bases the lung changes much from
   slice to slice); under `SPACING_FLOOR` is flagged, to be looked at, not a fault in itself.
3. **size** (whole): the same voxels with every spacing and the origin scaled by 0.8 / 0.65 /
   0.5, a smaller patient (0.5: a child's chest), compared voxel by voxel with the reference;
   under `SIZE_FLOOR` is flagged.
4. **padding** (whole, since session 26): a NIfTI converted from DICOM keeps the scanner's
   padding outside the reconstruction circle (-2048 or -3024 HU, far below air), which only
   lungseg's DICOM reader maps to air. The room air outside the circle inscribed in the matrix
   set to each of those, against the same air set to -1024 (only the value differs: expected
   identical, under `STORAGE_FLOOR` is flagged). Family "padding vs stored", against the stored
   mask (close, not identical; under `SPACING_FLOOR` is flagged): that flat -1024 air (the air's
   noise gone), and everything outside a smaller circle (`CUT_CIRCLE` of the matrix: the table,
   arms, a large patient's flanks) at -3024.
5. **tilt** (whole, since session 27): the chest resampled (linear HU) onto a gantry-tilted grid of
   the same shape, its slices planes tilted by `TILTS` degrees about the right-left axis and
   stacked along the table (a sheared affine, as lungseg's DICOM reader gives a tilted series;
   an internal error before session 27), against the stored mask resampled alike (nearest);
   both are scored only where the tilted grid samples the stored scan. Close, not identical;
   under `SPACING_FLOOR` is flagged.

Prints one table per method and a summary; writes `results.json`.

    python bench/invariance.py [--methods unet,classical] [--model PATH] [--quick]
        [--shared ../shared/data] [--out runs/invariance]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_robustness import (  # noqa: E402
    CHESTS,
    axis_of,
    bench_parser,
    bench_setup,
    compare,
    crop_volume,
    fmt,
    log,
    run_segment,
    shared_chests,
    write_json,
)

#: storage variants: (name, per stored axis (new position, flip)) in nibabel's orientation form
STORAGE = (
    ("flip i", ((0, -1), (1, 1), (2, 1))),
    ("flip j", ((0, 1), (1, -1), (2, 1))),
    ("flip k", ((0, 1), (1, 1), (2, -1))),
    ("axes k,j,i", ((2, 1), (1, 1), (0, 1))),
    ("axes j,i,k", ((1, 1), (0, 1), (2, 1))),
    ("flip i,j; axes k,i,j", ((1, -1), (2, -1), (0, 1))),
)
#: spacing variants: (name, in-plane spacing in mm or None to keep, slice-spacing factor)
SPACING = (("1.0 mm in-plane", 1.0, 1.0), ("slices halved", None, 0.5), ("slices doubled", None, 2.0))
#: slices thicker than this are not made (A0002's 8 mm doubled to 16 mm is no scan a user has)
THICKEST_MM = 10.0
#: a smaller patient (the whole scan): the same voxels, every spacing and the origin scaled, so
#: the chest is that share of its size (0.5: a child's lungs, ~0.7 L): expected the same mask
SIZES = (("size x0.8", 0.8), ("size x0.65", 0.65), ("size x0.5", 0.5))
#: scanner padding values, and the circle (a share of the matrix's width) outside which a
#: reconstruction that cuts the body is padded
PADDING_HU = (-2048, -3024)
CUT_CIRCLE = 0.88
#: gantry tilts (degrees) of the "tilt" family
TILTS = (15.0, 25.0)
STORAGE_FLOOR = 0.99
SPACING_FLOOR = 0.95
SIZE_FLOOR = 0.95
#: views of each chest: (name, share of the scan's height from its bottom: lo, hi; one slice at lo
#: when hi is None; `half`: the right-left axis cut to its first half)
FLOORS = {"storage": STORAGE_FLOOR, "spacing": SPACING_FLOOR, "size": SIZE_FLOOR, "padding": STORAGE_FLOOR,
          "padding vs stored": SPACING_FLOOR, "tilt": SPACING_FLOOR}
VIEWS = (("whole", 0.0, 1.0, False), ("top 22%", 0.78, 1.0, False), ("bottom 25%", 0.0, 0.25, False),
         ("mid slice", 0.5, None, False), ("half mid slice", 0.5, None, True))


def view_box(image, lo: float, hi: float | None, half: bool) -> tuple[slice, ...]:
    """Index box of a view: a share of the scan's height (from its inferior end), one slice at
    `lo` when `hi` is None, optionally the first half of the right-left axis."""
    s_ax, s_sign = axis_of(image.affine, "SI")
    n = image.shape[s_ax]
    a, b = (int(lo * n), n if hi is None or hi >= 1.0 else int(hi * n))
    if hi is None:
        b = a + 1
    if s_sign < 0:  # index 0 is the top: count from the other end
        a, b = n - b, n - a
    box = [slice(0, m) for m in image.shape]
    box[s_ax] = slice(a, b)
    if half:
        x_ax, _ = axis_of(image.affine, "RL")
        box[x_ax] = slice(0, image.shape[x_ax] // 2)
    return tuple(box)


def restore(volume, ornt: np.ndarray):
    """The volume stored otherwise: array reoriented by `ornt` (nibabel form), affine changed so
    every voxel keeps its world position."""
    import nibabel as nib

    import lungseg

    arr = np.ascontiguousarray(nib.orientations.apply_orientation(np.asarray(volume.array), ornt))
    affine = volume.affine @ nib.orientations.inv_ornt_aff(ornt, volume.shape)
    return lungseg.Volume(arr, affine)


def back_to_stored(mask: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """A mask of `restore(volume, ornt)` mapped back onto the volume's own storage."""
    import nibabel as nib

    identity = np.array([[0, 1], [1, 1], [2, 1]], float)
    return nib.orientations.apply_orientation(mask, nib.orientations.ornt_transform(identity, ornt))


def resample(volume, zoom: tuple[float, float, float], order: int):
    """The volume on a grid `zoom` times as fine along each axis (same outer edges): linear
    (`order` 1, HU rounded to int16) or nearest (0, masks)."""
    from scipy import ndimage

    import lungseg

    a = np.asarray(volume.array)
    out = ndimage.zoom(a.astype(np.float32) if order else a, zoom, order=order, mode="nearest", grid_mode=True)
    ratio = np.array(a.shape, float) / np.array(out.shape, float)
    affine = volume.affine.copy()
    affine[:3, :3] = volume.affine[:3, :3] @ np.diag(ratio)
    # grid_mode keeps the outer edges: new centre i maps to old (i + 0.5) * ratio - 0.5
    affine[:3, 3] = volume.affine[:3, 3] + volume.affine[:3, :3] @ (0.5 * ratio - 0.5)
    return lungseg.Volume(np.round(out).astype(np.int16) if order else out, affine)


def spacing_zoom(volume, inplane_mm: float | None, slice_factor: float) -> tuple[float, float, float]:
    s_ax, _ = axis_of(volume.affine, "SI")
    sp = np.asarray(volume.spacing, float)
    zoom = [1.0, 1.0, 1.0]
    for a in range(3):
        if a == s_ax:
            zoom[a] = 1.0 / slice_factor
        elif inplane_mm is not None:
            zoom[a] = float(sp[a] / inplane_mm)
    return tuple(zoom)


def padded(volume, value: float, share: float, air_only: bool):
    """`volume` with `value` outside the circle of `share` of its in-plane matrix (centred), as a
    scanner pads outside its reconstruction circle; `air_only`: only where it reads as air."""
    s_ax, _ = axis_of(volume.affine, "SI")
    hu = np.array(volume.array)
    a, b = (k for k in range(3) if k != s_ax)
    ii, jj = np.ogrid[:hu.shape[a], :hu.shape[b]]
    radius = share * min(hu.shape[a], hu.shape[b]) / 2.0
    disc = np.hypot(ii - (hu.shape[a] - 1) / 2.0, jj - (hu.shape[b] - 1) / 2.0) > radius
    out = np.broadcast_to(np.expand_dims(disc, s_ax), hu.shape)
    if air_only:
        out = out & (hu < -900)
    hu[out] = value
    return type(volume)(hu, volume.affine)


def tilted(volume, ref: np.ndarray, degrees: float):
    """(the volume on a gantry-tilted grid of its shape, `ref` on it (nearest), where that grid
    samples the volume): slices tilted by `degrees` about the right-left axis through the
    volume's centre, stacked along the table as before (the affine sheared)."""
    from scipy import ndimage

    a = np.asarray(volume.affine, float)
    y_ax, _ = axis_of(a, "AP")
    t = np.deg2rad(degrees)
    b = a.copy()
    col = a[:3, y_ax]
    b[:3, y_ax] = col * np.cos(t) + np.array([0.0, 0.0, np.linalg.norm(col) * np.sin(t)])
    centre = (np.array(volume.shape, float) - 1) / 2
    b[:3, 3] = a[:3, :3] @ centre + a[:3, 3] - b[:3, :3] @ centre
    m = np.linalg.solve(a, b)  # tilted index -> stored index
    hu, lab = np.asarray(volume.array, np.float32), np.asarray(ref)
    out = np.empty(volume.shape, np.int16)
    lab_out = np.empty(volume.shape, lab.dtype)
    inside = np.empty(volume.shape, bool)
    rows = 16  # a few rows of the first axis at a time: the coordinates of all voxels would be GBs
    for i0 in range(0, volume.shape[0], rows):
        idx = np.indices((min(rows, volume.shape[0] - i0), *volume.shape[1:]), np.float32)
        idx[0] += i0
        src = np.tensordot(m[:3, :3].astype(np.float32), idx, axes=1) + m[:3, 3].astype(np.float32)[:, None, None, None]
        sl = slice(i0, i0 + idx.shape[1])
        out[sl] = np.round(ndimage.map_coordinates(hu, src, order=1, mode="nearest"))
        lab_out[sl] = ndimage.map_coordinates(lab, src, order=0, mode="nearest")
        inside[sl] = np.all((src > -0.5) & (src < np.array(volume.shape, np.float32)[:, None, None, None] - 0.5), axis=0)
    return type(volume)(out, b), lab_out, inside


def score(pred: np.ndarray | None, ref: np.ndarray) -> dict:
    if pred is None:
        return {"binary_dice": 0.0, "label_dice": 0.0, "rl_agreement": None}
    m = compare(pred, ref)
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.items()}


def check_chest(name: str, image, method: str, predictor, quick: bool,
                families: set[str] | None = None) -> list[dict]:
    """Every family's rows for one chest and method (`families`: only these, e.g. {"tilt"})."""
    def wanted(fam: str) -> bool:
        return families is None or fam in families

    rows = []
    views = VIEWS[:2] if quick else VIEWS
    for vname, lo, hi, half in views:
        view = crop_volume(image, view_box(image, lo, hi, half))
        ref, secs, err = run_segment(view, method, predictor)
        if ref is None:
            rows.append({"chest": name, "view": vname, "family": "reference", "variant": "as stored",
                         "shape": list(view.shape), "error": err, "label_dice": 0.0, "binary_dice": 0.0})
            continue
        storage = STORAGE[:2] if quick else STORAGE
        for vari, ornt in (storage if wanted("storage") else ()):
            ornt = np.array(ornt, float)
            moved = restore(view, ornt)
            pred, secs, err = run_segment(moved, method, predictor)
            back = None if pred is None else back_to_stored(pred, ornt)
            rows.append({"chest": name, "view": vname, "family": "storage", "variant": vari,
                         "shape": list(moved.shape), "seconds": round(secs, 2), "error": err, **score(back, ref)})
            log(f"  {method} {name} {vname} {vari}: label {rows[-1]['label_dice']:.3f}")
        if vname == "whole":
            for vari, f in ((SIZES[-1:] if quick else SIZES) if wanted("size") else ()):
                aff = view.affine.copy()
                aff[:3, :] *= f
                pred, secs, err = run_segment(type(view)(view.array, aff), method, predictor)
                rows.append({"chest": name, "view": vname, "family": "size", "variant": vari,
                             "shape": list(view.shape), "seconds": round(secs, 2), "error": err, **score(pred, ref)})
                log(f"  {method} {name} {vname} {vari}: label {rows[-1]['label_dice']:.3f}")
            # the room air outside the circle made flat air (-1024; against the stored mask: its
            # noise is gone, the network's input changes a little), then the same voxels at the
            # scanner's values (against that: only the value differs)
            pads = []
            if wanted("padding") or wanted("padding vs stored"):
                flat, secs, err = run_segment(padded(view, -1024, 1.0, True), method, predictor)
                pads = [("padding vs stored", "air outside the circle at -1024", None, -1024, 1.0, True),
                        ("padding vs stored", f"all outside {CUT_CIRCLE} of the matrix at -3024", None, -3024,
                         CUT_CIRCLE, False)]
                pads += [("padding", f"air outside the circle at {v} (vs -1024)", flat, v, 1.0, True)
                         for v in PADDING_HU]
            for fam, vari, against, value, share, air_only in (pads[1:3] if quick else pads):
                pred, secs, err = (flat, secs, err) if against is None and value == -1024 else \
                    run_segment(padded(view, value, share, air_only), method, predictor)
                rows.append({"chest": name, "view": vname, "family": fam, "variant": vari,
                             "shape": list(view.shape), "seconds": round(secs, 2), "error": err,
                             **score(pred, ref if against is None else against)})
                log(f"  {method} {name} {vname} {vari}: label {rows[-1]['label_dice']:.3f}")
            for deg in ((TILTS[:1] if quick else TILTS) if wanted("tilt") else ()):
                moved, ref_moved, inside = tilted(view, ref, deg)
                pred, secs, err = run_segment(moved, method, predictor)
                if pred is not None:
                    pred = np.where(inside, pred, 0)
                rows.append({"chest": name, "view": vname, "family": "tilt", "variant": f"gantry tilt {deg:.0f} deg",
                             "shape": list(moved.shape), "seconds": round(secs, 2), "error": err,
                             **score(pred, np.where(inside, ref_moved, 0))})
                log(f"  {method} {name} {vname} tilt {deg:.0f}: label {rows[-1]['label_dice']:.3f}")
        if hi is None or not wanted("spacing"):  # resampling one slice is not a thicker slice
            continue
        s_ax, _ = axis_of(view.affine, "SI")
        for vari, inplane, factor in (SPACING[:1] if quick else SPACING):
            if view.spacing[s_ax] * factor > THICKEST_MM:
                continue
            zoom = spacing_zoom(view, inplane, factor)
            moved = resample(view, zoom, 1)
            ref_moved = np.asarray(resample(type(view)(ref, view.affine), zoom, 0).array)
            pred, secs, err = run_segment(moved, method, predictor)
            rows.append({"chest": name, "view": vname, "family": "spacing", "variant": vari,
                         "shape": list(moved.shape), "spacing_mm": [round(s, 2) for s in moved.spacing],
                         "seconds": round(secs, 2), "error": err, **score(pred, ref_moved)})
            log(f"  {method} {name} {vname} {vari}: label {rows[-1]['label_dice']:.3f}")
    return rows


def table(method: str, rows: list[dict]) -> str:
    lines = [f"\n### {method}\n", "| chest | view | family | variant | shape | binary Dice | label Dice | "
             "R/L agree | s | note |", "|---|---|---|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        floor = FLOORS.get(r["family"], SPACING_FLOOR)
        flag = "**below floor**" if r["label_dice"] < floor else ""
        note = (r.get("error") or "")[:80] or flag
        lines.append(f"| {r['chest']} | {r['view']} | {r['family']} | {r['variant']} | {tuple(r['shape'])} | "
                     f"{fmt(r['binary_dice'])} | {fmt(r['label_dice'])} | {fmt(r.get('rl_agreement'))} | "
                     f"{r.get('seconds', 0):.1f} | {note} |")
    for fam, floor in FLOORS.items():
        sel = [r for r in rows if r["family"] == fam]
        if sel:
            lab = [r["label_dice"] for r in sel]
            lines.append(f"| all | {len(sel)} runs | {fam} | min / mean | | "
                         f"{min(r['binary_dice'] for r in sel):.3f} | {min(lab):.3f} / {np.mean(lab):.3f} | | "
                         f"{sum(r.get('seconds', 0) for r in sel):.0f} | {sum(x < floor for x in lab)} below "
                         f"{floor}; {sum(bool(r.get('error')) for r in sel)} errors |")
    return "\n".join(lines)


def main() -> int:
    p = bench_parser(__doc__, "runs/invariance")
    p.add_argument("--quick", action="store_true", help="one chest, two views, fewer variants")
    p.add_argument("--chests", default=None, help="comma-separated names of real_robustness.CHESTS")
    p.add_argument("--families", default=None,
                   help="comma-separated families to run (storage, size, padding, tilt, spacing; default all)")
    t_start = time.perf_counter()
    setup = bench_setup(p)
    if setup is None:
        return 0
    args, shared, methods, predictor, out = setup

    import lungseg

    names = args.chests.split(",") if args.chests else list(CHESTS)
    if args.quick:
        names = names[:1]
    results = {m: [] for m in methods}
    for name, image in shared_chests(shared, {n: CHESTS[n] for n in names}):
        log(f"{name} {image.shape}")
        for method in methods:
            results[method] += check_chest(name, image, method, predictor if method == "unet" else None,
                                           args.quick, set(args.families.split(",")) if args.families else None)
    for method in methods:
        print(table(method, results[method]))
    runtime = time.perf_counter() - t_start
    write_json({"shared": str(shared), "methods": methods, "model": args.model, "quick": args.quick,
                "lungseg_version": lungseg.__version__, "runtime_s": round(runtime, 1),
                "storage_floor": STORAGE_FLOOR, "spacing_floor": SPACING_FLOOR, "size_floor": SIZE_FLOOR,
                "results": results},
               out / "results.json")
    print(f"\nruntime {runtime:.0f} s; results in {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
