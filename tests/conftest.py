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
    "progress": False,
}


def assert_no_leftovers(*folders: str | Path) -> None:
    """Fail if an atomic writer left a temporary behind anywhere under `folders`.

    `lungseg.io.safety.atomic_path` / `atomic_folder` name their temporaries
    `.{stem}.tmp-XXXX{suffix}` (files) and `.{name}.tmp-XXXX` (folders): hidden, so any
    name containing ".tmp-" counts, at any depth, hidden folders included.
    """
    for folder in map(Path, folders):
        assert folder.is_dir(), f"{folder} is not a folder"
        left = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if ".tmp-" in p.name)
        assert not left, f"temporary files left under {folder}: {left}"


@pytest.fixture(scope="session")
def phantom_data(tmp_path_factory) -> Path:
    from lungseg.synth import synth

    return synth(6, tmp_path_factory.mktemp("phantoms"), seed=100, size=64, progress=False)


@pytest.fixture(scope="session")
def tiny_model(phantom_data, tmp_path_factory) -> Path:
    from lungseg.training.loop import train

    out = tmp_path_factory.mktemp("run")
    train(data=str(phantom_data), out=str(out), max_epochs=20, val_every=10, **TINY)
    return out / "best.pt"
