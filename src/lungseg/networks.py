"""Model factory and checkpoints that load without executing pickled code.

A checkpoint is a plain dict of tensors and JSON-able values saved with `torch.save`
and read back with `torch.load(weights_only=True)`, so a downloaded `.pt` cannot run code.
It carries the model and preprocessing settings the weights were trained with, so
`predict` needs nothing but the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
from monai.networks.nets import UNet
from pydantic import BaseModel, ConfigDict, Field

from lungseg.core.errors import InputError
from lungseg.io.safety import atomic_path


class NetworkConfig(BaseModel):
    """The U-Net; defaults are the reference recipe's: MONAI 3D U-Net 16-32-64-128-256,
    2 residual units, batch norm."""

    model_config = ConfigDict(extra="forbid")

    channels: list[int] = Field(default_factory=lambda: [16, 32, 64, 128, 256])
    strides: list[int] = Field(default_factory=lambda: [2, 2, 2, 2])
    num_res_units: int = 2
    norm: Literal["batch", "instance"] = "batch"
    #: background + lung. Sides come from anatomy and the affine in post-processing, which
    #: is exact; 3 (background, right, left) is also supported.
    out_channels: Literal[2, 3] = 2


#: The reference network as a plain dict (what checkpoints store).
DEFAULT_NETWORK: dict[str, Any] = NetworkConfig().model_dump()


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' is CUDA where present, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def build_unet(network: dict[str, Any] | None = None) -> UNet:
    """MONAI UNet from a settings dict (defaults: the reference recipe)."""
    cfg = {**DEFAULT_NETWORK, **(network or {})}
    return UNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=int(cfg["out_channels"]),
        channels=tuple(cfg["channels"]),
        strides=tuple(cfg["strides"]),
        num_res_units=int(cfg["num_res_units"]),
        norm=cfg["norm"],
    )


def save_checkpoint(path: str | Path, model: torch.nn.Module, settings: dict[str, Any],
                    extra: dict[str, Any] | None = None, half: bool = False) -> Path:
    """Write model weights + settings atomically. `half` stores float16 weights (smaller files)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu()
             for k, v in _unwrap(model).state_dict().items()}
    payload = {"format": "lungseg-checkpoint-v1", "state_dict": state,
               "settings_json": json.dumps(settings)}
    for key, value in (extra or {}).items():
        payload[key] = value
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint safely (no pickled code). Returns the payload with `settings` decoded."""
    path = Path(path)
    if not path.is_file():
        raise InputError("model checkpoint not found", path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"not a loadable lungseg checkpoint ({type(exc).__name__})", path) from None
    if not isinstance(payload, dict) or payload.get("format") != "lungseg-checkpoint-v1":
        raise InputError("not a lungseg checkpoint (missing format tag)", path)
    payload["settings"] = json.loads(payload["settings_json"])
    return payload


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[UNet, dict[str, Any]]:
    """Model in eval mode on `device`, plus the settings it was trained with."""
    payload = load_checkpoint(path)
    settings = payload["settings"]
    model = build_unet(settings.get("network"))
    state = {k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise InputError(f"weights do not fit the network described in the checkpoint: {exc}".splitlines()[0], path) from None
    return model.to(device).eval(), settings


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model
