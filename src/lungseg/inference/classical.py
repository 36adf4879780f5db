"""Classical (no network) lung segmentation: HU threshold, geometry and connected components.

Steps, on a ~2 mm copy of the image reoriented to RAS (any stored orientation works):

1. air = mean HU < -320; the body is the largest connected soft-tissue component (the
   patient table and clothing fall outside it);
2. air outside the body is removed slice by slice: only air inside the convex hull of the
   body in each axial slice is kept, so lungs that touch the edge of a cropped field of
   view are kept while air around the patient (and under it, on the table) is not;
3. the trachea and main bronchi are tracked from the top of the chest downwards (a small,
   central air tube whose cross-section stays small) and removed;
4. of the remaining air components, at most two plausible lungs are kept: at least
   `min_volume_ml` (50 mL per 10 cm of height, half that in a thin view: `THIN_VIEW_CHEST_ML`),
   not pure gas (`core.anatomy.is_gas`: a median under -960 HU, unless 100 mL or more with
   vessels inside — very severe emphysema is as dark as stomach / bowel gas), and a
   second component must reach above the first one's centroid (gas below the diaphragm
   does not); in a partial view (at most 150 mm tall) with one lung found, a smaller piece
   of the other lung is kept when the view cuts it at its top or bottom slice;
5. right/left by anatomy (`split_left_right`), closing with a ~3 mm ball (vessels at the
   lung surface) and hole filling per lung (vessels and nodules inside the lung); in a thin
   view (at most 20 mm) small pieces whose core is over a quarter gas are pockets of bowel
   gas, not lung (`core.anatomy.drop_gas_pockets`);
6. back to exactly the input grid: nearest neighbour, except in the ~2 mm blocks at each
   lung's edge, where a voxel is lung when darker than -400 HU (`_RasGrid.back_refined`).

Documented limits: dense pathology (consolidation, pleural effusion, atelectasis, dense
tumour) is above the air threshold and is missed; tumours at the pleura or mediastinum
may be cut out of the mask; severe emphysema or a nearly empty lung can look like gas
and be rejected; a lung that fills most of the body hull in a heavily cropped image may
merge with air outside the body; lungs touching at the anterior junction are separated
geometrically, not along the true pleura.

Example on a phantom (a box of soft tissue with two air "lungs")::

    >>> import numpy as np
    >>> from lungseg.core.volume import Volume
    >>> from lungseg.inference.classical import segment_classical
    >>> hu = np.full((120, 100, 80), -1000, np.int16)
    >>> hu[10:110, 10:90, :] = 40
    >>> hu[20:55, 25:75, 10:70] = -850; hu[65:100, 25:75, 10:70] = -850
    >>> mask = segment_classical(Volume(hu, np.diag([2.0, 2.0, 2.0, 1.0])))
    >>> int(mask.array[80, 50, 40]), int(mask.array[40, 50, 40])  # larger x = right (1)
    (1, 2)
"""

from __future__ import annotations

from collections.abc import Callable

import cc3d
import nibabel as nib
import numpy as np
from scipy import ndimage

from lungseg.core.anatomy import (
    AIR_THRESHOLD_HU,
    GAS_MEDIAN_HU,
    PARTIAL_VIEW_MM,
    WHOLE_CHEST_MIN_ML,
    body_hull_per_slice,
    body_midline_x,
    drop_gas_pockets,
    is_gas,
    is_thin_view,
    largest_body,
    min_lung_volume_ml,
    scan_height_mm,
    split_left_right,
    view_axis,
)
from lungseg.core.errors import InputError
from lungseg.core.geometry import downsampled_affine, spacing_of, voxel_volume_ml
from lungseg.core.labels import LEFT, RIGHT
from lungseg.core.morphology import (
    ball,
    bbox,
    disc,
    fill_holes,
    pool_mean,
    square,
    upsample_nearest,
)
from lungseg.core.noise import quieter
from lungseg.core.volume import Volume, reoriented, restored, working_orientation
from lungseg.inference.postprocess import EDGE_HU

