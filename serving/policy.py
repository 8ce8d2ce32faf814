"""Routing policy: which appraisals the model decides alone, which go to reviewers, which wait.

`route` applies the rules below to one item, first match wins. The order is the policy:

1. `needs_more_photos`: too few photos, or any unusable one. Nobody, model or reviewer, can
   give a verdict on a photo that does not show the detail, and a retake is cheap; so this beats
   everything, even a VIP tier or a high value.
2. `model_unavailable`: the model is not loaded or gave no score. The upload is kept and a
   reviewer decides: never lose an upload.
3. `unknown_category`: the model was not trained on the item's category, so its score means
   nothing there, however confident it looks.
4. `high_value`: declared value above `high_value_cny`: two blind reviews (a fake certified as
   authentic costs the platform three times its price).
5. `vip_tier`: VIP members get the "AI + human" dual channel: a reviewer confirms every verdict.
6. `member_requested`: a member may always ask for a human (PIPL art. 24).
7. `uncertain`: the item's p_authentic lies between the thresholds.
8. `audit_sample`: a random share of would-be automatic verdicts goes to a reviewer, so the
   model's real error rate on what it decides alone stays measured.
9. `auto_authentic` / `auto_counterfeit`: the model decides alone.

Rules 2 to 6 do not need the model's score, so when one fires the reasons list every one of them
that applies (a reviewer should know that an item is both high-value and a VIP's), and a
high-value item gets two reviews whichever of them fired first.

Pure and torch-free: the only I/O is `load_policy`. The caller draws `audit_draw` (the service
uses `random.random()`), so the same request always routes the same way.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import yaml
from PIL import Image
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from touchstone.decision import HUMAN, Thresholds

Status = Literal["decided", "in_review", "awaiting_photos"]
Outcome = Literal["authentic", "counterfeit"]
DecisionPath = Literal["auto", "human"]

# Photo problems: stable codes the app turns into its own words.
TOO_SMALL = "too_small"
TOO_DARK = "too_dark"
TOO_BRIGHT = "too_bright"
BLURRED = "blurred"
PHOTO_PROBLEMS: tuple[str, ...] = (TOO_SMALL, TOO_DARK, TOO_BRIGHT, BLURRED)
_PROBLEM_WORDS = {
    TOO_SMALL: "too small",
    TOO_DARK: "too dark",
    TOO_BRIGHT: "too bright (blown out)",
    BLURRED: "blurred",
}


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
    """The routing policy; the defaults are the domain brief's."""

    tiers: tuple[str, ...] = ("explorer", "connoisseur", "collector", "master", "brand_confidant")
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
    min_photos: PositiveInt = 2
    max_photos: PositiveInt = 12
    max_photos_per_region: PositiveInt = 4
    authentic_at: float | None = Field(None, ge=0, le=1)
    counterfeit_at: float | None = Field(None, ge=0, le=1)
    photo_quality: PhotoQualityConfig = Field(default_factory=PhotoQualityConfig)

    @field_validator("tiers")
    @classmethod
    def _distinct_tiers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one tier is needed")
        twice = sorted({tier for tier in value if value.count(tier) > 1})
        if twice:
            raise ValueError(f"tier(s) listed twice: {', '.join(twice)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> PolicyConfig:
        tiers = set(self.tiers)
        unknown_vip = [tier for tier in self.vip_tiers if tier not in tiers]
        if unknown_vip:
            raise ValueError(f"vip_tiers names tier(s) not in tiers: {', '.join(unknown_vip)}")
        missing = [tier for tier in self.tiers if tier not in self.sla_hours]
        if missing:
            raise ValueError(f"sla_hours has no hours for tier(s): {', '.join(missing)}")
        extra = sorted(set(self.sla_hours) - tiers)
        if extra:
            raise ValueError(f"sla_hours names tier(s) not in tiers: {', '.join(extra)}")
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
        return self

    def check_tier(self, tier: str) -> None:
        if tier not in self.tiers:
            raise PolicyError(f"unknown member tier {tier!r}; the policy knows {list(self.tiers)}")

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
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path}: cannot read the policy: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        data = {}  # an empty file asks for the defaults
    if not isinstance(data, dict):
        raise PolicyError(
            f"{path}: a policy is a mapping of keys to values, not a {type(data).__name__}"
        )
    try:
        return PolicyConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_describe(error) for error in exc.errors())
        raise PolicyError(f"{path}: {problems}") from exc


