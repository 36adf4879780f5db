"""Right and left by anatomy: which lung is the patient's right, from the affine and the body.

Labels: 1 RIGHT lung, 2 LEFT lung (the patient's sides). The affine maps indices to RAS+ mm:
world x grows towards the patient's right, so the right lung is the one at LARGER world x
(nibabel / NIfTI convention; DICOM LPS+ is the mirror, with +x towards the patient's left).

Example (two boxes; in an identity affine larger x is the patient's right)::

    >>> import numpy as np
    >>> lung = np.zeros((40, 20, 20), bool)
    >>> lung[2:15, 5:15, 5:15] = True; lung[25:38, 5:15, 5:15] = True
    >>> sides = split_left_right(lung, np.eye(4))
    >>> int(sides[30, 10, 10]), int(sides[5, 10, 10])  # larger x = right (1)
    (1, 2)
"""

from __future__ import annotations

from collections.abc import Callable

import cc3d
import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from skimage.draw import polygon

from lungseg.core.geometry import (
    downsampled_affine,
    right_left_axis,
    spacing_of,
    superior_axis,
    voxel_volume_ml,
)
from lungseg.core.labels import LEFT, RIGHT
from lungseg.core.morphology import ball, bbox, pool_any, share_per_piece, square, upsample_nearest

#: Air (lung parenchyma included) versus soft tissue, at a few mm.
AIR_THRESHOLD_HU = -320.0
#: Soft tissue and denser: the body, as opposed to the air around it (HU threshold).
BODY_HU = -500.0
#: A component whose median is darker than this may be gas (room air, stomach, bowel), not
#: lung: aerated lung parenchyma is about -850 HU. Very severe emphysema goes below it (more than
#: half the lung under -960 HU), so such a piece is gas only where it is not wholly inside the
#: body or holds almost no structure inside (`is_gas`).
GAS_MEDIAN_HU = -960.0
#: Vessels, airway walls, septa: denser than this at full resolution.
VESSEL_HU = -700.0
#: Under this share of its interior (deeper than `INTERIOR_MM` in-plane) denser than
#: `VESSEL_HU`, a dark piece is gas: pure gas holds only noise there (-700 HU is 300 HU above
#: air: ten sigmas of ordinary noise, three of low-dose noise, whose speckle the median removes).
#: Lung does not (session 22, measured before the median): the shared chests' whole lungs
#: 0.06-0.22, and with emphysema painted into them until more than half of the lung is at
#: -985 HU (medians -968 to -983 HU) 0.012-0.09 — the least an apex crop of a chest of 5 mm
#: slices, where vessels are few and thin (kept with the median too: `bench/painted_emphysema.py`).
MIN_VESSEL_SHARE = 0.002
INTERIOR_MM = 2.0
#: A dark piece less than this share inside the body's hull is gas: air at the body's surface or
#: at the edge of a field of view drawn tight round the body (LIDC-0314's above its apex, median
#: -980 HU: 0.88 inside); a lung pokes out of the hull only where the field of view cuts it.
WHOLLY_INSIDE = 0.97
#: A dark piece smaller than this (mL) is judged by its median alone: stomach and bowel pockets
#: in thin views have folds and contents inside (the held-out phantoms' at their lung bases:
#: 2-51 mL, 0.1-7 % of their interior above -700 HU, as much as lung); a lung dark enough to
#: matter fills a whole scan's or a thick view's hundreds of mL (painted: 258 mL in an apex crop).
EMPHYSEMA_MIN_ML = 100.0
#: A mask (or a piece of one) with more than `MAX_GAS_SHARE` of its voxels darker than `GAS_HU`
#: may be gas rather than lung: pockets of bowel gas in a thin view of an abdomen (the shared
#: abdomen series' bottom slices: 0.38-0.64), or very severe emphysema (an emphysema index LAA-950
#: of a quarter or more). The lung of the shared real chests: at most 0.07 in any thin view.
GAS_HU = -950.0
MAX_GAS_SHARE = 0.25
#: Cortical bone: ribs, vertebrae, sternum (and dense contrast, which the profile tolerates).
BONE_HU = 200.0
#: A thin view's vertebral body whose cortex the ~1 mm read finds broken (a thick slice through
#: an end plate: Lung-PET-CT-Dx A0002's 8 mm slices) is read again with its bone closed by a disc
#: of this radius, so that its marrow is enclosed, and counts where it lies within
#: `SPINE_CONFIRM_MM` of the bone the first read found best at that level (`body_midline_x`).
SPINE_CLOSE_MM = 2.0
SPINE_CONFIRM_MM = 15.0


