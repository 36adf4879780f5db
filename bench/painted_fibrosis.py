"""Fibrotic lungs: subpleural basal fibrosis painted into the real chests of ../shared/data.

Why: a fibrotic lung is dense where the lung meets the chest wall and the diaphragm, and no
shared scan is fibrotic. Each chest is segmented once (the clean mask); then the lung within
`DEPTH_MM` of its outer surface, in the lower `BASAL_FRACTION` of the lung's height, is
painted with usual-interstitial-pneumonia-like honeycombing and reticulation
(`lungseg.transforms.paint_fibrosis`, the function the training transform uses, here at the
scan's own resolution and over whole bases rather than a patch) and segmented again. Fibrosis
is lung (docs/model.md), so the painted scan's mask should equal the clean one:

- fibrosis kept: share of the painted voxels inside the painted scan's mask;
- Dice (and right/left agreement) of the painted scan's mask against the clean mask;
- mL added (outside the clean mask: spleen, liver, stomach under a fibrotic base) and lost.

The clean mask is the method's own, so this measures what fibrosis changes, not accuracy.
Which chests trained the default model: docs/model.md (the 4D-CT did; the others did not).

    python bench/painted_fibrosis.py [--methods unet,classical] [--model PATH] [--seeds 2]
        [--shared ../shared/data] [--out runs/painted_fibrosis] [--figures docs/images]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_robustness import CHESTS as WHOLE_CHESTS  # noqa: E402
from real_robustness import (  # noqa: E402
    bench_parser,
    bench_setup,
    clean_cases,
    compare,
    crop_views,
    log,
    run_segment,
    save_worst_figures,
    write_json,
)

#: the robustness bench's first three whole chests (its fourth, A0002, 8 mm, holds a mass and is
#: measured there), and the cropped CTA
CHESTS = {**{k: WHOLE_CHESTS[k] for k in ("4dct", "lidc0314", "lungpetctdx_a0001")},
          "cta_cropped": "chest_cta_cropped.nii.gz"}
DEPTH_MM = 12.0
BASAL_FRACTION = 0.5


def fibrosis_band(lung: np.ndarray, affine: np.ndarray, depth_mm: float = DEPTH_MM,
                  basal_fraction: float = BASAL_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """(lung within `depth_mm` of its surface in the lower `basal_fraction` of its height,
    each voxel's depth below the lung's surface in mm)."""
    from lungseg.core.geometry import spacing_of, superior_axis

    sp = spacing_of(affine)
    depth = ndimage.distance_transform_edt(np.pad(lung, 1), sampling=sp)[1:-1, 1:-1, 1:-1]
    ax = superior_axis(affine)
    other = tuple(a for a in range(3) if a != ax)
    idx = np.flatnonzero(lung.any(axis=other))
    up = float(np.sign(affine[2, ax]))  # +1 when the index runs towards the head (RAS world z)
    # world height of each slice along the superior axis; basal = the lowest share of the lung
    z = np.arange(lung.shape[ax]) * up
    lo, hi = z[idx].min(), z[idx].max()
    basal = z <= lo + basal_fraction * (hi - lo)
    shape = [1, 1, 1]
    shape[ax] = -1
    return lung & (depth <= depth_mm) & basal.reshape(shape), depth


def main() -> int:
    p = bench_parser(__doc__, "runs/painted_fibrosis")
    p.add_argument("--seeds", type=int, default=2, help="paintings per chest")
    t_start = time.perf_counter()
    setup = bench_setup(p)
    if setup is None:
        return 0
    args, shared, methods, predictor, out = setup

    import lungseg
    from lungseg.transforms import paint_fibrosis

    rows = {m: [] for m in methods}
    worst = {m: None for m in methods}
    for case in clean_cases(shared, methods, predictor, chests=CHESTS):
        name, image, method, clean = case.name, case.image, case.method, case.clean
        band, depth = fibrosis_band(clean > 0, image.affine)
        for seed in range(args.seeds):
            hu = paint_fibrosis(np.asarray(image.array, np.float32), band, depth, image.spacing,
                                np.random.default_rng(seed), depth_mm=DEPTH_MM)
            painted = lungseg.Volume(hu, image.affine)
            mask, secs, err = run_segment(painted, method, case.predictor)
            mask = np.zeros_like(clean) if mask is None else mask
            m = compare(mask, clean)
            a, b = mask > 0, clean > 0
            row = {"chest": name, "seed": seed, "band_ml": round(float(band.sum() * image.voxel_ml)),
                   "kept": round(float(a[band].mean()), 3), "dice": round(m["binary_dice"], 4),
                   "rl_agreement": None if m["rl_agreement"] is None else round(m["rl_agreement"], 4),
                   "added_ml": round(float((a & ~b).sum() * image.voxel_ml), 1),
                   "lost_ml": round(float((b & ~a).sum() * image.voxel_ml), 1),
                   "seconds": round(secs, 1), "error": err}
            rows[method].append(row)
            log(f"  {method} {name} seed {seed}: {row}")
            if worst[method] is None or row["dice"] < worst[method][0]["dice"]:
                worst[method] = (row, crop_views(painted, mask, clean))
    figures = save_worst_figures(
        worst, out, args.figures, "fibrosis_worst",
        lambda method, row: (f"{method}, {row['chest']} with basal fibrosis painted (seed {row['seed']}): Dice vs "
                             f"the clean scan's mask {row['dice']:.3f}, +{row['added_ml']} / -{row['lost_ml']} mL"))
    for method in methods:
        print(f"\n{method}: basal subpleural fibrosis painted ({DEPTH_MM:.0f} mm deep, lower "
              f"{BASAL_FRACTION:.0%} of the lung), mask vs the clean scan's mask")
        print("| chest | seed | painted mL | fibrosis kept | Dice vs clean | R/L agree | added mL | lost mL | s |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows[method]:
            print(f"| {r['chest']} | {r['seed']} | {r['band_ml']} | {r['kept']:.3f} | {r['dice']:.4f} | "
                  f"{r['rl_agreement']} | {r['added_ml']} | {r['lost_ml']} | {r['seconds']} |")
        if rows[method]:
            print(f"mean Dice {np.mean([r['dice'] for r in rows[method]]):.4f}, worst "
                  f"{min(r['dice'] for r in rows[method]):.4f}; fibrosis kept mean "
                  f"{np.mean([r['kept'] for r in rows[method]]):.3f}")
    runtime = time.perf_counter() - t_start
    write_json({"shared": str(shared), "methods": methods, "model": args.model, "seeds": args.seeds,
                "depth_mm": DEPTH_MM, "basal_fraction": BASAL_FRACTION, "lungseg_version": lungseg.__version__,
                "runtime_s": round(runtime, 1), "rows": rows, "figures": figures}, out / "results.json")
    print(f"\nruntime {runtime:.0f} s; results in {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
