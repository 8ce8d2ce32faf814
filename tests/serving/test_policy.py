"""Routing policy: each rule fires on its input, the order holds, the YAML is strict, and photo
quality flags dark, blown-out, tiny and blurred photos but passes a sharp one."""

import io
import math
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from serving.policy.config import PolicyConfig, PolicyError, load_policy
from serving.policy.photo_quality import BLURRED, TOO_BRIGHT, TOO_DARK, TOO_SMALL, assess_photo
from serving.policy.routing import RoutingRequest, effective_thresholds, route, sla_due
from tests.phone_photos import phone_jpeg
from touchstone.data.synth.camera import canvas_side
from touchstone.data.synth.generate import SynthConfig, render_item
from touchstone.data.synth.materials import TextureBank
from touchstone.decision import Thresholds
from touchstone.imaging import decode_photo, decode_reduced

ROOT = Path(__file__).resolve().parents[2]
POLICY = PolicyConfig()
# Item log-odds of authentic: 2.9 is p 0.948, 4.6 is p 0.990.
CARD = Thresholds(authentic_at=2.9, counterfeit_at=-2.9)
REGIONS = ("hardware", "stitching", "logo")


def _item(**changes: object) -> RoutingRequest:
    """An explorer's bag, well photographed (every region the card requires), that the model
    finds clearly authentic."""
    base = RoutingRequest(
        member_tier="explorer",
        category="bag",
        declared_value_cny=8_000.0,
        photo_count=4,
        model_ready=True,
        log_odds=4.6,
        model_categories=("bag", "watch"),
        thresholds=CARD,
        shown_regions=REGIONS,
        required_regions={"bag": REGIONS, "watch": ("hardware", "logo")},
        audit_draw=0.5,
    )
    return replace(base, **changes)


# --- the rules, one by one ----------------------------------------------------------------------


def test_a_clear_score_is_decided_by_the_model_alone() -> None:
    decision = route(_item(), POLICY)
    assert (decision.status, decision.outcome, decision.path) == ("decided", "authentic", "auto")
    assert decision.rule == "auto_authentic" and decision.reviews_required == 0
    assert decision.sla_hours == 48
    # Log-odds for the thresholds, the probability for people.
    assert "log-odds 4.6" in decision.reasons[0] and "2.9" in decision.reasons[0]
    assert "p_authentic 0.99" in decision.reasons[0]

    fake = route(_item(log_odds=-4.6), POLICY)
    assert (fake.status, fake.outcome, fake.path) == ("decided", "counterfeit", "auto")
    assert fake.rule == "auto_counterfeit"
    # The thresholds are inclusive, as in Thresholds.route.
    assert route(_item(log_odds=2.9), POLICY).rule == "auto_authentic"
    assert route(_item(log_odds=-2.9), POLICY).rule == "auto_counterfeit"


def test_an_uncertain_score_goes_to_one_reviewer_and_says_why() -> None:
    decision = route(_item(log_odds=0.5), POLICY)
    assert (decision.status, decision.outcome, decision.path) == ("in_review", None, "human")
    assert decision.rule == "uncertain" and decision.reviews_required == 1
    assert "log-odds 0.5 (p_authentic 0.6225)" in decision.reasons[0]


def test_thresholds_compare_log_odds_where_probabilities_saturate() -> None:
    """Above a log-odds of about 37 every probability is 1.0: a threshold there still splits."""
    far = Thresholds(authentic_at=40.0, counterfeit_at=-40.0)
    assert route(_item(thresholds=far, log_odds=39.0), POLICY).rule == "uncertain"
    assert route(_item(thresholds=far, log_odds=41.0), POLICY).rule == "auto_authentic"
    assert route(_item(thresholds=far, log_odds=-41.0), POLICY).rule == "auto_counterfeit"


def test_too_few_photos_or_an_unusable_one_asks_for_photos() -> None:
    few = route(_item(photo_count=1), POLICY)
    assert (few.status, few.outcome, few.path) == ("awaiting_photos", None, None)
    assert few.rule == "needs_more_photos" and few.reviews_required == 0
    assert few.reasons == ["at least 2 photos are needed, 1 was sent"]

    bad = route(
        _item(unusable_photos=[("logo photo 2", [TOO_DARK]), (3, [BLURRED, TOO_SMALL])]), POLICY
    )
    assert bad.rule == "needs_more_photos"
    assert bad.reasons == ["logo photo 2 is too dark", "photo 3 is blurred and too small"]


