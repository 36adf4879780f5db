"""MONAI pipelines for training, validation and inference.

The deterministic part (orientation, spacing, HU window) is shared by all three so
a model sees at prediction exactly what it saw in training.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    CropForegroundd,
    EnsureTyped,
    MapTransform,
    Orientationd,
    RandAffined,
    RandCropByPosNegLabeld,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandomizableTransform,
    RandScaleIntensityd,
    RandShiftIntensityd,
    ScaleIntensityRanged,
    Spacingd,
    SpatialPadd,
)
from pydantic import BaseModel, ConfigDict

from lungseg.core.volume import Volume
from lungseg.io.volumes import read_volume


class PreprocessingConfig(BaseModel):
    """What the network sees; defaults are the reference recipe's. Stored in every checkpoint."""

    model_config = ConfigDict(extra="forbid")

    spacing: tuple[float, float, float] = (1.5, 1.5, 2.0)
    hu_window: tuple[float, float] = (-1000.0, 1000.0)
    axcodes: Literal["RAS"] = "RAS"


#: The reference preprocessing as a plain dict (what checkpoints store).
DEFAULT_PREPROCESSING: dict[str, Any] = PreprocessingConfig().model_dump(mode="json")


def to_metatensor(volume: Volume, dtype: torch.dtype = torch.float32) -> MetaTensor:
    """Channel-first MetaTensor carrying the volume's affine (RAS, as MONAI expects)."""
    data = torch.as_tensor(np.ascontiguousarray(volume.array), dtype=dtype)[None]
    return MetaTensor(data, affine=torch.as_tensor(volume.affine, dtype=torch.float64))


class LoadCased(MapTransform):
    """Read image (and label) files with lungseg's readers, labels normalised to 0/1/2.

    Written here instead of MONAI's LoadImaged so that training reads every format and
    label convention `lungseg.io` supports (DICOM folders, 255-masks, lobe maps).
    """

    def __init__(self, keys: Sequence[str] = ("image", "label"), label_mapping: Any = None,
                 binary: bool = False):
        super().__init__(keys, allow_missing_keys=True)
        self.label_mapping = label_mapping
        self.binary = binary

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        from lungseg.io.checks import check_image, check_pair
        from lungseg.io.labels import normalise_label

        d = dict(data)
        image = read_volume(d["image"])
        check_image(image, d["image"])
        d["image"] = to_metatensor(image)
        if d.get("label") is not None:
            label = read_volume(d["label"])
            check_pair(image, label, d["label"])
            arr = normalise_label(label.array, label.affine, mapping=self.label_mapping, path=d["label"])
            if self.binary:
                arr = (arr > 0).astype(np.uint8)
            d["label"] = to_metatensor(label.with_array(arr))
        return d


class RandFlipLeftRightd(RandomizableTransform, MapTransform):
    """Mirror along the patient's left-right axis and swap labels 1 and 2.

    MONAI's RandFlipd mirrors voxels only; for side-specific labels a left-right mirror
    must also swap right (1) and left (2), or the augmentation teaches wrong sides.
    Expects RAS-oriented data (axis 0 is left-right).
    """

    def __init__(self, keys: Sequence[str] = ("image", "label"), prob: float = 0.5,
                 swap_labels: bool = True):
        MapTransform.__init__(self, keys, allow_missing_keys=True)
        RandomizableTransform.__init__(self, prob)
        self.swap_labels = swap_labels  # False for lung-vs-background labels

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            d[key] = torch.flip(d[key], dims=[1])
        if "label" in d and self.swap_labels:
            lab = d["label"]
            swapped = lab.clone()
            swapped[lab == 1] = 2
            swapped[lab == 2] = 1
            d["label"] = swapped
        return d


