"""Volumes with geometry attached: one `read_volume` / `write_volume` pair for every format.

Convention (nibabel's): `Volume.array` is indexed (i, j, k) in stored order and
`Volume.affine` maps voxel indices to RAS+ millimetres. Every format is converted to this
on read and back on write, so a mask written for an input lies on exactly its grid.

See `lungseg.core.volume` for the convention (RAS+: the RIGHT lung, label 1, has the
LARGER world x; DICOM/ITK LPS coordinates are the same points with x and y negated).

Formats (see docs/formats.md): NIfTI (.nii, .nii.gz), a DICOM series (a folder, or any file
of the series), MetaImage (.mha, .mhd + .raw), NRRD (.nrrd, .seg.nrrd).

>>> import numpy as np, tempfile, pathlib
>>> vol = Volume(np.zeros((4, 5, 6), np.int16), np.diag([0.8, 0.8, 2.0, 1.0]))
>>> path = write_volume(vol, pathlib.Path(tempfile.mkdtemp()) / "ct.nrrd")
>>> back = read_volume(path)
>>> back.shape, back.meta["format"], np.allclose(back.affine, vol.affine)
((4, 5, 6), 'nrrd', True)
"""

from __future__ import annotations

import gzip
import warnings
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from isal import igzip, isal_zlib

from lungseg.core.errors import InputError, LungsegWarning, OutputError
from lungseg.core.volume import Volume
from lungseg.io.formats import WRITE_SUFFIXES, format_of, is_dicom_file, sniff
from lungseg.io.limits import check_declared_size, require_regular_file
from lungseg.io.safety import atomic_folder, atomic_path

__all__ = ["Volume", "fortran_order", "nifti_bytes", "output_path", "probe_volume", "read_volume", "write_volume"]


def read_volume(path: str | Path, series_uid: str | None = None) -> Volume:
    """Read a 3D image with its geometry (RAS affine) from any supported format.

    `path` is a NIfTI/NRRD/MetaImage file, a DICOM series folder, or one file of a DICOM
    series (then its folder is read, keeping that file's series unless `series_uid` is given).
    `series_uid` picks one series where a folder holds several (default: the CT series with
    the most slices). Raises `InputError` for anything that is not one readable 3D volume.

    meta: {"path", "format"} plus, for DICOM, "series_uid", "study_uid", "dicom_files".
    """
    path = Path(path).expanduser()
    fmt = _preflight(path)
    if fmt == "dicom":
        from lungseg.io.dicom import read_dicom_series

        return read_dicom_series(path, series_uid=series_uid)
    if fmt == "nifti":
        array, affine = _read_nifti(path)
    else:
        from lungseg.io.itk import read_itk

        array, affine = read_itk(path, {"nrrd": "NRRD", "mha": "MetaImage"}[fmt])
    if array.ndim == 2:  # one axial slice stored as a 2D image: a volume one slice deep
        array, affine = _one_slice(array, affine, path)
    _require_3d(array, path)
    return Volume(_c_order(array), affine, {"path": str(path), "format": fmt})


def _c_order(array: np.ndarray, slab: int = 8) -> np.ndarray:
    """The voxels in C order (same values and indexing), copied slab by slab.

    NIfTI and ITK files store x fastest, so their arrays come back Fortran-ordered, while the
    methods (the DICOM reader's arrays, every mask they make, the resampling's gathers along
    the first axis) work in C order: mixing the two made whole-volume steps several times
    slower. numpy's own copy (`np.ascontiguousarray`) transposes with a 300-slice stride and
    takes ~1 s for 512x512x300; a few slices at a time stay in cache (~0.15 s).
    """
    if array.ndim != 3 or array.flags.c_contiguous or not array.flags.f_contiguous:
        return array
    out = np.empty(array.shape, array.dtype)
    for k in range(0, array.shape[2], slab):
        out[:, :, k:k + slab] = array[:, :, k:k + slab]
    return out


