"""The network as an ONNX file, run with ONNX Runtime (no PyTorch autograd machinery at run time).

`export_onnx` writes a checkpoint's U-Net with dynamic spatial axes and the checkpoint's
settings (preprocessing: spacing, HU window) as ONNX metadata, so the `.onnx` file alone is
enough to predict. `OrtModel` is a drop-in for the torch module inside MONAI's sliding window.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from lungseg.core.errors import InputError

__all__ = ["OrtModel", "export_onnx", "onnx_bytes"]

#: The ONNX metadata key holding the checkpoint's settings (JSON).
SETTINGS_KEY = "lungseg_settings"


def onnx_bytes(model_path: str | Path | None = None) -> tuple[bytes, dict]:
    """(ONNX model bytes, settings) of a checkpoint (default: the shipped model)."""
    import io

    import onnx

    from lungseg.networks import load_model

    if model_path is None:
        from lungseg.inference.predictor import DEFAULT_MODEL

        model_path = DEFAULT_MODEL
    model, settings = load_model(model_path, "cpu")
    buf = io.BytesIO()
    dummy = torch.zeros((1, 1, 32, 32, 32))
    spatial = {0: "batch", 2: "x", 3: "y", 4: "z"}
    with torch.no_grad():
        torch.onnx.export(model, (dummy,), buf, input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": spatial, "logits": spatial}, opset_version=17,
                          dynamo=False)
    proto = onnx.load_from_string(buf.getvalue())
    entry = proto.metadata_props.add()
    entry.key, entry.value = SETTINGS_KEY, json.dumps(settings)
    return proto.SerializeToString(), settings


def export_onnx(model_path: str | Path | None, out: str | Path) -> Path:
    """Write the checkpoint's network as ONNX to `out` (atomically); returns the path."""
    from lungseg.io.safety import atomic_path

    data, _ = onnx_bytes(model_path)
    out = Path(out)
    with atomic_path(out) as tmp:
        Path(tmp).write_bytes(data)
    return out


class OrtModel:
    """An ONNX Runtime session called like the torch U-Net: logits = model(x) (torch tensors).

    `path` is an `.onnx` file from `export_onnx`, or a checkpoint, exported in memory on load.
    CUDA runs where ONNX Runtime has its CUDA provider and `device` is not "cpu".
    """

    def __init__(self, path: str | Path | None, device: str = "cpu", threads: int | None = None):
        import onnxruntime as ort

        path = Path(path) if path is not None else None
        if path is not None and path.suffix.lower() == ".onnx":
            if not path.is_file():
                raise InputError("no such ONNX model", path)
            data = path.read_bytes()
            self.settings = _settings_from(data, path)
        else:
            data, self.settings = onnx_bytes(path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads() or os.cpu_count() or 1
        opts.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if device != "cpu" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(data, sess_options=opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise InputError(f"not a usable ONNX model: {str(exc).splitlines()[0]}", path) from None
        self.providers = self.session.get_providers()
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        (logits,) = self.session.run(None, {self.input_name: arr})
        return torch.from_numpy(logits).to(x.device)


def _settings_from(data: bytes, path: Path) -> dict:
    import onnx

    try:
        proto = onnx.load_from_string(data)
    except Exception:
        raise InputError("not an ONNX model file", path) from None
    meta = {p.key: p.value for p in proto.metadata_props}
    if SETTINGS_KEY not in meta:
        raise InputError("ONNX model without lungseg settings (export it with `lungseg export`)", path)
    return json.loads(meta[SETTINGS_KEY])
