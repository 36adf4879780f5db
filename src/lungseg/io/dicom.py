"""DICOM series → `Volume`: series choice, slice order, HU rescale, padding, spacing checks.

Geometry (DICOM PS3.3 C.7.6.2): ImageOrientationPatient gives the row direction r (along
which the column index grows) and the column direction c; PixelSpacing is (between rows,
between columns). lungseg's i runs along r (columns), j along c (rows), k along the slice
normal r × c, so the LPS affine is [r·Δcol, c·Δrow, slice step, first position]; the first
two rows then flip sign for RAS. Slices are sorted by ImagePositionPatient · normal.

>>> # read_dicom_series("CT_folder/")  -> Volume with meta["series_uid"], meta["dicom_files"]
"""

from __future__ import annotations

import io
import warnings
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from lungseg.core.errors import InputError, LungsegWarning
from lungseg.core.geometry import lps_to_ras
from lungseg.core.volume import Volume
from lungseg.io.formats import VOLUME_SUFFIXES, is_dicom_file

#: Stored values at or below this HU are scanner padding outside the field of view.
PADDING_HU = -1500.0
#: DICOM objects that are no image to segment (Modality -> what the error calls them): a SEG's
#: frames look like an enhanced multi-frame image, and would be read as one
NOT_IMAGES = {"SEG": "DICOM SEG segmentation(s)", "RTSTRUCT": "RT structure set(s)", "SR": "structured report(s)",
              "PR": "presentation state(s)", "KO": "key object selection(s)", "RTPLAN": "RT plan(s)",
              "RTDOSE": "RT dose file(s)", "REG": "registration(s)"}
#: files read ahead of the parser (their bytes wait in memory)
READ_AHEAD = 16
AIR_FILL_HU = -1024  # value written where the scanner padded (outside the field of view)


@dataclass
class Series:
    """One series found in a folder: its UID, what it is, and its image files."""

    uid: str
    modality: str
    description: str
    files: list[Path] = field(default_factory=list)
    headers: list = field(default_factory=list)
    #: frames of an enhanced multi-frame file (its one file holds the whole series); 0 otherwise
    frames: int = 0

    @property
    def n_slices(self) -> int:
        return self.frames or len(self.files)

    def describe(self) -> str:
        desc = f" '{self.description}'" if self.description else ""
        kind = ", enhanced multi-frame" if self.frames else ""
        return f"{self.uid} ({self.modality or 'no modality'}{desc}, {self.n_slices} slices{kind})"


def is_enhanced_image(ds) -> bool:
    """An enhanced (or legacy-converted enhanced) multi-frame image: frames that carry their own
    geometry (per-frame and shared functional groups), so one file can be a whole series."""
    return (int(ds.get("NumberOfFrames", 1) or 1) > 1 and "PerFrameFunctionalGroupsSequence" in ds
            and "SharedFunctionalGroupsSequence" in ds)


def _stand_in_uid(folder: Path, ds) -> str:
    """A stable UID for a series whose SeriesInstanceUID was blanked (e.g. by an anonymiser)."""
    from pydicom.uid import generate_uid

    key = [str(folder.resolve()), str(ds.get("SeriesNumber", "")), str(ds.get("FrameOfReferenceUID", ""))]
    return generate_uid(entropy_srcs=key)


