"""Batch prediction: many inputs to masks (+ quality sidecar, + DICOM SEG, + overlays), each
case all-or-nothing.

The application layer over `lungseg.segment`: output naming, companions, worker processes.
Every mask gets `<mask stem>.qc.json` beside it: the `lungseg.quality` checks (and, for the
network, its agreement with the classical method); failed checks become `CaseResult.warnings`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from lungseg.core.errors import InputError, LungsegError
from lungseg.core.volume import Volume
from lungseg.io.formats import format_of, is_dicom_file, is_volume_file, mask_name, strip_suffix
from lungseg.io.volumes import output_path, probe_volume, read_volume, write_volume

if TYPE_CHECKING:  # torch and MONAI load only once some input passed its header checks
    from lungseg.inference.predictor import InferenceSettings, Predictor


@dataclass
class CaseResult:
    input: str
    output: str | None
    right_ml: float | None = None
    left_ml: float | None = None
    error: str | None = None
    #: one line per failed quality check (`lungseg.quality`), also in the `.qc.json` sidecar
    warnings: list[str] = field(default_factory=list)
    #: with `report`: the cohort table's numbers (`lungseg.report.html.case_summary`)
    summary: dict | None = None
    #: the mask existed already (folder output without `overwrite`): nothing computed
    skipped: bool = False
    #: the error is a fault of lungseg (a bug, memory), not of the input
    internal: bool = False


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Files and folders as cases: a folder holding volume files (NIfTI, NRRD, MetaImage) is
    expanded to them (sorted) and to its subfolders holding DICOM files; so is a folder of
    enhanced multi-frame DICOM files that are each a series of their own (`_multiframe_cases`);
    any other folder is one DICOM input. Every rank of a sharded run computes the same list from
    the same arguments.
    """
    out: list[Path] = []
    for p in map(Path, inputs):
        if not p.is_dir():
            out.append(p)
            continue
        children = sorted(p.iterdir())
        volumes = [c for c in children if is_volume_file(c) and not c.name.lower().endswith(".seg.nrrd")]
        if not volumes:
            volumes = _multiframe_cases(children)
        if not volumes:
            out.append(p)  # a DICOM series folder (or an error for read_volume to explain)
            continue
        for c in children:
            if c in volumes or (c.is_dir() and not c.name.startswith(".") and _holds_dicom(c)):
                out.append(c)
    return out


def _multiframe_cases(children: list[Path]) -> list[Path]:
    """The files of a folder when at least two are DICOM and every one is an enhanced
    multi-frame image of a series of its own (one file, one CT, like a NIfTI file); else []. A
    series of single-frame slices, or one split over several multi-frame files, is one case."""
    import pydicom

    from lungseg.io.dicom import NOT_IMAGES, is_enhanced_image

    files, series = [], set()
    for f in (c for c in children if c.is_file() and is_dicom_file(c)):
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, force=True)
        except Exception:
            return []
        if str(ds.get("Modality", "") or "").upper() in NOT_IMAGES:  # a SEG beside its CTs
            continue
        uid = str(ds.get("SeriesInstanceUID", "") or "")
        if not is_enhanced_image(ds) or not uid or uid in series:
            return []
        series.add(uid)
        files.append(f)
    return files if len(files) >= 2 else []


def _holds_dicom(folder: Path) -> bool:
    return any(is_dicom_file(f) for f in sorted(folder.rglob("*"))[:50] if f.is_file())


def shard_of(items: Sequence, index: int, count: int) -> list:
    """Shard `index` of `count` (0-based), round robin: together the shards hold every item once.

    >>> [shard_of(range(7), i, 3) for i in range(3)]
    [[0, 3, 6], [1, 4], [2, 5]]
    """
    if not (count >= 1 and 0 <= index < count):
        raise ValueError(f"shard {index}/{count}: need 0 <= i < n")
    return list(items)[index::count]


def env_shard() -> tuple[int, int] | None:
    """(RANK, WORLD_SIZE) when launched by torchrun (or any launcher setting both), else None."""
    import os

    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    except (KeyError, ValueError):
        return None
    return (rank, world) if world > 1 and 0 <= rank < world else None


