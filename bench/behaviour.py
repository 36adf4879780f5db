"""Behaviour snapshot: held-out phantom Dice and real-scan lung volumes, for before/after checks.

A refactor must not change what lungseg computes. This prints (and writes as JSON) the Dice
of both methods on held-out phantoms and the right/left lung volumes on the shared real
chests; `--compare OLD.json` prints the largest differences.

    python bench/behaviour.py --out runs/behaviour_after.json --compare runs/behaviour_before.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
REAL = ["chest_cta_cropped.nii.gz", "real_unlabeled/chest_4dct_phase00.nii.gz",
        "real_unlabeled/chest_lungpetctdx_a0001_5mm.nii.gz", "abdomen_ct_dicom"]


def snapshot(n_phantoms: int, size: int, model: str | None = None) -> dict:
    import lungseg
    from lungseg.evaluation import case_metrics

    try:
        from lungseg.quantification import quantify
    except ImportError:  # before the rename
        from lungseg.quantification import quantify

    predictor = lungseg.Predictor(model)
    out: dict = {"phantoms": {}, "real": {}}
    for seed in range(90000, 90000 + n_phantoms):
        image, truth = lungseg.make_phantom(seed=seed, size=size, variations=True)
        for method in ("unet", "classical"):
            mask = lungseg.segment(image, method=method, predictor=predictor)
            out["phantoms"][f"{seed}/{method}"] = round(case_metrics(mask, truth)["dice_lungs"], 5)
            print(seed, method, out["phantoms"][f"{seed}/{method}"], flush=True)
    for rel in REAL:
        path = SHARED / rel
        if not path.exists():
            continue
        image = lungseg.read_volume(path)
        for method in ("unet", "classical"):
            mask = lungseg.segment(image, method=method, predictor=predictor)
            q = quantify(image, mask)
            out["real"][f"{rel}/{method}"] = [round(q["right"]["volume_ml"], 2), round(q["left"]["volume_ml"], 2)]
            print(rel, method, out["real"][f"{rel}/{method}"], flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="runs/behaviour.json")
    p.add_argument("--compare", default=None)
    p.add_argument("--n", type=int, default=6)
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    args = p.parse_args()
    snap = snapshot(args.n, args.size, args.model)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(snap, indent=1))
    if args.compare:
        old = json.loads(Path(args.compare).read_text())
        dd = max((abs(snap["phantoms"][k] - v) for k, v in old["phantoms"].items()), default=0.0)
        dv = max((abs(a - b) for k, v in old["real"].items() for a, b in zip(snap["real"][k], v, strict=True)),
                 default=0.0)
        print(f"largest Dice difference {dd:.5f}; largest real-scan volume difference {dv:.2f} mL")
    for method in ("unet", "classical"):
        d = [v for k, v in snap["phantoms"].items() if k.endswith(method)]
        print(f"{method}: mean phantom Dice {np.mean(d):.4f} over {len(d)} (min {np.min(d):.4f})")


if __name__ == "__main__":
    main()
