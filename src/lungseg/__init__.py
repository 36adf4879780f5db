"""lungseg: 3D patch-based lung segmentation on CT (PyTorch + MONAI).

One function per job, callable from a notebook::

    import lungseg
    lungseg.synth(12, "data/phantoms", size=128)             # phantoms + dataset.json
    lungseg.train(data="data/phantoms", out="runs/a", max_minutes=10)
    mask = lungseg.segment("scan.nii.gz", model="runs/a/best.pt")  # Volume, input grid
    lungseg.evaluate("pred/", "data/phantoms/labelsTr")      # Dice, HD95, ASSD, volumes
    lungseg.quantify(lungseg.read_volume("scan.nii.gz"), mask)

Everything but the core (numpy, nibabel) loads on first use, so `import lungseg` stays
quick and does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from lungseg.core.errors import LungsegError
from lungseg.core.volume import Volume

__version__ = "0.1.0"

_LAZY = {
    "read_volume": ("lungseg.io.volumes", "read_volume"),
    "write_volume": ("lungseg.io.volumes", "write_volume"),
    "synth": ("lungseg.phantoms.dataset", "synth"),
    "make_phantom": ("lungseg.phantoms.phantom", "make_phantom"),
    "train": ("lungseg.training.loop", "train"),
    "TrainConfig": ("lungseg.training.config", "TrainConfig"),
    "segment": ("lungseg.inference.segment", "segment"),
    "Predictor": ("lungseg.inference.predictor", "Predictor"),
    "predict_files": ("lungseg.batch", "predict_files"),
    "evaluate": ("lungseg.evaluation", "evaluate"),
    "quantify": ("lungseg.quantification", "quantify"),
}

__all__ = ["LungsegError", "Volume", *_LAZY, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'lungseg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
