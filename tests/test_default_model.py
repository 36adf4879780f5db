"""The shipped default model: loads with no --model and no network, and segments a phantom."""

import json

import nibabel as nib
import numpy as np
import pytest

from lungseg import make_phantom, write_volume
from lungseg.cli import main
from lungseg.evaluation import case_metrics
from lungseg.inference.predictor import DEFAULT_MODEL, Predictor
from lungseg.networks import load_checkpoint

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason="no default model built yet")


def test_default_model_is_small_and_self_describing():
    assert DEFAULT_MODEL.stat().st_size < 20 * 2**20
    settings = load_checkpoint(DEFAULT_MODEL)["settings"]
    assert settings["network"]["channels"] == [16, 32, 64, 128, 256]
    card = json.loads(DEFAULT_MODEL.with_suffix(".json").read_text())
    assert card["heldout_by_variation"]["all"]["unet"] >= 0.97


def test_predict_without_model_flag(tmp_path, capsys):
    image, truth = make_phantom(seed=4242, size=128, orientation="LPS")
    src = write_volume(image, tmp_path / "scan.nii.gz")
    code = main(["predict", str(src), "-o", str(tmp_path / "mask.nii.gz")])
    assert code == 0, capsys.readouterr().err
    mask = nib.load(tmp_path / "mask.nii.gz")
    assert mask.shape == image.shape and np.allclose(mask.affine, image.affine)


def test_default_model_segments_a_new_phantom():
    image, truth = make_phantom(seed=4243, size=128, variations=True)
    mask = Predictor(device="cpu").predict(image)
    m = case_metrics(mask, truth)
    assert m["dice_lungs"] > 0.95
    assert m["dice_right"] > 0.9 and m["dice_left"] > 0.9
