"""Stage 2 of the default model: fine-tune on masses, real texture, slabs and cut views.

Why: the phantom-only model (stage 1, `scripts/pretrained.py`) calls real tumours "not lung",
has seen no real texture, and was never shown a thin slab or a bases-only view the way
inference presents them (edge slices replicated). This stage starts from the stage-1 weights
and trains on:

1. phantoms with every variation on, two thirds of them with masses of 18-40 mm radius
   touching the pleura (lung label): the first `n_mass` seeds from 1000 up that draw masses
   and the first `n_plain` that do not; 4 validation phantoms (seeds 5000...);
2. real scans from ../shared/data, when present, with a teacher mask: the stage-1 pipeline's
   whole-scan mask (network + HU refinement + airways out + pleural dents filled) plus the
   labelled tumour / nodule voxels, which belong to the lung. Trained on: the 4D-CT chest,
   the IBSI NSCLC crop (GTV; listed 3 times in `REAL_TRAIN`, the only real mass with an
   exact outline), the LIDC-0001 and LIDC-0003 slabs (nodules). Held out for honest checks:
   Lung-PET-CT-Dx A0001 (both files) and A0002 (both kernels), LIDC-0314 (its dense right
   upper lobe is left out by the stage-1 mask, which would teach the wrong answer), the
   LIDC-0002 slab, the cropped CTA and the abdomen series;
3. a share of patches (`slab_prob`) turned into 1-8 voxel slabs or top/bottom cuts with the
   edge slices replicated (`transforms.RandSlabd`), as inference pads a short scan;
4. a share of patches (`mass_prob`), real or phantom, given a soft-tissue mass where the lung
   meets the chest wall, the mediastinum or the diaphragm, label unchanged
   (`transforms.RandMassd`): masses in real anatomy, at places no labelled mass showed.

The whole stage is run once per training seed (`STAGE2["seeds"]`, OUT/seed<N>) and the runs'
weights are averaged into one model (`lungseg.networks.average_weights`, a "model soup"):
runs that differ only in their seed differ by 0.02-0.2 on the hard real scans (the held-out
A0001 mass 0.37-0.56 over three seeds); the average of seeds 0 and 1 was at least as good as the
better run on the crops and the masses and costs nothing at inference (docs/model_notes.md, "Build-to-build noise").

Fixed seeds and a fixed epoch count, so a rerun on the same machine gives the same weights.

    python scripts/finetune.py --out runs/finetune --init runs/pretrained/stage1.pt [--seeds 0,1]

`make pretrained` runs stage 1 and this stage in one go and reports the held-out phantoms.
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
#: real scans that train (name -> (image, tumour label or None, minimum reader count, copies))
REAL_TRAIN = {
    "real_4dct": ("real_unlabeled/chest_4dct_phase00.nii.gz", None, 0, 1),
    "real_ibsi": ("real_pathology/ct_ibsi_nsclc_crop.nii.gz", "real_pathology/ct_ibsi_nsclc_crop_tumour.nii.gz", 1, 3),
    "real_lidc0001": ("real_pathology/ct_lidc0001_slab.nii.gz", "real_pathology/ct_lidc0001_slab_tumour.nii.gz", 1, 1),
    "real_lidc0003": ("real_pathology/ct_lidc0003_slab.nii.gz", "real_pathology/ct_lidc0003_slab_tumour.nii.gz", 1, 1),
}
#: everything that defines stage 2 (besides the stage-1 weights it starts from)
STAGE2 = {"n_mass": 16, "n_plain": 8, "size": 224, "seed_train": 1000, "seed_val": 5000, "n_val": 4,
          "epochs": 72, "lr": 3e-4, "slab_prob": 0.3, "mass_prob": 0.3, "cpu_bf16": True, "seeds": [0, 1],
          "real": {k: v[3] for k, v in REAL_TRAIN.items()}}


def phantom_seeds(n_mass: int, n_plain: int, start: int) -> list[int]:
    """The first n_mass seeds (from start) whose phantom draws masses, and n_plain that do not."""
    from lungseg.phantoms.params import sample_params

    mass, plain, seed = [], [], start
    while len(mass) < n_mass or len(plain) < n_plain:
        group = mass if sample_params(seed, variations=True).masses else plain
        if len(group) < (n_mass if group is mass else n_plain):
            group.append(seed)
        seed += 1
    return sorted(mass + plain)


def phantom_data(root: Path, seeds: list[int], size: int) -> list[dict]:
    """One phantom per seed into root/imagesTr, root/labelsTr; returns dataset.json entries."""
    from lungseg.phantoms import synth

    entries = []
    for s in seeds:
        tmp = root / f"_seed{s}"
        synth(1, tmp, seed=s, size=size, variations=True, progress=False, overwrite=True)
        for sub in ("imagesTr", "labelsTr"):
            (root / sub).mkdir(parents=True, exist_ok=True)
            (tmp / sub / "lung_000.nii.gz").replace(root / sub / f"phantom_{s}.nii.gz")
        shutil.rmtree(tmp)
        entries.append({"image": f"./imagesTr/phantom_{s}.nii.gz", "label": f"./labelsTr/phantom_{s}.nii.gz"})
    return entries


def teacher_masks(real: dict, predictor):
    """(name, image, teacher mask) of each real scan of `real` (name -> (image, tumour label or
    None, minimum reader count, ...)) found in ../shared/data: the whole-scan mask of
    `predictor` plus the labelled tumour / nodule voxels, which belong to the lung."""
    import lungseg
    from lungseg.io.volumes import read_volume

    for name, (image_rel, tumour_rel, min_readers, *_) in real.items():
        if not (SHARED / image_rel).exists():
            continue
        image = read_volume(SHARED / image_rel)
        lung = lungseg.segment(image, predictor=predictor).array > 0
        if tumour_rel:
            lung |= read_volume(SHARED / tumour_rel).array >= min_readers
        yield name, image, lung


def teacher_data(root: Path, model: Path) -> list[dict]:
    """Real images and their teacher masks into root/imagesTr, root/labelsTr (entries repeated)."""
    import lungseg
    from lungseg.io.volumes import write_volume

    entries = []
    for name, image, lung in teacher_masks(REAL_TRAIN, lungseg.Predictor(model)):
        copies = REAL_TRAIN[name][3]
        write_volume(image, root / "imagesTr" / f"{name}.nii.gz")
        write_volume(image.with_array(lung.astype(np.uint8)), root / "labelsTr" / f"{name}.nii.gz")
        for i in range(1, copies):  # case names must be unique: the extra copies are files too
            for sub in ("imagesTr", "labelsTr"):
                shutil.copyfile(root / sub / f"{name}.nii.gz", root / sub / f"{name}_copy{i}.nii.gz")
        entries += [{"image": f"./imagesTr/{n}.nii.gz", "label": f"./labelsTr/{n}.nii.gz"}
                    for n in [name] + [f"{name}_copy{i}" for i in range(1, copies)]]
        print(f"  teacher {name}: {lung.sum() * image.voxel_ml:.0f} mL (x{copies})", flush=True)
    return entries


def build_stage2(out: Path, init: Path, epochs: int = STAGE2["epochs"], cpu_bf16: bool = STAGE2["cpu_bf16"],
                 teacher: Path | None = None, seeds: list[int] | None = None) -> Path:
    """Train stage 2 from the stage-1 weights `init` once per training seed (OUT/seed<N>), on the
    real scans' masks made by `teacher` (default: `init` itself), then average the runs' weights
    (`networks.average_weights`, a model soup); returns OUT/default.pt (float16).

    A seed whose run finished with the same epoch count (OUT/seed<N>/summary.json) is not
    trained again, so an interrupted build resumes at the next seed."""
    from lungseg.networks import average_weights, save_checkpoint
    from lungseg.phantoms import synth
    from lungseg.training.config import TrainConfig
    from lungseg.training.loop import train

    out = Path(out)
    seeds = list(STAGE2["seeds"] if seeds is None else seeds)
    t0 = time.monotonic()
    data = out / "data"
    if not (data / "train" / "dataset.json").exists():
        phantoms = phantom_seeds(STAGE2["n_mass"], STAGE2["n_plain"], STAGE2["seed_train"])
        entries = phantom_data(data / "train", phantoms, STAGE2["size"])
        entries += teacher_data(data / "train", teacher or init)
        synth(STAGE2["n_val"], data / "val", seed=STAGE2["seed_val"], size=STAGE2["size"], variations=True,
              progress=False, overwrite=True)
        (data / "train" / "dataset.json").write_text(json.dumps({"name": "lungseg stage 2", "training": entries},
                                                                indent=1))
    print(f"stage 2 data ready in {(time.monotonic() - t0) / 60:.1f} min", flush=True)
    summaries = {}
    for seed in seeds:
        run = out / f"seed{seed}"
        done = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else {}
        if done.get("epochs") == epochs and (run / "last.pt").exists():
            summaries[seed] = done
            print(f"stage 2 seed {seed}: already trained ({run})", flush=True)
            continue
        cfg = TrainConfig(data=str(data / "train"), val_data=str(data / "val"), out=str(run),
                          recipe="default-model", max_epochs=epochs, val_every=epochs, lr=STAGE2["lr"],
                          slab_prob=STAGE2["slab_prob"], mass_prob=STAGE2["mass_prob"], init_weights=str(init),
                          seed=seed, progress=False, cpu_bf16=cpu_bf16)
        summaries[seed] = train(cfg)
        print(f"stage 2 seed {seed} trained in {summaries[seed]['minutes']:.1f} min", flush=True)
    model, settings = average_weights([out / f"seed{seed}" / "last.pt" for seed in seeds])
    real = [n for n, v in REAL_TRAIN.items() if (SHARED / v[0]).exists()]
    settings["trained"] = {"stage1": "scripts/pretrained.py", "stage2": "scripts/finetune.py",
                           **STAGE2, "epochs": epochs, "cpu_bf16": cpu_bf16, "seeds": seeds, "real_used": real,
                           "teacher": Path(teacher or init).name, "summary": summaries}
    save_checkpoint(out / "default.pt", model, settings, half=True)
    print(f"stage 2 done in {(time.monotonic() - t0) / 60:.1f} min: the average of {len(seeds)} run(s), "
          f"seeds {seeds}", flush=True)
    return out / "default.pt"


def main(out: Annotated[Path, typer.Option(help="build folder")] = Path("runs/finetune"),
         init: Annotated[Path, typer.Option(help="stage-1 weights (runs/pretrained/stage1.pt)")] = ...,
         epochs: Annotated[int, typer.Option(min=1)] = STAGE2["epochs"],
         cpu_bf16: Annotated[bool, typer.Option(help="bfloat16 autocast on the CPU (faster, see "
                                                "TrainConfig.cpu_bf16)")] = STAGE2["cpu_bf16"],
         teacher: Annotated[Path | None, typer.Option(help="weights whose whole-scan masks teach the real "
                                                      "scans (default: --init)")] = None,
         seeds: Annotated[str, typer.Option(help="training seeds, comma-separated: one run each, weights "
                                            "averaged")] = ",".join(map(str, STAGE2["seeds"]))) -> None:
    """Fine-tune stage-1 weights (see the module docstring). `make pretrained INSTALL=1` runs both
    stages and installs the weights with their held-out report; this script only builds."""
    if not init.is_file():
        raise typer.BadParameter(f"{init}: no stage-1 weights there (build them with `make pretrained`)",
                                 param_hint="--init")
    if teacher is not None and not teacher.is_file():
        raise typer.BadParameter(f"{teacher}: no weights there", param_hint="--teacher")
    try:
        seed_list = [int(v) for v in seeds.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"{seeds!r}: not a comma-separated list of integers", param_hint="--seeds") from None
    if not seed_list:
        raise typer.BadParameter("no seed given", param_hint="--seeds")
    build_stage2(out, init, epochs, cpu_bf16, teacher, seed_list)


if __name__ == "__main__":
    typer.run(main)
