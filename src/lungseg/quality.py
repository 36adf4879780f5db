"""Quality checks on a lung mask: tell the user when a mask is doubtful.

Each check is a pure function of the CT image, its mask (0 background, 1 right, 2 left, on the
image's grid) and, for two checks, a second mask of the same image; each returns a `Finding`
(name, passed, value, message; `passed` is None when the check does not apply). `check_mask`
runs them all and returns a JSON-able dict: the findings, one warning line per failed check,
the lung volumes and the lungs' extent along the patient's head-foot axis.

None of these checks proves a mask right; each flags a pattern that is rare in a correct
mask of a chest CT, so that a person looks at the case.

Example (two box "lungs" spanning 200 mm, well inside a 300 x 200 x 240 mm grid)::

    >>> import numpy as np
    >>> from lungseg.core.volume import Volume
    >>> lab = np.zeros((150, 100, 120), np.uint8)
    >>> lab[80:120, 20:80, 10:110] = 1; lab[30:70, 20:80, 10:110] = 2
    >>> aff = np.diag([2.0, 2.0, 2.0, 1.0])
    >>> image = Volume(np.where(lab > 0, -850, 40).astype(np.int16), aff)
    >>> qc = check_mask(image, Volume(lab, aff))
    >>> qc["passed"], qc["warnings"], qc["extent_mm"], qc["volumes_ml"]["right"]
    (True, [], 200.0, 1920.0)
    >>> del_left = np.where(lab == 2, 0, lab)
    >>> check_mask(image, Volume(del_left, aff))["warnings"][0]
    'left lung missing although the scan covers the whole chest (lungs span 200 mm)'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import nibabel as nib
import numpy as np

from lungseg.core.anatomy import GAS_HU, MAX_GAS_SHARE, view_axis
from lungseg.core.geometry import (
    check_same_grid,
    right_left_axis,
    spacing_of,
    superior_axis,
    voxel_volume_ml,
)
from lungseg.core.labels import LABEL_NAMES, LEFT, RIGHT, check_labels
from lungseg.core.noise import noise_sd
from lungseg.core.volume import Volume

__all__ = ["Finding", "check_mask", "chest_coverage", "check_both_lungs", "check_lung_volume",
           "check_fov_edge", "check_agreement", "check_dense_tissue", "check_gas", "check_sides", "run_checks"]

#: Lungs spanning at least this far head-to-foot (mm) can be a whole chest (adult lungs are
#: ~20-30 cm tall; a scan of the lung bases or apices alone spans less).
WHOLE_CHEST_MIN_EXTENT_MM = 150.0
#: The lungs are cut at the scan's top or bottom when its end slice holds more than this share
#: of their largest axial cross-section. A thinner tip of an apex or of a costophrenic recess
#: in the end slice loses only a few mL and is still counted as covered.
END_SLICE_FRACTION = 0.10
#: In a whole chest, each lung holds at least this share of the total lung volume. A lung
#: normally holds 44-56 %; much less means the mask missed a dense part of it (collapse,
#: consolidation, a large tumour: LIDC-0314's right lung with a dense upper lobe came out
#: at 33 %), missed it whole or called both lungs one side, or the lung is truly reduced
#: (lobectomy, pneumonectomy, effusion): worth a look either way.
MIN_LUNG_SHARE = 0.35
#: Plausible total lung volume (mL) of a whole chest, adults in expiration to large inspiration.
MIN_TOTAL_ML, MAX_TOTAL_ML = 1000.0, 9000.0
#: Plausible volume of one lung (mL) in a whole chest.
MIN_ONE_LUNG_ML = 300.0
#: Lung surface on one in-plane border face of the array, as a share of the whole lung
#: surface, above which the lung is probably cut by the field of view (a lung that just
#: grazes the edge touches it with far less).
EDGE_FRACTION = 0.01
#: Binary Dice (lungs vs background) between two methods below which the mask is doubtful;
#: two correct masks of the same scan agree to ~0.95-0.98.
MIN_AGREEMENT_DICE = 0.90
#: Soft tissue (HU above `DENSE_HU`) that the mask keeps and the second mask leaves out, in mL,
#: above which the mask is doubtful. The network keeps masses and dense lung that the classical
#: method cannot (right), but under a fibrotic base it also took in the liver or spleen dome
#: (wrong; docs/model_notes.md). The shared chests without either: 20-26 mL (second build 12-23);
#: painted fibrosis 30-154 mL (63-154 on the whole chests, second build); the IBSI mass 263 mL,
#: LIDC-0314's dense upper lobe 199 mL.
DENSE_HU = -200.0
MAX_DENSE_ONLY_ML = 60.0
# (`GAS_HU`, `MAX_GAS_SHARE`: `core.anatomy`, shared with the partial-view steps: a mask with
# more than that share darker than that may be gas called lung, or very severe emphysema.)
#: Image noise (HU, `core.noise.noise_sd`) above which the mask is doubtful although the scan was
#: smoothed first: painted noise measuring 93-108 HU still moved the shared chests' masks by
#: 0.01-0.04 Dice (dense lung most; `bench/painted_noise.py`); the real scans here measure 15-64.
MAX_NOISE_HU = 90.0
#: The checks that compare the mask with a second segmentation.
REFERENCE_CHECKS = ("method_agreement", "dense_tissue_kept")

THRESHOLDS = {
    "whole_chest_min_extent_mm": WHOLE_CHEST_MIN_EXTENT_MM, "end_slice_fraction": END_SLICE_FRACTION,
    "min_lung_share": MIN_LUNG_SHARE, "min_total_ml": MIN_TOTAL_ML, "max_total_ml": MAX_TOTAL_ML,
    "min_one_lung_ml": MIN_ONE_LUNG_ML, "edge_fraction": EDGE_FRACTION,
    "min_agreement_dice": MIN_AGREEMENT_DICE, "dense_hu": DENSE_HU, "max_dense_only_ml": MAX_DENSE_ONLY_ML,
    "gas_hu": GAS_HU, "max_gas_share": MAX_GAS_SHARE, "max_noise_hu": MAX_NOISE_HU,
}

_SIDE = {"R": "right", "L": "left", "A": "anterior", "P": "posterior", "S": "superior", "I": "inferior"}
_OPPOSITE = {"R": "L", "L": "R", "A": "P", "P": "A", "S": "I", "I": "S"}


@dataclass
class Finding:
    """One check's result: `passed` is None when the check did not apply (skipped)."""

    name: str
    passed: bool | None
    value: Any
    message: str

    @property
    def skipped(self) -> bool:
        return self.passed is None

    def to_dict(self) -> dict:
        return {**asdict(self), "skipped": self.skipped}


