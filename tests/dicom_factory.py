"""Write small synthetic DICOM CT series with pydicom, from an (i, j, k) array and a RAS affine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def write_series(
    folder: str | Path,
    hu: np.ndarray,
    affine: np.ndarray,
    *,
    series_uid: str | None = None,
    study_uid: str | None = None,
    modality: str | None = "CT",
    slope: float = 1.0,
    intercept: float = -1024.0,
    minimal: bool = False,
    padding_value: int | None = None,
    prefix: str = "",
    positions: list[float] | None = None,
    skip: tuple[int, ...] = (),
    shuffle: bool = True,
) -> list[Path]:
    """One file per k slice, named without extension and in shuffled order.

    `minimal`: no preamble, no file meta, no Modality (a non-conformant file).
    `positions`: override the k-th slice's offset along the slice axis (mm, from slice 0).
    `skip`: slice indices not written (to make a missing slice).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    lps = _RAS_TO_LPS @ np.asarray(affine, dtype=np.float64)
    col_vec, row_vec, k_vec = lps[:3, 0], lps[:3, 1], lps[:3, 2]
    d_col, d_row, d_k = (float(np.linalg.norm(v)) for v in (col_vec, row_vec, k_vec))
    stored = np.round((np.asarray(hu, dtype=np.float64) - intercept) / slope).astype(np.int16)
    rng = np.random.default_rng(0)
    order = rng.permutation(hu.shape[2]) if shuffle else np.arange(hu.shape[2])
    paths = []
    for k in order:
        if k in skip:
            continue
        offset = k * d_k if positions is None else positions[k]
        ipp = lps[:3, 3] + k_vec / d_k * offset
        ds = Dataset()
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[study_uid])
        if modality is not None and not minimal:
            ds.Modality = modality
        ds.PatientID = "PHANTOM"
        ds.PatientName = "Phantom^Lung"
        ds.StudyDate = "20240101"
        ds.SeriesNumber = 1
        ds.InstanceNumber = int(k) + 1
        ds.ImageOrientationPatient = [float(v) for v in np.r_[col_vec / d_col, row_vec / d_row]]
        ds.ImagePositionPatient = [float(v) for v in ipp]
        ds.PixelSpacing = [d_row, d_col]
        ds.SliceThickness = d_k
        ds.Rows, ds.Columns = int(hu.shape[1]), int(hu.shape[0])
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
        if padding_value is not None:
            ds.PixelPaddingValue = padding_value
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        path = folder / f"{prefix}{int(k) + 1000:05d}{rng.integers(1e6)}"
        if minimal:
            ds.save_as(path, implicit_vr=True, little_endian=True, enforce_file_format=False)
        else:
            ds.file_meta = FileMetaDataset()
            ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.preamble = b"\0" * 128
            ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def read_back(path: Path) -> Dataset:
    return pydicom.dcmread(path, force=True)


def write_series_sitk(folder: str | Path, hu: np.ndarray, affine: np.ndarray) -> list[Path]:
    """A CT series as SimpleITK writes one (its DICOM series example): no SliceThickness,
    one slice per file named `slice_000.dcm`..., identifiers made up by ITK/GDCM."""
    import locale

    saved = locale.setlocale(locale.LC_ALL)
    try:  # ITK/GDCM's DICOM writer sets the process locale to "C": later text I/O would be ASCII
        return _write_series_sitk(folder, hu, affine)
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _write_series_sitk(folder, hu, affine) -> list[Path]:
    import SimpleITK as sitk

    from lungseg.io.itk import array_affine_to_image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.Cast(array_affine_to_image(np.asarray(hu), affine), sitk.sitkInt16)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series_uid = generate_uid()
    study_uid = generate_uid()
    direction = image.GetDirection()
    common = [("0008|0031", "120000"), ("0008|0021", "20240101"), ("0008|0008", "DERIVED\\SECONDARY"),
              ("0020|000e", series_uid), ("0020|000d", study_uid), ("0008|0060", "CT"),
              ("0020|0037", "\\".join(map(str, (direction[0], direction[3], direction[6],
                                                  direction[1], direction[4], direction[7])))),
              ("0008|103e", "sitk series")]
    paths = []
    for k in range(image.GetDepth()):
        sl = image[:, :, k]
        for tag, value in common:
            sl.SetMetaData(tag, value)
        sl.SetMetaData("0020|0032", "\\".join(map(str, image.TransformIndexToPhysicalPoint((0, 0, k)))))
        sl.SetMetaData("0020|0013", str(k + 1))
        path = folder / f"slice_{k:03d}.dcm"
        writer.SetFileName(str(path))
        writer.Execute(sl)
        paths.append(path)
    return paths