def list_series(folder: str | Path) -> list[Series]:
    """All image series (files with position and orientation) under `folder`, largest first."""
    folder = Path(folder)
    groups: dict[str, Series] = {}
    multiframe = 0
    derived: Counter = Counter()  # segmentations, structure sets, reports: not images to segment
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        if not is_dicom_file(f):
            continue
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, force=True)
        except Exception:
            continue
        modality = str(ds.get("Modality", "") or "")
        if modality.upper() in NOT_IMAGES:
            derived[NOT_IMAGES[modality.upper()]] += 1
            continue
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if frames > 1 and not is_enhanced_image(ds):
            multiframe += 1
            continue
        if frames == 1 and ("ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds
                            or "Rows" not in ds
                            or "LOCALIZER" in [str(v).upper() for v in ds.get("ImageType", [])]):
            continue
        uid = str(ds.get("SeriesInstanceUID", "") or "") or _stand_in_uid(folder, ds)
        # an enhanced image holds the series in one file, or in a few (some scanners split a
        # series into instances of so many frames each): grouped apart from single frames
        s = groups.setdefault(f"{uid} (multi-frame)" if frames > 1 else uid,
                              Series(uid, modality, str(ds.get("SeriesDescription", "") or "")))
        s.files.append(f)
        s.headers.append(ds)
        if frames > 1:
            s.frames += frames
    if not groups:
        extra = (f"; {multiframe} multi-frame file(s) without per-frame geometry found, which "
                 "lungseg does not read (convert to NIfTI with dcm2niix)") if multiframe else ""
        volumes = sorted(p.name for p in folder.iterdir()
                         if p.name.lower().endswith(VOLUME_SUFFIXES))
        if volumes and not extra:
            extra = f"; it holds {', '.join(volumes[:3])}: pass one of these files instead"
        if derived and not extra:
            extra = "; it holds " + ", ".join(f"{n} {kind}" for kind, n in sorted(derived.items())) + \
                ", not a CT: pass the CT series' folder"
        raise InputError(f"no DICOM image slices found in this folder{extra}", folder)
    return sorted(groups.values(), key=lambda s: -s.n_slices)


def _choose_series(folder: Path, series: list[Series], series_uid: str | None,
                   from_file: Path | None) -> Series:
    by_uid = {s.uid: s for s in series}
    if series_uid is not None:
        if series_uid not in by_uid:
            listing = "; ".join(s.describe() for s in series)
            raise InputError(f"series UID {series_uid} not found; series here: {listing}", folder)
        return by_uid[series_uid]
    if from_file is not None:
        for s in series:
            if from_file in s.files:
                return s
    ct = [s for s in series if s.modality.upper() in ("CT", "")] or series
    chosen = max(ct, key=lambda s: s.n_slices)
    if len(series) > 1:
        others = "; ".join(s.describe() for s in series if s is not chosen)
        warnings.warn(f"{folder}: {len(series)} series; using {chosen.describe()}; others: {others}"
                      " (choose one with --series UID)", LungsegWarning, stacklevel=3)
    return chosen


def _keep_main_orientation(series: Series) -> tuple[list[Path], list]:
    keys = [tuple(np.round(np.asarray(h.ImageOrientationPatient, float), 4)) for h in series.headers]
    counts = Counter(keys)
    main, n = counts.most_common(1)[0]
    if len(counts) > 1:
        warnings.warn(f"series {series.uid}: {len(keys) - n} slice(s) with another orientation ignored",
                      LungsegWarning, stacklevel=3)
    pairs = [(f, h) for f, h, k in zip(series.files, series.headers, keys, strict=True) if k == main]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _orientation(header, uid: str, folder: Path) -> np.ndarray:
    """ImageOrientationPatient as 6 floats: two unit vectors at right angles (within 2 %), or
    an `InputError` (all zeros, as some converters write, gives no slice direction)."""
    try:
        iop = np.asarray([float(v) for v in header.ImageOrientationPatient], dtype=np.float64)
    except (TypeError, ValueError):
        iop = np.zeros(0)
    r, c = (iop[:3], iop[3:]) if iop.size == 6 else (np.zeros(3), np.zeros(3))
    if not (iop.size == 6 and np.all(np.isfinite(iop)) and abs(np.linalg.norm(r) - 1) < 0.02
            and abs(np.linalg.norm(c) - 1) < 0.02 and abs(float(r @ c)) < 0.02):
        shown = ", ".join(f"{v:g}" for v in iop) if iop.size else str(header.get("ImageOrientationPatient"))
        raise InputError(f"series {uid}: ImageOrientationPatient [{shown}] is not two perpendicular unit "
                         "vectors, so the slice orientation is unknown (corrupt or anonymised header?)", folder)
    return iop


def _pixels(path: Path, data: bytes) -> tuple[np.ndarray, pydicom.Dataset]:
    """The stored pixels and the header of one slice from its file's bytes (`path` names it
    in errors)."""
    ds = None
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        if "TransferSyntaxUID" not in ds.file_meta:
            implicit, little = getattr(ds, "original_encoding", (True, True))
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
        if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
            raise InputError("colour (RGB) DICOM image; a CT slice has one sample per pixel", path)
        return ds.pixel_array, ds
    except InputError:
        raise
    except Exception as exc:
        stored = _stored_by_gdcm(path, ds)
        if stored is not None:
            return stored, ds
        raise InputError(f"cannot decode DICOM pixel data ({type(exc).__name__}: {str(exc)[:200]})",
                         path) from None


