"""Training configuration: one typed object, loadable from YAML, saved with every run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

from lungseg.errors import InputError
from lungseg.networks import DEFAULT_NETWORK
from lungseg.transforms import DEFAULT_PREPROCESSING


class TrainConfig(BaseModel):
    """The reference recipe by default; every field can be set from YAML or the CLI."""

    model_config = {"extra": "forbid"}

    data: str = Field(..., description="dataset root, dataset.json or CSV")
    out: str = Field("runs/train", description="run folder")
    layout: str = "auto"
    label_mapping: str | None = None
    val_data: str | None = Field(None, description="separate validation dataset; default: split data")
    val_fraction: float = 0.2
    preprocessing: dict[str, Any] = Field(default_factory=lambda: dict(DEFAULT_PREPROCESSING))
    network: dict[str, Any] = Field(default_factory=lambda: dict(DEFAULT_NETWORK))
    roi_size: list[int] = Field(default_factory=lambda: [96, 96, 96])
    num_samples: int = Field(4, description="patches drawn per volume per epoch (half lung, half background)")
    batch_size: int = 2
    lr: float = 1e-4
    lr_schedule: str = Field("constant", description="constant (reference) | cosine: decays to 1% "
                             "over max_epochs or max_minutes, whichever ends first")
    weight_decay: float = 0.0
    loss: str = Field("dicece", description="dice | dicece")
    max_epochs: int = 500
    max_minutes: float | None = None
    val_every: int = 5
    val_overlap: float = 0.5
    val_roi_size: list[int] = Field(default_factory=lambda: [160, 160, 160])
    amp: bool = True
    device: str = "auto"
    num_workers: int = 0
    seed: int = 0
    resume: bool = False
    progress: bool = True

    @field_validator("network")
    @classmethod
    def _network_defaults(cls, value: dict[str, Any]) -> dict[str, Any]:
        """A partial network dict (e.g. only channels) keeps the other reference settings."""
        return {**DEFAULT_NETWORK, **value}

    @field_validator("preprocessing")
    @classmethod
    def _preprocessing_defaults(cls, value: dict[str, Any]) -> dict[str, Any]:
        return {**DEFAULT_PREPROCESSING, **value}

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise InputError(f"cannot read config ({exc})".splitlines()[0], path) from None
        raw.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise InputError(f"invalid config: {'.'.join(map(str, first['loc']))}: {first['msg']}", path) from None

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(), sort_keys=False)

    def settings(self) -> dict[str, Any]:
        """What a checkpoint needs to be used for prediction."""
        return {"preprocessing": self.preprocessing, "network": self.network,
                "roi_size": self.roi_size}
