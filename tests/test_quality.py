"""Quality checks (`lungseg.quality`) on phantoms built to trigger each one, and one that triggers
none; `predict` prints one warning line per failed check and writes `<mask>.qc.json`."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

import lungseg
from lungseg import quality
from lungseg.cli import main
from lungseg.core.errors import GeometryError, OutputError
from lungseg.core.volume import Volume
from lungseg.evaluation import dice
from lungseg.quality import check_mask


@pytest.fixture(scope="module")
def chest():
    """A normal chest phantom: lungs inside the field of view, from apex to base (~270 mm)."""
    return lungseg.make_phantom(0, size=96)


def _by_name(qc: dict) -> dict:
    return {c["name"]: c for c in qc["checks"]}


def test_normal_chest_triggers_nothing(chest):
    image, truth = chest
    from lungseg.inference.classical import segment_classical

    qc = check_mask(image, truth, segment_classical(image))
    json.dumps(qc)  # JSON-able as it is
    checks = _by_name(qc)
    assert qc["passed"] and qc["warnings"] == []
    assert [c["name"] for c in qc["checks"]] == ["both_lungs", "lung_volume", "fov_edge", "method_agreement",
                                                 "dense_tissue_kept", "gas_share", "sides", "noise"]
    assert all(c["passed"] is True and not c["skipped"] for c in qc["checks"])
    right = np.count_nonzero(truth.array == 1) * image.voxel_ml
    assert qc["volumes_ml"]["right"] == pytest.approx(right, abs=0.05)
    assert qc["whole_chest"] and qc["cut_at"] == [] and qc["superior_axis"] == 2
    slices = np.nonzero((truth.array > 0).any(axis=(0, 1)))[0]
    assert qc["extent_mm"] == pytest.approx((slices[-1] - slices[0] + 1) * image.spacing[2], abs=0.05)
    assert 0.4 < checks["both_lungs"]["value"] < 0.5
    assert checks["fov_edge"]["value"] == {"right": 0.0, "left": 0.0, "anterior": 0.0, "posterior": 0.0}
    assert checks["method_agreement"]["value"] > 0.95
    assert 0.0 <= checks["dense_tissue_kept"]["value"] <= quality.MAX_DENSE_ONLY_ML
    assert 0.0 <= checks["gas_share"]["value"] <= quality.MAX_GAS_SHARE


def test_gas_called_lung(chest):
    """A mask that is mostly gas (bowel gas in a thin view of an abdomen, air outside the body)
    is flagged; the same mask over aerated lung (-850 HU) is not; an empty mask skips the check."""
    image, truth = chest
    hu = np.array(image.array, copy=True)
    lung = truth.array > 0
    for value, flagged in ((-1000, True), (-850, False)):
        hu[lung] = value
        qc = check_mask(Volume(hu, image.affine), truth)
        gas = _by_name(qc)["gas_share"]
        assert gas["passed"] is (not flagged), gas
        assert gas["value"] == pytest.approx(1.0 if flagged else 0.0)
        assert any("darker than -950 HU" in w for w in qc["warnings"]) is flagged
    # a third of the lung at -1000 HU (more than MAX_GAS_SHARE): flagged, with that share
    third = lung & (np.arange(lung.shape[0])[:, None, None] % 3 == 0)
    hu[third] = -1000
    gas = _by_name(check_mask(Volume(hu, image.affine), truth))["gas_share"]
    assert gas["passed"] is False and gas["value"] == pytest.approx(third.sum() / lung.sum(), abs=1e-3)
    empty = check_mask(image, Volume(np.zeros_like(truth.array), image.affine))
    assert _by_name(empty)["gas_share"]["skipped"]


def test_soft_tissue_kept_only_by_the_mask(chest):
    """A mask that also holds ~100 mL of soft tissue beside a lung (as the liver under a fibrotic
    base) agrees with the reference at Dice > 0.95 but is flagged; the same voxels as aerated
    lung (or a small piece of soft tissue) are not."""
    image, truth = chest
    lab = truth.array.copy()
    xs, ys, zs = np.nonzero(lab == 1)
    z, y = int(np.median(zs)), int(np.median(ys))
    block = np.zeros(lab.shape, bool)  # beside the right lung, in the chest wall
    block[max(0, xs.min() - 12):xs.min(), y - 6:y + 6, z - 6:z + 6] = True
    block &= lab == 0
    ml = np.count_nonzero(block) * image.voxel_ml
    assert ml > 1.5 * quality.MAX_DENSE_ONLY_ML
    lab[block] = 1
    hu = np.where(block, 50, image.array).astype(np.int16)
    dense = image.with_array(hu)
    qc = check_mask(dense, truth.with_array(lab), truth, names=("the network", "the classical method"))
    f = _by_name(qc)["dense_tissue_kept"]
    assert _by_name(qc)["method_agreement"]["passed"] is True  # overall agreement does not see it
    assert f["passed"] is False and f["value"] == pytest.approx(ml, abs=0.1)
    assert f["message"].startswith(f"the network keeps {ml:.0f} mL of soft tissue (denser than -200 HU) "
                                   "that the classical method leaves out")
    assert qc["warnings"] == [f["message"]]
    aerated = image.with_array(np.where(block, -850, image.array).astype(np.int16))
    ok = quality.check_dense_tissue(aerated, truth.with_array(lab), truth)
    assert ok.passed is True and ok.value < quality.MAX_DENSE_ONLY_ML
    small = block & (np.cumsum(block.ravel()).reshape(block.shape) <= 0.5 * quality.MAX_DENSE_ONLY_ML / image.voxel_ml)
    lab_small = np.where(block & ~small, 0, lab).astype(np.uint8)
    assert quality.check_dense_tissue(dense, truth.with_array(lab_small), truth).passed is True
    assert quality.check_dense_tissue(dense, truth, None).skipped


def test_one_lung_missing(chest):
    image, truth = chest
    qc = check_mask(image, truth.with_array(np.where(truth.array == 2, 0, truth.array)))
    checks = _by_name(qc)
    assert not qc["passed"]
    assert checks["both_lungs"]["passed"] is False and checks["both_lungs"]["value"] == 0.0
    assert checks["both_lungs"]["message"].startswith("left lung missing although the scan covers the whole chest")
    assert checks["lung_volume"]["passed"] is False and checks["lung_volume"]["value"]["left"] == 0.0
    assert "left lung 0.00 L is below 0.3 L" in checks["lung_volume"]["message"]
    assert qc["warnings"] == [checks["both_lungs"]["message"], checks["lung_volume"]["message"]]


def test_one_lung_too_small_and_no_lung(chest):
    image, truth = chest
    small = truth.array.copy()
    k = np.nonzero((small == 2).any(axis=(0, 1)))[0]
    small[:, :, k[0] + 8:][small[:, :, k[0] + 8:] == 2] = 0  # the left base only
    f = quality.check_both_lungs(image, truth.with_array(small))
    share = np.count_nonzero(small == 2) / np.count_nonzero(small)
    assert f.passed is False and f.value == pytest.approx(share, abs=1e-4) and share < quality.MIN_LUNG_SHARE
    assert f.message.startswith(f"left lung only {100 * share:.0f}% of the lung volume (expected at least {100 * quality.MIN_LUNG_SHARE:.0f}%)")
    # a lung at ~30 % of the total (a dense lobe left out) is doubtful too
    lopsided = truth.array.copy()
    right = np.count_nonzero(lopsided == 1)
    for z in np.nonzero((lopsided == 2).any(axis=(0, 1)))[0][::-1]:  # drop left slices from the top
        if np.count_nonzero(lopsided == 2) < 0.3 / 0.7 * right:
            break
        lopsided[:, :, z][lopsided[:, :, z] == 2] = 0
    f30 = quality.check_both_lungs(image, truth.with_array(lopsided))
    assert f30.passed is False and 0.2 < f30.value < quality.MIN_LUNG_SHARE, f30
    assert quality.check_both_lungs(image, truth).passed is True
    none = quality.check_both_lungs(image, truth.with_array(np.zeros_like(truth.array)))
    assert (none.passed, none.value, none.message) == (False, 0.0, "no lung found in the mask")


def test_partial_scan_skips_whole_chest_checks(chest):
    """Lung bases only (the scan stops mid-chest): a missing lung is not judged."""
    image, truth = chest
    lower = np.where(truth.array == 2, 0, truth.array)[:, :, :25]
    img = Volume(image.array[:, :, :25].copy(), image.affine)
    qc = check_mask(img, Volume(lower, image.affine))
    checks = _by_name(qc)
    assert qc["cut_at"] == ["superior"] and not qc["whole_chest"]
    for name in ("both_lungs", "lung_volume"):
        assert checks[name]["skipped"] and checks[name]["passed"] is None
        assert checks[name]["message"] == "skipped: lungs cut at the scan's superior end"
    assert qc["passed"] and qc["warnings"] == []


@pytest.mark.parametrize("axis, ends", [(1, ["anterior", "posterior"]), (0, ["left", "right"])])
def test_coronal_or_sagittal_slab_is_not_a_whole_chest(chest, axis, ends):
    """A coronal (or sagittal) slab spans the whole chest head to foot, but its lungs are cut at
    its own faces: not judged as a whole chest, and those faces are not the field of view's edge."""
    image, truth = chest
    i = int(np.nonzero((truth.array == 1).any(axis=tuple(a for a in range(3) if a != axis)))[0].mean())
    box = tuple(slice(i, i + 3) if a == axis else slice(None) for a in range(3))
    img, lab = Volume(image.array[box].copy(), image.affine), Volume(truth.array[box].copy(), image.affine)
    qc = check_mask(img, lab)
    checks = _by_name(qc)
    assert not qc["whole_chest"] and sorted(qc["cut_at"]) == sorted(ends)
    assert checks["both_lungs"]["skipped"] and checks["lung_volume"]["skipped"]
    assert checks["fov_edge"]["passed"] is True
    if axis == 1:  # a coronal slab shows the body from side to side: its sides are read from it
        assert checks["sides"]["passed"] is True
        assert qc["passed"] and qc["warnings"] == []
    else:  # a sagittal one does not: the one warning asks a person to check the side
        assert checks["sides"]["passed"] is False and checks["sides"]["value"] == "isocentre"
        assert qc["warnings"] == [checks["sides"]["message"]]


