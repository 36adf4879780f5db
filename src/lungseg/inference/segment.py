"""`lungseg.segment`: one function from CT to lung mask, for a notebook or the CLI."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from lungseg.errors import InputError, LungsegError
from lungseg.inference.predictor import InferenceSettings, Predictor
from lungseg.io.volumes import Volume, read_volume, write_volume

log = logging.getLogger(__name__)

METHODS = ("unet", "classical")


def segment(image: Volume | str | Path, model: str | Path | None = None, method: str = "unet",
            device: str = "auto", predictor: Predictor | None = None) -> Volume:
    """Lung mask (0 background, 1 right lung, 2 left lung) on exactly the image's grid.

    Example::

        import lungseg
        image, truth = lungseg.make_phantom(seed=1, size=96)
        mask = lungseg.segment(image, method="classical")
        assert mask.shape == image.shape
    """
    if method not in METHODS:
        raise LungsegError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    from lungseg.io.checks import check_image

    volume = image if isinstance(image, Volume) else read_volume(image)
    check_image(volume, volume.meta.get("path"))
    if method == "classical":
        from lungseg.inference.classical import segment_classical

        return segment_classical(volume)
    predictor = predictor or Predictor(model, device=device)
    return predictor.predict(volume)


@dataclass
class CaseResult:
    input: str
    output: str | None
    right_ml: float | None = None
    left_ml: float | None = None
    error: str | None = None


def output_name(path: Path) -> str:
    """Mask file name for an input: scan.nii.gz -> scan.nii.gz; a DICOM folder -> folder.nii.gz."""
    name = path.name
    for ext in (".nii.gz", ".seg.nrrd", ".nii", ".nrrd", ".mha", ".mhd", ".dcm"):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    return f"{name}.nii.gz"


def predict_files(inputs: Sequence[str | Path], output: str | Path, model: str | Path | None = None,
                  method: str = "unet", device: str = "auto", png: bool = False,
                  overwrite: bool = False, series_uid: str | None = None,
                  settings: InferenceSettings | None = None, progress: bool = True) -> list[CaseResult]:
    """Segment files; `output` is the mask path for one input, a folder for several.

    A bad input is reported in its CaseResult and the others still run; outputs are
    written atomically, never over an input, and existing ones only with `overwrite`.
    """
    from lungseg.io.safety import check_output
    from lungseg.quantify import quantify

    inputs = [Path(p) for p in inputs]
    output = Path(output)
    single = len(inputs) == 1 and not (output.is_dir() or str(output).endswith("/"))
    targets = [output] if single else [output / output_name(p) for p in inputs]
    if not single and len({t.name for t in targets}) != len(targets):
        raise LungsegError("several inputs map to the same output name; use separate calls", output)
    for p in inputs:  # before loading a model: a typo should fail in a second
        if not p.exists():
            raise InputError("no such file or folder", p)
    for t in targets:
        check_output(t, inputs, overwrite)
    predictor = None
    if method == "unet":
        predictor = Predictor(model, device=device, settings=settings)
    results = []
    for path, target in tqdm(list(zip(inputs, targets, strict=True)), desc="predict",
                             disable=not progress or len(inputs) < 2):
        try:
            image = read_volume(path, series_uid=series_uid) if series_uid else read_volume(path)
            mask = segment(image, method=method, predictor=predictor)
            write_volume(mask, target)
            q = quantify(image, mask)
            res = CaseResult(str(path), str(target), q["right"]["volume_ml"], q["left"]["volume_ml"])
            if png:
                from lungseg.report.figures import plot_overlay

                plot_overlay(image, mask, _png_path(target), title=path.name)
            if image.meta.get("format") == "dicom" and hasattr(mask, "meta"):
                _maybe_dicom_seg(image, mask, target)
        except LungsegError as exc:
            res = CaseResult(str(path), None, error=str(exc))
        results.append(res)
    return results


def _png_path(mask_path: Path) -> Path:
    return mask_path.with_name(output_name(mask_path).removesuffix(".nii.gz") + ".png")


def _maybe_dicom_seg(image: Volume, mask: Volume, target: Path) -> None:
    """For DICOM input, also write a DICOM SEG beside the mask (right and left lung segments)."""
    try:
        from lungseg.io.seg import write_dicom_seg
    except ImportError:  # pragma: no cover - optional module
        return
    write_dicom_seg(mask, image, target.with_name(output_name(target).removesuffix(".nii.gz") + ".seg.dcm"))
