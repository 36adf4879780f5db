"""End-to-end formats at the CLI: every format and layout users bring, through `lungseg predict`.

Acceptance of "Read every format and dataset layout users bring": the same phantom as a
DICOM series (stored LPS), a NIfTI (RAS) and a MetaImage (PIR) gives the same physical mask
with the same sides; DICOM input also gives a DICOM SEG; `--series` picks a series; the
mask's format follows `-o`'s suffix; bad input exits 2 with one line naming the file and
the problem and leaves nothing behind; a batch with a bad case leaves only complete files.
All through `--method classical`, so no trained model is needed.
"""

from __future__ import annotations

import gzip
import io
import re
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import assert_no_leftovers, world_x
from dicom_factory import write_series

import lungseg
from lungseg.cli import main
from lungseg.core.errors import LabelError
from lungseg.evaluation import dice
from lungseg.io import Volume, read_volume, write_volume

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SEED = 0
UID_FULL = "1.2.826.0.1.3680043.10.1234.1"
UID_PART = "1.2.826.0.1.3680043.10.1234.2"
CLASSICAL = ("--method", "classical")
_PROGRESS = re.compile(r"^\S[^:]*: +\d+%\|")


def _run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def make_phantom(size: int, orientation: str = "RAS") -> tuple[Volume, Volume]:
    """A small phantom with a fixed slice thickness (35 slices at size 64, 18 at size 32)."""
    return lungseg.make_phantom(SEED, size=size, orientation=orientation, slice_thickness=1.0)


def _one_line(err: str) -> str:
    """The one message line on stderr (tqdm progress bars of a batch left aside)."""
    lines = [ln for ln in err.strip().splitlines() if ln.strip() and not _PROGRESS.search(ln)]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def _resample_nearest(vol: Volume, grid: Volume) -> np.ndarray:
    """`vol`'s voxels on `grid`'s voxel grid (nearest neighbour through both affines; 0 outside)."""
    ijk = np.indices(grid.shape).reshape(3, -1)
    world = grid.affine @ np.vstack([ijk, np.ones(ijk.shape[1])])
    src = np.rint(np.linalg.inv(vol.affine) @ world)[:3].astype(int)
    inside = np.all((src >= 0) & (src < np.array(vol.shape)[:, None]), axis=0)
    out = np.zeros(ijk.shape[1], vol.array.dtype)
    out[inside] = np.asarray(vol.array)[tuple(src[:, inside])]
    return out.reshape(grid.shape)


def _volumes_reported(stdout: str) -> tuple[float, float]:
    m = re.search(r"right (\d+) mL, left (\d+) mL", stdout)
    assert m, stdout
    return float(m.group(1)), float(m.group(2))


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> dict:
    """One phantom as a DICOM series (LPS), a NIfTI (RAS) and a MetaImage (PIR), plus its truth."""
    root = tmp_path_factory.mktemp("formats")
    lps, _ = make_phantom(64, "LPS")
    ras, truth = make_phantom(64, "RAS")
    pir, _ = make_phantom(64, "PIR")
    write_series(root / "dicom", lps.array, lps.affine, series_uid=UID_FULL)
    return {
        "root": root,
        "dicom": root / "dicom",
        "nifti": write_volume(ras, root / "ct.nii.gz"),
        "mha": write_volume(pir, root / "ct.mha"),
        "lps": lps,
        "ras": ras,
        "truth": truth,
    }


# 1. same physical mask and sides whatever the format ------------------------------------------

def test_same_mask_and_sides_from_dicom_nifti_and_mha(phantom, tmp_path, capsys):
    masks = {}
    for kind in ("dicom", "nifti", "mha"):
        out = tmp_path / f"{kind}_mask.nii.gz"
        code, stdout, err = _run(capsys, "predict", phantom[kind], "-o", out, *CLASSICAL)
        assert code == 0, err
        source = read_volume(phantom[kind])
        mask = read_volume(out)
        assert mask.shape == source.shape and np.abs(mask.affine - source.affine).max() < 1e-4
        assert world_x(mask, 1) > world_x(mask, 2) + 50, f"{kind}: right lung not at larger RAS x"
        masks[kind] = mask
    grid = phantom["ras"]
    on_grid = {k: _resample_nearest(m, grid) for k, m in masks.items()}
    for kind in ("dicom", "mha"):
        for label in (1, 2):
            assert dice(on_grid[kind] == label, on_grid["nifti"] == label) == 1.0, (kind, label)
    truth = np.asarray(phantom["truth"].array)
    for label in (1, 2):  # and it is the lungs, on the right sides
        assert dice(on_grid["nifti"] == label, truth == label) > 0.8


