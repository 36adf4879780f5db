"""Very severe emphysema: low attenuation painted into the real chests of ../shared/data.

Why: emphysema is common in the patients whose chest CTs are segmented (smokers, lung-cancer
screening), no shared scan has much of it, and lung that dark is where simple rules fail: the
lung's median falls below the "pure gas" line (-960 HU) and a region grown along the dark
airway lumen runs into it. Each chest is segmented once (the clean mask); then blobs of about a
centimetre (`BLOB_MM`) covering a share of the clean mask's parenchyma (darker than -500 HU: not
the vessels) are painted to -985 HU with noise, and the scan and its views (bases, apex, slabs
through the middle and at 75 % of the lung height, from `real_robustness.make_crops`) are
segmented again. Emphysema is lung, so each mask should equal the clean one:

- LAA-950 of the painted lung (the emphysema index: share of the lung below -950 HU) and its
  median HU;
- label Dice of the painted scan's mask against the clean mask, whole and in each view;
- mL lost (mostly: taken for gas, or for airway).

Shares of 0.3 and 0.6 give LAA-950 of about 0.3 (severe) and 0.55 (beyond most GOLD 4 lungs,
but what a slab through bullae shows). The clean mask is the method's own, so this measures
what emphysema changes, not accuracy.

    python bench/painted_emphysema.py [--methods unet,classical] [--model PATH]
        [--shared ../shared/data] [--out runs/painted_emphysema]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_robustness import (  # noqa: E402
    bench_parser,
    bench_setup,
    clean_cases,
    log,
    painted_row,
    write_json,
)

SHARES = (0.3, 0.6)
BLOB_MM = 4.0  # sigma of the smoothed noise whose top share becomes emphysema (~1 cm blobs)
EMPHYSEMA_HU = -985.0
VIEWS = ("bases", "apex", "slab5@50%", "slab1@50%", "slab1@75%")


def paint_emphysema(hu: np.ndarray, lung: np.ndarray, spacing, share: float,
                    rng: np.random.Generator) -> np.ndarray:
    """`hu` with `share` of the parenchyma of `lung` (bool; voxels darker than -500 HU) painted
    to `EMPHYSEMA_HU` (+- 12 HU noise) in smooth blobs (`BLOB_MM`); float32."""
    field = ndimage.gaussian_filter(rng.standard_normal(hu.shape).astype(np.float32),
                                    BLOB_MM / np.asarray(spacing, float))
    parenchyma = lung & (hu < -500)
    holes = parenchyma & (field > np.quantile(field[parenchyma], 1.0 - share))
    out = np.asarray(hu, np.float32).copy()
    out[holes] = EMPHYSEMA_HU + 12.0 * rng.standard_normal(int(holes.sum()))
    return out


def main() -> int:
    p = bench_parser(__doc__, "runs/painted_emphysema")
    t_start = time.perf_counter()
    setup = bench_setup(p)
    if setup is None:
        return 0
    args, shared, methods, predictor, out = setup

    import lungseg

    rows = {m: [] for m in methods}
    for case in clean_cases(shared, methods, predictor, VIEWS, view_masks=False):
        name, image, method, clean = case.name, case.image, case.method, case.clean
        for i, share in enumerate(SHARES):
            hu = paint_emphysema(np.asarray(image.array), clean > 0, image.spacing, share,
                                 np.random.default_rng(i))
            painted = lungseg.Volume(np.round(hu).astype(np.int16), image.affine)
            lung_hu = hu[clean > 0]
            scored, _ = painted_row(painted, clean, case.crops, {v: clean[box] for v, box in case.crops.items()},
                                    method, case.predictor)
            row = {"chest": name, "share": share, "laa950": round(float((lung_hu < -950).mean()), 3),
                   "median_hu": round(float(np.median(lung_hu))), **scored}
            rows[method].append(row)
            log(f"  {method} {name} share {share}: {row}")
    for method in methods:
        print(f"\n{method}: emphysema painted into the lungs (blobs at {EMPHYSEMA_HU:.0f} HU), label Dice "
              "against the clean scan's mask, whole and in views")
        print("| chest | share painted | LAA-950 | median HU | whole | lost mL | " + " | ".join(VIEWS) + " |")
        print("|---|---:|---:|---:|---:|---:|" + "---:|" * len(VIEWS))
        for r in rows[method]:
            cells = " | ".join("-" if r.get(v) is None else f"{r[v]:.3f}" for v in VIEWS)
            print(f"| {r['chest']} | {r['share']} | {r['laa950']:.2f} | {r['median_hu']} | {r['whole']:.3f} | "
                  f"{r['lost_ml']} | {cells} |")
        if rows[method]:
            every = [r[k] for r in rows[method] for k in ("whole", *VIEWS) if r.get(k) is not None]
            print(f"mean {np.mean(every):.4f}, worst {min(every):.4f} over {len(every)} masks")
    runtime = time.perf_counter() - t_start
    write_json({"shared": str(shared), "methods": methods, "model": args.model, "shares": SHARES,
                "lungseg_version": lungseg.__version__, "runtime_s": round(runtime, 1), "rows": rows},
               out / "results.json")
    print(f"\nruntime {runtime:.0f} s; results in {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
