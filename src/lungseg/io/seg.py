"""Lung masks as DICOM Segmentation objects (highdicom), referencing the source CT series.

The mask lies on the source `Volume`'s grid (i, j, k); each source DICOM file is matched to
its k index through the affine, so the SEG frames follow the source slices whatever order
the files were read in.

>>> # ct = read_volume("CT_folder/"); mask = ct.with_array(labels)
>>> # write_dicom_seg(mask, ct, "lungs_seg.dcm")
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lungseg.core.errors import GeometryError, InputError, LungsegError
from lungseg.core.geometry import LPS_TO_RAS, check_same_grid
from lungseg.core.labels import LEFT, RIGHT, check_labels
from lungseg.core.volume import Volume
from lungseg.io.safety import atomic_path

#: SNOMED CT codes for the two segments (label value → (code, meaning)).
LUNG_SEGMENTS = {RIGHT: ("3341006", "Right lung"), LEFT: ("44029006", "Left lung")}


class SegUnavailable(LungsegError):
    """The source series lacks what a correct DICOM SEG needs (the mask itself is fine)."""

    def __init__(self, reason: str, path=None):
        super().__init__(reason, path)
        self.reason = reason


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lungseg")
    except PackageNotFoundError:
        return "0"


def _segment_descriptions(version: str):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algorithm = hd.AlgorithmIdentificationSequence(
        name="lungseg", version=version, family=codes.cid7162.ArtificialIntelligence)
    out = []
    for number, (code, meaning) in LUNG_SEGMENTS.items():
        out.append(hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=meaning,
            segmented_property_category=codes.SCT.Organ,
            segmented_property_type=hd.sr.CodedConcept(code, "SCT", meaning),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_uid=hd.UID(),
            tracking_id=meaning,
        ))
    return out


_TYPE2_ATTRIBUTES = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
                     "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName")


def _repair(ds, series_uid: str, study_uid: str, slice_spacing: float | None = None):
    """Fill identifiers that anonymisers blank (SOP class/instance from the file meta), and a
    SliceThickness that ITK/SimpleITK-written series lack (the slice spacing: the thickness
    of the mask's voxels, which is what the SEG's pixel measures describe)."""
    from pydicom.uid import CTImageStorage, generate_uid

    meta = getattr(ds, "file_meta", None)
    if not ds.get("SOPClassUID"):
        ds.SOPClassUID = (meta.get("MediaStorageSOPClassUID") if meta else None) or CTImageStorage
    if not ds.get("SOPInstanceUID"):
        ds.SOPInstanceUID = (meta.get("MediaStorageSOPInstanceUID") if meta else None) or generate_uid(
            entropy_srcs=[series_uid, str(ds.get("ImagePositionPatient", ""))])
    if not ds.get("SeriesInstanceUID"):
        ds.SeriesInstanceUID = series_uid
    if not ds.get("StudyInstanceUID"):
        ds.StudyInstanceUID = study_uid
    if not ds.get("FrameOfReferenceUID"):
        ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[study_uid, "frame"])
    if "Modality" not in ds:
        ds.Modality = "CT"
    if not ds.get("SliceThickness") and slice_spacing:
        ds.SliceThickness = round(float(slice_spacing), 6)
    for keyword in _TYPE2_ATTRIBUTES:  # required to be present, may be empty
        if keyword not in ds:
            setattr(ds, keyword, None)
    return ds


def write_dicom_seg(mask: Volume, source: Volume, path: str | Path) -> Path:
    """Write `mask` (0 background, 1 right lung, 2 left lung on `source`'s grid) as DICOM SEG.

    `source` must have been read from DICOM (it carries meta["dicom_files"]). The SEG is
    BINARY with segments 1 "Right lung" and 2 "Left lung" (SNOMED CT 3341006, 44029006),
    references the source series, and is written atomically. Returns the path written.

    Raises `InputError` if `source` is not a DICOM series, `GeometryError` if the mask is
    not on its grid, `LabelError` for values other than 0, 1, 2, and `SegUnavailable` when
    the source files cannot make a correct SEG (e.g. StudyInstanceUID varies between them).
    """
    import highdicom as hd
    import pydicom

    __version__ = _version()

    path = Path(path)
    files = source.meta.get("dicom_files")
    if not files:
        raise InputError("DICOM SEG needs a DICOM source series (this image was read from "
                         f"{source.meta.get('format', 'another format')})", source.meta.get("path"))
    check_same_grid(mask, source, "mask and source DICOM series", path)
    labels = check_labels(mask.array, "DICOM SEG mask", path)
    if source.meta.get("multiframe"):
        return _write_multiframe_seg(hd, labels, source, files, path, __version__)
    inv = np.linalg.inv(source.affine)
    series_uid = source.meta.get("series_uid") or hd.UID()
    study_uid = source.meta.get("study_uid") or hd.UID()
    datasets, ks = [], []
    headers = source.meta.get("dicom_headers")
    if headers is None or len(headers) != len(files):  # an image not from `read_dicom_series`
        headers = [pydicom.dcmread(f, force=True, stop_before_pixels=True) for f in files]
    for f, header in zip(files, headers, strict=True):
        ds = _repair(header, series_uid, study_uid, float(source.spacing[2]))
        lps = np.asarray(ds.ImagePositionPatient, dtype=np.float64)
        k_float = (inv @ LPS_TO_RAS @ np.append(lps, 1.0))[2]
        k = int(round(k_float))
        if not 0 <= k < source.shape[2]:
            raise GeometryError(f"source slice {Path(f).name} lies outside the mask grid (k={k_float:.2f})",
                                path)
        datasets.append(ds)
        ks.append(k)
    pixel_array = _frames(labels, ks)
    studies = {str(ds.StudyInstanceUID) for ds in datasets}
    if len(studies) > 1:
        raise SegUnavailable(f"the source slices carry {len(studies)} different StudyInstanceUIDs "
                             "(anonymised per file?); a SEG must reference one study", path)
    return _save(hd, datasets, pixel_array, __version__, path, "series")


def _save(hd, datasets, pixel_array, __version__, path: Path, what: str) -> Path:
    """The SEG made (`_segmentation`) and written atomically; highdicom's refusal of the source
    is a `SegUnavailable` naming `what` ("series", "image")."""
    try:
        seg = _segmentation(hd, datasets, pixel_array, datasets[0], __version__)
    except (ValueError, AttributeError, TypeError, KeyError) as exc:  # highdicom's checks of the source
        reason = " ".join(str(exc).split())[:200]
        raise SegUnavailable(f"the source {what} cannot make a valid SEG ({type(exc).__name__}: {reason})",
                             path) from None
    with atomic_path(path) as tmp:
        seg.save_as(tmp)
    return path


def _write_multiframe_seg(hd, labels: np.ndarray, source: Volume, files, path: Path, __version__) -> Path:
    """The SEG of an enhanced multi-frame source: the mask goes in as a highdicom `Volume` (its
    LPS affine over (slice, row, column)), and highdicom matches its frames to the source's by
    position. A series split over several multi-frame files gets none (highdicom takes one)."""
    import pydicom

    if len(files) > 1:
        raise SegUnavailable(f"the source series is split over {len(files)} multi-frame files; "
                             "a SEG is made for one", path)
    header = pydicom.dcmread(files[0], force=True, stop_before_pixels=True)
    lps = (LPS_TO_RAS @ np.asarray(source.affine, float))[:, [2, 1, 0, 3]]
    volume = hd.Volume(np.ascontiguousarray(np.transpose(labels, (2, 1, 0)).astype(np.uint8)), lps,
                       coordinate_system="PATIENT")
    return _save(hd, [header], volume, __version__, path, "image")


def _frames(labels: np.ndarray, ks: list[int]) -> np.ndarray:
    """`labels[:, :, k].T` (uint8, (i, j) -> (rows, cols)) for each k in `ks`, stacked: a
    Fortran-ordered uint8 mask (as the batch makes for the NIfTI file) already is these frames
    (a view); otherwise the transposition a few i-rows at a time stays in cache (~2x faster
    than slice by slice)."""
    if labels.dtype == np.uint8 and labels.flags.f_contiguous:
        out = labels.T
    else:
        out = np.empty((labels.shape[2], labels.shape[1], labels.shape[0]), np.uint8)
        for i0 in range(0, labels.shape[0], 8):
            out[:, :, i0:i0 + 8] = labels[i0:i0 + 8].transpose(2, 1, 0)
    return out if ks == list(range(labels.shape[2])) else out[ks]


def warm_up() -> None:
    """Import highdicom and load the standard's tables it checks every SEG against (~0.4 s,
    once per process): a batch runs this beside the segmentation of a DICOM input, so its
    SEG does not wait for it. Harmless when highdicom's internals differ."""
    import highdicom  # noqa: F401

    try:
        from highdicom import _standard_utils as standard

        standard.get_module_attribute_map()
        standard.get_iod_module_map()
        standard.get_sop_class_iod_map()
    except Exception:  # a private helper of highdicom's: only an optimisation
        pass


def _segmentation(hd, datasets, pixel_array, first, __version__):
    return hd.seg.Segmentation(
        source_images=datasets,
        pixel_array=pixel_array,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=_segment_descriptions(__version__),
        series_instance_uid=hd.UID(),
        series_number=int(first.get("SeriesNumber", 0) or 0) + 1000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="lungseg",
        manufacturer_model_name="lungseg",
        software_versions=__version__,
        device_serial_number="0",
        series_description="lungseg lungs",
        omit_empty_frames=False,
    )