def _describe(error: ErrorDetails) -> str:
    where = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        known = _keys_at(error["loc"][:-1])
        close = difflib.get_close_matches(str(error["loc"][-1]), known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"
        return f"{where}: unknown key{hint}"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def _keys_at(loc: tuple[int | str, ...]) -> list[str]:
    model: type[BaseModel] = PolicyConfig
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


# --- photo quality ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PhotoQuality:
    usable: bool
    problems: list[str]  # codes from PHOTO_PROBLEMS, in that order
    brightness: float  # mean luma, 0..255
    sharpness: float  # variance of the Laplacian at photo_quality.sharpness_side_px
    width: int
    height: int


def assess_photo(image: Image.Image, config: PolicyConfig) -> PhotoQuality:
    """Measure one decoded photo against `config.photo_quality`."""
    limits = config.photo_quality
    width, height = image.size
    if width == 0 or height == 0:
        return PhotoQuality(False, [TOO_SMALL], 0.0, 0.0, width, height)
    grey = _grey(image, limits.sharpness_side_px)
    brightness = float(grey.mean())
    sharpness = float(cv2.Laplacian(grey, cv2.CV_64F).var())
    problems = []
    if min(width, height) < limits.min_side_px:
        problems.append(TOO_SMALL)
    if brightness < limits.min_brightness:
        problems.append(TOO_DARK)
    elif brightness > limits.max_brightness:
        problems.append(TOO_BRIGHT)
    # A dark or blown-out photo has little contrast left, so its Laplacian is low whatever the
    # focus: only an exposed photo can be called blurred, and the member is told to fix the light.
    elif sharpness < limits.min_sharpness:
        problems.append(BLURRED)
    return PhotoQuality(not problems, problems, brightness, sharpness, width, height)


def _grey(image: Image.Image, side: int) -> np.ndarray:
    """The photo in grey, shrunk to at most `side` px on its longer side."""
    if image.mode not in ("L", "RGB", "RGBA"):
        image = image.convert("RGB")
    factor = max(image.size) // side
    if factor > 1:
        # An integer box shrink in Pillow first: converting a 12 MP photo to grey would cost
        # more than everything else here together.
        image = image.reduce(factor)
    grey = np.asarray(image if image.mode == "L" else image.convert("L"))
    height, width = grey.shape
    if max(height, width) > side:
        scale = side / max(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
    return grey


# --- routing ----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RoutingRequest:
    """One item, as routing sees it.

    `unusable_photos`: (photo, problem codes) for each photo that failed `assess_photo`; the
    photo is a name a person reads ("logo photo 2") or a number counted from 1.
    `model_categories`: the categories on the model card; empty means the model takes any.
    `thresholds`: the model card's; None when no model is loaded.
    `audit_draw`: uniform in [0, 1), drawn by the caller.
    """

    member_tier: str
    category: str | None
    declared_value_cny: float | None
    photo_count: int
    unusable_photos: Sequence[tuple[str | int, Sequence[str]]] = ()
    model_ready: bool
    p_authentic: float | None
    model_categories: tuple[str, ...] = ()
    thresholds: Thresholds | None = None
    human_review_requested: bool = False
    audit_draw: float


@dataclass(frozen=True)
class RoutingDecision:
    status: Status
    outcome: Outcome | None  # None while a reviewer decides or photos are awaited
    path: DecisionPath | None  # None while photos are awaited
    rule: str  # the rule that fired; stable, for metrics and the app
    reasons: list[str]  # sentences a person can read
    reviews_required: int  # 0: the model alone; 1: a reviewer; 2: two blind reviews
    sla_hours: int


def effective_thresholds(card: Thresholds | None, config: PolicyConfig) -> Thresholds:
    """The card's thresholds with the policy's overrides in place of those that are set."""
    authentic_at = card.authentic_at if card is not None else None
    counterfeit_at = card.counterfeit_at if card is not None else None
    if config.authentic_at is not None:
        authentic_at = config.authentic_at
    if config.counterfeit_at is not None:
        counterfeit_at = config.counterfeit_at
    try:
        return Thresholds(authentic_at, counterfeit_at)
    except ValueError as exc:
        raise PolicyError(
            f"the policy's threshold overrides do not fit the model card's: authentic_at "
            f"{authentic_at}, counterfeit_at {counterfeit_at} ({exc})"
        ) from exc


def route(request: RoutingRequest, config: PolicyConfig) -> RoutingDecision:
    """Route one item; the rules and their order are in the module's docstring."""
    sla = config.sla_for(request.member_tier)  # an unknown tier is a PolicyError
    _check_request(request)

    photo_reasons = _photo_reasons(request, config)
    if photo_reasons:
        return RoutingDecision(
            "awaiting_photos", None, None, "needs_more_photos", photo_reasons, 0, sla
        )

    value = request.declared_value_cny
    high_value = value is not None and value > config.high_value_cny
    human_rules = _model_rules(request) + _policy_rules(request, config, high_value)
    if human_rules:
        return _to_human(human_rules, high_value, sla)

    assert request.p_authentic is not None  # _model_rules sent a missing score to a reviewer
    p = request.p_authentic
    thresholds = effective_thresholds(request.thresholds, config)
    verdict = thresholds.route(p)
    if verdict == HUMAN:
        return _to_human([("uncertain", _uncertain_reason(p, thresholds))], False, sla)
    if request.audit_draw < config.audit_share:
        # The model's verdict stays out of the reason: the audit review is blind.
        reason = (
            f"picked at random for a quality check of the model's automatic verdicts "
            f"({config.audit_share:.0%} of them go to a reviewer)"
        )
        return _to_human([("audit_sample", reason)], False, sla)
    if verdict == "authentic":
        reason = f"p_authentic {p:.4g} is at or above the authentic threshold {_at(thresholds)}"
    else:
        reason = f"p_authentic {p:.4g} is at or below the counterfeit threshold {_ct(thresholds)}"
    return RoutingDecision(
        "decided", verdict, "auto", f"auto_{verdict}", [f"decided by the model: {reason}"], 0, sla
    )


def sla_due(tier: str, submitted_at: datetime, config: PolicyConfig) -> datetime:
    """When the final verdict is due; keeps `submitted_at`'s time zone (or lack of one)."""
    return submitted_at + timedelta(hours=config.sla_for(tier))


def _check_request(request: RoutingRequest) -> None:
    if request.photo_count < 0:
        raise ValueError(f"photo_count must be >= 0, got {request.photo_count}")
    if not 0.0 <= request.audit_draw < 1.0:
        raise ValueError(f"audit_draw must lie in [0, 1), got {request.audit_draw}")
    p = request.p_authentic
    if p is not None and not math.isnan(p) and not 0.0 <= p <= 1.0:
        raise ValueError(f"p_authentic is a probability, got {p}")


def _photo_reasons(request: RoutingRequest, config: PolicyConfig) -> list[str]:
    reasons = []
    if request.photo_count < config.min_photos:
        sent = "was" if request.photo_count == 1 else "were"
        reasons.append(
            f"at least {config.min_photos} photos are needed, {request.photo_count} {sent} sent"
        )
    for photo, problems in request.unusable_photos:
        name = f"photo {photo}" if isinstance(photo, int) else photo
        words = [_PROBLEM_WORDS.get(code, code.replace("_", " ")) for code in problems]
        reasons.append(f"{name} is {' and '.join(words) or 'unusable'}")
    return reasons


def _model_rules(request: RoutingRequest) -> list[tuple[str, str]]:
    """Why the model's score cannot be used for this item, if it cannot."""
    p = request.p_authentic
    if not request.model_ready:
        return [("model_unavailable", "the model is unavailable, so a reviewer decides")]
    if p is None or math.isnan(p):
        return [("model_unavailable", "the model gave no usable score, so a reviewer decides")]
    known = request.model_categories
    if known and request.category not in known:
        what = f"category {request.category!r}" if request.category else "an unnamed category"
        return [
            (
                "unknown_category",
                f"the model was not trained on {what} (it knows {', '.join(known)})",
            )
        ]
    return []


def _policy_rules(
    request: RoutingRequest, config: PolicyConfig, high_value: bool
) -> list[tuple[str, str]]:
    """Why policy sends this item to a reviewer whatever the model says."""
    rules = []
    if high_value:
        rules.append(
            (
                "high_value",
                f"the declared value {request.declared_value_cny:,.0f} CNY is above "
                f"{config.high_value_cny:,.0f} CNY, so two reviewers check it blind",
            )
        )
    if config.is_vip(request.member_tier):
        rules.append(
            (
                "vip_tier",
                f"a reviewer confirms every verdict for {request.member_tier} members",
            )
        )
    if request.human_review_requested:
        rules.append(("member_requested", "the member asked for a human review"))
    return rules


def _to_human(rules: list[tuple[str, str]], high_value: bool, sla: int) -> RoutingDecision:
    reasons = [reason for _, reason in rules]
    return RoutingDecision(
        "in_review", None, "human", rules[0][0], reasons, 2 if high_value else 1, sla
    )


def _uncertain_reason(p: float, thresholds: Thresholds) -> str:
    if thresholds.authentic_at is None and thresholds.counterfeit_at is None:
        return f"the model may not decide alone (no thresholds are set); p_authentic {p:.4g}"
    return (
        f"the model is not sure: p_authentic {p:.4g} lies between the counterfeit threshold "
        f"{_ct(thresholds)} and the authentic threshold {_at(thresholds)}"
    )


def _at(thresholds: Thresholds) -> str:
    value = thresholds.authentic_at
    return "(none: never authentic alone)" if value is None else f"{value:.4g}"


def _ct(thresholds: Thresholds) -> str:
    value = thresholds.counterfeit_at
    return "(none: never counterfeit alone)" if value is None else f"{value:.4g}"