class RandSlabd(RandomizableTransform, MapTransform):
    """Turn a training patch into a thin slab or a cut field of view, edges replicated.

    Why: at inference a scan shorter than the window is padded by replicating its edge
    slices (`inference.predictor`), so a 2-slice slab or a bases-only crop reaches the
    network as a column of repeated slices. A network that never saw one in training
    guesses there; this shows it such patches with their (equally replicated) labels.
    Half the time a slab of 1-8 voxels at a random height, half the time the patch cut
    at the top or the bottom (apex-only / bases-only). Axis 3 of (C, x, y, z) is z in RAS.
    """

    def __init__(self, keys: Sequence[str] = ("image", "label"), prob: float = 0.25,
                 max_slab: int = 8):
        MapTransform.__init__(self, keys, allow_missing_keys=True)
        RandomizableTransform.__init__(self, prob)
        self.max_slab = max_slab
        self.bounds = (0, 0)

    def randomize(self, nz: int) -> None:
        super().randomize(None)
        if not self._do_transform:
            return
        if self.R.random() < 0.5:
            n = int(self.R.randint(1, self.max_slab + 1))
            lo = int(self.R.randint(0, max(1, nz - n + 1)))
            self.bounds = (lo, min(nz, lo + n))
        else:
            cut = int(self.R.randint(nz // 4, 3 * nz // 4 + 1))
            self.bounds = (cut, nz) if self.R.random() < 0.5 else (0, cut)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        first = next(self.key_iterator(d), None)
        if first is None:
            return d
        nz = int(d[first].shape[-1])
        self.randomize(nz)
        if not self._do_transform:
            return d
        lo, hi = self.bounds
        index = torch.clamp(torch.arange(nz), lo, hi - 1)
        for key in self.key_iterator(d):
            d[key] = d[key][..., index]
        return d


class _LungPaintd(RandomizableTransform, MapTransform):
    """Base of the transforms that paint pathology into a patch's lung, label unchanged:
    `paint(image, lung)` returns the new first channel (x, y, z; scaled HU) or None. Patches
    are on `spacing` (mm) with HU scaled to [0, 1] by `hu_window`; a patch with less lung
    than `min_lung_voxels` is left as it is."""

    def __init__(self, keys: Sequence[str], prob: float, spacing: Sequence[float],
                 hu_window: tuple[float, float], min_lung_voxels: int):
        MapTransform.__init__(self, keys, allow_missing_keys=True)
        RandomizableTransform.__init__(self, prob)
        self.spacing = np.asarray(spacing, float)
        self.hu_window = hu_window
        self.min_lung_voxels = min_lung_voxels

    def _scaled(self, hu: np.ndarray | float) -> np.ndarray | float:
        lo, hi = self.hu_window
        return np.clip((np.asarray(hu, np.float32) - lo) / (hi - lo), 0.0, 1.0)

    def _hu(self, image: np.ndarray) -> np.ndarray:
        """A scaled patch back in HU (the inverse of `_scaled` inside the window)."""
        lo, hi = self.hu_window
        return image * (hi - lo) + lo

    def paint(self, image: np.ndarray, lung: np.ndarray) -> np.ndarray | None:
        raise NotImplementedError

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        self.randomize(None)
        image_key, label_key = self.keys  # painted into the image where the label says lung
        if not self._do_transform or image_key not in d or label_key not in d:
            return d
        image = d[image_key]
        lung = np.asarray(d[label_key][0] > 0)
        if lung.sum() < self.min_lung_voxels:
            return d
        out = self.paint(np.asarray(image[0], np.float32), lung)
        if out is not None:
            new = image.clone()
            new[0] = torch.as_tensor(out, dtype=image.dtype)
            d[image_key] = new
        return d


class RandMassd(_LungPaintd):
    """Put a soft-tissue mass into the lung of a training patch; the label stays lung.

    Why: by our convention (docs/model.md) a tumour inside the pleural cavity is lung, but
    the few labelled real masses we have taught the network only their own shapes and
    places; masses at the mediastinum, the hilum or on the diaphragm were still cut out.
    This draws a lobulated mass of `radius_mm` at a random place where the lung meets soft
    tissue (chest wall, mediastinum, diaphragm), inside the lung of *any* training patch,
    real or phantom, so the network learns the pleural cavity's outline from the anatomy
    around a mass rather than from the air inside it. The mass replaces lung voxels only:
    what was not lung stays as it was, and the label is unchanged. No maintained library
    synthesises tumours into CT (MONAI has no such transform), hence written here.
    Expects channel-first (C, x, y, z) patches on `spacing` with HU scaled by `hu_window`.
    """

    def __init__(self, keys: Sequence[str] = ("image", "label"), prob: float = 0.3,
                 radius_mm: tuple[float, float] = (8.0, 45.0), hu: tuple[float, float] = (-40.0, 80.0),
                 spacing: Sequence[float] = (1.5, 1.5, 2.0), hu_window: tuple[float, float] = (-1000.0, 1000.0),
                 min_lung_voxels: int = 4000):
        super().__init__(keys, prob, spacing, hu_window, min_lung_voxels)
        self.radius_mm = radius_mm
        self.hu = hu

    def mass(self, image: np.ndarray, lung: np.ndarray) -> np.ndarray | None:
        """The patch `image` (x, y, z; scaled) with a mass in `lung` (bool), or None (no room)."""
        from scipy import ndimage

        soft = ~lung & (image > self._scaled(-300.0))  # chest wall, mediastinum, diaphragm
        if not soft.any():
            return None
        r = float(self.R.uniform(*self.radius_mm))
        # the centre lies in the lung, 0.2-0.9 radii from a lung voxel that touches soft
        # tissue, so the mass touches the chest wall, the mediastinum or the diaphragm
        edge = np.flatnonzero(lung & ndimage.binary_dilation(soft))
        if edge.size == 0:
            return None
        centre = None
        for _ in range(10):
            start = np.array(np.unravel_index(edge[self.R.randint(edge.size)], lung.shape))
            step = self.R.standard_normal(3)
            step *= self.R.uniform(0.2, 0.9) * r / np.linalg.norm(step) / self.spacing
            c = np.round(start + step).astype(int)
            if np.all(c >= 0) and np.all(c < lung.shape) and lung[tuple(c)]:
                centre = c
                break
        if centre is None:
            return None
        axes = r * self.R.uniform(0.7, 1.3, 3) / self.spacing  # semi-axes in voxels
        lo = np.maximum(centre - np.ceil(axes * 1.4).astype(int), 0)
        hi = np.minimum(centre + np.ceil(axes * 1.4).astype(int) + 1, lung.shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        grid = np.meshgrid(*[(np.arange(a, b) - c) / s for a, b, c, s in zip(lo, hi, centre, axes, strict=True)],
                           indexing="ij")
        rho = np.sqrt(sum(g * g for g in grid))  # 1 at the ellipsoid's surface
        lobes = ndimage.gaussian_filter(self.R.standard_normal(rho.shape).astype(np.float32), 2.0)
        lobes /= lobes.std() + 1e-6
        inside = (rho < 1.0 + 0.15 * lobes) & lung[box]
        if inside.sum() < 50:
            return None
        hu = float(self.R.uniform(*self.hu))
        texture = ndimage.gaussian_filter(self.R.standard_normal(rho.shape).astype(np.float32), 1.5)
        values = hu + float(self.R.uniform(5, 25)) * texture / (texture.std() + 1e-6)
        if self.R.random() < 0.3:  # a necrotic (darker) centre
            values -= float(self.R.uniform(20, 60)) * (rho < 0.5)
        values += float(self.R.uniform(5, 25)) * self.R.standard_normal(rho.shape)  # scanner noise
        # partial volume at the mass's edge inside the lung; never outside the lung
        weight = np.clip(ndimage.gaussian_filter(inside.astype(np.float32), 0.7), 0, 1) * lung[box]
        weight[inside] = 1.0
        out = image.copy()
        out[box] = (1 - weight) * image[box] + weight * self._scaled(values)
        return out

    def paint(self, image: np.ndarray, lung: np.ndarray) -> np.ndarray | None:
        return self.mass(image, lung)


class RandCollapsed(_LungPaintd):
    """Make part of one lung in a training patch airless (collapse, consolidation); label stays lung.

    Why: a collapsed or consolidated upper lobe is dense tissue filling the top of the pleural
    cavity. With the aerated lung below it in view the network kept it (a real chest showed
    this), in an apex crop or a slab through it the network saw soft tissue with no air next to
    it and left it out, or reached past the ribs into the shoulder instead. This fills the part
    of one lung beyond a random plane (facing up, sideways or to the front: not down and back,
    where dense tissue against the pleura is more often effusion, which is not lung) with
    airless tissue, keeping its airways dark in some (air bronchograms), so the pleural cavity's
    outline, not the air, says where lung is. `share` is the lung piece's fraction filled.
    Measured in stage 2 (15 % of the patches): more of every mass kept, but in views of the top
    of the chest the network then called neck and shoulder muscle lung, so the shipped model
    does not use it (docs/model_notes.md). No maintained library synthesises collapse into CT,
    hence written here.
    Expects channel-first (C, x, y, z) RAS patches on `spacing` with HU scaled by `hu_window`.
    """

    def __init__(self, keys: Sequence[str] = ("image", "label"), prob: float = 0.15,
                 share: tuple[float, float] = (0.12, 0.45), hu: tuple[float, float] = (-10.0, 60.0),
                 spacing: Sequence[float] = (1.5, 1.5, 2.0), hu_window: tuple[float, float] = (-1000.0, 1000.0),
                 min_lung_voxels: int = 4000):
        super().__init__(keys, prob, spacing, hu_window, min_lung_voxels)
        self.share = share
        self.hu = hu

    def paint(self, image: np.ndarray, lung: np.ndarray) -> np.ndarray | None:
        from scipy import ndimage

        comp, n = ndimage.label(lung)
        if n == 0:
            return None
        sizes = np.bincount(comp.ravel(), minlength=n + 1)[1:]
        ok = np.flatnonzero(sizes >= self.min_lung_voxels)
        if ok.size == 0:
            return None
        piece = int(ok[self.R.choice(ok.size, p=sizes[ok] / sizes[ok].sum())]) + 1
        idx = np.argwhere(comp == piece)
        # the plane's normal (RAS, mm): up, tilted sideways either way and towards the front
        normal = np.array([self.R.uniform(-0.8, 0.8), self.R.uniform(-0.3, 0.6), self.R.uniform(0.5, 1.0)])
        proj = (idx * self.spacing) @ (normal / np.linalg.norm(normal))
        cut = np.quantile(proj, 1.0 - float(self.R.uniform(*self.share)))
        filled = idx[proj > cut]
        if len(filled) < 50:
            return None
        region = np.zeros(lung.shape, bool)
        region[tuple(filled.T)] = True
        lo, hi = filled.min(0), filled.max(0) + 1
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        shape = tuple(hi - lo)
        texture = ndimage.gaussian_filter(self.R.standard_normal(shape).astype(np.float32), 1.5)
        values = float(self.R.uniform(*self.hu)) + float(self.R.uniform(5, 20)) * texture / (texture.std() + 1e-6)
        values += float(self.R.uniform(5, 25)) * self.R.standard_normal(shape)  # scanner noise
        new = self._scaled(values)
        sub = image[box]
        if self.R.random() < 0.5:  # air bronchograms: the airways' lumen stays dark
            new = np.where(sub < self._scaled(-900.0), sub, new)
        weight = np.clip(ndimage.gaussian_filter(region[box].astype(np.float32), 0.7), 0, 1) * lung[box]
        weight[region[box]] = 1.0
        out = image.copy()
        out[box] = (1 - weight) * sub + weight * new
        return out


def paint_fibrosis(hu: np.ndarray, band: np.ndarray, depth: np.ndarray, spacing: Sequence[float],
                   rng: np.random.Generator, depth_mm: float = 15.0,
                   cyst_mm: tuple[float, float] = (3.0, 9.0)) -> np.ndarray:
    """`hu` (float HU) with usual-interstitial-pneumonia-like fibrosis painted into `band`.

    `band` is the subpleural lung to paint (bool, same shape), `depth` each voxel's distance
    below the pleura (mm, same shape), `depth_mm` the band's depth: the outer 35-65 % of it
    becomes honeycombing (clustered air cysts of `cyst_mm` with thin soft-tissue walls), the
    rest reticulation (a network of dense lines in ground glass). A pure function over arrays:
    the training transform `RandFibrosisd` paints patches with it and
    `bench/painted_fibrosis.py` paints whole real chests.
    """
    from scipy import ndimage
    from scipy.spatial import cKDTree

    out = np.array(hu, np.float32, copy=True)
    if not band.any():
        return out
    sp = np.asarray(spacing, float)
    depth = np.asarray(depth)[band]
    idx = np.argwhere(band)
    pts = idx * sp
    # honeycomb: Voronoi cells of random seeds; walls where two seeds are nearly equidistant
    cell = float(rng.uniform(*cyst_mm))
    n = max(8, int(len(pts) * np.prod(sp) / (0.5 * cell ** 3)))
    seeds = pts[rng.choice(len(pts), size=min(n, len(pts)), replace=False)]
    dd, _ = cKDTree(seeds).query(pts, k=2)
    # thin walls, blurred as a ~1 mm wall is on a coarser grid (partial volume)
    wall = np.exp(-(((dd[:, 1] - dd[:, 0]) / float(rng.uniform(0.8, 1.6))) ** 2))
    honey = rng.uniform(-990, -900) + (rng.uniform(-100, 50) + 950) * wall
    # reticulation: the zero crossings of smoothed noise form a network of lines in ground glass
    lo, hi = idx.min(0), idx.max(0) + 1
    field = ndimage.gaussian_filter(rng.standard_normal(tuple(hi - lo)).astype(np.float32),
                                    float(rng.uniform(2.5, 4.0)) / sp)
    g = field[tuple((idx - lo).T)]
    line = np.exp(-((g / (float(rng.uniform(0.15, 0.3)) * g.std() + 1e-6)) ** 2))
    glass = rng.uniform(-800, -600)
    ret = glass + (rng.uniform(-250, 0) - glass) * line
    outer = depth < float(rng.uniform(0.35, 0.65)) * depth_mm
    values = np.where(outer, honey, ret) + rng.normal(0, 20, len(pts))
    out[band] = values.astype(np.float32)
    return out


class RandFibrosisd(_LungPaintd):
    """Paint subpleural fibrosis (honeycombing, reticulation) into a training patch's lung;
    the label stays lung.

    Why: fibrotic lung is dense at the pleura, where the lung meets the chest wall and the
    diaphragm; under bases painted with fibrosis (`bench/painted_fibrosis.py`) the network
    called the liver and the spleen lung. Lung within 5-20 mm of soft tissue (the pleura), in
    a region 30-70 mm around a random point of it, is painted with `paint_fibrosis`; by our
    convention (docs/model.md) fibrosis is lung. Tried for the default model and not used: it
    did not stop that (docs/model_notes.md, "Stage 2: what was tried"); a training option for users' data.
    Hand-written because no maintained library synthesises fibrosis into CT.
    Expects channel-first (C, x, y, z) patches on `spacing` with HU scaled by `hu_window`.
    """

    def __init__(self, keys: Sequence[str] = ("image", "label"), prob: float = 0.2,
                 spacing: Sequence[float] = (1.5, 1.5, 2.0), hu_window: tuple[float, float] = (-1000.0, 1000.0),
                 min_lung_voxels: int = 4000):
        super().__init__(keys, prob, spacing, hu_window, min_lung_voxels)

    def fibrosis(self, image: np.ndarray, lung: np.ndarray) -> np.ndarray | None:
        """The patch `image` (x, y, z; scaled) with fibrosis in `lung` (bool), or None (no pleura)."""
        from scipy import ndimage

        hu = self._hu(image)
        soft = ~lung & (hu > -300.0)
        if not soft.any():
            return None
        depth_mm = float(self.R.uniform(5.0, 20.0))
        below = ndimage.distance_transform_edt(~soft, sampling=self.spacing)  # mm below the pleura
        near = below <= depth_mm
        edge = np.flatnonzero(lung & near)
        if edge.size == 0:
            return None
        centre = np.array(np.unravel_index(edge[self.R.randint(edge.size)], lung.shape))
        reach = self.R.uniform(30.0, 70.0, 3) / self.spacing
        grid = np.ogrid[tuple(slice(0, n) for n in lung.shape)]
        region = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, reach, strict=True)) <= 1.0
        band = lung & near & region
        if band.sum() < 50:
            return None
        rng = np.random.default_rng(self.R.randint(2 ** 31))
        return self._scaled(paint_fibrosis(hu, band, below, self.spacing, rng, depth_mm=depth_mm))

    def paint(self, image: np.ndarray, lung: np.ndarray) -> np.ndarray | None:
        return self.fibrosis(image, lung)


def paint_pneumonia(hu: np.ndarray, lung: np.ndarray, spacing: Sequence[float], rng: np.random.Generator,
                    n: int, radius_mm: tuple[float, float], consolidated: float, ggo_rise: float = 300.0,
                    weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(`hu` with `n` pneumonic lesions painted into `lung`, the lesions' voxels, their consolidated
    cores' voxels).

    Each lesion is a lobulated blob of radius in `radius_mm` centred in the lung within a third of
    its radius of the lung's surface (peripheral, as viral pneumonia is; `weight`, the same shape,
    weights where centres fall), clipped to the lung. Inside, the parenchyma rises by `ggo_rise`
    HU times its share of parenchyma (ground glass; vessels kept); with probability
    `consolidated` the inner 60 % of the radius becomes consolidation (0-40 HU) with air
    bronchograms — the vessels there become air-filled tubes of their calibre, as the bronchi
    beside them show. A pure function over arrays: `RandPneumoniad` paints training patches with
    it, `bench/painted_pneumonia.py` whole real chests.
    """
    from scipy import ndimage

    base = np.asarray(hu, np.float32)
    sp = np.asarray(spacing, float)
    depth = ndimage.distance_transform_edt(lung, sampling=sp)
    out = base.copy()
    lesion = np.zeros(lung.shape, bool)
    core = np.zeros(lung.shape, bool)
    for _ in range(n):
        r = float(rng.uniform(*radius_mm))
        near = lung & (depth <= r / 3.0)
        cand = np.flatnonzero(near)
        if cand.size == 0:
            break
        w = None if weight is None else np.asarray(weight, float)[near]  # in `cand`'s order
        pick = cand[rng.choice(cand.size, p=None if w is None else w / w.sum())]
        c = np.array(np.unravel_index(pick, lung.shape))
        reach = np.ceil(1.4 * r / sp).astype(int)
        lo = np.maximum(c - reach, 0)
        hi = np.minimum(c + reach + 1, lung.shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        grid = np.meshgrid(*[(np.arange(a, b) - ci) * s for a, b, ci, s in zip(lo, hi, c, sp, strict=True)],
                           indexing="ij")
        dist = np.sqrt(sum(g * g for g in grid))
        wobble = ndimage.gaussian_filter(rng.standard_normal(dist.shape).astype(np.float32), 6.0 / sp)
        wobble /= max(float(np.abs(wobble).max()), 1e-6)
        blob = (dist <= r * (1.0 + 0.3 * wobble)) & lung[box]
        lesion[box] |= blob
        if rng.random() < consolidated:
            core[box] |= blob & (dist <= 0.6 * r * (1.0 + 0.3 * wobble))
    if not lesion.any():
        return out, lesion, core
    texture = ndimage.gaussian_filter(rng.standard_normal(base.shape).astype(np.float32), 2.0 / sp)
    texture /= max(float(texture.std()), 1e-6)
    lung_hu, wall_hu = -850.0, 40.0  # a voxel's share of parenchyma: where its HU lies between them
    share = np.clip((wall_hu - base) / (wall_hu - lung_hu), 0.0, 1.0)
    ggo = lesion & ~core
    out[ggo] = np.minimum(base[ggo] + share[ggo] * ggo_rise * (1.0 + 0.15 * texture[ggo]),
                          np.maximum(base[ggo], -300.0))
    tubes = core & (((base > -500) & (depth > 3.0)) | (base < -900))  # an airway's lumen stays dark
    solid = core & ~tubes
    out[solid] = 20.0 + 20.0 * texture[solid]
    out[core & tubes] = -880.0 + 30.0 * texture[core & tubes]
    return out, lesion, core


class RandPneumoniad(_LungPaintd):
    """Paint pneumonia (peripheral ground glass, consolidated cores with air bronchograms) into a
    training patch's lung; the label stays lung.

    Why: pneumonia painted into the shared real chests (`bench/painted_pneumonia.py`) kept its
    ground glass but lost consolidated cores at the pleura on chests the model never saw (P(lung)
    ~0 there), though drawn masses (`RandMassd`) train on solid tissue at the pleura: those have
    no ground-glass halo and no air bronchograms. 1-3 lesions of 10-35 mm (`paint_pneumonia`),
    60 % of them with a consolidated core. A training option; see docs/model_notes.md, "Pneumonia, painted", for what it did.
    Hand-written because no maintained library synthesises pneumonia into CT.
    Expects channel-first (C, x, y, z) patches on `spacing` with HU scaled by `hu_window`.
    """

    def __init__(self, keys: Sequence[str] = ("image", "label"), prob: float = 0.3,
                 radius_mm: tuple[float, float] = (10.0, 35.0), consolidated: float = 0.6,
                 spacing: Sequence[float] = (1.5, 1.5, 2.0), hu_window: tuple[float, float] = (-1000.0, 1000.0),
                 min_lung_voxels: int = 4000):
        super().__init__(keys, prob, spacing, hu_window, min_lung_voxels)
        self.radius_mm = radius_mm
        self.consolidated = consolidated

    def paint(self, image: np.ndarray, lung: np.ndarray) -> np.ndarray | None:
        rng = np.random.default_rng(self.R.randint(2 ** 31))
        painted, lesion, _ = paint_pneumonia(self._hu(image), lung, self.spacing, rng,
                                             int(self.R.randint(1, 4)), self.radius_mm, self.consolidated)
        return self._scaled(painted) if lesion.any() else None


def geometry_transforms(pre: dict[str, Any], keys: Sequence[str]) -> list:
    """Orientation + spacing + HU window: the deterministic part shared by all pipelines."""
    modes = ["bilinear" if k == "image" else "nearest" for k in keys]
    lo, hi = pre["hu_window"]
    return [
        Orientationd(keys=list(keys), axcodes=pre["axcodes"], labels=(("L", "R"), ("P", "A"), ("I", "S"))),
        Spacingd(keys=list(keys), pixdim=tuple(pre["spacing"]), mode=modes),
        ScaleIntensityRanged(keys="image", a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True),
    ]


def train_transforms(pre: dict[str, Any], roi_size: Sequence[int], num_samples: int,
                     label_mapping: Any = None, binary: bool = True,
                     slab_prob: float = 0.0, mass_prob: float = 0.0,
                     fibrosis_prob: float = 0.0, collapse_prob: float = 0.0,
                     pneumonia_prob: float = 0.0) -> tuple[Compose, Compose]:
    """(cached deterministic part, random part) for training patches.

    `binary` trains lung vs background (labels 1 and 2 merged) for 2-channel networks;
    `slab_prob` turns that share of patches into slabs / cut views (`RandSlabd`);
    `mass_prob` puts a soft-tissue mass into the lung of that share (`RandMassd`);
    `fibrosis_prob` paints subpleural fibrosis into the lung of that share (`RandFibrosisd`);
    `collapse_prob` makes part of a lung airless in that share (`RandCollapsed`);
    `pneumonia_prob` paints pneumonia into the lung of that share (`RandPneumoniad`).
    """
    keys = ["image", "label"]
    cached = Compose([
        LoadCased(keys, label_mapping, binary),
        *geometry_transforms(pre, keys),
        CropForegroundd(keys=keys, source_key="image", allow_smaller=True),
        SpatialPadd(keys=keys, spatial_size=roi_size),
        EnsureTyped(keys=keys, track_meta=False),
    ])
    random = Compose([
        RandCropByPosNegLabeld(keys=keys, label_key="label", spatial_size=roi_size, pos=1, neg=1,
                               num_samples=num_samples, image_key="image", image_threshold=0),
        RandAffined(keys=keys, prob=0.5, rotate_range=(0.0, 0.0, np.pi / 12), scale_range=(0.1, 0.1, 0.1),
                    mode=("bilinear", "nearest"), padding_mode="border"),
        RandFlipLeftRightd(keys, prob=0.5, swap_labels=not binary),
        *([RandMassd(keys, prob=mass_prob, spacing=pre["spacing"], hu_window=pre["hu_window"])]
          if mass_prob > 0 else []),
        *([RandFibrosisd(keys, prob=fibrosis_prob, spacing=pre["spacing"], hu_window=pre["hu_window"])]
          if fibrosis_prob > 0 else []),
        *([RandCollapsed(keys, prob=collapse_prob, spacing=pre["spacing"], hu_window=pre["hu_window"])]
          if collapse_prob > 0 else []),
        *([RandPneumoniad(keys, prob=pneumonia_prob, spacing=pre["spacing"], hu_window=pre["hu_window"])]
          if pneumonia_prob > 0 else []),
        *([RandSlabd(keys, prob=slab_prob)] if slab_prob > 0 else []),
        RandScaleIntensityd(keys="image", factors=0.1, prob=0.5),
        RandShiftIntensityd(keys="image", offsets=0.05, prob=0.5),
        RandGaussianNoised(keys="image", std=0.02, prob=0.3),
        RandGaussianSmoothd(keys="image", prob=0.2),
    ])
    return cached, random


def val_transforms(pre: dict[str, Any], label_mapping: Any = None, binary: bool = True) -> Compose:
    keys = ["image", "label"]
    return Compose([
        LoadCased(keys, label_mapping, binary),
        *geometry_transforms(pre, keys),
        EnsureTyped(keys=keys, track_meta=False),
    ])


def infer_transforms(pre: dict[str, Any]) -> Compose:
    """Invertible preprocessing of a single image already held as a MetaTensor."""
    return Compose(geometry_transforms(pre, ["image"]))
