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

import cc3d
import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference

from lungseg.core.anatomy import body_hull, body_midline_x
from lungseg.core.errors import InputError
from lungseg.core.geometry import superior_axis
from lungseg.core.volume import Volume
from lungseg.inference.classical import central_airways, segment_classical
from lungseg.inference.postprocess import fill_indentations, postprocess, refine_boundary
from lungseg.networks import load_model, resolve_device
from lungseg.transforms import DEFAULT_PREPROCESSING, infer_transforms, to_metatensor

#: An input at most this tall (mm along the body axis) is a partial view (bases only, apex
#: only, a slab, one slice; a whole adult lung is 200-300 mm tall): the network sees too
#: little of the chest there to be sure of a small lung piece (a lung base behind the liver,
#: the apex of a lung with a dense upper lobe), so aerated lung pieces that the classical
#: method finds and the network missed entirely are added (`add_missed_pieces`).
PARTIAL_VIEW_MM = 150.0

#: Where the shipped default model lives inside the package.
DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "models" / "default.pt"


@dataclass
class InferenceSettings:
    """How the sliding window runs. The reference notebook uses roi 96, overlap 0.75."""

    roi_size: tuple[int, int, int] = (160, 160, 160)
    overlap: float = 0.25
    sw_batch_size: int = 1
    mode: str = "gaussian"
    refine: bool = True  # sharpen the boundary with the CT edge at full resolution
    #: a resampled volume up to this many voxels runs as ONE window (no overlap to pay for);
    #: 0 always slides roi_size windows. A chest at 2.5 mm is ~200x200x130.
    whole_volume_voxels: int = 256**3

    def window_for(self, shape: tuple[int, ...]) -> tuple[int, int, int]:
        """The window actually used for a volume of `shape` (model-grid voxels)."""
        whole = tuple(-(-int(n) // 16) * 16 for n in shape)  # divisible by the U-Net's 2^4
        if self.whole_volume_voxels and int(np.prod(whole)) <= self.whole_volume_voxels:
            return whole
        return tuple(self.roi_size)


def is_partial_view(image: Volume) -> bool:
    """True for an input at most `PARTIAL_VIEW_MM` tall (it cannot hold a whole lung)."""
    ax = superior_axis(image.affine)
    height = image.shape[ax] * float(np.linalg.norm(np.asarray(image.affine)[:3, ax]))
    return height <= PARTIAL_VIEW_MM


def add_missed_pieces(labels: np.ndarray, other: np.ndarray, max_overlap: float = 0.05) -> np.ndarray:
    """`labels` plus each connected lung piece of `other` (with its label) that `labels` missed.

    Only whole pieces are added (at most `max_overlap` of a piece may already be lung), so
    where both methods found a lung its boundary stays the network's.
    """
    other = np.asarray(other)
    comp = cc3d.connected_components(other > 0, connectivity=26)
    n = int(comp.max())
    if n == 0:
        return labels
    size = np.bincount(comp.ravel(), minlength=n + 1)
    hit = np.bincount(comp[labels > 0].ravel(), minlength=n + 1)
    missed = np.flatnonzero((size > 0) & (hit <= max_overlap * size))
    missed = missed[missed > 0]
    if missed.size:
        labels = labels.copy()
        add = np.isin(comp, missed)
        labels[add] = other[add]
    return labels


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
    def lung_probability(self, image: Volume) -> np.ndarray:
        """P(lung) on the input grid (float32, image.shape).

        Only this one channel is resampled back to the input grid: it is the costly step
        for a 512x512x300 scan, and sides are decided by anatomy afterwards anyway.
        """
        pre = infer_transforms(self.preprocessing)
        data = pre({"image": to_metatensor(image)})
        x: MetaTensor = data["image"]
        use_amp = self.device.type == "cuda"
        with torch.autocast(self.device.type, enabled=use_amp):
            logits = sliding_window_inference(
                x.as_tensor()[None].to(self.device), self.settings.window_for(x.shape[1:]),
                self.settings.sw_batch_size, self.model, overlap=self.settings.overlap,
                mode=self.settings.mode, padding_mode="replicate",
            )
        lung = 1.0 - torch.softmax(logits.float(), dim=1)[0, :1].cpu()
        out = MetaTensor(lung, meta=copy.deepcopy(x.meta))
        out.applied_operations = copy.deepcopy(x.applied_operations)
        back = pre.inverse({"image": out})["image"]
        back = np.asarray(back.as_tensor().numpy() if hasattr(back, "as_tensor") else back)[0]
        if back.shape != image.shape:
            raise RuntimeError(f"inverse resampling gave {back.shape}, expected {image.shape}")
        return back

    def predict(self, image: Volume, postprocessing: bool = True) -> Volume:
        """Lung mask (0 background, 1 right, 2 left) with the image's shape and affine."""
        prob = self.lung_probability(image)
        if self.settings.refine:
            labels = refine_boundary(prob, image.array).astype(np.uint8)
        else:
            labels = (prob > 0.5).astype(np.uint8)
        del prob
        if postprocessing:
            midline_x = body_midline_x(image.array, image.affine)
            labels = postprocess(labels, image.affine, midline_x=midline_x, hu=image.array,
                                 hull=body_hull(image.array, image.affine))
            if is_partial_view(image):
                labels = add_missed_pieces(labels, segment_classical(image).array)
            airways = central_airways(image, midline_x=midline_x)
            labels = fill_indentations(labels, image.affine, keep_out=airways)  # nodules at the pleura
            labels[airways] = 0  # trachea and main bronchi are not lung
        return Volume(labels.astype(np.uint8), image.affine.copy(), {"source": image.meta.get("path")})
