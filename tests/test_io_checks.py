"""check_image / check_pair: bad images and pairs refused with a reason; real CT passes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lungseg.core.errors import GeometryError, InputError, LabelError
from lungseg.io import Volume, check_image, check_pair, read_volume

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def ct(shape=(20, 20, 10), spacing=(0.8, 0.8, 2.0)):
    a = np.full(shape, -1000, np.int16)
    a[5:15, 5:15, 2:8] = 40
    a[0, 0, 0] = -3024  # padding is fine
    return Volume(a, np.diag([*spacing, 1.0]))


def test_ct_passes():
    assert check_image(ct()) == []


def test_mr_like_refused():
    mr = np.random.default_rng(0).integers(0, 1200, size=(20, 20, 10)).astype(np.int16)
    with pytest.raises(InputError, match="does not look like CT"):
        check_image(Volume(mr, np.eye(4)), "mr.nii.gz")


def test_8bit_refused():
    with pytest.raises(InputError, match="8-bit"):
        check_image(Volume(np.arange(1000).reshape(10, 10, 10).astype(np.uint8), np.eye(4)))


def test_nan_refused():
    v = ct()
    a = v.array.astype(np.float32)
    a[1, 1, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        check_image(Volume(a, v.affine))


@pytest.mark.parametrize("spacing", [(0.01, 1, 1), (1, 1, 50)])
def test_absurd_spacing(spacing):
    with pytest.raises(GeometryError, match="spacing"):
        check_image(ct(spacing=spacing))


def test_too_large_for_memory():
    with pytest.raises(InputError, match="too large"):
        check_image(ct(), bytes_per_voxel=10**15)


def test_real_ct_passes():
    paths = [SHARED / "abdomen_ct_dicom", SHARED / "chest_cta_cropped.nii.gz"]
    if not all(p.exists() for p in paths):
        pytest.skip("shared real data absent")
    for p in paths:
        check_image(read_volume(p))


def test_pair_checks():
    img = ct()
    lab = Volume((img.array > 0).astype(np.uint8), img.affine.copy())
    check_pair(img, lab, "lab.nii.gz")
    with pytest.raises(GeometryError, match="shape"):
        check_pair(img, Volume(lab.array[:-1], lab.affine), "lab.nii.gz")
    moved = lab.affine.copy()
    moved[0, 3] += 0.01
    with pytest.raises(GeometryError, match="mm apart"):
        check_pair(img, Volume(lab.array, moved), "lab.nii.gz")
    with pytest.raises(LabelError, match="empty"):
        check_pair(img, Volume(np.zeros_like(lab.array), lab.affine), "lab.nii.gz")
