"""Sliding-window inference with a trained U-Net; the mask leaves on exactly the input's grid.

Pipeline: the scan (or, with `crop_margin_mm`, only the body's box) resampled onto the
model's grid (RAS, model spacing: MONAI's `Orientationd` + `Spacingd` grid, computed axis by
axis, `inference.resample`) -> HU window -> sliding window -> softmax -> P(lung) stays on
the model grid and is interpolated back (trilinear, so boundaries stay smooth) slab by slab,
only where it exceeds 0.1, straight into four uint8 levels -> HU boundary refinement ->
post-processing (two lungs, holes filled, sides from the affine, the dark rims the network
blurred, central airways out) on the lungs' box. No full-resolution float volume is ever
held: a 512x512x300 scan needs well under 2 GiB.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cc3d
import numpy as np
import torch
from monai.inferers import sliding_window_inference
from scipy import ndimage

from lungseg.core.anatomy import (
    BONE_HU,
    GAS_HU,
    MAX_GAS_SHARE,
    PARTIAL_VIEW_MM,
    body_hull,
    body_midline_x,
    drop_gas_pockets,
    is_thin_view,
    min_lung_volume_ml,
    scan_height_mm,
    split_left_right,
    view_axis,
)
from lungseg.core.errors import InputError
from lungseg.core.geometry import shifted_affine, spacing_of, superior_axis, voxel_volume_ml
from lungseg.core.labels import LEFT as LEFT_LABEL
from lungseg.core.labels import RIGHT as RIGHT_LABEL
from lungseg.core.morphology import bbox, distance_to, share_per_piece, square
from lungseg.core.noise import noise_meta, quieter
from lungseg.core.volume import Volume, reoriented, restored, working_orientation
from lungseg.inference.classical import ClassicalParts, segment_classical
from lungseg.inference.postprocess import (
    EDGE_HU,
    add_wrapped_masses,
    doubt_unwrapped,
    drop_fatty_pieces,
    fill_indentations,
    local_edge_hu,
    lung_levels,
    postprocess,
    refine_levels,
)
from lungseg.inference.resample import (
    AffineMap,
    AxisMap,
    box_corners,
    index_map,
    model_grid,
    resample_linear,
)
from lungseg.networks import load_model, resolve_device
from lungseg.transforms import DEFAULT_PREPROCESSING

#: Where the shipped default model lives inside the package.
DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "models" / "default.pt"
BACKENDS = ("torch", "onnxruntime")
#: P(lung) below this is background whatever the HU (`refine_boundary`'s `low`) ...
LOW, HIGH = 0.1, 0.9
#: ... except at the lungs' dark rims: voxels with P above `RIM_LOW`, darker than `RIM_HU` and
#: joined through such voxels to a lung already chosen are lung (`grow_into_rims`); a piece of
#: them with a median below `RIM_GAS_HU` is a bronchus' lumen (a contrast CTA's left upper-lobe
#: bronchus: -940 HU), not a rim (the recesses' partial volume: -420 to -780 HU)
RIM_LOW = 0.005
RIM_HU = EDGE_HU
RIM_GAS_HU = -900.0
#: Post-processing runs on the lungs' box grown by this much: farther than anything it looks
#: at around a lung (the airways' 25 mm keep-out zone of `fill_indentations`).
POST_MARGIN_MM = 30.0
#: Slices of the full grid interpolated at a time (a 512x512 slab of 16 is 16 MB of float32).
SLAB = 16


@dataclass
class InferenceSettings:
    """How the sliding window runs. The reference notebook uses roi 96, overlap 0.75."""

    roi_size: tuple[int, int, int] = (160, 160, 160)
    overlap: float = 0.25
    sw_batch_size: int = 1
    mode: str = "gaussian"
    refine: bool = True  # sharpen the boundary with the CT edge at full resolution
    #: a resampled volume up to this many voxels runs as ONE window (no overlap to pay for);
    #: 0 always slides roi_size windows. A chest at 2.5 mm is ~200x200x130.
    whole_volume_voxels: int = 256**3
    #: None: the network sees the whole scan, as in training (the default); a number: only the
    #: body's box grown by that many mm. 20 mm saves little here and changed thin-slab crops of
    #: the shared real chests by up to 0.02 Dice (less context), so it is off.
    crop_margin_mm: float | None = None
    #: "torch", or "onnxruntime" (ONNX Runtime; chosen by itself for an `.onnx` model)
    backend: str = "torch"
    #: a volume shorter than this along an axis (model-grid voxels, RAS) is padded to it by
    #: replicating its edge slices; None: the depth of the patch the network trained on (the
    #: checkpoint's `roi_size`) along the body axis, nothing in-plane. Training shows a thin
    #: slab or a cut view as a whole patch of replicated axial slices (`transforms.RandSlabd`);
    #: padded only to the next multiple of 16 (a single slice as 16 copies, not 96), views of
    #: the lung bases agreed less with their whole scans, 10 slices of an abdomen took in 14 mL
    #: of bowel gas and slabs through the IBSI mass kept 6 % of it (docs/model_notes.md, "Thin views
    #: padded as training showed them").
    min_window: tuple[int, int, int] | None = None

    def window_for(self, shape: tuple[int, ...]) -> tuple[int, int, int]:
        """The window actually used for a volume of `shape` (model-grid voxels)."""
        whole = tuple(-(-int(n) // 16) * 16 for n in shape)  # divisible by the U-Net's 2^4
        if self.whole_volume_voxels and int(np.prod(whole)) <= self.whole_volume_voxels:
            return tuple(max(w, int(m)) for w, m in zip(whole, self.min_window or (0, 0, 0), strict=True))
        return tuple(self.roi_size)


#: HU below which a classical-lung voxel a partial view's network mask left out is taken as lung
AERATED_HU = -700.0
#: median HU below which such a piece is an airway's lumen, not parenchyma
LUMEN_MEDIAN_HU = -950.0
#: A network piece too small for a lung that a partial view cuts (`add_cut_pieces`) is lung
#: from `CUT_PIECE_ML` up, with a median between `CUT_PIECE_HU` (darker: a bronchus' or the
#: trachea's lumen, -940 to -955 HU in a single slice) and `CUT_PIECE_MAX_HU` (denser: not
#: aerated), mostly (`CUT_PIECE_HULL`) inside the body hull.
CUT_PIECE_ML = 0.5
CUT_PIECE_HU = -900.0
CUT_PIECE_MAX_HU = -500.0
CUT_PIECE_HULL = 0.75
#: ... and lies within `CUT_PIECE_DEPTH_MM` (in-plane) of the body's surface, within
#: `CUT_PIECE_NEAR_MM` of a chosen lung, or within `CUT_PIECE_BONE_MM` of bone (HU > `BONE_HU`
#: after a 3x3 in-plane mean, which a sharp kernel's noise does not reach). A costophrenic recess
#: lies just inside the ribs, however thick the chest wall over it; a pocket of colon or stomach
#: gas lies under the abdominal wall, away from them. Of the pieces this step added in the partial
#: views of the shared scans (`--sweep` views, 1-10 slice views of the pathology scans and the
#: abdomen series; session 21 survey), the lung ones lay 12-25 mm deep and 0.8-6.7 mm from bone
#: (but one 0.6 mL anterior piece, median -509 HU: 23 mm deep, 16.5 mm from bone), or within 5 mm
#: of a lung (up to 101 mm deep); the bowel and stomach ones 21-110 mm deep and, but for three
#: pieces of 0.6-1.8 mL, 13-62 mm from bone. 40 mm of depth (session 20) let the ones 21-37 mm
#: deep in; 20 mm does not. (The phantoms lose lung: their lungs reach down in front, at the
#: midline, to the level of the bases, 23-35 mm under the abdominal wall and far from any rib; a
#: real lung's front ends higher, behind the costal cartilages.)
CUT_PIECE_DEPTH_MM = 20.0
CUT_PIECE_NEAR_MM = 5.0
CUT_PIECE_BONE_MM = 12.0
#: a mask piece more than this share in the air outside the body is not lung (`drop_outside_pieces`)
OUTSIDE_SHARE = 0.5


def is_partial_view(image: Volume) -> bool:
    """True for an input at most `PARTIAL_VIEW_MM` tall (it cannot hold a whole lung): there the
    network may miss a small lung piece whole, and the classical method's is added; and for a
    coronal or sagittal thin view (`core.anatomy.view_axis`)."""
    return (scan_height_mm(image.shape, image.affine) <= PARTIAL_VIEW_MM
            or is_thin_view(image.shape, image.affine))


def add_missed_pieces(labels: np.ndarray, other: np.ndarray, max_overlap: float = 0.05,
                      hu: np.ndarray | None = None, hull: np.ndarray | None = None,
                      affine: np.ndarray | None = None, axis: int | None = None) -> np.ndarray:
    """`labels` plus each connected lung piece of `other` (with its label) that `labels` missed.

    Only whole pieces are added (at most `max_overlap` of a piece may already be lung), so
    where both methods found a lung its boundary stays the network's. With the CT (`hu`), a
    piece of which more than `MAX_GAS_SHARE` is darker than `core.anatomy.GAS_HU` is not added:
    in a thin view of an abdomen the classical method takes pockets of bowel gas for lung
    (0.58-0.64 of them below -950 HU; the lung pieces this step added on the shared chests'
    views: at most 0.07). With the body `hull` and the `affine` too, a piece must also lie where
    lung lies (`_LungPosition`: near the skin, a rib or the spine, or a lung in `labels`): the
    classical method also takes a pocket of stomach or colon gas that is not mostly gas for
    lung (the abdomen series' views: 1.1-2.9 mL, 44 mm deep and 24 mm from bone; A0002's
    stomach under its left base: 3.4 mL, 30 mm deep, 42 mm from bone).
    """
    other = np.asarray(other)
    comp = cc3d.connected_components(other > 0, connectivity=26)
    n = int(comp.max())
    if n == 0:
        return labels
    size = np.bincount(comp.ravel(), minlength=n + 1)
    hit = np.bincount(comp[labels > 0].ravel(), minlength=n + 1)
    missed = (size > 0) & (hit <= max_overlap * size)
    if hu is not None and missed[1:].any():
        gas = np.bincount(comp.ravel(), weights=(np.asarray(hu) < GAS_HU).ravel(), minlength=n + 1)
        missed &= gas <= MAX_GAS_SHARE * size
    missed = np.flatnonzero(missed)
    missed = missed[missed > 0]
    if missed.size and hull is not None and affine is not None and hu is not None:
        where = _LungPosition(labels > 0, hu, hull, affine, axis)
        boxes = ndimage.find_objects(comp)
        missed = np.array([c for c in missed if where.fits(comp[boxes[c - 1]] == c, boxes[c - 1])], int)
    if missed.size:
        labels = labels.copy()
        add = np.isin(comp, missed)
        labels[add] = other[add]
    return labels


class _LungPosition:
    """Does a small piece lie where lung lies? Within `CUT_PIECE_DEPTH_MM` of the body's surface
    in-plane (the hull's edge, or the image's where the field of view cuts the body), within
    `CUT_PIECE_NEAR_MM` of `lung` (bool), or within `CUT_PIECE_BONE_MM` of bone (HU > `BONE_HU`
    after a 3x3 in-plane mean): a costophrenic recess lies just inside the ribs, a piece a vessel
    or a fissure cuts off lies beside its lung; a pocket of bowel or stomach gas lies under the
    abdominal wall, away from both (`CUT_PIECE_DEPTH_MM`, measured on the shared scans). The
    distances are computed on the piece's neighbourhood only, the bone once, when first needed."""

    def __init__(self, lung: np.ndarray, hu: np.ndarray, hull: np.ndarray, affine: np.ndarray,
                 axis: int | None = None):
        self.lung, self.hu, self.hull = lung, hu, hull
        self.ax = superior_axis(affine) if axis is None else axis
        self.spacing = spacing_of(affine)
        self.inplane = tuple(a for a in range(3) if a != self.ax)
        self.outside = self.bone = None

    def fits(self, sel: np.ndarray, bb: tuple[slice, ...]) -> bool:
        if self.outside is None:
            self.outside = ~np.asarray(self.hull, bool)
        if (distance_to(self.outside, sel, bb, self.spacing, CUT_PIECE_DEPTH_MM, self.inplane,
                        edge_is_target=True) <= CUT_PIECE_DEPTH_MM
                or distance_to(self.lung, sel, bb, self.spacing, CUT_PIECE_NEAR_MM) <= CUT_PIECE_NEAR_MM):
            return True
        if self.bone is None:  # only for a deep piece away from the lungs: one filter pass
            size = [1 if a == self.ax else 3 for a in range(3)]
            self.bone = ndimage.uniform_filter(np.asarray(self.hu, np.float32), size=size) > BONE_HU
        return distance_to(self.bone, sel, bb, self.spacing, CUT_PIECE_BONE_MM) <= CUT_PIECE_BONE_MM