def test_an_unusable_photo_beats_every_other_rule() -> None:
    request = _item(
        member_tier="brand_confidant",
        declared_value_cny=900_000.0,
        model_ready=False,
        log_odds=None,
        category="shoe",
        human_review_requested=True,
        unusable_photos=[("hardware photo 1", [TOO_BRIGHT])],
    )
    decision = route(request, POLICY)
    assert decision.status == "awaiting_photos" and decision.rule == "needs_more_photos"
    assert decision.reasons == ["hardware photo 1 is too bright (blown out)"]
    assert decision.sla_hours == 12


def test_without_a_model_a_reviewer_decides() -> None:
    for request in (
        _item(model_ready=False, log_odds=None, thresholds=None),
        _item(log_odds=None),  # loaded, but no score for this item
        _item(log_odds=float("nan")),
        _item(log_odds=math.inf),  # a broken model, not a sure one
    ):
        decision = route(request, POLICY)
        assert (decision.status, decision.path, decision.rule) == (
            "in_review",
            "human",
            "model_unavailable",
        )
        assert decision.reviews_required == 1


def test_an_unknown_category_goes_to_a_reviewer() -> None:
    decision = route(_item(category="shoe"), POLICY)
    assert decision.rule == "unknown_category" and decision.path == "human"
    assert "'shoe'" in decision.reasons[0] and "bag, watch" in decision.reasons[0]
    assert route(_item(category=None), POLICY).rule == "unknown_category"
    # A model that declares no categories takes any.
    anything = _item(category="shoe", model_categories=(), required_regions={})
    assert route(anything, POLICY).rule == "auto_authentic"


def test_an_item_missing_a_required_region_is_never_decided_alone() -> None:
    """Two logo photos and no hardware: a pattern the certification never saw (a counterfeiter
    leaves out the region that would show), however sure the model is."""
    for log_odds in (4.6, -4.6):
        decision = route(_item(shown_regions=("logo",), log_odds=log_odds), POLICY)
        assert decision.rule == "missing_region" and decision.path == "human"
        assert decision.status == "in_review" and decision.reviews_required == 1
        assert decision.reasons == [
            "the photos show no hardware or stitching, which every bag must show for the "
            "model to decide alone"
        ]
    # Each category its own regions; none required, none missing.
    watch = route(_item(category="watch", shown_regions=("logo", "hardware")), POLICY)
    assert watch.rule == "auto_authentic"
    assert route(_item(shown_regions=("logo",), required_regions={}), POLICY).rule == (
        "auto_authentic"
    )
    # A category the certification never saw needs every region any category needs.
    unseen = _item(category="shoe", model_categories=(), shown_regions=("hardware", "logo"))
    missing = route(unseen, POLICY)
    assert missing.rule == "missing_region" and "stitching" in missing.reasons[0]


def test_a_missing_region_is_listed_with_the_other_reasons() -> None:
    dear = route(
        _item(shown_regions=("logo", "stitching"), declared_value_cny=90_000.0, category="watch"),
        POLICY,
    )
    assert dear.rule == "missing_region" and dear.reviews_required == 2
    assert "hardware" in dear.reasons[0] and "watch" in dear.reasons[0]
    assert "two reviewers" in dear.reasons[1]
    both = route(_item(category="shoe", shown_regions=("logo",)), POLICY)
    assert both.rule == "unknown_category" and len(both.reasons) == 2
    assert "'shoe'" in both.reasons[0] and "no hardware or stitching" in both.reasons[1]
    # Without a score, regions are moot: the model is the reason.
    down = route(_item(model_ready=False, log_odds=None, shown_regions=()), POLICY)
    assert down.rule == "model_unavailable" and len(down.reasons) == 1


def test_high_value_means_two_blind_reviews_strictly_above_the_threshold() -> None:
    assert route(_item(declared_value_cny=50_000.0), POLICY).rule == "auto_authentic"
    decision = route(_item(declared_value_cny=50_000.01), POLICY)
    assert decision.rule == "high_value" and decision.reviews_required == 2
    assert decision.status == "in_review" and decision.outcome is None
    assert "50,000 CNY" in decision.reasons[0]


