"""Size checks made from a file's header before any voxel is read (no header bombs).

A 125-byte `.nii.gz` may declare 1024x1024x1000 voxels; reading it would allocate gigabytes
before noticing that the data are not there. `check_declared_size` compares the bytes the
header declares with what the file can hold: for uncompressed data, the data file's size;
for deflate (gzip/zlib) data, at most `DEFLATE_MAX_RATIO` times the compressed size; and
for every file a ceiling of `MAX_VOXELS` voxels and this machine's physical memory.

>>> check_declared_size("a.nii", (10, 10, 10), 2, data_bytes=2000)
>>> check_declared_size("a.nii", (1024, 1024, 1000), 2, data_bytes=1000)
Traceback (most recent call last):
...
lungseg.core.errors.InputError: a.nii: header declares 1024x1024x1000 voxels of 2 bytes (2.0 GiB) but the file holds only 1000 bytes of voxel data (truncated file or corrupt header)
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from lungseg.core.errors import InputError

#: The most voxels any image may declare (a 512x512x8192 CT is 2**31).
MAX_VOXELS = 2**31
#: deflate cannot expand more than about 1032:1 (RFC 1951: 258-byte matches in 2 bits).
DEFLATE_MAX_RATIO = 1032


def _human(n: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} bytes"


def require_regular_file(path: Path) -> os.stat_result:
    """Refuse FIFOs, devices and sockets (reading /dev/zero or a pipe would never end)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise InputError(f"cannot read ({exc.strerror})", path) from None
    mode = st.st_mode
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode)
                else "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "not a regular file")
        raise InputError(f"is {kind}, not a regular file", path)
    return st


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_declared_size(path: str | Path, shape: Sequence[int], itemsize: int, *, data_bytes: int | None,
                        compression: str | None = None) -> None:
    """Refuse a header whose voxels cannot be in the file or cannot fit in memory.

    `data_bytes` is the size of the stored voxel data (None: unknown, e.g. a file list);
    `compression` is None (raw), "deflate" (gzip/zlib) or anything else (e.g. bzip2: only
    the ceilings apply).
    """
    shape = tuple(int(s) for s in shape)
    dims = "x".join(map(str, shape))
    if any(s < 0 for s in shape):
        raise InputError(f"header declares a negative size ({dims})", path)
    n = math.prod(shape)
    need = n * int(itemsize)
    if n > MAX_VOXELS:
        raise InputError(f"header declares {dims} = {n:.3g} voxels, more than the {MAX_VOXELS:.3g} lungseg "
                         "reads (corrupt header?)", path)
    total = physical_memory()
    if total is not None and need > total:
        raise InputError(f"header declares {dims} voxels of {itemsize} bytes ({_human(need)}), more than "
                         f"this machine's memory ({_human(total)})", path)
    if data_bytes is None:
        return
    if compression is None and need > data_bytes:
        raise InputError(f"header declares {dims} voxels of {itemsize} bytes ({_human(need)}) but the file "
                         f"holds only {data_bytes} bytes of voxel data (truncated file or corrupt header)", path)
    if compression == "deflate" and need > DEFLATE_MAX_RATIO * data_bytes + 4096:
        raise InputError(f"header declares {dims} voxels of {itemsize} bytes ({_human(need)}), more than "
                         f"{data_bytes} compressed bytes can hold (truncated file or corrupt header)", path)