__all__ = ["ClassicalParts", "central_airways", "segment_classical"]

LUMEN_HU = -900.0  # airway lumen at ~2 mm: darker than lung parenchyma
#: In a thin view (`THIN_VIEW_MM`) a lung is at least this many mL per 10 cm of height, half a
#: taller scan's: a single slice through a lung's lowest tip holds a recess of 0.6-2.3 mL (the
#: shared chests), under the 1.0-2.5 mL that 50 mL per 10 cm asks of its 2-5 mm; the pockets of
#: bowel gas the lower bar lets in are dropped by their gas (`drop_gas_pockets`). The network
#: path keeps 50: it gets such recesses from this method (`add_missed_pieces`), while its own
#: small pieces in an abdomen's thin views were up to 17 mL of bowel and fat at 25.
THIN_VIEW_CHEST_ML = WHOLE_CHEST_MIN_ML / 2
BRONCHUS_LUMEN_HU = -930.0  # stricter, for growing along a bronchus without entering the lung
#: Growing along the bronchi stops where the front balloons: wider than `LEAK_RATIO` times its
#: narrowest so far and by more than `LEAK_AREA_MM2`, or wider than `LEAK_MAX_MM2`. A bronchial
#: tree's front narrows as it goes (the shared chests' whole scans: 70-200 mm^2 at the tracked
#: tube, then narrower; the CTA's stays at 150-250 for 20 layers); in emphysematous lung, as dark
#: as a lumen, it widens (emphysema painted into the 4D-CT: from 8 to 180 mm^2 after a narrow
#: bronchus, or 220 to 1900, or 3200 at once where the tracked tube itself had entered it:
#: 150-460 mL of lung was taken for airway).
LEAK_RATIO = 3.0
LEAK_AREA_MM2 = 50.0
LEAK_MAX_MM2 = 600.0


def _outside_air(air: np.ndarray, hull: np.ndarray, hu: np.ndarray) -> np.ndarray:
    """Per axial slice: air components that touch the image border and leave the body hull.

    A lung cut by the edge of a cropped field of view touches the border too, but lies
    mostly inside the hull of the body tissue around it and is not pure air (lung
    parenchyma is ~ -850 HU, room air ~ -1000 HU), so it is kept.
    """
    out = np.zeros(air.shape, bool)
    for z in range(air.shape[2]):
        lab = cc3d.connected_components(air[:, :, z], connectivity=8)
        if lab.max() == 0:
            continue
        border = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
        border = border[border > 0]
        if border.size == 0:
            continue
        total = np.bincount(lab.ravel(), minlength=lab.max() + 1)
        outside = np.bincount(lab[~hull[:, :, z]], minlength=lab.max() + 1)
        frac = outside[border] / total[border]
        dark = np.array([np.median(hu[:, :, z][lab == b]) < GAS_MEDIAN_HU for b in border])
        bad = border[(frac > 0.4) | ((frac > 0.02) & dark)]
        if bad.size:
            out[:, :, z] = np.isin(lab, bad)
    return out


