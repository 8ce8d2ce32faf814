"""The routing policy's settings (`configs/policy.yaml`): each tier's SLA, which tiers are VIP,
who goes to people whatever the model says, photo counts and quality limits, the audit shares,
the traffic's declared counterfeit share, and optional threshold overrides (item log-odds, only
ever stricter than the model card's: `serving/policy/overrides.py`). Every number is a default
here and in the YAML file, never a constant in the code that uses it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator

from touchstone.config_files import ConfigFileError, load_yaml_model
from touchstone.model_card import CounterfeitShare
from touchstone.vocabulary import TIERS, check_tier_names


class PolicyError(ValueError):
    """A policy that cannot be used, or a request naming something the policy does not know."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PhotoQualityConfig(_Strict):
    """Limits a photo must meet before anyone judges the item from it (see configs/policy.yaml
    for how each default was chosen)."""

    min_side_px: PositiveInt = 64
    min_brightness: float = Field(30.0, ge=0, le=255)
    max_brightness: float = Field(245.0, ge=0, le=255)
    min_sharpness: float = Field(8.0, ge=0)
    # The Laplacian variance depends on scale: the threshold only means something at this size.
    sharpness_side_px: int = Field(512, ge=32)

    @model_validator(mode="after")
    def _brightness_range(self) -> PhotoQualityConfig:
        if self.min_brightness >= self.max_brightness:
            raise ValueError("photo_quality.min_brightness must lie below max_brightness")
        return self


class PolicyConfig(_Strict):
    """The routing policy; the defaults are the domain's decisions (docs/domain.md)."""

    vip_tiers: tuple[str, ...] = ("collector", "master", "brand_confidant")
    sla_hours: dict[str, PositiveInt] = Field(
        default_factory=lambda: {
            "explorer": 48,
            "connoisseur": 24,
            "collector": 24,
            "master": 12,
            "brand_confidant": 12,
        }
    )
    high_value_cny: float = Field(50_000, gt=0)
    audit_share: float = Field(0.02, ge=0, le=1)
    # Used instead while either of the card's thresholds is None: the audited items are the
    # evidence a recertification needs, so they come fastest where it is missing.
    audit_share_while_unsupported: float = Field(0.25, ge=0, le=1)
    # The counterfeit share the traffic is expected to hold; it must lie inside the range the
    # card's error rates are certified for.
    counterfeit_share: CounterfeitShare = Field(default_factory=CounterfeitShare)
    min_photos: PositiveInt = 2
    max_photos: PositiveInt = 12
    max_photos_per_region: PositiveInt = 4
    # Item log-odds of authentic, as on the card; only ever stricter than the card's.
    authentic_at: float | None = Field(None, allow_inf_nan=False)
    counterfeit_at: float | None = Field(None, allow_inf_nan=False)
    photo_quality: PhotoQualityConfig = Field(default_factory=PhotoQualityConfig)

    @model_validator(mode="before")
    @classmethod
    def _no_tier_list(cls, data: Any) -> Any:
        # Policy files once listed the tiers; now the vocabulary does, and only it.
        if isinstance(data, dict) and "tiers" in data:
            raise ValueError(
                "tiers: the tiers are fixed (touchstone.vocabulary.TIERS); remove this key"
            )
        return data

    @field_validator("vip_tiers")
    @classmethod
    def _known_vip_tiers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        check_tier_names(value, "vip_tiers")
        return value

    @field_validator("sla_hours")
    @classmethod
    def _hours_for_every_tier(cls, value: dict[str, int]) -> dict[str, int]:
        check_tier_names(value, "sla_hours", every=True)
        return value

    @property
    def tiers(self) -> tuple[str, ...]:
        """The member tiers, lowest to highest (the vocabulary's; never the file's)."""
        return TIERS

    @model_validator(mode="after")
    def _consistent(self) -> PolicyConfig:
        if self.max_photos < self.min_photos:
            raise ValueError("max_photos must be at least min_photos")
        if self.max_photos_per_region > self.max_photos:
            raise ValueError("max_photos_per_region must not exceed max_photos")
        if (
            self.authentic_at is not None
            and self.counterfeit_at is not None
            and self.counterfeit_at >= self.authentic_at
        ):
            raise ValueError("counterfeit_at must lie below authentic_at")
        if self.audit_share_while_unsupported < self.audit_share:
            raise ValueError(
                "audit_share_while_unsupported must be at least audit_share: a card with an "
                "unsupported side needs more audited items, not fewer"
            )
        return self

    def audit_share_for(self, supported_sides: int) -> float:
        """The audit share for a card that supports this many sides (0, 1 or 2)."""
        return self.audit_share if supported_sides == 2 else self.audit_share_while_unsupported

    def check_tier(self, tier: str) -> None:
        if tier not in TIERS:
            raise PolicyError(f"unknown member tier {tier!r}; the tiers are {list(TIERS)}")

    def sla_for(self, tier: str) -> int:
        self.check_tier(tier)
        return self.sla_hours[tier]

    def is_vip(self, tier: str) -> bool:
        self.check_tier(tier)
        return tier in self.vip_tiers


def load_policy(path: Path | None) -> PolicyConfig:
    """Read a policy YAML file; None gives the defaults. Raise PolicyError naming the bad key."""
    if path is None:
        return PolicyConfig()
    try:
        return load_yaml_model(path, PolicyConfig)
    except ConfigFileError as exc:
        raise PolicyError(str(exc)) from exc
