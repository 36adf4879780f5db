"""The report pages in a real browser: headless Chromium opens a case report and the cohort page
from disk, takes screenshots (the pictures rendered: not blank, both lung colours) and dumps
the DOM (the numbers on the page equal `quantify`'s JSON).

Needs Debian's `chromium` (the Makefile's test set-up installs it); skips, saying so, without it.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import nibabel as nib
import numpy as np
import pytest
from report_helpers import (
    assert_not_uniform,
    colour_masks,
    ellipsoid_phantom,
    parse_cells,
    read_png,
)

from lungseg.cli import main
from lungseg.report.html import MEASURES, fmt

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    BROWSER is None, reason="chromium not found: install Debian's chromium (make test does) to run "
                            "the browser tests of the HTML reports")


def chromium(tmp_path, url: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", *args, url]
    return subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=90)


def screenshot(tmp_path, page, name: str, size: str = "1200,2600") -> np.ndarray:
    out = tmp_path / f"{name}.png"
    r = chromium(tmp_path, page.as_uri(), f"--screenshot={out}", f"--window-size={size}")
    assert out.is_file(), r.stderr[-2000:]
    return read_png(str(out))


def dump_dom(tmp_path, page) -> str:
    r = chromium(tmp_path, page.as_uri(), "--dump-dom")
    assert r.returncode == 0 and "</html>" in r.stdout, r.stderr[-2000:]
    return r.stdout


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """Two cases (images + masks on disk), their pages and cohort page, and `lungseg quantify`'s JSON."""
    root = tmp_path_factory.mktemp("browser")
    for sub in ("img", "msk"):
        (root / sub).mkdir()
    for n, grid in enumerate((dict(spacing=(3.0, 3.0, 4.0), oblique=False),
                              dict(spacing=(2.5, 3.0, 4.0), oblique=True, lps=True))):
        image, mask = ellipsoid_phantom(**grid)
        for vol, sub in ((image, "img"), (mask, "msk")):
            nib.save(nib.Nifti1Image(np.asarray(vol.array), vol.affine), str(root / sub / f"case{n}.nii.gz"))
    assert main(["report", str(root / "img"), str(root / "msk"), "-o", str(root / "out")]) == 0
    quantities = {}
    for n in range(2):
        import contextlib
        import io

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            assert main(["quantify", str(root / "img" / f"case{n}.nii.gz"),
                         str(root / "msk" / f"case{n}.nii.gz")]) == 0
        quantities[f"case{n}"] = json.loads(buf.getvalue())
    return root / "out", quantities


def test_case_report_renders_in_chromium(reports, tmp_path):
    out, quantities = reports
    shot = screenshot(tmp_path, out / "case1.html", "case")
    assert_not_uniform(shot)
    red, blue = colour_masks(shot)
    # the overlay, 3D picture and montage fill thousands of pixels with each lung's colour;
    # the page's text and swatches alone hold a few hundred
    assert red.sum() > 5000 and blue.sum() > 5000, (int(red.sum()), int(blue.sum()))
    cells = parse_cells(dump_dom(tmp_path, out / "case1.html")).cells
    q = quantities["case1"]
    for side in ("right", "left", "total"):
        for key, _, _, dec, _ in MEASURES:
            assert cells[f"{side}.{key}"] == fmt(q[side][key], dec), (side, key)


def test_cohort_page_renders_in_chromium(reports, tmp_path):
    out, quantities = reports
    shot = screenshot(tmp_path, out / "index.html", "cohort", "1200,700")
    assert_not_uniform(shot)
    red, blue = colour_masks(shot)
    assert red.sum() > 500 and blue.sum() > 500, (int(red.sum()), int(blue.sum()))  # thumbnails
    rows = {r["case"]: r for r in parse_cells(dump_dom(tmp_path, out / "index.html")).rows}
    assert sorted(rows) == sorted(quantities)
    for case, q in quantities.items():
        assert rows[case]["right_ml"] == fmt(q["right"]["volume_ml"], 1)
        assert rows[case]["left_ml"] == fmt(q["left"]["volume_ml"], 1)
        assert rows[case]["total_ml"] == fmt(q["total"]["volume_ml"], 1)
        assert rows[case]["laa950_percent"] == fmt(q["total"]["laa950_percent"], 2)
        assert rows[case]["perc15_hu"] == fmt(q["total"]["p15_hu"], 1)


def test_cohort_table_sorts_in_chromium(reports, tmp_path):
    """The inline sort runs: #sort=-total_ml opens the table by total volume, largest first."""
    out, quantities = reports
    totals = {case: q["total"]["volume_ml"] for case, q in quantities.items()}
    for hash_, reverse in (("#sort=-total_ml", True), ("#sort=total_ml", False)):
        r = chromium(tmp_path, (out / "index.html").as_uri() + hash_, "--dump-dom")
        order = [row["case"] for row in parse_cells(r.stdout).rows]
        assert order == sorted(totals, key=totals.get, reverse=reverse), (hash_, order, totals)
