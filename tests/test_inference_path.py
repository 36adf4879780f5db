"""The fast inference path: MONAI's grid without MONAI's cost, several windows, ONNX, memory."""

import numpy as np
import pytest

from lungseg import make_phantom
from lungseg.core.volume import Volume
from lungseg.evaluation import dice
from lungseg.inference.predictor import DEFAULT_MODEL, InferenceSettings, Predictor
from lungseg.inference.resample import (
    AffineMap,
    axis_map,
    index_map,
    is_sheared,
    model_grid,
    resample_linear,
)

needs_model = pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason="no default model built yet")


@pytest.mark.parametrize("orientation", ["RAS", "LPS", "SLA"])
@pytest.mark.parametrize("oblique", [False, True])
def test_model_grid_and_resampling_equal_monai(orientation, oblique):
    from lungseg.transforms import infer_transforms, to_metatensor

    image, _ = make_phantom(seed=3, size=48, orientation=orientation)
    aff = image.affine.copy()
    if oblique:
        c, s = np.cos(0.15), np.sin(0.15)
        aff[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ aff[:3, :3]
    vol = Volume(image.array, aff)
    pre = {"spacing": (5.0, 4.0, 3.0), "hu_window": (-1000.0, 1000.0), "axcodes": "RAS"}
    ref = infer_transforms(pre)({"image": to_metatensor(vol)})["image"]
    shape, grid = model_grid(vol.shape, aff, pre["spacing"])
    assert shape == tuple(ref.shape[1:])
    assert np.allclose(grid, np.asarray(ref.affine), atol=1e-6)
    x = np.clip(resample_linear(vol.array, axis_map(aff, grid), shape), -1000, 1000)
    assert np.abs((x + 1000) / 2000 - ref.as_tensor().numpy()[0]).max() < 1e-5


def test_sheared_grid_gets_an_upright_model_grid_and_a_full_affine_map():
    """A gantry-tilted series' grid is sheared (its slices stack along the table, not their
    normal): the network's grid is then upright RAS over the image's extent, reached through a
    full affine; on grids that are not sheared the full affine gives the axis-by-axis values."""
    image, _ = make_phantom(seed=3, size=48)
    aff = image.affine.copy()
    assert not is_sheared(aff)
    t = np.deg2rad(20.0)
    aff[:3, 1] = np.linalg.norm(aff[:3, 1]) * np.array([0.0, np.cos(t), np.sin(t)])  # tilted rows
    assert is_sheared(aff)
    shape, grid = model_grid(image.shape, aff, (2.5, 2.5, 2.5))
    assert np.allclose(grid[:3, :3], np.diag([2.5, 2.5, 2.5]))
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in image.shape], indexing="ij")).reshape(3, -1)
    world = aff[:3, :3] @ corners + aff[:3, 3:4]
    inside = np.linalg.solve(grid[:3, :3], world - grid[:3, 3:4])
    assert inside.min() > -1e-6 and np.all(inside.max(axis=1) <= np.array(shape) - 1 + 1e-6)
    assert isinstance(index_map(aff, grid), AffineMap)
    # on an axis-aligned pair of grids the two paths agree
    shape2, grid2 = model_grid(image.shape, image.affine, (5.0, 4.0, 3.0))
    fast = resample_linear(image.array, axis_map(image.affine, grid2), shape2)
    full = resample_linear(image.array, AffineMap(np.linalg.solve(image.affine, grid2)), shape2)
    assert np.abs(fast - full).max() < 1e-2


@pytest.fixture(scope="module")
def chest():
    return make_phantom(seed=4245, size=80)


@needs_model
def test_several_windows_agree_with_one_window(chest):
    """Small --roi on a chest that fits one window: the windows really slide and agree."""
    image, truth = chest
    one = Predictor(device="cpu")
    many = Predictor(device="cpu", settings=InferenceSettings(roi_size=(80, 80, 80), overlap=0.25,
                                                              whole_volume_voxels=0))
    calls = []
    net = many.model
    many.model = lambda x: (calls.append(tuple(x.shape[2:])), net(x))[1]
    a, b = one.predict(image).array, many.predict(image).array
    assert len(calls) > 4 and all(c == (80, 80, 80) for c in calls)
    assert dice(a > 0, b > 0) > 0.98
    assert dice(b > 0, truth.array > 0) > 0.9
    assert np.array_equal(np.unique(b), [0, 1, 2])


