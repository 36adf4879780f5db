"""End-to-end CLI: synth -> predict -> evaluate -> quantify; bad input gives exit 2, one line."""

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from conftest import assert_no_leftovers

from lungseg.cli import main


def _run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_predict_evaluate_quantify_round(tiny_model, phantom_data, tmp_path, capsys):
    images = sorted((phantom_data / "imagesTr").glob("*.nii.gz"))[:2]
    code, out, err = _run(capsys, "predict", *images, "-o", tmp_path / "pred", "--model", tiny_model,
                          "--png", "--roi", 64)
    assert code == 0, err
    for img in images:
        mask = nib.load(tmp_path / "pred" / img.name)
        src = nib.load(img)
        assert mask.shape == src.shape and np.allclose(mask.affine, src.affine, atol=1e-6)
        assert (tmp_path / "pred" / img.name.replace(".nii.gz", ".png")).stat().st_size > 5000
    assert "right" in out and "mL" in out
    ref = tmp_path / "ref"
    ref.mkdir()
    for img in images:
        (ref / img.name).write_bytes((phantom_data / "labelsTr" / img.name).read_bytes())
    code, out, err = _run(capsys, "evaluate", "--pred", tmp_path / "pred", "--ref", ref, "-o", tmp_path / "ev")
    assert code == 0, err
    result = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert len(result["cases"]) == 2 and result["summary"]["dice_lungs"]["mean"] > 0.6
    code, out, err = _run(capsys, "quantify", images[0], tmp_path / "pred" / images[0].name)
    assert code == 0, err
    q = json.loads(out)
    assert 100 < q["right"]["volume_ml"] < 8000 and 100 < q["left"]["volume_ml"] < 8000


def test_classical_method_needs_no_model(phantom_data, tmp_path, capsys):
    img = sorted((phantom_data / "imagesTr").glob("*.nii.gz"))[0]
    code, out, err = _run(capsys, "predict", img, "-o", tmp_path / "m.nii.gz", "--method", "classical")
    assert code == 0, err
    assert set(np.unique(nib.load(tmp_path / "m.nii.gz").get_fdata())) <= {0, 1, 2}


def _nifti(path, array):
    nib.save(nib.Nifti1Image(array, np.eye(4)), path)
    return path


@pytest.mark.parametrize("kind", ["missing", "text", "2d", "4d"])
def test_bad_input_exit_2_one_line_no_output(kind, tmp_path, capsys):
    src = tmp_path / f"in_{kind}.nii.gz"
    if kind == "text":
        src = tmp_path / "notes.nii.gz"
        src.write_text("not an image")
    elif kind == "2d":
        _nifti(src, np.zeros((32, 32), np.int16))
    elif kind == "4d":
        _nifti(src, np.zeros((16, 16, 16, 3), np.int16))
    out = tmp_path / "out" / "mask.nii.gz"
    code, stdout, err = _run(capsys, "predict", src, "-o", out, "--method", "classical")
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert len(lines) == 1 and src.name in lines[0], err
    assert "Traceback" not in err
    assert not out.exists()
    assert_no_leftovers(tmp_path)


def test_label_shape_mismatch_exit_2(tmp_path, capsys):
    pred = _nifti(tmp_path / "pred.nii.gz", np.zeros((10, 10, 10), np.uint8))
    ref = _nifti(tmp_path / "ref.nii.gz", np.zeros((10, 10, 12), np.uint8))
    code, _, err = _run(capsys, "evaluate", "--pred", pred, "--ref", ref, "-o", tmp_path / "ev")
    assert code == 2 and "shape" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "ev" / "evaluation.json").exists()


def test_training_pair_mismatch_exit_2(phantom_data, tmp_path, capsys):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    img = sorted((phantom_data / "imagesTr").glob("*.nii.gz"))[0]
    (tmp_path / "images" / "a.nii.gz").write_bytes(img.read_bytes())
    _nifti(tmp_path / "labels" / "a.nii.gz", np.ones((5, 5, 5), np.uint8))
    code, _, err = _run(capsys, "train", "--data", tmp_path, "--layout", "folders", "--out", tmp_path / "run",
                        "--max-epochs", 1)
    assert code == 2 and "shape" in err, err


def test_usage_error_and_subprocess_has_no_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "lungseg", "predict", str(tmp_path / "none.nii.gz"),
                        "-o", str(tmp_path / "m.nii.gz")], capture_output=True, text=True)
    assert r.returncode == 2
    assert "none.nii.gz" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "lungseg", "predict"], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_output_equal_to_input_is_refused(phantom_data, tmp_path, capsys):
    img = tmp_path / "scan.nii.gz"
    img.write_bytes(sorted((phantom_data / "imagesTr").glob("*.nii.gz"))[0].read_bytes())
    before = img.read_bytes()
    code, _, err = _run(capsys, "predict", img, "-o", img, "--method", "classical")
    assert code == 2 and img.read_bytes() == before


@pytest.mark.slow
def test_parallel_jobs_match_serial(phantom_data, tmp_path, capsys):
    images = sorted((phantom_data / "imagesTr").glob("*.nii.gz"))[:3]
    assert _run(capsys, "predict", *images, "-o", tmp_path / "a", "--method", "classical")[0] == 0
    code, out, err = _run(capsys, "predict", *images, "-o", tmp_path / "b", "--method", "classical", "--jobs", 2)
    assert code == 0, err
    for img in images:
        a = nib.load(tmp_path / "a" / img.name).get_fdata()
        b = nib.load(tmp_path / "b" / img.name).get_fdata()
        assert np.array_equal(a, b) and a.any()
