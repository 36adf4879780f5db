"""Inference speed and memory: lungseg's defaults against the reference recipe, same run.

Same model (the shipped default) for both network rows, so only inference differs.
Reference: sliding window 96^3, overlap 0.75, argmax (the tutorial); lungseg: the whole
resampled chest as one window when it fits (else 160^3, overlap 0.25), Gaussian blending,
HU boundary refinement. Each configuration runs in a fresh process so peak
memory (max RSS) is its own. Also reports Dice against the phantom's truth, so speed is
never bought with accuracy silently.

    python bench/infer.py [--model PATH] [--size 512] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time

CONFIGS = {
    "reference (roi 96, overlap 0.75, argmax)": {"roi": 96, "overlap": 0.75, "mode": "constant",
                                                 "refine": False, "whole": 0},
    "lungseg (one window when it fits, HU refinement)": {"roi": 160, "overlap": 0.25, "mode": "gaussian",
                                                         "refine": True, "whole": 256**3},
    "classical (no network)": {"method": "classical"},
}


def one(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    from lungseg import make_phantom
    from lungseg.evaluation import case_metrics
    from lungseg.inference.predictor import InferenceSettings, Predictor
    from lungseg.inference.segment import segment

    torch.set_num_threads(args.threads)
    cfg = json.loads(args.one)
    image, truth = make_phantom(seed=args.seed, size=args.size)
    t0 = time.perf_counter()
    if cfg.get("method") == "classical":
        mask = segment(image, method="classical")
    else:
        pred = Predictor(args.model, settings=InferenceSettings(
            roi_size=(cfg["roi"],) * 3, overlap=cfg["overlap"], mode=cfg["mode"], refine=cfg["refine"],
            whole_volume_voxels=cfg["whole"]))
        t0 = time.perf_counter()  # time the prediction, not the model loading
        mask = pred.predict(image)
    seconds = time.perf_counter() - t0
    m = case_metrics(mask, truth)
    print(json.dumps({"seconds": seconds, "max_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                      "dice": m["dice_lungs"], "shape": list(image.shape), "voxels": int(np.prod(image.shape))}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        return one(args)
    rows = []
    for name, cfg in CONFIGS.items():
        cmd = [sys.executable, __file__, "--one", json.dumps(cfg), "--size", str(args.size),
               "--seed", str(args.seed), "--threads", str(args.threads)]
        if args.model:
            cmd += ["--model", args.model]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            print(out.stderr[-2000:], file=sys.stderr)
            raise SystemExit(f"{name} failed")
        rows.append((name, json.loads(out.stdout.strip().splitlines()[-1])))
    ref = rows[0][1]["seconds"]
    print(f"\nInference on a {rows[0][1]['shape']} phantom, {args.threads} threads, "
          f"{platform.processor() or platform.machine()}, torch CPU\n")
    print("| configuration | seconds | speed-up vs reference | peak RSS (GiB) | Dice |")
    print("|---|---:|---:|---:|---:|")
    for name, r in rows:
        print(f"| {name} | {r['seconds']:.1f} | {ref / r['seconds']:.1f}x | {r['max_rss_gib']:.2f} | {r['dice']:.3f} |")


if __name__ == "__main__":
    main()
