"""`make demo`: phantoms -> training -> prediction of held-out cases -> evaluation, on a CPU.

Sized to finish in under 15 minutes on 2 CPU cores: small phantoms (``size`` in-plane
voxels over a realistic field of view), the reference network and patch sampling, at a
coarser working spacing than the reference 1.5x1.5x2.0 mm, bounded by ``--minutes``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from lungseg.batch import predict_files
from lungseg.evaluation import evaluate, format_table
from lungseg.phantoms import synth
from lungseg.report.figures import plot_overlay
from lungseg.training.config import TrainConfig
from lungseg.training.loop import train

#: Settings of the demo run (documented in the README): the `cpu-fast` recipe on small phantoms.
DEMO = {
    "n_train": 10,
    "n_test": 3,
    "size": 128,
    "recipe": "cpu-fast",
    "minutes": 9.0,
}


def run_demo(out: str | Path = "runs/demo", minutes: float = DEMO["minutes"], seed: int = 0) -> dict:
    """Run the whole pipeline; returns the evaluation summary."""
    from lungseg.io.volumes import read_volume

    out = Path(out)
    t0 = time.monotonic()
    train_dir, test_dir = out / "data" / "train", out / "data" / "test"
    print(f"[1/4] synthesising {DEMO['n_train']} training and {DEMO['n_test']} held-out phantoms")
    synth(DEMO["n_train"], train_dir, seed=seed, size=DEMO["size"], overwrite=True)
    synth(DEMO["n_test"], test_dir, seed=seed + 10_000, size=DEMO["size"], overwrite=True)
    print(f"[2/4] training for at most {minutes:g} minutes")
    cfg = TrainConfig(data=str(train_dir), out=str(out), recipe=DEMO["recipe"], max_minutes=minutes,
                      val_every=2, val_roi_size=[128, 128, 128], seed=seed)
    summary = train(cfg)
    print(f"      {json.dumps(summary)}")
    print("[3/4] predicting held-out cases")
    images = sorted((test_dir / "imagesTr").glob("*.nii.gz"))
    pred_dir = out / "pred"
    predict_files(images, pred_dir, model=out / "best.pt", overwrite=True, progress=True)
    for img_path in images:
        image, mask = read_volume(img_path), read_volume(pred_dir / img_path.name)
        plot_overlay(image, mask, out / "overlays" / img_path.name.replace(".nii.gz", ".png"),
                     title=f"held-out {img_path.name}")
    print("[4/4] evaluating")
    result = evaluate(pred_dir, test_dir / "labelsTr", out, overwrite=True)
    print(format_table(result))
    dice = result["summary"]["dice_lungs"]["mean"]
    print(f"mean held-out Dice {dice:.3f} ({len(images)} cases) in {(time.monotonic() - t0) / 60:.1f} min; "
          f"outputs in {out}/")
    return result


def main(out: Annotated[Path, typer.Option(help="run folder")] = Path("runs/demo"),
         minutes: Annotated[float, typer.Option(min=0.1, help="training budget")] = DEMO["minutes"]) -> None:
    """phantoms -> training -> prediction of held-out cases -> evaluation."""
    run_demo(out, minutes)


if __name__ == "__main__":
    typer.run(main)
