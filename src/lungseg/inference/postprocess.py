"""Clean a lung label map after a method has found the lungs: at most two plausible lungs,
holes filled, sides named by anatomy (`lungseg.core.anatomy`); and sharpen a coarse network
boundary with the CT's own edge.
"""

from __future__ import annotations

import cc3d
import numpy as np
from scipy import ndimage

from lungseg.core.anatomy import BONE_HU, is_gas, min_lung_volume_ml, split_left_right
from lungseg.core.geometry import spacing_of, superior_axis, voxel_volume_ml
from lungseg.core.labels import LEFT, RIGHT
from lungseg.core.morphology import (
    bbox,
    block_sum,
    fill_holes,
    pool_any,
    share_per_piece,
    upsample_nearest,
)

__all__ = ["add_wrapped_masses", "air_beside", "doubt_unwrapped", "drop_fatty_pieces", "fill_indentations", "local_edge_hu", "lung_levels", "open_domes", "postprocess", "refine_boundary", "refine_levels"]

#: Lung pieces kept: two lungs, or lungs cut into pieces by a crop, a slab or fibrosis.
MAX_PIECES = 4
#: A piece partly outside the body's hull (share inside below `EDGE_HULL_SHARE`) with air that is
#: not lung beside it (more than `AIR_BESIDE_SHARE` of a `AIR_RING_MM` in-plane ring darker than
#: `AIR_BESIDE_HU`) is a pocket of air at the skin (behind the shoulder, between arm and body, under
#: the table pad), not lung. A lung is walled by tissue; one cut by the field of view meets the
#: image edge, not air; a lung with a pneumothorax beside it lies inside the hull.
EDGE_HULL_SHARE = 0.75
AIR_BESIDE_SHARE = 0.1
AIR_BESIDE_HU = -800.0
AIR_RING_MM = 3.0
#: The CT's lung edge: half-way between aerated lung (~ -850 HU) and soft tissue (~ 40 HU) at the
#: pleura. Darker is air-filled lung where the network is unsure; denser is tissue.
EDGE_HU = -400.0
#: Where the lung itself is denser (dependent ground glass in a supine patient, an expiration
#: scan, infiltrates), the half-way point moves up: `local_edge_hu` puts the edge half-way between
#: the local parenchyma (P >= 0.9 and darker than `PARENCHYMA_MAX_HU`, averaged over
#: `EDGE_SIGMA_MM` on a grid of `EDGE_BLOCK_MM`) and `EDGE_TISSUE_HU`, never under `EDGE_HU` nor
#: over `EDGE_MAX_HU` (fat, -190 to -80 HU, stays out). `EDGE_TISSUE_HU` is fat's, the lighter of
#: the tissues that meet the pleura (mediastinal and extrapleural fat, muscle at ~40 HU): so the
#: edge rises only where the lung is denser than -700 HU, and never past the half-way point.
#: And only where parenchyma makes at least `MIN_PARENCHYMA_SHARE` of the sure lung around: in
#: an airless lobe the few voxels darker than -300 HU are noise (LIDC-0314's dense apex: 0-3 %,
#: where the edge rose to -250 HU and let 6 slices of neck speckle in; painted dependent lung:
#: 94-100 %).
EDGE_TISSUE_HU = -100.0
PARENCHYMA_MAX_HU = -300.0
MIN_PARENCHYMA_SHARE = 0.5
EDGE_MAX_HU = -200.0
EDGE_BLOCK_MM = 5.0
EDGE_SIGMA_MM = 10.0


