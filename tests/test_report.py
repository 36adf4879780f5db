"""Reports: volumes against analytic ellipsoids, meshes, pictures checked for content, the HTML
case and cohort pages, `lungseg report`, `predict --report/--mesh`, `evaluate --html`."""

from __future__ import annotations

import csv
import json
import re

import nibabel as nib
import numpy as np
import pytest
import trimesh
from conftest import assert_no_leftovers
from report_helpers import (
    AXES,
    CENTRE_X,
    analytic_ml,
    assert_not_uniform,
    assert_sides,
    colour_masks,
    ellipsoid_phantom,
    parse_cells,
    read_png,
)

from lungseg.cli import main
from lungseg.quantification import quantify
from lungseg.report.figures import montage_figure, overlay_figure, png_bytes, thumbnail_figure
from lungseg.report.html import MEASURES, case_report, fmt
from lungseg.report.mesh import lung_meshes, write_meshes
from lungseg.report.render3d import surface_figure

GRIDS = {
    "anisotropic": dict(spacing=(1.6, 1.3, 2.5), oblique=False),
    "oblique": dict(spacing=(1.6, 1.3, 2.5), oblique=True),
    "oblique-lps": dict(spacing=(1.2, 1.5, 3.0), oblique=True, lps=True),
}


def _run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _save(vol, path):
    nib.save(nib.Nifti1Image(np.asarray(vol.array), vol.affine), str(path))
    return path


# ------------------------------------------------------------------ numbers
@pytest.mark.parametrize("grid", GRIDS)
def test_volumes_match_analytic_ellipsoids(grid):
    image, mask = ellipsoid_phantom(**GRIDS[grid])
    q = quantify(image, mask)
    for side, lab in (("right", 1), ("left", 2)):
        assert q[side]["volume_ml"] == pytest.approx(analytic_ml(lab), rel=0.01)
        assert q[side]["voxels"] > 20000  # large enough in voxels for a 1 % claim
    # %LAA-950: the right ellipsoid's cap above z = 20 mm is at -980 HU
    t = 20.0 / AXES[1][2]
    cap = (1 - t) ** 2 * (2 + t) / 4  # share of an ellipsoid's volume above t (in semi-axis units)
    # the cut plane is resolved to a voxel: allow the lung within one voxel diagonal of it
    a, b, c = AXES[1]
    band = np.pi * a * b * (1 - t * t) * np.linalg.norm(image.spacing) / 2 / (analytic_ml(1) * 1000)
    assert q["right"]["laa950_percent"] == pytest.approx(100 * cap, abs=100 * band)
    assert abs(q["right"]["laa950_percent"] - 100 * cap) < 3.0
    assert q["left"]["laa950_percent"] == 0.0


@pytest.mark.parametrize("grid", GRIDS)
def test_meshes_match_mask_volume_and_lie_in_world_box(grid, tmp_path):
    image, mask = ellipsoid_phantom(**GRIDS[grid])
    meshes = lung_meshes(mask)
    corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], float)
    for side, lab in (("right", 1), ("left", 2)):
        m = meshes[side]
        mask_ml = np.count_nonzero(mask.array == lab) * mask.voxel_ml
        assert m.is_watertight
        assert m.volume > 0  # faces point outwards, whatever the affine's handedness
        assert m.volume / 1000 == pytest.approx(mask_ml, rel=0.02)
        assert m.volume / 1000 == pytest.approx(analytic_ml(lab), rel=0.02)
        # the world bounding box of the lung's voxels (their boxes, not just centres)
        idx = np.argwhere(mask.array == lab)
        box = idx.min(axis=0) - 0.5 + corners * (idx.max(axis=0) - idx.min(axis=0) + 1)
        world = box @ mask.affine[:3, :3].T + mask.affine[:3, 3]
        assert (m.vertices >= world.min(axis=0) - 1e-6).all()
        assert (m.vertices <= world.max(axis=0) + 1e-6).all()
        # patient millimetres: the right lung's centre at x = +CENTRE_X (RAS), the left at -CENTRE_X
        sign = 1 if side == "right" else -1
        assert m.center_mass[0] == pytest.approx(sign * CENTRE_X, abs=1.0)
    for suffix in (".stl", ".ply", ".obj"):
        paths = write_meshes(mask, tmp_path / f"lungs{suffix}")
        assert sorted(p.name for p in paths) == sorted([f"lungs_right{suffix}", f"lungs_left{suffix}"])
        back = trimesh.load(paths[0], force="mesh")
        assert back.volume == pytest.approx(meshes["right"].volume, rel=1e-4)
    assert_no_leftovers(tmp_path)


