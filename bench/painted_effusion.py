"""Pleural effusion painted into the real chests of ../shared/data.

Why: by the convention every method follows (docs/model.md) dense tissue inside the lung is
lung, but pleural fluid is not; a supine patient's effusion layers in the back of the pleural
cavity, under a horizontal fluid level, with a band of compressed (partly airless) lung above
it. Hospital scans hold many; no shared scan does. Each chest is segmented once (the clean
mask); then, per axial slice, the clean lung below a fluid level H mm above its lowest
(posterior) point becomes fluid (0-20 HU), H falling from `H` at the lung's bottom to 0 at
60 % of its height, and the 4 mm of lung above the level is compressed (its parenchyma to
about -300 HU). Levels: the right side with H 25 mm, both sides with 40 and with 60 mm (on the
shared chests 13-84, 99-134 and 154-213 mL of fluid: small to moderate effusions).

The painted scan's mask should be the clean mask without the fluid: label Dice against that
(whole scan; each of five views against the clean scan's same view without the fluid), fluid
inside the mask (mL: the convention broken), and the compressed band kept (it is lung).

    python bench/painted_effusion.py [--methods unet,classical] [--model PATH]
        [--shared ../shared/data] [--out runs/painted_effusion] [--figures docs/images]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from airways import to_ras  # noqa: E402
from real_robustness import (  # noqa: E402
    Painting,
    bench_parser,
    bench_setup,
    run_painted,
    save_worst_figures,
    write_json,
)

#: level -> (sides painted, 1 right / 2 left; fluid height at the lung's bottom, mm)
LEVELS = {"right 25 mm": ((1,), 25.0), "both 40 mm": ((1, 2), 40.0), "both 60 mm": ((1, 2), 60.0)}
TOP_FRACTION = 0.6  # the fluid reaches up to this share of the lung's height
BAND_MM = 4.0
VIEWS = ("bases", "apex", "slab5@50%", "slab1@50%", "slab1@25%")
FIGURE_LEVEL = "both 60 mm"


def paint_effusion(hu: np.ndarray, labels: np.ndarray, affine: np.ndarray, level: str,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(`hu` with an effusion of `level` painted, int16; fluid voxels; compressed-band voxels),
    on the input grid. `labels` is the clean mask (1 right, 2 left)."""
    sides, height = LEVELS[level]
    ras, sp, back = to_ras(np.asarray(hu, np.float32), affine)
    lab = to_ras(np.asarray(labels, np.uint8), affine)[0]
    lung = lab > 0
    zs = np.flatnonzero(lung.any(axis=(0, 1)))
    fluid = np.zeros(lung.shape, bool)
    band = np.zeros(lung.shape, bool)
    y_mm = np.arange(lung.shape[1]) * sp[1]
    for side in sides:
        one = lab == side
        for z in range(zs.min(), zs.max() + 1):
            rel = (z - zs.min()) / max(zs.max() - zs.min(), 1)
            h = height * max(0.0, 1.0 - rel / TOP_FRACTION)
            cols = one[:, :, z]
            if h <= 0 or not cols.any():
                continue
            bottom = y_mm[np.flatnonzero(cols.any(axis=0)).min()]  # the slice's most posterior lung
            level_mm = bottom + h
            fluid[:, :, z] = cols & (y_mm[None, :] < level_mm)
            band[:, :, z] = cols & (y_mm[None, :] >= level_mm) & (y_mm[None, :] < level_mm + BAND_MM)
    texture = ndimage.gaussian_filter(rng.standard_normal(ras.shape).astype(np.float32), 1.5 / sp)
    texture /= max(float(texture.std()), 1e-6)
    out = ras.copy()
    out[fluid] = 10.0 + 10.0 * texture[fluid]
    share = np.clip((40.0 - ras[band]) / 890.0, 0.0, 1.0)  # parenchyma's share of each voxel
    out[band] = np.maximum(ras[band], ras[band] + share * 550.0)
    return np.round(back(out)).astype(np.int16), back(fluid), back(band)


def main() -> int:
    p = bench_parser(__doc__, "runs/painted_effusion")
    t_start = time.perf_counter()
    setup = bench_setup(p)
    if setup is None:
        return 0
    args, shared, methods, predictor, out = setup

    import lungseg

    def paint(case, level, rng):
        hu, fluid, band = paint_effusion(np.asarray(case.image.array), case.clean, case.image.affine, level, rng)
        truth = np.where(fluid, 0, case.clean).astype(case.clean.dtype)  # the clean mask without the fluid
        # each view against the clean scan's same view without the fluid (a view's own
        # disagreement with the whole scan does not count)
        refs = {v: np.where(fluid[box], 0, case.clean_views[v]) for v, box in case.crops.items()
                if case.clean_views.get(v) is not None}

        def fields(mask):
            inside = mask > 0
            return {"fluid_ml": round(float(fluid.sum() * case.image.voxel_ml)),
                    "fluid_in_mask_ml": round(float(inside[fluid].sum() * case.image.voxel_ml), 1),
                    "band_kept": round(float(inside[band].mean()), 3) if band.any() else None}
        return Painting(lungseg.Volume(hu, case.image.affine), truth, refs, fields)

    rows, worst = run_painted(shared, methods, predictor, LEVELS, paint, VIEWS, FIGURE_LEVEL)
    figures = save_worst_figures(
        worst, out, args.figures, "effusion_worst",
        lambda method, row: (f"{method}, {row['chest']} with an effusion painted ({FIGURE_LEVEL}): Dice vs the clean "
                             f"mask without the fluid {row['whole']:.3f}, fluid in the mask {row['fluid_in_mask_ml']} mL"),
        reference="clean mask without the fluid")
    for method in methods:
        print(f"\n{method}: pleural effusion painted (" + ", ".join(LEVELS)
              + "; fluid height at the lung's bottom); label Dice against the clean mask without the fluid")
        print("| chest | level | fluid mL | fluid in mask mL | band kept | whole | lost mL | added mL | "
              + " | ".join(VIEWS) + " |")
        print("|---|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(VIEWS))
        for r in rows[method]:
            cells = " | ".join("-" if r.get(v) is None else f"{r[v]:.3f}" for v in VIEWS)
            print(f"| {r['chest']} | {r['level']} | {r['fluid_ml']} | {r['fluid_in_mask_ml']} | {r['band_kept']} | "
                  f"{r['whole']:.3f} | {r['lost_ml']} | {r['added_ml']} | {cells} |")
        for level in LEVELS:
            sel = [r for r in rows[method] if r["level"] == level]
            every = [r[k] for r in sel for k in ("whole", *VIEWS) if r.get(k) is not None]
            if every:
                print(f"{level}: mean {np.mean(every):.4f}, worst {min(every):.4f} over {len(every)} masks; fluid in "
                      f"the mask {min(r['fluid_in_mask_ml'] for r in sel)}-{max(r['fluid_in_mask_ml'] for r in sel)} mL")
    runtime = time.perf_counter() - t_start
    write_json({"shared": str(shared), "methods": methods, "model": args.model, "levels": LEVELS,
                "lungseg_version": lungseg.__version__, "runtime_s": round(runtime, 1), "rows": rows,
                "figures": figures}, out / "results.json")
    print(f"\nruntime {runtime:.0f} s; results in {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
