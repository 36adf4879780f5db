"""Compare predicted lung masks with references: Dice, HD95, ASSD and volume error.

Structures: "lungs" (union of labels > 0), "right" (label 1) and "left" (label 2).
Distances are in mm, from the affine's voxel spacing. Surfaces are the mask voxels with a
6-neighbour outside the mask (as MONAI's `get_mask_edges`); HD95 is the larger of the two
directed 95th percentiles, ASSD the mean of all surface distances of both directions (as
MONAI's `compute_hausdorff_distance(percentile=95)` and
`compute_average_surface_distance(symmetric=True)`).

Empty-structure policy:
- pred and ref both empty: Dice 1.0, HD95/ASSD NaN (undefined, left out of the means);
- exactly one empty: Dice 0.0, HD95/ASSD NaN (left out of the means) and the case's
  `n_empty_mismatch` counts it (summed in the summary).

Example on a phantom::

    >>> import numpy as np
    >>> from lungseg.core.volume import Volume
    >>> from lungseg.evaluation import case_metrics
    >>> ref = np.zeros((20, 20, 20), np.uint8); ref[2:8, 5:15, 5:15] = 1; ref[12:18, 5:15, 5:15] = 2
    >>> m = case_metrics(Volume(ref, np.eye(4)), Volume(ref, np.eye(4)))
    >>> m["dice_lungs"], m["hd95_right_mm"], m["volume_error_total_ml"]
    (1.0, 0.0, 0.0)
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
from scipy import ndimage

from lungseg.core.errors import InputError, OutputError
from lungseg.core.geometry import check_same_grid
from lungseg.core.labels import LEFT, RIGHT, check_labels
from lungseg.core.volume import Volume
from lungseg.io.formats import VOLUME_SUFFIXES, is_volume_file, strip_suffix
from lungseg.io.safety import atomic_path, check_output
from lungseg.io.volumes import read_volume

__all__ = ["case_metrics", "dice", "evaluate", "format_table"]

STRUCTURES = {"lungs": None, "right": RIGHT, "left": LEFT}


def dice(p: np.ndarray, r: np.ndarray) -> float:
    """Dice of two masks (any arrays; non-zero is inside): 1.0 when both are empty (the
    module's empty-structure policy). The one Dice of the project: tests and benches use it."""
    p, r = np.asarray(p) != 0, np.asarray(r) != 0
    sp, sr = int(np.count_nonzero(p)), int(np.count_nonzero(r))
    if sp + sr == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(p & r)) / (sp + sr)


def _surface(m: np.ndarray) -> np.ndarray:
    return m & ~ndimage.binary_erosion(m, border_value=0)


