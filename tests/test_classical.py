"""segment_classical on a synthetic chest built here, in several orientations, and on real CT."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from lungseg.core.geometry import shifted_affine
from lungseg.core.labels import LEFT, RIGHT
from lungseg.core.volume import Volume
from lungseg.evaluation import dice
from lungseg.inference.classical import segment_classical
from lungseg.io.volumes import read_volume

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SP = (2.0, 2.0, 2.5)


def synthetic_chest(seed=0):
    """RAS grid (x to the patient's right, y anterior, z superior); returns HU, truth, trachea, gas."""
    shape = (160, 120, 84)
    x, y, z = (np.indices(shape, dtype=np.float32) - np.array([80, 60, 0])[:, None, None, None]) * np.array(SP)[:, None, None, None]
    hu = np.full(shape, -1000.0, np.float32)
    body = (x / 140) ** 2 + (y / 95) ** 2 <= 1
    hu[body] = 40
    hu[(y < -105) & (y > -115) & (np.abs(x) < 150)] = 300            # patient table
    right = ((x - 55) / 50) ** 2 + ((y + 5) / 65) ** 2 + ((z - 115) / 75) ** 2 <= 1
    left = ((x + 55) / 42) ** 2 + ((y + 5) / 62) ** 2 + ((z - 120) / 70) ** 2 <= 1
    trachea = (x**2 + (y - 15) ** 2 <= 8**2) & (z >= 165)
    bronchi = ((y - 15) ** 2 + (z - 168) ** 2 <= 5**2) & (np.abs(x) <= 60)
    gas = (x + 30) ** 2 + (y - 20) ** 2 + (z - 20) ** 2 <= 25**2   # ~65 mL below the lungs
    hu[right | left] = -850
    hu[(trachea | bronchi | gas) & ~(right | left)] = -1000
    hu += np.random.default_rng(seed).normal(0, 15, shape).astype(np.float32)
    truth = np.zeros(shape, np.uint8)
    truth[right] = RIGHT
    truth[left] = LEFT
    return hu.astype(np.int16), truth, trachea & ~(right | left), gas


@pytest.fixture(scope="module")
def chest():
    return synthetic_chest()


def test_synthetic_chest_ras(chest):
    hu, truth, trachea, gas = chest
    mask = segment_classical(Volume(hu, np.diag([*SP, 1.0])))
    assert mask.shape == hu.shape and mask.array.dtype == np.uint8
    assert dice(mask.array == RIGHT, truth == RIGHT) > 0.9
    assert dice(mask.array == LEFT, truth == LEFT) > 0.9
    assert dice(mask.array > 0, truth > 0) > 0.9
    assert not (mask.array[trachea] > 0).any()
    assert not (mask.array[gas] > 0).any()


def test_synthetic_chest_lps_and_permuted(chest):
    hu, truth, _, _ = chest
    # stored L-P-S: flip i and j; the affine keeps every voxel at the same place
    lps_aff = np.diag([-SP[0], -SP[1], SP[2], 1.0])
    lps_aff[:3, 3] = [SP[0] * (hu.shape[0] - 1), SP[1] * (hu.shape[1] - 1), 0]
    m = segment_classical(Volume(hu[::-1, ::-1].copy(), lps_aff)).array[::-1, ::-1]
    assert dice(m == RIGHT, truth == RIGHT) > 0.9 and dice(m == LEFT, truth == LEFT) > 0.9
    # superior-inferior axis stored first: array (k, j, i)
    perm_aff = np.zeros((4, 4))
    perm_aff[0, 2], perm_aff[1, 1], perm_aff[2, 0], perm_aff[3, 3] = SP[0], SP[1], SP[2], 1.0
    m = segment_classical(Volume(np.transpose(hu, (2, 1, 0)).copy(), perm_aff)).array
    m = np.transpose(m, (2, 1, 0))
    assert dice(m == RIGHT, truth == RIGHT) > 0.9 and dice(m == LEFT, truth == LEFT) > 0.9


def fine_chest(spacing=(0.7, 0.7, 2.5), shape=(421, 301, 40)):
    """A chest on a sub-millimetre in-plane grid (the classical method works on ~2 mm blocks,
    3 voxels wide here, the first axis not a whole number of them), lungs whose edges fall
    anywhere within a block; HU, truth and affine."""
    centre = np.array([shape[0] / 2, shape[1] / 2, 0])
    x, y, z = (np.indices(shape, dtype=np.float32) - centre[:, None, None, None]) * np.array(spacing)[:, None, None, None]
    hu = np.full(shape, -1000.0, np.float32)
    hu[(x / 140) ** 2 + (y / 95) ** 2 <= 1] = 40
    right = ((x - 55) / 50.3) ** 2 + ((y + 5) / 65.2) ** 2 <= 1 - ((z - 50) / 120) ** 2
    left = ((x + 55) / 42.4) ** 2 + ((y + 5) / 62.6) ** 2 <= 1 - ((z - 50) / 110) ** 2
    hu[right | left] = -850
    hu += np.random.default_rng(1).normal(0, 15, shape).astype(np.float32)
    truth = np.zeros(shape, np.uint8)
    truth[right] = RIGHT
    truth[left] = LEFT
    return hu.astype(np.int16), truth, np.diag([*spacing, 1.0])


def test_edges_follow_the_voxels_not_the_blocks():
    """The ~2 mm blocks' staircase is not the mask's edge: each lung within a voxel of the truth
    (on the blocks alone 0.990 / 0.991), and the same scan with its first voxel plane cut off
    (other block boundaries) gives the same mask on what both hold."""
    hu, truth, aff = fine_chest()
    mask = segment_classical(Volume(hu, aff)).array
    for side in (RIGHT, LEFT):
        assert dice(mask == side, truth == side) > 0.995
    shifted = segment_classical(Volume(np.ascontiguousarray(hu[1:]), shifted_affine(aff, (1, 0, 0)))).array
    assert dice(shifted == RIGHT, mask[1:] == RIGHT) > 0.998 and dice(shifted == LEFT, mask[1:] == LEFT) > 0.998


def test_every_storage_of_a_scan_gets_the_same_mask():
    """Flipped and permuted storages (the affine keeping each voxel in place) are segmented in
    one working order (`core.volume.WORKING_AXCODES`), so the mask mapped back is the same to the
    voxel. Before, estimates read in stored index order moved with it: in one slice holding a
    dark disc 30 mm from the body's middle, the midline read 1.5 mm to one side or the other,
    and the airway search took the disc for the trachea in one storage and not in the other
    (the shared chests: Dice 0.999 between storages)."""
    chest, _, chest_aff = fine_chest()
    one = np.full((240, 200, 1), -1000, np.int16)
    one[20:220, 20:180] = 40
    one[140:160, 100:120] = -850
    for hu, aff in ((chest, chest_aff), (one, np.diag([1.0, 1.0, 2.0, 1.0]))):
        mask = np.asarray(segment_classical(Volume(hu, aff)).array)
        for ornt in (((0, -1), (1, 1), (2, 1)), ((0, 1), (1, -1), (2, 1)), ((2, 1), (0, -1), (1, -1))):
            ornt = np.array(ornt, float)
            moved = Volume(np.ascontiguousarray(nib.orientations.apply_orientation(hu, ornt)),
                           aff @ nib.orientations.inv_ornt_aff(ornt, hu.shape))
            back = nib.orientations.apply_orientation(np.asarray(segment_classical(moved).array),
                                                      nib.orientations.ornt_transform([[0, 1], [1, 1], [2, 1]], ornt))
            np.testing.assert_array_equal(back, mask, err_msg=f"{hu.shape} {ornt.tolist()}")
    assert (mask == RIGHT).sum() in (0, 400)  # the disc: all lung or all airway, as long as every storage agrees


def test_no_lungs_gives_empty_mask(chest):
    hu, truth, trachea, gas = chest
    abdomen = hu.copy()
    abdomen[truth > 0] = 40     # soft tissue instead of lungs: only gas and trachea remain
    mask = segment_classical(Volume(abdomen, np.diag([*SP, 1.0])))
    assert not mask.array.any()
    air = np.full((30, 30, 30), -1000, np.int16)
    assert not segment_classical(Volume(air, np.eye(4))).array.any()


@pytest.mark.skipif(not (SHARED / "chest_cta_cropped.nii.gz").exists(), reason="shared data absent")
def test_real_cropped_cta_sides():
    image = read_volume(SHARED / "chest_cta_cropped.nii.gz")
    mask = segment_classical(image)
    assert mask.shape == image.shape and np.allclose(mask.affine, image.affine)
    voxel_ml = abs(np.linalg.det(image.affine[:3, :3])) / 1000
    xs = {}
    for side in (RIGHT, LEFT):
        idx = np.argwhere(mask.array == side)
        assert len(idx) * voxel_ml > 500, f"lung {side} too small"
        xs[side] = (image.affine[:3, :3] @ idx.mean(axis=0) + image.affine[:3, 3])[0]
    assert xs[RIGHT] > xs[LEFT]   # RAS+: the patient's right lung at larger world x


@pytest.mark.skipif(not (SHARED / "abdomen_ct_dicom").is_dir(), reason="shared data absent")
def test_real_abdomen_has_no_lung():
    sitk = pytest.importorskip("SimpleITK")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(SHARED / "abdomen_ct_dicom")))
    img = reader.Execute()
    array = sitk.GetArrayFromImage(img).transpose(2, 1, 0)
    aff = np.eye(4)
    aff[:3, :3] = np.array(img.GetDirection()).reshape(3, 3) * np.array(img.GetSpacing())
    aff[:3, 3] = img.GetOrigin()
    aff = np.diag([-1.0, -1.0, 1.0, 1.0]) @ aff   # LPS -> RAS
    mask = segment_classical(Volume(array, aff))
    voxel_ml = abs(np.linalg.det(aff[:3, :3])) / 1000
    assert (mask.array == RIGHT).sum() * voxel_ml < 50
    assert (mask.array == LEFT).sum() * voxel_ml < 50
