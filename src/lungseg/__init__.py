"""lungseg: 3D patch-based lung segmentation on CT (PyTorch + MONAI).

One function per job, callable from a notebook::

    import lungseg
    lungseg.synth(12, "data/phantoms", size=128)             # phantoms + dataset.json
    lungseg.train(data="data/phantoms", out="runs/a", max_minutes=10)
    mask = lungseg.segment("scan.nii.gz", model="runs/a/best.pt")  # Volume, input grid
    lungseg.evaluate("pred/", "data/phantoms/labelsTr")      # Dice, HD95, ASSD, volumes
    lungseg.quantify(lungseg.read_volume("scan.nii.gz"), mask)

Heavy modules (torch, MONAI) load on first use, so `import lungseg` stays quick.
"""

from __future__ import annotations

import importlib
from typing import Any

from lungseg.errors import LungsegError
from lungseg.io.volumes import Volume, read_volume, write_volume
from lungseg.synth import make_phantom, synth  # noqa: F401  (rebinds lungseg.synth to the function)

__version__ = "0.1.0"

_LAZY = {
    "train": ("lungseg.training.loop", "train"),
    "TrainConfig": ("lungseg.training.config", "TrainConfig"),
    "segment": ("lungseg.inference.segment", "segment"),
    "Predictor": ("lungseg.inference.predictor", "Predictor"),
    "evaluate": ("lungseg.evaluation", "evaluate"),
    "quantify": ("lungseg.quantify", "quantify"),
}

__all__ = ["LungsegError", "Volume", "read_volume", "write_volume", "synth", "make_phantom",
           *_LAZY, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'lungseg' has no attribute {name!r}")