def postprocess(labels: np.ndarray, affine: np.ndarray, min_volume_ml: float | None = None,
                midline_x: float | None = None, hu: np.ndarray | None = None,
                hull: np.ndarray | None = None, outside: np.ndarray | None = None,
                axis: int | None = None) -> np.ndarray:
    """Clean a predicted lung label map: largest plausible lungs, holes filled, sides by anatomy.

    `labels` holds 0/1/2 (right/left may be swapped or mixed: only `labels > 0` is used
    to find the lungs, the sides are recomputed from the affine). Keeps at most `MAX_PIECES`
    connected components of at least `min_volume_ml` (default: 50 mL, less for thin slabs,
    `min_lung_volume_ml`), fills
    holes in every axial slice and in 3D per lung, and returns uint8 labels 1 (right) /
    2 (left), named with the body's `midline_x` where given. With the CT (`hu`), components
    that are pure gas (`core.anatomy.is_gas`: air outside the body, bowel) are not
    lungs; with the body's per-slice `hull` (`core.anatomy.body_hull`), neither are components
    lying mostly outside it (room air at a cut field of view), and with both, neither are
    components a quarter or more outside it with air beside them (`air_beside`: a pocket of
    air at the skin). A lung cut by the field of view pokes out of the hull a little and is
    kept whole. With `outside` (bool: where the method is sure there is no lung, the network's
    P <= `LOW`), a hole that only the axial filling closes and that is mostly `outside` is left
    open (`open_domes`). `axis`: the slices the filling goes across (default the superior axis;
    a coronal or sagittal thin view's own, `core.anatomy.view_axis`). No lung -> all zeros.
    """
    labels = np.asarray(labels)
    affine = np.asarray(affine, float)
    out = np.zeros(labels.shape, np.uint8)
    mask = labels > 0
    if not mask.any():
        return out
    if min_volume_ml is None:
        min_volume_ml = min_lung_volume_ml(labels.shape, affine)
    voxel_ml = voxel_volume_ml(affine)
    comp, n = cc3d.connected_components(mask, connectivity=26, return_N=True)
    del mask
    stats = cc3d.statistics(comp)
    sizes = np.asarray(stats["voxel_counts"][1:], float) * voxel_ml
    order = [int(i) + 1 for i in np.argsort(sizes)[::-1] if sizes[i] >= min_volume_ml]
    if hu is not None or hull is not None:
        plausible = []
        for c in order:  # each test on the component's own box (same voxels, far less to scan)
            bb = stats["bounding_boxes"][c]
            sel = comp[bb] == c
            if hu is not None and is_gas(np.asarray(hu)[bb], sel, spacing_of(affine),
                                         superior_axis(affine) if axis is None else axis,
                                         None if hull is None else hull[bb]):
                continue
            if hull is not None:
                inside = float(np.mean(hull[bb][sel]))
                if inside < 0.5 or (hu is not None and inside < EDGE_HULL_SHARE
                                    and air_beside(comp == c, labels > 0, hu, affine, axis=axis) > AIR_BESIDE_SHARE):
                    continue
            plausible.append(c)
        order = plausible
    if not order:
        return out
    lut = np.zeros(n + 1, bool)
    lut[order[:MAX_PIECES]] = True
    keep = lut[comp]
    del comp  # 4 bytes a voxel, not needed by the side split (the peak on a 1024² scan)
    sides = split_left_right(keep, affine, midline_x)
    ax = superior_axis(affine) if axis is None else axis
    # the kept lungs' box (from the statistics above, no pass over the grid) grown by one voxel:
    # their holes lie inside it and its rim is not lung, so filling there is filling everywhere
    b = tuple(slice(max(0, min(stats["bounding_boxes"][c][a].start for c in order[:MAX_PIECES]) - 1),
                    min(labels.shape[a], max(stats["bounding_boxes"][c][a].stop for c in order[:MAX_PIECES]) + 1))
              for a in range(3))
    sides_b = sides[b]
    out_b = out[b]
    for side in (RIGHT, LEFT):
        one = sides_b == side
        filled = fill_holes(one, slice_axis=ax)
        if outside is not None:
            filled = open_domes(one, filled, outside[b], ax)
        filled &= out_b == 0
        filled &= (sides_b == 0) | (sides_b == side)
        out_b[filled] = side
    return out