@pytest.mark.parametrize("scale, words", [(0.45, "total lung volume 0.84 L is outside the plausible 1.0-9.0 L"),
                                          (1.6, "total lung volume 10.59 L is outside the plausible 1.0-9.0 L")])
def test_implausible_volume_from_a_wrong_voxel_size(chest, scale, words):
    image, truth = chest
    affine = image.affine @ np.diag([scale, scale, 1.0, 1.0])  # in-plane spacing wrong, height kept
    qc = check_mask(Volume(image.array, affine), Volume(truth.array, affine))
    f = _by_name(qc)["lung_volume"]
    total = np.count_nonzero(truth.array) * image.voxel_ml * scale**2
    assert f["passed"] is False and f["value"]["total"] == pytest.approx(total, abs=0.1)
    assert f["message"].startswith(words) and f["message"].endswith("(wrong mask or wrong voxel size?)")
    assert qc["warnings"] == [f["message"]] and _by_name(qc)["both_lungs"]["passed"] is True


def _crop_through_right_lung(image: Volume, truth: Volume, flip: bool = False) -> tuple[Volume, Volume]:
    """Keep i < 62 of a RAS phantom: the right lung (larger x, i 46-76) is cut on its right side.
    `flip` stores the same crop with i reversed (LPS-like): the cut face becomes index 0."""
    img, lab, affine = image.array[:62], truth.array[:62], image.affine.copy()
    if flip:
        img, lab = img[::-1], lab[::-1]
        affine = affine @ np.array([[-1.0, 0, 0, 61], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    return Volume(np.ascontiguousarray(img), affine), Volume(np.ascontiguousarray(lab), affine)


@pytest.mark.parametrize("flip", [False, True])
def test_lung_cut_by_the_field_of_view(chest, flip):
    img, lab = _crop_through_right_lung(*chest, flip=flip)
    f = quality.check_fov_edge(img, lab)
    on_face = np.count_nonzero(lab.array[-1 if not flip else 0])
    assert f.passed is False and quality.EDGE_FRACTION < f.value["right"] < 0.2
    assert f.value["left"] == f.value["anterior"] == f.value["posterior"] == 0.0
    assert on_face > 300
    assert f.message.startswith(f"lung touches the field-of-view edge on the patient's right side (right lung, "
                                f"{100 * f.value['right']:.1f}% of the lung surface)")
    assert "volumes are underestimated" in f.message
    qc = check_mask(img, lab)  # the crop keeps the lungs whole head to foot: still a whole chest
    assert qc["whole_chest"] and qc["warnings"] == [f.message]


def test_both_lungs_cut_names_both_sides(chest):
    image, truth = chest
    img, lab = (Volume(np.ascontiguousarray(v.array[20:62]), image.affine) for v in (image, truth))
    f = quality.check_fov_edge(img, lab)
    r, lt = f.value["right"], f.value["left"]
    assert f.passed is False and min(r, lt) > quality.EDGE_FRACTION
    first, second = ("right", "left") if r >= lt else ("left", "right")
    assert f.message.startswith(
        f"lung touches the field-of-view edge on the patient's {first} ({first} lung, "
        f"{100 * f.value[first]:.1f}% of the lung surface) and {second} ({second} lung, "
        f"{100 * f.value[second]:.1f}%) sides: probably cut")


def test_a_lung_grazing_the_edge_passes(chest):
    """A few lung voxels on the border (far under 1% of the surface) are no cut."""
    image, truth = chest
    lab = truth.array.copy()
    lab[0, 40:43, 20:22] = 2
    f = quality.check_fov_edge(image, truth.with_array(lab))
    assert f.passed is True and 0 < f.value["left"] < quality.EDGE_FRACTION


@pytest.mark.parametrize("how", ["shift", "erode"])
def test_disagreement_between_two_masks(chest, how):
    from scipy import ndimage

    image, truth = chest
    if how == "shift":
        other = np.roll(truth.array, 4, axis=0)
    else:
        other = ndimage.binary_erosion(truth.array > 0, iterations=2).astype(np.uint8)
    qc = check_mask(image, truth, truth.with_array(other), names=("the network", "the classical method"))
    f = _by_name(qc)["method_agreement"]
    agreement = dice(truth.array, other)
    assert agreement < quality.MIN_AGREEMENT_DICE
    assert f["passed"] is False and f["value"] == pytest.approx(agreement, abs=1e-4)
    assert f["message"] == (f"the network and the classical method disagree (lung Dice {agreement:.3f}, "
                            "expected at least 0.90): check the mask")
    assert qc["warnings"] == [f["message"]]
    same = quality.check_agreement(image, truth, truth)
    assert (same.passed, same.value) == (True, 1.0)
    skipped = quality.check_agreement(image, truth, None)
    assert skipped.skipped and skipped.message == "skipped: no second segmentation to compare with"


def test_mask_on_another_grid_is_refused(chest):
    image, truth = chest
    with pytest.raises(GeometryError):
        check_mask(image, Volume(truth.array[:90], truth.affine))


@pytest.fixture(scope="module")
def one_lung_scan(chest, tmp_path_factory):
    """The chest phantom with its left lung filled with soft tissue (a lung a method misses)."""
    image, truth = chest
    hu = np.where(truth.array == 2, 40, image.array).astype(np.int16)
    path = tmp_path_factory.mktemp("one_lung") / "one_lung.nii.gz"
    nib.save(nib.Nifti1Image(hu, image.affine), path)
    return path


def test_cli_warns_and_writes_sidecar(one_lung_scan, tmp_path, capsys):
    out = tmp_path / "masks" / "m.nii.gz"
    code = main(["predict", str(one_lung_scan), "-o", str(out), "--method", "classical"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert "right" in stdout and "left 0 mL" in stdout
    lines = err.strip().splitlines()
    assert lines[0] == (f"lungseg: warning: {one_lung_scan}: left lung missing although the scan covers "
                        "the whole chest (lungs span 270 mm)")
    assert len(lines) == 2 and lines[1].startswith(f"lungseg: warning: {one_lung_scan}: left lung 0.00 L")
    qc = json.loads((tmp_path / "masks" / "m.qc.json").read_text())
    assert qc["input"] == str(one_lung_scan) and qc["mask"] == str(out)
    assert qc["method"] == "classical" and qc["model"] is None and qc["reference_method"] is None
    assert qc["lungseg_version"] == lungseg.__version__
    assert qc["volumes_ml"]["left"] == 0.0 and 1500 < qc["volumes_ml"]["right"] < 2500
    assert 250 < qc["extent_mm"] < 290 and qc["whole_chest"]
    checks = _by_name(qc)
    assert checks["both_lungs"]["passed"] is False and checks["fov_edge"]["passed"] is True
    assert checks["method_agreement"]["skipped"]
    assert checks["method_agreement"]["message"] == "skipped: the mask is from the classical method itself"
    assert checks["dense_tissue_kept"]["message"] == "skipped: the mask is from the classical method itself"
    assert [ln.split(": ", 3)[3] for ln in lines] == qc["warnings"]
    assert not list(tmp_path.rglob(".*tmp-*"))


def test_existing_sidecar_needs_overwrite(one_lung_scan, tmp_path, capsys):
    out = tmp_path / "m.nii.gz"
    (tmp_path / "m.qc.json").write_text("{}")
    code = main(["predict", str(one_lung_scan), "-o", str(out), "--method", "classical"])
    err = capsys.readouterr().err
    assert code == 2 and "m.qc.json" in err and "--overwrite" in err
    assert not out.exists() and (tmp_path / "m.qc.json").read_text() == "{}"


def test_overlay_picture_carries_the_warnings_and_volumes(one_lung_scan, tmp_path, monkeypatch):
    """`--png`: the picture says what the sidecar says (a picture is often looked at alone):
    the failed checks' messages under the planes, the volumes in the title."""
    import lungseg.report.figures as figures
    from lungseg.batch import predict_files

    drawn = []
    real = figures.overlay_figure

    def spy(*args, **kwargs):
        fig = real(*args, **kwargs)
        drawn.append((fig.texts[-1].get_text() if fig.texts else "", fig._suptitle.get_text(),
                      fig.get_size_inches()[1]))
        return fig

    monkeypatch.setattr(figures, "overlay_figure", spy)
    [res] = predict_files([one_lung_scan], tmp_path / "m.nii.gz", method="classical", png=True, progress=False)
    assert len(res.warnings) == 2 and (tmp_path / "m.png").exists()
    [(text, title, height)] = drawn
    assert text.replace("\n", " ").count("warning: ") == 2 and "left lung missing" in text.replace("\n", " ")
    assert title == f"one_lung.nii.gz: right {res.right_ml:.0f} mL, left 0 mL"
    image, mask = lungseg.read_volume(one_lung_scan), lungseg.read_volume(tmp_path / "m.nii.gz")
    plain = real(image, mask)
    assert height > plain.get_size_inches()[1] and not plain.texts  # room made for the lines


def test_failed_case_removes_the_sidecar(one_lung_scan, tmp_path, monkeypatch):
    import lungseg.report.figures as figures
    from lungseg.batch import predict_files

    def broken(*args, **kwargs):
        raise OutputError("disk full", args[2])

    monkeypatch.setattr(figures, "plot_overlay", broken)
    [res] = predict_files([one_lung_scan], tmp_path / "m.nii.gz", method="classical", png=True, progress=False)
    assert res.error and "disk full" in res.error and res.warnings == []
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_network_is_compared_with_the_classical_method(chest, tmp_path):
    """With the shipped model: the sidecar names the model and the classical Dice; --no-qc skips it."""
    from lungseg.batch import predict_files

    image, _ = chest
    scan = tmp_path / "scan.nii.gz"
    lungseg.write_volume(image, scan)
    [res] = predict_files([scan], tmp_path / "a.nii.gz", progress=False)
    assert res.error is None and res.warnings == []
    qc = json.loads((tmp_path / "a.qc.json").read_text())
    agree = _by_name(qc)["method_agreement"]
    assert qc["method"] == "unet" and qc["model"].endswith("default.pt") and qc["reference_method"] == "classical"
    assert agree["passed"] is True and agree["value"] > 0.95
    assert agree["message"].startswith("the network and the classical method agree")
    [res] = predict_files([scan], tmp_path / "b.nii.gz", progress=False, qc=False)
    qc = json.loads((tmp_path / "b.qc.json").read_text())
    agree = _by_name(qc)["method_agreement"]
    assert agree["skipped"] and "--no-qc" in agree["message"] and qc["reference_method"] is None
    assert _by_name(qc)["both_lungs"]["passed"] is True
