"""Gold items (known truth, to measure reviewers) through a real server with no model: a
reviewer cannot tell one from a member's item by anything but its photos, on the API or the
work page."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.serving_support import (
    Server,
    announce,
    deciding_model,
    form,
    item_photos,
    start_server,
    stop,
)

# Two kinds of real traffic: a connoisseur's item of modest value (one review), and a VIP's
# high-value item (two blind reviews); the member ids have each platform's own form.
TRAFFIC = {
    "single": {"tier": "connoisseur", "declared_value": "12000", "members": "member-5041{}"},
    "double": {"tier": "master", "declared_value": "90000", "members": "VIP{}-88-x"},
}


@pytest.fixture
def humans_only(tmp_path: Path, database_url: str | None) -> Iterator[Server]:
    server = start_server(tmp_path / "data", None, database_url)
    yield server
    stop(server)


def _submit_real(server: Server, key: str, manifest: Path, kind: str, i: int) -> dict:
    """A member's item, as the members' app sends it; the full view of it, as staff see it."""
    traffic = TRAFFIC[kind]
    member = traffic["members"].format(i)
    announce(server, member, traffic["tier"])
    fields = form(
        member=member,
        tier=traffic["tier"],
        declared_value=traffic["declared_value"],
        brand="Hermès",
    )
    with server.member_client(member, key) as client:
        answer = client.post("/v1/appraisals", data=fields, files=item_photos(manifest, i))
    assert answer.status_code == 201, answer.text
    return _full_view(server, answer.json()["id"])


def _full_view(server: Server, appraisal_id: str) -> dict:
    with server.client(server.key("admin")) as client:
        answer = client.get(f"/v1/appraisals/{appraisal_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()


def _add_gold(server: Server, key: str, manifest: Path, index: int, **fields: str) -> Any:
    with server.client(key) as client:
        return client.post(
            "/v1/review/gold",
            data={"truth": "counterfeit", "category": "bag", **fields},
            files=item_photos(manifest, index),
        )


def _tasks(server: Server, appraisal_id: str) -> list[int]:
    from serving.db import ReviewTask, default_database_url, make_engine, make_sessionmaker

    engine = make_engine(server.database_url or default_database_url(server.data_dir))
    with make_sessionmaker(engine)() as session:
        found = list(
            session.scalars(
                select(ReviewTask.id)
                .where(ReviewTask.appraisal_id == appraisal_id)
                .order_by(ReviewTask.id)
            )
        )
    engine.dispose()
    return found


def _shape(value: Any) -> Any:
    """A value's kind: its keys, the types of its leaves, and the form of its text (digits as
    9, letters as a, uuids and hashes as hex), so that two member ids of one platform compare
    equal and an `m-` id does not."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_shape(item) for item in value]
    if isinstance(value, str):
        if re.fullmatch(r"[0-9a-f-]{32,}", value):
            return "hex"  # a uuid or a hash
        return re.sub(r"[A-Za-z]", "a", re.sub(r"\d", "9", value))
    return type(value).__name__


def _without_photos(view: dict) -> dict:
    return {**view, "photos": None}