def _surface_distances(p: np.ndarray, r: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from pred surface voxels to the ref surface, and back."""
    both = p | r
    box = []
    for ax in range(3):
        other = tuple(a for a in range(3) if a != ax)
        idx = np.flatnonzero(both.any(axis=other))
        box.append(slice(idx[0], idx[-1] + 1))
    p = np.pad(p[tuple(box)], 1)
    r = np.pad(r[tuple(box)], 1)
    sp_, sr_ = _surface(p), _surface(r)
    d_to_r = ndimage.distance_transform_edt(~sr_, sampling=spacing)
    d_to_p = ndimage.distance_transform_edt(~sp_, sampling=spacing)
    return d_to_r[sp_], d_to_p[sr_]


def case_metrics(pred: Volume, ref: Volume) -> dict:
    """Dice, HD95 (mm), ASSD (mm) and volume error (pred - ref, mL) for lungs/right/left.

    Raises GeometryError when pred and ref differ in shape or affine, LabelError for labels
    other than 0/1/2. See the module docstring for the empty-structure policy.
    """
    check_same_grid(pred, ref, "prediction and reference")
    p_all = check_labels(pred.array, "prediction", pred.meta.get("path"))
    r_all = check_labels(ref.array, "reference", ref.meta.get("path"))
    spacing = pred.spacing
    voxel_ml = ref.voxel_ml
    out: dict = {"n_empty_mismatch": 0}
    for name, lab in STRUCTURES.items():
        p = p_all > 0 if lab is None else p_all == lab
        r = r_all > 0 if lab is None else r_all == lab
        out[f"dice_{name}"] = dice(p, r)
        hd95 = assd = math.nan
        if p.any() and r.any():
            d_pr, d_rp = _surface_distances(p, r, spacing)
            hd95 = float(max(np.percentile(d_pr, 95), np.percentile(d_rp, 95)))
            assd = float(np.concatenate([d_pr, d_rp]).mean())
        elif p.any() != r.any():
            out["n_empty_mismatch"] += 1
        out[f"hd95_{name}_mm"] = hd95
        out[f"assd_{name}_mm"] = assd
        key = "total" if name == "lungs" else name
        out[f"volume_pred_{key}_ml"] = float(p.sum() * voxel_ml)
        out[f"volume_ref_{key}_ml"] = float(r.sum() * voxel_ml)
        out[f"volume_error_{key}_ml"] = out[f"volume_pred_{key}_ml"] - out[f"volume_ref_{key}_ml"]
    return out


def _pairs(pred: Path, ref: Path) -> list[tuple[str, Path, Path]]:
    if not ref.exists():
        raise InputError("no such file or folder", ref)
    if not pred.exists():
        raise InputError("no such file or folder", pred)
    if ref.is_file():
        if not pred.is_file():
            raise InputError("reference is a file, so the prediction must be a file too", pred)
        return [(strip_suffix(ref.name), pred, ref)]
    if not pred.is_dir():
        raise InputError("reference is a folder, so the prediction must be a folder too", pred)
    refs = sorted(p for p in ref.iterdir() if is_volume_file(p))
    if not refs:
        raise InputError(f"no label files ({', '.join(VOLUME_SUFFIXES)}) in the reference folder", ref)
    preds = {strip_suffix(p.name): p for p in pred.iterdir() if not p.name.startswith(".")}
    missing = [strip_suffix(r.name) for r in refs if strip_suffix(r.name) not in preds]
    if missing:
        raise InputError(f"no prediction for case(s) {', '.join(missing)}", pred)
    return [(strip_suffix(r.name), preds[strip_suffix(r.name)], r) for r in refs]


def _summary(cases: list[dict]) -> dict:
    summary: dict = {}
    keys = [k for k in cases[0] if k not in ("case", "n_empty_mismatch")]
    for k in keys:
        vals = np.array([c[k] for c in cases], float)
        vals = vals[np.isfinite(vals)]
        n = int(vals.size)
        summary[k] = {
            "mean": float(vals.mean()) if n else math.nan,
            "sd": float(vals.std(ddof=1)) if n > 1 else (0.0 if n else math.nan),
            "n": n,
        }
    summary["n_empty_mismatch"] = int(sum(c["n_empty_mismatch"] for c in cases))
    return summary


def _json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj


def _write_atomic(path: Path, text: str, overwrite: bool = True) -> None:
    with atomic_path(path, overwrite) as tmp:
        tmp.write_text(text, newline="")


def evaluate(pred: str | Path, ref: str | Path, out: str | Path | None = None,
             overwrite: bool = False, html: bool = False) -> dict:
    """Evaluate predictions against references (two folders matched by file name, or two files).

    Returns {"cases": [per-case metrics with "case"], "summary": {metric: {"mean", "sd", "n"},
    "n_empty_mismatch": int}}; NaN metrics are left out of means (n counts the rest).
    With `out`, writes out/evaluation.json (NaN as null) and out/evaluation.csv atomically.
    A reference case without a prediction raises InputError naming it. `out` is checked
    before any work: a file, an unwritable folder, or an existing evaluation.json/.csv
    without `overwrite` raises OutputError. `html` (needs `out`) also writes out/evaluation.html:
    per-case pictures of false positives and negatives, box plots of Dice and HD95
    (`lungseg.report.evaluation_page`).
    """
    if html and out is None:
        raise OutputError("--html needs --out FOLDER for evaluation.html", ".")
    if out is not None:
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise OutputError("output folder is an existing file", out)
        for name in ("evaluation.json", "evaluation.csv") + (("evaluation.html",) if html else ()):
            check_output(out / name, [pred, ref], overwrite)
    pairs = _pairs(Path(pred), Path(ref))
    cases, overlays = [], {}
    for case, p, r in pairs:
        pv, rv = read_volume(p), read_volume(r)
        cases.append({"case": case, **case_metrics(pv, rv)})
        if html:
            from lungseg.report.evaluation_page import error_overlay_figure
            from lungseg.report.figures import png_bytes

            overlays[case] = png_bytes(error_overlay_figure(pv, rv))
    result = {"cases": cases, "summary": _summary(cases)}
    if out is not None:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create folder ({exc.strerror})", out) from None
        _write_atomic(out / "evaluation.json", json.dumps(_json_safe(result), indent=2) + "\n", overwrite)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(cases[0]))
        writer.writeheader()
        for c in cases:
            writer.writerow({k: ("" if isinstance(v, float) and not math.isfinite(v) else v) for k, v in c.items()})
        _write_atomic(out / "evaluation.csv", buf.getvalue(), overwrite)
        if html:
            from lungseg.report.evaluation_page import write_evaluation_html

            write_evaluation_html(result, overlays, out / "evaluation.html")
    return result


def format_table(result: dict) -> str:
    """Plain-text table of the summary: metric, mean ± sd, n."""
    rows = [("metric", "mean ± sd", "n")]
    for k, v in result["summary"].items():
        if isinstance(v, dict):
            cell = "n/a" if not math.isfinite(v["mean"]) else f"{v['mean']:.4g} ± {v['sd']:.3g}"
            rows.append((k, cell, str(v["n"])))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"cases: {len(result['cases'])}; empty mismatches: {result['summary'].get('n_empty_mismatch', 0)}")
    return "\n".join(lines)