def predict_files(inputs: Sequence[str | Path], output: str | Path, model: str | Path | None = None,
                  method: str = "unet", device: str = "auto", png: bool = False,
                  overwrite: bool = False, series_uid: str | None = None,
                  settings: InferenceSettings | dict[str, Any] | None = None, progress: bool = True,
                  jobs: int = 1, qc: bool = True, shard: tuple[int, int] | None = None,
                  report: bool = False, mesh: str | None = None, seg: bool = True) -> list[CaseResult]:
    """Segment files; `output` is the mask path for one input, a folder for several.

    Folders of volume files are expanded (`expand_inputs`); `shard=(i, n)` keeps every n-th
    case from the i-th (0-based; several machines or torchrun ranks share one list).
    `jobs` > 1 runs that many worker processes, each loading the model once and using
    an equal share of the CPU threads; memory grows with `jobs` (one scan and one model per
    worker), so `jobs` is the bound on it.

    A case that fails (bad input, internal error, a companion that cannot be written) is
    reported in its CaseResult and the others still run; it leaves none of its files.
    Outputs are written atomically, never over an input. Into a folder, a case whose mask
    exists already is skipped (`CaseResult.skipped`) unless `overwrite`, so a killed batch
    resumes where it stopped; for one output file, an existing one is refused unless
    `overwrite`. Every file a case writes (the `.qc.json` quality sidecar; for DICOM input
    the `.seg.dcm` unless `seg` is False; with `png` the overlay; the mask last) is checked before any work, and
    the companions are in place before the mask appears (`io.safety.CaseFiles`).

    The quality checks (`lungseg.quality.check_mask`) always run; with `qc` (default) and
    method "unet", the classical method also segments each image (a few seconds) and a large
    disagreement becomes a warning. Failed checks are listed in `CaseResult.warnings`.

    `report` writes `<mask stem>.html` beside each mask (`lungseg.report`) and, when `output`
    is a folder, `index.html` + `cohort.csv` there; `mesh` (stl, ply or obj; for one input also
    a file name) writes each lung's surface (`<mask stem>_right.stl`, ...).
    """
    from lungseg.io.safety import check_output

    # read before `Path`, which drops a trailing slash: `-o out/` names a folder not made yet
    folder_out = str(output).endswith(("/", "\\")) or Path(output).is_dir() or shard is not None
    output = Path(output)
    inputs = expand_inputs(inputs)
    if shard is not None:
        inputs = shard_of(inputs, *shard)
    single = len(inputs) == 1 and not folder_out
    targets = [output_path(output)] if single else [output / mask_name(p) for p in inputs]
    if not single and not output.is_dir() and strip_suffix(output.name) != output.name:
        missing = [p for p in inputs if not p.exists()]
        if missing:  # `--png x.png` (a flag: x.png became an input): name the stray word, not the count
            raise InputError("no such file or folder (-o names one mask, so one input was expected)",
                             missing[0])
        raise LungsegError(f"{len(inputs)} inputs need a folder for -o (end it with /), not a mask file name",
                           output)
    if not single and len({t.name for t in targets}) != len(targets):
        raise LungsegError("several inputs map to the same output name; use separate calls", output)
    settled: dict[int, CaseResult] = {}  # missing inputs (failed) and existing masks (skipped)
    for i, (p, t) in enumerate(zip(inputs, targets, strict=True)):  # every file a case writes
        if not p.exists():  # before loading a model: a typo fails in a second (in a batch: that case)
            if single:
                raise InputError("no such file or folder", p)
            settled[i] = CaseResult(str(p), None, error=str(InputError("no such file or folder", p)))
            continue
        companions = [_qc_path(t)] + ([_seg_path(t)] if seg and _is_dicom_input(p) else []) + ([_png_path(t)] if png else [])
        if not single and not overwrite and t.exists():  # done by an earlier (killed) run
            check_output(t, inputs, overwrite=True)
            settled[i] = CaseResult(str(p), str(t), skipped=True)
            continue
        check_output(t, inputs, overwrite)
        for c in companions:  # in a folder, companions without their mask are an interrupted run's
            check_output(c, inputs, overwrite or not single)
    extras = _report_plan([t for i, t in enumerate(targets) if i not in settled], single, report, mesh,
                          inputs, overwrite, output)
    # header checks before torch loads: a header bomb or a FIFO is refused in milliseconds
    refused: dict[int, CaseResult] = dict(settled)
    for i, p in enumerate(inputs):
        if i in refused:
            continue
        try:
            probe_volume(p)
        except LungsegError as exc:
            refused[i] = CaseResult(str(p), None, error=str(exc))
    pairs = [(p, t) for i, (p, t) in enumerate(zip(inputs, targets, strict=True)) if i not in refused]
    done: list[CaseResult] = []
    if pairs:
        if method == "unet":  # torch and MONAI (~2 s to import) only for the network
            from lungseg.inference.predictor import InferenceSettings, Predictor

            if isinstance(settings, dict):
                settings = InferenceSettings(**settings)
        opts = {"png": png, "seg": seg, "series_uid": series_uid, "overwrite": overwrite, "folder": not single,
                "extras": extras}
        if jobs > 1 and len(pairs) > 1:
            if method == "unet" and model is not None:  # a bad checkpoint: one line here, not N workers failing
                from lungseg.networks import load_checkpoint

                load_checkpoint(model)
            done = _run_parallel(pairs, jobs, model, method, device, settings, progress, qc, opts)
        else:
            predictor = Predictor(model, device=device, settings=settings) if method == "unet" else None
            if predictor is not None:
                predictor.reference_ahead = qc  # the quality check's classical mask, in a thread
            done = [_run_case(path, target, method, predictor, qc, **opts)
                    for path, target in tqdm(pairs, desc="predict", unit="scan",
                                             disable=not progress or len(pairs) < 2)]
    ran = iter(done)
    results = [refused[i] if i in refused else next(ran) for i in range(len(inputs))]
    if report and not single:
        from lungseg.report.build import write_batch_cohort

        write_batch_cohort(results, output)
    return results


