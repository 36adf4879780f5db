"""MetaImage (.mha, .mhd + .raw) and NRRD (.nrrd, .seg.nrrd) through SimpleITK.

ITK stores geometry in LPS: physical = origin + direction @ diag(spacing) @ (i, j, k).
lungseg's affine is RAS, so the first two rows (x, y) change sign both ways. SimpleITK
arrays are indexed (k, j, i); they are transposed to (i, j, k) on read and back on write.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lungseg.core.errors import InputError, OutputError
from lungseg.core.geometry import lps_to_ras


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


def read_itk(path: Path, fmt: str) -> tuple[np.ndarray, np.ndarray]:
    """Read an .mha/.mhd/.nrrd file; raise `InputError` naming the problem."""
    import SimpleITK as sitk

    if path.suffix.lower() == ".mhd":
        _check_mhd_data_file(path)
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        detail = str(exc).strip().splitlines()
        reason = next((ln.strip() for ln in reversed(detail) if ln.strip()), "unknown error")
        raise InputError(f"not a readable {fmt} file ({reason[:200]})", path) from None
    try:
        return image_to_array_affine(img)
    except ValueError as exc:
        raise InputError(str(exc), path) from None


def _check_mhd_data_file(path: Path) -> None:
    """A .mhd header names its voxel file; say which one is missing instead of ITK's trace."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise InputError(f"cannot read ({exc.strerror})", path) from None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "ElementDataFile":
            name = value.strip()
            if name.upper() != "LOCAL" and not name.upper().startswith("LIST") and "%" not in name:
                data = path.parent / name
                if not data.exists():
                    raise InputError(f"MetaImage header names voxel file {name}, which is missing", path)
            return
    raise InputError("MetaImage header has no ElementDataFile line", path)


def write_itk(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """Write through SimpleITK (format from the suffix); compressed where the format allows."""
    import SimpleITK as sitk

    img = array_affine_to_image(array, affine)
    try:
        sitk.WriteImage(img, str(path), useCompression=True)
    except RuntimeError as exc:
        raise OutputError(f"cannot write ({str(exc).strip().splitlines()[-1][:200]})", path) from None
