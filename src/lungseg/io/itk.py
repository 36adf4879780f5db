"""MetaImage (.mha, .mhd + .raw) and NRRD (.nrrd, .seg.nrrd) through SimpleITK.

ITK stores geometry in LPS: physical = origin + direction @ diag(spacing) @ (i, j, k).
lungseg's affine is RAS, so the first two rows (x, y) change sign both ways. SimpleITK
arrays are indexed (k, j, i); they are transposed to (i, j, k) on read and back on write.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from lungseg.core.errors import InputError, OutputError
from lungseg.core.geometry import lps_to_ras
from lungseg.io.limits import check_declared_size

#: How far into a file a MetaImage/NRRD text header may reach.
MAX_HEADER_BYTES = 1 << 16


def image_to_array_affine(img) -> tuple[np.ndarray, np.ndarray]:
    """SimpleITK image → ((i, j, k) array, RAS affine). Also used for DICOM read by ITK."""
    import SimpleITK as sitk

    dim = img.GetDimension()
    array = sitk.GetArrayFromImage(img)
    if img.GetNumberOfComponentsPerPixel() > 1:
        raise ValueError(f"{img.GetNumberOfComponentsPerPixel()} components per voxel (vector/RGB image)")
    array = np.transpose(array, tuple(range(array.ndim))[::-1])
    spacing = np.array(img.GetSpacing(), dtype=np.float64)
    direction = np.array(img.GetDirection(), dtype=np.float64).reshape(dim, dim)
    origin = np.array(img.GetOrigin(), dtype=np.float64)
    if dim == 4 and array.shape[3] == 1:
        array, spacing, direction, origin = array[..., 0], spacing[:3], direction[:3, :3], origin[:3]
        dim = 3
    if dim == 2:  # one slice: its plane in 3D, no thickness (`volumes._one_slice` gives 1 mm)
        lps = np.eye(4)
        lps[:2, :2] = direction @ np.diag(spacing)
        lps[2, 2] = 0.0
        lps[:2, 3] = origin
        return array, lps_to_ras(lps)
    if dim != 3:
        raise ValueError(f"expected a 3D image, got {dim}D with shape {array.shape}")
    lps = np.eye(4)
    lps[:3, :3] = direction @ np.diag(spacing)
    lps[:3, 3] = origin
    return array, lps_to_ras(lps)


def array_affine_to_image(array: np.ndarray, affine: np.ndarray):
    """((i, j, k) array, RAS affine) → SimpleITK image in LPS."""
    import SimpleITK as sitk

    if array.dtype == bool:
        array = array.astype(np.uint8)
    elif array.dtype == np.float16:
        array = array.astype(np.float32)
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array, (2, 1, 0))), isVector=False)
    lps = lps_to_ras(affine)  # the flip is its own inverse
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    img.SetSpacing([float(s) for s in spacing])
    img.SetDirection([float(v) for v in (lps[:3, :3] / spacing).ravel()])
    img.SetOrigin([float(v) for v in lps[:3, 3]])
    return img


def probe_itk(path: Path, fmt: str) -> None:
    """The header checks of `read_itk`, without reading voxels."""
    _open_checked(path, fmt)


@contextmanager
def _native_stderr() -> Iterator[list[str]]:
    """Capture what ITK/MetaIO print straight to file descriptor 2 (they bypass Python), so a
    failed read says one line instead of leaking two or three; yields a list that receives
    the captured lines when the block ends."""
    captured: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable fd 2 (embedded interpreter)
        yield captured
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read(1 << 16).decode("utf-8", "replace")
            captured.extend(ln.strip() for ln in text.splitlines() if ln.strip())


def _open_checked(path: Path, fmt: str):
    """An ImageFileReader whose header was read and whose declared size fits the file."""
    import SimpleITK as sitk

    check_data_files(path)
    try:
        with _native_stderr() as said:
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            reader.ReadImageInformation()  # the header only: check sizes before any voxel is allocated
    except RuntimeError as exc:
        raise InputError(f"not a readable {fmt} file ({_itk_reason(exc, said)})", path) from None
    _check_header_size(path, reader)
    return reader


def _itk_reason(exc: Exception, said: list[str] | None = None) -> str:
    """ITK's multi-line exception text as one short line: what the reader printed itself
    (MetaIO's "data not read completely ...") when it did, else the exception's last line."""
    if said:
        return " ".join(" ".join(said[:2]).split())[:200]
    detail = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    reason = detail[-1] if detail else "unknown error"
    return " ".join(reason.split())[:200]


def read_itk(path: Path, fmt: str) -> tuple[np.ndarray, np.ndarray]:
    """Read an .mha/.mhd/.nrrd file; raise `InputError` naming the problem."""

    reader = _open_checked(path, fmt)
    try:
        with _native_stderr() as said:
            img = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"not a readable {fmt} file ({_itk_reason(exc, said)})", path) from None
    except MemoryError:
        raise InputError("not enough memory to read the voxels", path) from None
    try:
        return image_to_array_affine(img)
    except ValueError as exc:
        raise InputError(str(exc), path) from None


def _header_fields(path: Path) -> dict[str, str]:
    """Keys and values of a MetaImage (`Key = value`) or NRRD (`key: value`) text header."""
    with open(path, "rb") as f:
        head = f.read(MAX_HEADER_BYTES)
    fields: dict[str, str] = {}
    for raw in head.split(b"\n"):
        line = raw.decode("latin-1").strip()
        if path.suffix.lower() in (".nrrd", ".nhdr"):
            if not line:  # a blank line ends a NRRD header
                break
            key, sep, value = line.partition(":")
            if sep and not key.startswith("#"):
                fields[key.strip().lower().replace(" ", "")] = value.lstrip("=").strip()
        else:
            key, sep, value = line.partition("=")
            if sep:
                fields[key.strip().lower()] = value.strip()
            if key.strip() == "ElementDataFile":
                break
    return fields


def _storage(path: Path) -> tuple[int | None, str | None]:
    """(bytes of stored voxel data or None if unknown, compression) from the text header."""
    fields = _header_fields(path)
    if path.suffix.lower() in (".nrrd", ".nhdr"):
        encoding = fields.get("encoding", "raw").lower()
        compression = {"raw": None, "gzip": "deflate", "gz": "deflate"}.get(
            encoding, "text" if encoding in ("ascii", "text", "txt", "hex") else encoding)
        name = fields.get("datafile")
    else:
        compression = "deflate" if fields.get("compresseddata", "").lower() == "true" else None
        name = fields.get("elementdatafile")
    if name is None or name.upper() == "LOCAL":
        return path.stat().st_size, compression
    if name.upper().startswith("LIST") or "%" in name or " " in name:
        return None, compression
    data = path.parent / name
    return (data.stat().st_size if data.is_file() else None), compression


def _check_header_size(path: Path, reader) -> None:
    import SimpleITK as sitk

    size = list(reader.GetSize())
    comps = max(1, int(reader.GetNumberOfComponents()))
    try:
        itemsize = sitk.Image([1, 1], reader.GetPixelID(), comps).GetSizeOfPixelComponent() * comps
    except RuntimeError:
        itemsize = 1
    try:
        data_bytes, compression = _storage(path)
    except OSError as exc:
        raise InputError(f"cannot read ({exc.strerror})", path) from None
    if compression == "text":  # at least one character per value
        check_declared_size(path, size + [comps], 1, data_bytes=data_bytes)
        check_declared_size(path, size, itemsize, data_bytes=None)
    else:
        check_declared_size(path, size, itemsize, data_bytes=data_bytes, compression=compression)


def _data_file_names(path: Path) -> tuple[str | None, list[str]]:
    """(the header's data-file field, the file names it refers to) for MetaImage and NRRD."""
    with open(path, "rb") as f:
        text = f.read(MAX_HEADER_BYTES).decode("latin-1")
    lines = text.splitlines()
    nrrd = path.suffix.lower() in (".nrrd", ".nhdr")
    for i, line in enumerate(lines):
        if nrrd:
            if not line.strip():
                break
            key, sep, value = line.partition(":")
            key = key.strip().lower().replace(" ", "")
        else:
            key, sep, value = line.partition("=")
            key = key.strip().lower()
        if sep and key in ("elementdatafile", "datafile"):
            value = value.lstrip("=").strip()
            first = value.split()[0] if value.split() else ""
            if value.upper() == "LOCAL" or not value:
                return value, []
            if first.upper() == "LIST":  # one or more names per following line
                return value, [n for ln in lines[i + 1:] for n in ln.split()]
            if "%" in first:  # printf pattern + numbers: check the pattern's folder
                return value, [first.replace("%", "")]
            return value, [value]
    return None, []


def _inside(folder: Path, name: str) -> bool:
    """True when `name` (relative to `folder`, or absolute) lies in `folder` or below it."""
    full = Path(name) if Path(name).is_absolute() else folder / name
    base = os.path.normpath(folder.absolute())
    target = os.path.normpath(full.absolute())
    return os.path.commonpath([base, target]) == base


def check_data_files(path: Path) -> None:
    """A MetaImage/NRRD header may name its voxel file(s): they must lie beside the header or
    below it (a hostile `../../etc/passwd` or `/dev/zero` is refused), and exist."""
    try:
        field, names = _data_file_names(path)
    except OSError as exc:
        raise InputError(f"cannot read ({exc.strerror})", path) from None
    if field is None and path.suffix.lower() == ".mhd":
        raise InputError("MetaImage header has no ElementDataFile line", path)
    for name in names:
        if not _inside(path.parent, name):
            raise InputError(f"header names voxel file {name[:100]}, outside the header's folder "
                             "(data files must lie beside the header or below it)", path)
    if len(names) == 1 and names[0] == field:
        data = path.parent / field
        if not data.exists():
            raise InputError(f"header names voxel file {field[:100]}, which is missing", path)
        if not data.is_file():
            raise InputError(f"header names voxel file {field[:100]}, which is not a regular file", path)


def write_itk(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """Write through SimpleITK (format from the suffix); compressed where the format allows."""
    import SimpleITK as sitk

    img = array_affine_to_image(array, affine)
    try:
        sitk.WriteImage(img, str(path), useCompression=True)
    except RuntimeError as exc:
        raise OutputError(f"cannot write ({str(exc).strip().splitlines()[-1][:200]})", path) from None
