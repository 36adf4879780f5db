"""case_metrics / evaluate / format_table: values by hand, empty policy, files and errors."""

import json
import math

import numpy as np
import pytest
from conftest import assert_no_leftovers

from lungseg.core.errors import GeometryError, InputError
from lungseg.core.volume import Volume
from lungseg.evaluation import case_metrics, dice, evaluate, format_table
from lungseg.io.volumes import write_volume

EYE = np.eye(4)


def vol(a, aff=EYE):
    return Volume(np.asarray(a, np.uint8), np.asarray(aff, float))


def test_dice_of_two_cubes():
    ref = np.zeros((30, 20, 20), np.uint8)
    pred = ref.copy()
    ref[0:10, 0:10, 0:10] = 1
    pred[5:15, 0:10, 0:10] = 1       # overlap 500 of 1000 + 1000 -> Dice 0.5
    m = case_metrics(vol(pred), vol(ref))
    assert m["dice_lungs"] == pytest.approx(0.5)
    assert m["dice_right"] == pytest.approx(0.5)
    assert m["dice_left"] == 1.0      # both empty
    assert math.isnan(m["hd95_left_mm"]) and math.isnan(m["assd_left_mm"])
    assert m["n_empty_mismatch"] == 0
    # the same numbers from `dice`, which tests and benches share (labels: non-zero is inside)
    assert dice(pred, ref) == pytest.approx(0.5) and dice(pred * 2, ref > 0) == pytest.approx(0.5)
    assert dice(pred == 2, ref == 2) == 1.0 and dice(pred, np.zeros_like(ref)) == 0.0


def sphere(shape, c, r):
    g = np.indices(shape)
    return sum((g[i] - c[i]) ** 2 for i in range(3)) <= r * r


def test_hd95_and_assd_of_offset_spheres():
    shape = (50, 40, 40)
    ref = sphere(shape, (22, 20, 20), 10).astype(np.uint8)
    pred = sphere(shape, (25, 20, 20), 10).astype(np.uint8) * 2   # 3 voxels * 2 mm = 6 mm
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    m = case_metrics(vol(pred > 0, aff), vol(ref, aff))
    # distances of a sphere shifted by d: d*|cos|, |cos| uniform on [0, 1] -> p95 = 0.95 d
    assert 5.0 <= m["hd95_lungs_mm"] <= 6.5
    assert 2.2 <= m["assd_lungs_mm"] <= 3.8      # mean d*|cos| = d/2 = 3 mm
    # agrees with MONAI
    import torch
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    def onehot(a):
        return torch.from_numpy(np.stack([a == 0, a > 0])[None].astype(np.float32))

    hd = compute_hausdorff_distance(onehot(pred > 0), onehot(ref), percentile=95, spacing=2.0)
    asd = compute_average_surface_distance(onehot(pred > 0), onehot(ref), symmetric=True, spacing=2.0)
    assert m["hd95_lungs_mm"] == pytest.approx(float(hd[0, 0]), abs=0.3)
    assert m["assd_lungs_mm"] == pytest.approx(float(asd[0, 0]), abs=0.3)


def test_volume_error_in_ml():
    aff = np.diag([0.5, 0.5, 2.0, 1.0])   # 0.5 mm^3 voxels
    ref = np.zeros((40, 40, 20), np.uint8)
    pred = ref.copy()
    ref[0:20, 0:20, 0:10] = 1             # 4000 voxels = 2.0 mL
    pred[0:20, 0:20, 0:5] = 1             # 1.0 mL
    pred[20:40, 0:20, 0:10] = 2           # 2.0 mL of left lung, none in ref
    m = case_metrics(vol(pred, aff), vol(ref, aff))
    assert m["volume_error_right_ml"] == pytest.approx(-1.0)
    assert m["volume_error_left_ml"] == pytest.approx(2.0)
    assert m["volume_error_total_ml"] == pytest.approx(1.0)
    assert m["dice_left"] == 0.0 and math.isnan(m["hd95_left_mm"])
    assert m["n_empty_mismatch"] == 1


def test_both_empty_and_geometry_errors():
    z = np.zeros((5, 5, 5), np.uint8)
    m = case_metrics(vol(z), vol(z))
    assert m["dice_lungs"] == m["dice_right"] == m["dice_left"] == 1.0
    assert math.isnan(m["hd95_lungs_mm"]) and m["n_empty_mismatch"] == 0
    with pytest.raises(GeometryError):
        case_metrics(vol(z), vol(np.zeros((5, 5, 6))))
    with pytest.raises(GeometryError):
        case_metrics(vol(z), vol(z, np.diag([2.0, 1.0, 1.0, 1.0])))


def test_evaluate_folders(tmp_path):
    ref_dir, pred_dir, out = tmp_path / "ref", tmp_path / "pred", tmp_path / "out"
    a = np.zeros((20, 20, 20), np.uint8)
    a[2:8, 5:15, 5:15] = 1
    a[12:18, 5:15, 5:15] = 2
    empty_left = a.copy()
    empty_left[empty_left == 2] = 0
    write_volume(vol(a), ref_dir / "case1.nii.gz")
    write_volume(vol(a), pred_dir / "case1.nii.gz")
    write_volume(vol(a), ref_dir / "case2.nii.gz")
    write_volume(vol(empty_left), pred_dir / "case2.nii.gz")
    res = evaluate(pred_dir, ref_dir, out)
    assert [c["case"] for c in res["cases"]] == ["case1", "case2"]
    s = res["summary"]
    assert s["dice_right"]["mean"] == 1.0 and s["dice_right"]["n"] == 2
    assert s["dice_left"]["mean"] == pytest.approx(0.5) and s["dice_left"]["n"] == 2
    assert s["hd95_left_mm"]["n"] == 1            # the mismatch is left out of the mean
    assert s["n_empty_mismatch"] == 1
    data = json.loads((out / "evaluation.json").read_text())
    assert data["cases"][1]["hd95_left_mm"] is None
    csv_lines = (out / "evaluation.csv").read_text().splitlines()
    assert csv_lines[0].startswith("case,") and len(csv_lines) == 3
    assert_no_leftovers(out)
    table = format_table(res)
    assert "dice_lungs" in table and "±" in table
    # single files
    one = evaluate(pred_dir / "case1.nii.gz", ref_dir / "case1.nii.gz")
    assert one["summary"]["dice_lungs"]["mean"] == 1.0
    # a reference case without prediction is named
    write_volume(vol(a), ref_dir / "case3.nii.gz")
    with pytest.raises(InputError, match="case3"):
        evaluate(pred_dir, ref_dir)
