"""check_output / atomic_path: inputs never overwritten, nothing half-written."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_no_leftovers
from dicom_factory import write_series

from lungseg.core.errors import OutputError
from lungseg.io import atomic_path, check_output
from lungseg.io.safety import atomic_folder


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


def test_leftover_check_fails_on_planted_and_real_temporaries(tmp_path):
    """The one leftover check of the suite can fail: on a planted temp and on the writers' own."""
    (tmp_path / "pred").mkdir()
    (tmp_path / "pred" / "mask.nii.gz").write_bytes(b"done")
    assert_no_leftovers(tmp_path)
    planted = tmp_path / "pred" / ".mask.tmp-abc.nii.gz"
    planted.write_bytes(b"half")
    with pytest.raises(AssertionError, match=r"pred/\.mask\.tmp-abc\.nii\.gz"):
        assert_no_leftovers(tmp_path)
    planted.unlink()
    with atomic_path(tmp_path / "sub" / "m.nii.gz") as tmp:  # the writer's real temporary name
        tmp.write_bytes(b"x")
        with pytest.raises(AssertionError, match=r"sub/\.m\.tmp-[\w-]+\.nii\.gz"):
            assert_no_leftovers(tmp_path)
    with atomic_folder(tmp_path / "m.mha") as tmpdir:  # a hidden folder, for .mhd + .raw
        (tmpdir / "m.mha").write_bytes(b"x")
        with pytest.raises(AssertionError, match=r"\.m\.mha\.tmp-\w+"):
            assert_no_leftovers(tmp_path)
    assert_no_leftovers(tmp_path)  # both writers cleaned up after themselves
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["m.mha", "m.nii.gz", "mask.nii.gz", "pred", "sub"]
    with pytest.raises(AssertionError, match="not a folder"):
        assert_no_leftovers(tmp_path / "missing")
