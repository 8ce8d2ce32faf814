"""Recertification: the thresholds certified again on the export's calib items pooled with the
audit stream, the finalised verdicts of appraisals that serving sent to people at random.

Serving routes a random share of every item the model may judge to reviewers (rule
`audit_sample`, drawn before the model's score is looked at), so the audited items are a simple
random sample of the traffic the certification covers, and their final outcomes are unbiased
labels: what calib is meant to be. The certification bounds per-class error shares, which do not
depend on the mix of classes, so pooling calib (whatever its mix) with the audit stream is sound.

Pure (no database, no torch): `touchstone recertify` reads the audited appraisals from the
service's database (`serving.recertification_source`) and calls these functions; the simulation
in the tests runs the same loop.

Versions: an export's card has version = the ONNX file's sha256[:12]. A recertified card keeps
that prefix and adds `.c<certification>` (`e8db3719b8f4.c2`), so an appraisal's model_version
still names the ONNX file that scored it, whichever certification routed it; every certification
of one file gives the same photo log-odds, and the item rule does not change.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from touchstone.decision import missing_regions
from touchstone.evaluation.bounds import clopper_pearson_interval
from touchstone.evaluation.policy import (
    CertifiedSample,
    card_thresholds,
    certify_items,
    policy_from_card,
)
from touchstone.evaluation.thresholds import ShareRange
from touchstone.model_card import CardThresholds, ModelCard

CALIB = "calib"
AUDIT = "audit"
SIDES = ("false_authentic", "false_counterfeit")
LABELS = ("authentic", "counterfeit")  # inconclusive is not a label
# Why an audited item is left out here (the database side adds its own reasons).
ITEM_REASONS = ("inconclusive", "no_scored_photos", "missing_region")
MIX_CONFIDENCE = 0.95


@dataclass(frozen=True)
class AuditedItem:
    """One finalised audit appraisal: its category, final outcome and scored photos."""

    category: str | None
    outcome: str  # authentic, counterfeit or inconclusive
    photos: tuple[tuple[str, float], ...]  # (region, photo log-odds)


@dataclass
class AuditedSample:
    """The audited items that can be certified on: item log-odds and labels (1 authentic)."""

    log_odds: np.ndarray
    labels: np.ndarray
    left_out: Counter[str] = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self.labels)


def onnx_version(card: ModelCard) -> str:
    """What every card of this ONNX file's versions starts with."""
    return card.onnx.sha256[:12]


def certified_version(card: ModelCard, certification: int) -> str:
    """The version a card of this ONNX file carries at a certification (1: the export's)."""
    base = onnx_version(card)
    return base if certification == 1 else f"{base}.c{certification}"


def scored_by_same_onnx(card: ModelCard, model_version: str | None) -> bool:
    """Whether an appraisal's model_version names this card's ONNX file (any certification)."""
    if not model_version:
        return False
    base = onnx_version(card)
    return model_version == base or model_version.startswith(base + ".")


def audited_sample(card: ModelCard, items: Iterable[AuditedItem]) -> AuditedSample:
    """Item log-odds with the card's item rule, recomputed from the stored photo log-odds; items
    without a label, without a scored photo, or lacking a region the card requires (they are
    never decided alone, so the certification does not cover them) are counted and left out."""
    aggregation = card.aggregation()
    required = dict(card.thresholds.required_regions)
    log_odds: list[float] = []
    labels: list[int] = []
    left_out: Counter[str] = Counter()
    for item in items:
        if item.outcome not in LABELS:
            left_out["inconclusive"] += 1
        elif not item.photos:
            left_out["no_scored_photos"] += 1
        elif missing_regions(item.category, [r for r, _ in item.photos], required):
            left_out["missing_region"] += 1
        else:
            log_odds.append(aggregation.item_log_odds(list(item.photos)))
            labels.append(int(item.outcome == "authentic"))
    return AuditedSample(np.asarray(log_odds, dtype=np.float64), np.asarray(labels), left_out)


def audited_mix(
    labels: np.ndarray, declared: ShareRange, confidence: float = MIX_CONFIDENCE
) -> dict[str, Any]:
    """The counterfeit share of the audited items, which is the traffic's (a random sample of
    it), with its two-sided Clopper-Pearson interval, against the range the rates are bounded
    for: outside it, the card's decision-rate bounds do not describe this traffic."""
    n = len(labels)
    counterfeit = int(n - np.sum(np.asarray(labels) > 0.5))
    low, high = clopper_pearson_interval(counterfeit, n, confidence)
    share = counterfeit / n if n else None
    return {
        "items": n,
        "counterfeit": counterfeit,
        "counterfeit_share": share,
        "interval": [low, high],
        "confidence": confidence,
        "declared": {"low": declared.low, "high": declared.high},
        "inside_range": share is not None and declared.low <= share <= declared.high,
        # Only an interval wholly outside the range is evidence that the range is wrong.
        "range_excluded": n > 0 and (high < declared.low or low > declared.high),
    }