def _trachea(cand: np.ndarray, hull: np.ndarray, hu: np.ndarray, sp: np.ndarray,
             centre_i: float | None = None) -> np.ndarray:
    """Track the trachea and main bronchi down from the top of the air (RAS grid, z up).

    The tube is looked for near `centre_i` (the body's midline as an i index; default: the
    middle of the body hull, which a crop holding one side of the chest moves off the spine).
    """
    px = float(sp[0] * sp[1])
    out = np.zeros(cand.shape, bool)
    zs = np.flatnonzero(cand.any(axis=(0, 1)))
    if zs.size == 0:
        return out
    z_top = int(zs[-1])
    seed = None
    n_search = int(np.ceil(60.0 / sp[2]))  # look for the tube in the top 6 cm of air
    for z in range(z_top, max(z_top - n_search, -1), -1):
        lab, n = cc3d.connected_components(cand[:, :, z], connectivity=8, return_N=True)
        if n == 0:
            continue
        hx = np.flatnonzero(hull[:, :, z].any(axis=1))
        if hx.size == 0:
            continue
        centre = (hx[0] + hx[-1]) / 2.0 if centre_i is None else centre_i
        width = max(hx[-1] - hx[0] + 1, 200.0 / sp[0])  # tolerance: 15 % of a body, 30 mm at least
        best = None
        for c in range(1, n + 1):
            comp = lab == c
            area = comp.sum() * px
            if not 40.0 <= area <= 700.0:
                continue
            ci = np.nonzero(comp)
            off = abs(ci[0].mean() - centre)
            ext = [(ci[d].max() - ci[d].min() + 1) * sp[d] for d in (0, 1)]
            if off > 0.15 * width or max(ext) > 40.0:
                continue
            if best is None or off < best[0]:
                best = (off, comp, area)
        if best is not None:
            seed = (z, best[1], best[2])
            break
    if seed is None:
        return out
    z, cur, _ = seed
    out[:, :, z] = cur
    z_stop = z - int(np.ceil(200.0 / sp[2]))
    merged_left = int(np.ceil(40.0 / sp[2]))  # slices a tube may be followed inside a lung
    grow = max(1, int(round(3.0 / sp[0])))
    while z > max(z_stop, 0):
        z -= 1
        lab, n = cc3d.connected_components(cand[:, :, z], connectivity=8, return_N=True)
        if n == 0:
            break
        near = ndimage.binary_dilation(cur, iterations=grow)
        area_cur = cur.sum() * px
        nxt = np.zeros(cur.shape, bool)
        merged = False
        for c in np.unique(lab[near & (lab > 0)]):
            comp = lab == c
            area = comp.sum() * px
            if area <= min(max(1.6 * area_cur, area_cur + 150.0), 900.0):
                nxt |= comp
            elif merged_left > 0:
                # the tube touches a lung in this slice: follow its dark lumen only
                lumen = comp & near & (hu[:, :, z] < LUMEN_HU)
                if 0.3 * area_cur <= lumen.sum() * px <= 1.5 * area_cur:
                    nxt |= lumen
                    merged = True
        if not nxt.any():
            break
        if merged:
            merged_left -= 1
        out[:, :, z] = nxt
        cur = nxt
    return out


def _select_lungs(cand: np.ndarray, hu: np.ndarray, aff: np.ndarray, min_volume_ml: float,
                  midline_x: float | None) -> np.ndarray:
    voxel_ml = voxel_volume_ml(aff)
    lab, n = cc3d.connected_components(cand, connectivity=6, return_N=True)
    keep = np.zeros(cand.shape, bool)
    if n == 0:
        return keep
    stats = cc3d.statistics(lab)
    sizes = np.asarray(stats["voxel_counts"], float) * voxel_ml
    order = [int(c) for c in np.argsort(sizes)[::-1] if c > 0 and sizes[c] >= min_volume_ml]
    chosen = []
    sp = spacing_of(aff)
    for c in order:
        bb = stats["bounding_boxes"][c]
        if is_gas(hu[bb], lab[bb] == c, sp):
            continue  # pure gas: stomach, bowel, or air outside the body
        comp = lab == c
        if chosen:
            first = chosen[0]
            z_first = float(stats["centroids"][first][2])
            z_top = float(stats["bounding_boxes"][c][2].stop - 1)
            if z_top < z_first:
                continue  # lies below the first lung: gas under the diaphragm
        chosen.append(c)
        keep |= comp
        if len(chosen) == 1:
            sides = split_left_right(comp, aff, midline_x)
            v = np.bincount(sides.ravel(), minlength=3)[1:]
            if v.min() >= 0.1 * v.max():
                break  # this component already holds both lungs
        if len(chosen) == 2:
            break
    if len(chosen) == 1:
        keep |= _other_lung_cut_by_fov(lab, stats, sizes, hu, aff, chosen[0], midline_x)
    return keep


#: A piece of the other lung in a partial view (bases or apex only) can be small: the
#: posterior recess of a base behind the liver, the apex of a lung with a dense upper lobe.
OTHER_PIECE_MIN_ML = 2.0
PARENCHYMA_MAX_MEDIAN_HU = -600.0


