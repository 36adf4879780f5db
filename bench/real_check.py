"""Honest real-data check: default model and classical method on the real CTs in ../shared/data.

Writes overlays to docs/images/real_<case>_<method>.png and prints a table of lung volumes,
run times and what a reader should check (both lungs, sides, trachea, bowel gas).
The scans are unlabelled: this is a look, not a Dice.

    python bench/real_check.py [--shared ../shared/data] [--model PATH] [--out docs/images]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

CASES = {
    "chest_cta_cropped": "chest_cta_cropped.nii.gz",
    "chest_4dct": "real_unlabeled/chest_4dct_phase00.nii.gz",
    "chest_lidc0314": "real_unlabeled/chest_lidc0314_thin.nii.gz",
    "chest_lungpetctdx_5mm": "real_unlabeled/chest_lungpetctdx_a0001_5mm.nii.gz",
    "abdomen_dicom": "abdomen_ct_dicom",
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    p.add_argument("--model", default=None)
    p.add_argument("--out", default="docs/images")
    args = p.parse_args()

    from lungseg.inference.predictor import Predictor
    from lungseg.inference.segment import segment
    from lungseg.io.volumes import read_volume
    from lungseg.quantification import quantify
    from lungseg.report.figures import plot_overlay

    shared, out = Path(args.shared), Path(args.out)
    predictor = Predictor(args.model)
    rows = []
    for name, rel in CASES.items():
        path = shared / rel
        if not path.exists():
            print(f"skip {name}: {path} not found")
            continue
        image = read_volume(path)
        for method in ("unet", "classical"):
            t0 = time.perf_counter()
            mask = segment(image, method=method, predictor=predictor if method == "unet" else None)
            seconds = time.perf_counter() - t0
            q = quantify(image, mask)
            plot_overlay(image, mask, out / f"real_{name}_{method}.png", title=f"{name} — {method}")
            rows.append({"case": name, "method": method, "shape": list(image.shape),
                         "right_ml": round(q["right"]["volume_ml"]), "left_ml": round(q["left"]["volume_ml"]),
                         "seconds": round(seconds, 1)})
            print(json.dumps(rows[-1]))
    print("\n| case | method | right lung (mL) | left lung (mL) | seconds (2 CPU threads) |")
    print("|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['case']} | {r['method']} | {r['right_ml']} | {r['left_ml']} | {r['seconds']} |")


if __name__ == "__main__":
    main()
