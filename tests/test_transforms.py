"""Training transforms: left-right mirroring swaps the side labels; slabs and cut views; geometry."""

import numpy as np
import torch
from scipy import ndimage

from lungseg.core.volume import Volume
from lungseg.transforms import (
    RandCollapsed,
    RandFibrosisd,
    RandFlipLeftRightd,
    RandMassd,
    RandPneumoniad,
    RandSlabd,
    infer_transforms,
    paint_fibrosis,
    paint_pneumonia,
    to_metatensor,
    train_transforms,
)


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


def test_slab_patches_replicate_edge_slices_in_image_and_label():
    """A slab / cut view keeps a contiguous run of z slices and repeats its edge slices,
    the same in image and label, as inference pads a short scan."""
    z = torch.arange(12, dtype=torch.float32)
    image = z.reshape(1, 1, 1, 12).repeat(1, 3, 2, 1)
    t = RandSlabd(prob=1.0, max_slab=4)
    t.set_random_state(3)
    kinds = set()
    for _ in range(40):
        out = t({"image": image, "label": image.clone()})
        col = out["image"][0, 0, 0]
        assert torch.equal(out["image"], out["label"])
        lo, hi = t.bounds
        assert 0 <= lo < hi <= 12
        assert torch.equal(col, torch.clamp(z, lo, hi - 1))
        kinds.add("slab" if hi - lo <= 2 else "cut" if hi - lo >= 5 else "either")
    assert {"slab", "cut"} <= kinds
    t0 = RandSlabd(prob=0.0)
    assert torch.equal(t0({"image": image})["image"], image)


def test_train_transforms_add_slabs_only_when_asked():
    pre = {"spacing": (2.5, 2.5, 2.5), "hu_window": (-1000.0, 1000.0), "axcodes": "RAS"}
    names = lambda c: [type(x).__name__ for x in c.transforms]  # noqa: E731
    assert "RandSlabd" not in names(train_transforms(pre, (32, 32, 32), 2)[1])
    assert "RandSlabd" in names(train_transforms(pre, (32, 32, 32), 2, slab_prob=0.3)[1])


def _chest_patch():
    """A 48^3 patch at 1.5 x 1.5 x 2 mm: a box of lung (-850 HU) in soft tissue (40 HU)."""
    hu = np.full((48, 48, 48), 40.0, np.float32)
    lung = np.zeros(hu.shape, bool)
    lung[6:42, 6:42, 4:44] = True
    hu[lung] = -850.0
    scaled = (hu + 1000.0) / 2000.0
    return torch.as_tensor(scaled)[None], torch.as_tensor(lung.astype(np.float32))[None]


def test_mass_replaces_lung_only_touches_soft_tissue_and_keeps_the_label():
    image, label = _chest_patch()
    lung = label[0].numpy() > 0
    t = RandMassd(prob=1.0, radius_mm=(10.0, 20.0))
    t.set_random_state(5)
    placed = 0
    for _ in range(10):
        out = t({"image": image, "label": label})
        assert torch.equal(out["label"], label)  # a mass in the lung is lung
        hu = out["image"][0].numpy() * 2000.0 - 1000.0
        changed = np.abs(out["image"][0].numpy() - image[0].numpy()) > 1e-6
        assert not changed[~lung].any()  # nothing outside the lung is touched
        dense = lung & (hu > -300)
        if changed.any():
            placed += 1
            assert dense.sum() * 1.5 * 1.5 * 2.0 > 500  # at least 0.5 mL of soft tissue
            assert -150 < np.median(hu[dense]) < 200
            # the mass touches the lung's border with soft tissue
            border = lung & ~ndimage.binary_erosion(lung)
            assert (dense & border).any()
    assert placed >= 8