def _report_plan(targets, single, report, mesh, inputs, overwrite, output) -> dict | None:
    """Check the report/mesh outputs of every case (and the cohort page) before any work."""
    if not report and mesh is None:
        return None
    from lungseg.report.build import check_batch_outputs

    return check_batch_outputs(targets, single, report, mesh, inputs, overwrite, output)


def _run_case(path: Path, target: Path, method: str, predictor: Predictor | None, qc: bool = True,
              png: bool = False, series_uid: str | None = None, overwrite: bool = False,
              folder: bool = False, extras: dict | None = None, seg: bool = True) -> CaseResult:
    """One input to its mask (+ QC sidecar, + SEG, + overlay, + report/meshes), all or nothing.

    The companions are published first, the mask last (`CaseFiles`); any failure removes
    what the case wrote. In a batch (`folder`) an internal error is reported, not raised.
    """
    from concurrent.futures import ThreadPoolExecutor, wait

    from lungseg.io.safety import CaseFiles
    from lungseg.io.volumes import fortran_order, nifti_bytes
    from lungseg.quantification import quantify

    background = ThreadPoolExecutor(4, thread_name_prefix="lungseg-case")
    try:
        image = read_volume(path, series_uid=series_uid) if series_uid else read_volume(path)
        dicom_seg = seg and image.meta.get("format") == "dicom"
        if dicom_seg:  # highdicom's first SEG loads tables: beside other work
            from lungseg.io.seg import warm_up

            if predictor is not None:  # where a core is free: beside the post-processing
                predictor.beside_postprocessing = [warm_up]
            else:
                background.submit(warm_up)
        try:
            mask = _segment(image, method, predictor)
        finally:
            if predictor is not None:
                predictor.beside_postprocessing = []
        # beside the quality checks: quantify, the mask's file encoded (Fortran-order copy +
        # deflate, both free of the GIL) and, for DICOM input, the SEG built and written
        # one Fortran-ordered copy serves both: NIfTI's voxel order and the SEG's frames
        fortran = background.submit(lambda: mask.with_array(fortran_order(mask.array)))
        encoded = (background.submit(lambda: nifti_bytes(fortran.result(), target.name.lower().endswith(".gz")))
                   if format_of(target) == "nifti" else None)
        replaceable = [] if overwrite or not folder else [_qc_path(target), _seg_path(target), _png_path(target)]
        with CaseFiles(target, overwrite, replaceable) as case:
            seg_job = (background.submit(lambda: _write_dicom_seg(image, fortran.result(), case, target))
                       if dicom_seg else None)
            quantities = background.submit(quantify, image, mask)  # numpy that frees the GIL
            try:
                report = _quality_report(image, mask, path, target, method, predictor, qc)
                q = quantities.result()
                res = CaseResult(str(path), str(target), q["right"]["volume_ml"], q["left"]["volume_ml"])
                res.warnings = list(report["warnings"])
                seg_warning = seg_job.result() if seg_job is not None else None
            finally:  # whatever happened, the SEG's writer is done before the case cleans up
                if seg_job is not None:
                    wait([seg_job])
            if seg_warning:
                res.warnings.append(seg_warning)
                report["warnings"].append(seg_warning)
            if png:
                from lungseg.report.figures import plot_overlay

                plot_overlay(image, mask, case.stage(_png_path(target)), warnings=res.warnings,
                             title=f"{path.name}: right {res.right_ml:.0f} mL, left {res.left_ml:.0f} mL")
            _write_json(report, case.stage(_qc_path(target)))
            if extras is not None:  # --report / --mesh: written in place, removed with the case
                from lungseg.report.build import write_case_outputs

                files, res.summary = write_case_outputs(image, mask, extras[target], qc=report,
                                                        quantities=q, title=path.name,
                                                        image_path=path, mask_path=target)
                case.adopt(files)
            case.publish()
            write_volume(mask, target, overwrite=overwrite,
                         data=encoded.result() if encoded is not None else None)
            case.commit()
    except LungsegError as exc:
        res = CaseResult(str(path), None, error=str(exc))
    except Exception as exc:
        if not folder:
            raise  # one input: a bug shows its traceback (exit 1)
        res = CaseResult(str(path), None, error=f"{path}: internal error ({type(exc).__name__}: {exc})",
                         internal=True)
    finally:
        background.shutdown(wait=True, cancel_futures=True)
    return res