def open_domes(lung: np.ndarray, filled: np.ndarray, outside: np.ndarray, axis: int = 2,
               pad: int = 8) -> np.ndarray:
    """`filled` (`lung` with its holes filled in 3D and in every axial slice, `axis` the body's)
    without the holes that only the axial filling closed and that are mostly `outside` the lung.

    Why: where the recesses wrap round the top of the diaphragm's dome, an axial slice shows
    the liver or spleen as an island ringed by lung; filling every axial hole (which rightly
    takes in the vessels and nodules the lung wraps) takes the dome in too, though the network
    gives it P ~0. Measured on held-out phantoms: 30 mL in one, up to 15 % of a slice's lung
    30 % up the lungs (docs/model_notes.md). A piece of hole (26-connected) is open when a voxel of
    it has, straight above or below, a voxel that is neither lung nor hole, or the grid's end
    (as for `fill_holes`, a view's cut face): it is not closed in 3D. A hole closed in 3D (a
    cavity, a bulla) stays lung whatever P says; in a thin view P decides. Only the box round
    the hole voxels that are `outside` (grown by `pad` voxels) is looked at: a hole with P ~0
    is rare in a real chest, and the full grid sees two element-wise passes and a bounding box.
    """
    hole = np.greater(filled, lung)
    core = hole & outside
    box = bbox(core, pad=pad)
    if box is None:  # the usual case
        return filled
    del core
    h = hole[box]
    comp, share = share_per_piece(h, outside[box])  # of each piece of hole: the share outside
    # the slices just above and below the box too; past the grid's end is open, as for
    # `fill_holes` (a view's cut faces: a hole reaching them is not closed in 3D)
    n_ax = filled.shape[axis]
    z0, z1 = box[axis].start, box[axis].stop
    grown = list(box)
    grown[axis] = slice(max(z0 - 1, 0), min(z1 + 1, n_ax))
    ends = [(0, 0)] * 3
    ends[axis] = (int(z0 == 0), int(z1 == n_ax))
    beyond = ~np.pad(np.asarray(filled[tuple(grown)]), ends)  # neither lung nor hole
    below = [slice(None)] * 3
    above = [slice(None)] * 3
    below[axis], above[axis] = slice(0, -2), slice(2, None)
    touch = beyond[tuple(below)] | beyond[tuple(above)]
    touch &= h
    drop = np.zeros(share.size, bool)
    drop[np.unique(comp[touch])] = True
    drop &= share > 0.5
    drop[0] = False
    if not drop.any():
        return filled
    out = filled.copy()
    out[box] &= ~drop[comp]
    return out


def air_beside(piece: np.ndarray, mask: np.ndarray, hu: np.ndarray, affine: np.ndarray,
               ring_mm: float = AIR_RING_MM, air_hu: float = AIR_BESIDE_HU, axis: int | None = None) -> float:
    """Share of an in-plane ring `ring_mm` wide around `piece` that is air (< `air_hu`) outside
    `mask`: ~0 for a lung (chest wall, mediastinum, diaphragm around it), high for a pocket of
    air at the skin. Worked out on the piece's box grown by the ring; in-plane is across `axis`
    (default the superior axis)."""
    ax = superior_axis(affine) if axis is None else axis
    sp = spacing_of(affine)
    grow = [0 if a == ax else max(1, int(round(ring_mm / sp[a]))) for a in range(3)]
    box = bbox(piece, pad=0)
    if box is None:
        return 0.0
    box = tuple(slice(max(0, b.start - g), min(n, b.stop + g)) for b, g, n in zip(box, grow, piece.shape, strict=True))
    p = piece[box]
    ring = ndimage.binary_dilation(p, np.ones([2 * g + 1 for g in grow], bool)) & ~np.asarray(mask)[box]
    if not ring.any():
        return 0.0
    return float(np.mean(np.asarray(hu)[box][ring] < air_hu))


def _inplane_factors(spacing: np.ndarray, axis: int, target_mm: float) -> tuple[int, ...]:
    """Block factors that bring each in-plane axis to ~`target_mm` and keep the slices (`axis`)."""
    return tuple(1 if a == axis else int(max(1, round(target_mm / s))) for a, s in enumerate(spacing))


