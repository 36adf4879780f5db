"""Thin command line over the Python API.

Exit codes: 0 done, 2 bad input or usage (one line on stderr), 1 internal error.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer

from lungseg.core.errors import LungsegError

DEVICES = ("auto", "cpu", "cuda")
METHODS = ("unet", "classical")
BACKENDS = ("torch", "onnxruntime")


def _check_device(value: str | None) -> str | None:
    """auto, cpu, or cuda where CUDA exists (checked here, so a run does not fail later)."""
    if value is None:
        return value
    if value not in DEVICES:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(DEVICES)}")
    if value == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise typer.BadParameter("cuda: no CUDA device on this machine (use auto or cpu)")
    return value


def _check_method(value: str) -> str:
    if value not in METHODS:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(METHODS)}")
    return value


def _check_backend(value: str) -> str:
    if value not in BACKENDS:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(BACKENDS)}")
    return value


def _check_overlap(value: float) -> float:
    if not 0.0 <= value < 1.0:
        raise typer.BadParameter(f"{value:g} is outside [0, 1) (a fraction of the window; 1 would never advance)")
    return value


def _check_positive(value: float | None) -> float | None:
    if value is not None and not value > 0:
        raise typer.BadParameter(f"{value:g} must be above 0")
    return value


def _check_shard(value: str | None) -> tuple[int, int] | None:
    """'i/n', 0-based: this run takes cases i, i+n, i+2n, ... of the (expanded) input list."""
    if value is None:
        return None
    try:
        i, n = (int(x) for x in value.split("/"))
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not i/n (e.g. 0/4: the first of four shards)") from None
    if not (n >= 1 and 0 <= i < n):
        raise typer.BadParameter(f"{value}: need 0 <= i < n (shards are numbered from 0)")
    return i, n


def _check_path_text(value: str | None) -> str | None:
    """'' would silently mean the working folder."""
    if value is not None and not value.strip():
        raise typer.BadParameter("must not be empty")
    return value


MESH_HELP = ("also write each lung's surface mesh (patient mm): a format, stl, ply or obj, writes "
             "CASE_right.stl and CASE_left.stl beside each output; a file name such as lungs.stl (one "
             "case) writes lungs_right.stl and lungs_left.stl")

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="3D lung segmentation on CT: synth, train, predict, evaluate, quantify.")


@app.command()
def synth(
    out: Annotated[str, typer.Option("--out", "-o", callback=_check_path_text, help="output folder (MSD layout)")],
    n: Annotated[int, typer.Option("--n", min=1, help="number of phantoms")] = 10,
    seed: Annotated[int, typer.Option(help="first seed; case i uses seed+i")] = 0,
    size: Annotated[int | None, typer.Option(min=32, max=1024, help="in-plane voxels, 32-1024, for small test volumes (default: realistic 512 grid)")] = None,
    orientation: Annotated[str, typer.Option(help="stored axis codes, e.g. RAS or LPS")] = "RAS",
    variations: Annotated[bool, typer.Option(help="randomise habitus, contrast, pathology, scanner")] = False,
    overwrite: Annotated[bool, typer.Option(help="replace existing phantoms and dataset.json")] = False,
) -> None:
    """Write synthetic chest-CT phantoms with right/left lung labels."""
    from lungseg.phantoms import synth as run

    path = run(n, out, seed=seed, size=size, orientation=orientation, variations=variations,
               overwrite=overwrite, progress=sys.stderr.isatty())
    typer.echo(f"wrote {n} phantoms to {path}")


@app.command()
def train(
    data: Annotated[Path | None, typer.Option(help="dataset folder, dataset.json or CSV")] = None,
    out: Annotated[str | None, typer.Option("--out", "-o", callback=_check_path_text, help="run folder (default runs/train)")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML config (CLI options override it)")] = None,
    recipe: Annotated[str | None, typer.Option(help="tutorial (default values), cpu-fast, default-model")] = None,
    layout: Annotated[str | None, typer.Option(help="auto, pairs, msd, nnunet, csv, folders")] = None,
    label_mapping: Annotated[str | None, typer.Option(help="e.g. lobes5")] = None,
    val_data: Annotated[Path | None, typer.Option(help="separate validation dataset")] = None,
    max_epochs: Annotated[int | None, typer.Option(min=1, help="epochs (default 500)")] = None,
    max_minutes: Annotated[float | None, typer.Option(callback=_check_positive, help="stop after this many minutes")] = None,
    val_every: Annotated[int | None, typer.Option(min=1, help="validate every k epochs")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1)] = None,
    lr: Annotated[float | None, typer.Option(callback=_check_positive)] = None,
    device: Annotated[str | None, typer.Option(callback=_check_device, help="auto, cpu, cuda")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    resume: Annotated[bool, typer.Option(help="continue from OUT/last.pt")] = False,
) -> None:
    """Train the patch-based 3D U-Net (reference recipe by default)."""
    from lungseg.training.config import TrainConfig
    from lungseg.training.loop import train as run

    overrides = {"data": str(data) if data else None, "out": out,
                 "recipe": recipe, "layout": layout,
                 "label_mapping": label_mapping, "val_data": str(val_data) if val_data else None,
                 "max_epochs": max_epochs, "max_minutes": max_minutes, "val_every": val_every,
                 "batch_size": batch_size, "lr": lr, "device": device, "seed": seed,
                 "resume": resume or None, "progress": sys.stderr.isatty()}
    if config is not None:
        cfg = TrainConfig.from_yaml(config, **overrides)
    else:
        if data is None:
            raise LungsegError("train needs --data DIR or --config FILE")
        cfg = TrainConfig.validated({k: v for k, v in overrides.items() if v is not None})
    summary = run(cfg)
    typer.echo(json.dumps(summary))


@app.command()
def predict(
    inputs: Annotated[list[Path], typer.Argument(help="CT files, DICOM folders, or folders of CT files")],
    out: Annotated[str, typer.Option("--out", "-o", callback=_check_path_text, help="mask file (one input) or folder (several, or ending in /)")],
    model: Annotated[Path | None, typer.Option(help="checkpoint (default: the shipped model)")] = None,
    method: Annotated[str, typer.Option(callback=_check_method, help="unet or classical")] = "unet",
    device: Annotated[str, typer.Option(callback=_check_device, help="auto, cpu, cuda (a CUDA GPU; refused where none exists)")] = "auto",
    png: Annotated[bool, typer.Option("--png", help="also write an overlay figure")] = False,
    seg: Annotated[bool, typer.Option("--seg/--no-seg", help="for DICOM input, also write MASK.seg.dcm "
                                      "(a DICOM SEG referencing the series; ~1 s a scan)")] = True,
    overwrite: Annotated[bool, typer.Option(help="replace existing outputs (into a folder, existing masks are otherwise skipped, so a killed batch resumes)")] = False,
    series: Annotated[str | None, typer.Option(help="SeriesInstanceUID when a folder holds several")] = None,
    overlap: Annotated[float, typer.Option(callback=_check_overlap, help="sliding-window overlap, 0 to below 1")] = 0.25,
    roi: Annotated[int | None, typer.Option(min=16, max=1024, help="sliding-window size (voxels, cubic), 16-1024; "
                                            "default: the whole chest as one window when it fits, else 160")] = None,
    jobs: Annotated[int, typer.Option(min=1, help="worker processes for many inputs; each holds one scan and one model, so memory grows with N (the CPU threads are shared out)")] = 1,
    shard: Annotated[str | None, typer.Option(callback=_check_shard, help="i/n: this run takes every n-th case from the i-th (0-based), for n machines; under torchrun, RANK/WORLD_SIZE are used when not given")] = None,
    qc: Annotated[bool, typer.Option("--qc/--no-qc", help="also run the classical method and warn when "
                                     "it disagrees with the network (costs a few seconds per scan; "
                                     "the other quality checks always run)")] = True,
    report: Annotated[bool, typer.Option("--report", help="also write MASK.html (volumes, density, "
                                         "warnings, pictures); for a folder also index.html + cohort.csv")] = False,
    mesh: Annotated[str | None, typer.Option(help=MESH_HELP)] = None,
    backend: Annotated[str, typer.Option(callback=_check_backend, help="torch, or onnxruntime (ONNX Runtime; "
                                         "chosen by itself for an .onnx --model; CUDA where its provider exists)")] = "torch",
) -> None:
    """Segment the lungs: mask on the input's grid, right=1, left=2.

    Quality checks (one lung missing, implausible volume, lung cut by the field of view, network vs classical disagreement) go to MASK.qc.json beside each mask; each failed check prints "lungseg: warning: INPUT: what" on stderr (exit code still 0).

    Into a folder (several inputs): a case that fails leaves none of its files and the others go on; a summary (done, failed, skipped) ends the run; exit 1 when any case failed.
    """
    from lungseg.batch import env_shard, predict_files

    shard = shard or env_shard()
    settings = {"overlap": overlap, "backend": backend}  # built once torch is needed
    if roi is not None:  # a window the user asks for slides, even over a chest that would fit one
        settings.update(roi_size=(roi, roi, roi), whole_volume_voxels=0)
    results = predict_files(inputs, out, model=model, method=method, device=device, png=png,
                            overwrite=overwrite, series_uid=series, settings=settings,
                            progress=sys.stderr.isatty(), jobs=jobs, qc=qc, shard=shard,
                            report=report, mesh=mesh, seg=seg)
    failed = [r for r in results if r.error]
    for r in results:
        if r.error:
            typer.echo(f"lungseg: error: {_one_line(r.error)}", err=True)
        elif r.skipped:
            typer.echo(f"{r.input}: skipped, {r.output} exists (--overwrite to redo it)")
        else:
            typer.echo(f"{r.input}: right {r.right_ml:.0f} mL, left {r.left_ml:.0f} mL -> {r.output}")
            for w in r.warnings:
                typer.echo(f"lungseg: warning: {r.input}: {_one_line(w)}", err=True)
    batch = len(results) > 1 or shard is not None or Path(out).is_dir() or out.endswith("/")
    if batch:
        n_skip = sum(r.skipped for r in results)
        summary = f"{len(results) - len(failed) - n_skip} done, {len(failed)} failed, {n_skip} skipped"
        if shard:
            summary += f" (shard {shard[0]}/{shard[1]})"
        typer.echo(f"summary: {summary}")
        if failed:
            typer.echo(f"lungseg: {len(failed)} failed: " + ", ".join(r.input for r in failed), err=True)
            raise typer.Exit(1)
    elif failed:
        raise typer.Exit(1 if failed[0].internal else 2)


@app.command()
def report(
    paths: Annotated[list[Path], typer.Argument(help="IMAGE MASK, several IMAGE MASK pairs, or IMAGE_FOLDER MASK_FOLDER")],
    out: Annotated[str, typer.Option("--out", "-o", callback=_check_path_text, help="case.html for one case; a folder for several (one page each + index.html + cohort.csv)")],
    mesh: Annotated[str | None, typer.Option(help=MESH_HELP)] = None,
    overwrite: Annotated[bool, typer.Option(help="replace existing outputs")] = False,
) -> None:
    """Self-contained HTML report of lung masks: volumes, density, warnings, overlays, 3D view."""
    from lungseg.report.build import report_files

    rows = report_files(paths, out, mesh=mesh, overwrite=overwrite, progress=sys.stderr.isatty())
    for r in rows:
        if r["error"]:
            typer.echo(f"lungseg: error: {_one_line(r['error'])}", err=True)
            continue
        laa = "n/a" if r["laa950_percent"] is None else f"{r['laa950_percent']:.1f}%"
        typer.echo(f"{r['case']}: right {r['right_ml']:.0f} mL, left {r['left_ml']:.0f} mL, "
                   f"%LAA-950 {laa}, {r['n_warnings']} warning(s)")
        for w in r["warnings"]:
            typer.echo(f"lungseg: warning: {r['case']}: {w}", err=True)
    typer.echo(f"wrote {out}")
    if any(r["error"] for r in rows):
        raise typer.Exit(2)


@app.command()
def export(
    onnx: Annotated[str, typer.Option("--onnx", callback=_check_path_text, help="ONNX file to write")],
    model: Annotated[Path | None, typer.Option(help="checkpoint (default: the shipped model)")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing file")] = False,
) -> None:
    """Write the network as ONNX (settings included) for `predict --backend onnxruntime --model FILE.onnx`."""
    from lungseg.io.safety import check_output

    out = Path(onnx)
    if model is not None and not model.is_file():
        raise LungsegError("no such model file", model)
    check_output(out, [model] if model is not None else [], overwrite)
    from lungseg.inference.runtime import export_onnx

    typer.echo(f"wrote {export_onnx(model, out)}")


@app.command()
def evaluate(
    pred: Annotated[Path, typer.Option(help="predicted mask file or folder")],
    ref: Annotated[Path, typer.Option(help="reference mask file or folder")],
    out: Annotated[str | None, typer.Option("--out", "-o", callback=_check_path_text, help="folder for evaluation.json/.csv")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing evaluation.json/.csv")] = False,
    html: Annotated[bool, typer.Option("--html", help="also write OUT/evaluation.html: false positives "
                                       "and negatives per case, box plots of Dice and HD95")] = False,
) -> None:
    """Dice, HD95, surface distance and volume error per case, with mean ± sd."""
    from lungseg.evaluation import evaluate as run
    from lungseg.evaluation import format_table

    result = run(pred, ref, out, overwrite=overwrite, html=html)
    typer.echo(format_table(result))


@app.command()
def quantify(
    image: Annotated[Path, typer.Argument(help="CT image")],
    mask: Annotated[Path, typer.Argument(help="lung mask on the image's grid")],
) -> None:
    """Lung volumes, HU statistics and %LAA-950 as JSON."""
    from lungseg.io.volumes import read_volume
    from lungseg.quantification import quantify as run

    typer.echo(json.dumps(run(read_volume(image), read_volume(mask)), indent=2, allow_nan=False))


def _one_line(text: object) -> str:
    """Any message as one line (a library's multi-line text must not break the contract)."""
    return "; ".join(ln.strip() for ln in str(text).splitlines() if ln.strip())


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"lungseg: warning: {_one_line(message)}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Console entry point; maps errors to exit codes without tracebacks for user errors."""
    previous, warnings.showwarning = warnings.showwarning, _one_line_warning
    try:
        rv = app(args=argv, standalone_mode=False)
        if isinstance(rv, int):  # typer.Exit(code) is returned, not raised, here
            if rv == 130:  # typer turns Ctrl-C into Exit(130)
                print("lungseg: interrupted", file=sys.stderr)
            return rv
    except LungsegError as exc:
        print(f"lungseg: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        print("lungseg: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        # click's usage errors (vendored in recent typer) carry exit_code + format_message
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
            if type(exc).__name__ == "NoArgsIsHelpError":
                print(exc.format_message())
                return 0
            print(f"lungseg: error: {_one_line(exc.format_message())}", file=sys.stderr)
            return 2
        raise
    finally:
        warnings.showwarning = previous
    return 0


if __name__ == "__main__":
    sys.exit(main())


def run() -> None:
    """setuptools console-script target."""
    sys.exit(main())
