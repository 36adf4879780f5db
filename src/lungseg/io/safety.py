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
import re
import shutil
import tempfile
import time
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


#: lungseg's temporary names: `.NAME.tmp-PID-HOST-XXXXXXXX[SUFFIX]` (files or folders), HOST a
#: 6-hex hash of the host name: a later run on the same host tells from the pid whether the
#: writer is still alive. Older runs wrote `.NAME.tmp-XXXXXXXX`.
TEMP_RE = re.compile(r"^\.(?P<stem>.+)\.tmp-(?:(?P<pid>\d+)-(?P<host>[0-9a-f]{6})-)?[a-z0-9_]{8}(?:\..*)?$")
#: a temporary of another host, without a pid, or whose pid may have been reused, is stale
#: after this long
STALE_AFTER_S = 6 * 3600
_CLEANED: set[Path] = set()


def _host() -> str:
    import hashlib
    import socket

    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]


def _temp_prefix(stem: str) -> str:
    return f".{stem}.tmp-{os.getpid()}-{_host()}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # another user's live process (or nonsense): leave its file alone
    return True


def remove_stale_temps(folder: str | Path, force: bool = False) -> list[Path]:
    """Remove lungseg temporaries left in `folder` by a killed run; return what was removed.

    Only names of lungseg's own pattern (`TEMP_RE`), and only those whose writer is gone: its
    pid (on this host) is not alive, or (another host, no pid, or a pid reused since) older than
    `STALE_AFTER_S`. A concurrent run's live temporaries are never touched. Each folder is
    scanned once per process unless `force`.
    """
    folder = Path(folder)
    key = folder.resolve() if folder.exists() else folder
    if not force and key in _CLEANED:
        return []
    _CLEANED.add(key)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        m = TEMP_RE.match(entry.name)
        if m is None:
            continue
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        pid = int(m.group("pid")) if m.group("pid") and m.group("host") == _host() else None
        if pid == os.getpid():
            continue  # ours, in use
        if not (age > STALE_AFTER_S or (pid is not None and not _pid_alive(pid))):
            continue
        path = Path(entry.path)
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
        except OSError:
            pass
    return removed


def _publish(tmp: Path, path: Path, overwrite: bool) -> None:
    """Move `tmp` to `path`: replacing it only with `overwrite`, else atomically no-clobber.

    Without `overwrite` the check is the rename itself (a hard link fails if `path` exists),
    so of two writers racing for one name exactly one wins and the other gets `OutputError`.
    """
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise OutputError("output exists (written by another run meanwhile?); pass --overwrite "
                          "to replace it", path) from None
    except OSError:  # no hard links here (some network or FUSE file systems): check, then rename
        if path.exists():
            raise OutputError("output exists (written by another run meanwhile?); pass --overwrite "
                              "to replace it", path) from None
        os.rename(tmp, path)
        return
    tmp.unlink()


@contextmanager
def atomic_path(path: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it to `path` on success, delete it on error.

    The temporary name keeps the full suffix (`.nii.gz`, `.json`, ...) so format-by-extension
    writers work unchanged, and carries this process's pid so that a later run can remove it
    if this one is killed (`remove_stale_temps`, run on each destination folder). Missing
    parent folders are created. With `overwrite=False` an existing `path` is never replaced,
    even one created by another process while this one was writing (`OutputError`).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create folder {path.parent} ({exc.strerror})", path) from None
    remove_stale_temps(path.parent)
    suffix = full_suffix(path)
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    fd, tmp_name = tempfile.mkstemp(prefix=_temp_prefix(stem), suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual mode
        _publish(tmp, path, overwrite)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_folder(path: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; its files are moved into `path`'s folder on success.

    For formats written as several files that name each other (MetaImage `.mhd` + `.raw`):
    the writer writes `tmpdir / path.name`; companions are moved first, `path` last.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent)
    tmpdir = Path(tempfile.mkdtemp(prefix=_temp_prefix(path.name), dir=path.parent))
    moved: list[Path] = []
    try:
        yield tmpdir
        files = sorted(tmpdir.iterdir(), key=lambda p: p.name == path.name)
        for f in files:
            _publish(f, path.parent / f.name, overwrite)
            moved.append(path.parent / f.name)
    except BaseException:
        if not overwrite:  # what this call created; with overwrite the old files are gone anyway
            for f in moved:
                f.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


class CaseFiles:
    """All files of one case, made visible together: companions first, the main file last.

    Writers write each companion to `stage(final)` (a temporary beside `final`); `publish()`
    moves them to their names, each atomically and (without `overwrite`) no-clobber; then the
    caller writes the main file (itself atomic and no-clobber, e.g. `write_volume(...,
    overwrite=False)`) and calls `commit()`. If anything fails or is interrupted before
    `commit()`, every temporary and every companion already published is removed (with
    `overwrite`, an old main file too), so a main file (a mask) is never visible without its
    companions, and a failed case leaves none of its files. `replaceable` names files that
    may be replaced even without `overwrite` (leftovers of an interrupted run: companions
    whose main file is missing). Two runs racing for the same case publish in the same order,
    so the first file decides: one run wins, the other fails on it having written nothing.

        with CaseFiles(mask_path) as case:
            write_json(report, case.stage(qc_path))
            case.publish()
            write_volume(mask, mask_path, overwrite=False)
            case.commit()
    """

    def __init__(self, main: str | Path, overwrite: bool = False, replaceable: Sequence[Path] = ()):
        self.main = Path(main)
        self.overwrite = overwrite
        self.replaceable = {Path(p) for p in replaceable}
        self._staged: dict[Path, Path] = {}
        self._published: list[Path] = []
        self._committed = False

    def stage(self, final: str | Path) -> Path:
        """A temporary path (same folder, same suffix) for the writer of `final`."""
        final = Path(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(final.parent)
        suffix = full_suffix(final)
        stem = final.name[: len(final.name) - len(suffix)] if suffix else final.name
        fd, name = tempfile.mkstemp(prefix=_temp_prefix(stem), suffix=suffix, dir=final.parent)
        os.close(fd)
        self._staged[final] = Path(name)
        return Path(name)

    def drop(self, final: str | Path) -> None:
        """Give up a staged companion (its writer declined)."""
        tmp = self._staged.pop(Path(final), None)
        if tmp is not None:
            tmp.unlink(missing_ok=True)

    def adopt(self, paths: Sequence[str | Path]) -> None:
        """Files a writer put in place itself (atomically): removed with the case if it fails."""
        self._published.extend(Path(p) for p in paths)

    def publish(self) -> None:
        """Move every staged companion to its name (in the order staged)."""
        for final in list(self._staged):
            tmp = self._staged[final]
            os.chmod(tmp, 0o666 & ~_umask())
            _publish(tmp, final, self.overwrite or final in self.replaceable)
            self._published.append(final)
            del self._staged[final]

    def commit(self) -> None:
        """The main file is in place: the case is complete."""
        self._committed = True

    def discard(self) -> None:
        for tmp in self._staged.values():
            tmp.unlink(missing_ok=True)
        self._staged.clear()
        for final in self._published:
            final.unlink(missing_ok=True)
        if self._published and self.overwrite:
            self.main.unlink(missing_ok=True)  # an old mask whose companions were just replaced
        self._published.clear()

    def __enter__(self) -> CaseFiles:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._committed:
            self.discard()
