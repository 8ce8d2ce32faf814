"""Recertification on the audit stream: the pure pieces, and weeks of simulated traffic in which
the audited items let a model that starts unsupported decide alone, within its targets."""

from __future__ import annotations

import datetime as dt
import itertools

import numpy as np
import pytest

from touchstone.decision import HUMAN, ItemAggregation
from touchstone.evaluation.policy import (
    CertifiedSample,
    DecisionPolicy,
    card_thresholds,
    certify_items,
)
from touchstone.evaluation.recertification import (
    AuditedItem,
    audited_mix,
    audited_sample,
    certified_version,
    recertified_card,
    recertify,
    scored_by_same_onnx,
    unsupported_sides,
)
from touchstone.evaluation.thresholds import ShareRange, Targets
from touchstone.model_card import (
    Calibration,
    CardPreprocessing,
    ItemRule,
    ModelCard,
    OnnxInfo,
    PhotoCalibration,
)

SHA = "ab12cd34ef56" + "0" * 52
REGIONS = ("hardware", "stitching", "logo")
WEIGHTS = (1.0, 0.5, 0.25)
BIAS = -0.1
SHARE = 0.2  # the traffic's counterfeit share, inside the card's 10% to 30%


def card_certified_on(
    log_odds: np.ndarray,
    labels: np.ndarray,
    required: dict[str, tuple[str, ...]] | None = None,
    sources: str = "calib",
) -> ModelCard:
    """A card as an export writes it, its thresholds certified on these calib items."""
    targets = Targets()
    sample = CertifiedSample.of(log_odds, labels, sources)
    thresholds, evidence = certify_items(sample, targets)
    aggregation = ItemAggregation(REGIONS, WEIGHTS, BIAS)
    policy = DecisionPolicy(1.0, aggregation, thresholds, targets, evidence, required or {}, sample)
    return ModelCard(
        name="simulated",
        version=SHA[:12],
        architecture="none",
        regions=REGIONS,
        preprocessing=CardPreprocessing(
            input_size=64, mean=(0.5,) * 3, std=(0.5,) * 3, interpolation="bilinear", crop_pct=1.0
        ),
        onnx=OnnxInfo(sha256=SHA, opset=17, input_name="pixels", output_name="log_odds"),
        calibration=Calibration(
            photo=PhotoCalibration(temperature=1.0),
            item=ItemRule(region_weights=dict(zip(REGIONS, WEIGHTS, strict=True)), bias=BIAS),
        ),
        thresholds=card_thresholds(policy),
        metrics={"coverage": 0.0},
        git_commit="test",
        created_at="2026-01-01T00:00:00+00:00",
    )


def traffic(
    rng: np.random.Generator, n: int, share: float = SHARE
) -> tuple[np.ndarray, np.ndarray]:
    """Items of a model of known quality: item log-odds N(+3, 1.5) for authentic items,
    N(-3, 1.5) for counterfeits; labels 1 authentic."""
    labels = (rng.random(n) >= share).astype(int)
    log_odds = np.where(labels == 1, rng.normal(3.0, 1.5, n), rng.normal(-3.0, 1.5, n))
    return log_odds, labels


def test_audited_items_are_scored_by_the_cards_rule_and_incomplete_ones_counted() -> None:
    card = card_certified_on(np.array([1.0, -1.0]), np.array([1, 0]), {"bag": ("hardware", "logo")})
    items = [
        AuditedItem("bag", "authentic", (("hardware", 2.0), ("hardware", 1.0), ("logo", 0.5))),
        AuditedItem("bag", "counterfeit", (("stitching", -2.0), ("logo", -1.0))),  # no hardware
        # A category the card never certified needs every region any category needs.
        AuditedItem("watch", "counterfeit", (("hardware", -3.0), ("logo", -1.0))),
        AuditedItem("watch", "counterfeit", (("hardware", -3.0),)),
        AuditedItem("bag", "inconclusive", (("hardware", 2.0), ("logo", 0.5))),
        AuditedItem("bag", "authentic", ()),
    ]
    sample = audited_sample(card, items)
    assert sample.labels.tolist() == [1, 0]
    assert sample.log_odds == pytest.approx([BIAS + 1.5 * 1.0 + 0.5 * 0.25, BIAS - 3.0 - 0.25])
    assert sample.left_out == {"missing_region": 2, "inconclusive": 1, "no_scored_photos": 1}


def test_versions_of_one_onnx_file_match_and_others_do_not() -> None:
    card = card_certified_on(np.array([1.0, -1.0]), np.array([1, 0]))
    assert certified_version(card, 1) == SHA[:12] == card.version
    assert certified_version(card, 3) == f"{SHA[:12]}.c3"
    for version in (SHA[:12], f"{SHA[:12]}.c2", f"{SHA[:12]}.c17"):
        assert scored_by_same_onnx(card, version)
    for version in (None, "", "ab12cd34ef5", f"{SHA[:12]}c2", "000000000000", "1"):
        assert not scored_by_same_onnx(card, version)


def test_the_audited_mix_is_checked_against_the_declared_range() -> None:
    declared = ShareRange(0.1, 0.3)
    inside = audited_mix(np.r_[np.zeros(20), np.ones(80)], declared)
    assert inside["counterfeit_share"] == 0.2 and inside["inside_range"]
    low, high = inside["interval"]
    assert 0.12 < low < 0.2 < high < 0.3 and not inside["range_excluded"]
    outside = audited_mix(np.r_[np.zeros(60), np.ones(40)], declared)
    assert not outside["inside_range"] and outside["range_excluded"]
    # Few items: outside the range, but the interval cannot exclude it.
    few = audited_mix(np.array([0, 0, 1]), declared)
    assert not few["inside_range"] and not few["range_excluded"]