def _stored_by_gdcm(path: Path, ds) -> np.ndarray | None:
    """A compressed slice that pydicom has no decoder for, decoded by GDCM (through SimpleITK):
    the stored values, or None.

    Why: JPEG Lossless (Process 14, 1.2.840.10008.1.2.4.70), the commonest lossless syntax in
    PACS exports, needs pylibjpeg-libjpeg or python-gdcm in pydicom; SimpleITK, a dependency
    already, carries GDCM. GDCM applies the rescale, which is undone here so that `_to_hu` sees
    what pydicom would have given (its padding test is on stored values)."""
    if ds is None or "PixelData" not in ds or not ds.file_meta.TransferSyntaxUID.is_compressed:
        return None
    px = _gdcm_pixels(path)
    if px is None or px.size != int(ds.Rows) * int(ds.Columns):
        return None
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    return np.rint((px.reshape(int(ds.Rows), int(ds.Columns)).astype(np.float64) - intercept) / slope).astype(np.int32)


def _gdcm_pixels(path: Path) -> np.ndarray | None:
    """The pixels of one DICOM file as GDCM (inside SimpleITK) decodes them (rescaled), or None."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(str(path))
    try:
        return sitk.GetArrayFromImage(reader.Execute())
    except RuntimeError:
        return None


def _frames_decoded_by_gdcm(f: Path) -> pydicom.Dataset | None:
    """An enhanced multi-frame file whose compressed frames pydicom cannot decode (JPEG Lossless,
    as for single slices: `_stored_by_gdcm`), with its frames decoded by GDCM and stored
    uncompressed in memory, for highdicom to read as any other; None where that fails.

    Each frame is decoded alone, wrapped as a one-frame image with no rescale, so that GDCM gives
    the stored values whatever the frames' own rescale (highdicom applies that, frame by frame)."""
    import tempfile

    from pydicom.dataset import FileMetaDataset
    from pydicom.encaps import encapsulate, generate_frames
    from pydicom.uid import CTImageStorage, generate_uid

    try:
        ds = pydicom.dcmread(f)
        syntax = ds.file_meta.TransferSyntaxUID
        if not syntax.is_compressed or int(ds.get("SamplesPerPixel", 1) or 1) != 1:
            return None
        n = int(ds.NumberOfFrames)
        rows, cols, bits = int(ds.Rows), int(ds.Columns), int(ds.BitsAllocated)
        signed = int(ds.get("PixelRepresentation", 0)) == 1
        dtype = np.dtype(f"{'i' if signed else 'u'}{bits // 8}")
        frames = np.empty((n, rows, cols), dtype)
        # one single-frame image, its Pixel Data swapped for each frame's
        frame = Dataset()
        frame.file_meta = FileMetaDataset()
        frame.file_meta.TransferSyntaxUID = syntax
        frame.file_meta.MediaStorageSOPClassUID = CTImageStorage
        frame.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        frame.SOPClassUID, frame.SOPInstanceUID = CTImageStorage, frame.file_meta.MediaStorageSOPInstanceUID
        for key in ("Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
                    "SamplesPerPixel", "PhotometricInterpretation"):
            setattr(frame, key, ds[key].value)
        frame.RescaleSlope, frame.RescaleIntercept = 1, 0
        with tempfile.TemporaryDirectory(prefix="lungseg-frames-") as tmp:
            one = Path(tmp) / "frame.dcm"
            for i, data in enumerate(generate_frames(ds.PixelData, number_of_frames=n)):
                frame.PixelData = encapsulate([data])
                frame["PixelData"].VR = "OB"
                frame.save_as(one, enforce_file_format=True)
                px = _gdcm_pixels(one)
                if px is None or px.size != rows * cols:
                    return None
                frames[i] = px.reshape(rows, cols)
        ds.PixelData = frames.tobytes()
        ds["PixelData"].VR = "OW"
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        return ds
    except Exception:
        return None


