"""`Volume`: voxels with the affine that places them in patient space (RAS+, mm).

Convention (nibabel's): `array` is indexed (i, j, k) in stored order and `affine` maps voxel
indices to RAS+ millimetres: world +x points to the patient's RIGHT, +y anterior, +z superior.
Every reader converts to this and every writer converts back, so geometry travels with voxels.

>>> import numpy as np
>>> v = Volume(np.zeros((4, 5, 6), np.int16), np.diag([0.8, 0.8, 2.0, 1.0]))
>>> v.spacing, round(v.voxel_ml, 5)
((0.8, 0.8, 2.0), 0.00128)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lungseg.core.geometry import spacing_of, voxel_volume_ml


@dataclass
class Volume:
    """A 3D array plus the affine that places it in patient space (RAS+, mm)."""

    array: np.ndarray
    affine: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along i, j, k."""
        return tuple(float(s) for s in spacing_of(self.affine))

    @property
    def voxel_ml(self) -> float:
        """Volume of one voxel in millilitres."""
        return voxel_volume_ml(self.affine)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    def with_array(self, array: np.ndarray) -> Volume:
        """Same grid, new voxels (e.g. a mask for this image)."""
        if array.shape != self.array.shape:
            raise ValueError(f"shape {array.shape} != {self.array.shape}")
        return Volume(array, self.affine.copy(), dict(self.meta))


#: the voxel order segmentation works in: DICOM's (columns to the patient's left, rows to the
#: back, slices upwards), as lungseg's DICOM reader and most converters store a CT. A volume
#: stored otherwise is reoriented to it first (flips and axis swaps only: no voxel changes), so
#: the mask of a scan does not depend on how it was stored (`bench/invariance.py`, "storage").
WORKING_AXCODES = ("L", "P", "S")


def working_orientation(affine: np.ndarray) -> np.ndarray | None:
    """nibabel orientation transform from `affine`'s storage to `WORKING_AXCODES`; None when
    the volume already is so stored."""
    import nibabel as nib

    ornt = nib.orientations.ornt_transform(nib.orientations.io_orientation(np.asarray(affine, float)),
                                           nib.orientations.axcodes2ornt(WORKING_AXCODES))
    if np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
        return None
    return ornt


def reoriented(volume: Volume, ornt: np.ndarray) -> Volume:
    """`volume` stored in the order `ornt` gives (`working_orientation`): the same voxels, each
    at its world place; the array is a view of the input's (flips and transpositions: no copy,
    so a large scan is not held twice; the masks are the same as from a copy)."""
    import nibabel as nib

    array = np.asarray(volume.array)
    moved = nib.orientations.apply_orientation(array, ornt)
    affine = np.asarray(volume.affine, float) @ nib.orientations.inv_ornt_aff(ornt, array.shape)
    return Volume(moved, affine, dict(volume.meta))


def restored(array: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """An array on the grid `reoriented(volume, ornt)` gives, back in `volume`'s own order (a view)."""
    import nibabel as nib

    back = nib.orientations.ornt_transform([[0, 1], [1, 1], [2, 1]], ornt)
    return nib.orientations.apply_orientation(np.asarray(array), back)