def test_recertifying_pools_calib_with_the_audit_and_never_counts_an_audit_twice() -> None:
    rng = np.random.default_rng(5)
    calib = traffic(rng, 100, share=0.5)
    card = card_certified_on(*calib)
    first = traffic(rng, 400)
    block = recertify(card, *first, audit={"left_out": {"inconclusive": 3}})
    assert block.certification == 2
    assert block.sample == card.thresholds.sample  # the calib part alone
    n_auth, n_fake = int(first[1].sum()), int(len(first[1]) - first[1].sum())
    calib_counts = card.thresholds.sample.sources["calib"]
    assert block.evidence["sources"] == {
        "calib": calib_counts,
        "audit": {"authentic": n_auth, "counterfeit": n_fake},
    }
    assert block.evidence["items"] == {
        "authentic": calib_counts["authentic"] + n_auth,
        "counterfeit": calib_counts["counterfeit"] + n_fake,
    }
    audit = block.evidence["audit"]
    assert audit["left_out"] == {"inconclusive": 3}
    assert audit["mix"]["items"] == 400 and audit["mix"]["counterfeit"] == n_fake
    assert block.evidence["previous"]["certification"] == 1

    now = dt.datetime(2026, 11, 26, 12, tzinfo=dt.UTC)
    second = recertified_card(card, block, now)
    assert second.version == f"{SHA[:12]}.c2" and second.onnx == card.onnx
    assert second.created_at == "2026-11-26T12:00:00+00:00"
    assert second.metrics["measured_at_certification"] == 1
    assert ModelCard.model_validate_json(second.model_dump_json()) == second

    # The next recertification reads every audit so far again: the card's sample must not
    # already hold the first ones.
    both = (np.r_[first[0], traffic(rng, 100)[0]], np.r_[first[1], np.ones(100, int)])
    third = recertified_card(second, recertify(second, *both), now)
    assert third.thresholds.certification == 3 and third.version == f"{SHA[:12]}.c3"
    assert third.thresholds.sample == card.thresholds.sample
    assert third.thresholds.evidence["sources"]["audit"]["authentic"] == int(both[1].sum())
    assert third.metrics["measured_at_certification"] == 1


def test_a_card_whose_sample_holds_more_than_calib_is_refused() -> None:
    card = card_certified_on(np.array([1.0, -1.0]), np.array([1, 0]), sources="audit")
    with pytest.raises(ValueError, match="calib items only"):
        recertify(card, np.array([2.0]), np.array([1]))


def test_weeks_of_audits_make_the_model_decide_alone_within_its_targets() -> None:
    """Each week: fresh traffic routed at the current card's thresholds; a random share of it
    audited (25% while a side is unsupported, 2% after), labelled with the truth; the card
    recertified on calib plus every audit so far. The realised error rates, on a large fresh
    sample of traffic at each week's card, stay under the targets."""
    rng = np.random.default_rng(20261126)
    card = card_certified_on(*traffic(rng, 120, share=0.5))
    targets = card.thresholds.targets
    audited_z: list[np.ndarray] = []
    audited_y: list[np.ndarray] = []
    coverage, supported, audited = [], [], []
    for _week in range(10):
        thresholds = card.thresholds.to_thresholds()
        z, y = traffic(rng, 3000)
        routes = thresholds.routes(z)  # what serving decides this week
        share = 0.25 if unsupported_sides(card.thresholds) else 0.02
        # Drawn before the score is looked at: a simple random sample of the traffic.
        picked = rng.random(len(z)) < share
        audited_z.append(z[picked])
        audited_y.append(y[picked])

        fresh_z, fresh_y = traffic(rng, 200_000)
        fresh = thresholds.routes(fresh_z)
        called_authentic = fresh == "authentic"
        called_counterfeit = fresh == "counterfeit"
        if called_authentic.any():
            assert np.mean(fresh_y[called_authentic] == 0) <= targets.false_authentic
        if called_counterfeit.any():
            assert np.mean(fresh_y[called_counterfeit] == 1) <= targets.false_counterfeit
        coverage.append(float(np.mean(fresh != HUMAN)))
        supported.append(card.thresholds.authentic_at is not None)
        audited.append(int(picked.sum()))
        assert np.mean(routes != HUMAN) == pytest.approx(coverage[-1], abs=0.05)

        card = recertified_card(
            card, recertify(card, np.concatenate(audited_z), np.concatenate(audited_y))
        )

    assert not supported[0] and coverage[0] == 0.0
    assert supported[-1] and not unsupported_sides(card.thresholds)
    assert coverage[-1] > 0.7
    # Coverage only grows as audited items accumulate (up to the noise of the thresholds).
    assert all(later >= earlier - 0.01 for earlier, later in itertools.pairwise(coverage))
    first_supported = supported.index(True)
    assert all(supported[first_supported:])
    # The audit falls back to its low share once both sides are supported.
    assert audited[-1] < audited[0] / 5
    assert card.thresholds.certification == 11
    assert set(card.thresholds.sample.sources) == {"calib"}
    assert len(card.thresholds.sample.authentic) + len(card.thresholds.sample.counterfeit) == 120
