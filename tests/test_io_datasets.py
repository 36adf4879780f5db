"""find_cases: every dataset layout, auto-detected, with clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lungseg.core.errors import InputError
from lungseg.io import Case, detect_layout, find_cases


def touch(p: Path) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"x")
    return p


def test_pairs_kaggle_layout(tmp_path):
    for n in ("0002", "0003"):
        touch(tmp_path / "3d_images" / f"IMG_{n}.nii.gz")
        touch(tmp_path / "3d_images" / f"MASK_{n}.nii.gz")
    touch(tmp_path / "2d_images" / "ID_0000_Z_0142.tif")
    assert detect_layout(tmp_path) == "pairs"
    cases = find_cases(tmp_path)
    assert cases == [Case("0002", tmp_path / "3d_images/IMG_0002.nii.gz", tmp_path / "3d_images/MASK_0002.nii.gz"),
                     Case("0003", tmp_path / "3d_images/IMG_0003.nii.gz", tmp_path / "3d_images/MASK_0003.nii.gz")]


def test_pairs_missing_mask(tmp_path):
    touch(tmp_path / "IMG_1.nii.gz")
    with pytest.raises(InputError, match="no MASK_ file for IMG_1.nii.gz"):
        find_cases(tmp_path, "pairs")


def test_msd(tmp_path):
    touch(tmp_path / "imagesTr" / "lung_001.nii.gz")
    touch(tmp_path / "labelsTr" / "lung_001.nii.gz")
    (tmp_path / "dataset.json").write_text(json.dumps({
        "name": "Lung", "training": [{"image": "./imagesTr/lung_001.nii.gz", "label": "./labelsTr/lung_001.nii.gz"}],
        "test": ["./imagesTs/lung_002.nii.gz"]}))
    assert detect_layout(tmp_path) == "msd"
    (case,) = find_cases(tmp_path)
    assert case.name == "lung_001" and case.label == (tmp_path / "labelsTr/lung_001.nii.gz").resolve()


def test_msd_missing_file_named(tmp_path):
    (tmp_path / "dataset.json").write_text(json.dumps({"training": [{"image": "./imagesTr/a.nii.gz",
                                                                      "label": "./labelsTr/a.nii.gz"}]}))
    with pytest.raises(InputError, match="a.nii.gz"):
        find_cases(tmp_path)


def test_nnunet(tmp_path):
    for n in ("lung_001", "lung_002"):
        touch(tmp_path / "imagesTr" / f"{n}_0000.nii.gz")
        touch(tmp_path / "labelsTr" / f"{n}.nii.gz")
    (tmp_path / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "right": 1, "left": 2},
        "numTraining": 2, "file_ending": ".nii.gz"}))
    assert detect_layout(tmp_path) == "nnunet"
    cases = find_cases(tmp_path)
    assert [c.name for c in cases] == ["lung_001", "lung_002"]
    assert cases[0].label == tmp_path / "labelsTr/lung_001.nii.gz"


def test_csv(tmp_path):
    touch(tmp_path / "data" / "ct1.nrrd")
    touch(tmp_path / "data" / "ct1_mask.nrrd")
    touch(tmp_path / "data" / "ct2.mha")
    (tmp_path / "list.csv").write_text("image,label\ndata/ct1.nrrd,data/ct1_mask.nrrd\ndata/ct2.mha,\n")
    assert detect_layout(tmp_path / "list.csv") == "csv"
    cases = find_cases(tmp_path / "list.csv")
    assert cases[0] == Case("ct1", (tmp_path / "data/ct1.nrrd").resolve(), (tmp_path / "data/ct1_mask.nrrd").resolve())
    assert cases[1].label is None


def test_csv_bad_header(tmp_path):
    (tmp_path / "l.csv").write_text("img,lab\na,b\n")
    with pytest.raises(InputError, match="image,label"):
        find_cases(tmp_path / "l.csv")


def test_folders(tmp_path):
    touch(tmp_path / "images" / "a.nii.gz")
    touch(tmp_path / "labels" / "a.nii.gz")
    assert detect_layout(tmp_path) == "folders"
    assert find_cases(tmp_path)[0].name == "a"


def test_unknown_layout_lists_layouts(tmp_path):
    touch(tmp_path / "random.nii.gz")
    with pytest.raises(InputError, match="pairs.*msd.*nnunet.*csv.*folders"):
        find_cases(tmp_path)
    with pytest.raises(InputError, match="unknown dataset layout 'bids'"):
        find_cases(tmp_path, "bids")