def calib_part(card: ModelCard) -> CertifiedSample:
    """The card's certification sample, which holds the export's calib items only: a sample that
    names other sources would count audit items twice once they are pooled again."""
    sample = policy_from_card(card).sample
    assert sample is not None
    other = set(sample.sources) - {CALIB}
    if other:
        raise ValueError(
            f"the card's thresholds.sample names sources {sorted(other)}: it must hold the "
            "export's calib items only"
        )
    return sample


def recertify(
    card: ModelCard,
    audited_log_odds: np.ndarray,
    audited_labels: np.ndarray,
    audit: Mapping[str, Any] | None = None,
) -> CardThresholds:
    """The card's thresholds certified again, with its targets and range, on its calib items
    pooled with the audited ones (log-odds by the card's rule; labels 1 authentic). `audit`:
    what else to record of the audit (the left-out counts, the window)."""
    policy = policy_from_card(card)
    calib = calib_part(card)
    z = np.asarray(audited_log_odds, dtype=np.float64)
    y = np.asarray(audited_labels)
    pooled = calib.pooled(CertifiedSample.of(z, y, AUDIT))
    thresholds, evidence = certify_items(pooled, policy.targets)
    if "left_out_missing_a_region" in policy.evidence:  # calib's, from the export
        evidence["left_out_missing_a_region"] = policy.evidence["left_out_missing_a_region"]
    evidence["audit"] = {
        **(audit or {}),
        "mix": audited_mix(y, policy.targets.counterfeit_share),
    }
    evidence["previous"] = {
        "version": card.version,
        "certification": card.thresholds.certification,
        "authentic_at": card.thresholds.authentic_at,
        "counterfeit_at": card.thresholds.counterfeit_at,
    }
    # The card keeps the calib part alone as its sample; the audit comes from the database again.
    certified = replace(policy, thresholds=thresholds, evidence=evidence, sample=calib)
    return card_thresholds(certified, certification=card.thresholds.certification + 1)


def recertified_card(
    card: ModelCard, thresholds: CardThresholds, now: dt.datetime | None = None
) -> ModelCard:
    """The same card with the new thresholds block, version and creation time. Its held-out
    metrics were measured at an earlier certification's thresholds: the card says which."""
    metrics = dict(card.metrics)
    metrics.setdefault("measured_at_certification", card.thresholds.certification)
    now = now or dt.datetime.now(dt.UTC)
    # Validated again as a whole: the new thresholds must fit the rest of the card.
    return ModelCard.model_validate(
        {
            **card.model_dump(),
            "thresholds": thresholds.model_dump(),
            "version": certified_version(card, thresholds.certification),
            "created_at": now.isoformat(timespec="seconds"),
            "metrics": metrics,
        }
    )


def unsupported_sides(thresholds: CardThresholds) -> tuple[str, ...]:
    """The sides the card never decides alone: while any, serving audits a larger share."""
    return tuple(
        side
        for side, at in zip(
            SIDES, (thresholds.authentic_at, thresholds.counterfeit_at), strict=True
        )
        if at is None
    )


def side_summary(thresholds: CardThresholds, side: str) -> dict[str, str]:
    """One side of a thresholds block in words, for the before/after table."""
    evidence: Mapping[str, Any] = thresholds.evidence.get(side, {})
    at = thresholds.authentic_at if side == SIDES[0] else thresholds.counterfeit_at
    target = getattr(thresholds.targets, side)
    bound = evidence.get("rate_bound")
    coverage = evidence.get("class_coverage")
    return {
        "supported": "yes" if at is not None else "no",
        "threshold": "none" if at is None else f"{at:.4g}",
        "coverage": "-" if coverage is None else f"{coverage:.1%}",
        "rate bound": f"target {target:.2%}" + ("" if bound is None else f", bound {bound:.2%}"),
        "plan": "-" if at is not None else _plan(evidence.get("plan")),
    }


def _plan(plan: Mapping[str, Any] | None) -> str:
    if not plan:
        return "-"
    if plan.get("reachable"):
        return f"{plan['extra_items']} more labelled items"
    return str(plan.get("reason", "unreachable"))


def sources_rows(thresholds: CardThresholds) -> Sequence[tuple[str, int, int]]:
    """(source, authentic, counterfeit) of the items certified on."""
    sources: Mapping[str, Mapping[str, int]] = thresholds.evidence.get("sources", {})
    return [
        (name, int(counts.get("authentic", 0)), int(counts.get("counterfeit", 0)))
        for name, counts in sources.items()
    ]