def _other_lung_cut_by_fov(lab: np.ndarray, stats: dict, sizes: np.ndarray, hu: np.ndarray,
                           aff: np.ndarray, first: int, midline_x: float | None) -> np.ndarray:
    """The largest piece of the second lung that a partial view cut below `min_volume_ml`.

    Only in a view at most `PARTIAL_VIEW_MM` tall, with one lung found: a piece on the other
    side of the body's midline, at least `OTHER_PIECE_MIN_ML`, with lung parenchyma's median
    HU (not pure gas, not soft tissue), that the field of view cuts at its top or bottom
    slice (a lung goes on beyond the view; a bowel gas pocket lies inside it) — or, in a
    coronal or sagittal thin view, at its first or last slice (`view_axis`).
    """
    va = view_axis(lab.shape, aff)
    nz = lab.shape[va]
    none = np.zeros(lab.shape, bool)
    if (scan_height_mm(lab.shape, aff) > PARTIAL_VIEW_MM and not is_thin_view(lab.shape, aff)) or midline_x is None:
        return none
    ijk = np.asarray(stats["centroids"], float)
    world_x = aff[0, :3] @ ijk.T + aff[0, 3]
    first_right = world_x[first] > midline_x
    for c in [int(i) for i in np.argsort(sizes)[::-1] if i > 0 and i != first]:
        if sizes[c] < OTHER_PIECE_MIN_ML:
            break
        if (world_x[c] > midline_x) == first_right:
            continue
        zs = stats["bounding_boxes"][c][va]
        if zs.start > 0 and zs.stop < nz:
            continue  # inside the view: gas, not a lung cut by it
        bb = stats["bounding_boxes"][c]
        piece = lab[bb] == c
        if float(np.median(hu[bb][piece])) <= PARENCHYMA_MAX_MEDIAN_HU and not is_gas(hu[bb], piece, spacing_of(aff)):
            return lab == c
    return none


def _reorient(affine: np.ndarray):
    ornt = nib.orientations.io_orientation(affine)
    back = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"), ornt)
    return ornt, back


def segment_classical(image: Volume, min_volume_ml: float | None = None, target_mm: float = 2.0) -> Volume:
    """Segment the lungs of a CT image (HU) without a network; uint8 labels on the image grid.

    Returns a `Volume` on exactly `image`'s grid with 0 background, 1 right lung, 2 left
    lung. An image without lungs gives an all-zero mask. Components smaller than
    `min_volume_ml` (default 50 mL, less for thin slabs) are not lungs. A noisy low-dose scan
    is smoothed first (`core.noise.quieter`). See the module docstring for the method and its
    limits. Takes a few seconds on a 512x512x300 chest on one core.
    """
    ornt = working_orientation(image.affine)  # every storage of a scan gets one mask
    if ornt is None:
        return ClassicalParts(quieter(image), target_mm).lungs(min_volume_ml)
    mask = ClassicalParts(quieter(reoriented(image, ornt)), target_mm).lungs(min_volume_ml)
    return Volume(restored(mask.array, ornt), image.affine.copy(), mask.meta)


def central_airways(image: Volume, target_mm: float = 2.0, midline_x: float | None = None) -> np.ndarray:
    """Trachea and main bronchi (lumen plus wall), as a bool mask on the image's grid.

    The tube is tracked down from the top of the chest (see the module docstring, step 3),
    followed ~4 cm into the lungs and grown along the dark lumen, which reaches the lobar
    bronchi. Used to keep the central airways out of the network's lung mask: they are dark
    like lung, and a network that sees them connected to the lungs calls them lung. All
    False when none is found (a scan that starts below the carina, a slab).
    """
    ornt = working_orientation(image.affine)
    if ornt is None:
        return ClassicalParts(image, target_mm, midline_x).airways()
    return restored(ClassicalParts(reoriented(image, ornt), target_mm, midline_x).airways(), ornt)