def _labels(image: Volume, mask: Volume) -> np.ndarray:
    check_same_grid(mask, image, "mask and image")
    return check_labels(mask.array, "mask", mask.meta.get("path"))


def _volumes_ml(labels: np.ndarray, voxel_ml: float) -> dict:
    right = float(np.count_nonzero(labels == RIGHT) * voxel_ml)
    left = float(np.count_nonzero(labels == LEFT) * voxel_ml)
    return {"right": right, "left": left, "total": right + left}


def _end_names(affine: np.ndarray, axis: int) -> tuple[str, str]:
    """Names of the low-index and high-index ends of `axis` ('superior'/'inferior', ...)."""
    code = nib.orientations.aff2axcodes(np.asarray(affine, float))[axis]
    return _SIDE[_OPPOSITE[code]], _SIDE[code]


def chest_coverage(image: Volume, mask: Volume) -> dict:
    """Whether the scan covers the whole chest, judged from the lungs found.

    Along the superior axis (`core.geometry.superior_axis`): `extent_mm` is the lungs'
    head-foot extent; the lungs are cut at an end when the end slice holds more than
    `END_SLICE_FRACTION` of their largest cross-section. `whole_chest` is true when they are
    cut at neither end and span at least `WHOLE_CHEST_MIN_EXTENT_MM`. A coronal or sagittal thin
    view (`core.anatomy.view_axis`) is never a whole chest: its lungs are cut at its two faces.
    """
    return _coverage(_labels(image, mask), image.affine)