@pytest.mark.parametrize(
    ("tier", "vip", "hours"),
    [
        ("explorer", False, 48),
        ("connoisseur", False, 24),
        ("collector", True, 24),
        ("master", True, 12),
        ("brand_confidant", True, 12),
    ],
)
def test_vip_tiers_always_get_a_reviewer(tier: str, vip: bool, hours: int) -> None:
    decision = route(_item(member_tier=tier), POLICY)
    assert decision.rule == ("vip_tier" if vip else "auto_authentic")
    assert decision.reviews_required == (1 if vip else 0)
    assert decision.sla_hours == hours


def test_a_member_can_ask_for_a_human() -> None:
    decision = route(_item(human_review_requested=True), POLICY)
    assert decision.rule == "member_requested" and decision.path == "human"
    assert decision.reviews_required == 1


def test_the_audit_sample_takes_draws_strictly_below_the_share() -> None:
    sampled = route(_item(audit_draw=0.0199), POLICY)
    assert sampled.rule == "audit_sample" and sampled.path == "human"
    assert sampled.outcome is None and sampled.reviews_required == 1
    assert sampled.reasons == [
        "picked at random for a quality check of the model (2% of the items it may judge go "
        "to a reviewer)"
    ]
    assert route(_item(audit_draw=0.02), POLICY).rule == "auto_authentic"
    assert route(_item(audit_draw=0.0), PolicyConfig(audit_share=0.0)).rule == "auto_authentic"
    everything = PolicyConfig(audit_share=1.0, audit_share_while_unsupported=1.0)
    assert route(_item(audit_draw=0.9999), everything).rule == "audit_sample"


def test_the_audit_sample_is_drawn_from_everything_the_model_may_judge() -> None:
    """Sure or not, an item the certification covers is drawn at the same rate, so the audited
    items are a simple random sample of that traffic; the reason stays blind."""
    sure = route(_item(audit_draw=0.0), POLICY)
    unsure = route(_item(log_odds=0.5, audit_draw=0.0), POLICY)
    assert sure.rule == unsure.rule == "audit_sample" and sure.reasons == unsure.reasons
    assert "4.6" not in sure.reasons[0] and "0.99" not in sure.reasons[0]
    assert route(_item(log_odds=0.5, audit_draw=0.02), POLICY).rule == "uncertain"
    # Items the certification does not cover are never drawn: their own rule holds.
    assert route(_item(shown_regions=("logo",), audit_draw=0.0), POLICY).rule == "missing_region"
    assert route(_item(member_tier="master", audit_draw=0.0), POLICY).rule == "vip_tier"
    assert route(_item(category="shoe", audit_draw=0.0), POLICY).rule == "unknown_category"


def test_the_audit_share_is_raised_while_a_side_is_unsupported() -> None:
    """Evidence accumulates fastest where it is missing: 25% by default while either of the
    card's thresholds is None, `audit_share` (2%) once both are supported."""
    for card in (Thresholds(2.9, None), Thresholds(None, -2.9), Thresholds(None, None), None):
        drawn = route(_item(thresholds=card, audit_draw=0.2499), POLICY)
        assert drawn.rule == "audit_sample", card
        assert "25% of the items" in drawn.reasons[0]
        assert route(_item(thresholds=card, audit_draw=0.25), POLICY).rule != "audit_sample"
    assert route(_item(audit_draw=0.2499), POLICY).rule == "auto_authentic"
    custom = PolicyConfig(audit_share=0.05, audit_share_while_unsupported=0.5)
    assert route(_item(thresholds=Thresholds(2.9, None), audit_draw=0.49), custom).rule == (
        "audit_sample"
    )
    assert route(_item(audit_draw=0.049), custom).rule == "audit_sample"
    assert route(_item(audit_draw=0.05), custom).rule == "auto_authentic"


# --- the order ----------------------------------------------------------------------------------


def test_a_vip_high_value_item_gets_two_reviews_and_both_reasons() -> None:
    decision = route(
        _item(member_tier="master", declared_value_cny=120_000.0, human_review_requested=True),
        POLICY,
    )
    assert decision.rule == "high_value" and decision.reviews_required == 2
    assert len(decision.reasons) == 3
    assert "master" in decision.reasons[1] and "asked" in decision.reasons[2]