# 2. DICOM in -> NIfTI mask + DICOM SEG --------------------------------------------------------

def _check_seg(seg_path: Path, series_uid: str, n_frames: int) -> None:
    import highdicom as hd

    seg = hd.seg.segread(seg_path)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid
    segments = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence}
    assert segments == {1: "Right lung", 2: "Left lung"}
    assert int(seg.NumberOfFrames) == 2 * n_frames  # BINARY: one frame per slice and segment


def test_dicom_folder_gives_nifti_and_dicom_seg(phantom, tmp_path, capsys):
    out = tmp_path / "lungs.nii.gz"
    code, stdout, err = _run(capsys, "predict", phantom["dicom"], "-o", out, *CLASSICAL)
    assert code == 0, err
    mask = read_volume(out)
    assert mask.shape == phantom["lps"].shape
    seg_path = tmp_path / "lungs.seg.dcm"
    assert seg_path.is_file()
    _check_seg(seg_path, UID_FULL, phantom["lps"].shape[2])
    # SEG voxels agree with the NIfTI mask (frames follow the source slices)
    import highdicom as hd

    seg_vol = hd.seg.segread(seg_path).get_volume(combine_segments=True)
    arr = np.asarray(seg_vol.array)
    f, r, c = np.indices(arr.shape).reshape(3, -1)
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ seg_vol.affine @ np.vstack([f, r, c, np.ones_like(f)])
    ijk = np.rint(np.linalg.inv(mask.affine) @ ras).astype(int)[:3]
    np.testing.assert_array_equal(arr.reshape(-1), np.asarray(mask.array)[tuple(ijk)])
    assert_no_leftovers(tmp_path)


@pytest.mark.parametrize("method", ["unet", "classical"])
def test_enhanced_multiframe_file_gives_the_series_mask_and_a_seg(phantom, tmp_path, capsys, method):
    """Newer scanners export a series as one enhanced multi-frame file: the same mask as the
    series of single-frame files, and a DICOM SEG that references it, no warning."""
    from dicom_factory import write_multiframe

    lps = phantom["lps"]
    mf = write_multiframe(tmp_path / "mf" / "ct.dcm", lps.array, lps.affine)
    masks = {}
    for name, source in (("series", phantom["dicom"]), ("mf", mf)):
        out = tmp_path / "out" / name / "lungs.nii.gz"
        code, _, err = _run(capsys, "predict", source, "-o", out, "--method", method)
        assert code == 0 and "no DICOM SEG" not in err, err
        masks[name] = read_volume(out)
        assert (out.parent / "lungs.seg.dcm").is_file()
    np.testing.assert_allclose(masks["mf"].affine, masks["series"].affine, atol=1e-5)
    np.testing.assert_array_equal(masks["mf"].array, masks["series"].array)
    assert np.count_nonzero(np.asarray(masks["mf"].array) == 1) > 100


