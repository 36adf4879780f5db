"""Label maps from other tools and datasets → lungseg's {0 background, 1 right lung, 2 left lung}.

Named mappings (`mapping=`):

- ``"lobes5"``: the 5-lobe convention of lungmask's LTRCLobes / R231CovidWeb-lobe models
  and LOLA11-style lobe maps: 1 left upper lobe, 2 left lower lobe, 3 right upper lobe,
  4 right middle lobe, 5 right lower lobe → 1, 2 → left (2); 3, 4, 5 → right (1).
- ``"totalsegmentator"``: TotalSegmentator v2 "total" task: 10 lung_upper_lobe_left,
  11 lung_lower_lobe_left → 2; 12 lung_upper_lobe_right, 13 lung_middle_lobe_right,
  14 lung_lower_lobe_right → 1; every other organ value → 0.
- ``"swap"``: 1 left, 2 right (some datasets) → swapped.
- ``"binary"``: any non-zero value is lung; sides found from anatomy.
- a dict ``{value: 0|1|2}`` or the same as text ``"0:0,1:1,7:2"`` (CLI form).

Without a mapping, {0, 1, 2} (with 2 present) is taken as is, and {0, 1} or {0, 255} is
binary (lung / no lung) and split into right and left by anatomy (`split_sides`, which is
`lungseg.core.anatomy.split_left_right`: one implementation for labels and predictions).

>>> import numpy as np
>>> lab = np.zeros((20, 4, 4), np.uint8); lab[2:8] = 1; lab[12:18] = 1
>>> out = normalise_label(lab, np.eye(4))          # binary, i = RAS x
>>> int(out[4, 0, 0]), int(out[15, 0, 0])          # larger x is the patient's right
(2, 1)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lungseg.core.anatomy import split_left_right as split_sides
from lungseg.core.errors import LabelError

NAMED_MAPPINGS: dict[str, dict[int, int]] = {
    "lobes5": {0: 0, 1: 2, 2: 2, 3: 1, 4: 1, 5: 1},
    "totalsegmentator": {10: 2, 11: 2, 12: 1, 13: 1, 14: 1},
    "swap": {0: 0, 1: 2, 2: 1},
}
#: Named mappings where values not listed are other structures (→ background), not errors.
_OTHERS_TO_BACKGROUND = {"totalsegmentator"}


def parse_mapping(mapping: str | dict | None) -> str | dict[int, int] | None:
    """Accept a name, a dict, or "a:b,c:d" text; raise `LabelError` for anything else."""
    if mapping is None or isinstance(mapping, dict):
        return {int(k): int(v) for k, v in mapping.items()} if mapping else mapping
    text = str(mapping).strip()
    if text in NAMED_MAPPINGS or text == "binary":
        return text
    if ":" in text:
        try:
            return {int(a): int(b) for a, b in (p.split(":") for p in text.split(",") if p.strip())}
        except ValueError:
            pass
    raise LabelError(f"unknown label mapping {text!r}; use one of {sorted(NAMED_MAPPINGS) + ['binary']}"
                     " or 'value:target,...' with targets 0 (background), 1 (right), 2 (left)")


def normalise_label(array: np.ndarray, affine: np.ndarray, mapping: str | dict | None = None,
                    path: str | Path | None = None) -> np.ndarray:
    """Return a uint8 {0, 1, 2} label map (1 right lung, 2 left lung) on the same grid.

    `affine` (RAS) tells which side is the patient's right when sides are found from anatomy.
    Raises `LabelError` naming the values that cannot be mapped (e.g. {0, 7}) or a mapping
    target other than 0, 1, 2.
    """
    array = np.asarray(array)
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise LabelError("label map holds non-integer values (is this an image, not a label?)", path)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    values = {int(v) for v in np.unique(array)}
    mapping = parse_mapping(mapping)
    if mapping == "binary":
        return split_sides(array != 0, affine)
    if mapping is None:
        if values <= {0, 1, 2} and 2 in values:
            return array.astype(np.uint8)
        if values <= {0, 1} or values <= {0, 255}:
            return split_sides(array != 0, affine)
        raise LabelError(
            f"label values {_fmt(values)} are not lungseg's 0/1/2 (background, right, left) nor binary"
            f" lung masks; pass a label mapping (e.g. lobes5, totalsegmentator, or '0:0,{max(values)}:1')",
            path)
    if isinstance(mapping, str):
        name, mapping = mapping, dict(NAMED_MAPPINGS[mapping])
        if name in _OTHERS_TO_BACKGROUND:
            mapping.update({v: 0 for v in values if v not in mapping})
    mapping.setdefault(0, 0)
    bad_targets = {t for t in mapping.values() if t not in (0, 1, 2)}
    if bad_targets:
        raise LabelError(f"label mapping targets {_fmt(bad_targets)}; targets must be 0, 1 or 2", path)
    unknown = values - set(mapping)
    if unknown:
        raise LabelError(f"label values {_fmt(unknown)} are not in the label mapping "
                         f"(it maps {_fmt(set(mapping))})", path)
    lut = np.zeros(max(values) - min(min(values), 0) + 1, dtype=np.uint8)
    offset = -min(min(values), 0)
    for v in values:
        lut[v + offset] = mapping[v]
    return lut[array.astype(np.int64) + offset]


def _fmt(values: set[int]) -> str:
    return "{" + ", ".join(str(v) for v in sorted(values)) + "}"
