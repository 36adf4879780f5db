"""`synth`: write n phantoms as a Medical Segmentation Decathlon style dataset."""

from __future__ import annotations

import json
from pathlib import Path

from tqdm import tqdm

from lungseg.io.safety import atomic_path
from lungseg.io.volumes import write_volume
from lungseg.phantoms.phantom import make_phantom

LABELS = {"0": "background", "1": "right lung", "2": "left lung"}


def synth(n: int, out: str | Path, seed: int = 0, size: int | None = None, orientation: str = "RAS",
          variations: bool = False, progress: bool = True, overwrite: bool = False) -> Path:
    """Write n image/label pairs: out/imagesTr/lung_000.nii.gz, out/labelsTr/lung_000.nii.gz
    and out/dataset.json (with a "phantoms" list of each case's seed and parameters).
    Case i uses seed `seed + i`. Returns `out`. Existing files are replaced only with
    `overwrite` (checked before the first phantom is made: OutputError otherwise).

    >>> from lungseg.phantoms import synth
    >>> root = synth(2, "/tmp/lungseg_synth_demo", size=64, progress=False, overwrite=True)
    >>> sorted(p.name for p in (root / "imagesTr").iterdir())
    ['lung_000.nii.gz', 'lung_001.nii.gz']
    """
    from lungseg.core.errors import LungsegError, OutputError
    from lungseg.io.safety import check_output
    from lungseg.phantoms.grid import MAX_SIZE, MIN_SIZE

    if int(n) < 1:
        raise LungsegError(f"n must be at least 1, got {n}")
    if size is not None and not MIN_SIZE <= int(size) <= MAX_SIZE:
        raise LungsegError(f"size must be {MIN_SIZE}-{MAX_SIZE} voxels, got {size}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError("output folder is an existing file", out)
    for i in range(int(n)):
        for sub in ("imagesTr", "labelsTr"):
            check_output(out / sub / f"lung_{i:03d}.nii.gz", [], overwrite)
    check_output(out / "dataset.json", [], overwrite)
    training, phantoms = [], []
    for i in tqdm(range(int(n)), desc="synth", unit="case", disable=not progress):
        name = f"lung_{i:03d}.nii.gz"
        image, label = make_phantom(seed + i, size=size, orientation=orientation, variations=variations)
        write_volume(image, out / "imagesTr" / name, overwrite=overwrite)  # no-clobber at the rename
        write_volume(label, out / "labelsTr" / name, overwrite=overwrite)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
        phantoms.append({"image": f"./imagesTr/{name}", "seed": seed + i,
                         "shape": list(image.shape), "spacing": [round(s, 4) for s in image.spacing],
                         "params": image.meta["phantom"], "landmarks": image.meta["landmarks"]})
    doc = {
        "name": "lungseg-synth",
        "description": "Synthetic chest CT phantoms (lungseg.phantoms); labels are the patient's sides.",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": LABELS,
        "numTraining": len(training),
        "numTest": 0,
        "training": training,
        "test": [],
        "generator": {"seed": seed, "size": size, "orientation": orientation.upper(),
                      "variations": variations},
        "phantoms": phantoms,
    }
    with atomic_path(out / "dataset.json", overwrite) as tmp:
        tmp.write_text(json.dumps(doc, indent=1))
    return out
