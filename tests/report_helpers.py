"""Helpers of the report tests: ellipsoid 'lungs' of known volume on anisotropic and oblique
grids, colour tests on pictures, and the numbers a page shows (its data-key cells).

Shared by the report tests (plain module, imported by name like conftest's helpers).
"""

from __future__ import annotations

import io
from html.parser import HTMLParser

import numpy as np

from lungseg.core.volume import Volume

#: semi-axes (mm) of the right and left "lung"; centres at x = +-CENTRE_X (RAS: +x = patient right)
AXES = {1: (38.0, 30.0, 55.0), 2: (34.0, 28.0, 50.0)}
CENTRE_X = 45.0


def analytic_ml(label: int) -> float:
    a, b, c = AXES[label]
    return 4.0 / 3.0 * np.pi * a * b * c / 1000.0


def rotation(deg_z: float, deg_x: float) -> np.ndarray:
    z, x = np.radians(deg_z), np.radians(deg_x)
    rz = np.array([[np.cos(z), -np.sin(z), 0], [np.sin(z), np.cos(z), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(x), -np.sin(x)], [0, np.sin(x), np.cos(x)]])
    return rz @ rx


def ellipsoid_phantom(spacing=(1.6, 1.3, 2.5), oblique: bool = True, lps: bool = False,
                      margin_mm: float = 12.0) -> tuple[Volume, Volume]:
    """CT (-870 HU lung with a -980 HU patch in the right lung, 40 HU elsewhere) and a mask of
    two ellipsoids, on a grid with `spacing`, tilted (15 deg about z, 10 about x) when `oblique`,
    stored with the first two axes flipped (LPS-like) when `lps`. The grid is centred on the
    origin and large enough to hold both ellipsoids."""
    rot = rotation(15.0, 10.0) if oblique else np.eye(3)
    if lps:
        rot = rot @ np.diag([-1.0, -1.0, 1.0])
    half = np.array([CENTRE_X + 38.0, 30.0, 55.0]) + margin_mm  # world half-extent to cover
    # enough voxels along each axis to cover the rotated box
    extent = np.abs(rot.T) @ half
    shape = tuple(int(np.ceil(2 * e / s)) + 1 for e, s in zip(extent, spacing, strict=True))
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag(spacing)
    centre_index = (np.array(shape) - 1) / 2.0
    affine[:3, 3] = -affine[:3, :3] @ centre_index
    ijk = np.indices(shape).reshape(3, -1).astype(np.float64)
    world = (affine[:3, :3] @ ijk + affine[:3, 3:4]).T
    labels = np.zeros(len(world), np.uint8)
    for lab, sign in ((1, 1.0), (2, -1.0)):
        a = np.array(AXES[lab])
        d = world - np.array([sign * CENTRE_X, 0.0, 0.0])
        labels[((d / a) ** 2).sum(axis=1) <= 1.0] = lab
    labels = labels.reshape(shape)
    hu = np.where(labels > 0, -870, 40).astype(np.int16)
    patch = (labels.reshape(-1) == 1) & (world[:, 2] > 20.0)  # upper right "lung": emphysema-like
    hu.reshape(-1)[patch] = -980
    return Volume(hu, affine), Volume(labels, affine.copy())


def read_png(data: bytes | str) -> np.ndarray:
    """RGB uint8 array of a PNG (bytes or path)."""
    import matplotlib.image as mpimg

    img = mpimg.imread(io.BytesIO(data) if isinstance(data, bytes) else data, format="png")
    if img.dtype != np.uint8:
        img = (img * 255).round().astype(np.uint8)
    return img[..., :3].astype(np.int16)


def colour_masks(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of the right-lung red and of the left-lung blue (tab:red / tab:blue, shaded or
    blended with grey): red dominates both other channels, or blue dominates red and green."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    red = (r - np.maximum(g, b)) > 35
    blue = ((b - r) > 35) & (b > g)
    return red, blue


def assert_sides(rgb: np.ndarray, right_on_left: bool = True, min_pixels: int = 200) -> None:
    """Both lung colours present, the right lung's on the viewer's left (radiological view) or
    on the right (`right_on_left` False: a view from behind)."""
    red, blue = colour_masks(rgb)
    assert red.sum() >= min_pixels and blue.sum() >= min_pixels, (int(red.sum()), int(blue.sum()))
    xr = np.nonzero(red)[1].mean()
    xb = np.nonzero(blue)[1].mean()
    assert (xr < xb) == right_on_left, (xr, xb)


def assert_not_uniform(rgb: np.ndarray) -> None:
    assert rgb.std() > 20, rgb.std()
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 50


class Cells(HTMLParser):
    """Text of every element with a data-key attribute (the numbers a page shows)."""

    def __init__(self):
        super().__init__()
        self.cells: dict[str, str] = {}
        self.rows: list[dict[str, str]] = []
        self._key = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and "data-case" in a:
            self.rows.append({"case": a["data-case"]})
        if "data-key" in a:
            self._key = a["data-key"]
            self.cells[self._key] = ""

    def handle_data(self, data):
        if self._key is not None:
            self.cells[self._key] += data

    def handle_endtag(self, tag):
        if self._key is not None and tag in ("td", "span", "div"):
            self.cells[self._key] = self.cells[self._key].strip()
            if self.rows:
                self.rows[-1][self._key] = self.cells[self._key]
            self._key = None


def parse_cells(page: str) -> Cells:
    p = Cells()
    p.feed(page)
    return p
