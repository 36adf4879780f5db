"""`core.noise`: the noise measure, and smoothing only the scans noisier than the model knows."""

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from lungseg import Volume
from lungseg.core.noise import (
    NOISE_TARGET_HU,
    NOISE_TRIGGER_HU,
    noise_meta,
    noise_sd,
    quieter,
    reduce_noise,
)

SPACING = (0.8, 0.8, 2.5)


def _body(sd: float, seed: int = 0, slices: int = 8) -> np.ndarray:
    """Soft tissue (40 HU) with a lung-dark square and a bone bar, plus white noise of `sd` HU."""
    hu = np.full((120, 120, slices), 40.0, np.float32)
    hu[20:60, 20:100] = -850.0
    hu[90:100, 10:110] = 700.0
    return hu + np.random.default_rng(seed).normal(0, sd, hu.shape).astype(np.float32)


@pytest.mark.parametrize("sd", [10.0, 45.0, 120.0])
def test_noise_sd_measures_the_noise_in_soft_tissue_only(sd):
    assert noise_sd(_body(sd), SPACING) == pytest.approx(sd, rel=0.1)


def test_noise_sd_is_none_without_soft_tissue():
    lung = np.random.default_rng(1).normal(-850, 60, (64, 64, 6)).astype(np.float32)
    assert noise_sd(lung, SPACING) is None
    assert reduce_noise(lung, SPACING)[1] == 0.0


def test_a_quiet_scan_is_left_exactly_as_it_is():
    hu = _body(NOISE_TRIGGER_HU * 0.8)
    out, sigma, sd = reduce_noise(hu, SPACING)
    assert out is hu and sigma == 0.0 and sd < NOISE_TRIGGER_HU
    vol = Volume(hu, np.diag([*SPACING, 1.0]))
    assert quieter(vol) is vol and noise_meta(vol) == {}


def test_a_noisy_scan_is_smoothed_to_the_target_in_plane_only():
    hu = _body(120.0)
    hu[:, :, ::2] += 300.0  # slices that differ: smoothing across them would mix their means
    out, sigma, sd = reduce_noise(hu, SPACING)
    assert sd > 100 and 0 < sigma <= 3.0
    after = noise_sd(out, SPACING)
    assert after == pytest.approx(NOISE_TARGET_HU, abs=8)
    # in-plane only: each slice keeps its own mean
    np.testing.assert_allclose(out.mean(axis=(0, 1)), hu.mean(axis=(0, 1)), atol=2.0)
    # and the edge between lung and tissue stays where it was (the -400 HU crossing)
    col = out[:, 60, 3]
    assert np.all(col[25:55] < -400) and np.all(col[65:85] > -400)


def test_the_smoothing_grows_from_zero_at_the_trigger():
    """No step at the trigger: a scan just over it is barely touched."""
    sigmas = [reduce_noise(_body(sd, seed=2), SPACING)[1]
              for sd in (NOISE_TRIGGER_HU * 1.03, NOISE_TRIGGER_HU * 1.15, NOISE_TRIGGER_HU * 2)]
    assert sigmas[0] < 0.3 and sigmas[0] < sigmas[1] < sigmas[2], sigmas


def test_quieter_records_what_it_did():
    vol = Volume(_body(110.0), np.diag([*SPACING, 1.0]), {"path": "scan.nii.gz"})
    out = quieter(vol)
    assert out is not vol and out.meta["path"] == "scan.nii.gz"
    assert out.meta["noise_sd_hu"] > 90 and out.meta["smoothing_mm"] > 0
    assert noise_meta(out) == {k: out.meta[k] for k in ("noise_sd_hu", "smoothing_mm")}
    np.testing.assert_array_equal(out.affine, vol.affine)


def test_correlated_noise_is_measured_too():
    """CT noise is not white: a smooth kernel correlates it; the measure still sees most of it."""
    rng = np.random.default_rng(3)
    n = ndimage.gaussian_filter(rng.standard_normal((120, 120, 8)).astype(np.float32), (0.9, 0.9, 0))
    hu = _body(0.0) + n * (90.0 / n.std())
    assert 60 < noise_sd(hu, SPACING) < 95


def test_predict_smooths_a_noisy_scan_before_the_network_and_says_so(monkeypatch):
    """The network and every HU step see the smoothed scan; the mask's meta records it."""
    import lungseg
    import lungseg.inference.predictor as predictor_module
    from lungseg.inference.predictor import Predictor

    seen = []

    def network(self, x):  # x: [-1000, 1000] HU -> [0, 1]; sure of the air-dark voxels
        seen.append(noise_sd(x * 2000.0 - 1000.0, (2.5, 2.5, 2.5)))
        return (x < 0.3).astype(np.float32)

    monkeypatch.setattr(Predictor, "_model_probability", network)
    image, _ = lungseg.make_phantom(seed=3, size=96)
    hu = np.asarray(image.array, np.float32)
    noisy = Volume(hu + np.random.default_rng(0).normal(0, 150, hu.shape).astype(np.float32), image.affine)
    mask = Predictor().predict(noisy)
    assert mask.meta["noise_sd_hu"] > 100 and mask.meta["smoothing_mm"] > 0
    monkeypatch.setattr(predictor_module, "quieter", lambda v: v)
    plain = Predictor().predict(noisy)
    assert "smoothing_mm" not in plain.meta
    assert seen[0] < 0.6 * seen[1], seen  # the network's input: quieter than the raw scan's


