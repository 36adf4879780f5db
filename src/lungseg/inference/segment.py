"""`lungseg.segment`: one function from CT to lung mask, for a notebook or the CLI."""

from __future__ import annotations

from pathlib import Path

from lungseg.core.errors import LungsegError
from lungseg.core.volume import Volume
from lungseg.inference.predictor import Predictor
from lungseg.io.volumes import read_volume

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
