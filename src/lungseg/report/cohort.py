"""The cohort page: one sortable table of every case (index.html) and the same numbers as CSV.

A row per case: its name (linked to its report), right/left/total lung volume (mL), %LAA-950
and Perc15 of both lungs, the lungs' head-foot extent (mm: a short one means a partial scan)
and the quality warnings. The table opens sorted with the doubtful
cases first (failed cases, then most warnings); a click on a column header sorts by it
(inline JavaScript: the page needs no network and opens from disk).

Example::

    >>> import tempfile
    >>> from pathlib import Path
    >>> rows = [cohort_row("a", {"right_ml": 2500.0, "left_ml": 2300.0, "total_ml": 4800.0,
    ...                          "laa950_percent": 3.2, "perc15_hu": -930.0, "warnings": []}, "a.html")]
    >>> d = Path(tempfile.mkdtemp())
    >>> [p.name for p in write_cohort(rows, d / "index.html", d / "cohort.csv")]
    ['index.html', 'cohort.csv']
    >>> (d / "cohort.csv").read_text().splitlines()[1]
    'a,a.html,2500.0,2300.0,4800.0,3.2,-930.0,,0,,'
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from lungseg.io.safety import atomic_path

__all__ = ["COLUMNS", "cohort_row", "failed_row", "sort_doubtful_first", "write_cohort"]

#: CSV columns (the page shows the same, warnings as a list).
COLUMNS = ("case", "report", "right_ml", "left_ml", "total_ml", "laa950_percent", "perc15_hu",
           "extent_mm", "n_warnings", "warnings", "error")


def cohort_row(case: str, summary: dict, report: str | Path | None) -> dict:
    """One row from a case's summary (`report.html.case_summary`); `report` is the case page's
    path as the index links it (relative to the index's folder)."""
    warnings = list(summary.get("warnings", []))
    return {"case": case, "report": str(report) if report else "", "thumbnail": summary.get("thumbnail", ""),
            **{k: summary.get(k) for k in ("right_ml", "left_ml", "total_ml", "laa950_percent",
                                            "perc15_hu", "extent_mm")},
            "n_warnings": len(warnings), "warnings": warnings, "error": ""}


def failed_row(case: str, error: str) -> dict:
    """A row for a case that produced no mask (its error shown in the warnings column)."""
    return {"case": case, "report": "", "thumbnail": "", "right_ml": None, "left_ml": None, "total_ml": None,
            "laa950_percent": None, "perc15_hu": None, "extent_mm": None, "n_warnings": 0, "warnings": [], "error": error}


def sort_doubtful_first(rows: list[dict]) -> list[dict]:
    """Failed cases first, then by number of warnings (most first), then by name."""
    return sorted(rows, key=lambda r: (not r["error"], -r["n_warnings"], r["case"]))


def _csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r[k] is None else " | ".join(r[k]) if k == "warnings" else r[k])
                    for k in COLUMNS})
    return buf.getvalue()


def write_cohort(rows: list[dict], index_html: str | Path, cohort_csv: str | Path,
                 title: str = "lungseg cohort") -> list[Path]:
    """Write the page and the CSV atomically (doubtful cases first); the two paths.

    Report links are written relative to the page's folder, so the folder can be moved.
    """
    from lungseg.report.html import lungseg_version, page_json, render

    index_html, cohort_csv = Path(index_html), Path(cohort_csv)
    rows = sort_doubtful_first(rows)
    shown = []
    for r in rows:
        link = r["report"]
        if link and Path(link).is_absolute():
            link = os.path.relpath(link, index_html.resolve().parent)
        shown.append({**r, "href": Path(link).as_posix() if link else ""})
    n_warn = sum(1 for r in rows if r["n_warnings"])
    n_fail = sum(1 for r in rows if r["error"])
    page = render("cohort.html.j2", title=title, rows=shown, n=len(rows), n_warn=n_warn,
                  n_fail=n_fail, version=lungseg_version(), data_json=page_json({"cases": [{k: v for k, v in r.items() if k != "thumbnail"}
                                                  for r in shown]}))
    with atomic_path(index_html) as tmp:
        tmp.write_text(page, encoding="utf-8")
    csv_rows = [{**r, "report": s["href"]} for r, s in zip(rows, shown, strict=True)]
    with atomic_path(cohort_csv) as tmp:
        tmp.write_text(_csv_text(csv_rows), encoding="utf-8", newline="")
    return [index_html, cohort_csv]