class ClassicalParts:
    """The classical method's steps on one image, each worked out once.

    The network path needs the central airways and, for its quality check, the classical
    mask; both share the ~2 mm RAS grid, the body, its hull and the candidate air, so
    computing them here once saves most of the classical method's cost.
    """

    def __init__(self, image: Volume, target_mm: float = 2.0,
                 midline_x: float | Callable[[], float | None] | None = None):
        """`midline_x`: the body's midline (`body_midline_x`), None to work it out here, or a
        function giving it, called when the airway search first needs it (another thread
        may be working it out meanwhile)."""
        arr = np.asarray(image.array)
        if arr.ndim != 3:
            raise InputError(f"expected a 3D image, got shape {arr.shape}")
        self.shape, self.meta = arr.shape, dict(image.meta)  # not the image: a held parts object must not keep the CT alive
        self.affine = np.asarray(image.affine, float)
        self._midline = midline_x if callable(midline_x) else None
        self._midline_x = None
        if self._midline is None:
            self._midline_x = body_midline_x(arr, self.affine) if midline_x is None else midline_x
        self.grid = _RasGrid(arr, self.affine, target_mm)
        self.air = self.grid.hu < AIR_THRESHOLD_HU
        self.body = largest_body(self.air)
        self._cand = self._tree = self._outside = None

    @property
    def midline_x(self) -> float | None:
        if self._midline is not None:
            self._midline_x, self._midline = self._midline(), None
        return self._midline_x

    def _candidates(self) -> tuple[np.ndarray, np.ndarray]:
        """(air inside the body hull and not outside air, the tracked airway tree) on the RAS grid."""
        if self._cand is None:
            g = self.grid
            hull = body_hull_per_slice(self.body)
            self._outside = _outside_air(self.air, hull, g.hu)
            cand = self.air & hull & ~self._outside
            across = view_axis(g.hu.shape, g.affine)
            if across != 2:
                # a coronal or sagittal thin view: each axial slice is a line, where a lung's
                # top reads as the trachea's cross-section (tracking it took whole lungs out)
                self._tree = _view_trachea(cand, g.hu, g.spacing, across, _index_x(self.midline_x, g.affine))
            else:
                self._tree = _airway_tree(cand, hull, g.hu, g.spacing, _index_x(self.midline_x, g.affine))
            self._cand = cand
        return self._cand, self._tree

    def airways(self) -> np.ndarray:
        """`central_airways` on the image's grid."""
        return self.grid.back(self._candidates()[1])

    def outside_air(self) -> np.ndarray:
        """The air outside the body (step 2: room air, and air in a fold of the body's surface
        that opens to it) on the image's grid, as bool."""
        self._candidates()
        return self.grid.back(self._outside)

    def lungs(self, min_volume_ml: float | None = None) -> Volume:
        """`segment_classical`'s mask."""
        g = self.grid
        thin = is_thin_view(self.shape, self.affine)
        if min_volume_ml is None:
            min_volume_ml = min_lung_volume_ml(self.shape, self.affine, THIN_VIEW_CHEST_ML if thin else WHOLE_CHEST_MIN_ML)
        labels_ras = np.zeros(g.hu.shape, np.uint8)
        if self.body.sum() * np.prod(g.spacing) / 1000.0 >= min_volume_ml:
            cand, airways = self._candidates()
            cand = cand & ~airways
            lungs = _select_lungs(cand, g.hu, g.affine, min_volume_ml, self.midline_x)
            labels_ras = _finish(lungs, g.affine, g.spacing, self.midline_x)
            labels_ras[airways] = 0  # closing and hole filling must not put the bronchi back
            if thin:
                labels_ras = drop_gas_pockets(labels_ras, g.hu, g.affine)
            return Volume(g.back_refined(labels_ras, airways), self.affine.copy(), dict(self.meta))
        return Volume(g.back(labels_ras).astype(np.uint8), self.affine.copy(), dict(self.meta))


