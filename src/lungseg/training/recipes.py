"""Named training recipes: every number in the docs names the recipe it was measured with.

- ``tutorial``: the reference notebook exactly (1.5x1.5x2.0 mm, 96^3 patches, Dice loss,
  Adam 1e-4 constant, 500 epochs, 75 % overlap sliding-window validation). `TrainConfig`'s
  defaults are this recipe.
- ``cpu-fast``: what trains a usable model on a few CPU cores in minutes: 2.5 mm working
  spacing, Dice+CE, Adam 1e-3 with a cosine schedule, one whole-chest validation window.
- ``default-model``: ``cpu-fast`` with the epoch count and validation cadence that built the
  shipped default model (`scripts/pretrained.py`).

>>> sorted(RECIPES)
['cpu-fast', 'default-model', 'tutorial']
"""

from __future__ import annotations

from typing import Any, Literal

RecipeName = Literal["tutorial", "cpu-fast", "default-model"]

TUTORIAL: dict[str, Any] = {
    "preprocessing": {"spacing": [1.5, 1.5, 2.0], "hu_window": [-1000.0, 1000.0], "axcodes": "RAS"},
    "roi_size": [96, 96, 96],
    "num_samples": 4,
    "batch_size": 8,  # patches per optimiser step: 2 volumes x 4 patches
    "loss": "dice",
    "lr": 1e-4,
    "lr_schedule": "constant",
    "max_epochs": 500,
    "val_every": 2,
    "val_roi_size": [160, 160, 160],
    "val_overlap": 0.75,
}

CPU_FAST: dict[str, Any] = {
    **TUTORIAL,
    "preprocessing": {"spacing": [2.5, 2.5, 2.5], "hu_window": [-1000.0, 1000.0], "axcodes": "RAS"},
    "batch_size": 2,
    "loss": "dicece",
    "lr": 1e-3,
    "lr_schedule": "cosine",
    "val_overlap": 0.5,
}

RECIPES: dict[str, dict[str, Any]] = {
    "tutorial": TUTORIAL,
    "cpu-fast": CPU_FAST,
    "default-model": {**CPU_FAST, "max_epochs": 24, "val_every": 4},
}
