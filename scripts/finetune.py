"""Fine-tune the default model on phantoms with masses and on real chests with teacher masks.

Why: the phantom-only model called real tumours "not lung" and had seen no real texture.
Stage 2 of the default model (stage 1 is `scripts/pretrained.py`):

1. phantoms with every variation on, including masses of 2-4 cm radius touching the
   pleura or mediastinum (lung label), seeds 1000... (train) and 5000... (validation);
2. real scans from ../shared/data, when present, with a teacher mask: the current default
   pipeline's whole-scan mask (network + HU refinement + airways out + pleural dents filled),
   plus the labelled tumour / nodule voxels, which belong to the lung. Trained on:
   4D-CT, LIDC-0314, the IBSI NSCLC crop (GTV), LIDC-0001 and LIDC-0003 slabs (nodules).
   Held out for honest checks: Lung-PET-CT-Dx A0001 and A0002 (both kernels), LIDC-0002,
   the cropped CTA and the abdomen series;
3. training starts from the shipped weights (`init_weights`), `default-model` recipe, a few
   epochs at a lower learning rate; float16 weights are written to OUT/default.pt.

    python scripts/finetune.py --out runs/finetune [--epochs 6] [--install]
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
INSTALLED = Path(__file__).resolve().parents[1] / "src" / "lungseg" / "models" / "default.pt"
#: real scans that train (name -> (image, tumour label or None, minimum reader count))
REAL_TRAIN = {
    "real_4dct": ("real_unlabeled/chest_4dct_phase00.nii.gz", None, 0),
    "real_lidc0314": ("real_unlabeled/chest_lidc0314_thin.nii.gz", None, 0),
    "real_ibsi": ("real_pathology/ct_ibsi_nsclc_crop.nii.gz", "real_pathology/ct_ibsi_nsclc_crop_tumour.nii.gz", 1),
    "real_lidc0001": ("real_pathology/ct_lidc0001_slab.nii.gz", "real_pathology/ct_lidc0001_slab_tumour.nii.gz", 1),
    "real_lidc0003": ("real_pathology/ct_lidc0003_slab.nii.gz", "real_pathology/ct_lidc0003_slab_tumour.nii.gz", 1),
}


def teacher_data(out: Path, model: Path) -> list[str]:
    """Write real images and their teacher masks into OUT/imagesTr, OUT/labelsTr."""
    import lungseg
    from lungseg.io.volumes import read_volume, write_volume

    predictor = lungseg.Predictor(model)
    names = []
    for name, (image_rel, tumour_rel, min_readers) in REAL_TRAIN.items():
        if not (SHARED / image_rel).exists():
            continue
        image = read_volume(SHARED / image_rel)
        lung = lungseg.segment(image, predictor=predictor).array > 0
        if tumour_rel:
            lung |= read_volume(SHARED / tumour_rel).array >= min_readers
        write_volume(image, out / "imagesTr" / f"{name}.nii.gz")
        write_volume(image.with_array(lung.astype(np.uint8)), out / "labelsTr" / f"{name}.nii.gz")
        names.append(name)
        print(f"  teacher {name}: {lung.sum() * image.voxel_ml:.0f} mL", flush=True)
    return names


def main(out: Annotated[Path, typer.Option(help="build folder")] = Path("runs/finetune"),
         epochs: Annotated[int, typer.Option(min=1)] = 6,
         n_train: Annotated[int, typer.Option(min=1)] = 24,
         size: Annotated[int, typer.Option(min=96)] = 224,
         lr: Annotated[float, typer.Option()] = 3e-4,
         install_weights: Annotated[bool, typer.Option("--install", help="copy into src/")] = False) -> None:
    """Fine-tune the shipped model (see the module docstring)."""
    from lungseg.networks import load_model, save_checkpoint
    from lungseg.phantoms import synth
    from lungseg.training.config import TrainConfig
    from lungseg.training.loop import train

    t0 = time.monotonic()
    data = out / "data"
    if not (data / "train" / "dataset.json").exists():
        synth(n_train, data / "train", seed=1000, size=size, variations=True)
        synth(4, data / "val", seed=5000, size=size, variations=True)
        real = teacher_data(data / "train", INSTALLED)
        info = json.loads((data / "train" / "dataset.json").read_text())
        info["training"] += [{"image": f"./imagesTr/{n}.nii.gz", "label": f"./labelsTr/{n}.nii.gz"} for n in real]
        (data / "train" / "dataset.json").write_text(json.dumps(info, indent=1))
    print(f"data ready in {(time.monotonic() - t0) / 60:.1f} min", flush=True)
    cfg = TrainConfig(data=str(data / "train"), val_data=str(data / "val"), out=str(out),
                      recipe="default-model", max_epochs=epochs, val_every=epochs, lr=lr,
                      init_weights=str(INSTALLED), seed=0, progress=False)
    summary = train(cfg)
    model, settings = load_model(out / "last.pt")
    settings["trained"] = {"stage1": "scripts/pretrained.py", "stage2": "scripts/finetune.py",
                           "epochs": epochs, "n_phantoms": n_train, "real": list(REAL_TRAIN),
                           "summary": summary}
    save_checkpoint(out / "default.pt", model, settings, half=True)
    print(json.dumps(summary), f"done in {(time.monotonic() - t0) / 60:.1f} min", flush=True)
    if install_weights:
        shutil.copyfile(out / "default.pt", INSTALLED)
        print(f"installed {INSTALLED}")


if __name__ == "__main__":
    typer.run(main)
