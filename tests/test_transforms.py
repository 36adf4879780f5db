"""Training transforms: left-right mirroring swaps the side labels; geometry preprocessing."""

import numpy as np
import torch

from lungseg.core.volume import Volume
from lungseg.transforms import RandFlipLeftRightd, infer_transforms, to_metatensor


def test_left_right_flip_swaps_labels():
    label = torch.zeros(1, 8, 4, 4)
    label[0, :3] = 1  # right lung at low i ... after the flip it must sit at high i as label 2
    image = torch.arange(8.0).reshape(1, 8, 1, 1).expand(1, 8, 4, 4).clone()
    t = RandFlipLeftRightd(prob=1.0)
    out = t({"image": image, "label": label})
    assert torch.equal(out["image"][0, :, 0, 0], torch.arange(7.0, -1, -1))
    assert (out["label"][0, -3:] == 2).all()
    assert (out["label"] == 1).sum() == 0


def test_infer_transforms_resample_to_model_spacing_in_ras():
    arr = np.zeros((40, 30, 20), np.int16)
    lps = np.diag([-1.0, -1.0, 3.0, 1.0])  # stored LPS, 1 x 1 x 3 mm
    pre = {"spacing": [2.0, 2.0, 2.0], "hu_window": [-1000.0, 1000.0], "axcodes": "RAS"}
    out = infer_transforms(pre)({"image": to_metatensor(Volume(arr, lps))})["image"]
    spacing = np.linalg.norm(np.asarray(out.affine)[:3, :3], axis=0)
    assert np.allclose(spacing, 2.0)
    assert np.all(np.diag(np.asarray(out.affine))[:3] > 0)  # RAS
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert np.allclose(out.shape[1:], (20, 15, 30), atol=1)
