"""Output safety: never overwrite an input, never leave a half-written file.

`check_output` is called before any work starts (so a long run does not fail at the end);
`atomic_path` wraps every write: the data goes to a temporary file in the destination
folder and is renamed over the destination only when writing succeeded.

>>> from pathlib import Path
>>> import tempfile
>>> d = Path(tempfile.mkdtemp())
>>> with atomic_path(d / "report.json") as tmp:
...     _ = tmp.write_text("{}")
>>> sorted(p.name for p in d.iterdir())
['report.json']
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from lungseg.core.errors import OutputError
from lungseg.io.formats import full_suffix, is_dicom_file


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.relative_to(parent)
    except ValueError:
        return False
    return True


def _input_folder(path: Path) -> Path | None:
    """The folder an input occupies: itself if a folder, its folder if a DICOM file."""
    if path.is_dir():
        return path
    if path.is_file() and full_suffix(path).lower() in ("", ".dcm", ".ima"):
        if is_dicom_file(path):
            return path.parent
    return None


def check_output(out: str | Path, inputs: Sequence[str | Path], overwrite: bool = False) -> Path:
    """Refuse an output that would destroy an input or an existing file; return it resolved.

    Raises `OutputError` when `out` is (resolves to) one of `inputs`, lies inside an input
    folder (a DICOM series folder, or the folder of an input DICOM file), exists while
    `overwrite` is false, or its folder cannot be created or written.
    """
    out_path = Path(out).expanduser()
    resolved = out_path.resolve()
    for inp in inputs:
        inp_path = Path(inp).expanduser()
        inp_resolved = inp_path.resolve()
        if resolved == inp_resolved:
            raise OutputError(f"output is the input {inp_path}; choose another output path", out_path)
        folder = _input_folder(inp_resolved)
        if folder is not None and _inside(resolved, folder):
            raise OutputError(
                f"output lies inside the input folder {inp_path}; write it somewhere else "
                "(files added to a DICOM folder would be read as part of the series)",
                out_path,
            )
    if out_path.exists() and not overwrite:
        raise OutputError("output exists; pass --overwrite to replace it", out_path)
    parent = resolved.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not _writable(parent):
        raise OutputError(f"cannot write into {parent} (not a writable folder)", out_path)
    return resolved


def _writable(folder: Path) -> bool:
    """Really writable: permission bits say nothing for root, or on a read-only file system."""
    if not os.access(folder, os.W_OK):
        return False
    try:
        fd, name = tempfile.mkstemp(prefix=".lungseg-probe-", dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.unlink(name)
    return True


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it to `path` on success, delete it on error.

    The temporary name keeps the full suffix (`.nii.gz`, `.json`, ...) so format-by-extension
    writers work unchanged. Missing parent folders are created.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create folder {path.parent} ({exc.strerror})", path) from None
    suffix = full_suffix(path)
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    fd, tmp_name = tempfile.mkstemp(prefix=f".{stem}.tmp-", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual mode
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; its files are moved into `path`'s folder on success.

    For formats written as several files that name each other (MetaImage `.mhd` + `.raw`):
    the writer writes `tmpdir / path.name`; companions are moved first, `path` last.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmpdir
        files = sorted(tmpdir.iterdir(), key=lambda p: p.name == path.name)
        for f in files:
            os.replace(f, path.parent / f.name)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
