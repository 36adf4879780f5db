"""Synthetic phantoms: determinism, labels, sides, orientation, anatomy that must not be lung,
dataset layout and variations. Small grids only (the whole module runs in well under 60 s)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from lungseg.core.errors import LungsegError
from lungseg.io.volumes import read_volume
from lungseg.phantoms import PhantomParams, make_phantom, sample_params, synth


@pytest.fixture(scope="module")
def ras96():
    return make_phantom(5, size=96)


@pytest.fixture(scope="module")
def lps96():
    return make_phantom(5, size=96, orientation="LPS")


def _world(vol, mask):
    ijk = np.argwhere(mask)
    return ijk @ vol.affine[:3, :3].T + vol.affine[:3, 3]


def _voxel_at(vol, world):
    ijk = np.linalg.solve(vol.affine, np.append(world, 1.0))[:3]
    return tuple(int(round(v)) for v in ijk)


def _canonical(vol):
    ornt = nib.orientations.io_orientation(vol.affine)
    arr = nib.orientations.apply_orientation(vol.array, ornt)
    aff = vol.affine @ nib.orientations.inv_ornt_aff(ornt, vol.array.shape)
    return arr, aff


def test_deterministic_per_seed():
    a_img, a_lab = make_phantom(3, size=48)
    b_img, b_lab = make_phantom(3, size=48)
    c_img, _ = make_phantom(4, size=48)
    np.testing.assert_array_equal(a_img.array, b_img.array)
    np.testing.assert_array_equal(a_lab.array, b_lab.array)
    np.testing.assert_array_equal(a_img.affine, b_img.affine)
    assert a_img.meta["phantom"] == b_img.meta["phantom"]
    assert c_img.array.shape != a_img.array.shape or not np.array_equal(c_img.array, a_img.array)


def test_dtype_range_and_labels(ras96):
    img, lab = ras96
    assert img.array.dtype == np.int16 and lab.array.dtype == np.uint8
    assert img.array.shape == lab.array.shape
    np.testing.assert_array_equal(img.affine, lab.affine)
    assert img.array.min() >= -1024 and img.array.max() <= 3071
    assert set(np.unique(lab.array).tolist()) == {0, 1, 2}
    assert np.median(img.array[:4, :4, :]) < -900  # air in the corner of the FOV
    assert img.array.max() > 300  # bone present (partial volume at 4 mm voxels)


def test_lung_volumes_realistic(ras96):
    _, lab = ras96
    voxel_ml = np.prod(lab.spacing) / 1000.0
    for value in (1, 2):
        litres = (lab.array == value).sum() * voxel_ml / 1000.0
        assert 0.5 < litres < 4.0, (value, litres)


@pytest.mark.parametrize("fixture", ["ras96", "lps96"])
def test_right_lung_on_patients_right(fixture, request):
    """RAS+ x points to the patient's right, so the right lung (1) has the larger RAS x."""
    img, lab = request.getfixturevalue(fixture)
    right = _world(lab, lab.array == 1)[:, 0].mean()
    left = _world(lab, lab.array == 2)[:, 0].mean()
    assert right > left + 80
    assert nib.aff2axcodes(lab.affine) == tuple(lab.meta["orientation"])


def test_orientation_same_physical_phantom(ras96, lps96):
    for a, b in zip(ras96, lps96, strict=True):
        arr_a, aff_a = _canonical(a)
        arr_b, aff_b = _canonical(b)
        np.testing.assert_allclose(aff_a, aff_b, atol=1e-6)
        np.testing.assert_array_equal(arr_a, arr_b)
    assert nib.aff2axcodes(lps96[0].affine) == ("L", "P", "S")
    assert nib.aff2axcodes(ras96[0].affine) == ("R", "A", "S")


def test_other_axcodes_and_bad_orientation():
    img, lab = make_phantom(2, size=40, orientation="PIR")
    assert nib.aff2axcodes(img.affine) == ("P", "I", "R")
    ref, _ = make_phantom(2, size=40)
    np.testing.assert_array_equal(_canonical(img)[0], _canonical(ref)[0])
    for bad in ("XYZ", "RRS", "RA"):
        with pytest.raises(LungsegError):
            make_phantom(2, size=40, orientation=bad)


def test_trachea_is_air_not_lung(ras96):
    img, lab = ras96
    pts = img.meta["landmarks"]["trachea_world_mm"]
    assert len(pts) >= 3
    hu = [img.array[_voxel_at(img, p)] for p in pts]
    labels = [lab.array[_voxel_at(lab, p)] for p in pts]
    assert all(v == 0 for v in labels)
    assert np.median(hu) < -800


def test_bowel_gas_is_below_diaphragm_and_not_lung(ras96):
    img, lab = ras96
    gas = img.meta["landmarks"]["gas_world_mm"]
    assert gas, "no gas pocket recorded"
    lung_top = _world(lab, lab.array > 0)[:, 2].max()
    found_air = under_lung = 0
    for p in gas:
        ijk = _voxel_at(img, p)
        assert lab.array[ijk] == 0
        assert p[2] < lung_top - 100
        found_air += img.array[ijk] < -500
        # any lung in the pocket's column lies above it (under a dome), never around it
        column = np.nonzero(lab.array[ijk[0], ijk[1], :])[0]
        assert (column > ijk[2] + 1).all()
        under_lung += column.size > 0
    assert found_air >= 1 and under_lung >= 1


