"""Lung volumes and density from a CT image and its lung mask (0 background, 1 right, 2 left).

Example on a phantom::

    >>> import numpy as np
    >>> from lungseg.core.volume import Volume
    >>> from lungseg.quantification import quantify
    >>> hu = np.full((10, 10, 10), -900, np.int16); hu[:, :, :5] = -960
    >>> mask = np.zeros((10, 10, 10), np.uint8); mask[:5] = 1; mask[5:] = 2
    >>> q = quantify(Volume(hu, np.eye(4)), Volume(mask, np.eye(4)))
    >>> q["right"]["volume_ml"], q["total"]["laa950_percent"]
    (0.5, 50.0)
"""

from __future__ import annotations

import numpy as np

from lungseg.core.geometry import check_same_grid
from lungseg.core.labels import LEFT, RIGHT, check_labels
from lungseg.core.volume import Volume

__all__ = ["quantify"]

LAA_HU = -950.0


def _stats(values: np.ndarray, voxel_ml: float) -> dict:
    n = int(values.size)
    out = {"voxels": n, "volume_ml": float(n * voxel_ml)}
    v = values.astype(np.float64)
    finite = np.isfinite(v)
    out["nonfinite_voxels"] = int(n - np.count_nonzero(finite))
    v = v[finite]
    if v.size == 0:
        out.update({k: None for k in ("mean_hu", "sd_hu", "p15_hu", "median_hu", "laa950_percent")})
        return out
    out.update(
        {
            "mean_hu": float(v.mean()),
            "sd_hu": float(v.std()),
            "p15_hu": float(np.percentile(v, 15)),
            "median_hu": float(np.median(v)),
            "laa950_percent": float(100.0 * np.count_nonzero(v < LAA_HU) / v.size),
        }
    )
    return out


def quantify(image: Volume, mask: Volume) -> dict:
    """Per lung (right, left, total): volume (mL), voxel count, HU mean/sd/15th percentile/median
    and %LAA-950 (percent of voxels below -950 HU).

    `mask` must lie on exactly `image`'s grid (else GeometryError) and hold labels 0/1/2
    (else LabelError). Statistics of an empty lung are None (JSON null); the result is
    JSON-serialisable (strict JSON: no NaN or Infinity). NaN or infinite image voxels inside
    the mask count in the volume but not in the HU statistics (nor in %LAA-950's
    denominator); each region reports them as `nonfinite_voxels`, and a `LungsegWarning`
    names the image.
    """
    check_same_grid(mask, image, "mask and image")
    labels = check_labels(mask.array, "mask", mask.meta.get("path"))
    hu = np.asarray(image.array)
    voxel_ml = image.voxel_ml
    out = {
        "right": _stats(hu[labels == RIGHT], voxel_ml),
        "left": _stats(hu[labels == LEFT], voxel_ml),
        "total": _stats(hu[labels > 0], voxel_ml),
        "voxel_ml": voxel_ml,
    }
    if out["total"]["nonfinite_voxels"]:
        import warnings

        from lungseg.core.errors import LungsegWarning

        where = image.meta.get("path") or "the image"
        warnings.warn(f"{where}: {out['total']['nonfinite_voxels']} NaN or infinite voxel(s) inside the "
                      "lungs left out of the HU statistics (counted in nonfinite_voxels)", LungsegWarning,
                      stacklevel=2)
    return out