def _file_bytes(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the DICOM file ({exc.strerror or exc})", path) from None


def _to_hu(stored: np.ndarray, ds) -> np.ndarray:
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    hu = stored.astype(np.float64) * slope + intercept
    pad = ds.get("PixelPaddingValue")
    if pad is not None:
        bits = int(ds.get("BitsAllocated", 16))
        pad = int(pad)
        if int(ds.get("PixelRepresentation", 0)) == 1 and pad >= 2 ** (bits - 1):
            pad -= 2**bits
        limit = ds.get("PixelPaddingRangeLimit")
        if limit is not None:
            lo, hi = sorted((pad, int(limit)))
            hu[(stored >= lo) & (stored <= hi)] = AIR_FILL_HU
        else:
            hu[stored == pad] = AIR_FILL_HU
    return _padding_to_air(hu, ds.get("Modality", "CT"))


def _padding_to_air(hu: np.ndarray, modality) -> np.ndarray:
    """A CT's scanner padding (at or below `PADDING_HU`) set to air, in place."""
    if str(modality or "").upper() in ("CT", ""):
        hu[hu <= PADDING_HU] = AIR_FILL_HU
    return hu


def read_dicom_series(path: str | Path, series_uid: str | None = None) -> Volume:
    """Read one DICOM series from a folder (or the folder of one of its files) as a `Volume`.

    Picks `series_uid` if given, else the series of the given file, else the CT series with
    the most slices. Raises `InputError` for an unknown UID, a missing slice (a gap larger
    than 1.5 × the median spacing), slices at the same position, or inconsistent slices;
    resamples slightly non-uniform spacing to uniform with a `LungsegWarning`. A series of one
    slice is a volume one slice deep (its `SliceThickness`; refused without one).
    """
    path = Path(path)
    folder, from_file = (path, None) if path.is_dir() else (path.parent, path)
    if from_file is not None:
        try:
            modality = str(pydicom.dcmread(from_file, stop_before_pixels=True, force=True,
                                           specific_tags=["Modality"]).get("Modality", "") or "").upper()
        except Exception:
            modality = ""
        if modality in NOT_IMAGES:
            raise InputError(f"this file is a {NOT_IMAGES[modality].replace('(s)', '')} (Modality {modality}), "
                             "not a CT image to segment", from_file)
    series = _choose_series(folder, list_series(folder), series_uid, from_file)
    if series.frames:
        return _read_multiframe(path, folder, series)
    files, headers = _keep_main_orientation(series)
    iop = _orientation(headers[0], series.uid, folder)
    r, c = iop[:3], iop[3:]
    normal = np.cross(r, c)
    ipp = np.array([np.asarray(h.ImagePositionPatient, dtype=np.float64) for h in headers])
    if len(files) == 1:  # a single axial slice is a valid CT: its thickness places it in 3D
        return _single_slice(path, folder, series, files, headers[0], r, c, normal, ipp[0])
    order = np.argsort(ipp @ normal, kind="stable")
    files = [files[i] for i in order]
    ipp = ipp[order]
    pos = ipp @ normal
    steps = np.diff(pos)
    med = float(np.median(steps))
    if med <= 1e-6 or np.any(steps < 1e-3 * max(med, 1e-3)):
        dup = int(np.sum(steps < 1e-3 * max(med, 1e-3)))
        raise InputError(f"series {series.uid}: {dup} slice(s) share a position with another "
                         "(several volumes or acquisitions in one series?)", folder)
    big = np.nonzero(steps > 1.5 * med)[0]
    if big.size:
        b = int(big[0])
        raise InputError(
            f"missing slice: series {series.uid} has a gap of {steps[b]:.2f} mm between "
            f"{files[b].name} and {files[b + 1].name} (slice spacing {med:.2f} mm); "
            f"{big.size} gap(s) in all", folder)
    array, datasets = _read_pixels(files)
    d_row, d_col = _pixel_spacing(headers[0], series.uid, folder)
    tol = max(0.01, 0.01 * med)
    resampled = bool(np.any(np.abs(steps - med) > tol))
    if resampled:
        array = _resample_uniform(array.astype(np.float32, copy=False), pos, med).astype(np.float32)
        warnings.warn(f"{folder}: non-uniform slice spacing ({steps.min():.3f}–{steps.max():.3f} mm);"
                      f" resampled to uniform {(pos[-1] - pos[0]) / (array.shape[2] - 1):.3f} mm",
                      LungsegWarning, stacklevel=2)
    n = array.shape[2]
    return _volume(path, folder, series, files, array, datasets, r * d_col, c * d_row,
                   (ipp[-1] - ipp[0]) / (n - 1), ipp[0], resampled)


def _read_multiframe(path: Path, folder: Path, series: Series) -> Volume:
    """An enhanced multi-frame CT (Enhanced or Legacy Converted Enhanced CT Image Storage: the
    series in one file, or split over a few) as a `Volume`. highdicom reads each file: it sorts
    the frames by position, checks that they are evenly spaced and applies each frame's rescale;
    the files' stacks must then continue one another. Their (slice, row, column) LPS affine
    becomes lungseg's (column, row, slice) RAS one, k along the slice normal as for single
    frames; padding is air alike."""
    parts = sorted((_multiframe_stack(f) for f in series.files), key=lambda part: part[2])
    array, lps, _ = parts[0]
    for (prev, prev_lps, _), (nxt, nxt_lps, _) in zip(parts, parts[1:], strict=False):
        expected = prev_lps[:3, 3] + prev_lps[:3, 2] * prev.shape[2]
        if not (np.allclose(nxt_lps[:3, :3], lps[:3, :3], atol=1e-3 * float(np.abs(lps[:3, :3]).max()))
                and prev.shape[:2] == nxt.shape[:2]
                and np.linalg.norm(nxt_lps[:3, 3] - expected) < 0.5 * np.linalg.norm(lps[:3, 2])):
            raise InputError(f"series {series.uid} is split over {len(parts)} multi-frame files whose "
                             "slices do not continue one another (a gap, an overlap or another "
                             "grid); convert it with dcm2niix", folder)
    if len(parts) > 1:
        array = np.concatenate([part[0] for part in parts], axis=2)
    _padding_to_air(array, series.modality)
    if np.all(array == np.round(array)) and array.min() >= -32768 and array.max() <= 32767:
        array = array.astype(np.int16)
    return Volume(array, lps_to_ras(lps), {**_meta(path, folder, series, series.files, series.headers[0], False),
                                           "multiframe": True})


def _multiframe_stack(f: Path) -> tuple[np.ndarray, np.ndarray, float]:
    """One multi-frame file's stack: (HU as (i, j, k), its LPS affine with k along the slice
    normal, its first slice's position along that normal)."""
    import highdicom as hd

    try:
        try:
            volume = hd.imread(f).get_volume(dtype=np.float32)
        except Exception:
            decoded = _frames_decoded_by_gdcm(f)
            if decoded is None:
                raise
            volume = hd.Image.from_dataset(decoded, copy=False).get_volume(dtype=np.float32)
    except Exception as exc:
        raise InputError(f"cannot read this enhanced multi-frame image as a volume "
                         f"({type(exc).__name__}: {str(exc)[:200]})", f) from None
    array = np.asarray(volume.array)
    if array.ndim != 3:
        raise InputError(f"expected one sample per pixel, got frames of shape {array.shape[1:]}", f)
    array = np.ascontiguousarray(np.transpose(array, (2, 1, 0)))
    lps = np.asarray(volume.affine, float)[:, [2, 1, 0, 3]]
    normal = np.cross(lps[:3, 0], lps[:3, 1])
    if np.dot(lps[:3, 2], normal) < 0:  # k along the normal, as for single-frame slices
        array = np.ascontiguousarray(array[:, :, ::-1])
        lps[:3, 3] += lps[:3, 2] * (array.shape[2] - 1)
        lps[:3, 2] *= -1
    return array, lps, float(lps[:3, 3] @ normal / np.linalg.norm(normal))


def _single_slice(path: Path, folder: Path, series, files: list[Path], header, r, c, normal, ipp) -> Volume:
    """A one-slice series as a volume one slice deep, `SliceThickness` (else `SpacingBetweenSlices`)
    thick: what its lung volumes are measured with; refused without either."""
    thickness = 0.0
    for tag in ("SliceThickness", "SpacingBetweenSlices"):
        try:
            thickness = abs(float(header.get(tag) or 0.0))
        except (TypeError, ValueError):
            thickness = 0.0
        if thickness > 0:
            break
    if not thickness > 0:
        raise InputError(f"series {series.uid} has a single slice without SliceThickness; "
                         "cannot tell how thick it is", folder)
    d_row, d_col = _pixel_spacing(header, series.uid, folder)
    array, datasets = _read_pixels(files)
    return _volume(path, folder, series, files, array, datasets, r * d_col, c * d_row,
                   normal * thickness, ipp, False)


def _pixel_spacing(header, uid: str, folder: Path) -> tuple[float, float]:
    """(row, column) spacing in mm, or an `InputError` naming the series."""
    spacing = header.get("PixelSpacing") or header.get("ImagerPixelSpacing")
    if spacing is None:
        raise InputError(f"series {uid} has no PixelSpacing", folder)
    d_row, d_col = (float(v) for v in spacing)
    return d_row, d_col


def _volume(path: Path, folder: Path, series, files, array, datasets, col_step, row_step, slice_step,
            origin, resampled: bool) -> Volume:
    """The series' `Volume`: LPS steps along i (columns), j (rows) and k (slices) -> RAS affine."""
    lps = np.eye(4)
    lps[:3, 0] = col_step
    lps[:3, 1] = row_step
    lps[:3, 2] = slice_step
    lps[:3, 3] = origin
    affine = lps_to_ras(lps)
    # the slices' headers (pixel data dropped), in `dicom_files` order: the DICOM SEG writer
    # needs them and need not read 300 files again
    return Volume(array, affine, {**_meta(path, folder, series, files, datasets[0], resampled),
                                  "dicom_headers": datasets})


def _meta(path: Path, folder: Path, series: Series, files, first, resampled: bool) -> dict:
    """A DICOM volume's meta: where it came from (`first`: the first file's header)."""
    return {"path": str(path), "format": "dicom", "series_uid": series.uid,
            "study_uid": str(first.get("StudyInstanceUID", "") or "") or _stand_in_uid(folder, Dataset()),
            "modality": series.modality, "dicom_files": [str(f) for f in files], "resampled": resampled}


def _integral(ds) -> bool:
    return (float(ds.get("RescaleSlope", 1) or 1).is_integer()
            and float(ds.get("RescaleIntercept", 0) or 0).is_integer())


def _read_pixels(files: list[Path]) -> tuple[np.ndarray, list]:
    """The slices' HU stacked along k: int16 where every slice's rescale is integral and in
    range, else float32. A few threads read the files' bytes ahead (file reads free the GIL and
    overlap on a cold disk); this thread parses and decodes them, since pydicom holds the GIL:
    parsing on 4 threads made a cached 300-file series ~30 % slower, by contention alone, and
    slowed the work beside it. Each slice goes straight into the preallocated volume."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    array, datasets = None, []
    with ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as pool:
        ahead = deque(pool.submit(_file_bytes, f) for f in files[:READ_AHEAD])
        for k, f in enumerate(files):
            data = ahead.popleft().result()
            if k + READ_AHEAD < len(files):  # a few files ahead, not the whole series in memory
                ahead.append(pool.submit(_file_bytes, files[k + READ_AHEAD]))
            px, ds = _pixels(f, data)
            if px.ndim != 2:
                raise InputError(f"expected one 2D slice per file, got shape {px.shape}", f)
            if array is not None and px.shape[::-1] != array.shape[:2]:
                raise InputError(f"slice size {px.shape} differs from the series' {array.shape[1::-1]}", f)
            hu = _to_hu(px, ds).T  # (rows, cols) -> (i=col, j=row)
            if array is None:
                array = np.empty((*hu.shape, len(files)), np.int16)
            if array.dtype == np.int16 and not (_integral(ds) and hu.min() >= -32768 and hu.max() <= 32767):
                array = array.astype(np.float32)
            array[:, :, k] = hu
            del ds.PixelData  # the header stays (the DICOM SEG references it), not the pixels
            datasets.append(ds)
    return array, datasets


def _resample_uniform(array: np.ndarray, pos: np.ndarray, step: float) -> np.ndarray:
    """Linear interpolation along k from sorted positions `pos` to a uniform grid."""
    n = int(round((pos[-1] - pos[0]) / step)) + 1
    targets = np.linspace(pos[0], pos[-1], n)
    hi = np.clip(np.searchsorted(pos, targets, side="left"), 1, len(pos) - 1)
    lo = hi - 1
    w = ((targets - pos[lo]) / (pos[hi] - pos[lo]))[None, None, :]
    return array[:, :, lo] * (1 - w) + array[:, :, hi] * w
