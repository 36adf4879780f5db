"""DICOM series: choice among series, slice order, HU, padding, gaps, minimal files, SEG."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_factory import write_series

from lungseg.core.errors import InputError, LungsegWarning
from lungseg.io import Volume, read_volume
from lungseg.io.seg import write_dicom_seg

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
AFF = np.diag([0.8, 0.8, 2.0, 1.0])
AFF[:3, 3] = (-100.0, -120.0, -50.0)


def hu(shape=(16, 14, 6), seed=0):
    a = np.random.default_rng(seed).integers(-1000, 1200, size=shape).astype(np.int16)
    return a


def test_sorted_by_position_not_file_name(tmp_path):
    data = hu()
    write_series(tmp_path, data, AFF, shuffle=True)
    vol = read_volume(tmp_path)
    np.testing.assert_array_equal(vol.array, data)
    zs = [float(pydicom.dcmread(f).ImagePositionPatient[2]) for f in vol.meta["dicom_files"]]
    assert zs == sorted(zs)
    assert vol.meta["format"] == "dicom" and vol.meta["study_uid"]


def test_rescale_slope_intercept_float(tmp_path):
    data = (hu() // 2 * 2).astype(np.int16)
    write_series(tmp_path, data, AFF, slope=0.5, intercept=-1000.5)
    vol = read_volume(tmp_path)
    assert vol.array.dtype == np.float32
    np.testing.assert_allclose(vol.array, data, atol=0.5)


def test_padding_set_to_air(tmp_path):
    data = hu()
    data[:3] = -3024
    data[-2:] = -2048
    write_series(tmp_path / "a", data, AFF)
    vol = read_volume(tmp_path / "a")
    assert vol.array.min() == -1024 and np.all(vol.array[:3] == -1024) and np.all(vol.array[-2:] == -1024)
    # PixelPaddingValue (stored value) also becomes air
    data2 = hu()
    data2[:, :2] = 500  # stored 1524 with intercept -1024
    write_series(tmp_path / "b", data2, AFF, padding_value=1524)
    vol2 = read_volume(tmp_path / "b")
    assert np.all(vol2.array[:, :2] == -1024) and vol2.array.max() > 500 - 1


def test_minimal_nonconformant_files(tmp_path):
    data = hu()
    write_series(tmp_path, data, AFF, minimal=True)
    head = next(tmp_path.iterdir()).read_bytes()[:132]
    assert head[128:132] != b"DICM"
    vol = read_volume(tmp_path)
    np.testing.assert_array_equal(vol.array, data)
    np.testing.assert_allclose(vol.affine, AFF, atol=1e-6)


def test_missing_slice_is_an_error(tmp_path):
    write_series(tmp_path, hu((8, 8, 8)), AFF, skip=(4,))
    with pytest.raises(InputError, match="missing slice"):
        read_volume(tmp_path)


def test_non_uniform_spacing_resampled_with_warning(tmp_path):
    data = np.zeros((8, 8, 5), np.int16)
    for k in range(5):
        data[:, :, k] = 100 * k
    pos = [0.0, 2.0, 4.2, 6.0, 8.0]
    write_series(tmp_path, data, AFF, positions=pos)
    with pytest.warns(LungsegWarning, match="resampled"):
        vol = read_volume(tmp_path)
    assert vol.meta["resampled"] and vol.shape == (8, 8, 5)
    assert vol.spacing[2] == pytest.approx(2.0)
    assert vol.array[0, 0, 2] == pytest.approx(200 - 100 * 0.2 / 2.2, abs=1e-3)


def test_mixed_series_pick_most_slices_and_by_uid(tmp_path):
    small, big = hu((8, 8, 3), 1), hu((8, 8, 7), 2)
    write_series(tmp_path, small, AFF, series_uid="1.2.3.4", prefix="s")
    write_series(tmp_path, big, AFF, series_uid="1.2.3.5", prefix="b")
    with pytest.warns(LungsegWarning, match="2 series"):
        vol = read_volume(tmp_path)
    assert vol.meta["series_uid"] == "1.2.3.5" and vol.shape == (8, 8, 7)
    picked = read_volume(tmp_path, series_uid="1.2.3.4")
    np.testing.assert_array_equal(picked.array, small)
    with pytest.raises(InputError, match=r"series UID 9\.9 not found.*1\.2\.3\.4.*1\.2\.3\.5|1\.2\.3\.5.*1\.2\.3\.4"):
        read_volume(tmp_path, series_uid="9.9")


def test_ct_preferred_over_larger_non_ct(tmp_path):
    write_series(tmp_path, hu((8, 8, 9)), AFF, series_uid="1.2.9", modality="PT", prefix="p")
    write_series(tmp_path, hu((8, 8, 4)), AFF, series_uid="1.2.8", prefix="c")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert read_volume(tmp_path).meta["series_uid"] == "1.2.8"


def test_single_file_reads_its_series_and_stray_files_ignored(tmp_path):
    files = write_series(tmp_path, hu(), AFF, series_uid="1.2.3.6")
    write_series(tmp_path, hu((16, 14, 9)), AFF, series_uid="1.2.3.7", prefix="z")
    (tmp_path / "notes.txt").write_text("not dicom")
    (tmp_path / "DICOMDIR_like").write_bytes(b"\0" * 300)
    vol = read_volume(files[0])
    assert vol.meta["series_uid"] == "1.2.3.6" and vol.shape == (16, 14, 6)


def test_folder_without_dicom(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(InputError, match="no DICOM image slices"):
        read_volume(tmp_path)


def _check_seg(seg_path: Path, source: Volume, mask: np.ndarray):
    import highdicom as hd

    seg = hd.seg.segread(seg_path)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.meta["series_uid"]
    labels = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence}
    assert labels == {1: "Right lung", 2: "Left lung"}
    vol = seg.get_volume(combine_segments=True)
    arr = np.asarray(vol.array)
    # map every SEG voxel (frame, row, col; LPS affine) to the source grid and compare
    f, r, c = np.indices(arr.shape).reshape(3, -1)
    lps = vol.affine @ np.vstack([f, r, c, np.ones_like(f)])
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    ijk = np.round(np.linalg.inv(source.affine) @ ras).astype(int)[:3]
    np.testing.assert_array_equal(arr.reshape(-1), mask[ijk[0], ijk[1], ijk[2]])


def test_dicom_seg_synthetic_oblique(tmp_path):
    from test_io_volumes import oblique_affine

    write_series(tmp_path / "ct", hu((12, 10, 6)), oblique_affine(), shuffle=True)
    ct = read_volume(tmp_path / "ct")
    mask = np.zeros(ct.shape, np.uint8)
    mask[1:5, 2:8, 1:4] = 1
    mask[7:11, 2:8, 2:6] = 2
    out = write_dicom_seg(ct.with_array(mask), ct, tmp_path / "seg.dcm")
    _check_seg(out, ct, mask)


def test_dicom_seg_needs_dicom_source(tmp_path):
    vol = Volume(np.zeros((4, 4, 4), np.int16), np.eye(4), {"format": "nifti"})
    with pytest.raises(InputError, match="DICOM SEG needs a DICOM source"):
        write_dicom_seg(vol, vol, tmp_path / "seg.dcm")
    assert not (tmp_path / "seg.dcm").exists()


def test_dicom_seg_real_series(tmp_path):
    folder = SHARED / "abdomen_ct_dicom"
    if not folder.is_dir():
        pytest.skip("shared real data absent")
    ct = read_volume(folder)
    mask = np.zeros(ct.shape, np.uint8)
    mask[300:400, 150:350, 2:12] = 1  # patient's right = small i for an LPS-stored series
    mask[100:200, 150:350, 4:16] = 2
    out = write_dicom_seg(ct.with_array(mask), ct, tmp_path / "lungs.seg.dcm")
    _check_seg(out, ct, mask)


def test_dicom_seg_from_minimal_files_and_empty_mask(tmp_path):
    write_series(tmp_path / "ct", hu((10, 8, 4)), AFF, minimal=True)
    ct = read_volume(tmp_path / "ct")
    out = write_dicom_seg(ct.with_array(np.zeros(ct.shape, np.uint8)), ct, tmp_path / "empty.dcm")
    _check_seg(out, ct, np.zeros(ct.shape, np.uint8))


def test_folder_of_nifti_points_to_the_files(tmp_path):
    (tmp_path / "ct.nii.gz").write_bytes(b"x")
    with pytest.raises(InputError, match="pass one of these files instead"):
        read_volume(tmp_path)


def test_single_slice_series_is_a_volume_one_slice_deep(tmp_path):
    # a single axial slice is a valid CT: its SliceThickness places it in 3D
    data = hu(shape=(16, 14, 1))
    write_series(tmp_path / "one", data, AFF)
    vol = read_volume(tmp_path / "one")
    assert vol.shape == (16, 14, 1)
    np.testing.assert_array_equal(vol.array, data)
    np.testing.assert_allclose(vol.affine, AFF, atol=1e-6)  # thickness 2.0 mm along +z (RAS)
    # without SliceThickness there is no telling how thick it is: refused, with the folder named
    f = next((tmp_path / "one").iterdir())
    ds = pydicom.dcmread(f)
    del ds.SliceThickness
    ds.save_as(f)
    with pytest.raises(InputError, match="single slice without SliceThickness") as info:
        read_volume(tmp_path / "one")
    assert "one" in str(info.value)


def test_gantry_tilted_series_reads_as_a_sheared_grid(tmp_path):
    """Slices in tilted planes (ImageOrientationPatient's column direction leaves the axial
    plane) stacked along the table: the affine keeps that shear, so every voxel is where the
    scanner put it (read as the plane normal, the volume would be skewed by tan(tilt) per mm)."""
    t = np.deg2rad(15.0)
    aff = AFF.copy()
    aff[:3, 1] = 0.8 * np.array([0.0, np.cos(t), np.sin(t)])
    data = hu()
    write_series(tmp_path, data, aff)
    vol = read_volume(tmp_path)
    np.testing.assert_allclose(vol.affine, aff, atol=1e-6)
    np.testing.assert_array_equal(vol.array, data)


def test_jpeg_lossless_series_is_decoded(tmp_path):
    """JPEG Lossless (Process 14 SV1), which pydicom cannot decode without plugins this project
    does not install, is decoded by GDCM: the same HU as the uncompressed series, padding
    included."""
    from dicom_factory import compress_jpeg_lossless
    from pydicom.uid import JPEGLosslessSV1

    data = hu()
    data[:2] = -3024  # scanner padding: stored values below the intercept
    plain = read_volume(write_series(tmp_path / "plain", data, AFF, shuffle=False)[0].parent)
    paths = write_series(tmp_path / "jpeg", data, AFF)
    compress_jpeg_lossless(paths, tmp_path / "scratch")
    assert pydicom.dcmread(paths[0]).file_meta.TransferSyntaxUID == JPEGLosslessSV1
    vol = read_volume(tmp_path / "jpeg")
    np.testing.assert_array_equal(vol.array, plain.array)
    np.testing.assert_allclose(vol.affine, plain.affine)
    assert np.all(vol.array[:2] == -1024)


@pytest.mark.parametrize("slope", [1.0, 0.5])
def test_enhanced_multiframe_ct_reads_as_the_same_volume(tmp_path, slope):
    """An enhanced multi-frame CT (one file holding the series, as newer scanners export) gives
    the same HU, padding and geometry as the series of single-frame files it was made from."""
    from dicom_factory import write_multiframe

    data = (hu() // 2 * 2).astype(np.int16)
    data[:, :2] = -3024
    plain = read_volume(write_series(tmp_path / "plain", data, AFF, slope=slope)[0].parent)
    f = write_multiframe(tmp_path / "mf" / "ct.dcm", data, AFF, slope=slope)
    for source in (f.parent, f):
        vol = read_volume(source)
        np.testing.assert_allclose(vol.affine, plain.affine, atol=1e-6)
        np.testing.assert_array_equal(vol.array, plain.array)
        assert vol.meta["format"] == "dicom" and vol.meta["multiframe"]
    assert np.all(vol.array[:, :2] == -1024)


@pytest.mark.parametrize("slope", [1.0, 0.5])
def test_jpeg_lossless_enhanced_multiframe_is_decoded(tmp_path, slope):
    """A multi-frame file whose frames are JPEG Lossless (no pydicom decoder here) is decoded
    frame by frame by GDCM and reads as the uncompressed file does: stored values, so the
    frames' rescale is applied once."""
    from dicom_factory import compress_jpeg_lossless, write_multiframe
    from pydicom.uid import JPEGLosslessSV1

    data = (hu() // 2 * 2).astype(np.int16)
    data[:, :2] = -3024
    plain = read_volume(write_multiframe(tmp_path / "plain" / "ct.dcm", data, AFF, slope=slope))
    f = write_multiframe(tmp_path / "jpeg" / "ct.dcm", data, AFF, slope=slope)
    compress_jpeg_lossless([f], tmp_path / "scratch")
    assert pydicom.dcmread(f).file_meta.TransferSyntaxUID == JPEGLosslessSV1
    vol = read_volume(f)
    np.testing.assert_array_equal(vol.array, plain.array)
    np.testing.assert_allclose(vol.affine, plain.affine)
    assert vol.meta["multiframe"] and np.all(vol.array[:, :2] == -1024)


def test_enhanced_multiframe_beside_a_series_is_one_series_among_others(tmp_path):
    from dicom_factory import write_multiframe

    write_series(tmp_path / "a", hu(), AFF)
    write_multiframe(tmp_path / "b" / "ct.dcm", hu(seed=1, shape=(16, 14, 9)), AFF)
    with pytest.warns(LungsegWarning, match="enhanced multi-frame"):
        vol = read_volume(tmp_path)
    assert vol.shape == (16, 14, 9) and vol.meta["multiframe"]


def test_dicom_seg_of_an_enhanced_multiframe_source(tmp_path):
    """The SEG of a one-file series references that image; every voxel lands where the mask has it."""
    from dicom_factory import write_multiframe

    f = write_multiframe(tmp_path / "ct" / "ct.dcm", hu((12, 10, 6)), AFF)
    ct = read_volume(f)
    mask = np.zeros(ct.shape, np.uint8)
    mask[1:5, 2:8, 1:4] = 1
    mask[7:11, 2:8, 2:6] = 2
    out = write_dicom_seg(ct.with_array(mask), ct, tmp_path / "seg.dcm")
    _check_seg(out, ct, mask)


@pytest.mark.parametrize("syntax", ["RLELossless", "JPEGLSLossless"])
def test_rle_and_jpeg_ls_series_are_decoded(tmp_path, syntax):
    """The other lossless syntaxes PACS exports use, decoded by pydicom's own plugins (pydicom
    encodes them here; JPEG 2000 is the shared abdomen series, `test_dicom_seg_real_series`)."""
    import pydicom.uid

    data = hu()
    data[:2] = -3024
    plain = read_volume(write_series(tmp_path / "plain", data, AFF)[0].parent)
    for p in write_series(tmp_path / "enc", data, AFF):
        ds = pydicom.dcmread(p)
        try:
            ds.compress(getattr(pydicom.uid, syntax))
        except RuntimeError as exc:  # an encoder plugin missing here: nothing to read
            pytest.skip(f"pydicom cannot encode {syntax} here ({exc})")
        ds.save_as(p)
    assert pydicom.dcmread(p).file_meta.TransferSyntaxUID == getattr(pydicom.uid, syntax)
    np.testing.assert_array_equal(read_volume(tmp_path / "enc").array, plain.array)


def test_series_split_over_multiframe_files_is_read_whole(tmp_path):
    """Some scanners split an enhanced series into instances of so many frames: read together,
    in order of position, as one volume; a missing part is an error naming the series."""
    from dicom_factory import write_multiframe, write_multiframe_split

    data = hu(shape=(16, 14, 9))
    whole = read_volume(write_multiframe(tmp_path / "one" / "ct.dcm", data, AFF))
    parts = write_multiframe_split(tmp_path / "split", data, AFF, 3)
    vol = read_volume(tmp_path / "split")
    np.testing.assert_allclose(vol.affine, whole.affine, atol=1e-6)
    np.testing.assert_array_equal(vol.array, whole.array)
    assert len(vol.meta["dicom_files"]) == 3
    parts[1].unlink()
    with pytest.raises(InputError, match="do not continue"):
        read_volume(tmp_path / "split")


def test_a_dicom_seg_is_not_taken_for_a_ct(tmp_path):
    """A DICOM SEG's frames look like an enhanced multi-frame image: given alone it is refused as
    a segmentation, in a folder alone the error says what the folder holds, and beside its CT
    series it is no second series."""
    write_series(tmp_path / "ct", hu(), AFF)
    ct = read_volume(tmp_path / "ct")
    mask = np.zeros(ct.shape, np.uint8)
    mask[2:6, 2:8, 1:4] = 1
    seg = write_dicom_seg(ct.with_array(mask), ct, tmp_path / "segs" / "lungs.seg.dcm")
    with pytest.raises(InputError, match="is a DICOM SEG segmentation"):
        read_volume(seg)
    with pytest.raises(InputError, match="holds 1 DICOM SEG"):
        read_volume(seg.parent)
    (tmp_path / "ct" / "lungs.seg.dcm").write_bytes(seg.read_bytes())
    with warnings.catch_warnings():
        warnings.simplefilter("error", LungsegWarning)  # no "2 series" warning
        np.testing.assert_array_equal(read_volume(tmp_path / "ct").array, ct.array)