def test_one_dicom_slice_is_a_valid_ct(phantom, tmp_path, capsys):
    # a single axial slice as one DICOM file: the same mask as that slice in a 3D NIfTI, and a
    # DICOM SEG of one slice
    lps = phantom["lps"]
    k = lps.shape[2] // 2
    one = lps.array[:, :, k:k + 1]
    aff = lps.affine.copy()
    aff[:3, 3] = lps.affine[:3, :3] @ [0, 0, k] + lps.affine[:3, 3]
    write_series(tmp_path / "slice", one, aff, series_uid=UID_PART)
    ras_nifti = write_volume(Volume(one, aff), tmp_path / "slice.nii.gz")
    masks = {}
    for kind, src in (("dicom", tmp_path / "slice"), ("nifti", ras_nifti)):
        out = tmp_path / f"{kind}_mask.nii.gz"
        code, stdout, err = _run(capsys, "predict", src, "-o", out, *CLASSICAL)
        assert code == 0, err
        masks[kind] = read_volume(out)
        assert masks[kind].shape == (*lps.shape[:2], 1)
        assert np.abs(masks[kind].affine - aff).max() < 1e-4
    assert np.array_equal(masks["dicom"].array, masks["nifti"].array)
    assert (masks["dicom"].array == 1).sum() > 100 and (masks["dicom"].array == 2).sum() > 100
    _check_seg(tmp_path / "dicom_mask.seg.dcm", UID_PART, 1)


def test_existing_dicom_seg_needs_overwrite(phantom, tmp_path, capsys):
    out = tmp_path / "lungs.nii.gz"
    seg_path = tmp_path / "lungs.seg.dcm"
    seg_path.write_bytes(b"an earlier SEG")
    code, _, err = _run(capsys, "predict", phantom["dicom"], "-o", out, *CLASSICAL)
    assert code == 2 and "lungs.seg.dcm" in _one_line(err) and "exists" in err
    assert seg_path.read_bytes() == b"an earlier SEG" and not out.exists()
    code, _, err = _run(capsys, "predict", phantom["dicom"], "-o", out, *CLASSICAL, "--overwrite")
    assert code == 0, err
    _check_seg(seg_path, UID_FULL, phantom["lps"].shape[2])


def test_failed_dicom_seg_leaves_no_mask(phantom, tmp_path, capsys, monkeypatch):
    import lungseg.io.seg

    def refuse(mask, source, path):
        raise LabelError("cannot encode this SEG", path)

    monkeypatch.setattr(lungseg.io.seg, "write_dicom_seg", refuse)
    out = tmp_path / "lungs.nii.gz"
    code, _, err = _run(capsys, "predict", phantom["dicom"], "-o", out, *CLASSICAL)
    assert code == 2 and "cannot encode this SEG" in _one_line(err)
    assert list(tmp_path.iterdir()) == []


def test_real_dicom_series_no_lung_in_abdomen(tmp_path, capsys):
    folder = SHARED / "abdomen_ct_dicom"
    if not folder.is_dir():
        pytest.skip("shared real data absent")
    out = tmp_path / "abdomen.nii.gz"
    code, stdout, err = _run(capsys, "predict", folder, "-o", out, *CLASSICAL)
    assert code == 0, err
    assert read_volume(out).shape == (512, 512, 20)
    right, left = _volumes_reported(stdout)
    assert right <= 50 and left <= 50, stdout  # bowel gas is not lung
    _check_seg(tmp_path / "abdomen.seg.dcm", read_volume(folder).meta["series_uid"], 20)


# 3. choosing a series -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_series(phantom) -> Path:
    """The full phantom (35 slices) and 20 of its slices as a second series, in one folder."""
    folder = phantom["root"] / "two_series"
    lps = phantom["lps"]
    write_series(folder, lps.array, lps.affine, series_uid=UID_FULL, prefix="a")
    part = lps.affine.copy()
    part[:3, 3] = (lps.affine @ np.array([0.0, 0.0, 5.0, 1.0]))[:3]
    write_series(folder, lps.array[:, :, 5:25], part, series_uid=UID_PART, prefix="b")
    return folder


def test_series_option_picks_a_series(two_series, phantom, tmp_path, capsys):
    out = tmp_path / "part.nii.gz"
    code, _, err = _run(capsys, "predict", two_series, "-o", out, "--series", UID_PART, *CLASSICAL)
    assert code == 0, err
    mask = read_volume(out)
    assert mask.shape == (64, 64, 20)
    expected = phantom["lps"].affine @ np.array([0.0, 0.0, 5.0, 1.0])
    np.testing.assert_allclose(mask.affine[:, 3], expected, atol=1e-4)
    _check_seg(tmp_path / "part.seg.dcm", UID_PART, 20)


