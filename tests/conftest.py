"""Shared fixtures: small phantom datasets and one tiny trained model for the whole session."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

#: Small enough to train in well under a minute on 2 CPU cores, good enough to find lungs.
TINY = {
    "network": {"channels": [8, 16, 32, 64, 128], "strides": [2, 2, 2, 2], "num_res_units": 1,
                "norm": "batch", "out_channels": 2},
    "preprocessing": {"spacing": [6.0, 6.0, 6.0], "hu_window": [-1000.0, 1000.0], "axcodes": "RAS"},
    "roi_size": [48, 48, 48],
    "val_roi_size": [64, 64, 64],
    "num_samples": 2,
    "batch_size": 2,
    "lr": 3e-3,
    "loss": "dicece",
    "val_overlap": 0.5,
    "progress": False,
}


@pytest.fixture(scope="session")
def phantom_data(tmp_path_factory) -> Path:
    from lungseg.phantoms import synth

    return synth(6, tmp_path_factory.mktemp("phantoms"), seed=100, size=64, progress=False)


@pytest.fixture(scope="session")
def tiny_model(phantom_data, tmp_path_factory) -> Path:
    from lungseg.training.loop import train

    out = tmp_path_factory.mktemp("run")
    train(data=str(phantom_data), out=str(out), max_epochs=20, val_every=10, **TINY)
    return out / "best.pt"