def add_cut_pieces(labels: np.ndarray, found: np.ndarray, hu: np.ndarray, hull: np.ndarray,
                   affine: np.ndarray, min_volume_ml: float, midline_x: float | None = None,
                   cut_faces: tuple[bool, bool] = (True, True), axis: int | None = None) -> np.ndarray:
    """`labels` (the chosen lungs) plus the pieces of `found` (the network's refined mask before
    the lungs were chosen) that were dropped only for being too small for a lung, where the view
    cuts them: a strip of a lateral recess in a slab through the bases is cut off from its lung,
    which joins it only above the view (the 4D-CT's 30 mm slab at 10 % of the lung height: a
    14 mL strip under the 15 mL such a slab asks of a lung). Taken: pieces from `CUT_PIECE_ML`
    up to `min_volume_ml`, touching a face of the view along `axis` (default the head-foot axis;
    `cut_faces`: whether the array's low / high face is the image's), aerated (median HU between
    `CUT_PIECE_HU` and `CUT_PIECE_MAX_HU`: the trachea's lumen in a single slice is darker),
    inside the body `hull`, on a side (by the body's `midline_x`) where a lung was chosen, and
    within `CUT_PIECE_DEPTH_MM` of the body's surface in-plane (the hull's edge, or the image's
    where the field of view cuts the body), within `CUT_PIECE_NEAR_MM` of a chosen lung or
    within `CUT_PIECE_BONE_MM` of bone: a pocket of bowel gas deep under the diaphragm is none.
    """
    if not labels.any():
        return labels
    comp, n = cc3d.connected_components(np.asarray(found, bool), connectivity=26, return_N=True)
    if n == 0:
        return labels
    size_ml = np.bincount(comp.ravel(), minlength=n + 1) * voxel_volume_ml(affine)
    chosen = np.bincount(comp[labels > 0].ravel(), minlength=n + 1) > 0
    ax = superior_axis(affine) if axis is None else axis
    cut = np.zeros(n + 1, bool)
    for face, is_cut in zip((0, comp.shape[ax] - 1), cut_faces, strict=True):
        if is_cut:
            cut[np.unique(np.take(comp, face, axis=ax))] = True
    candidates = np.flatnonzero(cut & ~chosen & (size_ml >= CUT_PIECE_ML) & (size_ml < min_volume_ml))
    candidates = candidates[candidates > 0]
    if candidates.size == 0:
        return labels
    stats = cc3d.statistics(comp)
    add = np.zeros(labels.shape, bool)
    where = _LungPosition(np.asarray(labels) > 0, hu, hull, affine, ax)
    for c in candidates:
        bb = stats["bounding_boxes"][c]
        sel = comp[bb] == c
        median = float(np.median(np.asarray(hu)[bb][sel]))
        if not (CUT_PIECE_HU <= median <= CUT_PIECE_MAX_HU and np.mean(hull[bb][sel]) >= CUT_PIECE_HULL):
            continue
        if where.fits(sel, bb):
            add[bb] |= sel
    if not add.any():
        return labels
    sides = split_left_right(add, affine, midline_x)
    out = np.array(labels, copy=True)
    for side in (RIGHT_LABEL, LEFT_LABEL):
        if (labels == side).any():
            out[(sides == side) & (out == 0)] = side
    return out


