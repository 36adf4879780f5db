"""Shared fixtures: small phantom datasets and one tiny training run for the whole session;
the one leftover check for atomic writes."""

from __future__ import annotations

import os
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
    from lungseg.phantoms import synth

    return synth(6, tmp_path_factory.mktemp("phantoms"), seed=100, size=64, progress=False)


def world_x(vol, label: int) -> float:
    """World x (mm, RAS+: the patient's right is +x) of the centre of `label` in a Volume."""
    import numpy as np

    ijk = np.argwhere(np.asarray(vol.array) == label).mean(axis=0)
    return float((vol.affine @ np.r_[ijk, 1.0])[0])


#: The session run's length; its validation runs at epochs 9 and 19.
TINY_EPOCHS = 20

#: Fixtures that train: a test using one is marked `slow` (deselected by `make test-fast`).
TRAINED = ("tiny_run", "tiny_model")


def pytest_configure(config):
    """One torch thread per test process (LUNGSEG_TEST_THREADS to change): with two threads on
    a 2-core machine shared with other jobs, training ran 5x slower than with one."""
    import torch

    torch.set_num_threads(int(os.environ.get("LUNGSEG_TEST_THREADS", "1")))


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(items):
    for item in items:
        if any(name in getattr(item, "fixturenames", ()) for name in TRAINED):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny_run(phantom_data, tmp_path_factory) -> Path:
    """The one training run of the session (about 10 s on 2 CPU cores). Read it; to train
    further, copy it first (`shutil.copytree`) and resume the copy."""
    from lungseg.training.loop import train

    out = tmp_path_factory.mktemp("run")
    train(data=str(phantom_data), out=str(out), max_epochs=TINY_EPOCHS, val_every=10, **TINY)
    return out


@pytest.fixture(scope="session")
def tiny_model(tiny_run) -> Path:
    return tiny_run / "best.pt"