def test_earlier_rules_win_but_high_value_keeps_two_reviews() -> None:
    dear = 60_000.0
    down = route(_item(model_ready=False, log_odds=None, declared_value_cny=dear), POLICY)
    assert down.rule == "model_unavailable" and down.reviews_required == 2
    assert any("two reviewers" in reason for reason in down.reasons)
    unknown = route(
        _item(category="shoe", member_tier="collector", declared_value_cny=dear), POLICY
    )
    assert unknown.rule == "unknown_category" and unknown.reviews_required == 2
    assert route(_item(model_ready=False, category="shoe"), POLICY).rule == "model_unavailable"
    vip = route(_item(member_tier="collector", human_review_requested=True), POLICY)
    assert vip.rule == "vip_tier" and vip.reviews_required == 1
    # Policy rules come before the score: a VIP's uncertain item is routed as a VIP's.
    assert route(_item(member_tier="collector", log_odds=0.5), POLICY).rule == "vip_tier"
    asked = route(_item(human_review_requested=True, log_odds=0.5), POLICY)
    assert asked.rule == "member_requested"


# --- thresholds ---------------------------------------------------------------------------------


def test_policy_thresholds_apply_where_stricter_than_the_cards() -> None:
    stricter = PolicyConfig(authentic_at=5.0)
    assert route(_item(log_odds=4.6), stricter).rule == "uncertain"
    assert route(_item(log_odds=5.0), stricter).rule == "auto_authentic"
    # The card's counterfeit threshold still holds where the policy sets none.
    assert route(_item(log_odds=-4.6), stricter).rule == "auto_counterfeit"
    assert route(_item(log_odds=-3.5), PolicyConfig(counterfeit_at=-4.0)).rule == "uncertain"
    assert effective_thresholds(CARD, PolicyConfig(authentic_at=5.0, counterfeit_at=-4.0)) == (
        Thresholds(5.0, -4.0)
    )
    # A looser override (refused when the service starts or switches models:
    # serving/policy/overrides.py) never loosens the card here either, nor switches on a side.
    assert effective_thresholds(CARD, PolicyConfig(authentic_at=1.0, counterfeit_at=-1.0)) == CARD
    both = PolicyConfig(authentic_at=0.9, counterfeit_at=0.1)
    assert effective_thresholds(Thresholds(None, -2.9), both) == Thresholds(None, -2.9)
    assert effective_thresholds(None, both) == Thresholds(None, None)


def test_without_any_threshold_nothing_is_decided_alone() -> None:
    decision = route(_item(thresholds=Thresholds(None, None), log_odds=9.0), POLICY)
    assert decision.rule == "uncertain" and "no thresholds" in decision.reasons[0]
    one_sided = route(_item(thresholds=Thresholds(2.9, None), log_odds=-9.0), POLICY)
    assert one_sided.rule == "uncertain"


# --- bad requests, SLA --------------------------------------------------------------------------


def test_an_unknown_tier_is_a_policy_error() -> None:
    with pytest.raises(PolicyError, match="gold"):
        route(_item(member_tier="gold"), POLICY)
    with pytest.raises(PolicyError, match="gold"):
        sla_due("gold", datetime(2025, 1, 1, tzinfo=UTC), POLICY)


def test_out_of_range_request_values_are_refused() -> None:
    for request in (_item(audit_draw=1.0), _item(audit_draw=-0.1), _item(photo_count=-1)):
        with pytest.raises(ValueError):
            route(request, POLICY)


def test_sla_due_adds_the_tiers_hours() -> None:
    submitted = datetime(2025, 11, 11, 23, 30, tzinfo=UTC)
    assert sla_due("explorer", submitted, POLICY) == submitted + timedelta(hours=48)
    assert sla_due("master", submitted, POLICY) == datetime(2025, 11, 12, 11, 30, tzinfo=UTC)
    custom = PolicyConfig(sla_hours={**POLICY.sla_hours, "explorer": 36})
    assert sla_due("explorer", submitted, custom) == submitted + timedelta(hours=36)


# --- configuration ------------------------------------------------------------------------------


def test_the_shipped_yaml_holds_the_defaults() -> None:
    loaded = load_policy(ROOT / "configs" / "policy.yaml")
    assert loaded == PolicyConfig() == load_policy(None)
    assert loaded.vip_tiers == ("collector", "master", "brand_confidant")
    assert loaded.sla_hours == {
        "explorer": 48,
        "connoisseur": 24,
        "collector": 24,
        "master": 12,
        "brand_confidant": 12,
    }
    assert (loaded.high_value_cny, loaded.audit_share) == (50_000, 0.02)
    assert (loaded.min_photos, loaded.max_photos, loaded.max_photos_per_region) == (2, 12, 4)
    assert loaded.authentic_at is None and loaded.counterfeit_at is None
    assert loaded.audit_share_while_unsupported == 0.25
    assert (loaded.counterfeit_share.low, loaded.counterfeit_share.high) == (0.10, 0.30)


