"""Input checks that turn silent garbage-in into a clear message before any work starts.

`check_image` asks "is this a CT volume in HU that fits in memory?"; `check_pair` asks "does
this label lie on this image's grid and hold something?". Both raise a `LungsegError` kind
naming the file and the problem, and return a list of softer warnings (also emitted as
`LungsegWarning`).

>>> import numpy as np
>>> ct = Volume(np.full((8, 8, 8), -1000, np.int16), np.eye(4)); ct.array[2:6, 2:6, 2:6] = 40
>>> check_image(ct)
[]
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from lungseg.core.errors import GeometryError, InputError, LabelError, LungsegWarning
from lungseg.core.geometry import check_same_grid
from lungseg.core.volume import Volume

MIN_SPACING_MM = 0.1
MAX_SPACING_MM = 20.0
#: Bytes of working memory per voxel a segmentation run needs (float32 copies, probabilities).
BYTES_PER_VOXEL = 32


def _memory_bytes() -> tuple[int | None, int | None]:
    """(total, available) physical memory from os.sysconf; None where unknown."""
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        total = os.sysconf("SC_PHYS_PAGES") * page
    except (ValueError, OSError, AttributeError):
        return None, None
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * page
    except (ValueError, OSError):
        avail = None
    return total, avail


def _sample(array: np.ndarray, max_voxels: int = 2_000_000) -> np.ndarray:
    step = max(1, int(np.ceil((array.size / max_voxels) ** (1 / 3))))
    return np.asarray(array[::step, ::step, ::step])


def check_image(vol: Volume, path: str | Path | None = None, *,
                bytes_per_voxel: int = BYTES_PER_VOXEL) -> list[str]:
    """Check that `vol` is a usable CT volume; return warnings, raise for errors.

    Raises `InputError` for NaN/inf voxels, a constant image, an 8-bit picture stack
    (uint8 0–255), intensities that are not CT HU (no air: min > -500 while max < 4096 —
    MR, a picture, or CT without its rescale intercept), or a volume too large for this
    machine's memory; `GeometryError` for a singular affine or spacing outside 0.1–20 mm.
    Scanner padding (-2048, -3024) is fine.
    """
    path = path if path is not None else vol.meta.get("path")
    out: list[str] = []
    a = vol.array
    det = np.linalg.det(vol.affine[:3, :3])
    if not np.all(np.isfinite(vol.affine)) or abs(det) < 1e-9:
        raise GeometryError("image affine is singular or not finite (no usable voxel geometry)", path)
    spacing = vol.spacing
    if min(spacing) < MIN_SPACING_MM or max(spacing) > MAX_SPACING_MM:
        raise GeometryError(
            f"voxel spacing {tuple(round(s, 4) for s in spacing)} mm is outside "
            f"{MIN_SPACING_MM}–{MAX_SPACING_MM} mm (header geometry missing or wrong?)", path)
    total, avail = _memory_bytes()
    need = a.size * bytes_per_voxel
    if total is not None and need > total:
        raise InputError(f"volume {a.shape} is too large: needs about {need / 2**30:.1f} GiB, this "
                         f"machine has {total / 2**30:.1f} GiB (crop or downsample it)", path)
    if avail is not None and need > avail:
        out.append(f"volume needs about {need / 2**30:.1f} GiB; only {avail / 2**30:.1f} GiB free now")
    if a.dtype == bool or a.dtype.kind not in "iuf":
        raise InputError(f"image voxels are {a.dtype}; expected CT numbers (HU)", path)
    if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        bad = int(np.count_nonzero(~np.isfinite(a)))
        raise InputError(f"image holds {bad} NaN or infinite voxel(s)", path)
    lo, hi = float(a.min()), float(a.max())
    if lo == hi:
        raise InputError(f"image is constant ({lo:g} everywhere)", path)
    if a.dtype == np.uint8 or (lo >= 0 and hi <= 255):
        raise InputError(f"intensities {lo:g}–{hi:g} look like an 8-bit picture stack, not CT in HU", path)
    if lo > -500 and hi < 4096:
        raise InputError(
            f"does not look like CT (MR or 8-bit picture?): intensities {lo:g}–{hi:g} contain no air "
            "(CT air is about -1000 HU; CT stored without its rescale intercept also looks like this)",
            path)
    if lo > -500:
        out.append(f"no air in the image (minimum {lo:g}); is it CT in HU?")
    frac_air = float(np.mean(_sample(a) < -900))
    if frac_air < 0.005:
        out.append(f"very little air ({100 * frac_air:.2f}% of voxels below -900 HU); lungs may be absent")
    for w in out:
        warnings.warn(f"{path}: {w}" if path else w, LungsegWarning, stacklevel=2)
    return out


def check_pair(image: Volume, label: Volume, label_path: str | Path | None = None) -> None:
    """Check that `label` lies on `image`'s grid and is not empty.

    Raises `GeometryError` for a shape mismatch or an affine mismatch (`core.geometry.same_grid`:
    any grid corner more than 1e-3 mm apart), `LabelError` for an empty label (no non-zero voxel).
    """
    label_path = label_path if label_path is not None else label.meta.get("path")
    check_same_grid(label, image, "label and image", label_path)
    if not np.any(label.array):
        raise LabelError("label is empty (no lung voxels)", label_path)
