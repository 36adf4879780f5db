"""Batch prediction: many inputs to masks (+ quality sidecar, + DICOM SEG, + overlays), each
case all-or-nothing.

The application layer over `lungseg.segment`: output naming, companions, worker processes.
Every mask gets `<mask stem>.qc.json` beside it: the `lungseg.quality` checks (and, for the
network, its agreement with the classical method); failed checks become `CaseResult.warnings`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from lungseg.core.errors import InputError, LungsegError
from lungseg.core.volume import Volume
from lungseg.io.formats import format_of, is_dicom_file, mask_name, strip_suffix
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


def predict_files(inputs: Sequence[str | Path], output: str | Path, model: str | Path | None = None,
                  method: str = "unet", device: str = "auto", png: bool = False,
                  overwrite: bool = False, series_uid: str | None = None,
                  settings: InferenceSettings | dict[str, Any] | None = None, progress: bool = True,
                  jobs: int = 1, qc: bool = True) -> list[CaseResult]:
    """Segment files; `output` is the mask path for one input, a folder for several.

    `jobs` > 1 runs that many worker processes, each loading the model once and using
    an equal share of the CPU threads (for large batches of scans on one machine).

    A bad input is reported in its CaseResult and the others still run; outputs are
    written atomically, never over an input, and existing ones only with `overwrite`.
    Every file a case writes (the mask; the `.qc.json` quality sidecar beside it; for DICOM
    input the `.seg.dcm`; with `png` the overlay) is checked before any work, and a case that
    fails leaves none of them.

    The quality checks (`lungseg.quality.check_mask`) always run; with `qc` (default) and
    method "unet", the classical method also segments each image (a few seconds) and a large
    disagreement becomes a warning. Failed checks are listed in `CaseResult.warnings`.
    """
    from lungseg.io.safety import check_output

    inputs = [Path(p) for p in inputs]
    single = len(inputs) == 1 and not (Path(output).is_dir() or str(output).endswith("/"))
    output = Path(output)
    targets = [output_path(output)] if single else [output / mask_name(p) for p in inputs]
    if not single and len({t.name for t in targets}) != len(targets):
        raise LungsegError("several inputs map to the same output name; use separate calls", output)
    for p in inputs:  # before loading a model: a typo should fail in a second
        if not p.exists():
            raise InputError("no such file or folder", p)
    for p, t in zip(inputs, targets, strict=True):  # every file a case writes, companions included
        check_output(t, inputs, overwrite)
        check_output(_qc_path(t), inputs, overwrite)
        if _is_dicom_input(p):
            check_output(_seg_path(t), inputs, overwrite)
        if png:
            check_output(_png_path(t), inputs, overwrite)
    # header checks before torch loads: a header bomb or a FIFO is refused in milliseconds
    refused: dict[int, CaseResult] = {}
    for i, p in enumerate(inputs):
        try:
            probe_volume(p)
        except LungsegError as exc:
            refused[i] = CaseResult(str(p), None, error=str(exc))
    pairs = [(p, t) for i, (p, t) in enumerate(zip(inputs, targets, strict=True)) if i not in refused]
    done: list[CaseResult] = []
    if pairs:
        from lungseg.inference.predictor import InferenceSettings, Predictor

        if isinstance(settings, dict):
            settings = InferenceSettings(**settings)
        if jobs > 1 and len(pairs) > 1:
            done = _run_parallel(pairs, jobs, model, method, device, settings, png, series_uid, progress, qc)
        else:
            predictor = Predictor(model, device=device, settings=settings) if method == "unet" else None
            done = [_run_case(path, target, method, predictor, png, series_uid, qc)
                    for path, target in tqdm(pairs, desc="predict", disable=not progress or len(pairs) < 2)]
    ran = iter(done)
    return [refused[i] if i in refused else next(ran) for i in range(len(inputs))]


def _run_case(path: Path, target: Path, method: str, predictor: Predictor | None, png: bool,
              series_uid: str | None, qc: bool = True) -> CaseResult:
    """One input to its mask (+ QC sidecar, + SEG, + overlay); a failed case removes what it wrote."""
    from lungseg.inference.segment import segment
    from lungseg.quantification import quantify

    written: list[Path | None] = []
    try:
        image = read_volume(path, series_uid=series_uid) if series_uid else read_volume(path)
        mask = segment(image, method=method, predictor=predictor)
        written.append(write_volume(mask, target))
        q = quantify(image, mask)
        res = CaseResult(str(path), str(target), q["right"]["volume_ml"], q["left"]["volume_ml"])
        report = _quality_report(image, mask, path, target, method, predictor, qc)
        written.append(_write_json(report, _qc_path(target)))
        res.warnings = list(report["warnings"])
        if png:
            from lungseg.report.figures import plot_overlay

            written.append(plot_overlay(image, mask, _png_path(target), title=path.name))
        if image.meta.get("format") == "dicom":
            written.append(_write_dicom_seg(image, mask, target))
    except LungsegError as exc:
        for f in written:  # a failed case leaves no output, not a mask without its SEG
            if f is not None:
                Path(f).unlink(missing_ok=True)
        res = CaseResult(str(path), None, error=str(exc))
    return res


_WORKER: dict = {}


def _init_worker(model, method, device, settings, threads, qc) -> None:
    import torch

    from lungseg.inference.predictor import Predictor

    torch.set_num_threads(threads)
    _WORKER["method"] = method
    _WORKER["qc"] = qc
    _WORKER["predictor"] = Predictor(model, device=device, settings=settings) if method == "unet" else None


def _worker_case(path: Path, target: Path, png: bool, series_uid: str | None) -> CaseResult:
    return _run_case(path, target, _WORKER["method"], _WORKER["predictor"], png, series_uid, _WORKER["qc"])


def _run_parallel(pairs, jobs, model, method, device, settings, png, series_uid, progress,
                  qc) -> list[CaseResult]:
    """Cases spread over `jobs` processes (spawned: safe with torch's thread pools)."""
    import multiprocessing as mp
    import os
    from concurrent.futures import ProcessPoolExecutor

    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                             initargs=(model, method, device, settings, threads, qc)) as pool:
        futures = [pool.submit(_worker_case, p, t, png, series_uid) for p, t in pairs]
        return [f.result() for f in tqdm(futures, desc="predict", disable=not progress)]


def _quality_report(image: Volume, mask: Volume, path: Path, target: Path, method: str,
                    predictor: Predictor | None, qc: bool) -> dict:
    """The `.qc.json` content: provenance + `lungseg.quality.check_mask` (network vs classical)."""
    from lungseg import __version__
    from lungseg.quality import check_mask

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
        if check["name"] == "method_agreement" and skip:
            check["message"] = f"skipped: {skip}"
    return {
        "input": str(path),
        "mask": str(target),
        "method": method,
        "model": str(predictor.model_path) if predictor is not None else None,
        "reference_method": "classical" if reference is not None else None,
        "reference_error": ref_error,
        "lungseg_version": __version__,
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


def _write_dicom_seg(image: Volume, mask: Volume, target: Path) -> Path:
    """For DICOM input, also write a DICOM SEG beside the mask (right and left lung segments)."""
    from lungseg.io.seg import write_dicom_seg

    return write_dicom_seg(mask, image, _seg_path(target))