# ------------------------------------------------------------------ pictures
def test_pictures_have_content_and_sides():
    image, mask = ellipsoid_phantom(**GRIDS["oblique-lps"])
    surf = read_png(png_bytes(surface_figure(mask)))
    assert_not_uniform(surf)
    half = surf.shape[1] // 2
    assert_sides(surf[:, :half], right_on_left=True)  # anterior view
    assert_sides(surf[:, half:], right_on_left=False)  # posterior view
    ov = read_png(png_bytes(overlay_figure(image, mask, fill=True)))
    assert_not_uniform(ov)
    third = ov.shape[1] // 3
    assert_sides(ov[:, :third])  # axial
    assert_sides(ov[:, third:2 * third])  # coronal
    red, blue = colour_masks(ov[: int(ov.shape[0] * 0.85), 2 * third:])  # sagittal: the right lung only
    assert red.sum() > 200 and blue.sum() == 0
    mont = read_png(png_bytes(montage_figure(image, mask)))
    assert_not_uniform(mont)
    assert_sides(mont)
    assert_sides(read_png(png_bytes(thumbnail_figure(image, mask))), min_pixels=50)


@pytest.mark.parametrize("axis", [2, 1, 0])
def test_pictures_of_a_single_slice(axis):
    """A single axial, coronal or sagittal slice is a valid input: its pictures show the plane it
    holds (matplotlib cannot draw a contour on a line: `--png` / `--report` crashed on any
    one-slice input), with the lungs on their sides."""
    from lungseg.core.volume import Volume

    image, mask = ellipsoid_phantom(**GRIDS["anisotropic"])
    # a plane through the right lung for a sagittal slice, through both lungs otherwise
    pick = np.argwhere(mask.array == 1)[:, axis] if axis == 0 else np.argwhere(mask.array > 0)[:, axis]
    k = int(np.median(pick))
    box = tuple(slice(k, k + 1) if a == axis else slice(None) for a in range(3))
    aff = mask.affine.copy()
    aff[:3, 3] += aff[:3, :3] @ np.array([b.start or 0 for b in box], float)
    img, lab = Volume(image.array[box].copy(), aff), Volume(mask.array[box].copy(), aff)
    ov = read_png(png_bytes(overlay_figure(img, lab, fill=True)))
    mont = read_png(png_bytes(montage_figure(img, lab)))
    thumb = read_png(png_bytes(thumbnail_figure(img, lab)))
    for pic in (ov, mont, thumb):
        assert_not_uniform(pic)
    if axis == 0:
        red, blue = colour_masks(mont)
        assert red.sum() > 200 and blue.sum() == 0
    else:
        assert_sides(ov)
        assert_sides(mont)


def test_thumbnail_of_a_thick_single_slice_shows_its_plane():
    """A 10 mm axial slice whose lung is narrower than 25 mm looked "taller than wide" to the
    thumbnail's plane rule, which then drew a one-row coronal plane."""
    from lungseg.core.volume import Volume

    hu = np.full((60, 60, 1), 40, np.int16)
    lab = np.zeros((60, 60, 1), np.uint8)
    hu[20:30, 10:50] = -850
    lab[20:30, 10:50] = 1
    aff = np.diag([1.0, 1.0, 10.0, 1.0])
    red, _ = colour_masks(read_png(png_bytes(thumbnail_figure(Volume(hu, aff), Volume(lab, aff)))))
    rows, cols = np.nonzero(red)
    assert rows.size > 100
    assert np.ptp(rows) > 2 * np.ptp(cols)  # the axial plane: 40 mm front to back, 10 mm across


