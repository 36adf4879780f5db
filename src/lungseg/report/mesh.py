"""Lung surfaces as triangle meshes in patient millimetres (RAS+), for 3D Slicer, MeshLab or a printer.

Marching cubes (scikit-image) runs on each lung's voxels in index space; the mask's affine
then places the vertices in RAS+ mm, so oblique and anisotropic grids come out right. The
mask is padded by one voxel so every surface is closed (a watertight mesh whose enclosed
volume trimesh can measure); faces are oriented outwards whatever the affine's handedness.

Example on a phantom (a 20 mm cube of "right lung" on 2 mm voxels)::

    >>> import numpy as np
    >>> from lungseg.core.volume import Volume
    >>> lab = np.zeros((16, 16, 16), np.uint8); lab[3:13, 3:13, 3:13] = 1
    >>> meshes = lung_meshes(Volume(lab, np.diag([2.0, 2.0, 2.0, 1.0])))
    >>> sorted(meshes), meshes["right"].is_watertight, round(float(meshes["right"].volume) / 1000, 1)
    (['right'], True, 7.9)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lungseg.core.errors import OutputError
from lungseg.core.labels import LABEL_NAMES, check_labels
from lungseg.core.volume import Volume
from lungseg.io.formats import full_suffix
from lungseg.io.safety import atomic_path

__all__ = ["MESH_SUFFIXES", "lung_meshes", "mesh_paths", "write_meshes", "surface_arrays"]

MESH_SUFFIXES = (".stl", ".ply", ".obj")


def surface_arrays(mask: np.ndarray, affine: np.ndarray, step: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(vertices in RAS+ mm, faces) of the `mask`'s surface, faces pointing outwards.

    `mask` is boolean, or a float field in [0, 1] (a smoothed mask, for pictures) cut at 0.5.
    `step` > 1 takes marching cubes' coarser step (fewer triangles).
    """
    from skimage.measure import marching_cubes

    m = np.pad(np.asarray(mask, np.float32), 1)
    verts, faces, _, _ = marching_cubes(m, level=0.5, step_size=step, allow_degenerate=False)
    verts = verts - 1.0  # undo the pad: back to the mask's voxel indices
    affine = np.asarray(affine, float)
    world = verts @ affine[:3, :3].T + affine[:3, 3]
    faces = faces.astype(np.int64)
    if _signed_volume(world, faces) < 0:  # a left-handed affine (or the cubes' winding) turned it inside out
        faces = faces[:, ::-1]
    return world, faces


def _signed_volume(verts: np.ndarray, faces: np.ndarray) -> float:
    a, b, c = (verts[faces[:, i]] for i in range(3))
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def lung_meshes(mask: Volume, step: int = 1) -> dict:
    """{"right": trimesh.Trimesh, "left": ...} in RAS+ mm; a lung absent from the mask is left out."""
    import trimesh

    labels = check_labels(mask.array, "mask", mask.meta.get("path"))
    out = {}
    for value, name in LABEL_NAMES.items():
        lung = labels == value
        if not lung.any():
            continue
        verts, faces = surface_arrays(lung, mask.affine, step)
        out[name] = trimesh.Trimesh(verts, faces, process=False)
    return out


def mesh_paths(path: str | Path) -> dict[str, Path]:
    """lungs.stl -> {"right": lungs_right.stl, "left": lungs_left.stl} (one file per lung)."""
    path = Path(path)
    suffix = full_suffix(path).lower()
    if suffix not in MESH_SUFFIXES:
        raise OutputError(f"mesh format {suffix or '(none)'} not supported; use one of "
                          f"{', '.join(MESH_SUFFIXES)}", path)
    stem = path.name[: len(path.name) - len(suffix)]
    return {side: path.with_name(f"{stem}_{side}{suffix}") for side in LABEL_NAMES.values()}


def write_meshes(mask: Volume, path: str | Path) -> list[Path]:
    """Write each lung's surface beside `path` (see `mesh_paths`), atomically; the paths written.

    The format follows the suffix (.stl binary, .ply binary, .obj text); units are mm,
    coordinates RAS+ (3D Slicer's convention; Slicer asks for LPS on load of STL/OBJ files
    written by other tools: choose RAS).
    """
    paths = mesh_paths(path)
    written = []
    for side, mesh in lung_meshes(mask).items():
        with atomic_path(paths[side]) as tmp:
            mesh.export(tmp)
        written.append(paths[side])
    return written
