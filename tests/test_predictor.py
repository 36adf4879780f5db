"""Prediction: mask on exactly the input grid, sides from the affine, empty when no lungs."""

import numpy as np
import pytest
from conftest import world_x

from lungseg import make_phantom
from lungseg.core.volume import Volume
from lungseg.inference.predictor import InferenceSettings, Predictor

pytestmark = pytest.mark.slow  # every test predicts with the session's trained tiny model

SETTINGS = InferenceSettings(roi_size=(64, 64, 64), overlap=0.25)


@pytest.fixture(scope="module")
def predictor(tiny_model):
    return Predictor(tiny_model, device="cpu", settings=SETTINGS)


@pytest.mark.parametrize("orientation", ["RAS", "LPS"])
def test_mask_on_input_grid_with_right_left_on_patient_sides(predictor, orientation):
    image, truth = make_phantom(seed=7, size=64, orientation=orientation)
    mask = predictor.predict(image)
    assert mask.shape == image.shape
    assert np.array_equal(mask.affine, image.affine)
    assert set(np.unique(mask.array)) <= {0, 1, 2}
    # RAS+ x points to the patient's right: the right lung (1) has the larger world x
    assert world_x(mask, 1) > world_x(mask, 2)
    for side in (1, 2):
        p, t = mask.array == side, truth.array == side
        assert 2 * (p & t).sum() / (p.sum() + t.sum()) > 0.6


def test_ras_and_lps_inputs_give_the_same_physical_mask(predictor):
    ras, _ = make_phantom(seed=8, size=64, orientation="RAS")
    lps, _ = make_phantom(seed=8, size=64, orientation="LPS")
    m_ras, m_lps = predictor.predict(ras).array, predictor.predict(lps).array
    # LPS storage flips the first two axes relative to RAS
    agree = (m_ras == m_lps[::-1, ::-1, :]).mean()
    assert agree > 0.995


def test_anisotropic_and_oblique_grid_is_kept_exactly(predictor):
    image, _ = make_phantom(seed=9, size=64)
    aff = image.affine.copy()
    aff[:3, 2] *= 2.5  # much thicker slices
    c, s = np.cos(0.2), np.sin(0.2)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    aff[:3, :3] = rot @ aff[:3, :3]
    oblique = Volume(image.array[:, :, ::2].copy(), aff)
    mask = predictor.predict(oblique)
    assert mask.shape == oblique.shape
    assert np.array_equal(mask.affine, oblique.affine)
    assert (mask.array > 0).sum() > 0


def test_no_lungs_gives_empty_mask_not_error(predictor):
    shape = (64, 64, 40)
    ii, jj = np.meshgrid(np.arange(64), np.arange(64), indexing="ij")
    body = ((ii - 32) / 28) ** 2 + ((jj - 32) / 20) ** 2 < 1
    arr = np.where(body[..., None], 40, -1000).astype(np.int16) * np.ones(shape, np.int16)
    vol = Volume(arr, np.diag([5.0, 5.0, 5.0, 1.0]))
    mask = predictor.predict(vol)
    assert mask.shape == shape
    assert mask.array.sum() == 0


def test_without_gas_drops_the_pieces_whose_median_is_gas():
    from lungseg.inference.predictor import without_gas

    mask = np.zeros((20, 20, 20), bool)
    hu = np.full(mask.shape, -850.0)
    mask[2:6, 2:6, 2:6] = True            # lung rim: -850 HU
    mask[10:14, 10:14, 10:14] = True      # a bronchus' lumen: mostly -950 HU
    hu[10:14, 10:14, 10:14] = -950.0
    hu[10, 10:14, 10:14] = -600.0         # its wall (a quarter of the piece) does not save it
    out = without_gas(mask, hu, -900.0)
    assert out[2:6, 2:6, 2:6].all() and not out[10:14, 10:14, 10:14].any()
    hu[10:12, 10:14, 10:14] = -600.0      # now more than half is above: median above -900
    hu[12, 10:14, 10:14] = -850.0
    assert np.median(hu[10:14, 10:14, 10:14]) > -900
    assert without_gas(mask, hu, -900.0)[10:14, 10:14, 10:14].all()
    assert not without_gas(np.zeros_like(mask), hu, -900.0).any()