def _policy_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_typo_in_a_key_is_refused_with_its_name(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"audit_shar: unknown key \(did you mean 'audit_share'"):
        load_policy(_policy_file(tmp_path, "audit_shar: 0.05\n"))
    nested = "photo_quality:\n  min_sharpnes: 20\n"
    with pytest.raises(PolicyError, match=r"photo_quality\.min_sharpnes: unknown key"):
        load_policy(_policy_file(tmp_path, nested))


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("audit_share: 1.5\n", "audit_share"),
        ("high_value_cny: -1\n", "high_value_cny"),
        ("sla_hours: {explorer: 36}\n", "sla_hours has no entry for tier"),
        ("vip_tiers: [collector, platinum]\n", "platinum"),
        ("authentic_at: 0.3\ncounterfeit_at: 0.4\n", "counterfeit_at"),
        ("authentic_at: .inf\n", "authentic_at"),
        ("counterfeit_at: .nan\n", "counterfeit_at"),
        ("audit_share: 0.3\naudit_share_while_unsupported: 0.2\n", "audit_share_while"),
        ("audit_share_while_unsupported: 1.5\n", "audit_share_while_unsupported"),
        ("counterfeit_share: {low: 0.4, high: 0.2}\n", "counterfeit_share"),
        ("counterfeit_share: {low: 0.0, high: 0.2}\n", "counterfeit_share.low"),
        ("photo_quality: {min_brightness: 250}\n", "min_brightness"),
        ("min_photos: 5\nmax_photos: 3\n", "max_photos"),
        ("audit_share: [0.02\n", "not valid YAML"),
        ("- explorer\n- master\n", "mapping"),
    ],
)
def test_an_invalid_policy_is_refused_naming_the_key(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(PolicyError, match=named):
        load_policy(_policy_file(tmp_path, text))


def test_a_missing_file_is_a_policy_error_and_an_empty_one_the_defaults(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "absent.yaml")
    assert load_policy(_policy_file(tmp_path, "# nothing changed\n")) == PolicyConfig()
    partial = load_policy(_policy_file(tmp_path, "high_value_cny: 80000\n"))
    assert partial.high_value_cny == 80_000 and partial.audit_share == 0.02


def test_threshold_overrides_are_log_odds(tmp_path: Path) -> None:
    """Any finite log-odds, not a probability: 6.9 is p 0.999, -4.6 is p 0.01."""
    loaded = load_policy(_policy_file(tmp_path, "authentic_at: 6.9\ncounterfeit_at: -4.6\n"))
    assert (loaded.authentic_at, loaded.counterfeit_at) == (6.9, -4.6)


# --- photo quality ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_photo() -> Image.Image:
    """A sharp 224 px hardware photo from the synthetic generator (engraving on metal)."""
    config = SynthConfig(size=224, seed=0)
    _, photos = render_item(config, 1, "authentic", TextureBank(0, canvas_side(224)))
    jpeg = next(data for region, data in photos if region == "hardware")
    return Image.open(io.BytesIO(jpeg)).convert("RGB")


def _texture(side: int = 224, seed: int = 0) -> Image.Image:
    """Random grain at a few scales around mid-grey, like leather under even light."""
    rng = np.random.default_rng(seed)
    coarse = np.kron(rng.normal(0, 25, (side // 8, side // 8)), np.ones((8, 8)))
    fine = rng.normal(0, 20, (side, side))
    grey = np.clip(128 + coarse + fine, 0, 255).astype(np.uint8)
    return Image.fromarray(np.stack([grey] * 3, axis=-1))


@pytest.mark.parametrize("kind", ["synthetic", "texture"])
def test_a_sharp_photo_is_usable_and_its_blur_is_not(
    kind: str, synthetic_photo: Image.Image
) -> None:
    photo = synthetic_photo if kind == "synthetic" else _texture()
    sharp = assess_photo(photo, POLICY)
    assert sharp.usable and sharp.problems == []
    assert (sharp.width, sharp.height) == (224, 224)
    assert 30 < sharp.brightness < 245
    assert sharp.sharpness > POLICY.photo_quality.min_sharpness

    blurred = assess_photo(photo.filter(ImageFilter.GaussianBlur(4)), POLICY)
    assert not blurred.usable and blurred.problems == [BLURRED]
    assert blurred.sharpness < POLICY.photo_quality.min_sharpness


def test_a_dark_photo_is_too_dark_not_blurred(synthetic_photo: Image.Image) -> None:
    dark = assess_photo(synthetic_photo.point(lambda v: v // 10), POLICY)
    assert dark.problems == [TOO_DARK] and not dark.usable
    assert dark.brightness < 30


def test_a_blown_out_photo_is_too_bright(synthetic_photo: Image.Image) -> None:
    blown = assess_photo(synthetic_photo.point(lambda v: min(255, 240 + v // 16)), POLICY)
    assert blown.problems == [TOO_BRIGHT] and blown.brightness > 245


def test_a_tiny_photo_is_too_small() -> None:
    tiny = assess_photo(_texture(48), POLICY)
    assert tiny.problems == [TOO_SMALL] and (tiny.width, tiny.height) == (48, 48)
    empty = assess_photo(Image.new("RGB", (0, 0)), POLICY)
    assert empty.problems == [TOO_SMALL]


def test_a_large_photo_is_measured_shrunk_and_other_modes_work() -> None:
    rng = np.random.default_rng(1)
    large = Image.fromarray(rng.integers(0, 256, (1500, 2000, 3), dtype=np.uint8))
    quality = assess_photo(large, POLICY)
    assert quality.usable and (quality.width, quality.height) == (2000, 1500)
    texture = _texture()
    for mode in ("L", "RGBA", "P"):
        assert assess_photo(texture.convert(mode), POLICY).usable, mode


@pytest.mark.parametrize("side", [256, POLICY.photo_quality.sharpness_side_px])
def test_a_12_megapixel_phone_photo_is_judged_on_its_reduced_decode(side: int) -> None:
    """The service judges the reduced decode (a model's side, 256 for a 224 px input, or the
    checks' own side without a model); a sharp phone photo and one out of focus (a Gaussian of
    16 px at 12 MP) get the verdicts their full decodes get, and too small is judged on the
    full size."""
    for blur, problems in ((0, []), (16, [BLURRED])):
        upload = phone_jpeg(seed=1, orientation=6, blur=blur)
        reduced = decode_reduced(upload, side)
        assert reduced.factor > 1 and (reduced.width, reduced.height) == (3024, 4032)
        quality = assess_photo(reduced.image, POLICY, full_size=(reduced.width, reduced.height))
        assert quality.problems == problems, (blur, quality.sharpness)
        assert (quality.width, quality.height) == (3024, 4032)
        assert assess_photo(decode_photo(upload), POLICY).problems == problems
    # A reduced copy smaller than min_side_px is no small photo.
    small_copy = _texture(48)
    assert assess_photo(small_copy, POLICY, full_size=(3024, 4032)).problems == []
    assert assess_photo(small_copy, POLICY).problems == [TOO_SMALL]


def test_the_quality_limits_come_from_the_policy(synthetic_photo: Image.Image) -> None:
    measured = assess_photo(synthetic_photo, POLICY)
    picky = PolicyConfig.model_validate(
        {"photo_quality": {"min_sharpness": measured.sharpness + 1, "min_side_px": 300}}
    )
    assert assess_photo(synthetic_photo, picky).problems == [TOO_SMALL, BLURRED]


def test_the_policy_module_does_not_import_torch() -> None:
    code = (
        "import sys, serving.policy.config, serving.policy.photo_quality, "
        "serving.policy.routing; sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


# --- the tiers: one vocabulary ------------------------------------------------------------------


def test_the_tiers_are_the_vocabulary_and_the_policy_names_each_of_them(tmp_path: Path) -> None:
    from touchstone.vocabulary import TIERS

    assert POLICY.tiers == TIERS and set(POLICY.sla_hours) == set(TIERS)
    with pytest.raises(PolicyError, match="platinum"):
        load_policy(_policy_file(tmp_path, "sla_hours: {" + _all_tiers(12) + ", platinum: 6}\n"))
    with pytest.raises(PolicyError, match="master"):
        load_policy(_policy_file(tmp_path, "sla_hours: {explorer: 48, connoisseur: 24}\n"))
    # The list of tiers is not the policy's to change.
    with pytest.raises(PolicyError, match="tiers"):
        load_policy(_policy_file(tmp_path, "tiers: [explorer, platinum]\n"))


def _all_tiers(hours: int) -> str:
    from touchstone.vocabulary import TIERS

    return ", ".join(f"{tier}: {hours}" for tier in TIERS)