def _coverage(labels: np.ndarray, affine: np.ndarray) -> dict:
    axis = superior_axis(affine)
    area = np.count_nonzero(labels, axis=tuple(a for a in range(3) if a != axis))
    low_name, high_name = _end_names(affine, axis)
    if not area.any():
        return {"axis": axis, "extent_mm": 0.0, "cut_at": [], "whole_chest": False}
    present = np.nonzero(area)[0]
    extent = float((present[-1] - present[0] + 1) * spacing_of(affine)[axis])
    cut = [name for name, n in ((low_name, area[0]), (high_name, area[-1]))
           if n > END_SLICE_FRACTION * area.max()]
    across = view_axis(labels.shape, affine)
    if across != axis:  # a coronal or sagittal slab / slice: cut front and back (or at the sides)
        cut += list(_end_names(affine, across))
    return {"axis": axis, "extent_mm": extent, "cut_at": sorted(cut),
            "whole_chest": not cut and extent >= WHOLE_CHEST_MIN_EXTENT_MM}


def _not_whole_chest(cov: dict) -> str:
    if cov["cut_at"]:
        return f"skipped: lungs cut at the scan's {' and '.join(cov['cut_at'])} end"
    return (f"skipped: lungs span {cov['extent_mm']:.0f} mm, less than the "
            f"{WHOLE_CHEST_MIN_EXTENT_MM:.0f} mm of a whole chest")


def check_both_lungs(image: Volume, mask: Volume) -> Finding:
    """One lung missing (or tiny) in a scan that covers the whole chest.

    Why: a whole chest shows two lungs; a missing one is far more often a segmentation
    failure (dense lung, collapsed lung, both lungs labelled one side) than a pneumonectomy.
    Fails when no lung is found at all; otherwise applies only to whole-chest scans
    (`chest_coverage`) and then needs labels 1 and 2 each to hold at least `MIN_LUNG_SHARE`
    of the total. Value: the smaller lung's share of the total (None when skipped).
    """
    return _both_lungs(_labels(image, mask), image.affine)


def _both_lungs(labels: np.ndarray, affine: np.ndarray) -> Finding:
    vol = _volumes_ml(labels, voxel_volume_ml(affine))
    if vol["total"] == 0:
        return Finding("both_lungs", False, 0.0, "no lung found in the mask")
    cov = _coverage(labels, affine)
    if not cov["whole_chest"]:
        return Finding("both_lungs", None, None, _not_whole_chest(cov))
    shares = {side: vol[side] / vol["total"] for side in ("right", "left")}
    small = min(shares, key=shares.get)
    value = round(shares[small], 4)
    if shares[small] >= MIN_LUNG_SHARE:
        return Finding("both_lungs", True, value, f"both lungs present ({small} lung {100 * value:.0f}%)")
    if vol[small] == 0:
        what = f"{small} lung missing"
    else:
        what = (f"{small} lung only {100 * shares[small]:.0f}% of the lung volume "
                f"(expected at least {100 * MIN_LUNG_SHARE:.0f}%)")
    return Finding("both_lungs", False, value,
                   f"{what} although the scan covers the whole chest (lungs span {cov['extent_mm']:.0f} mm)")


def check_lung_volume(image: Volume, mask: Volume) -> Finding:
    """Lung volume outside a plausible range, for a scan that covers the whole chest.

    Why: a whole chest holds `MIN_TOTAL_ML`-`MAX_TOTAL_ML` mL of lung and each lung at least
    `MIN_ONE_LUNG_ML`; outside that, either the mask is wrong (missed or leaked lung) or the
    header's voxel size is (a wrong spacing scales every volume). Skipped when the scan does
    not cover the whole chest. Value: {right, left, total} in mL.
    """
    return _lung_volume(_labels(image, mask), image.affine)


