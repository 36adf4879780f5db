"""The per-case HTML report: one self-contained file (images embedded as PNG, no network).

What it shows: volumes and density per lung and in total (`lungseg.quantification`), the
lungs' head-foot extent, the quality warnings (`lungseg.quality`; read from predict's
`<mask>.qc.json` sidecar when there is one), an axial/coronal/sagittal overlay, a slice
montage from apex to base and a 3D picture of both lungs. The same numbers travel in the
page as JSON (`<script id="lungseg-data">`) for scripts.

Example on a phantom::

    >>> import numpy as np
    >>> from lungseg.core.volume import Volume
    >>> lab = np.zeros((40, 30, 30), np.uint8); lab[4:18, 5:25, 3:27] = 1; lab[22:36, 5:25, 3:27] = 2
    >>> aff = np.diag([3.0, 3.0, 3.0, 1.0])
    >>> page, summary = case_report(Volume(np.where(lab > 0, -870, 30).astype(np.int16), aff),
    ...                             Volume(lab, aff), title="phantom")
    >>> page.startswith("<!DOCTYPE html>"), "http" in page.replace("http-equiv", ""), summary["right_ml"]
    (True, False, 181.44)
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np

from lungseg.core.geometry import spacing_of, superior_axis
from lungseg.core.labels import LABEL_NAMES, check_labels
from lungseg.core.volume import Volume
from lungseg.io.safety import atomic_path

__all__ = ["MEASURES", "case_report", "write_case_report", "render", "png_uri", "read_qc_sidecar",
           "fmt"]

#: (key in quantify's output, name, unit, decimals, what it means) in the order shown.
MEASURES = (
    ("volume_ml", "Volume", "mL", 1,
     "Lung volume: the number of mask voxels times the voxel volume (from the image header). "
     "It depends on how deep the breath was when the scan was taken."),
    ("mean_hu", "Mean density", "HU", 1,
     "Mean CT number of the lung in Hounsfield units (air -1000, water 0). Normal lung in full "
     "inspiration is roughly -850 to -800 HU; lower means more air per volume (hyperinflation, "
     "emphysema), higher means denser lung (expiration, fibrosis, oedema, consolidation)."),
    ("sd_hu", "SD of density", "HU", 1,
     "Standard deviation of the CT numbers in the lung: how uneven the lung density is "
     "(vessels, noise and disease all add to it)."),
    ("median_hu", "Median density", "HU", 1,
     "Half of the lung voxels are below this CT number; less swayed than the mean by vessels "
     "and dense lesions."),
    ("p15_hu", "Perc15", "HU", 1,
     "15th percentile of the lung density histogram: 15 % of the lung is below this CT number. "
     "A standard emphysema index, preferred for following a patient over time; lower (more "
     "negative) means more low-density lung, i.e. more emphysema."),
    ("laa950_percent", "%LAA-950", "%", 2,
     "Low-attenuation area: the share of the lung volume below -950 HU, the usual CT index of "
     "emphysema extent on inspiratory, non-contrast scans. A few percent is common in healthy "
     "lungs; values depend on scanner, reconstruction kernel, slice thickness and inspiration, "
     "so compare like with like."),
)

SIDES = (("right", "Right lung"), ("left", "Left lung"), ("total", "Both lungs"))


def lungseg_version() -> str:
    """The installed package's version (the package root is the app layer: not imported here)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lungseg")
    except PackageNotFoundError:
        return "unknown"