def test_unknown_series_uid_exit_2_names_the_uids(two_series, tmp_path, capsys):
    out = tmp_path / "none.nii.gz"
    code, _, err = _run(capsys, "predict", two_series, "-o", out, "--series", "9.9.9", *CLASSICAL)
    assert code == 2
    line = _one_line(err)
    assert "9.9.9" in line and "not found" in line and UID_FULL in line and UID_PART in line
    assert two_series.name in line
    assert not out.exists() and not (tmp_path / "none.seg.dcm").exists()
    assert_no_leftovers(tmp_path)


def test_mixed_series_default_is_the_one_with_most_slices(two_series, tmp_path, capsys):
    out = tmp_path / "default.nii.gz"
    code, _, err = _run(capsys, "predict", two_series, "-o", out, *CLASSICAL)
    assert code == 0, err
    warning = [ln for ln in err.splitlines() if ln.startswith("lungseg: warning:")]
    assert len(warning) == 1 and re.search(r"2 series.*--series", warning[0])
    assert read_volume(out).shape == (64, 64, 35)
    _check_seg(tmp_path / "default.seg.dcm", UID_FULL, 35)


# 4. output format from the suffix -------------------------------------------------------------

@pytest.mark.parametrize("kind", ["nifti", "dicom"])
def test_output_format_follows_suffix(kind, phantom, tmp_path, capsys):
    source = read_volume(phantom[kind])
    reference = None
    for name in ("mask.nii.gz", "mask.nrrd", "mask.mha"):
        out = tmp_path / name
        code, _, err = _run(capsys, "predict", phantom[kind], "-o", out, *CLASSICAL, "--overwrite")
        assert code == 0, err
        back = read_volume(out)
        assert back.meta["format"] == {"gz": "nifti", "nrrd": "nrrd", "mha": "mha"}[name.split(".")[-1]]
        assert back.shape == source.shape
        assert np.abs(back.affine - source.affine).max() <= 1e-4
        assert set(np.unique(back.array).tolist()) == {0, 1, 2}
        if reference is None:
            reference = np.asarray(back.array)
        np.testing.assert_array_equal(back.array, reference)
    assert_no_leftovers(tmp_path)


def test_output_without_suffix_is_nifti_and_not_overwritten(phantom, tmp_path, capsys):
    code, stdout, err = _run(capsys, "predict", phantom["nifti"], "-o", tmp_path / "mask", *CLASSICAL)
    assert code == 0, err
    written = tmp_path / "mask.nii.gz"
    assert written.is_file() and "mask.nii.gz" in stdout
    assert read_volume(written).shape == phantom["ras"].shape
    before = written.read_bytes()
    code, _, err = _run(capsys, "predict", phantom["nifti"], "-o", tmp_path / "mask", *CLASSICAL)
    assert code == 2 and "exists" in _one_line(err) and written.read_bytes() == before


# 5. bad input: exit 2, one line naming file and problem, nothing left behind ------------------

