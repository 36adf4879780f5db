"""Reports from files: the case page (+ meshes) for an image and its mask, and the cohort page
for many; what `lungseg report` and `lungseg predict --report/--mesh` call.

Output names, for a case whose page is `case.html` (or whose mask is `case.nii.gz`):
`case.html` (the report), `case_right.stl` and `case_left.stl` (with `mesh="stl"`; or
`ply`/`obj`); a mesh given as a path (`lungs.stl`) writes `lungs_right.stl` and `lungs_left.stl`.
A folder of reports also gets `index.html` and `cohort.csv`. Every output is checked before
any work (`io.safety.check_output`) and written atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lungseg.core.errors import InputError, LungsegError, OutputError
from lungseg.core.volume import Volume
from lungseg.io.formats import full_suffix, is_volume_file, mask_name, strip_suffix
from lungseg.io.safety import check_output
from lungseg.report.mesh import MESH_SUFFIXES, mesh_paths

__all__ = ["MESH_FORMATS", "case_paths", "check_mesh_option", "write_case_outputs", "report_files",
           "pair_folders", "cohort_paths"]

MESH_FORMATS = tuple(s.lstrip(".") for s in MESH_SUFFIXES)


def check_mesh_option(mesh: str | None, single: bool) -> str | None:
    """`mesh` is a format (stl, ply, obj: files beside each case) or, for one case, a file path."""
    if mesh is None:
        return None
    if mesh.lower() in MESH_FORMATS:
        return mesh.lower()
    if full_suffix(Path(mesh)).lower() not in MESH_SUFFIXES:
        raise OutputError(f"--mesh takes a format ({', '.join(MESH_FORMATS)}) or a file ending in "
                          f"{', '.join(MESH_SUFFIXES)}", mesh)
    if not single:
        raise OutputError("--mesh with a file name needs a single case; give a format "
                          f"({', '.join(MESH_FORMATS)}) to write meshes beside each case", mesh)
    return mesh


def case_paths(base: Path, html: bool, mesh: str | None) -> dict:
    """{"html": base.html or None, "mesh": {side: path}} for a case named by `base` (a path
    whose suffix is dropped: the mask, or the page itself)."""
    suffix = full_suffix(base)
    stem = base.name[: len(base.name) - len(suffix)] if suffix else base.name
    out: dict = {"html": base.with_name(stem + ".html") if html else None, "mesh": {},
                 "mesh_base": None}
    if mesh is not None:
        target = base.with_name(f"{stem}.{mesh}") if mesh in MESH_FORMATS else Path(mesh)
        out["mesh"], out["mesh_base"] = mesh_paths(target), target
    return out


def cohort_paths(folder: Path) -> tuple[Path, Path]:
    return folder / "index.html", folder / "cohort.csv"


def check_case_outputs(paths: dict, inputs: Sequence[Path], overwrite: bool) -> None:
    for p in [paths["html"], *paths["mesh"].values()]:
        if p is not None:
            check_output(p, inputs, overwrite)


def write_case_outputs(image: Volume, mask: Volume, paths: dict, *, qc: dict | None = None,
                       quantities: dict | None = None, title: str = "",
                       image_path: str | Path | None = None,
                       mask_path: str | Path | None = None) -> tuple[list[Path], dict]:
    """Write the case's page and/or meshes (`case_paths`); (paths written, cohort summary)."""
    from lungseg.quantification import quantify
    from lungseg.report.html import case_summary, write_case_report

    written: list[Path] = []
    q = quantities if quantities is not None else quantify(image, mask)
    try:
        if paths["mesh"]:
            from lungseg.report.mesh import write_meshes

            written += write_meshes(mask, paths["mesh_base"])
        if paths["html"] is not None:
            page, summary = write_case_report(image, mask, paths["html"], qc=qc, quantities=q,
                                              title=title, image_path=image_path, mask_path=mask_path)
            written.append(page)
        else:
            from lungseg.quality import check_mask

            summary = case_summary(q, qc if qc is not None else check_mask(image, mask))
    except BaseException:
        for f in written:
            f.unlink(missing_ok=True)
        raise
    return written, summary


def pair_folders(images: Path, masks: Path) -> list[tuple[Path, Path]]:
    """Images in one folder with their masks in another, matched as predict names masks
    (`io.formats.mask_name`: scan.nrrd -> scan.nii.gz), or by the same file name."""
    imgs = sorted(p for p in images.iterdir() if is_volume_file(p))
    if not imgs:
        raise InputError("no image files in the folder", images)
    by_name = {p.name: p for p in masks.iterdir() if is_volume_file(p)}
    pairs, missing = [], []
    for img in imgs:
        m = by_name.get(mask_name(img)) or by_name.get(img.name)
        if m is None:
            missing.append(img.name)
        else:
            pairs.append((img, m))
    if missing:
        raise InputError(f"no mask for image(s) {', '.join(missing[:5])}"
                         f"{' ...' if len(missing) > 5 else ''}", masks)
    return pairs


