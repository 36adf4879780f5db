"""Pneumonia: multifocal peripheral ground glass and consolidation painted into the real chests
of ../shared/data (the pattern of viral pneumonia, COVID-19 among them).

Why: the most common labelled lung CT in public hands since 2020 is a pneumonia scan, and a
lung mask that leaves the opacities out underestimates both the lung and the disease share
computed from it. No shared scan has pneumonia, so it is painted: each chest is segmented once
(the clean mask), then `n` lesions are placed at the lung's surface (centres within a third of
their radius of the pleura, drawn more often in the lower and the posterior lung, both sides),
each a lobulated blob of radius r inside the lung. Inside a lesion the parenchyma rises by
`GGO_RISE` HU times its share of parenchyma (vessels and walls stay; ground glass near
-550 HU); in a share of the lesions their core (the inner 60 % of the radius) becomes
consolidation (0-40 HU, texture) with air bronchograms (the vessels there become air-filled tubes
of their calibre, as the bronchi beside them would show; an airway's lumen stays dark).
Levels (lesions, radius mm, share consolidated): mild (4, 10-20, 0), moderate (8, 15-30, 0.5),
severe (14, 20-40, 0.8).

Pneumonia is lung (docs/model.md), so each mask should equal the clean one: label Dice of the
painted scan's mask against the clean mask (whole scan) and of each view against the same view
of the clean scan; lesion voxels (and consolidated voxels) kept inside the mask; mL lost and
added.

    python bench/painted_pneumonia.py [--methods unet,classical] [--model PATH]
        [--shared ../shared/data] [--out runs/painted_pneumonia] [--figures docs/images]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

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

#: level -> (lesions, radius range in mm, share of lesions with a consolidated core)
LEVELS = {"mild": (4, (10.0, 20.0), 0.0), "moderate": (8, (15.0, 30.0), 0.5),
          "severe": (14, (20.0, 40.0), 0.8)}
GGO_RISE = 300.0  # HU added to pure parenchyma inside a lesion (-850 -> -550)
VIEWS = ("bases", "apex", "slab5@50%", "slab1@50%", "slab1@25%")
FIGURE_LEVEL = "severe"


def paint_chest(hu: np.ndarray, lung: np.ndarray, affine: np.ndarray, level: str,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(`hu` with pneumonia of `level` painted into `lung` (bool), int16; lesion voxels;
    consolidated voxels), all on the input grid (`lungseg.transforms.paint_pneumonia` in RAS, the
    lower and the posterior lung weighted up to three times each)."""
    from lungseg.transforms import paint_pneumonia

    n, radius, consolidated = LEVELS[level]
    ras, sp, back = to_ras(np.asarray(hu, np.float32), affine)
    lung = to_ras(np.asarray(lung, bool), affine)[0]
    zs = np.flatnonzero(lung.any(axis=(0, 1)))
    ys = np.flatnonzero(lung.any(axis=(0, 2)))
    zrel = np.clip((np.arange(lung.shape[2]) - zs.min()) / max(zs.max() - zs.min(), 1), 0, 1)
    yrel = np.clip((np.arange(lung.shape[1]) - ys.min()) / max(ys.max() - ys.min(), 1), 0, 1)
    weight = (1.0 + 2.0 * (1.0 - zrel))[None, None, :] * (1.0 + 2.0 * (1.0 - yrel))[None, :, None]
    weight = np.broadcast_to(weight, lung.shape)
    out, lesion, core = paint_pneumonia(ras, lung, sp, rng, n, radius, consolidated, GGO_RISE, weight)
    return np.round(back(out)).astype(np.int16), back(lesion), back(core)


def main() -> int:
    p = bench_parser(__doc__, "runs/painted_pneumonia")
    t_start = time.perf_counter()
    setup = bench_setup(p)
    if setup is None:
        return 0
    args, shared, methods, predictor, out = setup

    import lungseg

    def paint(case, level, rng):
        hu, lesion, core = paint_chest(np.asarray(case.image.array), case.clean > 0, case.image.affine, level, rng)

        def fields(mask):
            inside = mask > 0
            return {"lesion_ml": round(float(lesion.sum() * case.image.voxel_ml)),
                    "lesion_kept": round(float(inside[lesion].mean()), 3) if lesion.any() else None,
                    "consolidation_kept": round(float(inside[core].mean()), 3) if core.any() else None}
        return Painting(lungseg.Volume(hu, case.image.affine), case.clean, case.clean_views, fields)

    rows, worst = run_painted(shared, methods, predictor, LEVELS, paint, VIEWS, FIGURE_LEVEL)
    figures = save_worst_figures(
        worst, out, args.figures, "pneumonia_worst",
        lambda method, row: (f"{method}, {row['chest']} with {FIGURE_LEVEL} pneumonia painted: Dice vs the clean "
                             f"scan's mask {row['whole']:.3f}, lesions kept {row['lesion_kept']}, "
                             f"+{row['added_ml']} / -{row['lost_ml']} mL"))
    for method in methods:
        print(f"\n{method}: multifocal peripheral pneumonia painted (" + ", ".join(
            f"{k} {v[0]} lesions of {v[1][0]:.0f}-{v[1][1]:.0f} mm, {v[2]:.0%} consolidated" for k, v in LEVELS.items())
              + "); label Dice against the clean scan's mask, views against the clean scan's same view")
        print("| chest | level | lesion mL | lesion kept | consolidation kept | whole | lost mL | added mL | "
              + " | ".join(VIEWS) + " |")
        print("|---|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(VIEWS))
        for r in rows[method]:
            cells = " | ".join("-" if r.get(v) is None else f"{r[v]:.3f}" for v in VIEWS)
            print(f"| {r['chest']} | {r['level']} | {r['lesion_ml']} | {r['lesion_kept']} | "
                  f"{'-' if r['consolidation_kept'] is None else r['consolidation_kept']} | {r['whole']:.3f} | "
                  f"{r['lost_ml']} | {r['added_ml']} | {cells} |")
        for level in LEVELS:
            sel = [r for r in rows[method] if r["level"] == level]
            every = [r[k] for r in sel for k in ("whole", *VIEWS) if r.get(k) is not None]
            if every:
                kept = [r["lesion_kept"] for r in sel if r["lesion_kept"] is not None]
                print(f"{level}: mean {np.mean(every):.4f}, worst {min(every):.4f} over {len(every)} masks; "
                      f"lesions kept mean {np.mean(kept):.3f}, worst {min(kept):.3f}")
    runtime = time.perf_counter() - t_start
    write_json({"shared": str(shared), "methods": methods, "model": args.model, "levels": LEVELS,
                "ggo_rise_hu": GGO_RISE, "lungseg_version": lungseg.__version__,
                "runtime_s": round(runtime, 1), "rows": rows, "figures": figures}, out / "results.json")
    print(f"\nruntime {runtime:.0f} s; results in {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
