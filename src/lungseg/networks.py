"""Model factory and checkpoints that load without executing pickled code.

A checkpoint is a plain dict of tensors and JSON-able values saved with `torch.save`
and read back with `torch.load(weights_only=True)`, so a downloaded `.pt` cannot run code.
It carries the model and preprocessing settings the weights were trained with, so
`predict` needs nothing but the file.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from monai.networks.nets import UNet
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lungseg.core.errors import InputError
from lungseg.io.safety import atomic_path

CHECKPOINT_FORMAT = "lungseg-checkpoint-v1"
#: Bounds on a network a config or checkpoint may describe (the reference is 16..256, 5 levels).
MAX_CHANNELS = 1024
MAX_LEVELS = 8
MAX_STRIDE = 4
MAX_RES_UNITS = 8


class NetworkConfig(BaseModel):
    """The U-Net; defaults are the reference recipe's: MONAI 3D U-Net 16-32-64-128-256,
    2 residual units, batch norm. Bounded so that a config or a checkpoint cannot describe
    a network that would not fit any machine (each channel count <= 1024, <= 8 levels)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    channels: list[Annotated[int, Field(ge=1, le=MAX_CHANNELS)]] = Field(
        default_factory=lambda: [16, 32, 64, 128, 256], min_length=2, max_length=MAX_LEVELS)
    strides: list[Annotated[int, Field(ge=1, le=MAX_STRIDE)]] = Field(
        default_factory=lambda: [2, 2, 2, 2], min_length=1, max_length=MAX_LEVELS - 1)
    num_res_units: int = Field(2, ge=0, le=MAX_RES_UNITS)
    norm: Literal["batch", "instance"] = "batch"
    #: background + lung. Sides come from anatomy and the affine in post-processing, which
    #: is exact; 3 (background, right, left) is also supported.
    out_channels: Literal[2, 3] = 2

    @model_validator(mode="after")
    def _one_stride_per_level(self) -> NetworkConfig:
        if len(self.strides) != len(self.channels) - 1:
            raise ValueError(f"{len(self.channels)} channel counts need {len(self.channels) - 1} "
                             f"strides, got {len(self.strides)}")
        return self


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
    payload = {"format": CHECKPOINT_FORMAT, "state_dict": state,
               "settings_json": json.dumps(settings)}
    for key, value in (extra or {}).items():
        payload[key] = value
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def _a(value: Any) -> str:
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _first_error(exc: ValidationError, prefix: str) -> str:
    first = exc.errors()[0]
    where = ".".join(map(str, (prefix, *first["loc"])))
    return f"{where}: {first['msg']}"


def _settings_of(payload: dict, path: Path) -> dict[str, Any]:
    """Decode and validate `settings_json`: network bounded, preprocessing typed."""
    from lungseg.transforms import PreprocessingConfig

    if "settings_json" not in payload:
        raise InputError("checkpoint has no settings_json field (not written by lungseg?)", path)
    text = payload["settings_json"]
    if not isinstance(text, str):
        raise InputError(f"checkpoint field settings_json is {_a(text)}, not JSON text", path)
    try:
        settings = json.loads(text)
    except ValueError as exc:
        raise InputError(f"checkpoint field settings_json is not valid JSON ({exc})", path) from None
    if not isinstance(settings, dict):
        raise InputError(f"checkpoint field settings_json is a JSON {type(settings).__name__}, "
                         "not an object of settings", path)
    for key, model in (("network", NetworkConfig), ("preprocessing", PreprocessingConfig)):
        value = settings.get(key, {})
        if not isinstance(value, dict):
            raise InputError(f"checkpoint field settings.{key} is {_a(value)}, "
                             "not an object", path)
        try:
            settings[key] = model(**value).model_dump(mode="json")
        except ValidationError as exc:
            raise InputError(f"invalid checkpoint settings: {_first_error(exc, 'settings.' + key)}",
                             path) from None
        except TypeError as exc:  # non-string keys
            raise InputError(f"invalid checkpoint settings.{key} ({exc})", path) from None
    spacing = settings["preprocessing"]["spacing"]
    if not all(0.1 <= float(s) <= 20.0 for s in spacing):
        raise InputError(f"checkpoint field settings.preprocessing.spacing {spacing} is outside "
                         "0.1-20 mm", path)
    roi = settings.get("roi_size")
    if roi is not None and not (isinstance(roi, list) and len(roi) == 3
                                and all(type(v) is int and 16 <= v <= 1024 for v in roi)):
        raise InputError(f"checkpoint field settings.roi_size must be 3 integers in 16-1024, got {roi!r}"[:300],
                         path)
    return settings


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint safely (no pickled code) and validate it as a schema.

    Returns the payload with `settings` decoded and validated (`network` is a bounded
    `NetworkConfig`, `preprocessing` a `PreprocessingConfig`, both as plain dicts) and
    `state_dict` checked to be a dict of tensors whose names and shapes fit that network
    (checked on the meta device, before anything is allocated). Raises a one-line
    `InputError` naming the file and the field otherwise.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("model checkpoint not found", path)
    if not path.is_file():
        raise InputError("model checkpoint is not a regular file", path)
    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols are not the user's business
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"not a loadable lungseg checkpoint ({type(exc).__name__})", path) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise InputError("not a lungseg checkpoint (missing format tag)", path)
    payload["settings"] = _settings_of(payload, path)
    state = payload.get("state_dict")
    if state is None:
        raise InputError("checkpoint has no state_dict field (no weights)", path)
    if not isinstance(state, dict):
        raise InputError(f"checkpoint field state_dict is {_a(state)}, not a dict of tensors", path)
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise InputError(f"checkpoint field state_dict[{str(key)[:80]!r}] is {_a(value)}, "
                             "not a tensor", path)
        if value.is_sparse or value.is_quantized or value.device.type != "cpu":
            raise InputError(f"checkpoint field state_dict[{key[:80]!r}] is not a dense CPU tensor", path)
    _check_shapes(state, payload["settings"]["network"], path)
    return payload


