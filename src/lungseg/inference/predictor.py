"""Sliding-window inference with a trained U-Net; the mask leaves on exactly the input's grid.

Pipeline: image (any orientation/spacing) -> RAS, model spacing, HU window -> sliding
window -> softmax -> the probabilities are resampled back through the inverse of the
same MONAI transforms (trilinear, so boundaries stay smooth) -> argmax -> post-processing
(two lungs, holes filled, sides from the affine).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference

from lungseg.errors import InputError
from lungseg.inference.postprocess import postprocess, refine_boundary
from lungseg.io.volumes import Volume
from lungseg.networks import load_model
from lungseg.transforms import DEFAULT_PREPROCESSING, infer_transforms, to_metatensor

#: Where the shipped default model lives inside the package.
DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "models" / "default.pt"


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass
class InferenceSettings:
    """How the sliding window runs. The reference notebook uses roi 96, overlap 0.75."""

    roi_size: tuple[int, int, int] = (160, 160, 160)
    overlap: float = 0.25
    sw_batch_size: int = 1
    mode: str = "gaussian"
    refine: bool = True  # sharpen the boundary with the CT edge at full resolution


class Predictor:
    """A model loaded once, applied to many volumes (batch prediction reuses it)."""

    def __init__(self, model_path: str | Path | None = None, device: str = "auto",
                 settings: InferenceSettings | None = None):
        path = Path(model_path) if model_path is not None else DEFAULT_MODEL
        if model_path is None and not path.is_file():
            raise InputError("no default model is installed; pass --model RUN/best.pt "
                             "(or run `make pretrained`)", path)
        self.device = resolve_device(device)
        self.model, self.model_settings = load_model(path, self.device)
        self.preprocessing = {**DEFAULT_PREPROCESSING, **self.model_settings.get("preprocessing", {})}
        self.settings = settings or InferenceSettings()
        self.model_path = path

    @torch.no_grad()
    def probabilities(self, image: Volume) -> np.ndarray:
        """Class probabilities (3, *image.shape) on the input grid."""
        pre = infer_transforms(self.preprocessing)
        data = pre({"image": to_metatensor(image)})
        x: MetaTensor = data["image"]
        use_amp = self.device.type == "cuda"
        with torch.autocast(self.device.type, enabled=use_amp):
            logits = sliding_window_inference(
                x.as_tensor()[None].to(self.device), self.settings.roi_size,
                self.settings.sw_batch_size, self.model, overlap=self.settings.overlap,
                mode=self.settings.mode,
            )
        probs = torch.softmax(logits.float(), dim=1)[0].cpu()
        out = MetaTensor(probs, meta=copy.deepcopy(x.meta))
        out.applied_operations = copy.deepcopy(x.applied_operations)
        back = pre.inverse({"image": out})["image"]
        back = np.asarray(back.as_tensor().numpy() if hasattr(back, "as_tensor") else back)
        if back.shape[1:] != image.shape:
            raise RuntimeError(f"inverse resampling gave {back.shape[1:]}, expected {image.shape}")
        return back

    def predict(self, image: Volume, postprocessing: bool = True) -> Volume:
        """Lung mask (0 background, 1 right, 2 left) with the image's shape and affine."""
        probs = self.probabilities(image)
        if self.settings.refine:
            labels = refine_boundary(1.0 - probs[0], image.array).astype(np.uint8)
        else:
            labels = np.argmax(probs, axis=0).astype(np.uint8)
        del probs
        if postprocessing:
            labels = postprocess(labels, image.affine)
        return Volume(labels.astype(np.uint8), image.affine.copy(), {"source": image.meta.get("path")})


def describe(predictor: Predictor) -> dict[str, Any]:
    return {"model": str(predictor.model_path), "device": str(predictor.device),
            "roi_size": list(predictor.settings.roi_size), "overlap": predictor.settings.overlap}