def _lung_volume(labels: np.ndarray, affine: np.ndarray) -> Finding:
    vol = {k: round(v, 1) for k, v in _volumes_ml(labels, voxel_volume_ml(affine)).items()}
    cov = _coverage(labels, affine)
    if not cov["whole_chest"]:
        return Finding("lung_volume", None, vol, _not_whole_chest(cov))
    problems = []
    if not MIN_TOTAL_ML <= vol["total"] <= MAX_TOTAL_ML:
        problems.append(f"total lung volume {vol['total'] / 1000:.2f} L is outside the plausible "
                        f"{MIN_TOTAL_ML / 1000:.1f}-{MAX_TOTAL_ML / 1000:.1f} L")
    for side in ("right", "left"):
        if vol[side] < MIN_ONE_LUNG_ML:
            problems.append(f"{side} lung {vol[side] / 1000:.2f} L is below {MIN_ONE_LUNG_ML / 1000:.1f} L")
    if problems:
        return Finding("lung_volume", False, vol,
                       "; ".join(problems) + " for a whole chest (wrong mask or wrong voxel size?)")
    return Finding("lung_volume", True, vol, f"total lung volume {vol['total'] / 1000:.2f} L")


def _surface_area_mm2(lung: np.ndarray, spacing: np.ndarray) -> float:
    """Area of the boundary between lung and not-lung (array border faces included), mm^2."""
    total = 0.0
    for axis in range(3):
        face = float(np.prod([s for a, s in enumerate(spacing) if a != axis]))
        lo = np.take(lung, 0, axis=axis)
        hi = np.take(lung, -1, axis=axis)
        inner = np.count_nonzero(np.diff(lung, axis=axis)) if lung.shape[axis] > 1 else 0
        total += face * (inner + np.count_nonzero(lo) + np.count_nonzero(hi))
    return total


def check_fov_edge(image: Volume, mask: Volume) -> Finding:
    """Lung touching the in-plane edge of the field of view.

    Why: lung on the array's in-plane border faces (the faces across the two axes other than
    the superior axis) was most likely cut by the reconstruction field of view (a small FOV
    in a large patient, or a cropped image); its volume and anything quantified from it are
    underestimated. Fails when the lung on one face exceeds `EDGE_FRACTION` of the whole
    lung surface. Value: {side: share of the lung surface} for the four in-plane sides
    (patient's right/left/anterior/posterior, from the affine).
    """
    return _fov_edge(_labels(image, mask), image.affine)


def _fov_edge(labels: np.ndarray, affine: np.ndarray) -> Finding:
    lung = labels > 0
    spacing = spacing_of(affine)
    axis_s = view_axis(labels.shape, affine)  # a slab's own faces are not the reconstruction's edge
    surface = _surface_area_mm2(lung, spacing)
    shares: dict[str, float] = {}
    touching: dict[str, list[str]] = {}
    for axis in (a for a in range(3) if a != axis_s):
        face = float(np.prod([s for a, s in enumerate(spacing) if a != axis]))
        for name, index in zip(_end_names(affine, axis), (0, -1), strict=True):
            sl = np.take(labels, index, axis=axis)
            shares[name] = round(float(face * np.count_nonzero(sl) / surface), 4) if surface else 0.0
            touching[name] = [LABEL_NAMES[k] for k in (RIGHT, LEFT) if (sl == k).any()]
    bad = [n for n, v in sorted(shares.items(), key=lambda kv: -kv[1]) if v > EDGE_FRACTION]
    if not bad:
        worst = max(shares.values(), default=0.0)
        return Finding("fov_edge", True, shares,
                       f"lungs clear of the field-of-view edge (at most {100 * worst:.1f}% of their surface)")
    parts = []
    for i, n in enumerate(bad):
        lungs = "both lungs" if len(touching[n]) == 2 else f"{touching[n][0]} lung"
        side = f"{n} side" if len(bad) == 1 else n
        parts.append(f"{side} ({lungs}, {100 * shares[n]:.1f}%{' of the lung surface' if i == 0 else ''})")
    where = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + f" and {parts[-1]} sides"
    return Finding("fov_edge", False, shares,
                   f"lung touches the field-of-view edge on the patient's {where}: probably cut by "
                   "the reconstruction field of view, so lung volumes are underestimated")


def check_agreement(image: Volume, mask: Volume, reference: Volume | None,
                    names: tuple[str, str] = ("the mask", "the reference mask")) -> Finding:
    """Large disagreement between two segmentations of the same image (e.g. network vs classical).

    Why: two methods that fail differently rarely fail the same way; where they disagree
    (Dice of lung vs background below `MIN_AGREEMENT_DICE`) at least one is wrong. Skipped
    without a reference. Value: the binary Dice. `names` name the two masks in the message.
    """
    return _agreement(_labels(image, mask), None if reference is None else _labels(image, reference),
                      names)


