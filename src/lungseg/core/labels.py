"""The label convention every lungseg mask follows: 0 background, 1 right lung, 2 left lung.

Right and left are the patient's sides (from the affine), never the image's.

>>> import numpy as np
>>> check_labels(np.array([0, 1, 2], np.uint8)).tolist()
[0, 1, 2]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lungseg.core.errors import LabelError

BACKGROUND, RIGHT, LEFT = 0, 1, 2
LABEL_NAMES = {RIGHT: "right", LEFT: "left"}


def check_labels(array: np.ndarray, what: str = "mask", path: str | Path | None = None) -> np.ndarray:
    """Return `array` if it holds only 0/1/2, else raise `LabelError` naming `what` and `path`."""
    a = np.asarray(array)
    if a.dtype.kind == "u" and (a.size == 0 or a.max() <= LEFT):  # no sort of a 512x512x300 mask
        return a
    if a.dtype.kind == "u" and a.dtype.itemsize <= 2:  # counting beats sorting
        values = np.flatnonzero(np.bincount(a.ravel()))
    else:
        values = np.unique(a)
    if not np.isin(values, (BACKGROUND, RIGHT, LEFT)).all():
        raise LabelError(f"{what} labels must be 0, 1 (right), 2 (left); found {values.tolist()[:10]}",
                         path)
    return a
