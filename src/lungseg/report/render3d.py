"""A 3D picture of both lungs, rendered headless (matplotlib Agg) to PNG.

The surfaces come from `report.mesh.surface_arrays` (marching cubes on the mask's grid, the
affine applied, so spacing and obliquity are right) on a grid block-reduced to about
`TARGET_MM` voxels and smoothed (`SMOOTH_MM`), which keeps a whole chest to some 10^4-10^5 triangles. The view is from
the front (anterior), slightly above, as a radiologist sees a coronal image: the patient's
right lung (red) on the viewer's left, the left lung (blue) on the right; and from the back. Each triangle is
shaded by hand (Lambert, light from the viewer's upper left).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from mpl_toolkits.mplot3d.art3d import Poly3DCollection  # noqa: E402
from scipy import ndimage  # noqa: E402

from lungseg.core.geometry import downsampled_affine, spacing_of  # noqa: E402
from lungseg.core.labels import LABEL_NAMES, check_labels  # noqa: E402
from lungseg.core.morphology import pool_any  # noqa: E402
from lungseg.core.volume import Volume  # noqa: E402
from lungseg.report.figures import COLOURS  # noqa: E402
from lungseg.report.mesh import surface_arrays  # noqa: E402

__all__ = ["surface_figure", "TARGET_MM", "VIEWS"]

#: Voxel size (mm) the mask is reduced to before marching cubes, for the picture only.
TARGET_MM = 3.0
#: Gaussian smoothing (sd, mm) of the reduced mask, so the picture shows the lung, not voxel steps.
SMOOTH_MM = 3.0
AMBIENT = 0.35


def _view_vectors(elev: float, azim: float) -> tuple[np.ndarray, np.ndarray]:
    """Unit vector towards the camera and the light direction, for matplotlib's elev/azim."""
    e, a = np.radians(elev), np.radians(azim)
    eye = np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])
    left = np.array([np.sin(a), -np.cos(a), 0.0])  # the viewer's left
    light = eye + 0.8 * left + np.array([0.0, 0.0, 0.8])
    return eye, light / np.linalg.norm(light)


VIEWS = (("anterior view (patient's right on the left)", 90.0),
         ("posterior view (patient's right on the right)", -90.0))


def surface_figure(mask: Volume, elev: float = 10.0, views=VIEWS):
    """Both lungs' surfaces seen from the front and from the back (`views`: (title, azimuth);
    azimuth 90 puts the camera on the patient's anterior side, +y in RAS); a matplotlib
    Figure. An empty mask gives a figure saying so."""
    labels = check_labels(mask.array, "mask", mask.meta.get("path"))
    factors = [max(1, int(round(TARGET_MM / s))) for s in mask.spacing]
    affine = downsampled_affine(mask.affine, factors)
    surfaces = []
    for value in LABEL_NAMES:
        lung = pool_any(labels == value, factors, 0.5) if max(factors) > 1 else labels == value
        if lung.any():
            smooth = ndimage.gaussian_filter(lung.astype(np.float32), SMOOTH_MM / spacing_of(affine))
            surfaces.append((value, *surface_arrays(smooth, affine)))
    fig = plt.figure(figsize=(5.0 * len(views), 4.6))
    for n, (title, azim) in enumerate(views):
        ax = fig.add_subplot(1, len(views), n + 1, projection="3d", computed_zorder=False)
        _draw_view(ax, surfaces, elev, azim)
        ax.set_title(title, fontsize=10)
    fig.subplots_adjust(0, 0, 1, 0.95, wspace=0.0)
    return fig


def _draw_view(ax, surfaces, elev: float, azim: float) -> None:
    _, light = _view_vectors(elev, azim)
    lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
    for value, verts, faces in surfaces:
        tri = verts[faces]
        normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
        shade = AMBIENT + (1 - AMBIENT) * np.clip(normals @ light, 0, 1)
        rgb = np.asarray(matplotlib.colors.to_rgb(COLOURS[value]))
        ax.add_collection3d(Poly3DCollection(tri, facecolors=shade[:, None] * rgb,
                                             edgecolors="none", linewidths=0))
        lo, hi = np.minimum(lo, verts.min(axis=0)), np.maximum(hi, verts.max(axis=0))
    if not np.isfinite(lo).all():
        ax.text2D(0.5, 0.5, "no lung in the mask", ha="center", transform=ax.transAxes)
        lo, hi = np.zeros(3), np.ones(3)
    centre, half = (lo + hi) / 2, (hi - lo) / 2
    for setter, c, h in zip((ax.set_xlim, ax.set_ylim, ax.set_zlim), centre, half, strict=True):
        setter(c - h, c + h)
    ax.set_proj_type("ortho")
    ax.set_box_aspect(np.maximum(hi - lo, 1e-6), zoom=1.2)
    ax.view_init(elev=elev, azim=azim)
    ax.set_axis_off()