def lung_like(labels: np.ndarray, hu: np.ndarray) -> np.ndarray:
    """`labels` without its 26-connected pieces of which more than `MAX_GAS_SHARE` is darker than
    `core.anatomy.GAS_HU`: what a partial view's extra steps (`add_cut_pieces`,
    dark strips) may grow from. In a thin view of an abdomen the chosen "lungs" can be pockets
    of bowel gas (0.38-0.51 of them below -950 HU in the shared abdomen series' bottom 10
    slices); grown, they took in 8.6 mL more of the bowel's contents. Such pieces stay as they
    are, and are not grown."""
    labels = np.asarray(labels)
    pieces, share = share_per_piece(labels > 0, np.asarray(hu) < GAS_HU)
    gassy = share > MAX_GAS_SHARE
    if not gassy.any():
        return labels
    return np.where(gassy[pieces], 0, labels).astype(labels.dtype)


def drop_outside_pieces(labels: np.ndarray, outside: np.ndarray, axis: int,
                        max_share: float = OUTSIDE_SHARE) -> np.ndarray:
    """`labels` without its 26-connected pieces of which more than `max_share` lies in the air
    outside the body (`outside`: the classical method's outside air, step 2) and that do not
    meet the view's in-plane edge (`axis`: the slices; their first and last do not count).

    Why: in a thick-sliced view of the top of the chest (A0001's top 22 % at 10 mm slices) the
    network called the air in the fold between neck and shoulder lung, where a thick slice
    averages it with skin (-925 to -499 HU): a 55 mL piece, 0.99 of it outside air, that the
    refinement grew down the body's surface. Lung cut by a cropped field of view meets the
    view's edge, where the classical method can take it for room air (single slices cut 5 mm
    inside the lungs' box: whole lungs of three shared chests): such a piece stays.
    """
    labels = np.asarray(labels)
    if not labels.any():
        return labels
    pieces, share = share_per_piece(labels > 0, outside)
    out = share > max_share
    for a in range(3):
        if a != axis:
            for face in (0, -1):
                out[np.take(pieces, face, axis=a)] = False
    out[0] = False
    if not out.any():
        return labels
    return np.where(out[pieces], 0, labels).astype(labels.dtype)