def _preflight(path: Path) -> str:
    """File-level checks before any reader runs; returns the format."""
    if not path.exists():
        raise InputError("no such file or folder", path)
    require_regular_file(path)  # a FIFO or /dev/zero would block or never end
    fmt = format_of(path)
    if path.is_file():
        if path.stat().st_size == 0:
            raise InputError("empty file (0 bytes)", path)
        what = sniff(path)
        if what is not None:
            raise InputError(f"is {what}, not a 3D medical image (NIfTI, NRRD, MetaImage or DICOM)", path)
    if fmt is None and path.is_file():
        if path.suffix.lower() == ".raw":
            raise InputError("a .raw file holds voxels only; read its .mhd header instead", path)
        if is_dicom_file(path):
            fmt = "dicom"
        else:
            raise InputError(
                "unsupported format (expected .nii, .nii.gz, .nrrd, .mha, .mhd, "
                "or a DICOM file or folder)",
                path,
            )
    return fmt


def probe_volume(path: str | Path) -> None:
    """Every check `read_volume` can make without reading voxels (cheap; no torch, no arrays).

    Refuses a missing path, a FIFO or device, an empty or non-image file, an unknown format
    and a header declaring more voxels than the file can hold (`io.limits`). DICOM series
    are only checked at the file level here.
    """
    path = Path(path).expanduser()
    fmt = _preflight(path)
    if fmt == "nifti":
        _nifti_header(path)
    elif fmt != "dicom":
        from lungseg.io.itk import probe_itk

        probe_itk(path, {"nrrd": "NRRD", "mha": "MetaImage"}[fmt])


def _nifti_header(path: Path):
    """nibabel image (lazy: header only), after the declared size was checked against the file."""
    is_gz = path.name.lower().endswith(".gz")
    try:
        img = nib.load(str(path))
        header = img.header
        # the header alone says how many bytes the voxels take: refuse a bomb before reading
        check_declared_size(path, img.shape, header.get_data_dtype().itemsize,
                            data_bytes=path.stat().st_size - (0 if is_gz else int(header.get_data_offset())),
                            compression="deflate" if is_gz else None)
    except InputError:
        raise
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        what = "truncated or corrupt gzip file" if is_gz else "truncated file"
        raise InputError(f"{what} ({type(exc).__name__}: {exc}); was the download or copy complete?",
                         path) from None
    except Exception as exc:  # nibabel raises many kinds
        msg = " ".join(str(exc).split())
        raise InputError(f"not a readable NIfTI file ({type(exc).__name__}: {msg[:200]})", path) from None
    return img


