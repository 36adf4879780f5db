"""check_output / atomic_path: inputs never overwritten, nothing half-written."""

from __future__ import annotations

import numpy as np
import pytest
from dicom_factory import write_series

from lungseg.core.errors import OutputError
from lungseg.io import atomic_path, check_output


def test_output_equal_to_input(tmp_path):
    inp = tmp_path / "ct.nii.gz"
    inp.write_bytes(b"x")
    with pytest.raises(OutputError, match="output is the input"):
        check_output(tmp_path / "." / "ct.nii.gz", [inp], overwrite=True)


def test_output_inside_dicom_folder(tmp_path):
    files = write_series(tmp_path / "dcm", np.zeros((4, 4, 3), np.int16), np.eye(4))
    with pytest.raises(OutputError, match="inside the input folder"):
        check_output(tmp_path / "dcm" / "mask.nii.gz", [tmp_path / "dcm"], overwrite=False)
    with pytest.raises(OutputError, match="inside the input folder"):
        check_output(tmp_path / "dcm" / "sub" / "m.nii.gz", [files[0]], overwrite=False)
    assert check_output(tmp_path / "mask.nii.gz", [tmp_path / "dcm"], overwrite=False)


def test_existing_output_needs_overwrite(tmp_path):
    out = tmp_path / "mask.nii.gz"
    out.write_bytes(b"old")
    with pytest.raises(OutputError, match="--overwrite"):
        check_output(out, [], overwrite=False)
    assert check_output(out, [], overwrite=True) == out.resolve()


def test_atomic_path_success_and_failure(tmp_path):
    out = tmp_path / "sub" / "report.json"
    with atomic_path(out) as tmp:
        assert tmp.parent == out.parent and tmp.name.endswith(".json")
        tmp.write_text("{}")
    assert out.read_text() == "{}"
    with pytest.raises(RuntimeError):
        with atomic_path(out) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert out.read_text() == "{}"
    assert [p.name for p in out.parent.iterdir()] == ["report.json"]


def test_atomic_outputs_get_the_usual_file_mode(tmp_path):
    import os

    from lungseg.io.safety import atomic_path

    with atomic_path(tmp_path / "r.json") as tmp:
        tmp.write_text("{}")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o666 & ~mask
