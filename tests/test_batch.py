"""Batches (issue 8) and interrupts/concurrency (issue 11): a failed case leaves none of its
files and never stops the batch; existing masks are skipped (resume); `--shard` splits the
list; Ctrl-C stops a `--jobs` run at once; companions appear before their mask; two runs
racing for one output never replace each other; a killed run's temporaries are cleaned."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import assert_no_leftovers
from dicom_factory import write_series_sitk

from lungseg.batch import expand_inputs, shard_of
from lungseg.cli import main

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(scope="module")
def small_cts(tmp_path_factory) -> list[Path]:
    """Four 32-voxel phantoms (the classical method segments one in well under a second)."""
    from lungseg.phantoms import synth

    root = synth(4, tmp_path_factory.mktemp("small"), seed=7, size=32, progress=False)
    return sorted((root / "imagesTr").iterdir())


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _run(capfd, *argv) -> tuple[int, str, str]:
    capfd.readouterr()
    code = main([str(a) for a in argv])
    out, err = capfd.readouterr()
    return code, out, err


def test_batch_isolates_failures_writes_seg_and_resumes(small_cts, tmp_path, capfd):
    from lungseg.io.volumes import read_volume

    inputs = tmp_path / "in"
    inputs.mkdir()
    for p in small_cts[:3]:
        shutil.copy(p, inputs / p.name)
    corrupt = inputs / "corrupt.nii.gz"
    corrupt.write_bytes(small_cts[3].read_bytes()[:400])
    ct = read_volume(small_cts[3])
    write_series_sitk(tmp_path / "dicom" / "sitk", ct.array, ct.affine)  # no SliceThickness
    out = tmp_path / "out"
    code, stdout, err = _run(capfd, "predict", inputs, tmp_path / "dicom" / "sitk", "-o", f"{out}/",
                             "--method", "classical")
    assert code == 1, err
    masks = sorted(n for n in _files(out) if n.endswith(".nii.gz"))
    assert masks == sorted([p.name for p in small_cts[:3]] + ["sitk.nii.gz"])
    assert "summary: 4 done, 1 failed, 0 skipped" in stdout
    err_lines = err.strip().splitlines()
    assert any("corrupt.nii.gz" in ln and ln.startswith("lungseg: error: ") for ln in err_lines), err
    assert err_lines[-1] == f"lungseg: 1 failed: {corrupt}", err
    assert "Traceback" not in err
    assert not any(n.startswith("corrupt") for n in _files(out))  # the failed case left nothing
    for m in masks:  # every mask has its companions
        assert (out / m.replace(".nii.gz", ".qc.json")).is_file()
    import highdicom as hd

    seg = hd.seg.segread(out / "sitk.seg.dcm")
    assert seg.number_of_frames == 2 * ct.shape[2]
    assert_no_leftovers(out)

    # resume: a deleted mask is recomputed, the others are skipped (not rewritten)
    (out / masks[0]).unlink()
    stamps = {n: (out / n).stat().st_mtime_ns for n in masks[1:]}
    code, stdout, err = _run(capfd, "predict", inputs, tmp_path / "dicom" / "sitk", "-o", f"{out}/",
                             "--method", "classical")
    assert code == 1 and "summary: 1 done, 1 failed, 3 skipped" in stdout, stdout + err
    assert (out / masks[0]).is_file()
    assert {n: (out / n).stat().st_mtime_ns for n in masks[1:]} == stamps


def test_no_seg_writes_the_mask_of_a_dicom_series_without_its_seg(small_cts, tmp_path, capfd):
    from lungseg.io.volumes import read_volume

    ct = read_volume(small_cts[0])
    write_series_sitk(tmp_path / "dcm", ct.array, ct.affine)
    for flag, expected in (("--no-seg", ["a.nii.gz", "a.qc.json"]),
                           ("--seg", ["b.nii.gz", "b.qc.json", "b.seg.dcm"])):
        name = expected[0]
        code, _, err = _run(capfd, "predict", tmp_path / "dcm", "-o", tmp_path / "out" / name,
                            "--method", "classical", flag)
        assert code == 0, err
        assert [n for n in _files(tmp_path / "out") if n.startswith(name[0])] == expected
    assert read_volume(tmp_path / "out" / "a.nii.gz").array.tolist() == \
        read_volume(tmp_path / "out" / "b.nii.gz").array.tolist()


def test_seg_unavailable_is_a_warning_and_the_mask_is_written(small_cts, tmp_path, capfd):
    import pydicom

    from lungseg.io.volumes import read_volume

    ct = read_volume(small_cts[0])
    files = write_series_sitk(tmp_path / "anon", ct.array, ct.affine)
    for i, f in enumerate(files):  # an anonymiser that gave every file its own study
        ds = pydicom.dcmread(f)
        ds.StudyInstanceUID = f"1.2.3.{i + 1}"
        ds.save_as(f)
    code, _, err = _run(capfd, "predict", tmp_path / "anon", "-o", tmp_path / "out" / "m.nii.gz",
                        "--method", "classical")
    assert code == 0, err
    assert _files(tmp_path / "out") == ["m.nii.gz", "m.qc.json"]
    warn = [ln for ln in err.splitlines() if "DICOM SEG" in ln]
    assert len(warn) == 1 and "StudyInstanceUID" in warn[0], err


def test_a_seg_that_cannot_be_written_fails_the_case_leaving_nothing(small_cts, tmp_path, capfd, monkeypatch):
    import lungseg.io.seg as seg
    from lungseg.io.volumes import read_volume

    ct = read_volume(small_cts[0])
    write_series_sitk(tmp_path / "dcm", ct.array, ct.affine)

    def broken(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(seg, "write_dicom_seg", broken)
    code, stdout, err = _run(capfd, "predict", tmp_path / "dcm", small_cts[1], "-o", f"{tmp_path / 'out'}/",
                             "--method", "classical", "--png")
    assert code == 1, err
    assert "internal error" in err and "No space left" in err
    assert _files(tmp_path / "out") == sorted(small_cts[1].name.replace(".nii.gz", s)
                                              for s in (".nii.gz", ".png", ".qc.json"))


@pytest.mark.parametrize("where", ["mask", "png"])
def test_interrupt_while_writing_removes_every_file_of_the_case(small_cts, tmp_path, monkeypatch, where):
    import lungseg.batch as batch
    import lungseg.report.figures as figures

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(*((batch, "write_volume", interrupted) if where == "mask" else
                          (figures, "plot_overlay", interrupted)))
    with pytest.raises(KeyboardInterrupt):
        batch.predict_files([small_cts[0]], tmp_path / "out" / "m.nii.gz", method="classical", png=True,
                            progress=False)
    assert _files(tmp_path / "out") == []


def test_shard_splits_with_no_overlap_and_no_gap(small_cts, tmp_path, capfd, monkeypatch):
    items = list(range(11))
    for n in (1, 2, 3, 5, 11, 13):
        shards = [shard_of(items, i, n) for i in range(n)]
        assert sorted(sum(shards, [])) == items
    with pytest.raises(ValueError):
        shard_of(items, 3, 3)
    # folders expand to the same sorted list on every machine
    assert expand_inputs([small_cts[0].parent]) == small_cts
    # the CLI: two shards write disjoint masks covering all inputs; a torchrun rank does the same
    out = tmp_path / "out"
    seen = []
    for i in range(2):
        code, stdout, _ = _run(capfd, "predict", small_cts[0].parent, "-o", out, "--method", "classical",
                               "--shard", f"{i}/2", "--no-qc")
        assert code == 0 and f"(shard {i}/2)" in stdout
        seen.append({n for n in _files(out) if n.endswith(".nii.gz")} - set().union(*seen) if seen else
                    {n for n in _files(out) if n.endswith(".nii.gz")})
    assert seen[0].isdisjoint(seen[1]) and seen[0] | seen[1] == {p.name for p in small_cts}
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    code, stdout, _ = _run(capfd, "predict", small_cts[0].parent, "-o", tmp_path / "r", "--method", "classical")
    assert code == 0 and "(shard 1/4)" in stdout
    assert _files(tmp_path / "r") == sorted([small_cts[1].name, small_cts[1].name.replace(".nii.gz", ".qc.json")])
    for bad in ("2/2", "x", "1/0", "-1/2"):
        code, _, err = _run(capfd, "predict", small_cts[0], "-o", tmp_path / "z", "--shard", bad)
        assert code == 2 and "'--shard'" in err and len(err.strip().splitlines()) == 1


def test_stale_temporaries_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    from lungseg.io.safety import STALE_AFTER_S, _host, atomic_path

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        old = time.time() - STALE_AFTER_S - 60
        host = _host()
        other = "000000" if host != "000000" else "111111"
        stale = [tmp_path / f".m.tmp-{dead.pid}-{host}-abcd1234.nii.gz", tmp_path / ".x.tmp-k2j4_9zz.nii.gz",
                 tmp_path / f".y.tmp-{dead.pid}-{host}-zzzzzzzz"]
        keep = [tmp_path / f".m.tmp-{live.pid}-{host}-abcd1234.nii.gz", tmp_path / ".fresh.tmp-abcdefgh.json",
                tmp_path / f".n.tmp-{dead.pid}-{other}-abcd1234.nii.gz",  # another host's writer
                tmp_path / ".hidden", tmp_path / "notes.tmp-12345678.txt"]
        for p in stale[:2] + keep:
            p.write_bytes(b"")
        stale[2].mkdir()
        os.utime(stale[1], (old, old))
        with atomic_path(tmp_path / "out.json") as tmp:
            tmp.write_text("{}")
        assert _files(tmp_path) == sorted([p.name for p in keep] + ["out.json"])
    finally:
        live.kill()
        live.wait()


def test_no_clobber_at_the_final_rename(tmp_path):
    from lungseg.core.errors import OutputError
    from lungseg.io.safety import CaseFiles, atomic_path

    target = tmp_path / "m.json"
    with pytest.raises(OutputError, match="output exists"):
        with atomic_path(target, overwrite=False) as tmp:
            tmp.write_text("mine")
            target.write_text("theirs")  # another run got there while this one wrote
    assert target.read_text() == "theirs" and _files(tmp_path) == ["m.json"]
    # a case: the race is lost on the first companion; nothing of the loser remains
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "a.qc.json").write_text("theirs")
    with pytest.raises(OutputError):
        with CaseFiles(tmp_path / "c" / "a.nii.gz") as case:
            case.stage(tmp_path / "c" / "a.png").write_text("mine")
            case.stage(tmp_path / "c" / "a.qc.json").write_text("mine")
            case.publish()
    assert _files(tmp_path / "c") == ["a.qc.json"] and (tmp_path / "c" / "a.qc.json").read_text() == "theirs"


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": SRC, "LUNGSEG_TEST_THREADS": "1", "OMP_NUM_THREADS": "1"}


def test_two_runs_racing_for_one_output_one_wins(small_cts, tmp_path):
    out = tmp_path / "out" / "m.nii.gz"
    cmd = [sys.executable, "-m", "lungseg", "predict", str(small_cts[0]), "-o", str(out), "--method", "classical"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
             for _ in range(2)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes == [0, 2], results
    loser = next(err for rc, err in results if rc == 2)
    assert len(loser.strip().splitlines()) == 1 and "exists" in loser and "Traceback" not in loser
    assert _files(out.parent) == ["m.nii.gz", "m.qc.json"]


def _ctrl_c_default() -> None:
    """In the child before exec: Ctrl-C as in a terminal. A test runner started in the
    background of a non-interactive shell (as CI may be) inherits SIGINT ignored, and Python
    keeps an inherited SIG_IGN, so the signal would never reach lungseg."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_a_parallel_batch_at_once(small_cts, tmp_path):
    """14 inputs, --jobs 2: SIGINT once the first mask is written -> exit 130 within 3 s, and
    no mask appears afterwards, every mask has its companions, no temporary is left."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(14):
        shutil.copy(small_cts[i % len(small_cts)], inputs / f"case_{i:02d}.nii.gz")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "lungseg", "predict", str(inputs), "-o", f"{out}/",
                             "--jobs", "2", "--method", "classical", "--png"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
                            preexec_fn=_ctrl_c_default)
    deadline = time.monotonic() + 120
    while not any(n.endswith(".nii.gz") and not n.startswith(".") for n in _files(out)):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    took = time.monotonic() - t0
    assert proc.returncode == 130, err
    assert took < 3.0, took
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "lungseg: interrupted", err
    after = _files(out)
    time.sleep(1.0)
    assert _files(out) == after  # nothing appears after the exit
    masks = [n for n in after if n.endswith(".nii.gz")]
    assert 1 <= len(masks) < 14, after
    for m in masks:
        stem = m[: -len(".nii.gz")]
        assert {f"{stem}.png", f"{stem}.qc.json"} <= set(after)
    assert len(after) == 3 * len(masks), after  # no companion without its mask
    assert_no_leftovers(out)
    json.loads((out / masks[0].replace(".nii.gz", ".qc.json")).read_text())


def test_device_cuda_uses_the_gpu(small_cts, tmp_path, capfd):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here (the refusal is a row of test_bad_inputs)")
    torch.cuda.reset_peak_memory_stats()
    code, _, err = _run(capfd, "predict", small_cts[0], "-o", tmp_path / "m.nii.gz", "--device", "cuda", "--no-qc")
    assert code == 0, err
    assert torch.cuda.max_memory_allocated() > 0


def test_several_inputs_into_one_mask_name_are_refused_naming_a_stray_word(small_cts, tmp_path, capfd):
    """`predict CT -o m.nii.gz --png m.png` (the flag takes no value, so m.png is a second input):
    the error names m.png, not the count of inputs; two real inputs into one mask name get the
    folder hint. Both exit 2 with one line and write nothing."""
    mask = tmp_path / "m.nii.gz"
    code, _, err = _run(capfd, "predict", small_cts[0], "-o", mask, "--png", tmp_path / "m.png")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "m.png: no such file or folder" in err and "one input was expected" in err, err
    code, _, err = _run(capfd, "predict", *small_cts[:2], "-o", mask, "--method", "classical")
    assert code == 2 and "2 inputs need a folder for -o" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [], list(tmp_path.iterdir())


def test_a_missing_input_is_one_failed_case_and_a_bad_model_stops_jobs_at_once(small_cts, tmp_path, capfd):
    out = tmp_path / "out"
    code, stdout, err = _run(capfd, "predict", small_cts[0], tmp_path / "typo.nii.gz", "-o", out,
                             "--method", "classical", "--no-qc")
    assert code == 1 and "summary: 1 done, 1 failed, 0 skipped" in stdout, stdout + err
    assert "typo.nii.gz: no such file or folder" in err
    bad = tmp_path / "bad.pt"
    bad.write_text("not torch")
    code, _, err = _run(capfd, "predict", *small_cts[:2], "-o", tmp_path / "o2", "--jobs", "2", "--model", bad)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "bad.pt" in err, err
    assert not (tmp_path / "o2").exists()


def test_one_input_into_a_new_folder_ending_in_a_slash(small_cts, tmp_path, capfd):
    """`-o out/` names a folder even for one input and even before it exists: the mask goes into
    it (it went to `out.nii.gz` beside it, as if `-o out` had named a file)."""
    out = str(tmp_path / "new") + "/"
    code, stdout, err = _run(capfd, "predict", small_cts[0], "-o", out, "--method", "classical")
    assert code == 0, err
    name = small_cts[0].name
    assert (tmp_path / "new" / name).is_file() and (tmp_path / "new" / name.replace(".nii.gz", ".qc.json")).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new"]
    assert "summary: 1 done" in stdout


def test_a_folder_of_multiframe_files_is_a_batch_but_a_split_series_is_one_case(tmp_path):
    """Enhanced multi-frame files that are each a series of their own are cases, as NIfTI files
    in a folder are; one series split over several such files, or single-frame slices, is one."""
    import numpy as np
    from dicom_factory import write_multiframe, write_multiframe_split, write_series

    aff = np.diag([2.0, 2.0, 3.0, 1.0])
    hu = np.random.default_rng(0).integers(-1000, 500, size=(12, 10, 6)).astype(np.int16)
    own = tmp_path / "own"
    write_multiframe(own / "a.dcm", hu, aff)
    write_multiframe(own / "b.dcm", hu, aff)
    write_multiframe_split(tmp_path / "split", hu, aff, 2)
    write_series(tmp_path / "slices", hu, aff)
    assert expand_inputs([own]) == [own / "a.dcm", own / "b.dcm"]
    from lungseg.io import read_volume
    from lungseg.io.seg import write_dicom_seg

    ct = read_volume(own / "a.dcm")
    write_dicom_seg(ct.with_array(np.zeros(ct.shape, np.uint8)), ct, own / "a.seg.dcm")  # no case
    assert expand_inputs([own]) == [own / "a.dcm", own / "b.dcm"]
    assert expand_inputs([tmp_path / "split"]) == [tmp_path / "split"]
    assert expand_inputs([tmp_path / "slices"]) == [tmp_path / "slices"]


def test_a_stop_inside_a_finalizer_is_sent_again_not_printed(monkeypatch, capsys):
    """A worker's stop (SystemExit 143 from its SIGTERM handler) that lands inside a weakref
    callback cannot unwind there, and Python printed it as an ignored exception with a traceback
    (seen once in CI on `test_ctrl_c_stops_a_parallel_batch_at_once`): the worker's unraisable
    hook sends the signal again, to be taken outside it, and prints nothing; anything else still
    reaches Python's own hook."""
    import os
    import signal
    from types import SimpleNamespace

    from lungseg import batch

    sent, passed = [], []
    monkeypatch.setattr(os, "kill", lambda pid, sig: sent.append((pid, sig)))
    monkeypatch.setattr(sys, "__unraisablehook__", passed.append)
    batch._unraisable(SimpleNamespace(exc_value=SystemExit(143), exc_type=SystemExit))
    assert sent == [(os.getpid(), signal.SIGTERM)] and not passed
    other = SimpleNamespace(exc_value=ValueError("x"), exc_type=ValueError)
    batch._unraisable(other)
    assert sent == [(os.getpid(), signal.SIGTERM)] and passed == [other]
    assert capsys.readouterr().err == ""