def _one_slice(array: np.ndarray, affine: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A 2D image as one slice of a volume: the affine's third column is kept where the header
    gives one (NIfTI's slice thickness), else the in-plane normal at 1 mm, with a warning (the
    slice's lung volumes in mL then assume 1 mm)."""
    affine = np.array(affine, dtype=np.float64)
    if np.linalg.norm(affine[:3, 2]) < 1e-6 or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        normal = np.cross(affine[:3, 0], affine[:3, 1])
        if np.linalg.norm(normal) < 1e-9:
            raise InputError("2D image without a usable in-plane geometry (pixel axes)", path)
        affine[:3, 2] = normal / np.linalg.norm(normal)
        warnings.warn(f"{path}: a 2D image with no slice thickness; read as one slice 1 mm thick "
                      "(lung volumes in mL assume it)", LungsegWarning, stacklevel=3)
    return array[:, :, None], affine


def _require_3d(array: np.ndarray, path: Path) -> None:
    if array.ndim != 3:
        kind = {2: "a 2D picture", 4: "a 4D series (time points or channels)"}.get(
            array.ndim, f"{array.ndim}D")
        raise InputError(
            f"expected one 3D volume, got {kind} with shape {array.shape}"
            + ("; extract one 3D volume first" if array.ndim > 3 else ""),
            path,
        )
    if sorted(array.shape)[1] < 2:  # one slice (a 3D file with one axial slice) is a valid CT
        raise InputError(f"expected a 3D volume, got a line of voxels (shape {array.shape})", path)


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    is_gz = path.name.lower().endswith(".gz")
    img = _nifti_header(path)
    try:
        if is_gz:  # ISA-L's inflate (python-isal): the same bytes in ~60 % of zlib's time
            with igzip.open(path, "rb") as f:
                fast = type(img).from_file_map(type(img).make_file_map({"image": f, "header": f}))
                array = np.asanyarray(fast.dataobj)
        else:
            array = np.asanyarray(img.dataobj)
    except (EOFError, zlib.error, gzip.BadGzipFile, isal_zlib.error) as exc:
        what = "truncated or corrupt gzip file" if is_gz else "truncated file"
        raise InputError(f"{what} ({type(exc).__name__}: {exc}); was the download or copy complete?",
                         path) from None
    except InputError:
        raise
    except MemoryError:
        raise InputError("not enough memory to read the voxels", path) from None
    except Exception as exc:  # nibabel raises many kinds
        msg = " ".join(str(exc).split())
        if "truncated" in msg.lower() or "buffer" in msg.lower() or "cannot reshape" in msg.lower():
            raise InputError(f"truncated file ({msg[:200]})", path) from None
        raise InputError(f"not a readable NIfTI file ({type(exc).__name__}: {msg[:200]})", path) from None
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    affine = np.asarray(img.affine, dtype=np.float64)
    header = img.header
    if int(header.get("qform_code", 1)) == 0 and int(header.get("sform_code", 1)) == 0:
        codes = "".join(nib.aff2axcodes(affine))
        warnings.warn(f"{path}: NIfTI header has neither qform nor sform (no orientation); assuming "
                      f"{codes} axes with the stored voxel sizes (nibabel's fallback), so right and left "
                      "may be swapped: check the file's origin", LungsegWarning, stacklevel=3)
    return array, affine


def output_path(path: str | Path) -> Path:
    """The file `write_volume` writes for `path`: itself, or with `.nii.gz` appended.

    >>> output_path("masks/case1").name, output_path("case1.mha").name
    ('case1.nii.gz', 'case1.mha')
    """
    path = Path(path).expanduser()
    if not path.name.lower().endswith(WRITE_SUFFIXES):
        path = path.with_name(path.name + ".nii.gz")
    return path


def fortran_order(array: np.ndarray, slab: int = 16) -> np.ndarray:
    """The voxels in Fortran order (NIfTI's on-disk order; for (i, j, k) also the DICOM SEG's
    frames, k by k), copied a few i-rows at a time: ~2.5x faster than `np.asfortranarray`."""
    if array.ndim != 3 or array.flags.f_contiguous:
        return array
    out = np.empty(array.shape, array.dtype, order="F")
    for i in range(0, array.shape[0], slab):
        out[i:i + slab] = array[i:i + slab]
    return out


def nifti_bytes(volume: Volume, gz: bool = True) -> bytes:
    """The NIfTI-1 file of `volume` (bool as uint8; qform and sform set), gzip-compressed
    with ISA-L's deflate at its fastest level when `gz`. Pure work on an array: a mask's file
    can be encoded in a thread while other work runs (the copy to NIfTI's Fortran order and
    the deflate release the GIL), then written with `write_volume(..., data=...)`."""
    array = np.asarray(volume.array)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    affine = np.asarray(volume.affine, dtype=np.float64)
    img = nib.Nifti1Image(fortran_order(array), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    raw = img.to_bytes()
    return igzip.compress(raw, compresslevel=1) if gz else raw


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def write_volume(volume: Volume, path: str | Path, overwrite: bool = True, data: bytes | None = None) -> Path:
    """Write `volume` with its geometry; the format follows the suffix (default NIfTI).

    Suffixes: .nii.gz, .nii, .nrrd, .mha, .mhd (+ .raw). A path without a known suffix
    gets `.nii.gz` appended. The write is atomic: nothing half-written is ever left at
    `path`. Returns the path written. Raises `OutputError` if the file cannot be written, or
    (with `overwrite=False`) if `path` exists when the finished file is moved there.
    `data`: the file's bytes already encoded by `nifti_bytes` (NIfTI paths only).
    """
    path = output_path(path)
    name = path.name.lower()
    array = np.asarray(volume.array)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    affine = np.asarray(volume.affine, dtype=np.float64)
    try:
        if format_of(path) == "nifti":
            if data is None:
                data = nifti_bytes(Volume(array, affine), gz=name.endswith(".gz"))
            with atomic_path(path, overwrite) as tmp:
                _write_bytes(tmp, data)
        elif name.endswith(".mhd"):
            from lungseg.io.itk import write_itk

            with atomic_folder(path, overwrite) as tmpdir:
                write_itk(array, affine, tmpdir / path.name)
        else:
            from lungseg.io.itk import write_itk

            with atomic_path(path, overwrite) as tmp:
                write_itk(array, affine, tmp)
    except OSError as exc:
        raise OutputError(f"cannot write ({exc.strerror or exc})", path) from None
    return path