def fill_indentations(labels: np.ndarray, affine: np.ndarray, radius_mm: float = 12.0,
                      keep_out: np.ndarray | None = None, keep_out_mm: float = 25.0,
                      target_mm: float = 2.0, axis: int | None = None) -> np.ndarray:
    """Give back to each lung what a nodule or tumour at its surface cut out of it.

    A juxta-pleural nodule is dense, so the network and the HU edge both leave it out of the
    lung, as a dent in the lung's surface. Per axial slice, each lung is closed with a disc of
    `radius_mm` (a rolling ball: it fills dents narrower than ~2 x radius, not the broad
    concavities of the heart or the diaphragm), and what the closing adds becomes lung,
    except within `keep_out_mm` of `keep_out` (the central airways: the hilum's vessels and
    bronchi are not lung). Worked out on a ~`target_mm` grid, so it costs well under a second.
    `axis`: the slices (default the superior axis; a coronal or sagittal thin view's own).
    """
    out = np.array(labels, dtype=np.uint8, copy=True)
    ax = superior_axis(affine) if axis is None else axis
    spacing = spacing_of(affine)
    factors = _inplane_factors(spacing, ax, target_mm)
    low_sp = spacing * np.array(factors)
    in_plane = np.delete(low_sp, ax)
    pad = int(np.ceil(radius_mm / in_plane.min())) + 2
    blocked = None
    if keep_out is not None and keep_out.any():
        k_low = pool_any(keep_out, factors, 0.0)
        blocked = ndimage.distance_transform_edt(~k_low, sampling=low_sp) <= keep_out_mm
    for side in (RIGHT, LEFT):
        low = pool_any(out == side, factors, 0.5)
        box = bbox(low, pad=0)
        if box is None:
            continue
        sub = np.moveaxis(low[box], ax, 0)
        closed_sub = sub.copy()
        for k in range(sub.shape[0]):
            if not sub[k].any():
                continue
            sl = np.pad(sub[k], pad)
            grown = ndimage.distance_transform_edt(~sl, sampling=in_plane) <= radius_mm
            closed_sub[k] = (ndimage.distance_transform_edt(grown, sampling=in_plane) > radius_mm)[pad:-pad, pad:-pad]
        closed = np.zeros(low.shape, bool)
        closed[box] = np.moveaxis(closed_sub, 0, ax)
        added = closed & ~low
        if blocked is not None:
            added &= ~blocked
        if not added.any():
            continue
        # back on the full grid: the added blocks and their neighbours, inside the closed shape
        # (a coarse block that is mostly lung still holds some of the nodule)
        # (on the added blocks' box: the same voxels, a fraction of the work)
        ab = bbox(added, pad=1)
        near = ndimage.binary_dilation(added[ab], structure=np.ones((3,) * 3, bool)) & closed[ab]
        full = tuple(slice(s.start * f, min(s.stop * f, n)) for s, f, n in zip(ab, factors, out.shape, strict=True))
        shape = tuple(s.stop - s.start for s in full)
        gain = upsample_nearest(near, factors, shape) & (out[full] == 0)
        out[full][gain] = side
    return out


#: A dense mass the lung wraps around (`add_wrapped_masses`): tissue (`EDGE_HU` and up) where
#: the network half-believes lung (P > `MASS_P`), `MASS_RADIUS_MM` thick or more in each axial
#: slice, at least `MASS_MIN_ML`, with `MASS_CONTACT` of its surface on lung and at most
#: `MASS_MAX_BONE` on bone (`BONE_HU`: tissue against a rib or a vertebra is chest wall or spine,
#: outside the pleural cavity). Measured (shipped model, shared scans): the IBSI lower-lobe
#: NSCLC's missed part (P median 0.3, a 30 mL piece, 0.43-0.46 of its surface on lung, none on
#: bone); every other such piece on the shared chests and pathology scans is under 10 mL, or at
#: most 0.28 on lung (the liver's and spleen's domes, hilar vessels, the neck above an apex), or
#: the chest wall over A0001's apex (0.32 on lung, 0.11 on bone).
MASS_P = 0.3
MASS_RADIUS_MM = 4.0
MASS_MIN_ML = 10.0
MASS_CONTACT = 0.35
MASS_MAX_BONE = 0.02
#: the size gate in a thin view: a mean cross-section of 4 cm^2 (a 10 mL sphere's is 5.7)
MASS_MIN_AREA_CM2 = 4.0
#: a thin view's mass is solid: mean HU at least this. The liver's dome or the heart's border
#: that a slice cuts obliquely, half lung, averages -85 to -200 HU (the 4D-CT's basal slices);
#: the shared masses' pieces in 1-5 slice slabs -5 to 40 HU
MASS_SOLID_HU = -50.0


