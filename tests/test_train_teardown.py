"""`train` on a dataset with a corrupt image or an invalid label: the error, exit 2, and a
clean teardown (no data-loading thread left alive, so no SIGABRT at exit), 20 times of 20."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from lungseg.cli import main

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(scope="module")
def bad_datasets(tmp_path_factory) -> dict[str, Path]:
    import nibabel as nib

    from lungseg.phantoms import synth

    root = synth(6, tmp_path_factory.mktemp("ph"), seed=3, size=32, progress=False)
    out = {}
    for kind in ("corrupt_image", "invalid_label"):
        d = tmp_path_factory.mktemp(kind)
        for sub in ("images", "labels"):
            (d / sub).mkdir()
        for i, (img, lab) in enumerate(zip(sorted((root / "imagesTr").iterdir()),
                                           sorted((root / "labelsTr").iterdir()), strict=True)):
            (d / "images" / f"c{i}.nii.gz").write_bytes(img.read_bytes())
            (d / "labels" / f"c{i}.nii.gz").write_bytes(lab.read_bytes())
        bad = d / ("images" if kind == "corrupt_image" else "labels") / "c3.nii.gz"
        if kind == "corrupt_image":
            bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
        else:
            lab = nib.load(bad)
            arr = np.asarray(lab.dataobj).copy()
            arr[arr == 1] = 7
            nib.save(nib.Nifti1Image(arr, lab.affine), bad)
        out[kind] = d
    return out


def _argv(data: Path, run: Path) -> list[str]:
    """Coarse 8 mm preprocessing: loading the cases takes milliseconds, not seconds."""
    cfg = data.parent / f"{data.name}.yaml"
    cfg.write_text("layout: folders\nmax_epochs: 1\ndevice: cpu\npreprocessing: {spacing: [8.0, 8.0, 8.0]}\n"
                   "roi_size: [16, 16, 16]\nval_roi_size: [16, 16, 16]\n")
    return ["train", "--config", str(cfg), "--data", str(data), "--out", str(run)]


@pytest.mark.parametrize("kind", ["corrupt_image", "invalid_label"])
def test_failing_train_leaves_no_thread_alive_20_of_20(bad_datasets, tmp_path, capfd, kind):
    before = set(threading.enumerate())
    for i in range(20):
        code = main(_argv(bad_datasets[kind], tmp_path / f"run{i}"))
        err = capfd.readouterr().err
        assert code == 2, err
        assert len(err.strip().splitlines()) == 1 and "c3.nii.gz" in err, err
        alive = [t.name for t in threading.enumerate() if t not in before and t.is_alive()]
        assert not alive, (i, alive)
        assert not (tmp_path / f"run{i}").exists()


@pytest.mark.slow
def test_failing_train_exits_2_not_sigabrt_in_fresh_processes(bad_datasets, tmp_path):
    """The abort happened at interpreter exit: check real processes (one per kind, side by side)."""
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    code = ("import sys\nfrom lungseg.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, *_argv(bad_datasets[kind], tmp_path / f"r{i}")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
             for i, kind in enumerate(["corrupt_image", "invalid_label"])]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert [rc for rc, _ in results] == [2] * 2, results
    assert all("terminate called" not in err for _, err in results)
