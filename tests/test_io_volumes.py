"""read_volume / write_volume: geometry round trips for every format, bad files named."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from dicom_factory import write_series

from lungseg.core.errors import InputError, LungsegError, LungsegWarning
from lungseg.io import Volume, read_volume, write_volume
from lungseg.io.dicom import read_dicom_series

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def oblique_affine(spacing=(0.7, 0.8, 2.5), origin=(-120.5, 80.25, -300.0), angles=(0.3, -0.2, 0.15)):
    a, b, c = angles
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    aff = np.eye(4)
    aff[:3, :3] = rx @ ry @ rz @ np.diag(spacing)
    aff[:3, 3] = origin
    return aff


def ct_array(shape=(12, 10, 8), seed=0):
    rng = np.random.default_rng(seed)
    a = rng.integers(-1024, 1500, size=shape).astype(np.int16)
    a[0, 0, 0] = -1024
    return a


def world_of(vol: Volume, ijk) -> np.ndarray:
    return (vol.affine @ np.r_[np.asarray(ijk, float), 1.0])[:3]


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".mha", ".mhd"])
def test_round_trip_keeps_voxels_and_oblique_affine(tmp_path, suffix):
    vol = Volume(ct_array(), oblique_affine())
    out = write_volume(vol, tmp_path / f"ct{suffix}")
    back = read_volume(out)
    assert back.shape == vol.shape
    np.testing.assert_array_equal(back.array, vol.array)
    assert np.abs(back.affine - vol.affine).max() <= 1e-4
    again = read_volume(write_volume(back, tmp_path / f"again{suffix}"))
    assert np.abs(again.affine - vol.affine).max() <= 1e-4
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_mhd_writes_header_and_voxel_file(tmp_path):
    write_volume(Volume(ct_array(), np.eye(4)), tmp_path / "ct.mhd")
    assert {p.name for p in tmp_path.iterdir()} >= {"ct.mhd"}
    assert "ElementDataFile" in (tmp_path / "ct.mhd").read_text()


def test_dicom_to_nifti_round_trip_oblique(tmp_path):
    hu = ct_array()
    aff = oblique_affine()
    write_series(tmp_path / "dcm", hu, aff)
    vol = read_volume(tmp_path / "dcm")
    assert vol.meta["format"] == "dicom"
    np.testing.assert_array_equal(vol.array, np.maximum(hu, -1024))
    assert np.abs(vol.affine - aff).max() <= 1e-4
    back = read_volume(write_volume(vol, tmp_path / "ct.nii.gz"))
    np.testing.assert_array_equal(back.array, vol.array)
    assert np.abs(back.affine - aff).max() <= 1e-4


def test_same_content_as_lps_dicom_ras_nifti_and_mha(tmp_path):
    """One physical volume stored three ways (DICOM LPS, NIfTI RAS, MHA reoriented) agrees voxel by voxel."""
    hu = ct_array((9, 11, 7), seed=3)
    aff = oblique_affine(angles=(0.0, 0.1, -0.2))
    write_series(tmp_path / "dcm", hu, aff)
    dcm = read_volume(tmp_path / "dcm")
    # NIfTI stored flipped along i and j (a different stored order, same physics)
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3], flip[1, 3] = hu.shape[0] - 1, hu.shape[1] - 1
    nii_img = nib.Nifti1Image(hu[::-1, ::-1, :].copy(), aff @ flip)
    nib.save(nii_img, tmp_path / "ct.nii.gz")
    nii = read_volume(tmp_path / "ct.nii.gz")
    mha = read_volume(write_volume(Volume(hu[:, :, ::-1].copy(), aff @ np.array(
        [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, -1, hu.shape[2] - 1], [0, 0, 0, 1.0]])), tmp_path / "ct.mha"))
    for other in (nii, mha):
        # every voxel of `dcm` lands on a voxel of `other` holding the same value
        to_other = np.linalg.inv(other.affine) @ dcm.affine
        ijk = np.indices(dcm.shape).reshape(3, -1)
        mapped = to_other[:3, :3] @ ijk + to_other[:3, 3:4]
        assert np.abs(mapped - np.round(mapped)).max() < 1e-4
        m = np.round(mapped).astype(int)
        np.testing.assert_array_equal(other.array[m[0], m[1], m[2]], dcm.array.reshape(-1))


def test_real_dicom_series():
    folder = SHARED / "abdomen_ct_dicom"
    if not folder.is_dir():
        pytest.skip("shared real data absent")
    vol = read_volume(folder)
    assert vol.shape == (512, 512, 20)
    np.testing.assert_allclose(vol.spacing, (0.977, 0.977, 2.0), atol=1e-3)
    assert vol.array.min() <= -1000 and vol.array.max() > 1000
    assert nib.aff2axcodes(vol.affine) == ("L", "P", "S")
    assert len(vol.meta["dicom_files"]) == 20 and vol.meta["series_uid"]
    # any one file of the series reads the same volume
    one = read_volume(Path(vol.meta["dicom_files"][5]))
    np.testing.assert_array_equal(one.array, vol.array)


def test_real_nifti_reads():
    path = SHARED / "chest_cta_cropped.nii.gz"
    if not path.exists():
        pytest.skip("shared real data absent")
    vol = read_volume(path)
    assert vol.shape == (120, 126, 164) and vol.meta["format"] == "nifti"


# ---- bad input: each raises a LungsegError naming the problem -------------------------

def _nifti_bytes(tmp_path, shape=(10, 10, 10)) -> bytes:
    p = tmp_path / "ok.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).normal(size=shape).astype(np.float32), np.eye(4)), p)
    return p.read_bytes()


def test_truncated_gz(tmp_path):
    data = _nifti_bytes(tmp_path)
    bad = tmp_path / "cut.nii.gz"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated") as e:
        read_volume(bad)
    assert "cut.nii.gz" in str(e.value)


def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    with pytest.raises(InputError, match=r"empty file \(0 bytes\)"):
        read_volume(tmp_path / "empty.nii.gz")


def test_png_renamed_nii(tmp_path):
    p = tmp_path / "scan.nii"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 400)
    with pytest.raises(InputError, match="PNG picture"):
        read_volume(p)


def test_4d_image(tmp_path):
    p = tmp_path / "four.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((5, 5, 5, 3), np.int16), np.eye(4)), p)
    with pytest.raises(InputError, match="4D"):
        read_volume(p)


def test_4d_singleton_is_3d(tmp_path):
    p = tmp_path / "one.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((5, 5, 5, 1), np.int16), np.eye(4)), p)
    assert read_volume(p).shape == (5, 5, 5)


def test_2d_image_is_one_slice(tmp_path):
    # one axial slice stored as a 2D NIfTI: a volume one slice deep on the header's geometry
    aff = np.diag([0.7, 0.7, 2.5, 1.0])
    aff[:3, 3] = (-90.0, -80.0, 40.0)
    p = tmp_path / "flat.nii.gz"
    data = np.arange(30, dtype=np.int16).reshape(5, 6)
    nib.save(nib.Nifti1Image(data, aff), p)
    vol = read_volume(p)
    assert vol.shape == (5, 6, 1)
    np.testing.assert_array_equal(vol.array[:, :, 0], data)
    np.testing.assert_allclose(vol.affine, aff)
    # a 2D MetaImage has no thickness: 1 mm along the in-plane normal, with a warning
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(data.T.copy())
    img.SetSpacing((0.7, 0.8))
    img.SetOrigin((10.0, 20.0))
    sitk.WriteImage(img, str(tmp_path / "flat.mha"))
    with pytest.warns(LungsegWarning, match="1 mm"):
        vol2 = read_volume(tmp_path / "flat.mha")
    assert vol2.shape == (5, 6, 1)
    np.testing.assert_array_equal(vol2.array[:, :, 0], data)
    # LPS (ITK) -> RAS: x and y flip; the slice normal is +z (LPS) = +z (RAS)
    np.testing.assert_allclose(vol2.affine[:3, :3], np.diag([-0.7, -0.8, 1.0]))
    np.testing.assert_allclose(vol2.affine[:3, 3], (-10.0, -20.0, 0.0))


def test_missing_file_unknown_suffix_and_gz_garbage(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_volume(tmp_path / "nope.nii.gz")
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(InputError, match="unsupported format"):
        read_volume(tmp_path / "x.txt")
    (tmp_path / "junk.nii.gz").write_bytes(gzip.compress(b"not a nifti header" * 5))
    with pytest.raises(LungsegError):
        read_volume(tmp_path / "junk.nii.gz")
    (tmp_path / "junk.mha").write_text("garbage")
    with pytest.raises(InputError, match="MetaImage"):
        read_volume(tmp_path / "junk.mha")
    (tmp_path / "lost.mhd").write_text("NDims = 3\nDimSize = 2 2 2\nElementType = MET_SHORT\n"
                                       "ElementDataFile = lost.raw\n")
    with pytest.raises(InputError, match="lost.raw"):
        read_volume(tmp_path / "lost.mhd")


def test_write_failure_leaves_nothing(tmp_path):
    vol = Volume(np.zeros((3, 3, 3), np.int16), np.eye(4))
    bad = np.zeros((3, 3, 3), dtype=object)  # no format can hold Python objects
    for suffix in (".nii.gz", ".nrrd", ".mhd"):
        with pytest.raises(Exception):  # noqa: B017
            write_volume(Volume(bad, vol.affine), tmp_path / f"bad{suffix}")
    assert list(tmp_path.iterdir()) == []


def test_read_dicom_series_direct(tmp_path):
    write_series(tmp_path, ct_array(), np.diag([0.7, 0.7, 3.0, 1.0]))
    vol = read_dicom_series(tmp_path)
    assert vol.spacing == pytest.approx((0.7, 0.7, 3.0))


@pytest.mark.parametrize("kind", ["int16", "scaled", "nifti2"])
def test_gzip_nifti_read_with_isal_equals_nibabel(tmp_path, kind):
    """The .nii.gz reader inflates with ISA-L (python-isal) and returns C order: the same
    array, dtype and scaling as nibabel's own gzip reader, for plain, scaled (scl_slope/inter)
    and NIfTI-2 files."""
    a = ct_array((33, 21, 17), seed=3)
    aff = oblique_affine()
    if kind == "nifti2":
        img = nib.Nifti2Image(a, aff)
    else:
        img = nib.Nifti1Image(a, aff)
        if kind == "scaled":
            img.header.set_slope_inter(0.5, -3.0)
    p = tmp_path / f"{kind}.nii.gz"
    nib.save(img, p)
    expected = np.asanyarray(nib.load(p).dataobj)
    got = read_volume(p).array
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert np.array_equal(got, expected)
    assert got.flags.c_contiguous  # copied out of NIfTI's Fortran order, as the methods work
    if kind == "scaled":
        assert got.dtype == np.float64 and np.isclose(got.min(), -1024 * 0.5 - 3.0)