def test_lung_hu_in_parenchyma_range(ras96):
    from scipy.ndimage import binary_erosion

    img, lab = ras96
    for value in (1, 2):
        core = binary_erosion(lab.array == value, iterations=2)
        mean = img.array[core].mean()
        assert -900 < mean < -700, (value, mean)
    body_soft = img.array[(lab.array == 0) & (img.array > -200) & (img.array < 200)]
    assert body_soft.size > 1000


def test_size_keeps_field_of_view():
    small, _ = make_phantom(7, size=48)
    larger, _ = make_phantom(7, size=80)
    fov_s = np.array(small.shape) * np.array(small.spacing)
    fov_l = np.array(larger.shape) * np.array(larger.spacing)
    np.testing.assert_allclose(fov_s, fov_l, rtol=0.05)
    assert larger.shape[2] > small.shape[2]


def test_effusion_is_not_lung():
    base_img, base = make_phantom(11, size=64)
    eff_img, eff = make_phantom(11, size=64, effusion_mm=(35.0, 0.0))
    right0, right1 = (base.array == 1).sum(), (eff.array == 1).sum()
    left0, left1 = (base.array == 2).sum(), (eff.array == 2).sum()
    assert right1 < 0.95 * right0  # the right lung recedes
    assert abs(left1 - left0) <= 0.01 * left0
    receded = (base.array == 1) & (eff.array == 0)
    assert np.median(eff_img.array[receded]) > -150  # fluid, not air


def test_pathology_stays_lung():
    img, lab = make_phantom(12, size=96, nodules=[{"side": "left", "u": 0.5, "v": 0.5, "w": 0.5,
                                                  "radius": 12.0, "hu": 40.0, "pleural": False}])
    spot = img.meta["phantom"]["nodules"][0]
    assert spot["placed_mm"] is not None
    ref, ref_lab = make_phantom(12, size=96)
    np.testing.assert_array_equal(lab.array, ref_lab.array)  # label unchanged by a nodule
    dense = (lab.array == 2) & (img.array > -300) & (ref.array < -500)
    assert dense.sum() > 10


def test_variations_sampled_and_recorded():
    params = [sample_params(s, variations=True) for s in range(40)]
    assert {p.breath for p in params} == {"inspiration", "expiration"}
    assert {p.arms for p in params} == {"up", "down"}
    assert {p.contrast for p in params} == {True, False}
    assert {p.kernel for p in params} == {"smooth", "sharp"}
    assert len({p.crop for p in params}) == 3
    assert any(p.nodules for p in params) and any(p.emphysema > 0 for p in params)
    assert any(max(p.effusion_mm) > 0 for p in params)
    assert max(p.noise_sd for p in params) > 35 and min(p.slice_thickness for p in params) < 1.2
    plain = [sample_params(s) for s in range(10)]
    assert all(not p.nodules and p.effusion_mm == (0.0, 0.0) and p.arms == "up" for p in plain)
    img, lab = make_phantom(1, size=48, variations=True)
    rec = img.meta["phantom"]
    assert rec["variations"] is True and rec["seed"] == 1
    assert rec == sample_params(1, variations=True).to_dict() | {
        k: rec[k] for k in ("nodules", "consolidation", "ground_glass")}
    json.dumps(img.meta)  # JSON-ready


def test_overrides_and_unknown_parameter():
    img, _ = make_phantom(2, size=40, arms="down", contrast=True)
    assert img.meta["phantom"]["arms"] == "down" and img.meta["phantom"]["contrast"] is True
    with pytest.raises(LungsegError):
        make_phantom(2, size=40, no_such_thing=1)
    assert isinstance(sample_params(0), PhantomParams)


def test_synth_writes_msd_dataset(tmp_path):
    out = synth(2, tmp_path / "ds", seed=9, size=40, progress=False)
    assert out == tmp_path / "ds"
    doc = json.loads((out / "dataset.json").read_text())
    assert doc["modality"] == {"0": "CT"}
    assert doc["labels"] == {"0": "background", "1": "right lung", "2": "left lung"}
    assert doc["numTraining"] == 2 and len(doc["training"]) == 2
    assert doc["training"][0] == {"image": "./imagesTr/lung_000.nii.gz", "label": "./labelsTr/lung_000.nii.gz"}
    assert [p["seed"] for p in doc["phantoms"]] == [9, 10]
    assert "habitus" in doc["phantoms"][0]["params"]
    for case in doc["training"]:
        img = read_volume(out / case["image"])
        lab = read_volume(out / case["label"])
        assert img.shape == lab.shape
        assert set(np.unique(lab.array).tolist()) <= {0, 1, 2}
    ref_img, ref_lab = make_phantom(10, size=40)
    np.testing.assert_array_equal(read_volume(out / "labelsTr/lung_001.nii.gz").array, ref_lab.array)
    np.testing.assert_allclose(read_volume(out / "imagesTr/lung_001.nii.gz").affine, ref_img.affine, atol=1e-4)
    with pytest.raises(LungsegError):
        synth(0, tmp_path / "none", progress=False)