def test_mass_needs_lung_and_is_off_by_default_in_the_pipeline():
    image, label = _chest_patch()
    empty = torch.zeros_like(label)
    t = RandMassd(prob=1.0)
    out = t({"image": image, "label": empty})
    assert torch.equal(out["image"], image)  # no lung: no mass
    assert torch.equal(RandMassd(prob=0.0)({"image": image, "label": label})["image"], image)
    pre = {"spacing": (2.5, 2.5, 2.5), "hu_window": (-1000.0, 1000.0), "axcodes": "RAS"}
    names = lambda c: [type(x).__name__ for x in c.transforms]  # noqa: E731
    assert "RandMassd" not in names(train_transforms(pre, (32, 32, 32), 2)[1])
    assert "RandMassd" in names(train_transforms(pre, (32, 32, 32), 2, mass_prob=0.3)[1])


def test_collapse_fills_one_lungs_upper_part_only_and_keeps_the_label():
    image, label = _chest_patch()
    lung = label[0].numpy() > 0
    t = RandCollapsed(prob=1.0)
    t.set_random_state(3)
    for _ in range(8):
        out = t({"image": image, "label": label})
        assert torch.equal(out["label"], label)  # collapsed lung is lung
        changed = np.abs(out["image"][0].numpy() - image[0].numpy()) > 1e-6
        assert not changed[~lung].any()  # nothing outside the lung is touched
        hu = out["image"][0].numpy() * 2000.0 - 1000.0
        dense = lung & (hu > -300)
        share = dense.sum() / lung.sum()
        assert 0.08 < share < 0.5  # a part of the lung, not all of it
        assert -100 < np.median(hu[dense]) < 120  # airless tissue
        # the plane faces up: the airless part lies above the part still aerated
        z = np.nonzero(lung)[2]
        assert np.mean(np.nonzero(dense)[2]) > np.mean(z) + 2
    assert torch.equal(t({"image": image, "label": torch.zeros_like(label)})["image"], image)  # no lung
    pre = {"spacing": (2.5, 2.5, 2.5), "hu_window": (-1000.0, 1000.0), "axcodes": "RAS"}
    names = lambda c: [type(x).__name__ for x in c.transforms]  # noqa: E731
    assert "RandCollapsed" not in names(train_transforms(pre, (32, 32, 32), 2)[1])
    assert "RandCollapsed" in names(train_transforms(pre, (32, 32, 32), 2, collapse_prob=0.15)[1])


def test_fibrosis_paints_subpleural_lung_only_and_keeps_the_label():
    image, label = _chest_patch()
    lung = label[0].numpy() > 0
    depth = ndimage.distance_transform_edt(lung, sampling=(1.5, 1.5, 2.0))
    t = RandFibrosisd(prob=1.0)
    t.set_random_state(7)
    painted = 0
    for _ in range(6):
        out = t({"image": image, "label": label})
        assert torch.equal(out["label"], label)  # fibrosis in the lung is lung
        changed = np.abs(out["image"][0].numpy() - image[0].numpy()) > 1e-6
        assert not changed[~lung].any()  # nothing outside the lung is touched
        if not changed.any():
            continue
        painted += 1
        assert depth[changed].max() <= 21.0  # subpleural: within 20 mm of the pleura
        hu = out["image"][0].numpy() * 2000.0 - 1000.0
        # honeycomb cysts (air) and walls / lines denser than the lung around them
        assert (hu[changed] < -880).any() and (hu[changed] > -500).any()
    assert painted >= 5


def test_paint_fibrosis_is_a_pure_function_of_its_seed():
    hu = np.full((40, 40, 30), -850.0, np.float32)
    band = np.zeros(hu.shape, bool)
    band[:, :8] = True
    depth = np.broadcast_to(np.arange(40, dtype=float)[None, :, None] + 0.5, hu.shape)  # pleura at y = 0
    a = paint_fibrosis(hu, band, depth, (1.0, 1.0, 1.0), np.random.default_rng(1), depth_mm=8.0)
    b = paint_fibrosis(hu, band, depth, (1.0, 1.0, 1.0), np.random.default_rng(1), depth_mm=8.0)
    np.testing.assert_array_equal(a, b)
    assert np.array_equal(a[~band], hu[~band])  # only the band is painted
    assert hu[0, 0, 0] == -850.0  # the input is not modified
    # honeycombing (air cysts) next to the pleura, none at the band's deep edge (reticulation)
    assert (a[:, :2] < -900).mean() > 0.02
    assert not (a[:, 6:8] < -900).any()
    pre = {"spacing": (2.5, 2.5, 2.5), "hu_window": (-1000.0, 1000.0), "axcodes": "RAS"}
    names = lambda c: [type(x).__name__ for x in c.transforms]  # noqa: E731
    assert "RandFibrosisd" not in names(train_transforms(pre, (32, 32, 32), 2)[1])
    assert "RandFibrosisd" in names(train_transforms(pre, (32, 32, 32), 2, fibrosis_prob=0.2)[1])