def report_files(paths: Sequence[str | Path], out: str | Path, mesh: str | None = None,
                 overwrite: bool = False, progress: bool = False) -> list[dict]:
    """Reports for image/mask files: `paths` is IMAGE MASK (out: the page, e.g. case.html, or
    a folder when it ends in '/' or exists),
    several IMAGE MASK pairs, or IMAGE_FOLDER MASK_FOLDER (out: a folder that gets one page per
    case, index.html and cohort.csv). Returns the cohort rows; with several cases, a case that
    fails (bad file, mask off the image's grid) is a row with its `error` and the others go on.

    Reads each mask's quality sidecar (`<mask>.qc.json`, written by predict) when present,
    else runs the quality checks. A bad input raises `LungsegError` (InputError, GeometryError,
    LabelError) naming the file; outputs are all checked before the first is written.
    """
    from tqdm.auto import tqdm

    from lungseg.io.volumes import read_volume
    from lungseg.report.cohort import cohort_row, failed_row, write_cohort
    from lungseg.report.html import read_qc_sidecar

    paths = [Path(p) for p in paths]
    for p in paths:
        if not p.exists():
            raise InputError("no such file or folder", p)
    if len(paths) == 2 and paths[0].is_dir() and paths[1].is_dir():
        pairs = pair_folders(paths[0], paths[1])
        single = False
    elif len(paths) % 2 == 0 and paths:
        pairs = list(zip(paths[0::2], paths[1::2], strict=True))
        single = len(pairs) == 1
    else:
        raise InputError("give IMAGE MASK, several IMAGE MASK pairs, or IMAGE_FOLDER MASK_FOLDER "
                         f"({len(paths)} paths given)", paths[-1] if paths else ".")
    if single and (Path(out).is_dir() or str(out).endswith(("/", "\\"))):
        single = False  # one pair into a folder: its page + the cohort page, as for many
    out = Path(out)
    mesh = check_mesh_option(mesh, single)
    inputs = [p for pair in pairs for p in pair]
    if single:
        if full_suffix(out).lower() != ".html":
            raise OutputError("a report for one case is an .html file", out)
        plan = [case_paths(out, True, mesh)]
    else:
        if out.exists() and not out.is_dir():
            raise OutputError("several cases need an output folder; this is a file", out)
        names = [strip_suffix(img.name) for img, _ in pairs]
        if len(set(names)) != len(names):
            raise InputError("two images have the same name; reports would collide", pairs[0][0])
        plan = [case_paths(out / f"{n}.html", True, mesh) for n in names]
        for p in cohort_paths(out):
            check_output(p, inputs, overwrite)
    for paths_ in plan:
        check_case_outputs(paths_, inputs, overwrite)
    rows = []
    for (img_path, mask_path), p in tqdm(list(zip(pairs, plan, strict=True)), desc="report",
                                         disable=not progress or single):
        case = strip_suffix(img_path.name)
        try:
            image = read_volume(img_path)
            mask = read_volume(mask_path)
            _, summary = write_case_outputs(image, mask, p, qc=read_qc_sidecar(mask_path),
                                            title=img_path.name, image_path=img_path,
                                            mask_path=mask_path)
        except LungsegError as exc:
            if single:
                raise
            rows.append(failed_row(case, str(exc)))  # the others still get their pages
            continue
        rows.append(cohort_row(case, summary, p["html"].name))
    if not single:
        write_cohort(rows, *cohort_paths(out))
    return rows


def check_batch_outputs(targets: Sequence[Path], single: bool, report: bool, mesh: str | None,
                        inputs: Sequence[Path], overwrite: bool, folder: Path) -> dict:
    """predict's --report/--mesh: {mask path: case_paths} for every case, each output checked
    (and the cohort page's, when `folder` holds several cases), before any work."""
    mesh = check_mesh_option(mesh, single)
    plan = {Path(t): case_paths(Path(t), report, mesh) for t in targets}
    for paths in plan.values():
        check_case_outputs(paths, inputs, overwrite)
    if report and not single:
        for p in cohort_paths(Path(folder)):
            check_output(p, inputs, overwrite)
    return plan


def write_batch_cohort(results: Sequence, folder: str | Path) -> list[Path]:
    """index.html + cohort.csv for predict's `CaseResult`s (failed cases listed with their error)."""
    from lungseg.report.cohort import cohort_row, failed_row, write_cohort

    rows = []
    for r in results:
        case = strip_suffix(Path(r.output).name) if r.output else strip_suffix(Path(r.input).name)
        if r.error or r.summary is None:
            why = r.error or ("skipped: its mask existed (--overwrite to redo it)" if getattr(r, "skipped", False)
                              else "no report")
            rows.append(failed_row(case, why))
        else:
            rows.append(cohort_row(case, r.summary, f"{case}.html"))
    return write_cohort(rows, *cohort_paths(Path(folder)))