def _jpeg_lossless(pixels: np.ndarray, scratch: Path) -> bytes:
    """One frame's pixels encoded as JPEG Lossless, Process 14 SV1, by GDCM through SimpleITK:
    the bytes of its one fragment."""
    import SimpleITK as sitk
    from pydicom.encaps import generate_frames
    from pydicom.uid import JPEGLosslessSV1

    tmp = scratch / "jpeg.dcm"
    writer = sitk.ImageFileWriter()
    writer.SetImageIO("GDCMImageIO")
    writer.UseCompressionOn()
    writer.SetCompressor("JPEG")
    writer.SetFileName(str(tmp))
    writer.Execute(sitk.GetImageFromArray(pixels[None].astype(np.int16)))
    encoded = pydicom.dcmread(tmp)
    assert encoded.file_meta.TransferSyntaxUID == JPEGLosslessSV1
    return next(generate_frames(encoded.PixelData, number_of_frames=1))


def compress_jpeg_lossless(paths: list[Path], scratch: str | Path) -> None:
    """Re-encode each file's pixels as JPEG Lossless, Process 14 SV1 (1.2.840.10008.1.2.4.70,
    the commonest lossless syntax of PACS exports), GDCM's encoder through SimpleITK doing the
    JPEG; every other element stays as written. A multi-frame file's frames are encoded one by
    one into one encapsulated Pixel Data."""
    import locale

    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGLosslessSV1

    saved = locale.setlocale(locale.LC_ALL)
    scratch = Path(scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        for path in paths:
            ds = pydicom.dcmread(path)
            frames = ds.pixel_array if int(ds.get("NumberOfFrames", 1) or 1) > 1 else ds.pixel_array[None]
            ds.PixelData = encapsulate([_jpeg_lossless(f, scratch) for f in frames])
            ds["PixelData"].VR = "OB"
            ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
            ds.save_as(path, enforce_file_format=True)
    finally:  # ITK/GDCM's DICOM writer sets the process locale to "C"
        locale.setlocale(locale.LC_ALL, saved)


def write_multiframe(path: str | Path, hu: np.ndarray, affine: np.ndarray, **kwargs) -> Path:
    """The series `write_series` makes, as one Legacy Converted Enhanced CT file (highdicom's
    converter: per-frame positions, shared orientation and spacing, the frames' rescale)."""
    import tempfile

    import highdicom as hd

    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        singles = [pydicom.dcmread(p) for p in write_series(tmp, hu, affine, **kwargs)]
        for ds in singles:  # what the converter needs of a clinical series
            ds.Manufacturer = "lungseg tests"
            ds.PatientBirthDate = ds.PatientSex = ds.AccessionNumber = ds.ReferringPhysicianName = ""
            ds.StudyID, ds.StudyTime = "1", "120000"
            ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
            ds.KVP, ds.AcquisitionNumber, ds.PositionReferenceIndicator = 120, 1, ""
        image = hd.legacy.LegacyConvertedEnhancedCTImage(
            singles, series_instance_uid=hd.UID(), series_number=2, sop_instance_uid=hd.UID(),
            instance_number=1)
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save_as(path)
    return path


def write_multiframe_split(folder: str | Path, hu: np.ndarray, affine: np.ndarray, parts: int) -> list[Path]:
    """One series as `parts` multi-frame files of consecutive slices (as some scanners split an
    enhanced series), sharing one SeriesInstanceUID."""
    series_uid = generate_uid()
    study_uid = generate_uid()
    out = []
    for n, ks in enumerate(np.array_split(np.arange(hu.shape[2]), parts)):
        aff = np.array(affine, float)
        aff[:3, 3] = affine[:3, :3] @ np.array([0.0, 0.0, ks[0]]) + affine[:3, 3]
        path = write_multiframe(Path(folder) / f"part{n}.dcm", hu[:, :, ks], aff, series_uid=series_uid,
                                study_uid=study_uid)
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = series_uid  # the converter gives each file a series of its own
        ds.save_as(path)
        out.append(path)
    return out
