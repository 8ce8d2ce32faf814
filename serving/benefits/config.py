"""The benefits configuration (`configs/benefits.yaml`): free quota by tier, prices, the
benefit bank, rewards, compensation and points expiry. Every number is a default here and in
the YAML file, never a constant in the code that uses it (docs/benefits.md)."""

from __future__ import annotations

import zoneinfo
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, field_validator

from touchstone.config_files import ConfigFileError, load_yaml_model
from touchstone.vocabulary import TIERS, check_tier_names


class BenefitsError(ValueError):
    """A benefits file that cannot be used, with the reason."""


class BenefitsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    timezone: str = "Asia/Shanghai"
    # None: unlimited. Every tier of the vocabulary is listed, and no other (checked at load).
    free_appraisals_per_month: dict[str, NonNegativeInt | None] = Field(
        default_factory=lambda: {
            "explorer": 0,
            "connoisseur": 1,
            "collector": 2,
            "master": 4,
            "brand_confidant": None,
        }
    )
    points_per_appraisal: int = Field(1000, gt=0)
    appraisal_price_cny: float = Field(99.0, ge=0)
    bank_points_per_free_appraisal: NonNegativeInt = 500
    joining_discount_tiers: tuple[str, ...] = ("explorer",)
    joining_discount_cny: float = Field(50.0, ge=0)
    reward_points_per_verdict: NonNegativeInt = 100
    sla_coupon_cny: NonNegativeInt = 500
    overturn_refund: bool = True
    overturn_points: NonNegativeInt = 2000
    points_lifetime_days: int = Field(730, gt=0)
    expiry_reminder_days: NonNegativeInt = 30

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("free_appraisals_per_month")
    @classmethod
    def _quota_for_every_tier(cls, value: dict[str, int | None]) -> dict[str, int | None]:
        check_tier_names(value, "free_appraisals_per_month", every=True)
        return value

    @field_validator("joining_discount_tiers")
    @classmethod
    def _known_joining_tiers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        check_tier_names(value, "joining_discount_tiers")
        return value

    def free_per_month(self, tier: str) -> int | None:
        """The tier's free appraisals a month: None is unlimited. An unknown tier is an error,
        never a silent zero."""
        if tier not in TIERS:
            raise ValueError(f"unknown member tier {tier!r}; the tiers are {', '.join(TIERS)}")
        return self.free_appraisals_per_month[tier]

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)


def load_benefits(path: Path | None) -> BenefitsConfig:
    """Read a benefits file; None gives the defaults. Raise BenefitsError naming the bad key."""
    if path is None:
        return BenefitsConfig()
    try:
        return load_yaml_model(path, BenefitsConfig)
    except ConfigFileError as exc:
        raise BenefitsError(str(exc)) from exc
