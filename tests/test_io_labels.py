"""normalise_label: 0/1/2 kept, binary split by anatomy, named and explicit mappings."""

from __future__ import annotations

import numpy as np
import pytest

from lungseg.core.errors import LabelError
from lungseg.io import normalise_label, split_sides

RAS = np.diag([1.5, 1.5, 2.0, 1.0])          # i grows toward the patient's right (+x in RAS)
LPS_STORED = np.diag([-1.5, -1.5, 2.0, 1.0])  # i grows toward the patient's left (DICOM-like)


def two_lungs(shape=(40, 20, 10), touch=False):
    """Binary mask with two boxes; low-i box and high-i box."""
    a = np.zeros(shape, np.uint8)
    a[4:17, 4:16, 2:8] = 1
    a[23:36, 4:16, 2:8] = 1
    if touch:
        a[17:23, 8:10, 4:5] = 1  # anterior junction bridge
    return a


@pytest.mark.parametrize("touch", [False, True])
@pytest.mark.parametrize("value", [1, 255])
def test_binary_split_uses_affine(touch, value):
    lab = two_lungs(touch=touch) * value
    ras = normalise_label(lab, RAS)
    assert ras.dtype == np.uint8 and set(np.unique(ras)) == {0, 1, 2}
    # RAS: larger i = larger x = patient's right
    assert ras[30, 10, 5] == 1 and ras[10, 10, 5] == 2
    lps = normalise_label(lab, LPS_STORED)
    assert lps[30, 10, 5] == 2 and lps[10, 10, 5] == 1
    assert np.count_nonzero(ras) == np.count_nonzero(lab)


def test_touching_split_balanced():
    out = split_sides(two_lungs(touch=True) > 0, RAS)
    n1, n2 = np.count_nonzero(out == 1), np.count_nonzero(out == 2)
    assert abs(n1 - n2) / (n1 + n2) < 0.05


def test_012_kept():
    lab = np.zeros((4, 4, 4), np.int16)
    lab[0] = 1
    lab[3] = 2
    np.testing.assert_array_equal(normalise_label(lab, RAS), lab)


def test_lobes5_and_totalsegmentator_and_dict_and_text():
    lab = np.arange(6).repeat(4).reshape(6, 2, 2)
    np.testing.assert_array_equal(normalise_label(lab, RAS, "lobes5")[:, 0, 0], [0, 2, 2, 1, 1, 1])
    ts = np.array([0, 10, 11, 12, 13, 14, 5, 51]).repeat(4).reshape(8, 2, 2)
    np.testing.assert_array_equal(normalise_label(ts, RAS, "totalsegmentator")[:, 0, 0],
                                  [0, 2, 2, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(normalise_label(lab[:3], RAS, {1: 2, 2: 1})[:, 0, 0], [0, 2, 1])
    np.testing.assert_array_equal(normalise_label(lab[:3], RAS, "0:0,1:1,2:0")[:, 0, 0], [0, 1, 0])
    np.testing.assert_array_equal(normalise_label(lab[:3], RAS, "swap")[:, 0, 0], [0, 2, 1])


def test_unknown_values_named():
    lab = np.zeros((4, 4, 4), np.uint8)
    lab[1] = 7
    with pytest.raises(LabelError, match=r"\{0, 7\}") as e:
        normalise_label(lab, RAS, path="lab.nii.gz")
    assert "lab.nii.gz" in str(e.value)
    with pytest.raises(LabelError, match=r"\{7\}"):
        normalise_label(lab, RAS, {1: 1})
    with pytest.raises(LabelError, match="targets"):
        normalise_label(lab, RAS, {7: 3})
    with pytest.raises(LabelError, match="unknown label mapping"):
        normalise_label(lab, RAS, "lobes7")


def test_float_image_as_label_refused():
    with pytest.raises(LabelError, match="non-integer"):
        normalise_label(np.full((3, 3, 3), 0.5), RAS)