def _segment(image: Volume, method: str, predictor: Predictor | None) -> Volume:
    """`lungseg.segment`, without importing torch for the classical method."""
    if method == "classical":
        from lungseg.inference.classical import segment_classical
        from lungseg.io.checks import check_image

        check_image(image, image.meta.get("path"))
        return segment_classical(image)
    from lungseg.inference.segment import segment

    return segment(image, method=method, predictor=predictor)


_WORKER: dict = {}


def _on_sigterm(signum, frame) -> None:
    """The parent stops a worker: unwind the running case (its files removed), then exit."""
    import os

    if _WORKER.get("busy"):
        raise SystemExit(143)
    os._exit(143)


def _unraisable(info) -> None:
    """`sys.unraisablehook` of a worker: the stop (`_on_sigterm`'s SystemExit) that lands while
    the interpreter runs a finalizer or a weakref callback cannot unwind from there (Python
    prints "Exception ignored ... SystemExit: 143" and goes on): the signal is sent again, to be
    taken outside it, and nothing is printed. Anything else goes to Python's own hook."""
    import os
    import signal

    if isinstance(info.exc_value, SystemExit) and info.exc_value.code == 143:
        os.kill(os.getpid(), signal.SIGTERM)
        return
    sys.__unraisablehook__(info)


def _init_worker(model, method, device, settings, threads, qc) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    signal.signal(signal.SIGTERM, _on_sigterm)
    sys.unraisablehook = _unraisable
    _WORKER["method"] = method
    _WORKER["qc"] = qc
    _WORKER["predictor"] = None
    if method == "unet":
        import torch

        from lungseg.inference.predictor import Predictor

        torch.set_num_threads(threads)
        _WORKER["predictor"] = Predictor(model, device=device, settings=settings)
        _WORKER["predictor"].reference_ahead = qc


def _worker_case(path: Path, target: Path, opts: dict) -> CaseResult:
    import os

    _WORKER["busy"] = True
    try:
        return _run_case(path, target, _WORKER["method"], _WORKER["predictor"], _WORKER["qc"], **opts)
    except BaseException:  # stopped by the parent (SIGTERM): the case removed its files
        os._exit(143)
    finally:
        _WORKER["busy"] = False