def without_gas(mask: np.ndarray, hu: np.ndarray, gas_hu: float) -> np.ndarray:
    """`mask` without its 26-connected pieces whose median HU is `gas_hu` or below (an airway's
    lumen, not lung): "median above" counted as "more than half of the piece above"."""
    mask = np.asarray(mask, bool)
    pieces, share = share_per_piece(mask, np.asarray(hu) > gas_hu)
    return (share > 0.5)[pieces]


def add_aerated_lung(labels: np.ndarray, other: np.ndarray, hu: np.ndarray, keep_out: np.ndarray | None = None,
                     max_hu: float = AERATED_HU, hull: np.ndarray | None = None, affine: np.ndarray | None = None,
                     axis: int | None = None) -> np.ndarray:
    """`labels` plus the voxels of `other` (with their labels) that are clearly aerated lung.

    In a slab or a single slice the network sees little context and can stop short of lung
    that is plainly there (a lingula tip, a lateral rim): darker than `max_hu`, found lung by
    the classical method, not central airway (`keep_out`) and not a piece of pure gas, it is
    lung. Soft tissue and the boundary stay the network's (the whole-scan mask keeps the same
    voxels: crops of the shared chests agree with it better, see docs/model_notes.md). With the body
    `hull` and the `affine`, a piece of them that does not touch `labels`' lung must lie where
    lung lies (`_LungPosition`, as for `add_missed_pieces`, whose pockets of stomach gas it
    would otherwise take in voxel by voxel).
    """
    hu = np.asarray(hu)
    add = (labels == 0) & (np.asarray(other) > 0)
    add &= hu < max_hu
    if keep_out is not None:
        add &= ~keep_out
    if not add.any():
        return labels
    # a piece that is gas rather than parenchyma (median below LUMEN_MEDIAN_HU: a bronchus' lumen
    # at the hilum, which a thin view's own airway search cannot follow up to the trachea) stays out
    add = without_gas(add, hu, LUMEN_MEDIAN_HU)
    if add.any() and hull is not None and affine is not None:
        # pieces joined to the network's lung come with it; only those apart are judged
        lung = np.asarray(labels) > 0
        comp = cc3d.connected_components(add | lung, connectivity=26)
        with_lung = np.zeros(int(comp.max()) + 1, bool)
        with_lung[np.unique(comp[lung])] = True
        where = _LungPosition(lung, hu, hull, affine, axis)
        for c, bb in enumerate(ndimage.find_objects(comp), start=1):
            if bb is not None and not with_lung[c] and not where.fits(comp[bb] == c, bb):
                add[bb] &= comp[bb] != c
    if add.any():
        labels = labels.copy()
        labels[add] = np.asarray(other)[add]
    return labels


def grow_into_rims(labels: np.ndarray, rim: np.ndarray, hu: np.ndarray, keep_out: np.ndarray | None = None,
                   affine: np.ndarray | None = None, midline_x: float | None = None,
                   max_hu: float = RIM_HU) -> np.ndarray:
    """`labels` (the chosen lungs, 1/2) plus the dark voxels of `rim` joined to them.

    Why: the network works on a 2.5 mm grid and blurs a lung's thin dark edges (the
    costophrenic recesses beside the liver and spleen, a few mm wide) to P(lung) below `LOW`;
    the whole scan keeps most of them through the lung above, a view of the lung bases
    alone did not (crops of the lowest 10 % of the shared chests 0.89-0.93 Dice against the
    whole scan). A voxel of `rim` (P just above `RIM_LOW`) darker than `max_hu` is lung when a
    path of such voxels joins it to a lung; it takes that lung's label. Grown from the lungs
    already chosen, so dark air elsewhere (bowel, air outside the body, a skin fold) is not
    reached; `keep_out` (the central airways) is not crossed, and gas (a piece of the dark voxels
    with a median below `RIM_GAS_HU`: a lobar bronchus' lumen) is not taken. A rim joined to both
    lungs (at the anterior junction) is split at the body's `midline_x` (world x of `affine`).
    A partial view passes the body hull as `rim` (P not asked): there the strips of recess the
    view cut off from the lung above lie where P is ~0.
    """
    if rim is None:
        return labels
    dark = rim & (labels == 0)
    dark &= np.asarray(hu) < max_hu
    if keep_out is not None:
        dark &= ~keep_out
    box = bbox(dark, pad=1)  # the dark voxels' box (and the lung voxels next to them): less to label
    if box is None:
        return labels
    dark, lab = dark[box], np.asarray(labels)[box]
    # a piece of gas (median below RIM_GAS_HU) is an airway's lumen at the hilum, not a rim of lung
    dark = without_gas(dark, np.asarray(hu)[box], RIM_GAS_HU)
    comp, n = cc3d.connected_components(dark | (lab > 0), connectivity=26, return_N=True)
    right = np.bincount(comp[lab == RIGHT_LABEL], minlength=n + 1)
    left = np.bincount(comp[lab == LEFT_LABEL], minlength=n + 1)
    side = np.where(right + left == 0, 0, np.where(right >= left, RIGHT_LABEL, LEFT_LABEL)).astype(np.uint8)
    side[0] = 0
    grown = side[comp[dark]]
    both = ((right > 0) & (left > 0))[comp[dark]]
    if both.any() and affine is not None and midline_x is not None:
        idx = np.argwhere(dark)[both] + [s.start for s in box]
        world_x = idx @ np.asarray(affine, float)[0, :3] + float(affine[0, 3])
        grown[both] = np.where(world_x > midline_x, RIGHT_LABEL, LEFT_LABEL)  # RAS+: right is +x
    out = np.array(labels, copy=True)
    out[box][dark] = grown
    return out