def test_pictures_follow_the_patient_not_the_array():
    """Swapping the array's x axis while flipping the affine is the same patient: same picture sides."""
    image, mask = ellipsoid_phantom(**GRIDS["anisotropic"])
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = mask.shape[0] - 1
    aff = mask.affine @ flip
    from lungseg.core.volume import Volume

    m2 = Volume(mask.array[::-1].copy(), aff)
    i2 = Volume(image.array[::-1].copy(), aff)
    assert_sides(read_png(png_bytes(thumbnail_figure(i2, m2))), min_pixels=50)
    surf = read_png(png_bytes(surface_figure(m2)))
    assert_sides(surf[:, : surf.shape[1] // 2])


# ------------------------------------------------------------------ pages
def test_case_page_numbers_equal_quantify(tmp_path):
    image, mask = ellipsoid_phantom(**GRIDS["oblique"])
    page, summary = case_report(image, mask, title="<ellipsoids>", figures=False)
    q = quantify(image, mask)
    cells = parse_cells(page).cells
    for side in ("right", "left", "total"):
        for key, _, _, dec, _ in MEASURES:
            assert cells[f"{side}.{key}"] == fmt(q[side][key], dec), (side, key)
    data = json.loads(re.search(r'<script type="application/json" id="lungseg-data">(.*?)</script>',
                                page, re.S).group(1))
    assert data["quantities"] == json.loads(json.dumps(q))
    assert "&lt;ellipsoids&gt;" in page and "<ellipsoids>" not in page  # autoescaped
    assert summary["total_ml"] == pytest.approx(q["total"]["volume_ml"], abs=0.01)
    # extent along the head-foot axis: the taller ellipsoid spans ~2 * 55 mm
    assert float(cells["right.extent_mm"]) == pytest.approx(2 * AXES[1][2], abs=8.0)


def test_page_is_self_contained(tmp_path):
    image, mask = ellipsoid_phantom(spacing=(3.0, 3.0, 4.0), oblique=False)
    page, _ = case_report(image, mask, title="t")
    assert page.count("data:image/png;base64,") >= 3
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "http://" not in page and "https://" not in page


def test_report_cli_one_case_refuses_overwrite_and_bad_input(tmp_path, capsys):
    image, mask = ellipsoid_phantom(spacing=(3.0, 3.0, 4.0), oblique=True)
    img = _save(image, tmp_path / "ct.nii.gz")
    msk = _save(mask, tmp_path / "ct_mask.nii.gz")
    out = tmp_path / "r" / "case.html"
    code, stdout, err = _run(capsys, "report", img, msk, "-o", out, "--mesh", tmp_path / "r" / "lungs.stl")
    assert code == 0, err
    assert out.is_file() and (tmp_path / "r" / "lungs_right.stl").is_file()
    assert (tmp_path / "r" / "lungs_left.stl").is_file()
    assert "right " in stdout
    before = out.read_bytes()
    code, _, err = _run(capsys, "report", img, msk, "-o", out)
    assert code == 2 and "exists" in err and len(err.strip().splitlines()) == 1
    assert out.read_bytes() == before
    # a mask on another grid: exit 2, one line, no page
    other = _save(type(mask)(mask.array[:-1], mask.affine), tmp_path / "bad_mask.nii.gz")
    code, _, err = _run(capsys, "report", img, other, "-o", tmp_path / "bad.html")
    assert code == 2 and err.startswith("lungseg: error:") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad.html").exists()
    code, _, err = _run(capsys, "report", img, "-o", tmp_path / "x.html")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert_no_leftovers(tmp_path)


def test_report_cli_folders_make_a_cohort(tmp_path, capsys):
    (tmp_path / "img").mkdir()
    (tmp_path / "msk").mkdir()
    expected = {}
    for n, (sp, obl, margin) in enumerate((((3.0, 3.0, 4.0), False, 12.0), ((2.5, 3.0, 4.0), True, -10.0))):
        # case1: lungs cut by the grid's edge, a doubtful case (field-of-view warning)
        image, mask = ellipsoid_phantom(spacing=sp, oblique=obl, margin_mm=margin)
        _save(image, tmp_path / "img" / f"case{n}.nii.gz")
        _save(mask, tmp_path / "msk" / f"case{n}.nii.gz")
        expected[f"case{n}"] = quantify(image, mask)
    code, _, err = _run(capsys, "report", tmp_path / "img", tmp_path / "msk", "-o", tmp_path / "out")
    assert code == 0, err
    rows = list(csv.DictReader((tmp_path / "out" / "cohort.csv").open(encoding="utf-8")))
    assert [r["case"] for r in rows] == ["case1", "case0"]  # doubtful first
    for r in rows:
        q = expected[r["case"]]
        assert float(r["total_ml"]) == pytest.approx(q["total"]["volume_ml"], abs=0.01)
        assert (tmp_path / "out" / r["report"]).is_file()
    page = (tmp_path / "out" / "index.html").read_text(encoding="utf-8")
    table = {r["case"]: r for r in parse_cells(page).rows}
    for case, q in expected.items():
        assert table[case]["right_ml"] == fmt(q["right"]["volume_ml"], 1)
        assert table[case]["left_ml"] == fmt(q["left"]["volume_ml"], 1)
        assert table[case]["laa950_percent"] == fmt(q["total"]["laa950_percent"], 2)
        assert table[case]["perc15_hu"] == fmt(q["total"]["p15_hu"], 1)
    assert "field-of-view" in rows[0]["warnings"] and rows[1]["warnings"] == ""
    assert int(rows[0]["n_warnings"]) >= 1 and 'class="doubtful"' in page
    assert_no_leftovers(tmp_path)


def test_predict_report_and_mesh_write_pages_cohort_and_meshes(phantom_data, tmp_path, capsys):
    images = sorted((phantom_data / "imagesTr").glob("*.nii.gz"))[:2]
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a volume" * 100)
    out = tmp_path / "pred"
    code, _, err = _run(capsys, "predict", *images, broken, "-o", f"{out}/", "--method", "classical",
                        "--report", "--mesh", "stl")
    assert code == 1 and "broken.nii.gz" in err  # the bad input fails alone (a batch: exit 1)
    assert not (out / "broken.html").exists() and not (out / "broken_right.stl").exists()
    for img in images:
        stem = img.name.removesuffix(".nii.gz")
        assert (out / f"{stem}.html").is_file()
        qc = json.loads((out / f"{stem}.qc.json").read_text(encoding="utf-8"))
        assert "warnings" in qc
        right = trimesh.load(out / f"{stem}_right.stl", force="mesh")
        mask = nib.load(out / f"{stem}.nii.gz")
        lab = np.asarray(mask.dataobj)
        mask_ml = np.count_nonzero(lab == 1) * abs(np.linalg.det(mask.affine[:3, :3])) / 1000
        assert right.volume / 1000 == pytest.approx(mask_ml, rel=0.02)
    rows = list(csv.DictReader((out / "cohort.csv").open(encoding="utf-8")))
    assert rows[0]["case"] == "broken" and rows[0]["error"] and not rows[0]["report"]  # failed first
    rows = rows[1:]
    assert sorted(r["case"] for r in rows) == sorted(i.name.removesuffix(".nii.gz") for i in images)
    index = (out / "index.html").read_text(encoding="utf-8")
    for r in rows:
        assert f'href="{r["report"]}"' in index
    # a second run refuses before any work; the cohort page is an output like the others
    code, _, err = _run(capsys, "predict", *images, "-o", f"{out}/", "--method", "classical", "--report")
    assert code == 2 and "exists" in err
    assert_no_leftovers(tmp_path)


def test_evaluate_html_shows_false_positives_and_negatives(tmp_path, capsys):
    from lungseg.report.evaluation_page import ERROR_COLOURS, error_overlay_figure

    _, ref = ellipsoid_phantom(spacing=(3.0, 3.0, 4.0), oblique=False)
    pred = type(ref)(ref.array.copy(), ref.affine)
    top = np.argwhere(ref.array == 1)[:, 2].max()
    pred.array[:, :, top - 4:][pred.array[:, :, top - 4:] == 1] = 0  # right apex missed: FN
    pred.array[(ref.array == 0) & (np.indices(ref.shape)[2] == ref.shape[2] // 2)] = 2  # a slab: FP
    rgb = read_png(png_bytes(error_overlay_figure(pred, ref)))
    for name, colour in ERROR_COLOURS.values():
        if name in ("false positive", "false negative"):
            target = (np.asarray(colour) * 255).round()
            assert (np.abs(rgb - target).sum(axis=2) < 30).sum() > 100, name
    for sub in ("pred", "ref"):
        (tmp_path / sub).mkdir()
    _save(pred, tmp_path / "pred" / "a.nii.gz")
    _save(ref, tmp_path / "ref" / "a.nii.gz")
    code, _, err = _run(capsys, "evaluate", "--pred", tmp_path / "pred", "--ref", tmp_path / "ref",
                        "-o", tmp_path / "ev", "--html")
    assert code == 0, err
    page = (tmp_path / "ev" / "evaluation.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 2  # box plots + one case
    result = json.loads((tmp_path / "ev" / "evaluation.json").read_text(encoding="utf-8"))
    cells = parse_cells(page).cells
    assert cells["dice_lungs.mean"] == fmt(result["summary"]["dice_lungs"]["mean"], 4)
    code, _, err = _run(capsys, "evaluate", "--pred", tmp_path / "pred", "--ref", tmp_path / "ref", "--html")
    assert code == 2 and "--out" in err


def test_real_chest_report_puts_lungs_on_their_sides(tmp_path):
    """A real chest stored LPS (shared CTA crop, classical mask): pictures show the right lung on
    the viewer's left from the front, and the page carries the field-of-view warning."""
    from conftest import SHARED

    from lungseg.inference.segment import segment
    from lungseg.io.volumes import read_volume

    path = SHARED / "chest_cta_cropped.nii.gz"
    if not path.is_file():
        pytest.skip(f"shared data not found: {path}")
    image = read_volume(path)
    mask = segment(image, method="classical")
    surf = read_png(png_bytes(surface_figure(mask)))
    half = surf.shape[1] // 2
    assert_sides(surf[:, :half], right_on_left=True)
    assert_sides(surf[:, half:], right_on_left=False)
    ov = read_png(png_bytes(overlay_figure(image, mask, fill=True)))
    third = ov.shape[1] // 3
    assert_sides(ov[:, :third])
    assert_sides(ov[:, third:2 * third])
    page, summary = case_report(image, mask, figures=False)
    assert summary["warnings"] and "field-of-view" in summary["warnings"][0]
    assert "field-of-view" in page