def _agreement(labels: np.ndarray, ref: np.ndarray | None, names: tuple[str, str]) -> Finding:
    if ref is None:
        return Finding("method_agreement", None, None, "skipped: no second segmentation to compare with")
    a, b = labels > 0, ref > 0
    total = np.count_nonzero(a) + np.count_nonzero(b)
    dice = 1.0 if total == 0 else 2.0 * np.count_nonzero(a & b) / total
    value = round(float(dice), 4)
    if dice >= MIN_AGREEMENT_DICE:
        return Finding("method_agreement", True, value, f"{names[0]} and {names[1]} agree (lung Dice {value:.3f})")
    return Finding("method_agreement", False, value,
                   f"{names[0]} and {names[1]} disagree (lung Dice {value:.3f}, "
                   f"expected at least {MIN_AGREEMENT_DICE:.2f}): check the mask")


def check_dense_tissue(image: Volume, mask: Volume, reference: Volume | None,
                       names: tuple[str, str] = ("the mask", "the reference mask")) -> Finding:
    """Much soft tissue kept by the mask but not by a second segmentation of the same image.

    Why: the two masks can agree well overall (Dice > 0.95) while one holds a few hundred mL of
    soft tissue the other leaves out: a mass or dense lung (which belongs to the lung), or the
    liver or spleen taken in under a fibrotic base (which does not). Either is worth a look.
    Fails above `MAX_DENSE_ONLY_ML` of voxels denser than `DENSE_HU`; skipped without a
    reference. Value: those mL.
    """
    return _dense_tissue(_labels(image, mask), None if reference is None else _labels(image, reference),
                         np.asarray(image.array), image.voxel_ml, names)


def _dense_tissue(labels: np.ndarray, ref: np.ndarray | None, hu: np.ndarray, voxel_ml: float,
                  names: tuple[str, str]) -> Finding:
    if ref is None:
        return Finding("dense_tissue_kept", None, None, "skipped: no second segmentation to compare with")
    only = (labels > 0) & (ref == 0)
    only &= hu > DENSE_HU
    ml = round(float(np.count_nonzero(only) * voxel_ml), 1)
    if ml <= MAX_DENSE_ONLY_ML:
        return Finding("dense_tissue_kept", True, ml,
                       f"{names[0]} keeps {ml:.0f} mL of soft tissue that {names[1]} leaves out")
    return Finding("dense_tissue_kept", False, ml,
                   f"{names[0]} keeps {ml:.0f} mL of soft tissue (denser than {DENSE_HU:.0f} HU) that "
                   f"{names[1]} leaves out: a mass or dense lung, or tissue beside or below the lung "
                   "(e.g. the liver or spleen under a fibrotic base): check the mask")


def check_gas(image: Volume, mask: Volume) -> Finding:
    """Much of the mask reads as gas (darker than `GAS_HU`): bowel or stomach gas, air outside
    the body or a pneumothorax called lung — or very severe emphysema. Fails above
    `MAX_GAS_SHARE`; skipped for an empty mask. Value: the share."""
    return _gas(_labels(image, mask), np.asarray(image.array))


def _gas(labels: np.ndarray, hu: np.ndarray) -> Finding:
    lung = labels > 0
    n = int(np.count_nonzero(lung))
    if n == 0:
        return Finding("gas_share", None, None, "skipped: no lung in the mask")
    share = round(float(np.count_nonzero(hu[lung] < GAS_HU)) / n, 3)
    if share <= MAX_GAS_SHARE:
        return Finding("gas_share", True, share, f"{100 * share:.0f} % of the lung mask darker than {GAS_HU:.0f} HU")
    return Finding("gas_share", False, share,
                   f"{100 * share:.0f} % of the lung mask is darker than {GAS_HU:.0f} HU: gas called lung "
                   "(bowel or stomach gas, air outside the body, a pneumothorax) or very severe "
                   "emphysema: check the mask")


