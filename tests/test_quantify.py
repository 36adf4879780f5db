"""quantify: volumes in mL, HU statistics, %LAA-950, geometry checks."""

import json

import numpy as np
import pytest

from lungseg.core.errors import GeometryError, LabelError
from lungseg.core.volume import Volume
from lungseg.quantification import quantify

AFF = np.diag([0.5, 0.5, 2.0, 1.0])  # 0.5 mm^3 voxels


def make():
    hu = np.full((40, 40, 20), 40, np.int16)
    mask = np.zeros(hu.shape, np.uint8)
    mask[0:20, 0:20, 0:10] = 1        # 4000 voxels * 0.5 mm^3 = 2.0 mL
    mask[20:40, 0:10, 0:10] = 2       # 2000 voxels = 1.0 mL
    hu[mask == 1] = -900
    hu[0:5, 0:20, 0:10] = -1000       # 1000 of the right lung's 4000 voxels < -950
    hu[mask == 2] = -800
    return Volume(hu, AFF), Volume(mask, AFF)


def test_values_by_hand():
    q = quantify(*make())
    assert q["right"]["volume_ml"] == pytest.approx(2.0)
    assert q["left"]["volume_ml"] == pytest.approx(1.0)
    assert q["total"]["volume_ml"] == pytest.approx(3.0)
    assert q["right"]["voxels"] == 4000
    assert q["right"]["laa950_percent"] == pytest.approx(25.0)
    assert q["left"]["laa950_percent"] == 0.0
    assert q["total"]["laa950_percent"] == pytest.approx(100 * 1000 / 6000)
    assert q["right"]["mean_hu"] == pytest.approx(-925.0)
    assert q["right"]["sd_hu"] == pytest.approx(np.std([-1000] * 1000 + [-900] * 3000))
    assert q["left"]["p15_hu"] == -800.0
    assert q["right"]["p15_hu"] == pytest.approx(np.percentile([-1000] * 1000 + [-900] * 3000, 15))
    json.dumps(q, allow_nan=False)


def test_empty_lung_is_null():
    image, mask = make()
    mask.array[mask.array == 2] = 0
    q = quantify(image, mask)
    assert q["left"]["volume_ml"] == 0.0 and q["left"]["mean_hu"] is None
    json.dumps(q, allow_nan=False)


def test_grid_mismatch_and_bad_labels():
    image, mask = make()
    with pytest.raises(GeometryError):
        quantify(image, Volume(mask.array[:-1], AFF))
    with pytest.raises(GeometryError):
        quantify(image, Volume(mask.array, np.diag([1.0, 0.5, 2.0, 1.0])))
    bad = mask.array.copy()
    bad[0, 0, 0] = 7
    with pytest.raises(LabelError):
        quantify(image, Volume(bad, AFF))


def test_nan_and_inf_inside_the_lung_give_strict_json(tmp_path, capfd):
    """NaN/inf voxels in the lung: left out of the HU statistics, counted, one warning; the
    printed JSON parses strictly (no NaN/Infinity tokens)."""
    import json

    import nibabel as nib

    from lungseg.cli import main

    hu = np.full((10, 10, 10), -900, np.float32)
    hu[:, :, :5] = -960
    mask = np.zeros((10, 10, 10), np.uint8)
    mask[:5] = 1
    mask[5:] = 2
    hu[1, 1, 1] = np.nan
    hu[2, 2, 2] = np.inf
    hu[7, 7, 7] = -np.inf
    nib.save(nib.Nifti1Image(hu, np.eye(4)), tmp_path / "ct.nii.gz")
    nib.save(nib.Nifti1Image(mask, np.eye(4)), tmp_path / "m.nii.gz")
    capfd.readouterr()
    assert main(["quantify", str(tmp_path / "ct.nii.gz"), str(tmp_path / "m.nii.gz")]) == 0
    out, err = capfd.readouterr()

    def no_constants(name):
        raise ValueError(f"non-standard JSON constant {name}")

    q = json.loads(out, parse_constant=no_constants)
    assert q["right"]["nonfinite_voxels"] == 2 and q["left"]["nonfinite_voxels"] == 1
    assert q["total"]["nonfinite_voxels"] == 3 and q["total"]["voxels"] == 1000
    assert q["right"]["volume_ml"] == 0.5
    assert q["right"]["mean_hu"] == pytest.approx((248 * -960 + 250 * -900) / 498)
    assert q["total"]["laa950_percent"] == pytest.approx(100 * 498 / 997)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "ct.nii.gz" in lines[0] and "3 NaN or infinite" in lines[0], err