class Predictor:
    """A model loaded once, applied to many volumes (batch prediction reuses it).

    `backend` "torch" runs the checkpoint with PyTorch; "onnxruntime" runs an `.onnx` file
    (`lungseg export`), or a checkpoint exported on the fly, with ONNX Runtime (CUDA where
    its CUDA provider and the device allow, else the CPU).
    """

    def __init__(self, model_path: str | Path | None = None, device: str = "auto",
                 settings: InferenceSettings | None = None, backend: str | None = None):
        settings = settings or InferenceSettings()
        backend = backend or settings.backend
        if backend not in BACKENDS:
            raise InputError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        path = Path(model_path) if model_path is not None else DEFAULT_MODEL
        if model_path is None and not path.is_file():
            raise InputError("no default model is installed; pass --model RUN/best.pt "
                             "(or run `make pretrained`)", path)
        self.device = resolve_device(device)
        if path.suffix.lower() == ".onnx":
            backend = "onnxruntime"
        if backend == "onnxruntime":
            from lungseg.inference.runtime import OrtModel

            # one intra-op thread fewer on the CPU, as for torch in `_sharing_a_core`: the
            # session's thread count is fixed when it is made, and the anatomy thread runs
            # beside the network (2 ORT threads + numpy on 2 cores: 3.0 s against 2.2 s a case)
            n = torch.get_num_threads()
            self.model = OrtModel(path, device=self.device.type,
                                  threads=max(1, n - 1) if self.device.type == "cpu" else None)
            self.model_settings = self.model.settings
        else:
            self.model, self.model_settings = load_model(path, self.device)
        self.backend = backend
        self.preprocessing = {**DEFAULT_PREPROCESSING, **self.model_settings.get("preprocessing", {})}
        # the padding window resolved against this checkpoint (a copy: the caller's settings stay)
        depth = int((self.model_settings.get("roi_size") or (0, 0, 0))[2])
        self.settings = dataclasses.replace(settings, min_window=tuple(
            int(n) for n in (settings.min_window or (0, 0, depth))))
        self.model_path = path
        # the last image's classical mask (or its steps), for the quality check: (the image, the
        # mask, the orientation transform it was worked out in or None)
        self._classical: tuple[weakref.ref, ClassicalParts | Volume | Future, np.ndarray | None] | None = None
        #: work out the classical mask for `classical_reference` in a thread while the
        #: post-processing runs (the batch's quality check asks for it next; off for callers
        #: that never do, so no core is spent on it)
        self.reference_ahead = False
        #: functions run in that same background thread after it, while the post-processing
        #: still runs on the main thread (the batch warms up the DICOM SEG writer there)
        self.beside_postprocessing: list[Callable[[], object]] = []
        self._reference_pool: ThreadPoolExecutor | None = None

    # --- the network on the model grid -------------------------------------------------
    def _model_box(self, image: Volume, hull: np.ndarray | None):
        """(model-grid affine of the box the network sees, its shape, the map from it to the image:
        axis by axis, or a full `AffineMap` for a sheared (gantry-tilted) image)."""
        hu = image.array
        gshape, gaff = model_grid(hu.shape, image.affine, self.preprocessing["spacing"])
        to_image = index_map(image.affine, gaff)  # axis by axis unless the image grid is sheared
        lo, hi = np.zeros(3, int), np.array(gshape, int)
        m = self.settings.crop_margin_mm
        box = bbox(hull, pad=0) if (hull is not None and m is not None) else None
        if box is not None and isinstance(to_image, AffineMap):
            pad = np.ceil(m / spacing_of(image.affine)).astype(int)
            first = np.maximum(0, [b.start for b in box] - pad)
            last = np.minimum(np.array(hu.shape) - 1, [b.stop - 1 for b in box] + pad)
            ends = box_corners(to_image.inverse().matrix, first, last)
            lo = np.maximum(0, np.floor(ends.min(axis=1)).astype(int))
            hi = np.minimum(gshape, np.ceil(ends.max(axis=1)).astype(int) + 1)
        elif box is not None:
            pad = np.ceil(m / spacing_of(image.affine)).astype(int)
            for j in range(3):
                a = to_image.perm[j]
                first = max(0, box[a].start - pad[a])
                last = min(hu.shape[a] - 1, box[a].stop - 1 + pad[a])
                ends = (np.array([first, last]) - to_image.offset[j]) / to_image.scale[j]
                lo[j] = max(0, int(math.floor(ends.min())))
                hi[j] = min(gshape[j], int(math.ceil(ends.max())) + 1)
        shape = hi - lo
        whole = np.array(self.settings.window_for(tuple(shape)))
        if np.all(whole >= -(-shape // 16) * 16):  # one window: grow the box to it
            lo -= (whole - shape) // 2
            shape = whole
        return shifted_affine(gaff, lo), tuple(int(n) for n in shape), to_image.shifted(lo)

    @torch.inference_mode()
    def _model_probability(self, x: np.ndarray) -> np.ndarray:
        """P(lung) on the model grid for a preprocessed [0, 1] volume (float32, same shape)."""
        t = torch.from_numpy(x)[None, None].to(self.device)
        use_amp = self.device.type == "cuda" and self.backend == "torch"
        with torch.autocast(self.device.type, enabled=use_amp):
            logits = sliding_window_inference(
                t, self.settings.window_for(x.shape), self.settings.sw_batch_size, self.model,
                overlap=self.settings.overlap, mode=self.settings.mode, padding_mode="replicate",
            )
        return (1.0 - torch.softmax(logits.float(), dim=1)[0, 0]).cpu().numpy()

    def _network(self, image: Volume, hull: np.ndarray | None):
        """(P(lung) on the model box, the box's affine)."""
        box_aff, shape, amap = self._model_box(image, hull)
        # only the image's part that the box's trilinear samples touch is read
        if isinstance(amap, AffineMap):  # a sheared image: the box's corners bound what it reads
            ends = box_corners(amap.matrix, np.zeros(3), np.array(shape) - 1)
            src_lo = np.clip(np.floor(ends.min(axis=1)).astype(int), 0, np.array(image.shape) - 1)
            src_hi = np.clip(np.ceil(ends.max(axis=1)).astype(int) + 1, src_lo + 1, image.shape)
            local = AffineMap(amap.matrix.copy())
            local.matrix[:3, 3] -= src_lo
        else:
            src_lo = [0, 0, 0]
            src_hi = list(image.shape)
            for j in range(3):
                a = amap.perm[j]
                ends = amap.offset[j] + amap.scale[j] * np.array([0, shape[j] - 1])
                src_lo[a] = int(np.clip(math.floor(ends.min()), 0, image.shape[a] - 1))
                src_hi[a] = int(np.clip(math.ceil(ends.max()) + 1, src_lo[a] + 1, image.shape[a]))
            local = AxisMap(amap.perm, amap.scale,
                            amap.offset - np.array([src_lo[a] for a in amap.perm], float))
        src = image.array[tuple(slice(a, b) for a, b in zip(src_lo, src_hi, strict=True))]
        x = resample_linear(src, local, shape)
        lo_hu, hi_hu = self.preprocessing["hu_window"]
        np.clip(x, lo_hu, hi_hu, out=x)
        x -= lo_hu
        x /= hi_hu - lo_hu
        return self._model_probability(x), box_aff

    def lung_levels(self, image: Volume, hull: np.ndarray | None = None, rims: bool = False):
        """P(lung) back on the image's grid as `postprocess.lung_levels` (uint8) on a box.

        Returns (levels, box): the box (slices of the image grid) holds every voxel whose
        interpolated P(lung) exceeds `LOW` and that can connect to P > 0.5 (what the HU
        refinement may keep); outside it the level is 0. None when the network finds no lung.
        With `rims`, (levels, box, rim): also where `RIM_LOW` < P <= `LOW` on the same box (bool;
        the box already spans the lungs, whose rims are what `grow_into_rims` looks for).
        """
        prob, box_aff = self._network(image, hull)
        back = index_map(box_aff, image.affine)  # image index -> model-box index
        above = bbox(_reachable(prob), pad=0)
        if above is None:
            return (None, None, None) if rims else (None, None)
        box = _image_box(back, above, prob.shape, image.shape)
        if box is None:
            return (None, None, None) if rims else (None, None)
        shape = tuple(s.stop - s.start for s in box)
        levels = np.zeros(shape, np.uint8)
        rim = np.zeros(shape, bool) if rims else None
        start = np.array([s.start for s in box])
        for k in range(0, shape[0], SLAB):
            n = min(SLAB, shape[0] - k)
            piece = resample_linear(prob, back.shifted(start + [k, 0, 0]), (n, *shape[1:]))
            levels[k:k + n] = lung_levels(piece, LOW, HIGH)
            if rims:
                rim[k:k + n] = (piece > RIM_LOW) & (levels[k:k + n] == 0)
        return (levels, box, rim) if rims else (levels, box)

    def lung_probability(self, image: Volume) -> np.ndarray:
        """P(lung) on the input grid (float32, image.shape): for inspection; `predict` never holds it."""
        ornt = working_orientation(image.affine)
        if ornt is not None:
            return restored(self.lung_probability(reoriented(image, ornt)), ornt)
        image = quieter(image)
        prob, box_aff = self._network(image, body_hull(image.array, image.affine))
        back = index_map(box_aff, image.affine)
        out = np.zeros(image.shape, np.float32)
        for k in range(0, image.shape[0], SLAB):
            n = min(SLAB, image.shape[0] - k)
            out[k:k + n] = resample_linear(prob, back.shifted([k, 0, 0]), (n, *image.shape[1:]))
        return out

    @contextmanager
    def _sharing_a_core(self):
        """torch on one thread fewer while the anatomy thread runs beside it: on 2 cores, 2 torch
        threads plus the anatomy's numpy wait on each other at every operator's barrier (the
        network took 3x longer beside it than with one thread)."""
        n = torch.get_num_threads()
        if self.device.type != "cpu" or self.backend != "torch" or n < 2:
            yield
            return
        torch.set_num_threads(n - 1)
        try:
            yield
        finally:
            torch.set_num_threads(n)

    # --- the mask ---------------------------------------------------------------------------
    def predict(self, image: Volume, postprocessing: bool = True) -> Volume:
        """Lung mask (0 background, 1 right, 2 left) with the image's shape and affine.

        A volume stored in another voxel order than `WORKING_AXCODES` is segmented reoriented to
        it (flips and axis swaps, no resampling) and its mask put back: every storage of a scan
        gets the same mask, to the voxel."""
        ornt = working_orientation(image.affine)
        if ornt is None:
            return self._predict(image, postprocessing)
        work = reoriented(image, ornt)
        mask = self._predict(work, postprocessing)
        if self._classical is not None and self._classical[0]() is work:
            self._classical = (weakref.ref(image), self._classical[1], ornt)
        return Volume(restored(mask.array, ornt), image.affine.copy(), mask.meta)

    def _predict(self, image: Volume, postprocessing: bool) -> Volume:
        """`predict` on a volume stored in the working order."""
        self._classical = None
        caller = image  # the quality check's classical mask is keyed to the caller's image
        image = quieter(image)  # a noisy low-dose scan smoothed to the noise the model knows
        hu = np.asarray(image.array)
        labels = np.zeros(hu.shape, np.uint8)
        rim = None
        if not postprocessing:
            levels, box = self.lung_levels(image, body_hull(hu, image.affine))
        else:
            # the anatomy (body hull, midline, the classical steps and the airway tree) is
            # numpy/scipy work that releases the GIL: it runs beside the network
            hull = _Once(body_hull, hu, image.affine)
            midline = _Once(body_midline_x, hu, image.affine)
            with ThreadPoolExecutor(1) as pool:
                anatomy = pool.submit(_anatomy, image, hull, midline)
                with self._sharing_a_core():
                    levels, box, rim = self.lung_levels(
                        image, hull() if self.settings.crop_margin_mm is not None else None, rims=True)
                # the anatomy thread needs these last: taken over here when the network is done first
                midline()
                hull()
                hull, midline_x, parts, airways_all = anatomy.result()
            # the quality check's classical mask reuses its steps (a weak reference: a
            # finished case's CT is not kept alive by the predictor)
            self._classical = (weakref.ref(caller), self._ahead(parts.lungs) if self.reference_ahead else parts, None)
            for fn in self.beside_postprocessing:
                self._ahead(fn)
        if levels is None:
            if postprocessing and is_partial_view(image):
                labels = add_missed_pieces(labels, self._reference(caller, parts), hu=hu, hull=hull,
                                           affine=image.affine, axis=view_axis(hu.shape, image.affine))
            return Volume(labels, image.affine.copy(), {"source": image.meta.get("path"), **noise_meta(image)})
        thin = is_thin_view(hu.shape, image.affine)
        ax = view_axis(hu.shape, image.affine)  # the slices: axial, or a coronal / sagittal thin view's
        if postprocessing and self.settings.refine and thin:
            levels = doubt_unwrapped(levels, hu[box], ax)
        if self.settings.refine:
            # the edge's HU half-way between the lung there and fat: dense lung keeps its rim
            lung = refine_levels(levels, hu[box], local_edge_hu(levels, hu[box], image.spacing))
        else:
            lung = levels >= 3
        # dense tissue the network half-believes (P 0.3-0.9): a tumour the lung wraps, maybe
        mass = None
        if postprocessing and self.settings.refine:
            mass = (levels - np.uint8(2)) < 2
            mass &= hu[box] >= EDGE_HU
            mass &= ~lung
        if not postprocessing:
            labels[box] = lung
            return Volume(labels, image.affine.copy(), {"source": image.meta.get("path"), **noise_meta(image)})
        pbox = self._post_box(box, image)
        sub = np.zeros(tuple(s.stop - s.start for s in pbox), np.uint8)
        inner = tuple(slice(b.start - p.start, b.stop - p.start) for b, p in zip(box, pbox, strict=True))
        sub[inner] = lung
        del lung
        # where the network is sure there is no lung (P <= LOW; all of the margin round its box)
        outside = np.ones(sub.shape, bool)
        np.equal(levels, 0, out=outside[inner])
        del levels
        if ax != superior_axis(image.affine):
            # a coronal or sagittal thin view, where no airway search runs (it follows the trachea
            # down axial slices): the trachea and bronchi are the lumen the network rules out
            airways_all = airways_all.copy()
            airways_all[pbox] |= _lumen_ruled_out(outside, hu[pbox], hull[pbox], image.affine, ax)
        aff = shifted_affine(image.affine, [s.start for s in pbox])
        # fatty soft tissue out before the lungs are chosen: what is left of a piece must
        # still make a lung's volume (a skin fold between arm and body is not one)
        reference = self._reference(caller, parts)
        sub = drop_fatty_pieces(sub, hu[pbox], reference[pbox], aff)
        partial = is_partial_view(image)
        found = sub > 0 if partial else None
        min_ml = min_lung_volume_ml(hu.shape, image.affine)
        sub = postprocess(sub, aff, min_volume_ml=min_ml, midline_x=midline_x, hu=hu[pbox], hull=hull[pbox],
                          outside=outside, axis=ax)
        del outside
        if partial:  # strips of lung the view cut off from their lung (see add_cut_pieces)
            grown = add_cut_pieces(lung_like(sub, hu[pbox]), found, hu[pbox], hull[pbox], aff, min_ml,
                                   midline_x, cut_faces=(pbox[ax].start == 0, pbox[ax].stop == hu.shape[ax]),
                                   axis=ax)
            sub = np.where(sub > 0, sub, grown)
            del found, grown
        else:
            del hull
        box_aff = shifted_affine(image.affine, [b.start for b in box])
        if mass is not None:
            sub[inner] = add_wrapped_masses(sub[inner], mass, hu[box], box_aff, thin=thin, axis=ax)
            del mass
        airways = airways_all[pbox]
        sub[inner] = grow_into_rims(sub[inner], rim, hu[box], keep_out=airways[inner], affine=box_aff,
                                    midline_x=midline_x)
        del rim
        if not partial:
            del airways_all
        sub = fill_indentations(sub, aff, keep_out=airways, axis=ax)  # nodules at the pleura
        sub[airways] = 0  # trachea and main bronchi are not lung
        labels[pbox] = sub
        if partial:  # lung the network missed in a partial view (see PARTIAL_VIEW_MM)
            labels = add_missed_pieces(labels, reference, hu=hu, hull=hull, affine=image.affine, axis=ax)
            labels = add_aerated_lung(labels, reference, hu, keep_out=airways_all, hull=hull,
                                      affine=image.affine, axis=ax)
            # the recesses' thin dark strips that a view of the bases sees cut off from the lung
            # above it, where the network's P is ~0: joined to a lung through dark voxels inside
            # the body, they are lung whatever P says (views of the lowest 10 % of the shared
            # chests: 0.86-0.97 -> 0.88-0.97 Dice against the whole scan, see docs/model_notes.md)
            grown = grow_into_rims(lung_like(labels, hu), hull, hu, keep_out=airways_all,
                                   affine=image.affine, midline_x=midline_x)
            labels = np.where(labels > 0, labels, grown)
            labels = drop_outside_pieces(labels, parts.outside_air(), ax)
        if thin:
            labels = drop_gas_pockets(labels, hu, image.affine)
        return Volume(labels, image.affine.copy(), {"source": image.meta.get("path"), **noise_meta(image)})

    @property
    def min_window(self) -> tuple[int, int, int]:
        """Thin volumes are padded to this window (`InferenceSettings.min_window`, resolved)."""
        return self.settings.min_window

    def _ahead(self, fn: Callable[[], object]) -> Future:
        """`fn()` queued in the background thread (e.g. the classical mask's scipy/numpy/cc3d
        work, beside the post-processing on the other core)."""
        if self._reference_pool is None:
            self._reference_pool = ThreadPoolExecutor(1, thread_name_prefix="lungseg-reference")
        return self._reference_pool.submit(fn)

    def _reference(self, image: Volume, parts: ClassicalParts) -> np.ndarray:
        """The classical mask (post-processing's reference), kept for the quality check of the
        same image."""
        held = self._classical[1] if self._classical is not None else None
        mask = held.result() if isinstance(held, Future) else parts.lungs()
        self._classical = (weakref.ref(image), mask, None)
        return mask.array

    @staticmethod
    def _post_box(box, image: Volume) -> tuple[slice, ...]:
        """`box` grown by `POST_MARGIN_MM`, its start on the block grids post-processing pools
        on (so a box gives exactly the whole grid's answer)."""
        sp = spacing_of(image.affine)
        out = []
        for a, s in enumerate(box):
            f = math.lcm(int(max(1, math.floor(2.5 / sp[a]))), int(max(1, round(2.0 / sp[a]))))
            pad = int(math.ceil(POST_MARGIN_MM / sp[a]))
            start = max(0, (s.start - pad) // f * f)
            out.append(slice(start, min(image.shape[a], s.stop + pad)))
        return tuple(out)

    def classical_reference(self, image: Volume) -> Volume:
        """The classical method's mask of `image`, for the quality check: from the steps the
        last `predict` of this very image already worked out, else computed afresh."""
        if self._classical is not None and self._classical[0]() is image:
            _, held, ornt = self._classical
            self._classical = None
            if isinstance(held, Future):
                held = held.result()
            mask = held if isinstance(held, Volume) else held.lungs()
            if ornt is None:
                return mask
            return Volume(restored(mask.array, ornt), image.affine.copy(), mask.meta)
        return segment_classical(image)


class _Once:
    """`fn(*args)`, computed once by whichever thread asks first (a later caller waits for it)."""

    def __init__(self, fn, *args):
        self._fn, self._args = fn, args
        self._lock = threading.Lock()
        self._done, self._value = False, None

    def __call__(self):
        with self._lock:
            if not self._done:
                self._value = self._fn(*self._args)
                self._done, self._args = True, None
        return self._value


def _anatomy(image: Volume, hull: _Once | None = None, midline: _Once | None = None):
    """(body hull, body midline x, the classical steps, the central airways) of `image`.

    `hull`, `midline`: the body hull and midline as `_Once`s, needed as late as possible here
    (the midline by the airway search, after the 2 mm grid and the candidate air; the hull
    last), so the other thread can take them over."""
    hu = np.asarray(image.array)
    hull = hull or _Once(body_hull, hu, image.affine)
    midline = midline or _Once(body_midline_x, hu, image.affine)
    parts = ClassicalParts(image, midline_x=midline)
    airways = parts.airways()
    return hull(), midline(), parts, airways


#: Airway lumen (mm of wall added round it) in a coronal or sagittal thin view (`_lumen_ruled_out`)
VIEW_LUMEN_HU = -900.0
VIEW_WALL_MM = 2.0


def _lumen_ruled_out(outside: np.ndarray, hu: np.ndarray, hull: np.ndarray, affine: np.ndarray,
                     axis: int) -> np.ndarray:
    """The central airways of a coronal or sagittal thin view: air darker than `VIEW_LUMEN_HU`
    inside the body where the network rules lung out (P <= LOW), with `VIEW_WALL_MM` of wall
    in-plane. Why: the steps that add the classical method's lung to a partial view (a lung
    piece the network missed, aerated lung, dark rims) keep the airway tree out, but the tree is
    tracked down axial slices and a coronal view has none: a coronal slice through LIDC-0314's
    carina got its left main bronchus as lung (the network's P there: median 0.22)."""
    lumen = outside & (hu < VIEW_LUMEN_HU) & hull
    if not lumen.any():
        return lumen
    return ndimage.binary_dilation(lumen, square(VIEW_WALL_MM, spacing_of(affine), axis))


def _image_box(back: AxisMap | AffineMap, above: tuple[slice, ...], model_shape, image_shape):
    """The image-grid box (slices) whose voxels map into the model box `above` (model indices;
    `back`: image index -> model index), or None when none does."""
    if isinstance(back, AffineMap):
        ends = box_corners(back.inverse().matrix, [s.start - 1 for s in above], [s.stop for s in above])
        lo = np.maximum(0, np.floor(ends.min(axis=1)).astype(int))
        hi = np.minimum(image_shape, np.ceil(ends.max(axis=1)).astype(int) + 1)
        if np.any(hi <= lo):
            return None
        return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    box = []
    for a in range(3):
        j = back.perm[a]
        c = np.clip(back.offset[a] + back.scale[a] * np.arange(image_shape[a]), 0, model_shape[j] - 1)
        idx = np.flatnonzero((c > above[j].start - 1) & (c < above[j].stop))
        if idx.size == 0:
            return None
        box.append(slice(int(idx[0]), int(idx[-1]) + 1))
    return tuple(box)


def _reachable(prob: np.ndarray) -> np.ndarray:
    """Model-grid voxels with P > `LOW` that a full-grid path of P > `LOW` can join to P > 0.5.

    On the full grid such a path runs through interpolation cells, each with a corner above
    `LOW`, and corners of neighbouring cells lie at most two model voxels apart: so the
    components of the one-voxel dilation of P > `LOW` that hold some P > 0.5 contain every
    voxel the refinement can keep, and stray specks (box corners, far air) fall away.
    """
    above = prob > LOW
    lab = cc3d.connected_components(ndimage.binary_dilation(above, np.ones((3, 3, 3), bool)), connectivity=26)
    ids = np.unique(lab[prob > 0.5])
    keep = np.zeros(int(lab.max()) + 1, bool)
    keep[ids[ids > 0]] = True
    return above & keep[lab]