@needs_model
def test_onnx_export_gives_the_same_masks(chest, tmp_path):
    from lungseg.cli import main

    image, _ = chest
    path = tmp_path / "model.onnx"
    assert main(["export", "--onnx", str(path)]) == 0
    assert main(["export", "--onnx", str(path)]) == 2  # no silent overwrite
    ort = Predictor(path, device="cpu")
    assert ort.backend == "onnxruntime"
    torch_mask = Predictor(device="cpu").predict(image).array
    ort_mask = ort.predict(image).array
    for side in (1, 2):
        assert dice(torch_mask == side, ort_mask == side) >= 0.999


def test_onnx_file_without_settings_is_refused(tmp_path):
    from lungseg.core.errors import InputError
    from lungseg.inference.runtime import OrtModel

    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(InputError, match="x.onnx"):
        OrtModel(bad)


@needs_model
def test_no_full_resolution_float_volume(chest, monkeypatch):
    """Memory guard: P(lung) comes back to the image grid as uint8 levels, slab by slab; no
    float volume of the image's size is ever made (the old path held several)."""
    import lungseg.inference.predictor as predictor_module

    image, _ = chest
    big = Volume(np.repeat(np.repeat(image.array, 3, 0), 3, 1), image.affine @ np.diag([1 / 3, 1 / 3, 1, 1]))
    made = []
    real = predictor_module.resample_linear

    def spy(src, amap, shape):
        out = real(src, amap, shape)
        made.append(out.size)
        return out

    monkeypatch.setattr(predictor_module, "resample_linear", spy)
    pred = Predictor(device="cpu")
    levels, box = pred.lung_levels(big)
    assert levels.dtype == np.uint8 and set(np.unique(levels)) <= {0, 1, 2, 3, 4}
    assert levels.shape == tuple(s.stop - s.start for s in box)
    made.clear()
    mask = pred.predict(big)
    assert mask.array.dtype == np.uint8 and mask.array.any()
    slab = predictor_module.SLAB * big.shape[1] * big.shape[2]
    assert len(made) > 2 and max(made[1:]) <= slab < big.array.size  # made[0]: the model grid


@needs_model
def test_quality_reference_is_the_classical_mask(chest):
    """The QC's classical mask, rebuilt from the steps predict shared with it, is exactly
    `segment_classical`'s."""
    from lungseg.inference.classical import segment_classical

    image, _ = chest
    pred = Predictor(device="cpu")
    pred.predict(image)
    shared = pred.classical_reference(image).array
    assert np.array_equal(shared, segment_classical(image).array)
    assert np.array_equal(pred.classical_reference(image).array, shared)  # afresh, same answer


@needs_model
def test_body_crop_option_and_full_probability_agree(chest):
    """The optional body crop gives nearly the same mask; `lung_probability` (inspection only)
    is P(lung) on the image grid and agrees with the levels predict uses."""
    image, _ = chest
    plain = Predictor(device="cpu")
    cropped = Predictor(device="cpu", settings=InferenceSettings(crop_margin_mm=20.0))
    a, b = plain.predict(image).array, cropped.predict(image).array
    assert dice(a > 0, b > 0) > 0.97
    prob = plain.lung_probability(image)
    assert prob.shape == image.shape and prob.dtype == np.float32
    assert 0.0 <= prob.min() and prob.max() <= 1.0
    levels, box = plain.lung_levels(image)
    inside = np.zeros(image.shape, bool)
    inside[box] = True
    assert not (prob[~inside] > 0.5).any()  # nothing the refinement could keep lies outside the box
    assert dice(levels >= 3, prob[box] > 0.5) > 0.99
