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
