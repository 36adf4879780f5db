"""Dependent density: the posterior lung of a supine patient painted denser, in the real chests
of ../shared/data.

Why: most chest CTs are taken supine, and the lowest (posterior) lung is denser than the rest —
a gradient in every patient, ground glass and subpleural atelectasis in the old, the obese, the
ill. A lung mask that follows a fixed HU edge shaves that dependent lung off. No shared scan
shows much of it, so it is painted: each chest is segmented once (the clean mask), then every
voxel of the lung and its rim gets denser by `A * exp(-depth / L)` times its share of
parenchyma (a partial-volume voxel half wall gets half the rise, as a scanner would show it),
where depth is the distance above the dependent pleura (the lowest lung voxel of its column,
front to back) or, within 3 L of it, from the lung's surface; in the lower half of the lungs a
subpleural band `T` mm thick becomes atelectasis (-50 HU, airways darker than -980 HU left
open). Levels (A HU at the pleura, L mm, T mm): mild (300, 15, 0: the lung meets the pleura at
about -550 HU), moderate (500, 20, 5), severe (700, 25, 10).

Dependent lung is lung, so each mask should equal the clean one: label Dice of the painted
scan's mask against the clean mask (whole scan), and of each view (bases, apex, 5- and 1-slice
slabs, from `real_robustness.make_crops`) against the same view of the clean scan (so a view's
own disagreement with the whole scan does not count); mL lost and added. The band of
atelectasis reads as pleural effusion by its HU alone (which is not lung); it is there to show
what the network makes of it, not to be matched by a rule.

    python bench/painted_dependent.py [--methods unet,classical] [--model PATH]
        [--shared ../shared/data] [--out runs/painted_dependent]
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

#: level -> (HU added at the dependent pleura, e-folding depth in mm, atelectatic band in mm)
LEVELS = {"mild": (300.0, 15.0, 0.0), "moderate": (500.0, 20.0, 5.0), "severe": (700.0, 25.0, 10.0)}
LUNG_HU, WALL_HU = -850.0, 40.0  # a voxel's share of parenchyma: where its HU lies between them
VIEWS = ("bases", "apex", "slab5@50%", "slab1@50%", "slab1@25%")
FIGURE_LEVEL = "moderate"  # the worst whole scan at this level is drawn (figure per method)


def paint_dependent(hu: np.ndarray, lung: np.ndarray, affine: np.ndarray, level: str,
                    rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """(`hu` with the dependent lung of `lung` (bool) painted denser, int16; mL raised > 50 HU)."""
    amp, efold, band_mm = LEVELS[level]
    ras, sp, back = to_ras(np.asarray(hu, np.float32), affine)
    lung = to_ras(np.asarray(lung, bool), affine)[0]
    ny = ras.shape[1]
    lowest = np.where(lung.any(axis=1), np.argmax(lung, axis=1), ny)  # most posterior lung voxel per (x, z)
    above = (np.arange(ny)[None, :, None] - lowest[:, None, :]) * sp[1]  # mm above the dependent pleura
    inside = ndimage.distance_transform_edt(lung, sampling=sp)
    depth = np.minimum(above, np.where(above < 3 * efold, inside, np.inf))
    texture = ndimage.gaussian_filter(rng.standard_normal(ras.shape).astype(np.float32), 4.0 / sp)
    rise = amp * np.exp(-np.clip(depth, 0, None) / efold) * (1.0 + 0.3 * 3.0 * texture)
    share = np.clip((WALL_HU - ras) / (WALL_HU - LUNG_HU), 0.0, 1.0)
    near = ndimage.binary_dilation(lung, iterations=2)
    out = ras.copy()
    out[near] = np.minimum(ras[near] + share[near] * rise[near], np.maximum(ras[near], -100.0))
    if band_mm > 0:
        zs = np.flatnonzero(lung.any(axis=(0, 1)))
        lower = np.zeros(lung.shape, bool)
        lower[:, :, : (zs.min() + zs.max()) // 2 + 1] = True
        band = lung & lower & (above >= 0) & (above < band_mm) & (inside < band_mm + 2) & (ras > -980)
        out[band] = -50.0 + 15.0 * rng.standard_normal(int(band.sum()))
    raised = float(((out - ras)[lung] > 50).sum() * np.prod(sp) / 1000.0)
    return np.round(back(out)).astype(np.int16), raised


def main() -> int:
    p = bench_parser(__doc__, "runs/painted_dependent")
    t_start = time.perf_counter()
    setup = bench_setup(p)
    if setup is None:
        return 0
    args, shared, methods, predictor, out = setup

    import lungseg

    def paint(case, level, rng):
        hu, raised = paint_dependent(np.asarray(case.image.array), case.clean > 0, case.image.affine, level, rng)
        return Painting(lungseg.Volume(hu, case.image.affine), case.clean, case.clean_views,
                        lambda mask: {"raised_ml": round(raised)})

    rows, worst = run_painted(shared, methods, predictor, LEVELS, paint, VIEWS, FIGURE_LEVEL)
    figures = save_worst_figures(
        worst, out, args.figures, "dependent_worst",
        lambda method, row: (f"{method}, {row['chest']} with {FIGURE_LEVEL} dependent density painted: Dice vs "
                             f"the clean scan's mask {row['whole']:.3f}, +{row['added_ml']} / -{row['lost_ml']} mL"))
    for method in methods:
        print(f"\n{method}: dependent lung painted denser (A HU at the pleura, e-folding L mm, atelectatic "
              "band T mm: " + ", ".join(f"{k} {v[0]:.0f} / {v[1]:.0f} / {v[2]:.0f}" for k, v in LEVELS.items())
              + "); label Dice against the clean scan's mask, views against the clean scan's same view")
        print("| chest | level | raised mL | whole | lost mL | added mL | " + " | ".join(VIEWS) + " |")
        print("|---|---|---:|---:|---:|---:|" + "---:|" * len(VIEWS))
        for r in rows[method]:
            cells = " | ".join("-" if r.get(v) is None else f"{r[v]:.3f}" for v in VIEWS)
            print(f"| {r['chest']} | {r['level']} | {r['raised_ml']} | {r['whole']:.3f} | {r['lost_ml']} | "
                  f"{r['added_ml']} | {cells} |")
        for level in LEVELS:
            every = [r[k] for r in rows[method] if r["level"] == level for k in ("whole", *VIEWS)
                     if r.get(k) is not None]
            if every:
                print(f"{level}: mean {np.mean(every):.4f}, worst {min(every):.4f} over {len(every)} masks")
    runtime = time.perf_counter() - t_start
    write_json({"shared": str(shared), "methods": methods, "model": args.model, "levels": LEVELS,
                "lungseg_version": lungseg.__version__, "runtime_s": round(runtime, 1), "rows": rows,
                "figures": figures},
               out / "results.json")
    print(f"\nruntime {runtime:.0f} s; results in {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
