"""What the model card certifies holds in the running service: a policy may only be stricter
than the card (refused when the service starts and when it switches models), an item that lacks
a region the card requires is never decided alone, and the audit sample takes its raised share
while a side of the card is unsupported."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.policy.config import PolicyConfig, PolicyError
from serving.policy.overrides import check_policy
from tests.serving_support import (
    TOUCHSTONE,
    MemberTokens,
    Server,
    deciding_model,
    form,
    free_port,
    item_photos,
    start_server,
    stop,
)
from touchstone.model_card import CardThresholds, ThresholdTargets

CARD = CardThresholds(authentic_at=2.0, counterfeit_at=-2.0, targets=ThresholdTargets())
ONE_SIDED = CardThresholds(authentic_at=2.0, counterfeit_at=None, targets=ThresholdTargets())


# --- check_policy ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "card", "named"),
    [
        ({"authentic_at": 1.5}, CARD, ["authentic_at", "1.5", "2"]),
        ({"counterfeit_at": -1.0}, CARD, ["counterfeit_at", "-1", "-2"]),
        ({"counterfeit_at": -5.0}, ONE_SIDED, ["counterfeit_at", "-5", "unsupported"]),
        (
            {"counterfeit_share": {"low": 0.05, "high": 0.3}},
            CARD,
            ["counterfeit_share", "5%", "10%", "30%"],
        ),
        ({"counterfeit_share": {"low": 0.1, "high": 0.4}}, CARD, ["counterfeit_share", "40%"]),
    ],
)
def test_a_policy_that_loosens_the_card_is_refused_naming_both_values(
    policy: dict, card: CardThresholds, named: list[str]
) -> None:
    with pytest.raises(PolicyError) as refused:
        check_policy(PolicyConfig.model_validate(policy), card)
    for word in named:
        assert word in str(refused.value), (word, str(refused.value))


def test_every_loosened_threshold_is_named_at_once() -> None:
    both = PolicyConfig(authentic_at=1.0, counterfeit_at=-1.0)
    with pytest.raises(PolicyError, match=r"authentic_at.*counterfeit_at"):
        check_policy(both, CARD)


def test_a_stricter_policy_or_none_at_all_is_accepted() -> None:
    for policy in (
        PolicyConfig(),
        PolicyConfig(authentic_at=2.0, counterfeit_at=-2.0),  # equal is not looser
        PolicyConfig(authentic_at=6.9, counterfeit_at=-4.6),
        PolicyConfig.model_validate({"counterfeit_share": {"low": 0.15, "high": 0.25}}),
    ):
        check_policy(policy, CARD)
    check_policy(PolicyConfig(authentic_at=3.0), ONE_SIDED)
    nothing = CardThresholds(authentic_at=None, counterfeit_at=None, targets=ThresholdTargets())
    check_policy(PolicyConfig(), nothing)


# --- refused when the service starts: the real command ------------------------------------------


@pytest.mark.parametrize(
    ("card", "policy", "named"),
    [
        ({"authentic_at": 2.0}, "authentic_at: 1.0\n", ["authentic_at", "1.0", "2.0"]),
        ({"counterfeit_at": None}, "counterfeit_at: -5\n", ["counterfeit_at", "unsupported"]),
        ({}, "counterfeit_share: {low: 0.05, high: 0.3}\n", ["counterfeit_share", "5%"]),
    ],
)
def test_serve_refuses_to_start_with_a_policy_looser_than_the_card(
    tmp_path: Path, tiny_model: Path, card: dict, policy: str, named: list[str]
) -> None:
    model = deciding_model(tiny_model, tmp_path / "model", **card)
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(policy)
    tokens = MemberTokens(tmp_path / "member-token.pem")
    environment = {**os.environ, "TOUCHSTONE_MEMBER_TOKEN_PUBLIC_KEY": str(tokens.public_file)}
    environment.pop("TOUCHSTONE_DATABASE_URL", None)
    args = [TOUCHSTONE, "serve", "--port", str(free_port()), "--data-dir", str(tmp_path / "data")]
    args += ["--model", str(model), "--policy", str(policy_file)]
    # The timeout only ends a service that did start: that is the failure this test looks for.
    done = subprocess.run(args, capture_output=True, text=True, env=environment, timeout=180)
    said = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 2, said
    for word in named:
        assert word in said, (word, said)
    assert "Uvicorn running" not in said


# --- refused at a model switch: the old model stays ----------------------------------------------


@pytest.fixture
def strict_server(tmp_path: Path, tiny_model: Path) -> Iterator[Server]:
    """A model deciding from log-odds 0.0 up, under a policy stricter than it (0.5)."""
    model = deciding_model(tiny_model, tmp_path / "strict", version="strict")
    policy = tmp_path / "policy.yaml"
    policy.write_text("authentic_at: 0.5\naudit_share: 0.0\n")
    server = start_server(tmp_path / "data", model, policy=policy)
    yield server
    stop(server)


def test_a_model_switch_that_the_policy_loosens_is_refused(
    strict_server: Server, tmp_path: Path, tiny_model: Path, tiny_synthetic: Path
) -> None:
    looser = deciding_model(tiny_model, tmp_path / "looser", authentic_at=1.0, version="looser")
    stricter = deciding_model(tiny_model, tmp_path / "ok", authentic_at=0.25, version="ok")
    with strict_server.client(strict_server.key("admin")) as admin:
        for source, named in ((looser, "1.0"), (tiny_model, "unsupported")):
            refused = admin.post("/v1/models", json={"source": str(source)})
            assert refused.status_code == 422, refused.text
            error = refused.json()
            assert error["code"] == "policy_loosens_card"
            assert "authentic_at" in error["message"] and named in error["message"]
            assert "0.5" in error["message"]
            # The old model stays in service, and says why the switch failed.
            status = admin.get("/v1/models").json()
            assert status["ready"] and status["card"]["version"] == "strict"
            assert "authentic_at" in status["error"]

        switched = admin.post("/v1/models", json={"source": str(stricter)})
        assert switched.status_code == 200, switched.text
        assert admin.get("/v1/models").json()["card"]["version"] == "ok"

    with strict_server.member_client("m-1") as client:
        created = client.post("/v1/appraisals", data=form(), files=item_photos(tiny_synthetic))
    assert created.status_code == 201, created.text
    assert _whole(strict_server, created.json()["id"])["model"]["version"] == "ok"


# --- missing regions and the audit share, in the service ------------------------------------------


def test_an_item_missing_a_required_region_goes_to_a_reviewer(
    tmp_path: Path, tiny_model: Path, tiny_synthetic: Path
) -> None:
    """Two logo photos of a bag and no hardware: the card requires every region of a bag, so a
    reviewer decides; the same photos under a card that requires none are decided alone."""
    regions = {"bag": ["hardware", "stitching", "logo"]}
    needs_all = deciding_model(tiny_model, tmp_path / "all", required_regions=regions)
    needs_none = deciding_model(tiny_model, tmp_path / "none", required_regions={})
    policy = tmp_path / "policy.yaml"
    policy.write_text("audit_share: 0.0\n")
    logos = [part for part in item_photos(tiny_synthetic, 0) if part[0] == "logo"]
    assert len(logos) == 2
    server = start_server(tmp_path / "data", needs_all, policy=policy)
    try:
        held = _submit(server, logos)
        assert held["status"] == "in_review" and held["decision"]["path"] == "human"
        assert held["decision"]["rule"] == "missing_region"
        assert held["decision"]["reasons"] == [
            "the photos show no hardware or stitching, which every bag must show for the model "
            "to decide alone"
        ]
        with server.client(server.key("admin")) as admin:
            assert admin.post("/v1/models", json={"source": str(needs_none)}).status_code == 200
        decided = _submit(server, logos)
        assert decided["status"] == "decided" and decided["decision"]["path"] == "auto"
    finally:
        stop(server)


def test_while_a_side_is_unsupported_the_audit_takes_the_raised_share(
    tmp_path: Path, tiny_model: Path, tiny_synthetic: Path
) -> None:
    """The tiny model's card supports neither side: every item the model may judge is drawn at
    `audit_share_while_unsupported` (all of them here), none at `audit_share` once a card
    supports both sides."""
    policy = tmp_path / "policy.yaml"
    policy.write_text("audit_share: 0.0\naudit_share_while_unsupported: 1.0\n")
    server = start_server(tmp_path / "data", tiny_model, policy=policy)
    try:
        drawn = _submit(server, item_photos(tiny_synthetic, 1))
        assert drawn["decision"]["rule"] == "audit_sample"
        assert drawn["decision"]["reasons"] == [
            "picked at random for a quality check of the model (100% of the items it may "
            "judge go to a reviewer)"
        ]
        # The audit's verdict becomes a label that recertifies the model, so the reviewer
        # must not see what the model thought: the task is blind, heatmap included.
        with server.client(server.key("reviewer")) as reviewer:
            task = reviewer.post("/v1/review/claim").json()
            assert task["task"]["blind"] and task["appraisal"]["p_authentic"] is None
            assert all(p["score"] is None for p in task["photos"])
        supported = deciding_model(tiny_model, tmp_path / "supported")
        with server.client(server.key("admin")) as admin:
            assert admin.post("/v1/models", json={"source": str(supported)}).status_code == 200
        assert _submit(server, item_photos(tiny_synthetic, 1))["decision"]["path"] == "auto"
    finally:
        stop(server)


def _submit(server: Server, photos: list) -> dict:
    with server.member_client("m-1") as client:
        created = client.post("/v1/appraisals", data=form(), files=photos)
    assert created.status_code == 201, created.text
    return _whole(server, created.json()["id"])


def _whole(server: Server, appraisal_id: str) -> dict:
    """The appraisal as the platform reads it: the decision's rule and reasons included."""
    with server.client(server.key("platform")) as staff:
        return staff.get(f"/v1/appraisals/{appraisal_id}").json()