def add_wrapped_masses(labels: np.ndarray, candidate: np.ndarray, hu: np.ndarray, affine: np.ndarray,
                       radius_mm: float = MASS_RADIUS_MM, min_ml: float = MASS_MIN_ML,
                       contact: float = MASS_CONTACT, max_bone: float = MASS_MAX_BONE,
                       target_mm: float = 2.0, thin: bool = False, axis: int | None = None) -> np.ndarray:
    """Give each lung a tumour too broad for `fill_indentations` that the lung wraps around.

    Why: a mass several cm across at the pleura is dense, so the HU refinement drops it where
    the network is unsure (P 0.3-0.9 over much of a real NSCLC: it has seen few), and a rolling
    ball that closed it would also close the heart's and the diaphragm's concavities. Unlike
    those, a mass is a thick piece of tissue the network half-believes that has lung on a
    large share of its surface. `candidate` (bool, `labels`' grid): the dense voxels with
    P > `MASS_P` that are not lung. Pieces thinner than `radius_mm` in every axial slice (the
    partial-volume shell round every lung) are dropped by an opening on a ~`target_mm` grid;
    a piece of at least `min_ml` with at least `contact` of its 6-neighbour shell on lung and
    at most `max_bone` on bone (`hu` above `BONE_HU`) becomes lung, labelled as the lung that
    touches it most. `thin` (a view of a few slices, `THIN_VIEW_MM`): its top and bottom faces
    are the view's, not the mass's, so the shell is the in-plane border only and the size is
    a mean cross-section of `MASS_MIN_AREA_CM2` instead of `min_ml`. `axis`: the slices (default
    the superior axis; a coronal or sagittal thin view's own, `core.anatomy.view_axis`).
    """
    out = np.asarray(labels)
    ax = superior_axis(affine) if axis is None else axis
    spacing = spacing_of(affine)
    vml = voxel_volume_ml(affine)
    if thin:
        min_ml = MASS_MIN_AREA_CM2 * candidate.shape[ax] * spacing[ax] / 10.0
    if np.count_nonzero(candidate) * vml < min_ml:
        return out
    factors = _inplane_factors(spacing, ax, target_mm)
    low = pool_any(candidate, factors, 0.5)
    low_sp = spacing * np.array(factors)
    r = np.delete(low_sp, ax)
    n = np.floor(radius_mm / r).astype(int)
    grid = np.ogrid[-n[0]:n[0] + 1, -n[1]:n[1] + 1]
    disc = np.expand_dims((grid[0] * r[0]) ** 2 + (grid[1] * r[1]) ** 2 <= radius_mm ** 2, ax)
    thick = ndimage.binary_opening(low, structure=disc)
    # pieces are found on the coarse grid (a tenth of the voxels) and only the large ones are
    # brought back to the full grid (~0.17 s instead of ~0.33 s on a 512^2 x 275 chest)
    comp, n_comp = cc3d.connected_components(thick, connectivity=26, return_N=True)
    if n_comp == 0:
        return out
    del thick
    sizes = np.bincount(comp.ravel(), minlength=n_comp + 1) * (vml * float(np.prod(factors)))
    shell_of = ndimage.generate_binary_structure(3, 1)
    if thin:
        across = [slice(None)] * 3
        across[ax] = [0, 2]
        shell_of[tuple(across)] = False  # no neighbours above or below
    for c, found in enumerate(ndimage.find_objects(comp), start=1):
        if found is None or sizes[c] < min_ml:
            continue
        full = tuple(slice(b.start * f, min(b.stop * f, m)) for b, f, m in zip(found, factors, out.shape, strict=True))
        shape = tuple(b.stop - b.start for b in full)
        piece = upsample_nearest(comp[found] == c, factors, shape) & candidate[full]
        if np.count_nonzero(piece) * vml < min_ml:
            continue
        # the shell one voxel round the piece; beyond the image it counts as not lung (a dome
        # that a view's bottom face cuts is not wrapped)
        box = tuple(slice(max(0, b.start - 1), min(m, b.stop + 1)) for b, m in zip(full, out.shape, strict=True))
        edge = [(int(b.start == 0), int(b.stop == m)) for b, m in zip(full, out.shape, strict=True)]
        piece = np.pad(piece, 1)  # on the box padded by `edge`: one voxel round `full` everywhere
        ring = ndimage.binary_dilation(piece, shell_of) & ~piece
        if thin:  # the mass's own ragged edge that the opening took off is not its surroundings
            ring &= ~np.pad(np.asarray(candidate[box]), edge)
        shell = np.pad(out[box], edge)[ring]
        on_lung = shell[shell > 0]
        if on_lung.size < contact * shell.size:
            continue
        if np.count_nonzero(np.pad(np.asarray(hu[box]), edge, constant_values=-1000)[ring] > BONE_HU) > max_bone * shell.size:
            continue
        inner = tuple(slice(e[0], e[0] + b.stop - b.start) for e, b in zip(edge, box, strict=True))
        if thin and np.asarray(hu[box])[piece[inner]].mean() < MASS_SOLID_HU:
            continue
        if out is labels:
            out = np.array(labels, copy=True)
        out[box][piece[inner]] = np.bincount(on_lung).argmax()
    return out


