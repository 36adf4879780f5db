"""The core layer: one owner for each basic fact (numpy/nibabel only; imports nothing else of lungseg).

Volume and its geometry (spacing, voxel volume, same grid, LPS<->RAS), the label convention
(0 background, 1 right lung, 2 left lung), right/left anatomy and the morphology helpers the
methods share. Everything above (io, methods, uses, app) calls these instead of re-deriving them.
"""

from lungseg.core.anatomy import body_midline_x, split_left_right
from lungseg.core.errors import (
    GeometryError,
    InputError,
    LabelError,
    LungsegError,
    LungsegWarning,
    OutputError,
)
from lungseg.core.geometry import (
    LPS_TO_RAS,
    check_same_grid,
    downsampled_affine,
    grid_distance_mm,
    lps_to_ras,
    same_grid,
    spacing_of,
    superior_axis,
    voxel_volume_ml,
)
from lungseg.core.labels import BACKGROUND, LABEL_NAMES, LEFT, RIGHT, check_labels
from lungseg.core.volume import Volume

__all__ = [
    "BACKGROUND", "LABEL_NAMES", "LEFT", "LPS_TO_RAS", "RIGHT", "GeometryError", "InputError",
    "LabelError", "LungsegError", "LungsegWarning", "OutputError", "Volume", "body_midline_x",
    "check_labels", "check_same_grid", "downsampled_affine", "grid_distance_mm", "lps_to_ras",
    "same_grid", "spacing_of", "split_left_right", "superior_axis", "voxel_volume_ml",
]
