"""Volumes with geometry attached: one `read_volume` / `write_volume` pair for every format.

Convention (nibabel's): `Volume.array` is indexed (i, j, k) in stored order and
`Volume.affine` maps voxel indices to RAS+ millimetres. Every format is converted to this
on read and back on write, so a mask written for an input lies on exactly its grid.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from lungseg.errors import InputError


@dataclass
class Volume:
    """A 3D array plus the affine that places it in patient space (RAS+, mm)."""

    array: np.ndarray
    affine: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along i, j, k."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    def with_array(self, array: np.ndarray) -> Volume:
        """Same grid, new voxels (e.g. a mask for this image)."""
        if array.shape != self.array.shape:
            raise ValueError(f"shape {array.shape} != {self.array.shape}")
        return Volume(array, self.affine.copy(), dict(self.meta))


def _is_nifti(path: Path) -> bool:
    return path.name.endswith((".nii", ".nii.gz"))


def read_volume(path: str | Path) -> Volume:
    """Read a 3D image with its geometry."""
    path = Path(path)
    if not path.exists():
        raise InputError("no such file or folder", path)
    if not _is_nifti(path):
        raise InputError("unsupported format (expected .nii or .nii.gz)", path)
    try:
        img = nib.load(str(path))
        array = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many kinds
        raise InputError(f"not a readable NIfTI file ({type(exc).__name__}: {exc})", path) from None
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise InputError(f"expected a 3D image, got {array.ndim}D with shape {array.shape}", path)
    return Volume(array, np.asarray(img.affine, dtype=np.float64), {"path": str(path), "format": "nifti"})


def write_volume(volume: Volume, path: str | Path) -> Path:
    """Write atomically: a temporary file in the same folder, then a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".nii.gz" if path.name.endswith(".gz") else ".nii"
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        img = nib.Nifti1Image(np.asarray(volume.array), volume.affine)
        img.set_qform(volume.affine, code=1)
        img.set_sform(volume.affine, code=1)
        nib.save(img, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