#: fat on CT (smoothed over ~1 mm): its peak, not the classic -190..-30 window, whose upper part
#: poorly aerated consolidation reaches in a noisy scan; tumour and consolidation hold none
FAT_HU = (-190.0, -80.0)
#: a network-only piece with more fat than this (away from aerated lung) is not lung (measured:
#: leaked neck / mediastinal tissue 0.23-0.27 and more, masses and dense lobes <= 0.11,
#: low-density consolidation in noisy phantoms 0.12-0.13)
MAX_FAT_SHARE = 0.18


def drop_fatty_pieces(labels: np.ndarray, hu: np.ndarray, reference: np.ndarray, affine: np.ndarray,
                      dense_hu: float = -300.0, max_fat_share: float = MAX_FAT_SHARE,
                      air_margin_mm: float = 3.0, min_ml: float = 1.0, min_interior_ml: float = 0.5) -> np.ndarray:
    """`labels` without the soft tissue the network took in that is fatty: neck, shoulder and
    mediastinum, not lung.

    Why: a network that keeps masses at the pleura also reaches for soft tissue where a lung
    would be, e.g. over an apex that ends lower than the other (measured on a real chest: 100 mL
    of supraclavicular fat, muscle and vessels). Dense lung (tumour, consolidation, collapse) is
    fat-free; the soft tissue around the lungs is not. A piece is a connected region of the mask
    (26-neighbours) that the `reference` (the classical method's aerated lung) leaves out and that
    is denser than `dense_hu`; its fat share (`FAT_HU`, HU smoothed over ~1 mm) is counted more
    than `air_margin_mm` from aerated lung, where partial volume with air looks like fat. Pieces
    under `min_ml` (nodules' rims, dents) and pieces with little such interior are kept.
    """
    labels = np.asarray(labels)
    cand = labels != 0  # in place, element-wise: a few full-grid passes (~0.1 s for 512^2 x 275)
    cand &= np.asarray(reference) == 0
    cand &= np.asarray(hu) > dense_hu
    sp = spacing_of(affine)
    vml = voxel_volume_ml(affine)
    comp, n = cc3d.connected_components(cand, connectivity=26, return_N=True)
    del cand
    if n == 0:
        return labels
    pad = np.ceil((air_margin_mm + 3.0) / sp).astype(int)
    out = labels
    # boxes only (cc3d.statistics' full pass over the grid costs ~0.25 s); sizes from each box
    for c, found in enumerate(ndimage.find_objects(comp), start=1):
        if found is None or np.prod([b.stop - b.start for b in found]) * vml < min_ml:
            continue
        box = tuple(slice(max(0, b.start - p), min(m, b.stop + p))
                    for b, p, m in zip(found, pad, labels.shape, strict=True))
        piece = comp[box] == c
        if np.count_nonzero(piece) * vml < min_ml:
            continue
        smooth = ndimage.gaussian_filter(np.asarray(hu[box], np.float32), 1.0 / sp)
        interior = piece & (ndimage.distance_transform_edt(smooth >= EDGE_HU, sampling=sp) > air_margin_mm)
        n_in = int(interior.sum())
        if n_in * vml < min_interior_ml:
            continue
        fat = (smooth > FAT_HU[0]) & (smooth < FAT_HU[1])
        if float(np.count_nonzero(fat & interior)) / n_in > max_fat_share:
            if out is labels:
                out = labels.copy()
            out[box][piece] = 0
    return out