def fmt(value: float | None, decimals: int) -> str:
    """A number as the page shows it ('—' for none): the rule the tests hold the page to."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:.{decimals}f}"


def png_uri(png: bytes) -> str:
    """PNG bytes as a data: URI, so the page needs no side files."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render(template: str, **context) -> str:
    """Render one of the package's Jinja2 templates (report/templates/), autoescaped."""
    import jinja2
    import markupsafe

    env = jinja2.Environment(loader=jinja2.PackageLoader("lungseg.report", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = fmt
    env.filters["wbr"] = lambda text: markupsafe.Markup(  # long case names break after '_'
        str(markupsafe.escape(text)).replace("_", "_<wbr>"))
    return env.get_template(template).render(**context)


def page_json(data: dict) -> str:
    """JSON safe inside a <script> element (no "<" at all, so no "</script>" can end it early)."""
    return json.dumps(data, allow_nan=False, default=_plain).replace("<", "\\u003c")


def _plain(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(type(obj).__name__)


def read_qc_sidecar(mask_path: str | Path) -> dict | None:
    """predict's `<mask stem>.qc.json` beside `mask_path`, or None when absent or unreadable."""
    from lungseg.io.formats import strip_suffix

    mask_path = Path(mask_path)
    side = mask_path.with_name(strip_suffix(mask_path.name) + ".qc.json")
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "warnings" in data else None


def extents_mm(labels: np.ndarray, affine: np.ndarray) -> dict:
    """Head-foot extent (mm) of each lung and of both, along the superior axis, with the world
    z (RAS mm) of the top (apex) and bottom (base) slice holding lung."""
    axis = superior_axis(affine)
    step = float(spacing_of(affine)[axis])
    other = tuple(a for a in range(3) if a != axis)
    out = {}
    for name, sel in (("right", labels == 1), ("left", labels == 2), ("total", labels > 0)):
        idx = np.flatnonzero(sel.any(axis=other))
        if len(idx) == 0:
            out[name] = {"extent_mm": 0.0, "top_z_mm": None, "bottom_z_mm": None}
            continue
        ends = []
        for i in (idx[0], idx[-1]):
            ijk = np.zeros(4)
            ijk[axis], ijk[3] = i, 1.0
            ends.append(float((np.asarray(affine, float) @ ijk)[2]))
        out[name] = {"extent_mm": round((idx[-1] - idx[0] + 1) * step, 1),
                     "top_z_mm": round(max(ends), 1), "bottom_z_mm": round(min(ends), 1)}
    return out


def case_report(image: Volume, mask: Volume, *, qc: dict | None = None, quantities: dict | None = None,
                title: str = "", image_path: str | Path | None = None,
                mask_path: str | Path | None = None, figures: bool = True) -> tuple[str, dict]:
    """The report page (HTML text) and its summary (the cohort table's row numbers).

    `qc` is predict's quality report (`lungseg.quality.check_mask` + provenance); computed
    here when None. `quantities` is `lungseg.quantification.quantify`'s output; computed when
    None. `figures=False` leaves the pictures out (fast, for tests of the numbers only).
    Raises GeometryError / LabelError for a mask that is not on the image's grid or not 0/1/2.
    """
    from lungseg.quality import check_mask
    from lungseg.quantification import quantify

    q = quantities if quantities is not None else quantify(image, mask)
    qc_source = "predict's quality sidecar" if qc is not None else "computed for this report"
    qc = qc if qc is not None else check_mask(image, mask)
    labels = check_labels(mask.array, "mask", mask.meta.get("path"))
    ext = extents_mm(labels, mask.affine)
    pictures = {}
    if figures:
        from lungseg.report.figures import montage_figure, overlay_figure, png_bytes
        from lungseg.report.render3d import surface_figure

        pictures = {"overlay": png_uri(png_bytes(overlay_figure(image, mask, fill=True))),
                    "montage": png_uri(png_bytes(montage_figure(image, mask))),
                    "surface": png_uri(png_bytes(surface_figure(mask)))}
    summary = case_summary(q, qc)
    if figures:
        from lungseg.report.figures import png_bytes, thumbnail_figure

        summary["thumbnail"] = png_uri(png_bytes(thumbnail_figure(image, mask), dpi=80))
    grid = {"shape": list(image.shape), "spacing_mm": [round(s, 3) for s in image.spacing],
            "orientation": "".join(nib.orientations.aff2axcodes(image.affine))}
    data = {"title": title, "image": str(image_path) if image_path else None,
            "mask": str(mask_path) if mask_path else None, "quantities": q, "extent": ext,
            "quality": qc, "grid": grid, "lungseg_version": lungseg_version()}
    page = render("case.html.j2", title=title or "lung report", q=q, measures=MEASURES, sides=SIDES,
                  ext=ext, qc=qc, qc_source=qc_source, pictures=pictures, grid=grid,
                  image_path=image_path, mask_path=mask_path, version=lungseg_version(),
                  generated=_dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
                  data_json=page_json(data), labels=LABEL_NAMES)
    return page, summary


def case_summary(quantities: dict, qc: dict) -> dict:
    """The numbers a cohort row shows for a case (volumes in mL, total-lung density)."""
    t = quantities["total"]
    return {"right_ml": round(quantities["right"]["volume_ml"], 2),
            "left_ml": round(quantities["left"]["volume_ml"], 2),
            "total_ml": round(t["volume_ml"], 2),
            "laa950_percent": None if t["laa950_percent"] is None else round(t["laa950_percent"], 2),
            "perc15_hu": None if t["p15_hu"] is None else round(t["p15_hu"], 1),
            "extent_mm": qc.get("extent_mm"),
            "warnings": list(qc.get("warnings", []))}


def write_case_report(image: Volume, mask: Volume, out: str | Path, **kwargs) -> tuple[Path, dict]:
    """Write `case_report` to `out` atomically; (path, summary). Checking `out` (existing file,
    input clobbering) is the caller's job, before any work (`io.safety.check_output`)."""
    page, summary = case_report(image, mask, **kwargs)
    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out, summary
