"""Training: the `tutorial` recipe against `cpu-fast`, same phantoms, same wall-clock budget.

`tutorial` (the reference notebook): 1.5x1.5x2.0 mm, 96^3 patches, 2 volumes x 4 patches = 8
per step, Dice loss, Adam 1e-4 constant, inference by 96^3 sliding window with 0.75 overlap.
`cpu-fast` (the default model's recipe family): 2.5 mm, 96^3 patches, 2 per step, Dice+CE,
Adam 1e-3 with cosine decay, inference by 160^3 windows with 0.25 overlap plus HU refinement.
Recipes: `lungseg.training.recipes`.
`cpu-fast bf16` is `cpu-fast` trained in bfloat16 on the CPU (`cpu_bf16`).
All get the same minutes on the same CPU threads; the table reports steps, patches per
second, best validation Dice, held-out Dice on the original grids and inference seconds.

    python bench/train.py [--minutes 5] [--n-train 8] [--size 192] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--n-train", type=int, default=8)
    p.add_argument("--n-test", type=int, default=3)
    p.add_argument("--size", type=int, default=192)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="runs/bench_train")
    p.add_argument("--reuse", action="store_true", help="evaluate runs already trained in --out")
    args = p.parse_args()

    import torch

    from lungseg.batch import predict_files
    from lungseg.evaluation import evaluate
    from lungseg.inference.predictor import InferenceSettings
    from lungseg.phantoms import synth
    from lungseg.training.config import TrainConfig
    from lungseg.training.loop import train
    from lungseg.training.recipes import RECIPES

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    train_dir, test_dir = out / "data" / "train", out / "data" / "test"
    if not (train_dir / "dataset.json").exists():
        synth(args.n_train, train_dir, seed=0, size=args.size, variations=True)
        synth(args.n_test, test_dir, seed=777, size=args.size, variations=True)
    recipes = {  # training recipe (lungseg.training.recipes) and the inference it is compared with
        "tutorial": (RECIPES["tutorial"],
                     InferenceSettings(roi_size=(96, 96, 96), overlap=0.75, mode="constant", refine=False)),
        "cpu-fast": (RECIPES["cpu-fast"], InferenceSettings()),
        # the same recipe in bfloat16 (TrainConfig.cpu_bf16): faster steps where the CPU has
        # AVX512-BF16 or AMX (elsewhere bfloat16 is emulated and may be slower than float32)
        "cpu-fast bf16": ({**RECIPES["cpu-fast"], "cpu_bf16": True}, InferenceSettings()),
    }
    images = sorted((test_dir / "imagesTr").glob("*.nii.gz"))
    rows = {}
    for name, (cfg, infer) in recipes.items():
        run = out / name.replace(" ", "-")
        if args.reuse and (run / "summary.json").exists():
            summary = json.loads((run / "summary.json").read_text())
        else:
            summary = train(TrainConfig(data=str(train_dir), out=str(run), max_minutes=args.minutes,
                                        **{**cfg, "val_every": 2, "seed": 0}))
        t0 = time.perf_counter()
        predict_files(images, run / "pred", model=run / "best.pt", settings=infer, overwrite=True,
                      progress=False)
        seconds = (time.perf_counter() - t0) / len(images)
        ev = evaluate(run / "pred", test_dir / "labelsTr")
        patches = summary["steps"] * cfg["batch_size"]
        rows[name] = {"steps": summary["steps"], "patches_per_s": patches / (summary["minutes"] * 60),
                      "best_val_dice": summary["best_val_dice"],
                      "heldout_dice": ev["summary"]["dice_lungs"]["mean"],
                      "hd95_mm": ev["summary"]["hd95_lungs_mm"]["mean"], "infer_s": seconds}
        print(json.dumps({name: rows[name]}))
    print(f"\nTraining for {args.minutes:g} min each on {args.threads} CPU threads, {args.n_train} phantoms "
          f"(size {args.size}, variations on), held-out: {len(images)} phantoms\n")
    print("| recipe | steps | patches/s | best val Dice | held-out Dice | HD95 (mm) | inference s/case |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['steps']} | {r['patches_per_s']:.2f} | {r['best_val_dice']:.3f} | "
              f"{r['heldout_dice']:.3f} | {r['hd95_mm']:.1f} | {r['infer_s']:.1f} |")
    ref, ours = rows["tutorial"], rows["cpu-fast"]
    print(f"\nheld-out Dice {ours['heldout_dice']:.3f} vs {ref['heldout_dice']:.3f}; "
          f"inference {ref['infer_s'] / ours['infer_s']:.1f}x faster")


if __name__ == "__main__":
    main()
