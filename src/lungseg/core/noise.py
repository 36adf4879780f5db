"""Image noise: how much a CT has, and smoothing a noisy one down to what the model was trained on.

Why: the default model saw noise up to ~60 HU (phantoms, log-uniform 5-60 HU, plus its
intensity augmentation) and real scans at 15-45 HU (this module's measure). A low-dose scan
with a sharp kernel has more, and the network's P rose over soft tissue: with 90 HU of noise
added to the shared 8 mm chest its spleen and stomach under the left dome became lung
(+532 mL, `bench/painted_noise.py`), LIDC-0314 +304 mL, and at 130 HU every shared chest
gained 160-670 mL. Its input is resampled to
2.5 mm by sampling, not averaging (`inference.resample`), so the noise reaches the network
undiminished. A Gaussian (scipy), in-plane like a softer reconstruction kernel, smooths it
down first; scans no noisier than real ones seen so far are left exactly as they are, so their
masks do not change (measured: docs/model_notes.md, "Noise, painted").

The measure is written here, not taken from `skimage.restoration.estimate_sigma`: that one
assumes the whole image is noise over a flat signal, while a CT holds noise-free padding and
lung texture that is not noise; this one looks only at windows of homogeneous soft tissue.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> hu = np.full((64, 64, 8), 40.0, np.float32) + rng.normal(0, 100, (64, 64, 8)).astype(np.float32)
>>> round(noise_sd(hu, (1.0, 1.0, 2.0)) / 100, 1)
1.0
>>> quiet, sigma, sd = reduce_noise(hu, (1.0, 1.0, 2.0))
>>> sigma > 0, noise_sd(quiet, (1.0, 1.0, 2.0)) < 40
(True, True)
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from lungseg.core.volume import Volume

#: noise (HU, `noise_sd`) above which a scan is smoothed before segmenting. The real scans here
#: measure 15-45 HU, sharp-kernel series 45 and 64; painted noise measuring 57-64 already cost
#: the 8 mm chest 110-140 mL of upper abdomen, but the 64 HU lung-kernel series, smoothed to the
#: soft kernel's noise, lost what its kernel showed of a mass (its box 0.58 -> 0.36 inside, as
#: the soft-kernel series of the same scan, 0.33). At 60 with `RAMP` 2 that series is smoothed
#: only to 53 HU (box 0.55) and the painted chests at 70+ HU to ~40 or less.
NOISE_TRIGGER_HU = 60.0
#: what a noisy scan is smoothed down to: the trigger at the trigger, falling `RAMP` HU per HU
#: over it to this floor (continuous: a scan just over the trigger is barely touched, so two
#: views of it that measure either side of the line get nearly the same image)
NOISE_TARGET_HU = 32.0
RAMP = 2.0
#: slices the measure looks at (spread evenly across the coarsest axis): ~40 ms on a 512^2 scan
SAMPLE_SLICES = 12
#: the window (voxels, in-plane) whose sd is one sample, and the soft tissue it must lie in
WINDOW = 5
SOFT_TISSUE_HU = (-250.0, 350.0)
MEAN_HU = (-60.0, 120.0)
#: too few windows to judge by (a crop of lung only): no measure, nothing smoothed
MIN_WINDOWS = 40
SIGMAS_MM = tuple(round(0.25 * i, 2) for i in range(1, 13))  # 0.25 ... 3 mm


def _slice_axis(hu: np.ndarray, spacing) -> int:
    """The axis the windows lie across: the coarsest one (the slices of a thick-slice scan),
    among equals the one with the fewest voxels; a view thinner than two windows along an axis
    (a slab, a coronal or sagittal slice) lies across that one."""
    sp = np.asarray(spacing, float)
    thin = [a for a in range(3) if hu.shape[a] < 2 * WINDOW]
    pool = thin if thin else range(3)
    return int(min(pool, key=lambda a: (hu.shape[a] >= 2 * WINDOW, -round(sp[a], 3), hu.shape[a])))


def _sample(hu: np.ndarray, axis: int) -> np.ndarray:
    idx = np.unique(np.linspace(0, hu.shape[axis] - 1, min(hu.shape[axis], SAMPLE_SLICES)).round().astype(int))
    return np.take(hu, idx, axis=axis).astype(np.float32)


def _windows_sd(sample: np.ndarray, axis: int) -> float | None:
    """Median sd of the `WINDOW` x `WINDOW` in-plane blocks (side by side, not sliding: 3x
    faster, the same median) that lie wholly in soft tissue."""
    s = np.moveaxis(sample, axis, 0)
    n, h, w = s.shape
    s = s[:, : h // WINDOW * WINDOW, : w // WINDOW * WINDOW].reshape(n, h // WINDOW, WINDOW, w // WINDOW, WINDOW)
    mean = s.mean(axis=(2, 4))
    whole = (s.min(axis=(2, 4)) > SOFT_TISSUE_HU[0]) & (s.max(axis=(2, 4)) < SOFT_TISSUE_HU[1])
    whole &= (mean > MEAN_HU[0]) & (mean < MEAN_HU[1])
    if np.count_nonzero(whole) < MIN_WINDOWS:
        return None
    return float(np.median(np.sqrt(s.var(axis=(2, 4))[whole])))


def noise_sd(hu: np.ndarray, spacing) -> float | None:
    """The CT's noise (HU): the median sd in `WINDOW` x `WINDOW`-voxel in-plane windows that lie
    wholly in soft tissue, over `SAMPLE_SLICES` slices; None without enough soft tissue."""
    hu = np.asarray(hu)
    axis = _slice_axis(hu, spacing)
    return _windows_sd(_sample(hu, axis), axis)


def target_sd(sd: float) -> float:
    """What a scan measuring `sd` is smoothed down to (itself when quiet; see `NOISE_TARGET_HU`)."""
    if sd <= NOISE_TRIGGER_HU:
        return sd
    return max(NOISE_TARGET_HU, NOISE_TRIGGER_HU - RAMP * (sd - NOISE_TRIGGER_HU))


def _sigmas_vox(sigma_mm: float, spacing, axis: int) -> list[float]:
    out = [sigma_mm / float(s) for s in spacing]
    out[axis] = 0.0
    return out


def reduce_noise(hu: np.ndarray, spacing) -> tuple[np.ndarray, float, float | None]:
    """(the CT smoothed to `target_sd`, the Gaussian's sigma in mm, the noise measured): `hu`
    itself and sigma 0 when quiet.

    The sigma brings the sampled slices to the target (interpolated between `SIGMAS_MM`, so it
    grows from 0 at the trigger without steps); the smoothing is in-plane (across the slices the
    measure looks at), as a softer reconstruction kernel's is.
    """
    hu = np.asarray(hu)
    axis = _slice_axis(hu, spacing)
    sample = _sample(hu, axis)
    sd = _windows_sd(sample, axis)
    if sd is None or sd <= NOISE_TRIGGER_HU:
        return hu, 0.0, sd
    goal = target_sd(sd)
    sigma, prev = SIGMAS_MM[-1], (0.0, sd)
    for s in SIGMAS_MM:
        smoothed = _windows_sd(ndimage.gaussian_filter(sample, _sigmas_vox(s, spacing, axis)), axis)
        if smoothed is None:
            sigma = s
            break
        if smoothed <= goal:  # between this sigma and the last: linear in the measure
            sigma = prev[0] + (s - prev[0]) * (prev[1] - goal) / max(prev[1] - smoothed, 1e-6)
            break
        prev = (s, smoothed)
    sigma = round(float(sigma), 2)
    if sigma <= 0:
        return hu, 0.0, sd
    out = ndimage.gaussian_filter(hu.astype(np.float32, copy=False), _sigmas_vox(sigma, spacing, axis))
    return out, sigma, sd


#: the meta keys `quieter` sets, which a mask made from its image carries on (`noise_meta`)
NOISE_META = ("noise_sd_hu", "smoothing_mm")


def noise_meta(volume: Volume) -> dict:
    """The smoothing `quieter` recorded in `volume.meta` ({} for a scan left as it was)."""
    return {k: volume.meta[k] for k in NOISE_META if k in volume.meta}


def quieter(volume: Volume) -> Volume:
    """`volume` itself when quiet, else a copy smoothed by `reduce_noise` whose meta records
    the noise measured (`noise_sd_hu`) and the smoothing (`smoothing_mm`)."""
    out, sigma, sd = reduce_noise(volume.array, volume.spacing)
    if sigma == 0:
        return volume
    return Volume(out, volume.affine, {**volume.meta, "noise_sd_hu": round(sd, 1), "smoothing_mm": sigma})