def _coarse(hu: np.ndarray, affine: np.ndarray, target_mm: float = 4.0,
            inplane_mm: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A strided view at ~`target_mm` (cheap: no copy of a 512x512x300 scan) and its affine;
    `inplane_mm`: another step across the axial plane."""
    targets = [target_mm] * 3
    if inplane_mm is not None:
        targets = [inplane_mm] * 3
        targets[superior_axis(affine)] = target_mm
    steps = tuple(int(max(1, t // s)) for t, s in zip(targets, spacing_of(affine), strict=True))
    a = np.asarray(affine, float) @ np.diag([*steps, 1.0])
    return np.asarray(hu)[tuple(slice(None, None, k) for k in steps)], a


def body_midline_x(hu: np.ndarray, affine: np.ndarray) -> float | None:
    """World x (RAS mm) of the patient's midline, from the spine where it is seen, else the body.

    Per axial level, the thickest bone in the posterior half of the body (largest distance to
    its own edge, holes filled) near the body's centre is the vertebral body: ribs and
    scapulae are thin, humeral heads lie far lateral. The median over at least 3 levels is the
    midline. In a thin view cut through the body on one side only (`_cut_side_x`) the spine is
    looked for near the cut. Where no bone is found, the middle of the body's x-extent is used,
    except in such a view, where the cut is. This holds for a crop that shows one lung and the
    spine beside it, where the scanner isocentre (x = 0) or the crop's own centre do not. None
    when no body is found. A sagittal thin view (`view_axis` is right-left) shows no midline:
    there the scanner's isocentre, world x = 0, is the guess (the shared scans' midlines lie
    within 20 mm of it; a lung's centre lies 80-100 mm out).
    """
    if view_axis(np.shape(hu), affine) == right_left_axis(affine):
        return 0.0
    small, aff = _coarse(hu, affine)
    ax_s = superior_axis(aff)
    body = largest_body(small <= BODY_HU)
    if not body.any():
        return None
    # a view of a few levels (< 8 on the 4 mm stride, ~32 mm: a slab, one slice) that is a crop
    # of one side (`_cut_side_x`) looks for the spine near the cut: the shoulder's humeral head
    # and scapular neck, thicker than an upper vertebra, lie at the view's other end
    thin = len(_slices_with(body, ax_s)) < 8
    cut = _cut_side_x(body, aff, small) if thin else None
    xs, middle, _ = _spine_x(small, body, aff, min_radius_mm=4.0, centre=cut)
    if thin:
        # a thin view may have no 3 levels to take a median of, and its body's middle is the
        # crop's (50-60 mm off in a crop of one lung): read at ~1 mm in-plane, where a vertebral
        # body's marrow (< BONE_HU) is enclosed by its cortex instead of broken into specks
        # (on the 4 mm stride a porous vertebra of 5 mm slices is specks, and a lamina or a rib
        # head is the thickest bone: A0001's left-side slabs 12 mm off), the spine on half the
        # levels will do
        small1, aff1 = _coarse(hu, affine, inplane_mm=1.0)
        body1 = largest_body(small1 <= BODY_HU)
        if body1.any():
            cut = _cut_side_x(body1, aff1, small1)
            need = min(3, (len(_slices_with(body1, ax_s)) + 1) // 2)
            xs1, _, best = _spine_x(small1, body1, aff1, min_radius_mm=7.0, centre=cut)
            if len(xs1) < need:
                # a vertebra whose cortex is broken (a thick slice through an end plate, a porous
                # vertebra) is read again with its gaps closed, where it confirms the bone the
                # first read found best: closing alone makes a humeral head or contrast-filled
                # vessels thick too (`SPINE_CLOSE_MM`)
                xs1, _, _ = _spine_x(small1, body1, aff1, min_radius_mm=7.0, centre=cut,
                                     close_mm=SPINE_CLOSE_MM, near=best)
            if len(xs1) >= need:
                return float(np.median(xs1))
    if len(xs) >= 3:
        return float(np.median(xs))
    if thin and cut is not None:
        return cut
    return middle


def _slices_with(mask: np.ndarray, axis: int) -> np.ndarray:
    """Indices of the slices across `axis` that hold any of `mask`."""
    return np.flatnonzero(np.moveaxis(mask, axis, 0).reshape(mask.shape[axis], -1).any(axis=1))


#: A view counts as a crop of one side of the body when the body (at each level, all between its
#: front and back on that edge: the other lung a crop cuts is the patient too) runs into one
#: right/left edge of the field of view along at least `CUT_SIDE_SHARE` of its front-to-back extent and into the
#: other along at most `FREE_SIDE_SHARE` (skin and air there). Shoulders that a whole chest's
#: field of view cuts touch both edges (LIDC-0314's at 90 %: 0.63 / 0.29), as does a cardiac
#: field of view cut unevenly round the heart (the cropped CTA: 0.21 / 0.67). What lies on the
#: free edge must be air outside the patient (median darker than `GAS_MEDIAN_HU`): a field of view
#: drawn tight round the lungs cuts a lung too, whose parenchyma (~-850 HU) fills that edge.
CUT_SIDE_SHARE = 0.6
FREE_SIDE_SHARE = 0.05
#: A crop cut through the body along nearly all its front-to-back extent (`FULL_CUT_SHARE`) is a
#: crop of one side even where the field of view's other edge also meets the body, along at most
#: `PART_FREE_SHARE` (an arm or a shoulder at that edge: Lung-PET-CT-Dx A0002's side crops 0.95-1.00
#: against 0.14-0.59, LIDC-0314's and A0001's at the shoulders 0.90-1.00 against 0.08-0.50); a whole
#: chest's field of view meets the body along at most 0.63 (LIDC-0314's shoulders)
FULL_CUT_SHARE = 0.9
PART_FREE_SHARE = 0.6


def _cut_side_x(body: np.ndarray, aff: np.ndarray, hu: np.ndarray) -> float | None:
    """World x of the field of view's right or left edge where it cuts a crop of one side of
    the body (`CUT_SIDE_SHARE` and `FREE_SIDE_SHARE`, or `FULL_CUT_SHARE` and `PART_FREE_SHARE`;
    the free edge outside air: `hu` on `body`'s grid); None otherwise."""
    x_ax = int(np.argmax(np.abs(aff[0, :3])))
    extent = np.count_nonzero(body.any(axis=x_ax))  # (level, y) rows that hold the body
    if extent == 0:
        return None
    # on a face, what lies between the body's front and back at a level is the patient: a cut
    # at the midline crosses the other lung, air that is not the body (A0001's left-side slices:
    # 0.42-0.57 of the extent as body alone, 0.97-1.0 spanned)
    y_ax = int(np.argmax(np.abs(np.delete(aff[1, :3], x_ax))))
    faces = [_spanned(np.take(body, i, axis=x_ax), y_ax) for i in (0, body.shape[x_ax] - 1)]
    share = [np.count_nonzero(f) / extent for f in faces]
    one_side = max(share) >= CUT_SIDE_SHARE and min(share) <= FREE_SIDE_SHARE
    if not (one_side or (max(share) >= FULL_CUT_SHARE and min(share) <= PART_FREE_SHARE)):
        return None
    i = 0 if share[0] > share[1] else body.shape[x_ax] - 1
    free = body.shape[x_ax] - 1 - i
    beyond = np.take(hu, free, axis=x_ax)[~faces[free > 0]]
    if beyond.size == 0 or float(np.median(beyond)) >= GAS_MEDIAN_HU:
        return None  # lung, not the room's air, on the "free" edge: a view tight round the lungs
    ijk = np.insert(np.argwhere(faces[i > 0]), x_ax, i, axis=1)
    return float(np.mean(aff[0, :3] @ ijk.T + aff[0, 3]))


def _spanned(face: np.ndarray, axis: int) -> np.ndarray:
    """`face` filled along `axis` between its first and last True voxel in every line."""
    face = np.asarray(face, bool)
    fwd = np.maximum.accumulate(face, axis=axis)
    back = np.flip(np.maximum.accumulate(np.flip(face, axis=axis), axis=axis), axis=axis)
    return fwd & back


def _spine_x(small: np.ndarray, body: np.ndarray, aff: np.ndarray, min_radius_mm: float,
             centre: float | None = None, close_mm: float = 0.0,
             near: dict[int, float] | None = None) -> tuple[list[float], float, dict[int, float]]:
    """`body_midline_x` on one strided view and its `body` (`largest_body`, not empty): the
    vertebral body's x per level where a bone at least `min_radius_mm` deep (weighted by
    closeness to `centre`, by default the middle of the body's x-extent) is found, that
    middle, and the best bone's x at every level with bone (found or not). `close_mm`: bone
    closed in-plane with a disc of this radius before its marrow is filled (gaps in a
    vertebra's cortex); `near`: a level's bone counts only within `SPINE_CONFIRM_MM` of this
    x at that level (another read's best)."""
    ax_s = superior_axis(aff)
    idx = np.argwhere(body)
    world = aff[:3, :3] @ idx.T + aff[:3, 3:4]  # RAS mm of body voxels
    middle = float((np.percentile(world[0], 2) + np.percentile(world[0], 98)) / 2.0)
    centre = middle if centre is None else centre
    y_lo, y_hi = np.percentile(world[1], [2, 98])
    bone = np.zeros(small.shape, bool)
    sel = (small[tuple(idx.T)] > BONE_HU) & (world[1] < (y_lo + y_hi) / 2.0)  # RAS: -y is posterior
    bone[tuple(idx[sel].T)] = True
    sp = np.delete(spacing_of(aff), ax_s)
    xs, best = [], {}
    disc = ball(close_mm, sp) if close_mm > 0 else None  # in-plane: `sp` holds two spacings
    for k in _slices_with(bone, ax_s):
        sl = np.take(bone, k, axis=ax_s)
        if disc is not None:  # padded: the closing's erosion would eat bone at the view's edge
            pad = max(disc.shape)
            sl = ndimage.binary_closing(np.pad(sl, pad), disc)[pad:-pad, pad:-pad]
        holes, n = ndimage.label(ndimage.binary_fill_holes(sl) & ~sl)
        if n:  # the marrow of a vertebral body, not the space inside the rib cage
            area = np.bincount(holes.ravel())[1:] * float(np.prod(sp))
            sl = sl | np.isin(holes, 1 + np.flatnonzero(area < 2000.0))
        thick = ndimage.distance_transform_edt(sl, sampling=sp)
        ij = np.argwhere(sl)
        pts = np.insert(ij, ax_s, k, axis=1)
        x = aff[0, :3] @ pts.T + aff[0, 3]
        score = thick[tuple(ij.T)] * np.exp(-0.5 * ((x - centre) / 100.0) ** 2)
        best[int(k)] = float(x[int(np.argmax(score))])
        if near is not None and abs(best[int(k)] - near.get(int(k), np.inf)) > SPINE_CONFIRM_MM:
            continue
        if score.max() >= min_radius_mm:  # 4 mm on the 4 mm stride: an 8 mm thick bone, not a rib
            xs.append(best[int(k)])
    return xs, middle, best


def largest_body(air: np.ndarray) -> np.ndarray:
    """Largest connected non-air component: the patient (table and blankets excluded)."""
    lab, n = cc3d.connected_components(~air, connectivity=6, return_N=True)
    if n == 0:
        return np.zeros(air.shape, bool)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


#: air that the field of view cuts with a median darker than this and lying outside the hull of
#: the body without it (under `FOAM_IN_HULL` of it inside) is a table's foam pad, not a lung the
#: view cuts: A0002's pad alone in a slice reads -915 to -931 HU, the lungs the shared views cut
#: -760 to -880 (an emphysematous one, darker, lies inside that hull)
FOAM_HU = -900.0
FOAM_IN_HULL = 0.1


def room_air(air: np.ndarray, hu: np.ndarray,
             within: Callable[[], np.ndarray] | None = None) -> np.ndarray:
    """`air` without the air that the field of view cuts inside the patient: pieces (6-connected)
    that touch the array's border and are not room air (median at or above `GAS_MEDIAN_HU`).

    Why: the body is what is not air (`largest_body`) and the lungs must lie inside its convex
    hull (`body_hull`), so that room air at a cut field of view is not lung. A field of view
    drawn tight round the lungs cuts a lung too: the chest wall beyond it is out of view, and
    the body's hull left out the lung's outer part (LIDC-0314, a slice cut 5 mm inside the lungs'
    box: 40 % of the mask outside the hull, the left lung dropped). Room air is -1000 HU; lung
    parenchyma ~-850, so the lung it cut counts as body and the hull holds it. So can a table's
    foam core (the phantoms' reads -870): harmless where the network picks the lungs (it does
    not call the table lung), which is why the classical method keeps its own body. The median,
    not the mean: the room's air joined to a foam pad under the patient averaged -955 HU on
    Lung-PET-CT-Dx A0002 (median -996), so room air, pad and table became body and 290-320 mL
    of the pad "lung"; the lungs a view cuts have medians of -760 to -880 HU. With `within` (a
    function that makes the hull of the body without the cut air, called only when needed), a piece
    darker than `FOAM_HU` is the patient's only with `FOAM_IN_HULL` of it inside that hull: the
    same pad alone in a slice of A0002 (not joined to the room's air) reads -915 to -931 HU and
    lies wholly outside it.
    """
    lab, n = cc3d.connected_components(air, connectivity=6, return_N=True)
    if n == 0:
        return air
    edge = np.zeros(n + 1, bool)
    for a in range(air.ndim):
        for i in (0, air.shape[a] - 1):
            edge[np.unique(np.take(lab, i, axis=a))] = True
    edge[0] = False
    ids = np.flatnonzero(edge)
    if ids.size == 0:
        return air
    # the median as a count (half or more of the piece darker than GAS_MEDIAN_HU is the room):
    # one bincount, not a sort of the room's air
    hu = np.asarray(hu)
    size = np.bincount(lab.ravel(), minlength=n + 1)[ids]
    gas = np.bincount(lab.ravel(), weights=(hu < GAS_MEDIAN_HU).ravel(), minlength=n + 1)[ids]
    dark = np.bincount(lab.ravel(), weights=(hu < FOAM_HU).ravel(), minlength=n + 1)[ids]
    patient = gas < 0.5 * size
    foam = patient & (dark >= 0.5 * size)
    if within is not None and foam.any():
        held = np.bincount(lab[within()], minlength=n + 1)[ids]
        patient &= ~(foam & (held < FOAM_IN_HULL * size))
    inside = ids[patient]
    if inside.size == 0:
        return air
    lut = np.zeros(n + 1, bool)
    lut[inside] = True
    return air & ~lut[lab]


def body_hull_per_slice(body: np.ndarray) -> np.ndarray:
    """Convex hull of the body in every axial slice (vertices from the pixel corners)."""
    hull = np.zeros(body.shape, bool)
    corners = np.array([[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]])
    for z in range(body.shape[2]):
        sl = body[:, :, z]
        edge = sl & ~ndimage.binary_erosion(sl)
        pts = np.argwhere(edge)
        if len(pts) < 3:
            continue
        pts = (pts[:, None, :] + corners[None]).reshape(-1, 2)
        try:
            v = pts[ConvexHull(pts).vertices]
        except QhullError:  # degenerate (a line of pixels)
            hull[:, :, z] = sl
            continue
        rr, cc = polygon(v[:, 0], v[:, 1], shape=sl.shape)
        hull[rr, cc, z] = True
        hull[:, :, z] |= sl
    return hull


def body_hull(hu: np.ndarray, affine: np.ndarray, target_mm: float = 4.0) -> np.ndarray:
    """Per axial slice, the convex hull of the body, on the full grid (bool).

    What lies outside it (room air, the table, air beyond the skin at a cut field of view)
    cannot be lung. Worked out on a ~`target_mm` strided copy: a few tenths of a second.
    """
    small, _ = _coarse(hu, affine, target_mm)
    steps = [max(1, int(np.ceil(n / m))) for n, m in zip(np.shape(hu), small.shape, strict=True)]
    ax = superior_axis(affine)
    air = small < AIR_THRESHOLD_HU

    def hull_of(body: np.ndarray) -> np.ndarray:
        return np.moveaxis(body_hull_per_slice(np.moveaxis(body, ax, 2)), 2, ax)

    made = {}

    def plain_hull() -> np.ndarray:  # the body's hull without the cut air, made on demand
        made["body"] = largest_body(air)
        made["hull"] = hull_of(made["body"])
        return made["hull"]

    body = largest_body(room_air(air, small, within=plain_hull))
    # cut air that only filled the plain hull leaves the hull as it was (the hull of a body
    # between the plain body and its hull): no second hull, as for LIDC-0314's foam columns
    if made and not (body & ~made["hull"]).any() and not (made["body"] & ~body).any():
        return upsample_nearest(made["hull"], steps, np.shape(hu))
    return upsample_nearest(hull_of(body), steps, np.shape(hu))


#: A scan at most this tall (mm, head to foot) is a partial view: bases only, apex only, a
#: slab, one slice (a whole adult lung is 200-300 mm tall). There a lung piece can be small and
#: the network sees too little of the chest to be sure of it (`inference.predictor`,
#: `inference.classical`).
PARTIAL_VIEW_MM = 150.0
#: A partial view at most this tall is a thin view (a slab, a few slices, one slice): it has no
#: above or below to judge a piece by, so pieces are judged in-plane (`postprocess.doubt_unwrapped`,
#: `postprocess.add_wrapped_masses`, `drop_gas_pockets`).
THIN_VIEW_MM = 20.0


def scan_height_mm(shape, affine: np.ndarray) -> float:
    """Head-to-foot extent of the scan (slices along the superior axis x their spacing)."""
    ax = superior_axis(affine)
    return float(shape[ax]) * float(spacing_of(affine)[ax])


def extents_mm(shape, affine: np.ndarray) -> np.ndarray:
    """The scan's extent along each array axis (slices x spacing), mm."""
    return np.asarray(shape[:3], float) * spacing_of(affine)


def view_axis(shape, affine: np.ndarray) -> int:
    """The axis a view is read across, slice by slice: the superior axis, unless the view is
    thin (at most `THIN_VIEW_MM`) along another axis only — a coronal or sagittal slab or a
    single coronal / sagittal slice, which has no front and back (or sides) to judge by, as an
    axial slab has no above and below."""
    ax = superior_axis(affine)
    ext = extents_mm(shape, affine)
    if ext[ax] > THIN_VIEW_MM and ext.min() <= THIN_VIEW_MM:
        return int(np.argmin(ext))
    return ax


def view_thickness_mm(shape, affine: np.ndarray) -> float:
    """The view's extent across its slices (`view_axis`): its height for an axial view."""
    return float(extents_mm(shape, affine)[view_axis(shape, affine)])


def is_thin_view(shape, affine: np.ndarray) -> bool:
    """At most `THIN_VIEW_MM` thick along `view_axis`: a slab, a few slices, one slice — axial,
    coronal or sagittal."""
    return view_thickness_mm(shape, affine) <= THIN_VIEW_MM


#: The smallest lung in a scan at least 10 cm tall (`min_lung_volume_ml`), mL.
WHOLE_CHEST_MIN_ML = 50.0


def min_lung_volume_ml(shape, affine: np.ndarray, whole_chest_ml: float = WHOLE_CHEST_MIN_ML) -> float:
    """Smallest component kept as a lung: `whole_chest_ml` for a scan at least 10 cm along each
    axis, proportionally less for a thin slab (a 2 mm axial slab holds ~20 mL of both lungs; a
    1 mm coronal slice ~15 mL), whatever its orientation."""
    return whole_chest_ml * min(1.0, float(extents_mm(shape, affine).min()) / 100.0)


def _side_of(centroid_x: float, midline_x: float = 0.0) -> int:
    return RIGHT if centroid_x > midline_x else LEFT


def _world_x(affine: np.ndarray, idx: np.ndarray) -> float:
    return float(np.asarray(affine, float)[0, :3] @ idx + affine[0, 3])


def _side_by_side(core: np.ndarray, a: int, b: int, affine: np.ndarray) -> bool:
    """Do cores `a` and `b` lie beside each other (mostly apart in world x), like two lungs?"""
    ca = affine[:3, :3] @ np.mean(np.nonzero(core == a), axis=1)
    cb = affine[:3, :3] @ np.mean(np.nonzero(core == b), axis=1)
    d = ca - cb
    return abs(d[0]) >= 0.5 * float(np.linalg.norm(d))


def _seeds(low: np.ndarray, spacing: np.ndarray, affine: np.ndarray) -> np.ndarray | None:
    """Two seed regions (labels 1, 2 in arbitrary order) for the two lungs, or None if one lung."""
    lab, n = cc3d.connected_components(low, connectivity=6, return_N=True)
    if n == 0:
        return None
    sizes = np.bincount(lab.ravel())[1:]
    order = np.argsort(sizes)[::-1]
    if n >= 2 and sizes[order[1]] >= 0.05 * sizes[order[0]]:
        seeds = np.zeros(low.shape, np.uint8)
        seeds[lab == order[0] + 1] = 1
        seeds[lab == order[1] + 1] = 2
        return seeds
    # One big component (lungs touching at the anterior junction): erode until it splits.
    big = lab == order[0] + 1
    box = bbox(big, pad=1)
    dist = ndimage.distance_transform_edt(big[box], sampling=spacing)
    dmax = float(dist.max())
    for t in np.linspace(float(spacing.min()), 0.7 * dmax, 24):
        core, m = cc3d.connected_components(dist > t, connectivity=6, return_N=True)
        if m < 2:
            continue
        csz = np.bincount(core.ravel())[1:]
        co = np.argsort(csz)[::-1]
        if csz[co[1]] >= 0.15 * csz[co[0]] and _side_by_side(core, co[0] + 1, co[1] + 1, affine):
            seeds = np.zeros(low.shape, np.uint8)
            sub = seeds[box]
            sub[core == co[0] + 1] = 1
            sub[core == co[1] + 1] = 2
            return seeds
    return None


def _named_by_order(low: np.ndarray, low_sp: np.ndarray, low_aff: np.ndarray) -> np.ndarray | None:
    """Two lungs in `low` as seeds 1 (right) / 2 (left): the one at larger world x is the right
    lung. None when `low` holds one lung only."""
    seeds = _seeds(low, low_sp, low_aff)
    if seeds is None:
        return None
    cx = [_world_x(low_aff, np.mean(np.nonzero(seeds == k), axis=1)) for k in (1, 2)]
    right_seed = 1 if cx[0] > cx[1] else 2
    return np.where(seeds == right_seed, RIGHT, np.where(seeds > 0, LEFT, 0)).astype(np.uint8)


def _named_by_midline(low: np.ndarray, low_sp: np.ndarray, low_aff: np.ndarray, mid: float) -> np.ndarray:
    """Each connected piece lying on one side of the midline is named by that side (a lung cut in
    two by a fissure, fibrosis or a crop stays one lung); a piece spanning it (two lungs
    touching at the anterior junction) is split into two lungs by `_named_by_order`."""
    lab, n = cc3d.connected_components(low, connectivity=26, return_N=True)
    ii = np.ogrid[tuple(slice(0, k) for k in low.shape)]
    world_x = sum(low_aff[0, d] * ii[d] for d in range(3)) + low_aff[0, 3]
    right = np.broadcast_to(world_x > mid, low.shape)
    counts = np.bincount(lab.ravel(), minlength=n + 1).astype(float)
    share = np.bincount(lab.ravel(), weights=right.ravel().astype(float), minlength=n + 1) / np.maximum(counts, 1)
    named = np.zeros(low.shape, np.uint8)
    spanning = [c for c in range(1, n + 1) if 0.1 < share[c] < 0.9]
    for c in range(1, n + 1):
        if c not in spanning:
            named[lab == c] = RIGHT if share[c] >= 0.5 else LEFT
    if spanning:
        piece = np.isin(lab, spanning)
        split = _named_by_order(piece, low_sp, low_aff)
        if split is not None:
            cx = [_world_x(low_aff, np.mean(np.nonzero(split == k), axis=1)) for k in (RIGHT, LEFT)]
        if split is None or not cx[0] > mid > cx[1]:
            # no two lungs found on either side of the midline: the midline plane splits the piece
            split = np.where(piece, np.where(right, RIGHT, LEFT), 0).astype(np.uint8)
        named = np.where(split > 0, split, named).astype(np.uint8)
    return named


def split_left_right(lung: np.ndarray, affine: np.ndarray, midline_x: float | None = None) -> np.ndarray:
    """Label a binary lung mask 1 (right lung) / 2 (left lung) by anatomy, using the affine.

    With the body's `midline_x` (`body_midline_x`): every connected piece that lies on one
    side of it is named by that side, so a crop holding one lung, or a lung cut in two by a
    fissure or fibrosis, is never taken for two lungs; a piece spanning the midline (lungs
    touching at the anterior junction) is split as below. Without it: two big components are
    named by the world x of their centroids (larger RAS x = patient's right); a single
    component is eroded (distance threshold) until it falls into two cores; one lung alone is
    named by the side of world x = 0 (the scanner isocentre; a weak guess). Cores and pieces
    grow back to the whole mask by nearest core. The work runs on a ~2.5 mm copy, so it takes
    about a second even on 512x512x300 masks.
    """
    lung = np.asarray(lung, bool)
    affine = np.asarray(affine, float)
    out = np.zeros(lung.shape, np.uint8)
    if not lung.any():
        return out
    spacing = spacing_of(affine)
    factors = tuple(int(max(1, np.floor(2.5 / s))) for s in spacing)
    low = pool_any(lung, factors, 0.5) if max(factors) > 1 else lung
    if not low.any():
        low = pool_any(lung, factors, 0.0)
    low_aff = downsampled_affine(affine, factors)
    low_sp = spacing * np.array(factors)
    if midline_x is not None:
        named = _named_by_midline(low, low_sp, low_aff, float(midline_x))
    else:
        named = _named_by_order(low, low_sp, low_aff)
        if named is None:
            c = np.mean(np.nonzero(lung), axis=1)
            out[lung] = _side_of(_world_x(affine, c), 0.0)
            return out
    # every low-res voxel takes the nearest named voxel's side (a Voronoi map), then the full grid
    box = bbox(low, pad=1)
    sub = named[box]
    _, idx = ndimage.distance_transform_edt(sub == 0, sampling=low_sp, return_indices=True)
    voronoi = np.zeros(low.shape, np.uint8)
    voronoi[box] = sub[tuple(idx)]
    voronoi = upsample_nearest(voronoi, factors, lung.shape)
    out[lung] = voronoi[lung]
    return out


#: In a thin view a lung piece with a mean cross-section under `POCKET_AREA_CM2` whose core (the
#: piece less `POCKET_EDGE_MM` in-plane) is more than `MAX_GAS_SHARE` gas is a pocket of bowel
#: gas (`drop_gas_pockets`)
POCKET_AREA_CM2 = 20.0
POCKET_EDGE_MM = 1.5


def is_gas(hu: np.ndarray, piece: np.ndarray, spacing, axis: int = 2,
           hull: np.ndarray | None = None) -> bool:
    """Is a piece of a mask (bool, over the same box of `hu` and `hull`) gas — room air, a
    stomach or bowel pocket — rather than lung?

    Gas when its median is darker than `GAS_MEDIAN_HU` and it is smaller than
    `EMPHYSEMA_MIN_ML`, or lies less than `WHOLLY_INSIDE` inside the body's `hull` (when given),
    or its interior (holes filled, deeper than `INTERIOR_MM` from its edge across the slices
    along `axis`; 3 x 3 median in-plane) is under `MIN_VESSEL_SHARE` denser than `VESSEL_HU`,
    or it has no such interior (a sliver). Why not the median alone: a lung with very severe
    emphysema has its median that dark too (painted into the shared chests, whole masks were
    dropped as gas), but it is large, lies inside the body and keeps its vessels and walls.
    """
    hu = np.asarray(hu)
    piece = np.asarray(piece, bool)
    if not piece.any() or float(np.median(hu[piece])) >= GAS_MEDIAN_HU:
        return False
    if np.count_nonzero(piece) * float(np.prod(spacing)) / 1000.0 < EMPHYSEMA_MIN_ML:
        return True
    if hull is not None and float(np.mean(np.asarray(hull)[piece])) < WHOLLY_INSIDE:
        return True
    filled = ndimage.binary_fill_holes(piece)
    pad = [(0, 0) if a == axis else (1, 1) for a in range(3)]  # a slab's faces are not its edge
    depth = ndimage.distance_transform_edt(np.pad(filled, pad), sampling=spacing)
    inner = filled & (depth[tuple(slice(p[0], p[0] + n) for p, n in zip(pad, filled.shape, strict=True))] > INTERIOR_MM)
    n = int(np.count_nonzero(inner))
    if n == 0:
        return True
    # a 3 x 3 in-plane median first: noise in gas (low-dose: a sigma of 100 HU puts 0.1-0.3 % of
    # its voxels above -700 HU) is speckle; a vessel is at least a few voxels across
    size = [1 if a == axis else 3 for a in range(3)]
    dense = ndimage.median_filter(hu.astype(np.float32, copy=False), size=size) > VESSEL_HU
    return bool(np.count_nonzero(dense & inner) < MIN_VESSEL_SHARE * n)


def drop_gas_pockets(labels: np.ndarray, hu: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """`labels` of a thin view without the pockets of bowel gas it called lung.

    Why: 1-10 slices of the shared abdomen series (no lung) called a colon's gas pocket lung at
    13 of its 89 positions (1.2-8.2 mL; median -725 to -960 HU: in a slice or two the bowel wall's
    partial volume lifts the median over the pure-gas test). Their cores, without the rim that
    partial volume blurs, are 0.13-0.76 gas (below `GAS_HU`); the lung pieces of every thin
    view of the shared chests at most 0.20 (LIDC-0314's noisy apex), 0.04 for 95 % of them. A
    piece as small as a pocket (mean cross-section under `POCKET_AREA_CM2`; a lung's in a mid-chest
    slice is 100-150 cm²) with more than `MAX_GAS_SHARE` of its core gas is not lung. Large pieces
    are left alone: severe emphysema can be a quarter gas.
    """
    labels = np.asarray(labels)
    mask = labels > 0
    if not mask.any():
        return labels
    ax = view_axis(labels.shape, affine)
    core = ndimage.binary_erosion(mask, square(POCKET_EDGE_MM, spacing_of(affine), ax))
    pieces, share = share_per_piece(mask, np.asarray(hu) < GAS_HU, within=core)
    height_cm = view_thickness_mm(labels.shape, affine) / 10.0
    area_cm2 = np.bincount(pieces.ravel(), minlength=share.size) * voxel_volume_ml(affine) / height_cm
    pocket = (share > MAX_GAS_SHARE) & (area_cm2 < POCKET_AREA_CM2)
    pocket[0] = False
    if not pocket.any():
        return labels
    return np.where(pocket[pieces], 0, labels).astype(labels.dtype)
