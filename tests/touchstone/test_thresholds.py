"""The thresholds keep their promise on data they were not chosen on."""

from __future__ import annotations

import numpy as np
import pytest

from touchstone.decision import ItemAggregation, Thresholds, sigmoid
from touchstone.evaluation.calibration import (
    calibration_measures,
    fit_item_aggregation,
    fit_temperature,
)
from touchstone.evaluation.thresholds import (
    Targets,
    choose_thresholds,
    clopper_pearson_interval,
    clopper_pearson_upper,
    items_needed,
)


def draw_items(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Item p(authentic) from overlapping log-odds, with a tail of counterfeits that look
    authentic (super-fakes): the case the false-authentic target is for."""
    labels = (rng.random(n) < 0.5).astype(float)
    log_odds = np.where(labels > 0.5, rng.normal(4.0, 1.5, n), rng.normal(-4.0, 1.5, n))
    super_fake = (labels < 0.5) & (rng.random(n) < 0.05)
    log_odds[super_fake] = rng.normal(0.0, 1.5, super_fake.sum())
    return sigmoid(log_odds), labels


def test_clopper_pearson_known_values() -> None:
    # 0 errors in n: the upper bound is 1 - (1 - confidence)^(1/n) exactly.
    assert clopper_pearson_upper(0, 100) == pytest.approx(1 - 0.05 ** (1 / 100))
    assert clopper_pearson_upper(5, 5) == 1.0
    low, high = clopper_pearson_interval(10, 100)
    assert low < 0.1 < high
    assert low == pytest.approx(0.0490, abs=1e-3) and high == pytest.approx(0.1762, abs=1e-3)
    assert items_needed(0.005, 0.95) == 598


def test_thresholds_hold_on_held_out_data() -> None:
    """A 95% guarantee, so a few seeds in a hundred may miss: over 20 calibration draws both
    targets must hold on held-out data in at least 18."""
    targets = Targets(false_authentic=0.005, false_counterfeit=0.02)
    held = 0
    coverage: list[float] = []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        calib_p, calib_y = draw_items(rng, 8000)
        thresholds, evidence = choose_thresholds(calib_p, calib_y, targets)
        for side in ("false_authentic", "false_counterfeit"):
            if evidence[side]["supported"]:
                assert evidence[side]["upper_bound"] <= getattr(targets, side)
        # A large held-out sample from the same distribution measures the true rates closely.
        test_p, test_y = draw_items(rng, 400_000)
        routes = thresholds.routes(test_p)
        passed, called = routes == "authentic", routes == "counterfeit"
        false_authentic = float((test_y[passed] < 0.5).mean()) if passed.any() else 0.0
        false_counterfeit = float((test_y[called] > 0.5).mean()) if called.any() else 0.0
        held += (
            false_authentic <= targets.false_authentic
            and false_counterfeit <= targets.false_counterfeit
        )
        coverage.append(float((passed | called).mean()))
    assert held >= 18
    # Not trivially safe: the model still decides a good share alone.
    assert 0.3 < float(np.mean(coverage)) < 1.0


def test_too_little_calibration_data_routes_everything_to_humans() -> None:
    rng = np.random.default_rng(0)
    p, y = draw_items(rng, 600)
    thresholds, evidence = choose_thresholds(p, y, Targets())
    assert thresholds.authentic_at is None  # 736 decisions needed at 97.5% per side
    assert evidence["false_authentic"]["supported"] is False
    assert "736" in evidence["false_authentic"]["reason"]
    assert thresholds.route(0.9999) == "human"


def test_a_perfect_looking_but_wrong_score_is_not_trusted() -> None:
    # Counterfeits scored as confidently as authentic items: no authentic threshold can pass.
    rng = np.random.default_rng(1)
    y = (rng.random(4000) < 0.5).astype(float)
    p = np.where(y > 0.5, 0.99, rng.choice([0.99, 0.01], 4000, p=[0.1, 0.9]))
    thresholds, _ = choose_thresholds(p, y, Targets())
    assert thresholds.authentic_at is None
    assert thresholds.counterfeit_at is not None


def test_temperature_and_item_aggregation_calibrate() -> None:
    rng = np.random.default_rng(0)
    true_log_odds = rng.normal(0.0, 2.0, 5000)
    y = (rng.random(5000) < sigmoid(true_log_odds)).astype(float)
    overconfident = 3.0 * true_log_odds
    temperature = fit_temperature(overconfident, y)
    assert 2.0 < temperature < 4.5
    before = calibration_measures(sigmoid(overconfident), y)
    after = calibration_measures(sigmoid(overconfident / temperature), y)
    assert after.ece < before.ece and after.nll < before.nll

    # Item features: region 0 informative, region 1 noise; the noise region gets ~0 weight.
    means = np.stack([true_log_odds, rng.normal(0, 3, 5000)], axis=1)
    aggregation = fit_item_aggregation(means, y, ("logo", "stitching"))
    assert aggregation.weights[0] > 0.5 and aggregation.weights[1] < 0.05
    assert min(aggregation.weights) >= 0.0


def test_one_counterfeit_region_sinks_the_item() -> None:
    aggregation = ItemAggregation(("hardware", "stitching", "logo"), (1.0, 1.0, 1.0), 0.0)
    good = [("hardware", 2.0), ("stitching", 2.0), ("stitching", 2.5)]
    assert sigmoid(aggregation.item_log_odds(good)) > 0.98
    assert sigmoid(aggregation.item_log_odds([*good, ("logo", -9.0)])) < 0.05
    with pytest.raises(ValueError, match="vocabulary"):
        aggregation.item_log_odds([("strap", 1.0)])
    with pytest.raises(ValueError, match="below"):
        Thresholds(authentic_at=0.4, counterfeit_at=0.6)