def refine_boundary(lung_prob: np.ndarray, hu: np.ndarray, low: float = 0.1, high: float = 0.9,
                    threshold_hu: float = EDGE_HU) -> np.ndarray:
    """Sharpen a coarse network boundary with the CT's own edge at full resolution.

    The network runs at a coarse working spacing, so its lung/non-lung transition is a few
    mm wide once resampled. Where it is sure (p >= high) its answer stands (vessels,
    nodules, consolidation inside the lung stay lung); where it is unsure (low < p < high)
    the voxel is lung when darker than `threshold_hu`, the half-way point between aerated
    lung (~ -850 HU) and soft tissue (~ 40 HU) at the pleura. Outside (p <= low) nothing is
    lung. Only pieces connected to the network's main lung regions (p > 0.5) are kept, so a vague
    network cannot let in air elsewhere (outside the body, bowel) through the rule.
    """
    return refine_levels(lung_levels(lung_prob, low, high), hu, threshold_hu)


def lung_levels(lung_prob: np.ndarray, low: float = 0.1, high: float = 0.9, mass: float = MASS_P) -> np.ndarray:
    """P(lung) as the five levels post-processing tells apart (uint8: a quarter of float32).

    0: p <= low, 1: low < p <= mass, 2: mass < p <= 0.5, 3: 0.5 < p < high, 4: p >= high
    (`refine_boundary` uses 0 / 1-3 / 4 and the core p > 0.5; `add_wrapped_masses` p > mass).
    """
    level = (lung_prob > low).view(np.uint8)
    level += lung_prob > mass
    level += lung_prob > 0.5
    level += lung_prob >= high
    return level


def doubt_unwrapped(level: np.ndarray, hu: np.ndarray, axis: int, contact: float = MASS_CONTACT,
                    threshold_hu: float = EDGE_HU) -> np.ndarray:
    """`lung_levels` of a thin view with the sure tissue the lung does not wrap made unsure.

    Where the network is sure (level 4), `refine_levels` keeps tissue denser than
    `threshold_hu` whatever its HU: vessels, nodules, consolidation inside the lung. In a thin
    view the network can be sure of soft tissue outside the lung too: a single slice at the top
    of the 4D-CT's lungs got 6.6 mL of the neck around the apex tips (Dice 0.27 against the
    whole scan's 1 mL), and one at the top of the abdomen series 2 mL of fat and air. So each
    piece of sure tissue (26-connected) keeps level 4 only with `contact` of its in-plane
    border (one voxel, across `axis`'s slices: a thin view has no above or below to judge by)
    on aerated lung (level >= 1 and darker than `threshold_hu`), the wrap test of
    `add_wrapped_masses`; the rest drops to level 3, where the HU decides. Nodules inside or at
    the edge of the lung, and the masses the shared slabs keep, pass (measured:
    docs/model_notes.md, "After the network, step by step", step 2).
    """
    level = np.asarray(level, np.uint8)
    tissue = level == 4
    tissue &= np.asarray(hu) >= threshold_hu
    comp, n = cc3d.connected_components(tissue, connectivity=26, return_N=True)
    if n == 0:
        return level
    size = [3, 3, 3]
    size[axis] = 1
    grown = ndimage.grey_dilation(comp, size=size)
    border = grown > 0
    border &= comp == 0
    ids = grown[border]
    aerated = (level[border] > 0) & (np.asarray(hu)[border] < threshold_hu)
    share = np.bincount(ids, weights=aerated, minlength=n + 1) / np.maximum(np.bincount(ids, minlength=n + 1), 1)
    doubt = share < contact
    doubt[0] = False
    out = level.copy()
    out[doubt[comp]] = 3
    return out


class LocalEdge:
    """The lung edge's HU on a coarse grid (`local_edge_hu`): `below(hu)` is `hu` < the edge."""

    def __init__(self, edge: np.ndarray, factors: tuple[int, int, int]):
        self.edge = edge
        self.factors = factors

    def below(self, hu: np.ndarray) -> np.ndarray:
        hu = np.asarray(hu)
        out = np.empty(hu.shape, bool)
        f0, f1, f2 = self.factors
        _, n1, n2 = hu.shape
        for i in range(self.edge.shape[0]):  # a block of rows at a time (contiguous in C order)
            t = np.repeat(np.repeat(self.edge[i], f1, 0), f2, 1)[None, :n1, :n2]
            np.less(hu[i * f0:(i + 1) * f0], t, out=out[i * f0:(i + 1) * f0])
        return out