def _index_x(world_x: float | None, ras_affine: np.ndarray) -> float | None:
    """The i index of world x on a RAS grid (None passes through)."""
    return None if world_x is None else float((world_x - ras_affine[0, 3]) / ras_affine[0, 0])


def _airway_tree(cand: np.ndarray, hull: np.ndarray, hu: np.ndarray, sp: np.ndarray,
                 centre_i: float | None = None, reach_mm: float = 30.0, wall_mm: float = 2.0) -> np.ndarray:
    """The tracked trachea and main bronchi, grown along their lumen, plus a wall (RAS grid)."""
    tube = _trachea(cand, hull, hu, sp, centre_i)
    if not tube.any():
        return tube
    # the tracked tube can lose a bronchus that runs obliquely; take the dark lumen connected
    # to it within `reach_mm` (lumen, not parenchyma: at ~2 mm, lung is ~-850 HU, lumen < -930)
    near = ndimage.distance_transform_edt(~tube, sampling=sp) <= reach_mm
    lumen = cc3d.connected_components((hu < BRONCHUS_LUMEN_HU) & near | tube, connectivity=6)
    tube = _grow_lumen(tube, np.isin(lumen, np.unique(lumen[tube])), sp)
    return ndimage.binary_dilation(tube, iterations=max(1, int(round(wall_mm / float(sp.min())))))


def _grow_lumen(tube: np.ndarray, lumen: np.ndarray, sp: np.ndarray) -> np.ndarray:
    """`tube` grown into `lumen` (bool, joined to it) one voxel layer (6-neighbours) at a time,
    stopped before the first layer whose front balloons (`LEAK_RATIO`, `LEAK_AREA_MM2`,
    `LEAK_MAX_MM2`): the dark lumen has run into emphysematous lung. Without a leak: all of
    `lumen`, as one labelling of it would give."""
    box = bbox(lumen)
    if box is None:
        return tube
    grown, allowed = tube[box].copy(), lumen[box]
    area = float(np.prod(sp)) ** (2.0 / 3.0)  # mm^2 of front per voxel of a layer
    narrowest = None
    while True:
        front = ndimage.binary_dilation(grown) & allowed & ~grown
        n = int(np.count_nonzero(front))
        if n == 0:
            break
        if n * area > LEAK_MAX_MM2 or (narrowest is not None and n > LEAK_RATIO * narrowest
                                       and (n - narrowest) * area > LEAK_AREA_MM2):
            break
        narrowest = n if narrowest is None else min(narrowest, n)
        grown |= front
    out = tube.copy()
    out[box] |= grown
    return out


#: `_view_trachea`: pure-air tubes at least twice this across, reaching this far above the lungs,
#: or cut by the view's top this near the midline
VIEW_TUBE_RADIUS_MM = 3.0
VIEW_ABOVE_LUNG_MM = 6.0
VIEW_TUBE_MIDLINE_MM = 20.0


