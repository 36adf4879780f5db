"""Thin views of phantoms against the truth: 1- and 3-slice views at nine heights.

Why: the real chests in ../shared have no lung labels, so `bench/real_robustness.py` judges
their thin views against the whole scan's own mask; phantoms have the truth. Each phantom
(held-out seeds, every variation: bowel gas under the bases, masses, effusions) is cut to 1
and 3 slices at nine heights, from 15 % of the lung height below the lungs to 98 % of it, and
each view is segmented on its own:

- Dice against the truth over the views that hold lung, overall and per height (low at the
  tips, where a view holds a few mL);
- mL called lung in the views that hold none (below the lungs: bowel and stomach gas).

About 8 min for the 24 held-out phantoms and both methods on 2 CPU cores (one view of a
256^2 phantom: ~1 s with the network, ~0.06 s classical), plus ~5 min to make the phantoms
when no --data is given.

    python bench/thin_views.py [--data DIR | --n 24 --size 256 --seed 90000]
        [--methods unet,classical] [--model PATH] [--out runs/thin_views]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

#: view heights as a fraction of the lung height from its bottom (negative: below the lungs)
HEIGHTS = (-0.15, -0.05, 0.02, 0.1, 0.3, 0.5, 0.7, 0.9, 0.98)
SLICES = (1, 3)


def views(image, truth: np.ndarray):
    """(height, slices, view image, view truth) for every height and thickness; each view keeps
    its voxels' world positions (`real_robustness.crop_volume`). Heights outside the scan (below
    a field of view that ends at the lung bases) are skipped."""
    from real_robustness import _box, crop_volume  # bench/, beside this file

    from lungseg.core.geometry import superior_axis

    ax = superior_axis(image.affine)
    zs = np.flatnonzero(truth.any(axis=tuple(a for a in range(3) if a != ax)))
    lo, hi = int(zs.min()), int(zs.max())
    for f in HEIGHTS:
        z = int(round(lo + f * (hi - lo)))
        if not 0 <= z < image.shape[ax]:  # a phantom whose field of view ends at its lungs
            continue
        for k in SLICES:
            z0 = max(0, min(image.shape[ax] - k, z - k // 2))
            box = _box(ax, z0, z0 + k - 1, image.shape)
            yield f, k, crop_volume(image, box), truth[box]


def run(data: Path, methods: list[str], model: Path | None) -> dict:
    """Every view of every phantom in `data` (a `lungseg.synth` folder), each method."""
    import lungseg
    from lungseg.evaluation import dice
    from lungseg.inference.predictor import Predictor

    info = json.loads((data / "dataset.json").read_text())
    predictor = Predictor(model) if "unet" in methods else None
    per_height = {m: {f: [] for f in HEIGHTS} for m in methods}
    false_ml = {m: 0.0 for m in methods}
    seconds = {m: 0.0 for m in methods}
    for i, entry in enumerate(info["training"]):
        image = lungseg.read_volume(data / entry["image"])
        truth = np.asarray(lungseg.read_volume(data / entry["label"]).array) > 0
        for f, _, view, t in views(image, truth):
            for m in methods:
                t0 = time.perf_counter()
                mask = (predictor.predict(view).array if m == "unet" else
                        lungseg.segment(view, method="classical").array) > 0
                seconds[m] += time.perf_counter() - t0
                if t.any():
                    per_height[m][f].append(dice(mask, t))
                else:
                    false_ml[m] += float(np.count_nonzero(mask)) * view.voxel_ml
        print(f"  {i + 1}/{len(info['training'])} {Path(entry['image']).name}", flush=True)
    out = {}
    for m in methods:
        every = [d for f in HEIGHTS for d in per_height[m][f]]
        out[m] = {"dice_mean": round(float(np.mean(every)), 4), "views_with_lung": len(every),
                  "dice_by_height": {f"{f:+.2f}": (round(float(np.mean(v)), 4) if v else None)
                                     for f, v in per_height[m].items()},
                  "ml_called_lung_without_lung": round(false_ml[m], 1), "seconds": round(seconds[m], 1)}
    return out


def table(results: dict) -> str:
    lines = ["| method | Dice, views with lung | views | " + " | ".join(f"{f:+.0%}" for f in HEIGHTS)
             + " | mL called lung in views without lung | seconds |",
             "|---|---:|---:|" + "---:|" * len(HEIGHTS) + "---:|---:|"]
    for m, r in results.items():
        cells = [("-" if v is None else f"{v:.3f}") for v in r["dice_by_height"].values()]
        lines.append(f"| {m} | {r['dice_mean']:.4f} | {r['views_with_lung']} | " + " | ".join(cells)
                     + f" | {r['ml_called_lung_without_lung']:.1f} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, help="a folder made by lungseg.synth (imagesTr, labelsTr, dataset.json)")
    p.add_argument("--n", type=int, default=24, help="phantoms to make without --data")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--seed", type=int, default=90000, help="first seed (90000: the model card's held-out phantoms)")
    p.add_argument("--methods", default="unet,classical")
    p.add_argument("--model", type=Path, help="model file for unet (default: the packaged model)")
    p.add_argument("--out", type=Path, default=Path("runs/thin_views"))
    args = p.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods or set(methods) - {"unet", "classical"}:
        p.error(f"--methods: unet and/or classical, got {args.methods!r}")

    t0 = time.monotonic()
    data = args.data
    if data is None:
        from lungseg.phantoms import synth

        data = synth(args.n, args.out / "phantoms", seed=args.seed, size=args.size, variations=True,
                     overwrite=True)
    results = run(data, methods, args.model)
    print(table(results))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"data": str(data), "heights": HEIGHTS, "slices": SLICES,
                                                       "results": results}, indent=1))
    print(f"runtime {time.monotonic() - t0:.0f} s; results in {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
