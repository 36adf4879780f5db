"""Training configuration: one typed object, loadable from YAML, saved with every run.

Nested settings are typed too (`PreprocessingConfig`, `NetworkConfig`), and every level
forbids unknown keys, so a misspelt `spacnig:` is refused instead of silently ignored.

>>> cfg = TrainConfig(data="d", recipe="cpu-fast", lr=3e-4)
>>> cfg.preprocessing.spacing, cfg.loss, cfg.lr
((2.5, 2.5, 2.5), 'dicece', 0.0003)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lungseg.core.errors import InputError
from lungseg.networks import NetworkConfig
from lungseg.training.recipes import RECIPES, TUTORIAL, RecipeName
from lungseg.transforms import PreprocessingConfig

#: A config is a page of settings; anything larger is not one.
MAX_CONFIG_BYTES = 1 << 20
#: A window edge in voxels (patches, validation windows).
Window = Annotated[int, Field(ge=16, le=1024)]


class TrainConfig(BaseModel):
    """Defaults: the `tutorial` recipe (the reference notebook). `recipe` fills the fields not
    given explicitly from a named recipe (`lungseg.training.recipes`)."""

    model_config = ConfigDict(extra="forbid")

    data: str = Field(..., description="dataset root, dataset.json or CSV")
    out: str = Field("runs/train", description="run folder")
    recipe: RecipeName | None = Field(None, description="tutorial | cpu-fast | default-model")
    layout: Literal["auto", "pairs", "msd", "nnunet", "csv", "folders"] = "auto"
    label_mapping: str | None = None
    val_data: str | None = Field(None, description="separate validation dataset; default: split data")
    val_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    preprocessing: PreprocessingConfig = Field(default_factory=PreprocessingConfig)
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    roi_size: list[Window] = Field(default_factory=lambda: list(TUTORIAL["roi_size"]), min_length=3, max_length=3)
    num_samples: int = Field(TUTORIAL["num_samples"], ge=1, le=256,
                             description="patches drawn per volume per epoch (half lung, half background)")
    batch_size: int = Field(TUTORIAL["batch_size"], ge=1, le=1024, description="patches per optimiser step")
    lr: float = Field(TUTORIAL["lr"], gt=0.0, le=10.0)
    lr_schedule: Literal["constant", "cosine"] = Field(
        TUTORIAL["lr_schedule"], description="constant (reference) | cosine: decays to 1% over "
        "max_epochs or max_minutes, whichever ends first")
    weight_decay: float = Field(0.0, ge=0.0)
    loss: Literal["dice", "dicece"] = TUTORIAL["loss"]
    max_epochs: int = Field(TUTORIAL["max_epochs"], ge=1)
    max_minutes: float | None = Field(None, gt=0.0)
    val_every: int = Field(TUTORIAL["val_every"], ge=1)
    val_overlap: float = Field(TUTORIAL["val_overlap"], ge=0.0, lt=1.0)
    val_roi_size: list[Window] = Field(default_factory=lambda: list(TUTORIAL["val_roi_size"]),
                                       min_length=3, max_length=3)
    slab_prob: float = Field(0.0, ge=0.0, le=1.0, description="share of patches turned into thin slabs "
                             "or cut fields of view, edges replicated as at inference")
    mass_prob: float = Field(0.0, ge=0.0, le=1.0, description="share of patches given a soft-tissue "
                             "mass inside the lung (still labelled lung)")
    fibrosis_prob: float = Field(0.0, ge=0.0, le=1.0, description="share of patches given subpleural "
                                 "fibrosis (honeycombing, reticulation; still labelled lung)")
    collapse_prob: float = Field(0.0, ge=0.0, le=1.0, description="share of patches with part of a lung "
                                 "made airless (collapse, consolidation; still labelled lung)")
    pneumonia_prob: float = Field(0.0, ge=0.0, le=1.0, description="share of patches given pneumonia "
                                  "(peripheral ground glass, consolidation; still labelled lung)")
    amp: bool = True
    cpu_bf16: bool = Field(False, description="bfloat16 autocast when training on the CPU (about 1.6x "
                           "faster steps on CPUs with AVX512-BF16 or AMX; weights stay float32)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_workers: int = Field(0, ge=0, le=64)
    seed: int = 0
    resume: bool = False
    init_weights: str | None = Field(None, description="checkpoint whose weights start the training "
                                     "(fine-tuning); its network settings must match")
    progress: bool = True

    @model_validator(mode="before")
    @classmethod
    def _apply_recipe(cls, values: Any) -> Any:
        """Recipe values sit under the explicit ones (explicit always wins)."""
        if isinstance(values, dict) and values.get("recipe") in RECIPES:
            return {**RECIPES[values["recipe"]], **values}
        return values

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """Read a YAML file; `overrides` that are not None replace its values."""
        from lungseg.io.limits import require_regular_file

        path = Path(path)
        if not path.exists():
            raise InputError("config file not found", path)
        if require_regular_file(path).st_size > MAX_CONFIG_BYTES or path.is_dir():
            raise InputError("not a YAML config file (a folder, or larger than 1 MiB)", path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise InputError(f"cannot read config ({exc})".splitlines()[0], path) from None
        if not isinstance(raw, dict):
            raise InputError(f"config must be a mapping of settings (key: value lines), got a YAML "
                             f"{type(raw).__name__}", path)
        raw.update({k: v for k, v in overrides.items() if v is not None})
        return cls.validated(raw, path)

    @classmethod
    def validated(cls, values: dict[str, Any], path: str | Path | None = None) -> TrainConfig:
        """Build from a dict; a bad key or value becomes one `InputError` line naming it."""
        try:
            return cls(**values)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(map(str, first["loc"])) or "config"
            msg = first["msg"].replace("Extra inputs are not permitted", "unknown setting")
            raise InputError(f"invalid config: {where}: {msg}", path) from None

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def settings(self) -> dict[str, Any]:
        """What a checkpoint needs to be used for prediction."""
        return {"preprocessing": self.preprocessing.model_dump(mode="json"),
                "network": self.network.model_dump(mode="json"), "roi_size": self.roi_size}
