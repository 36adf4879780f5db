"""Every bad input a clean refusal: one table, one contract (docs/reliability.md).

Each row builds one bad input (tiny hand-made files, no training) and runs the CLI in-process.
The contract, asserted for every row: exit code 2, exactly one line on stderr
("lungseg: error: ...") naming the file or the option, no traceback, nothing new written
anywhere under the test folder, and every file there byte-for-byte unchanged.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from dicom_factory import write_series

from lungseg.cli import main

#: builds the input under the folder; returns (argv, what the error line must contain)
Row = Callable[[Path], tuple[list, str | tuple[str, ...]]]
ROWS: dict[str, Row] = {}


def row(kind: str):
    def register(fn: Row) -> Row:
        assert kind not in ROWS, kind
        ROWS[kind] = fn
        return fn
    return register


# ---- tiny valid pieces ------------------------------------------------------------------

AFFINE = np.diag([6.0, 6.0, 8.0, 1.0])


def ct_array(shape=(24, 24, 12)) -> np.ndarray:
    """Air around a water body holding two air-filled 'lungs': passes check_image."""
    a = np.full(shape, -1000, np.int16)
    a[3:-3, 3:-3, :] = 40
    a[5:11, 6:-6, 2:-2] = -850
    a[13:19, 6:-6, 2:-2] = -850
    return a


def label_array(shape=(24, 24, 12)) -> np.ndarray:
    lab = np.zeros(shape, np.uint8)
    lab[5:11, 6:-6, 2:-2] = 2
    lab[13:19, 6:-6, 2:-2] = 1
    return lab


def nifti(path: Path, array: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), path)
    return path


def ct(d: Path, name: str = "ct.nii.gz") -> Path:
    return nifti(d / name, ct_array())


def bomb_header(shape=(1024, 1024, 1000)) -> bytes:
    h = nib.Nifti1Header()
    h.set_data_shape(shape)
    h.set_data_dtype(np.int16)
    h.set_sform(np.eye(4), 1)
    return h.binaryblock + b"\0" * 4


def mha_header(size="1024 1024 1000", extra="", data="LOCAL") -> str:
    return (f"ObjectType = Image\nNDims = 3\nDimSize = {size}\nElementType = MET_SHORT\n{extra}"
            f"ElementDataFile = {data}\n")


def nrrd_header(encoding="raw", extra="") -> str:
    return f"NRRD0004\ntype: short\ndimension: 3\nsizes: 1024 1024 1000\nencoding: {encoding}\nendian: little\n{extra}\n"


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)
    return path


def predict(src, d: Path, *extra) -> list:
    return ["predict", src, "-o", d / "out" / "mask.nii.gz", "--method", "classical", *extra]


def tiny_checkpoint(path: Path, network=None, **extra) -> Path:
    from lungseg.networks import build_unet, save_checkpoint

    network = network or {"channels": [4, 8], "strides": [2], "num_res_units": 0}
    settings = {"network": network, "preprocessing": {"spacing": [6.0, 6.0, 6.0]}, "roi_size": [32, 32, 32]}
    return save_checkpoint(path, build_unet(network), settings, extra or None)


def raw_checkpoint(path: Path, payload) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return path


def with_model(d: Path, ckpt: Path) -> list:
    return ["predict", ct(d / "in"), "-o", d / "out" / "mask.nii.gz", "--model", ckpt]


TAG = "lungseg-checkpoint-v1"


# ---- image files ------------------------------------------------------------------------

@row("missing_file")
def _(d):
    return predict(d / "in" / "nope.nii.gz", d), "nope.nii.gz"


@row("zero_bytes")
def _(d):
    return predict(write(d / "in" / "empty.nii.gz", b""), d), "empty.nii.gz"


@row("truncated_nii_gz")
def _(d):
    p = ct(d / "in", "cut.nii.gz")
    p.write_bytes(p.read_bytes()[:-60])
    return predict(p, d), "cut.nii.gz"


@row("truncated_nii")
def _(d):
    p = ct(d / "in", "cut.nii")
    p.write_bytes(p.read_bytes()[:-500])
    return predict(p, d), "cut.nii"


def _truncated_itk(d, name: str, compressed: bool):
    """An ITK file (MetaImage/NRRD) whose last 100 bytes are missing."""
    import SimpleITK as sitk

    p = d / "in" / name
    p.parent.mkdir(parents=True)
    sitk.WriteImage(sitk.GetImageFromArray(ct_array()), str(p), useCompression=compressed)
    p.write_bytes(p.read_bytes()[:-100])
    return predict(p, d), name


for _name, _file, _compressed in (("truncated_mha_compressed", "cut.mha", True),
                                  ("truncated_mha_raw", "cut.mha", False),
                                  ("truncated_nrrd_gzip", "cut.nrrd", True)):
    row(_name)(lambda d, f=_file, c=_compressed: _truncated_itk(d, f, c))


for _kind, _magic in {"png": b"\x89PNG\r\n\x1a\n", "jpeg": b"\xff\xd8\xff\xe0", "zip": b"PK\x03\x04",
                      "pdf": b"%PDF-1.4", "tiff": b"II*\x00"}.items():
    def _make(d, magic=_magic, kind=_kind):
        return predict(write(d / "in" / f"{kind}.nii", magic + b"\0" * 400), d), f"{kind}.nii"
    row(f"{_kind}_renamed_nii")(_make)


@row("text_unknown_suffix")
def _(d):
    return predict(write(d / "in" / "notes.txt", "hello"), d), "notes.txt"


@row("raw_without_header")
def _(d):
    return predict(write(d / "in" / "voxels.raw", b"\0" * 64), d), "voxels.raw"


@row("gzip_of_garbage")
def _(d):
    return predict(write(d / "in" / "junk.nii.gz", gzip.compress(b"not a nifti" * 40)), d), "junk.nii.gz"


@row("garbage_mha")
def _(d):
    return predict(write(d / "in" / "junk.mha", "garbage"), d), "junk.mha"


@row("image_4d")
def _(d):
    return predict(nifti(d / "in" / "four.nii.gz", np.zeros((8, 8, 8, 3), np.int16)), d), "four.nii.gz"


@row("image_2d")
def _(d):
    # read as one axial slice (a valid CT), then refused as any constant image
    return predict(nifti(d / "in" / "flat.nii.gz", np.zeros((8, 8), np.int16)), d), ("flat.nii.gz", "constant")


@row("line_of_voxels")
def _(d):
    return predict(nifti(d / "in" / "line.nii.gz", np.zeros((1, 1, 30), np.int16)), d), "line.nii.gz"


@row("rgb_mha")
def _(d):
    import SimpleITK as sitk

    p = d / "in" / "rgb.mha"
    p.parent.mkdir(parents=True)
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((6, 6, 6, 3), np.uint8), isVector=True), str(p))
    return predict(p, d), "rgb.mha"


@row("mhd_raw_missing")
def _(d):
    return predict(write(d / "in" / "lost.mhd", mha_header("2 2 2", data="lost.raw")), d), "lost.mhd"


@row("mhd_no_element_data_file")
def _(d):
    return predict(write(d / "in" / "bare.mhd", "NDims = 3\nDimSize = 2 2 2\n"), d), "bare.mhd"


@row("mhd_parent_traversal")
def _(d):
    return predict(write(d / "in" / "evil.mhd", mha_header("4 4 4", data="../" * 40 + "etc/passwd")), d), ("evil.mhd", "outside")


@row("mhd_absolute_outside")
def _(d):
    return predict(write(d / "in" / "abs.mhd", mha_header("4 4 4", data="/etc/passwd")), d), ("abs.mhd", "outside")


@row("mha_data_file_dev_zero")
def _(d):
    return predict(write(d / "in" / "zero.mha", mha_header("4 4 4", data="/dev/zero")), d), ("zero.mha", "outside")


@row("mhd_list_traversal")
def _(d):
    return predict(write(d / "in" / "list.mhd", mha_header("4 4 4", data="LIST") + "../../x.raw\n"), d), "list.mhd"


@row("nhdr_traversal")
def _(d):
    return predict(write(d / "in" / "evil.nhdr", nrrd_header(extra="data file: " + "../" * 40 + "etc/passwd\n")), d), ("evil.nhdr", "outside")


@row("bomb_nii_gz")
def _(d):
    return predict(write(d / "in" / "bomb.nii.gz", gzip.compress(bomb_header())), d), ("bomb.nii.gz", "header declares")


@row("bomb_nii")
def _(d):
    return predict(write(d / "in" / "bomb.nii", bomb_header()), d), ("bomb.nii", "header declares")


@row("bomb_nii_32000_cubed")
def _(d):
    return predict(write(d / "in" / "huge.nii.gz", gzip.compress(bomb_header((32000,) * 3))), d), ("huge.nii.gz", "header declares")


@row("bomb_mha")
def _(d):
    return predict(write(d / "in" / "bomb.mha", mha_header()), d), ("bomb.mha", "header declares")


@row("bomb_mha_compressed")
def _(d):
    return predict(write(d / "in" / "bombz.mha", mha_header(extra="CompressedData = True\n")), d), ("bombz.mha", "header declares")


@row("bomb_mha_100000_cubed")
def _(d):
    return predict(write(d / "in" / "huge.mha", mha_header("100000 100000 100000")), d), ("huge.mha", "header declares")


@row("bomb_nrrd")
def _(d):
    return predict(write(d / "in" / "bomb.nrrd", nrrd_header()), d), ("bomb.nrrd", "header declares")


@row("bomb_nrrd_gzip")
def _(d):
    return predict(write(d / "in" / "bombz.nrrd", nrrd_header("gzip")), d), ("bombz.nrrd", "header declares")


@row("dev_zero")
def _(d):
    return predict("/dev/zero", d), "/dev/zero"


@row("dev_null")
def _(d):
    return predict("/dev/null", d), "/dev/null"


@row("fifo")
def _(d):
    p = d / "in" / "pipe.nii.gz"
    p.parent.mkdir(parents=True)
    os.mkfifo(p)
    return predict(p, d), "pipe.nii.gz"


@row("folder_without_dicom")
def _(d):
    write(d / "in" / "series" / "readme.txt", "no dicom here")
    return predict(d / "in" / "series", d), "series"


@row("dicom_missing_slice")
def _(d):
    write_series(d / "in" / "gap", ct_array(), AFFINE, skip=(6,))
    return predict(d / "in" / "gap", d), "missing slice"


@row("dicom_unknown_series_uid")
def _(d):
    write_series(d / "in" / "series", ct_array(), AFFINE)
    return predict(d / "in" / "series", d, "--series", "1.2.3.999"), "1.2.3.999"


def _set_orientation(files, iop) -> None:
    import pydicom

    for f in files:
        ds = pydicom.dcmread(f)
        ds.ImageOrientationPatient = iop
        ds.save_as(f)


@row("dicom_orientation_all_zero")
def _(d):
    _set_orientation(write_series(d / "in" / "series", ct_array(), AFFINE), [0, 0, 0, 0, 0, 0])
    return predict(d / "in" / "series", d), ("series", "ImageOrientationPatient [0, 0, 0, 0, 0, 0]")


@row("dicom_orientation_not_perpendicular")
def _(d):
    _set_orientation(write_series(d / "in" / "series", ct_array(), AFFINE), [1, 0, 0, 1, 0, 0])
    return predict(d / "in" / "series", d), ("series", "ImageOrientationPatient")


# ---- images that are not CT -------------------------------------------------------------

@row("mr_like_no_air")
def _(d):
    a = np.random.default_rng(0).integers(0, 800, (24, 24, 12)).astype(np.int16)
    return predict(nifti(d / "in" / "t1.nii.gz", a), d), "t1.nii.gz"


@row("nan_voxels")
def _(d):
    a = ct_array().astype(np.float32)
    a[5, 5, 5] = np.nan
    return predict(nifti(d / "in" / "nan.nii.gz", a), d), "nan.nii.gz"


@row("constant_image")
def _(d):
    return predict(nifti(d / "in" / "flat.nii.gz", np.full((24, 24, 12), -1000, np.int16)), d), "flat.nii.gz"


@row("eight_bit_stack")
def _(d):
    return predict(nifti(d / "in" / "photo.nii.gz", (ct_array() > 0).astype(np.uint8) * 255), d), "photo.nii.gz"


@row("spacing_50mm")
def _(d):
    return predict(nifti(d / "in" / "coarse.nii.gz", ct_array(), np.diag([6.0, 6.0, 50.0, 1.0])), d), "coarse.nii.gz"


@row("singular_affine")
def _(d):
    img = nib.Nifti1Image(ct_array(), None)
    img.header.set_sform(np.diag([6.0, 6.0, 0.0, 1.0]), code=1)  # nibabel cannot make a qform of it
    (d / "in").mkdir()
    nib.save(img, d / "in" / "singular.nii.gz")
    return predict(d / "in" / "singular.nii.gz", d), "singular.nii.gz"


# ---- outputs ----------------------------------------------------------------------------

@row("output_is_input")
def _(d):
    src = ct(d / "in")
    return ["predict", src, "-o", src, "--method", "classical", "--overwrite"], "ct.nii.gz"


@row("output_exists_no_overwrite")
def _(d):
    write(d / "out" / "mask.nii.gz", b"keep me")
    return predict(ct(d / "in"), d), "mask.nii.gz"


@row("output_inside_dicom_folder")
def _(d):
    write_series(d / "in" / "series", ct_array(), AFFINE)
    return ["predict", d / "in" / "series", "-o", d / "in" / "series" / "m.nii.gz", "--method", "classical"], "m.nii.gz"


@row("predict_several_inputs_one_name")
def _(d):
    a, b = ct(d / "in" / "a"), ct(d / "in" / "b")
    return ["predict", a, b, "-o", d / "out", "--method", "classical"], "same output name"


@row("predict_several_inputs_to_a_file_name")
def _(d):
    a, b = ct(d / "in", "a.nii.gz"), ct(d / "in", "b.nii.gz")
    return ["predict", a, b, "-o", d / "out" / "m.nii.gz", "--method", "classical"], "m.nii.gz"


@row("predict_folder_of_scans_to_a_file_name")
def _(d):
    ct(d / "in", "a.nii.gz"), ct(d / "in", "b.nii.gz")
    return ["predict", d / "in", "-o", d / "out" / "m.nii.gz", "--method", "classical"], "m.nii.gz"


@row("predict_out_empty")
def _(d):
    return ["predict", ct(d / "in"), "-o", "", "--method", "classical"], "'--out'"


# ---- checkpoints (--model) --------------------------------------------------------------

@row("model_missing")
def _(d):
    return with_model(d, d / "nope.pt"), "nope.pt"


@row("model_is_folder")
def _(d):
    (d / "model.pt").mkdir()
    return with_model(d, d / "model.pt"), "model.pt"


@row("model_text_file")
def _(d):
    return with_model(d, write(d / "model.pt", "not torch")), "model.pt"


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


@row("model_pickled_code")
def _(d):
    p = d / "evil.pt"
    p.write_bytes(pickle.dumps({"format": TAG, "x": _Evil()}))
    return with_model(d, p), "evil.pt"


@row("model_no_format_tag")
def _(d):
    return with_model(d, raw_checkpoint(d / "other.pt", {"weights": torch.zeros(2)})), "other.pt"


@row("model_settings_json_missing")
def _(d):
    return with_model(d, raw_checkpoint(d / "m.pt", {"format": TAG, "state_dict": {}})), "settings_json"


@row("model_settings_json_not_json")
def _(d):
    return with_model(d, raw_checkpoint(d / "m.pt", {"format": TAG, "state_dict": {}, "settings_json": "{no"})), "settings_json"


@row("model_settings_json_list")
def _(d):
    return with_model(d, raw_checkpoint(d / "m.pt", {"format": TAG, "state_dict": {}, "settings_json": "[1]"})), "settings_json"


@row("model_settings_json_int")
def _(d):
    return with_model(d, raw_checkpoint(d / "m.pt", {"format": TAG, "state_dict": {}, "settings_json": 7})), "settings_json"


@row("model_no_state_dict")
def _(d):
    return with_model(d, raw_checkpoint(d / "m.pt", {"format": TAG, "settings_json": "{}"})), "state_dict"


@row("model_state_dict_int_value")
def _(d):
    return with_model(d, raw_checkpoint(d / "m.pt", {"format": TAG, "settings_json": "{}",
                                                     "state_dict": {"w": 3}})), "state_dict['w']"


@row("model_state_dict_list")
def _(d):
    return with_model(d, raw_checkpoint(d / "m.pt", {"format": TAG, "settings_json": "{}",
                                                     "state_dict": [1, 2]})), "state_dict"


def _settings_ckpt(d, settings, state=None):
    return raw_checkpoint(d / "m.pt", {"format": TAG, "settings_json": json.dumps(settings), "state_dict": state or {}})


@row("model_giant_channels")
def _(d):
    return with_model(d, _settings_ckpt(d, {"network": {"channels": [100000, 200000], "strides": [2]}})), "settings.network.channels"


@row("model_too_many_levels")
def _(d):
    return with_model(d, _settings_ckpt(d, {"network": {"channels": [8] * 12, "strides": [1] * 11}})), "settings.network.channels"


@row("model_giant_in_bounds_no_weights")
def _(d):
    net = {"channels": [1024] * 8, "strides": [1] * 7, "num_res_units": 8}
    return with_model(d, _settings_ckpt(d, {"network": net})), "settings.network"


@row("model_stride_out_of_range")
def _(d):
    return with_model(d, _settings_ckpt(d, {"network": {"channels": [4, 8], "strides": [64]}})), "settings.network.strides"


@row("model_strides_count_mismatch")
def _(d):
    return with_model(d, _settings_ckpt(d, {"network": {"strides": [2]}})), "settings.network"


@row("model_out_channels_7")
def _(d):
    return with_model(d, _settings_ckpt(d, {"network": {"out_channels": 7}})), "settings.network.out_channels"


@row("model_network_is_string")
def _(d):
    return with_model(d, _settings_ckpt(d, {"network": "big"})), "settings.network"


@row("model_spacing_zero")
def _(d):
    return with_model(d, _settings_ckpt(d, {"preprocessing": {"spacing": [0, 0, 0]}})), "settings.preprocessing.spacing"


@row("model_wrong_tensor_shape")
def _(d):
    from lungseg.networks import build_unet

    net = {"channels": [4, 8], "strides": [2], "num_res_units": 0}
    state = build_unet(net).state_dict()
    key = next(iter(state))
    state[key] = torch.zeros(3)
    return with_model(d, _settings_ckpt(d, {"network": net}, state)), key


@row("model_extra_weight")
def _(d):
    from lungseg.networks import build_unet

    net = {"channels": [4, 8], "strides": [2], "num_res_units": 0}
    state = {**build_unet(net).state_dict(), "intruder.weight": torch.zeros(2)}
    return with_model(d, _settings_ckpt(d, {"network": net}, state)), "intruder.weight"


# ---- train --resume ---------------------------------------------------------------------

def resume(d: Path) -> list:
    data = d / "data"
    nifti(data / "images" / "a.nii.gz", ct_array())
    nifti(data / "labels" / "a.nii.gz", label_array())
    return ["train", "--data", data, "--out", d / "run", "--resume", "--max-epochs", 1, "--device", "cpu"]


@row("resume_without_last_pt")
def _(d):
    (d / "run").mkdir()
    return resume(d), "last.pt"


@row("resume_other_network")
def _(d):
    tiny_checkpoint(d / "run" / "last.pt", optimizer={"state": {}, "param_groups": []}, epoch=0,
                    best_dice=0.5, step=1, elapsed_s=1.0)
    return resume(d), "settings.network.channels"


@row("resume_without_optimizer")
def _(d):
    from lungseg.networks import DEFAULT_NETWORK

    tiny_checkpoint(d / "run" / "last.pt", network=DEFAULT_NETWORK)
    return resume(d), "optimizer"


@row("resume_epoch_not_a_number")
def _(d):
    from lungseg.networks import DEFAULT_NETWORK

    tiny_checkpoint(d / "run" / "last.pt", network=DEFAULT_NETWORK, optimizer={"state": {}, "param_groups": []},
                    epoch="x", best_dice=0.5, step=1, elapsed_s=1.0)
    return resume(d), "epoch"


@row("resume_corrupt_last_pt")
def _(d):
    write(d / "run" / "last.pt", b"\0" * 100)
    return resume(d), "last.pt"


# ---- configs and train options -----------------------------------------------------------

def config(d: Path, text: str) -> list:
    return ["train", "--config", write(d / "cfg.yaml", text)]


@row("config_yaml_list")
def _(d):
    return config(d, "- data: x\n- out: y\n"), "cfg.yaml"


@row("config_yaml_string")
def _(d):
    return config(d, "just some words\n"), "cfg.yaml"


@row("config_yaml_syntax")
def _(d):
    return config(d, "data: [unclosed\n"), "cfg.yaml"


@row("config_unknown_key")
def _(d):
    return config(d, "data: x\nroi_sise: [64, 64, 64]\n"), "roi_sise"


@row("config_giant_network")
def _(d):
    return config(d, "data: x\nnetwork: {channels: [5000, 9000], strides: [2]}\n"), "network.channels"


@row("config_roi_too_small")
def _(d):
    return config(d, "data: x\nroi_size: [8, 8, 8]\n"), "roi_size"


@row("config_missing")
def _(d):
    return ["train", "--config", d / "none.yaml"], "none.yaml"


@row("config_is_device")
def _(d):
    return ["train", "--config", "/dev/zero"], "/dev/zero"


@row("train_no_data")
def _(d):
    return ["train", "--out", d / "run"], "--data"


@row("train_out_is_file")
def _(d):
    return ["train", "--data", d / "data", "--out", write(d / "run.txt", "x")], "run.txt"


@row("train_max_minutes_negative")
def _(d):
    return ["train", "--data", d, "--max-minutes", "-1"], "'--max-minutes'"


@row("train_max_epochs_zero")
def _(d):
    return ["train", "--data", d, "--max-epochs", "0"], "'--max-epochs'"


@row("train_lr_zero")
def _(d):
    return ["train", "--data", d, "--lr", "0"], "'--lr'"


@row("train_device_bogus")
def _(d):
    return ["train", "--data", d, "--device", "bogus"], "'--device'"


@row("train_layout_bogus")
def _(d):
    return ["train", "--data", d, "--layout", "bogus", "--out", d / "run"], "layout"


@row("train_device_cuda_without_cuda")
def _(d):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    return ["train", "--data", d, "--device", "cuda"], "'--device'"


@row("train_corrupt_image")
def _(d):
    nifti(d / "data" / "images" / "a.nii.gz", ct_array())
    nifti(d / "data" / "labels" / "a.nii.gz", label_array())
    p = nifti(d / "data" / "images" / "b.nii.gz", ct_array())
    p.write_bytes(p.read_bytes()[:-80])
    nifti(d / "data" / "labels" / "b.nii.gz", label_array())
    return ["train", "--data", d / "data", "--layout", "folders", "--out", d / "run", "--max-epochs", "1"], "b.nii.gz"


@row("train_label_values_0_7")
def _(d):
    nifti(d / "data" / "images" / "a.nii.gz", ct_array())
    lab = label_array()
    lab[lab > 0] = 7
    nifti(d / "data" / "labels" / "a.nii.gz", lab)
    return ["train", "--data", d / "data", "--layout", "folders", "--out", d / "run", "--max-epochs", "1"], "a.nii.gz"


# ---- predict options --------------------------------------------------------------------

for _kind, _opt, _val in [("overlap_1_5", "--overlap", "1.5"), ("overlap_1", "--overlap", "1"),
                          ("overlap_negative", "--overlap", "-0.1"), ("roi_0", "--roi", "0"),
                          ("roi_huge", "--roi", "100000"), ("device_bogus", "--device", "bogus"),
                          ("method_bogus", "--method", "bogus"), ("jobs_0", "--jobs", "0"),
                          ("shard_out_of_range", "--shard", "2/2"), ("shard_not_i_over_n", "--shard", "half"),
                          ("shard_zero_shards", "--shard", "0/0")]:
    def _make(d, opt=_opt, val=_val):
        return ["predict", ct(d / "in"), "-o", d / "out" / "m.nii.gz", opt, val], f"'{opt}'"
    row(f"predict_{_kind}")(_make)


@row("predict_device_cuda_without_cuda")
def _(d):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    return ["predict", ct(d / "in"), "-o", d / "out" / "m.nii.gz", "--device", "cuda"], "'--device'"


@row("unknown_command")
def _(d):
    return ["segmentify", "x"], "segmentify"


@row("unknown_option")
def _(d):
    return ["predict", ct(d / "in"), "-o", d / "out" / "m.nii.gz", "--fast"], "--fast"


@row("predict_missing_out")
def _(d):
    return ["predict", ct(d / "in")], "'--out'"


# ---- evaluate, quantify -----------------------------------------------------------------

def evaluate(d: Path, pred: np.ndarray | None = None, *extra) -> list:
    ref = nifti(d / "ref" / "a.nii.gz", label_array())
    p = nifti(d / "pred" / "a.nii.gz", label_array() if pred is None else pred)
    return ["evaluate", "--pred", p, "--ref", ref, *extra]


@row("evaluate_label_values_0_7")
def _(d):
    return evaluate(d, label_array() * 7), "a.nii.gz"


@row("evaluate_shape_mismatch")
def _(d):
    return evaluate(d, np.zeros((10, 10, 10), np.uint8)), "a.nii.gz"


@row("evaluate_pred_missing")
def _(d):
    nifti(d / "ref" / "a.nii.gz", label_array())
    return ["evaluate", "--pred", d / "nopred", "--ref", d / "ref"], "nopred"


@row("evaluate_ref_folder_without_labels")
def _(d):
    (d / "ref").mkdir()
    (d / "pred").mkdir()
    return ["evaluate", "--pred", d / "pred", "--ref", d / "ref"], "ref"


@row("evaluate_out_is_file")
def _(d):
    return evaluate(d, None, "-o", write(d / "ev.txt", "x")), "ev.txt"


@row("evaluate_out_unwritable")
def _(d):
    return evaluate(d, None, "-o", "/proc/lungseg-eval"), "/proc"


@row("evaluate_out_empty")
def _(d):
    return evaluate(d, None, "-o", ""), "'--out'"


@row("evaluate_existing_json_no_overwrite")
def _(d):
    write(d / "ev" / "evaluation.json", "{}")
    return evaluate(d, None, "-o", d / "ev"), "evaluation.json"


@row("quantify_image_missing")
def _(d):
    return ["quantify", d / "in" / "none.nii.gz", nifti(d / "in" / "m.nii.gz", label_array())], "none.nii.gz"


@row("quantify_mask_is_fifo")
def _(d):
    p = d / "in" / "m.nii.gz"
    p.parent.mkdir(parents=True)
    os.mkfifo(p)
    return ["quantify", ct(d / "in"), p], "m.nii.gz"


@row("quantify_shape_mismatch")
def _(d):
    return ["quantify", ct(d / "in"), nifti(d / "in" / "m.nii.gz", np.zeros((4, 4, 4), np.uint8))], "m.nii.gz"


@row("quantify_label_values")
def _(d):
    return ["quantify", ct(d / "in"), nifti(d / "in" / "m.nii.gz", label_array() * 5)], "m.nii.gz"


# ---- synth ------------------------------------------------------------------------------

@row("synth_size_huge")
def _(d):
    return ["synth", "--out", d / "ph", "--size", "100000"], "'--size'"


@row("synth_size_tiny")
def _(d):
    return ["synth", "--out", d / "ph", "--size", "8"], "'--size'"


@row("synth_n_0")
def _(d):
    return ["synth", "--out", d / "ph", "--n", "0"], "'--n'"


@row("synth_out_is_file")
def _(d):
    return ["synth", "--out", write(d / "ph.txt", "x"), "--size", "32", "--n", "1"], "ph.txt"


@row("synth_existing_dataset_no_overwrite")
def _(d):
    write(d / "ph" / "dataset.json", "{}")
    return ["synth", "--out", d / "ph", "--size", "32", "--n", "1"], "ph"


@row("synth_existing_phantom_no_overwrite")
def _(d):
    write(d / "ph" / "imagesTr" / "lung_000.nii.gz", b"keep")
    return ["synth", "--out", d / "ph", "--size", "32", "--n", "1"], "lung_000.nii.gz"


@row("synth_out_empty")
def _(d):
    return ["synth", "--out", "", "--size", "32"], "'--out'"


# ---- the contract -----------------------------------------------------------------------

def _snapshot(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_fifo() or p.is_dir():
                out[rel] = "fifo" if p.is_fifo() else "dir"
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def test_at_least_sixty_kinds():
    assert len(ROWS) >= 60, len(ROWS)


@pytest.mark.parametrize("kind", sorted(ROWS))
def test_bad_input_is_a_clean_refusal(kind, tmp_path, capfd, monkeypatch):
    d = tmp_path / "case"
    d.mkdir()
    monkeypatch.chdir(d)  # a stray relative write (e.g. -o '') would land here and be seen
    argv, names = ROWS[kind](d)
    capfd.readouterr()
    before = _snapshot(d)
    code = main([str(a) for a in argv])
    out, err = capfd.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, (code, err)
    assert len(lines) == 1, err
    assert lines[0].startswith("lungseg: error: "), lines[0]
    for name in names if isinstance(names, tuple) else (names,):
        assert name in lines[0], (name, lines[0])
    assert "Traceback" not in err + out
    assert _snapshot(d) == before, "files were added, removed or changed"
    assert not Path("pwned").exists()


# ---- not refusals, but part of the same contract -----------------------------------------

def test_missing_orientation_warns_once_naming_the_file(tmp_path):
    from lungseg.core.errors import LungsegWarning
    from lungseg.io.volumes import read_volume

    img = nib.Nifti1Image(ct_array(), None)
    img.header.set_zooms((6.0, 6.0, 8.0))
    nib.save(img, tmp_path / "bare.nii")
    with pytest.warns(LungsegWarning, match=r"bare\.nii.*neither qform nor sform.*LAS") as rec:
        read_volume(tmp_path / "bare.nii")
    assert len([w for w in rec if issubclass(w.category, LungsegWarning)]) == 1
    with_sform = tmp_path / "ok.nii"
    nifti(with_sform, ct_array())
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", LungsegWarning)
        read_volume(with_sform)  # no warning with an sform


@pytest.mark.parametrize("size", [32, 40, 48, 64])
def test_synth_spacing_is_accepted_at_every_size(size):
    from lungseg.io.checks import MAX_SPACING_MM, MIN_SPACING_MM
    from lungseg.phantoms.grid import output_shape
    from lungseg.phantoms.params import sample_params

    worst = 0.0
    for seed in range(40):
        for variations in (False, True):
            _, sxy, _, sz = output_shape(sample_params(seed, variations), size)
            assert MIN_SPACING_MM <= min(sxy, sz)
            worst = max(worst, sxy, sz)
    assert worst <= MAX_SPACING_MM, worst


def test_header_bomb_peak_memory_below_300_mb(tmp_path):
    bomb = write(tmp_path / "bomb.nii.gz", gzip.compress(bomb_header()))
    # VmHWM, not ru_maxrss: the latter keeps the forking parent's (pytest's) peak across exec
    code = ("import re, sys\nfrom lungseg.cli import main\n"
            f"rc = main(['predict', {str(bomb)!r}, '-o', {str(tmp_path / 'm.nii.gz')!r}])\n"
            "hwm = re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1)\n"
            "print(int(hwm) // 1024)\nsys.exit(rc)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 2, res.stderr
    assert "bomb.nii.gz" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    peak_mb = int(res.stdout.strip().splitlines()[-1])
    assert peak_mb < 300, peak_mb
    assert not (tmp_path / "m.nii.gz").exists()


def test_train_and_synth_print_no_progress_bars_into_a_pipe(tmp_path, capfd):
    """Progress bars only on a terminal: stderr here is a pipe (capfd), so nothing of tqdm."""
    assert main(["synth", "--out", str(tmp_path / "ph"), "--n", "2", "--size", "32"]) == 0
    cfg = write(tmp_path / "cfg.yaml", "preprocessing: {spacing: [8.0, 8.0, 8.0]}\nroi_size: [16, 16, 16]\n"
                "val_roi_size: [64, 64, 64]\nval_fraction: 0.5\ndevice: cpu\n"
                "network: {channels: [4, 8], strides: [2], num_res_units: 0}\n")
    assert main(["train", "--config", str(cfg), "--data", str(tmp_path / "ph"), "--out", str(tmp_path / "run"),
                 "--max-epochs", "2"]) == 0
    out, err = capfd.readouterr()
    assert "wrote 2 phantoms" in out and (tmp_path / "run" / "last.pt").is_file()
    for mark in ("\r", "it/s", "s/it", "%|", "synth:", "train:"):
        assert mark not in err, (mark, err)