def _noise(image: Volume) -> Finding:
    sd = noise_sd(image.array, image.spacing)
    if sd is None:
        return Finding("noise", None, None, "skipped: no soft tissue to measure the noise in")
    sd = round(sd, 1)
    if sd <= MAX_NOISE_HU:
        return Finding("noise", True, sd, f"{sd:.0f} HU of noise in soft tissue")
    return Finding("noise", False, sd,
                   f"{sd:.0f} HU of noise in soft tissue (a low-dose scan?): smoothed before segmenting, "
                   "but masks of scans this noisy moved by 0.01-0.04 Dice in tests, dense lung most: "
                   "check the mask")


def check_sides(image: Volume, mask: Volume) -> Finding:
    """Right and left guessed, not read from the body: a sagittal thin view.

    Why: sides come from the body's midline (the spine), which a sagittal slab or slice does
    not show; there the lung is named by the side of the scanner's isocentre, world x = 0
    (`core.anatomy.body_midline_x`), right when the patient lay near the table's centre and the
    file kept the scanner's coordinates, wrong when a tool moved the origin. Fails (a warning,
    so that a person checks the side) for such a view with lung in it; otherwise passes.
    Value: "isocentre" or "midline".
    """
    return _sides(_labels(image, mask), image.affine)


def _sides(labels: np.ndarray, affine: np.ndarray) -> Finding:
    if view_axis(labels.shape, affine) != right_left_axis(affine):
        return Finding("sides", True, "midline", "right and left from the body's midline")
    if not labels.any():
        return Finding("sides", None, "isocentre", "skipped: no lung in the mask")
    return Finding("sides", False, "isocentre",
                   "a sagittal view shows no midline: right / left was guessed from the scanner's "
                   "isocentre (x = 0 mm); check the side in the overlay")


def run_checks(image: Volume, mask: Volume, reference: Volume | None = None,
               names: tuple[str, str] = ("the mask", "the reference mask")) -> list[Finding]:
    """All checks, in a fixed order (each array is validated once)."""
    labels = _labels(image, mask)
    ref = None if reference is None else _labels(image, reference)
    return _run(labels, ref, image, names)


def _run(labels: np.ndarray, ref: np.ndarray | None, image: Volume,
         names: tuple[str, str]) -> list[Finding]:
    affine = image.affine
    return [_both_lungs(labels, affine), _lung_volume(labels, affine), _fov_edge(labels, affine),
            _agreement(labels, ref, names),
            _dense_tissue(labels, ref, np.asarray(image.array), image.voxel_ml, names),
            _gas(labels, np.asarray(image.array)), _sides(labels, affine), _noise(image)]


def check_mask(image: Volume, mask: Volume, reference: Volume | None = None, *,
               names: tuple[str, str] = ("the mask", "the reference mask")) -> dict:
    """Run every check; a JSON-able dict.

    Keys: `passed` (no check failed), `warnings` (the message of each failed check),
    `checks` (every finding, skipped ones included), `volumes_ml` (right/left/total),
    `extent_mm` (the lungs' extent along the superior axis), `superior_axis`, `whole_chest`,
    `cut_at` (scan ends the lungs are cut at) and `thresholds`.
    `reference` is a second mask of the same image (for `check_agreement` and
    `check_dense_tissue`; `names` name the two in their messages, e.g. ("the network", "the
    classical method")).
    Raises GeometryError / LabelError when a mask is not on the image's grid or not 0/1/2.
    """
    labels = _labels(image, mask)
    ref = None if reference is None else _labels(image, reference)
    findings = _run(labels, ref, image, names)
    cov = _coverage(labels, image.affine)
    vol = _volumes_ml(labels, image.voxel_ml)
    return {
        "passed": not any(f.passed is False for f in findings),
        "warnings": [f.message for f in findings if f.passed is False],
        "checks": [f.to_dict() for f in findings],
        "volumes_ml": {k: round(v, 1) for k, v in vol.items()},
        "extent_mm": round(cov["extent_mm"], 1),
        "superior_axis": cov["axis"],
        "whole_chest": bool(cov["whole_chest"]),
        "cut_at": cov["cut_at"],
        "thresholds": dict(THRESHOLDS),
    }
