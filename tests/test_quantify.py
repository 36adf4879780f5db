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