def _bad_input(kind: str, folder: Path) -> tuple[Path, str]:
    """Write one kind of bad input; return its path and a phrase the error must contain."""
    folder.mkdir(parents=True, exist_ok=True)
    ct, _ = make_phantom(32)
    if kind == "truncated":
        path = write_volume(ct, folder / "truncated.nii.gz")
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return path, "truncated"
    if kind == "zero_bytes":
        path = folder / "empty.nii.gz"
        path.write_bytes(b"")
        return path, "empty file"
    if kind == "missing_slice":
        path = folder / "gap_series"
        write_series(path, ct.array, ct.affine, skip=(ct.shape[2] // 2,))
        return path, "missing slice"
    if kind == "png_as_nii":
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(buf, format="PNG")
        path = folder / "photo.nii"
        path.write_bytes(buf.getvalue())
        return path, "PNG"
    if kind == "4d":
        path = folder / "timeseries.nii.gz"
        nib.save(nib.Nifti1Image(np.stack([ct.array, ct.array], axis=-1), ct.affine), path)
        return path, "4D"
    if kind == "mr_like":
        rng = np.random.default_rng(0)
        mr = Volume(rng.integers(0, 800, ct.shape).astype(np.int16), ct.affine)
        return write_volume(mr, folder / "t1_mr.nii.gz"), "does not look like CT"
    raise AssertionError(kind)


BAD_INPUTS = ["truncated", "zero_bytes", "missing_slice", "png_as_nii", "4d", "mr_like"]


@pytest.mark.parametrize("kind", BAD_INPUTS)
def test_predict_bad_input_exit_2(kind, tmp_path, capsys):
    src, problem = _bad_input(kind, tmp_path / "in")
    out = tmp_path / "out" / "mask.nii.gz"
    code, _, err = _run(capsys, "predict", src, "-o", out, *CLASSICAL)
    assert code == 2, err
    line = _one_line(err)
    assert src.name in line and problem in line, line
    assert not out.exists() and not (tmp_path / "out" / "mask.seg.dcm").exists()
    assert_no_leftovers(tmp_path)


def _folders_dataset(root: Path, label: np.ndarray | None = None) -> tuple[Path, Path]:
    """images/case.nii.gz (tiny phantom) + labels/case.nii.gz (its label, or `label`)."""
    ct, truth = make_phantom(32)
    image = write_volume(ct, root / "images" / "case.nii.gz")
    lab = truth if label is None else Volume(label, ct.affine)
    return image, write_volume(lab, root / "labels" / "case.nii.gz")


def _label_0_7(shape) -> np.ndarray:
    lab = np.zeros(shape, np.uint8)
    lab[4:12, 8:20, 5:15] = 7
    return lab


@pytest.mark.parametrize("problem", ["values_0_7", "shape_mismatch"])
def test_train_bad_label_exit_2(problem, tmp_path, capsys):
    shape = make_phantom(32)[0].shape
    label = _label_0_7(shape) if problem == "values_0_7" else _label_0_7(shape)[:, :, :-2]
    _, label_path = _folders_dataset(tmp_path / "data", label)
    run = tmp_path / "run"
    code, _, err = _run(capsys, "train", "--data", tmp_path / "data", "--layout", "folders",
                        "--out", run, "--max-epochs", 1, "--device", "cpu")
    assert code == 2, err
    line = _one_line(err)
    assert label_path.name in line
    assert ("{0, 7}" in line) if problem == "values_0_7" else ("shape" in line), line
    assert not list(tmp_path.rglob("*.pt"))
    assert_no_leftovers(tmp_path)


def test_train_bad_label_leaves_no_run_files(tmp_path, capsys):
    _folders_dataset(tmp_path / "data", _label_0_7(make_phantom(32)[0].shape))
    run = tmp_path / "run"
    code, _, _ = _run(capsys, "train", "--data", tmp_path / "data", "--layout", "folders",
                      "--out", run, "--max-epochs", 1, "--device", "cpu")
    assert code == 2
    assert not run.exists() or not list(run.iterdir())


@pytest.mark.parametrize("problem", ["values_0_7", "shape_mismatch"])
def test_evaluate_bad_label_exit_2(problem, tmp_path, capsys):
    ct, truth = make_phantom(32)
    ref = write_volume(truth, tmp_path / "ref.nii.gz")
    bad = _label_0_7(ct.shape) if problem == "values_0_7" else np.asarray(truth.array)[:, :, :-2]
    pred = write_volume(Volume(bad, ct.affine), tmp_path / "pred.nii.gz")
    code, _, err = _run(capsys, "evaluate", "--pred", pred, "--ref", ref, "-o", tmp_path / "ev")
    assert code == 2, err
    line = _one_line(err)
    assert ("7" in line) if problem == "values_0_7" else ("shape" in line), line
    assert not (tmp_path / "ev" / "evaluation.json").exists()
    assert not (tmp_path / "ev" / "evaluation.csv").exists()
    assert_no_leftovers(tmp_path)


@pytest.mark.parametrize("problem", ["values_0_7", "shape_mismatch"])
def test_evaluate_bad_label_names_the_file(problem, tmp_path, capsys):
    ct, truth = make_phantom(32)
    ref = write_volume(truth, tmp_path / "ref.nii.gz")
    bad = _label_0_7(ct.shape) if problem == "values_0_7" else np.asarray(truth.array)[:, :, :-2]
    pred = write_volume(Volume(bad, ct.affine), tmp_path / "pred.nii.gz")
    code, _, err = _run(capsys, "evaluate", "--pred", pred, "--ref", ref)
    assert code == 2 and "pred.nii.gz" in _one_line(err)


def test_existing_output_needs_overwrite(phantom, tmp_path, capsys):
    out = tmp_path / "mask.nii.gz"
    out.write_bytes(b"keep me")
    code, _, err = _run(capsys, "predict", phantom["nifti"], "-o", out, *CLASSICAL)
    assert code == 2
    line = _one_line(err)
    assert out.name in line and "--overwrite" in line
    assert out.read_bytes() == b"keep me"
    code, _, err = _run(capsys, "predict", phantom["nifti"], "-o", out, *CLASSICAL, "--overwrite")
    assert code == 0, err
    assert read_volume(out).shape == phantom["ras"].shape
    assert_no_leftovers(tmp_path)


# 6. a batch with a bad case, or interrupted, leaves only complete files ------------------------

def _batch_inputs(phantom, folder: Path) -> list[Path]:
    folder.mkdir()
    first = folder / "a.nii.gz"
    first.write_bytes(phantom["nifti"].read_bytes())
    second = folder / "b.nii.gz"
    data = phantom["nifti"].read_bytes()
    second.write_bytes(data[: len(data) // 3])
    third = folder / "c.mha"
    third.write_bytes(phantom["mha"].read_bytes())
    return [first, second, third]


def _complete(path: Path, like: Path) -> None:
    mask, source = read_volume(path), read_volume(like)
    assert mask.shape == source.shape and np.abs(mask.affine - source.affine).max() < 1e-4
    assert set(np.unique(mask.array).tolist()) == {0, 1, 2}
    with gzip.open(path) as f:  # the whole gzip stream is there
        f.read()


def test_batch_with_corrupt_second_input(phantom, tmp_path, capsys):
    inputs = _batch_inputs(phantom, tmp_path / "in")
    out = tmp_path / "masks"
    code, stdout, err = _run(capsys, "predict", *inputs, "-o", out, *CLASSICAL)
    assert code == 1  # a batch in which a case failed (issue 8); the others are written
    line, listed = [ln for ln in err.strip().splitlines() if ln.strip() and not _PROGRESS.search(ln)]
    assert "b.nii.gz" in line and "truncated" in line and line.startswith("lungseg: error: ")
    assert listed == f"lungseg: 1 failed: {inputs[1]}" and "Traceback" not in err
    assert "summary: 2 done, 1 failed, 0 skipped" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["a.nii.gz", "a.qc.json", "c.nii.gz", "c.qc.json"]
    _complete(out / "a.nii.gz", inputs[0])
    _complete(out / "c.nii.gz", inputs[2])
    assert "a.nii.gz" in stdout and "c.mha" in stdout
    assert_no_leftovers(tmp_path)


def test_batch_interrupted_while_writing(phantom, tmp_path, capsys, monkeypatch):
    inputs = _batch_inputs(phantom, tmp_path / "in")
    inputs[1].write_bytes(phantom["nifti"].read_bytes())  # all three good this time
    import lungseg.io.volumes as volumes

    real_write = volumes._write_bytes
    calls = []

    def write_then_interrupt(filename, data):
        calls.append(filename)
        if len(calls) == 2:  # half of the second mask is on disk when Ctrl-C arrives
            Path(filename).write_bytes(data[: len(data) // 2])
            raise KeyboardInterrupt
        real_write(filename, data)

    monkeypatch.setattr(volumes, "_write_bytes", write_then_interrupt)
    out = tmp_path / "masks"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code, _, err = _run(capsys, "predict", *inputs, "-o", out, *CLASSICAL)
    assert code == 130
    assert sorted(p.name for p in out.iterdir()) == ["a.nii.gz", "a.qc.json"]
    _complete(out / "a.nii.gz", inputs[0])
    assert_no_leftovers(tmp_path)