def _view_trachea(cand: np.ndarray, hu: np.ndarray, sp: np.ndarray, axis: int,
                  centre_i: float | None = None, wall_mm: float = 2.0) -> np.ndarray:
    """The trachea and main bronchi in a coronal or sagittal thin view (RAS grid, z up): the
    pure-air lumen (< `BRONCHUS_LUMEN_HU`) at least 2 x `VIEW_TUBE_RADIUS_MM` across in the view's
    plane, in pieces that reach `VIEW_ABOVE_LUNG_MM` above the lungs' top (the trachea goes on
    into the neck; a bronchus, a bulla or emphysema inside the lung does not) or, where the view's
    top cuts the lungs too, that it cuts within `VIEW_TUBE_MIDLINE_MM` of the midline (`centre_i`,
    an i index), plus a wall.

    Why: the axial airway search cannot run on such a view, and the classical method took a
    coronal slab's trachea in whole (a phantom's coronal slab through it: all 161 lumen voxels).
    """
    lumen = cand & (hu < BRONCHUS_LUMEN_HU)
    if not lumen.any():
        return lumen
    tube = disc(VIEW_TUBE_RADIUS_MM, sp, axis)
    tubes = ndimage.binary_opening(lumen, structure=tube)
    if not tubes.any():
        return tubes
    # the lungs' top: the highest level holding parenchyma (air, not lumen, away from the tubes)
    near = ndimage.binary_dilation(tubes, structure=tube, iterations=2)
    parenchyma = cand & ~lumen & ~near
    levels = np.flatnonzero(parenchyma.sum(axis=(0, 1)) * float(np.prod(np.delete(sp, 2))) >= 20.0)
    if levels.size == 0:
        return np.zeros(cand.shape, bool)
    top = levels[-1] + VIEW_ABOVE_LUNG_MM / float(sp[2])
    lab, n = cc3d.connected_components(tubes, connectivity=26, return_N=True)
    stats = cc3d.statistics(lab)
    z_top = cand.shape[2] - 1
    keep = []
    for c in range(1, n + 1):
        if stats["bounding_boxes"][c][2].stop - 1 >= top:
            keep.append(c)
        elif centre_i is not None and stats["bounding_boxes"][c][2].stop - 1 == z_top:
            i_top = np.nonzero(lab[:, :, z_top] == c)[0]
            if abs(float(i_top.mean()) - centre_i) * float(sp[0]) <= VIEW_TUBE_MIDLINE_MM:
                keep.append(c)
    if not keep:
        return np.zeros(cand.shape, bool)
    tree = np.isin(lab, keep)
    # the bronchi the opening narrowed: the lumen joined to the tree
    lum, _ = cc3d.connected_components(lumen, connectivity=26, return_N=True)
    tree = np.isin(lum, np.unique(lum[tree]))
    return ndimage.binary_dilation(tree, structure=square(wall_mm, sp, axis))