def _run_parallel(pairs, jobs, model, method, device, settings, progress, qc, opts) -> list[CaseResult]:
    """Cases spread over `jobs` processes (spawned: safe with torch's thread pools).

    On Ctrl-C (or any error here) the queued cases are cancelled, the workers are stopped
    (SIGTERM; each removes the files of the case it was on; SIGKILL after 1 s, e.g. inside a long torch call)
    and lungseg's temporaries left in the output folders are removed, all within ~2 s.
    """
    import multiprocessing as mp
    import os
    import signal
    from concurrent.futures import ProcessPoolExecutor, as_completed

    threads = max(1, (os.cpu_count() or 1) // jobs)
    pool = ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                               initargs=(model, method, device, settings, threads, qc))
    results: list[CaseResult | None] = [None] * len(pairs)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # workers start with Ctrl-C ignored
    try:
        futures = {pool.submit(_worker_case, p, t, opts): i for i, (p, t) in enumerate(pairs)}
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        for f in tqdm(as_completed(futures), total=len(futures), desc="predict", unit="scan",
                      disable=not progress):
            i = futures[f]
            try:
                results[i] = f.result()
            except Exception as exc:  # the worker died (killed, out of memory): this case failed
                results[i] = CaseResult(str(pairs[i][0]), None, internal=True,
                                        error=f"{pairs[i][0]}: internal error (worker process failed: "
                                              f"{type(exc).__name__}: {exc})")
    except BaseException:
        _stop_pool(pool, {t.parent for _, t in pairs})
        raise
    pool.shutdown(wait=True)
    return results


def _stop_pool(pool, folders, grace_s: float = 1.0) -> None:
    """Cancel queued cases, stop the workers, remove their temporaries."""
    import time

    from lungseg.io.safety import remove_stale_temps

    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + grace_s
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(1.0)
    for folder in folders:
        remove_stale_temps(folder, force=True)


def _quality_report(image: Volume, mask: Volume, path: Path, target: Path, method: str,
                    predictor: Predictor | None, qc: bool) -> dict:
    """The `.qc.json` content: provenance + `lungseg.quality.check_mask` (network vs classical)."""
    from lungseg import __version__
    from lungseg.quality import REFERENCE_CHECKS, check_mask

    reference, skip, ref_error = None, None, None
    if method != "unet":
        skip = f"the mask is from the {method} method itself"
    elif not qc:
        skip = "comparison with the classical method turned off (--no-qc)"
    else:
        from lungseg.inference.classical import segment_classical

        try:  # the predictor reuses the steps its own airway search shares with the classical method
            reference = (predictor.classical_reference(image) if predictor is not None
                         else segment_classical(image))
        except Exception as exc:  # an optional second opinion must not fail the case
            skip = "the classical method failed on this image"
            ref_error = f"{type(exc).__name__}: {exc}"
    report = check_mask(image, mask, reference, names=("the network", "the classical method"))
    for check in report["checks"]:
        if check["name"] in REFERENCE_CHECKS and skip:
            check["message"] = f"skipped: {skip}"
    return {
        "input": str(path),
        "mask": str(target),
        "method": method,
        "model": str(predictor.model_path) if predictor is not None else None,
        "reference_method": "classical" if reference is not None else None,
        "reference_error": ref_error,
        "lungseg_version": __version__,
        # a noisy scan was smoothed before segmenting (`core.noise.quieter`): by how much
        "noise_sd_hu": mask.meta.get("noise_sd_hu"),
        "smoothing_mm": mask.meta.get("smoothing_mm", 0.0),
        **report,
    }


def _write_json(data: dict, path: Path) -> Path:
    from lungseg.io.safety import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
    return path


def _qc_path(mask_path: Path) -> Path:
    return mask_path.with_name(strip_suffix(mask_path.name) + ".qc.json")


def _png_path(mask_path: Path) -> Path:
    return mask_path.with_name(strip_suffix(mask_path.name) + ".png")


def _seg_path(mask_path: Path) -> Path:
    return mask_path.with_name(strip_suffix(mask_path.name) + ".seg.dcm")


def _is_dicom_input(path: Path) -> bool:
    """True where `read_volume` reads `path` as DICOM (so a DICOM SEG is written too)."""
    fmt = format_of(path)
    return fmt == "dicom" or (fmt is None and is_dicom_file(path))


def _write_dicom_seg(image: Volume, mask: Volume, case, target: Path) -> str | None:
    """For DICOM input, also stage a DICOM SEG beside the mask (right and left lung segments).

    A series the SEG cannot be made from correctly (`SegUnavailable`) gets none, and a warning.
    """
    from lungseg.io.seg import SegUnavailable, write_dicom_seg

    final = _seg_path(target)
    try:
        write_dicom_seg(mask, image, case.stage(final))
    except SegUnavailable as exc:
        case.drop(final)
        return f"no DICOM SEG written: {exc.reason}"
    return None
