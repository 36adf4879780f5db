"""Low-dose noise painted into the real chests of ../shared/data: each mask with the noisy scan
smoothed first (`core.noise.quieter`, what `predict` does) and as is, in the same run.

Why: a low-dose scan with a sharp kernel has two to three times the noise of the shared chests
(15-45 HU by `core.noise.noise_sd`), and the default model was trained on noise up to ~60 HU.
Noise is painted: Gaussian noise correlated over 0.7 mm (as a reconstruction kernel makes it),
scaled to `LEVELS` HU, added to the scan's own. Noise is not lung and takes none away, so each
mask should equal the clean scan's: label Dice against the clean mask (whole scan), and of each
view (bases, apex, 5- and 1-slice slabs, from `real_robustness.make_crops`) against the same
view of the clean scan; mL lost and added; the noise measured and the smoothing applied.

    python bench/painted_noise.py [--methods unet,classical] [--model PATH]
        [--shared ../shared/data] [--out runs/painted_noise]
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_robustness import (  # noqa: E402
    bench_parser,
    bench_setup,
    clean_cases,
    crop_views,
    log,
    painted_row,
    save_worst_figures,
    write_json,
)

LEVELS = (60.0, 90.0, 130.0)  # HU of noise added (sd)
CORRELATION_MM = 0.7
VIEWS = ("bases", "apex", "slab5@50%", "slab1@50%", "slab1@25%")
MODES = ("smoothed", "as is")
FIGURE_LEVEL = 90.0  # the worst smoothed whole scan at this level is drawn (figure per method)


def paint_noise(hu: np.ndarray, spacing, sd: float, rng: np.random.Generator) -> np.ndarray:
    """`hu` plus Gaussian noise of `sd` HU correlated over `CORRELATION_MM` (float32)."""
    n = ndimage.gaussian_filter(rng.standard_normal(hu.shape).astype(np.float32),
                                [CORRELATION_MM / s for s in spacing])
    return np.asarray(hu, np.float32) + n * np.float32(sd / n.std())


@contextmanager
def unsmoothed():
    """Both methods without `core.noise.quieter` (the scan as is): the comparison's other half."""
    import lungseg.inference.classical as classical
    import lungseg.inference.predictor as predictor

    saved = predictor.quieter, classical.quieter
    predictor.quieter = classical.quieter = lambda volume: volume
    try:
        yield
    finally:
        predictor.quieter, classical.quieter = saved


def main() -> int:
    p = bench_parser(__doc__, "runs/painted_noise")
    t_start = time.perf_counter()
    setup = bench_setup(p)
    if setup is None:
        return 0
    args, shared, methods, predictor, out = setup

    import lungseg
    from lungseg.core.noise import noise_sd, reduce_noise

    rows = {m: [] for m in methods}
    worst = {m: None for m in methods}
    for case in clean_cases(shared, methods, predictor, VIEWS):
        name, image, method, clean = case.name, case.image, case.method, case.clean
        for i, sd in enumerate(LEVELS):
            noisy = lungseg.Volume(paint_noise(image.array, image.spacing, sd, np.random.default_rng(i)),
                                   image.affine)
            _, sigma, measured = reduce_noise(noisy.array, noisy.spacing)
            for mode in MODES:
                with unsmoothed() if mode == "as is" else nullcontext():
                    scored, mask = painted_row(noisy, clean, case.crops, case.clean_views, method, case.predictor)
                row = {"chest": name, "added_sd": sd, "mode": mode,
                       "noise_sd": round(measured, 1), "smoothing_mm": sigma if mode == "smoothed" else 0.0,
                       **scored}
                if (mode == "smoothed" and sd == FIGURE_LEVEL
                        and (worst[method] is None or row["whole"] < worst[method][0]["whole"])):
                    worst[method] = (row, crop_views(noisy, mask, clean))
                rows[method].append(row)
                log(f"  {method} {name} +{sd:.0f} HU {mode}: {row}")
        log(f"  {name}: own noise {noise_sd(image.array, image.spacing):.1f} HU")
    figures = save_worst_figures(
        worst, out, args.figures, "noise_worst",
        lambda method, row: (f"{method}, {row['chest']} with {FIGURE_LEVEL:.0f} HU of noise added (smoothed "
                             f"{row['smoothing_mm']} mm): Dice vs the clean scan's mask {row['whole']:.3f}, "
                             f"+{row['added_ml']} / -{row['lost_ml']} mL"))
    for method in methods:
        print(f"\n{method}: noise painted (sd added, correlated over {CORRELATION_MM} mm); the scan smoothed "
              "first (what predict does) and as is; label Dice against the clean scan's mask, views against "
              "the clean scan's same view")
        print("| chest | noise added | measured | mode | smoothing mm | whole | lost mL | added mL | "
              + " | ".join(VIEWS) + " |")
        print("|---|---:|---:|---|---:|---:|---:|---:|" + "---:|" * len(VIEWS))
        for r in rows[method]:
            cells = " | ".join("-" if r.get(v) is None else f"{r[v]:.3f}" for v in VIEWS)
            print(f"| {r['chest']} | {r['added_sd']:.0f} | {r['noise_sd']} | {r['mode']} | {r['smoothing_mm']} | "
                  f"{r['whole']:.3f} | {r['lost_ml']} | {r['added_ml']} | {cells} |")
        for sd in LEVELS:
            for mode in MODES:
                sel = [r for r in rows[method] if r["added_sd"] == sd and r["mode"] == mode]
                every = [r[k] for r in sel for k in ("whole", *VIEWS) if r.get(k) is not None]
                if every:
                    print(f"+{sd:.0f} HU, {mode}: mean {np.mean(every):.4f}, worst {min(every):.4f} over "
                          f"{len(every)} masks; whole scans mean {np.mean([r['whole'] for r in sel]):.4f}, "
                          f"added {sum(r['added_ml'] for r in sel):.0f} mL, lost {sum(r['lost_ml'] for r in sel):.0f} mL")
    runtime = time.perf_counter() - t_start
    write_json({"shared": str(shared), "methods": methods, "model": args.model, "levels": LEVELS,
                "correlation_mm": CORRELATION_MM, "lungseg_version": lungseg.__version__,
                "runtime_s": round(runtime, 1), "rows": rows, "figures": figures},
               out / "results.json")
    print(f"\nruntime {runtime:.0f} s; results in {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