def local_edge_hu(level: np.ndarray, hu: np.ndarray, spacing) -> LocalEdge:
    """Where the CT's lung edge lies in HU, near each place: half-way between the lung there
    and `EDGE_TISSUE_HU`, clipped to [`EDGE_HU`, `EDGE_MAX_HU`].

    Why: a fixed -400 HU is half-way only for aerated lung (~ -850 HU). Lung denser than that —
    the dependent ground glass of a supine patient, an expiration scan — meets the chest wall
    at a higher HU, and a fixed cut shaved it off where the network was unsure: ground glass
    painted into the shared chests' dependent lung (-550 HU at the pleura) lost 50-110 mL of
    lung (docs/model_notes.md, "Dependent density, painted"). Lung of ordinary density keeps exactly
    -400 HU (the shared chests' whole-scan masks within 1.3 mL, the held-out phantoms' Dice to 1e-4).
    """
    level = np.asarray(level, np.uint8)
    hu = np.asarray(hu)
    f = tuple(max(1, int(round(EDGE_BLOCK_MM / float(s)))) for s in spacing)
    total, count, sure = [], [], []
    for x in range(0, hu.shape[0], f[0]):  # a block of rows at a time: no full-size copies
        h = hu[x:x + f[0]]
        s4 = level[x:x + f[0]] == 4
        w = s4 & (h < PARENCHYMA_MAX_HU)
        total.append(block_sum(np.where(w, h, 0).astype(np.int32), f)[0])
        count.append(block_sum(w, f)[0])
        sure.append(block_sum(s4, f)[0])
    sigma = [EDGE_SIGMA_MM / (k * float(s)) for k, s in zip(f, spacing, strict=True)]
    total, count, sure = (ndimage.gaussian_filter(np.stack(a).astype(np.float64), sigma, mode="nearest")
                          for a in (total, count, sure))
    lung_hu = np.where(count > 1e-3, total / np.maximum(count, 1e-3), -1000.0)
    # parenchyma must make most of the sure lung there: not the noise of an airless lobe
    lung_hu[count < MIN_PARENCHYMA_SHARE * sure] = -1000.0
    edge = np.clip(0.5 * (lung_hu + EDGE_TISSUE_HU), EDGE_HU, EDGE_MAX_HU).astype(np.float32)
    return LocalEdge(edge, f)


def refine_levels(level: np.ndarray, hu: np.ndarray, threshold_hu: float | LocalEdge = EDGE_HU) -> np.ndarray:
    """`refine_boundary` on P(lung) already reduced to `lung_levels` (`threshold_hu`: a fixed HU,
    or the local edge of `local_edge_hu`)."""
    level = np.asarray(level, np.uint8)
    sure = (level - np.uint8(1)) < 3  # levels 1 to 3 (level 0 wraps to 255): the band
    if isinstance(threshold_hu, LocalEdge):
        sure &= threshold_hu.below(hu)
    else:
        sure &= np.asarray(hu) < threshold_hu  # element-wise, not a boolean gather: ~5x faster
    sure |= level == 4
    core, n_core = cc3d.connected_components(level >= 3, connectivity=26, return_N=True)
    # counted by cc3d in one pass: np.bincount would first copy the labels to int64, 8 bytes a voxel
    sizes = np.zeros(n_core + 1, np.int64)
    counts = cc3d.statistics(core)["voxel_counts"]
    sizes[1:counts.size] = counts[1:]
    if sizes.max() == 0:
        return np.zeros(core.shape, bool)
    main = sizes >= 0.01 * sizes.max()  # the lungs and their pieces, not specks (a lookup table)
    main[0] = False
    hit = main[core]
    del core  # before the second labelling: two label grids at once were the peak on a 1024² scan
    hit &= sure
    comp, n_comp = cc3d.connected_components(sure, connectivity=26, return_N=True)
    keep = np.bincount(comp[hit], minlength=n_comp + 1) > 0
    keep[0] = False
    return keep[comp]