class _RasGrid:
    """The image block-averaged to ~`target_mm` and reoriented to RAS, and the way back."""

    def __init__(self, arr: np.ndarray, affine: np.ndarray, target_mm: float):
        self.shape = arr.shape
        self.factors = tuple(int(max(1, round(target_mm / s))) for s in spacing_of(affine))
        # a slab of whole blocks at a time: the same means without a clipped copy of the scan
        f0 = self.factors[0]
        step = f0 * max(1, 32 // f0)
        hu = np.empty(tuple(-(-n // f) for n, f in zip(arr.shape, self.factors, strict=True)), np.float32)
        for i in range(0, arr.shape[0], step):
            block = pool_mean(np.clip(arr[i:i + step], -1024, 1024).astype(np.int16, copy=False), self.factors)
            hu[i // f0:i // f0 + block.shape[0]] = block
        self.dark = None if max(self.factors) == 1 else _pack_dark(arr)
        self.low_shape = hu.shape
        low_aff = downsampled_affine(affine, self.factors)
        self.ornt, self.back_ornt = _reorient(low_aff)
        self.hu = nib.orientations.apply_orientation(hu, self.ornt)
        self.affine = low_aff @ nib.orientations.inv_ornt_aff(self.ornt, self.low_shape)
        self.spacing = spacing_of(self.affine)

    def back(self, a: np.ndarray) -> np.ndarray:
        """A RAS low-resolution array back onto the original grid (nearest neighbour)."""
        low = np.ascontiguousarray(nib.orientations.apply_orientation(a, self.back_ornt))
        return upsample_nearest(low, self.factors, self.shape)

    def back_refined(self, labels: np.ndarray, keep_out: np.ndarray) -> np.ndarray:
        """Labels (RAS low grid) back onto the original grid with each lung's edge decided
        voxel by voxel: in the blocks at a lung's edge, inside it or beside it (26-neighbours,
        not `keep_out`), a voxel is that lung where it is darker than `EDGE_HU`.

        Why: the ~2 mm blocks put the edge on a 2-2.4 mm staircase on sub-millimetre scans:
        Dice against the same scan stored with one axis flipped (other block boundaries) was
        0.94-0.98 on the shared 0.65-0.78 mm chests; the network path refines its edge the same
        way (`postprocess.refine_levels`).
        """
        if self.dark is None:
            return self.back(labels)
        low = np.array(nib.orientations.apply_orientation(labels, self.back_ornt), order="C")  # a copy: written below
        out_of = np.ascontiguousarray(nib.orientations.apply_orientation(keep_out, self.back_ornt))
        lung = low > 0
        # the block work on the lungs' box grown by a block (the dilations cost ~0.2 s on a
        # whole 512^2 x 300 grid)
        box = bbox(lung)
        if box is None:
            return self.back(labels)
        sub, lung_b = low[box], lung[box]
        every = np.ones((3, 3, 3), bool)
        near = np.zeros(sub.shape, np.uint8)  # the blocks beside a lung, labelled as that lung
        for side in (RIGHT, LEFT):
            grown = ndimage.binary_dilation(sub == side, every)
            grown &= ~lung_b
            grown &= near == 0
            near[grown] = side
        near[out_of[box]] = 0
        # beyond the image is not an edge: a slab's top and bottom faces cut the lung, and its
        # vessels and nodules there (filled holes) stay lung
        band = (near > 0) | (lung_b & ~ndimage.binary_erosion(lung_b, every, border_value=1))
        low[box] = np.where(lung_b, sub, near)
        out = upsample_nearest(low, self.factors, self.shape)
        # the band's voxels, gathered block by block (a few % of the grid), out where not dark
        dark, packed = self.dark
        factors = np.asarray(self.factors, np.int32)
        within = np.indices(self.factors, dtype=np.int32).reshape(3, -1).T
        blocks = np.argwhere(band).astype(np.int32) + np.array([b.start for b in box], np.int32)
        for i in range(0, len(blocks), 65536):
            vox = (blocks[i:i + 65536, None, :] * factors + within).reshape(-1, 3)
            vox = vox[(vox < np.asarray(self.shape)).all(axis=1)]
            at = list(vox.T)
            bit = 7 - at[packed] % 8
            at[packed] = at[packed] // 8
            light = ((dark[tuple(at)] >> bit.astype(np.uint8)) & 1) == 0
            out[tuple(vox[light].T)] = 0
        return out


def _pack_dark(arr: np.ndarray) -> tuple[np.ndarray, int]:
    """(bits, packed axis): `arr < EDGE_HU`, one bit a voxel (9 MB for a 512^2 x 275
    scan), packed along the axis adjacent in memory and made slab by slab along the farthest
    one: `read_volume` gives C-ordered arrays, the phantom generator Fortran-ordered ones, and
    packing across memory took 0.3 s on a 512^2 phantom, this 0.02 s."""
    strides = np.abs(np.asarray(arr.strides)) * (np.asarray(arr.shape) > 1)
    packed = int(np.argmin(np.where(strides > 0, strides, np.inf)))
    along = int(np.argmax(strides)) if int(np.argmax(strides)) != packed else (packed + 1) % 3
    shape = list(arr.shape)
    shape[packed] = -(-shape[packed] // 8)
    bits = np.empty(shape, np.uint8)
    for i in range(0, arr.shape[along], 32):
        part = tuple(slice(i, i + 32) if a == along else slice(None) for a in range(3))
        bits[part] = np.packbits(arr[part] < EDGE_HU, axis=packed)
    return bits, packed


def _finish(lungs: np.ndarray, aff: np.ndarray, sp: np.ndarray, midline_x: float | None) -> np.ndarray:
    """Sides, closing (~3 mm ball, in voxels of the grid) and hole filling per lung."""
    out = np.zeros(lungs.shape, np.uint8)
    if not lungs.any():
        return out
    sides = split_left_right(lungs, aff, midline_x)
    struct = ball(max(3.0, float(sp.min())), sp)
    r = max(struct.shape) // 2
    for side in (RIGHT, LEFT):
        m = sides == side
        if not m.any():
            continue
        m = np.pad(m, r + 1)
        m = ndimage.binary_closing(m, structure=struct)[(slice(r + 1, -(r + 1)),) * 3]
        m = fill_holes(m, slice_axis=view_axis(m.shape, aff))
        out[m & (out == 0)] = side
    return out