A0002 = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_pathology" / "ct_lungpetctdx_a0002_8mm.nii.gz"


@pytest.mark.slow
@pytest.mark.skipif(not A0002.is_file(), reason="shared data absent")
def test_low_dose_noise_on_a_real_chest_does_not_turn_the_upper_abdomen_into_lung():
    # Lung-PET-CT-Dx A0002 (8 mm slices, 16 HU of noise) with 90 HU of correlated noise added:
    # unsmoothed, the default model took the spleen and stomach under the left dome for lung
    # (+515 mL, Dice 0.923 against the clean scan's mask); smoothed, within ~10 mL
    import lungseg
    from lungseg.evaluation import dice

    image = lungseg.read_volume(A0002)
    clean = np.asarray(lungseg.segment(image).array)
    hu = np.asarray(image.array, np.float32)
    n = ndimage.gaussian_filter(np.random.default_rng(0).standard_normal(hu.shape).astype(np.float32),
                                [0.7 / s for s in image.spacing])
    noisy = Volume(hu + n * (90.0 / n.std()), image.affine)
    mask = lungseg.segment(noisy)
    assert mask.meta["smoothing_mm"] > 0
    m = np.asarray(mask.array)
    assert dice(m > 0, clean > 0) > 0.98
    assert abs(np.count_nonzero(m) - np.count_nonzero(clean)) * image.voxel_ml < 60


def test_the_qc_sidecar_records_the_noise_and_the_smoothing(tmp_path, capfd):
    """`predict` (classical: no torch needed) on a noisy and a quiet phantom: the `.qc.json`
    says how noisy each was and how much it was smoothed; the written mask is on the input's grid."""
    import json

    import lungseg
    from lungseg.cli import main
    from lungseg.io.volumes import write_volume

    image, _ = lungseg.make_phantom(seed=5, size=64)
    hu = np.asarray(image.array, np.float32)
    noisy = Volume(hu + np.random.default_rng(0).normal(0, 140, hu.shape).astype(np.float32), image.affine)
    for name, vol in (("quiet", image), ("noisy", noisy)):
        write_volume(vol, tmp_path / f"{name}.nii.gz")
        capfd.readouterr()
        code = main(["predict", str(tmp_path / f"{name}.nii.gz"), "-o", str(tmp_path / f"{name}_mask.nii.gz"),
                     "--method", "classical"])
        assert code == 0, capfd.readouterr().err
    quiet_qc = json.loads((tmp_path / "quiet_mask.qc.json").read_text())
    noisy_qc = json.loads((tmp_path / "noisy_mask.qc.json").read_text())
    assert quiet_qc["smoothing_mm"] == 0.0 and quiet_qc["noise_sd_hu"] is None
    assert noisy_qc["noise_sd_hu"] > 100 and noisy_qc["smoothing_mm"] > 0
    mask = lungseg.read_volume(tmp_path / "noisy_mask.nii.gz")
    assert mask.shape == image.shape and np.allclose(mask.affine, image.affine)


def test_a_coronal_slice_of_a_noisy_scan_is_measured_and_smoothed_too():
    """A view one voxel thick front to back has no axial windows: it is measured and smoothed in
    its own plane, so it is not left noisy while the whole scan is smoothed."""
    hu = _body(120.0, slices=40)
    coronal = np.ascontiguousarray(hu[:, 70:71, :])
    spacing = (0.8, 0.8, 2.0)
    assert noise_sd(coronal, spacing) == pytest.approx(120.0, rel=0.1)
    out, sigma, _ = reduce_noise(coronal, spacing)
    assert sigma > 0 and out.shape == coronal.shape and noise_sd(out, spacing) < 50


def test_the_quality_check_warns_about_a_very_noisy_scan_only():
    import lungseg
    from lungseg import quality
    from lungseg.inference.classical import segment_classical

    image, truth = lungseg.make_phantom(seed=6, size=64)
    hu = np.asarray(image.array, np.float32)
    for sd, warned in ((0.0, False), (quality.MAX_NOISE_HU * 1.6, True)):
        vol = Volume(hu + np.random.default_rng(1).normal(0, sd, hu.shape).astype(np.float32), image.affine) if sd else image
        qc = quality.check_mask(vol, truth, segment_classical(vol))
        noise = {c["name"]: c for c in qc["checks"]}["noise"]
        assert (noise["passed"] is False) == warned, noise
        assert any("HU of noise" in w for w in qc["warnings"]) == warned
        if warned:
            assert noise["value"] > quality.MAX_NOISE_HU