def _check_shapes(state: dict[str, torch.Tensor], network: dict[str, Any], path: Path) -> None:
    """Weights must fit the network the settings describe; compared on the meta device."""
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in build_unet(network).state_dict().items()}
    missing = [k for k in expected if k not in state]
    if missing:
        raise InputError(f"checkpoint state_dict lacks {missing[0]!r} ({len(missing)} weight(s) of the "
                         "network in settings.network missing)", path)
    extra = [k for k in state if k not in expected]
    if extra:
        raise InputError(f"checkpoint state_dict has {extra[0][:80]!r}, which the network in "
                         "settings.network does not have", path)
    for key, shape in expected.items():
        if tuple(state[key].shape) != shape:
            raise InputError(f"checkpoint state_dict[{key!r}] has shape {tuple(state[key].shape)}, the "
                             f"network in settings.network needs {shape}", path)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[UNet, dict[str, Any]]:
    """Model in eval mode on `device`, plus the settings it was trained with."""
    payload = load_checkpoint(path)
    settings = payload["settings"]
    model = build_unet(settings["network"])
    state = {k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise InputError(f"weights do not fit the network described in the checkpoint: {exc}".splitlines()[0], path) from None
    return model.to(device).eval(), settings


def average_weights(paths: list[str | Path]) -> tuple[UNet, dict[str, Any]]:
    """Uniform "model soup" (Wortsman et al., ICML 2022): the mean of the weights of runs
    fine-tuned from one initialisation, as one model in eval mode.

    Why: runs that differ only in their random seed disagree by 0.02-0.2 on hard real scans
    (docs/model_notes.md, "Build-to-build noise"); the average of the shipped two was at least as good
    as the better run on the crops and the masses and costs nothing at inference, unlike an
    ensemble, but it inherits a bad run's failure, so each run is checked first. Batch-norm
    statistics are averaged too (integer counters are taken from the first run). Runs must
    describe the same network and preprocessing; the first one's settings are returned.
    """
    if not paths:
        raise ValueError("average_weights needs at least one checkpoint")
    payloads = [load_checkpoint(p) for p in paths]
    first = payloads[0]["settings"]
    for p, payload in zip(paths[1:], payloads[1:], strict=True):
        for key in ("network", "preprocessing"):
            if payload["settings"][key] != first[key]:
                raise InputError(f"settings.{key} differs from {Path(paths[0]).name}'s; only runs of one "
                                 "network and preprocessing can be averaged", p)
    state = {}
    for key, value in payloads[0]["state_dict"].items():
        if value.is_floating_point():
            state[key] = torch.stack([pl["state_dict"][key].double() for pl in payloads]).mean(0).float()
        else:
            state[key] = value
    model = build_unet(first["network"])
    model.load_state_dict(state)
    return model.eval(), first


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model