def test_paint_pneumonia_puts_peripheral_ground_glass_and_consolidation_into_the_lung_only():
    hu = np.full((60, 60, 40), 40.0, np.float32)
    lung = np.zeros(hu.shape, bool)
    lung[5:55, 5:55, 3:37] = True
    hu[lung] = -850.0
    vessels = np.zeros(hu.shape, bool)
    vessels[5:55:6, 5:55:6, 3:37] = True  # vessels along z through the lung, 9 mm apart
    hu[vessels] = 0.0
    sp = (1.5, 1.5, 2.0)
    a, lesion, core = paint_pneumonia(hu, lung, sp, np.random.default_rng(3), 3, (12.0, 18.0), 1.0)
    b, _, _ = paint_pneumonia(hu, lung, sp, np.random.default_rng(3), 3, (12.0, 18.0), 1.0)
    np.testing.assert_array_equal(a, b)  # a pure function of its seed
    assert hu[29, 29, 20] == 0.0 and hu[10, 10, 10] == -850.0  # the input is not modified
    assert lesion.any() and core.any() and not (lesion & ~lung).any() and not (core & ~lesion).any()
    assert np.array_equal(a[~lesion], hu[~lesion])  # nothing outside the lesions is touched
    depth = ndimage.distance_transform_edt(lung, sampling=sp)
    assert np.median(depth[lesion]) < 12.0  # peripheral: centred near the pleura
    glass = lesion & ~core & (hu == -850.0)
    assert glass.any() and -650 < np.median(a[glass]) < -450  # ground glass
    solid = core & (hu == -850.0)
    assert -10 < np.median(a[solid]) < 50  # consolidation ...
    tubes = core & vessels & (depth > 3.0)
    assert tubes.any() and np.median(a[tubes]) < -800  # ... its vessels now air bronchograms
    none, lesion0, _ = paint_pneumonia(hu, lung, sp, np.random.default_rng(3), 2, (12.0, 18.0), 0.0)
    assert lesion0.any() and (none[lesion0 & ~vessels] < -250).all()  # ground glass only: nothing solid


def test_pneumonia_transform_keeps_the_label_and_is_a_training_option():
    image, label = _chest_patch()
    lung = label[0].numpy() > 0
    t = RandPneumoniad(prob=1.0, spacing=(1.5, 1.5, 2.0))
    t.set_random_state(4)
    painted = 0
    for _ in range(6):
        out = t({"image": image, "label": label})
        assert torch.equal(out["label"], label)  # pneumonia is lung
        changed = np.abs(out["image"][0].numpy() - image[0].numpy()) > 1e-6
        assert not changed[~lung].any()
        painted += bool(changed.any())
        hu = out["image"][0].numpy() * 2000.0 - 1000.0
        assert (hu[changed] > -700).mean() > 0.9  # denser than the lung it replaced
    assert painted >= 5
    assert torch.equal(t({"image": image, "label": torch.zeros_like(label)})["image"], image)  # no lung
    pre = {"spacing": (2.5, 2.5, 2.5), "hu_window": (-1000.0, 1000.0), "axcodes": "RAS"}
    names = lambda c: [type(x).__name__ for x in c.transforms]  # noqa: E731
    assert "RandPneumoniad" not in names(train_transforms(pre, (32, 32, 32), 2)[1])
    assert "RandPneumoniad" in names(train_transforms(pre, (32, 32, 32), 2, pneumonia_prob=0.3)[1])