def _signed_in(server: Server, key: str) -> httpx.Client:
    client = server.client()
    login = client.get("/review/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', login.text)
    assert csrf is not None, login.text
    answer = client.post(
        "/review/login", data={"key": key, "csrf_token": csrf.group(1), "next": "/review"}
    )
    assert answer.status_code in (200, 303), answer.text
    return client


def _page_without_photos(client: httpx.Client, task_id: int) -> str:
    """The work page, its photos left out and every number read as 9 (ids, times, values)."""
    html = client.get(f"/review/tasks/{task_id}", headers={"Accept": "text/html"}).text
    before, _, rest = html.partition('<section class="photos"')
    _, _, after = rest.partition('<aside class="panel">')
    assert after, html
    page = before + after
    page = re.sub(r'(nonce|value)="[^"]*"', r'\1=""', page)
    return re.sub(r"\d+", "9", page)


@pytest.mark.parametrize("kind", sorted(TRAFFIC))
def test_a_gold_item_looks_like_real_traffic(
    humans_only: Server, tiny_synthetic: Path, kind: str
) -> None:
    server = humans_only
    app, admin, senior = server.key("app"), server.key("admin"), server.key("senior")
    real = [_submit_real(server, app, tiny_synthetic, kind, i) for i in range(3)]
    added = _add_gold(server, admin, tiny_synthetic, 5, brand="Hermès")
    assert added.status_code == 201, added.text
    gold = _full_view(server, added.json()["id"])

    # What staff see of it: the fields drawn from the real items, none of them gold-only.
    sample = real[0]
    for field in ("member_tier", "category", "brand", "declared_value", "status"):
        assert gold[field] == sample[field], field
    assert gold["decision"] == sample["decision"]
    assert _shape(gold["member_id"]) == _shape(sample["member_id"])
    assert gold["member_id"] not in {a["member_id"] for a in real}  # never a real member's
    due = dt.datetime.fromisoformat(gold["sla_due_at"]) - dt.datetime.fromisoformat(
        gold["created_at"]
    )
    real_due = dt.datetime.fromisoformat(sample["sla_due_at"]) - dt.datetime.fromisoformat(
        sample["created_at"]
    )
    assert due == real_due

    # What a reviewer sees of the task, through the API and on the work page.
    gold_tasks, real_tasks = _tasks(server, gold["id"]), _tasks(server, sample["id"])
    assert len(gold_tasks) == len(real_tasks) == (2 if kind == "double" else 1)
    web = _signed_in(server, senior)
    try:
        with server.client(senior) as client:
            for gold_task, real_task in zip(gold_tasks, real_tasks, strict=True):
                seen = client.get(f"/v1/review/tasks/{gold_task}").json()
                other = client.get(f"/v1/review/tasks/{real_task}").json()
                assert _shape(_without_photos(seen)) == _shape(_without_photos(other))
                for name in ("stage", "blind", "status"):
                    assert seen["task"][name] == other["task"][name]
                assert {**seen["appraisal"], "id": "", "member": ""} == {
                    **other["appraisal"],
                    "id": "",
                    "member": "",
                }
                assert _page_without_photos(web, gold_task) == _page_without_photos(web, real_task)
    finally:
        web.close()

    # And what the verdict answers the reviewer who decides it.
    reviewers = [server.key("reviewer") for _ in range(2)]
    answers: dict[str, dict] = {}
    for key in reviewers:
        with server.client(key) as client:
            while (claimed := client.post("/v1/review/claim")).status_code == 200:
                task = claimed.json()
                answer = client.post(
                    f"/v1/review/tasks/{task['task']['id']}/verdict",
                    json={"outcome": "authentic"},
                )
                assert answer.status_code == 200, answer.text
                answers[task["appraisal"]["id"]] = answer.json()  # the last one
    shown, other = answers[gold["id"]], answers[sample["id"]]
    assert _shape(shown) == _shape(other) and "gold" not in json.dumps(shown)


def test_with_no_real_traffic_a_gold_item_takes_the_defaults(
    humans_only: Server, tiny_synthetic: Path
) -> None:
    server = humans_only
    admin = server.key("admin")
    added = _add_gold(server, admin, tiny_synthetic, 4)
    assert added.status_code == 201, added.text
    gold = _full_view(server, added.json()["id"])
    assert gold["member_tier"] == "explorer" and gold["declared_value"] is None
    # The reason is the one the routing gives any item like it: here, no model is loaded.
    assert gold["decision"]["reasons"] == ["the model is unavailable, so a reviewer decides"]
    assert gold["decision"]["rule"] == "model_unavailable"
    # The member's fields are drawn, never given: the admin cannot make an odd one.
    odd = _add_gold(server, admin, tiny_synthetic, 4, member_tier="master")
    assert odd.status_code == 422 and odd.json()["code"] == "invalid_field"


@pytest.mark.parametrize(
    ("audit_share", "rule"), [(0.02, "audit_sample"), (0.0, "member_requested")]
)
def test_a_gold_item_the_model_would_decide_goes_as_a_real_one_would(
    tmp_path: Path, tiny_model: Path, tiny_synthetic: Path, audit_share: float, rule: str
) -> None:
    """A card whose thresholds the tiny model always reaches: it would decide any item alone.
    A gold item reaches people as a real one does then: drawn for the audit sample, or, where
    the policy samples none, as if its member had asked for a person."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"audit_share: {audit_share}\n")
    model = deciding_model(tiny_model, tmp_path / "deciding-model")
    server = start_server(tmp_path / "data", model, policy=policy)
    try:
        added = _add_gold(server, server.key("admin"), tiny_synthetic, 3)
        assert added.status_code == 201, added.text
        gold = _full_view(server, added.json()["id"])
    finally:
        stop(server)
    decision = gold["decision"]
    assert gold["status"] == "in_review" and decision["rule"] == rule
    assert decision["reviews_required"] == 1 and decision["p_authentic"] is not None
    if rule == "audit_sample":
        assert decision["reasons"] == [
            "picked at random for a quality check of the model (2% of the items it may judge "
            "go to a reviewer)"
        ]
    else:
        assert decision["reasons"][0].startswith("decided by the model: log-odds ")
        asked = "the member asked for a person to review the automated result"
        assert decision["reasons"][1] == asked
