"""`touchstone recertify` against a real service: appraisals routed to the audit sample by a real
server, finalised by a reviewer through the review API, read back from SQLite and PostgreSQL,
and the recertified card served by a model switch."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.serving_support import Server, deciding_model, form, item_photos, start_server, stop
from touchstone.data.manifest import load_manifest
from touchstone.model_card import file_sha256, load_model_dir

# Every item the model may judge goes to a person, whether the card supports a side or not.
AUDIT_EVERYTHING = "audit_share: 1.0\naudit_share_while_unsupported: 1.0\n"


def complete_items(manifest: Path) -> list[tuple[int, str, str]]:
    """(index for `item_photos`, label, category) of the synthetic items that show every region:
    the tiny card requires all three of them before an item may be decided alone."""
    records = load_manifest(manifest).records
    items = sorted({r.item_id for r in records})
    found = []
    for index, item in enumerate(items):
        rows = [r for r in records if r.item_id == item]
        if {r.region for r in rows} >= {"hardware", "stitching", "logo"}:
            found.append((index, rows[0].label, rows[0].category))
    return found


def submit(server: Server, manifest: Path, index: int, category: str, member: str) -> dict:
    with server.client(server.key("member_backend")) as client:
        answer = client.post(
            "/v1/appraisals",
            data=form(member=member, category=category),
            files=item_photos(manifest, index),
        )
    assert answer.status_code == 201, answer.text
    with server.client(server.key("platform")) as platform:
        whole = platform.get(f"/v1/appraisals/{answer.json()['id']}").json()
    assert whole["decision"]["rule"] == "audit_sample", whole
    return whole


def finalise(server: Server, outcomes: dict[str, str]) -> None:
    """A reviewer claims every open task and gives the planned verdict (gold: authentic)."""
    with server.client(server.key("reviewer")) as client:
        while (claim := client.post("/v1/review/claim")).status_code == 200:
            task = claim.json()
            outcome = outcomes.get(task["appraisal"]["id"], "authentic")
            done = client.post(
                f"/v1/review/tasks/{task['task']['id']}/verdict", json={"outcome": outcome}
            )
            assert done.status_code == 200, done.text
        assert claim.status_code == 204, claim.text


def switch(server: Server, model: Path) -> dict:
    with server.client(server.key("admin")) as client:
        answer = client.post("/v1/models", json={"source": str(model)})
    assert answer.status_code == 200, answer.text
    return answer.json()


def recertify(server: Server, *args: str | Path):  # -> click.testing.Result
    return server.touchstone("recertify", *map(str, args))


def test_recertify_on_the_audit_stream(
    tmp_path: Path, tiny_model: Path, tiny_synthetic: Path, database_url: str | None
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(AUDIT_EVERYTHING)
    # Two cards of the same ONNX file: the export's version, and one that names another file.
    ours = deciding_model(tiny_model, tmp_path / "ours")
    other = deciding_model(tiny_model, tmp_path / "other", version="000000000000")
    items = complete_items(tiny_synthetic)
    authentic = [i for i in items if i[1] == "authentic"]
    counterfeit = [i for i in items if i[1] == "counterfeit"]
    assert len(authentic) >= 3 and len(counterfeit) >= 3, items

    server = start_server(tmp_path / "data", other, database_url, policy)
    try:
        outcomes: dict[str, str] = {}
        for n, (index, label, category) in enumerate(authentic[:1] + counterfeit[:1]):
            outcomes[submit(server, tiny_synthetic, index, category, f"m-other-{n}")["id"]] = label
        switch(server, ours)
        planned = [*authentic[:3], *counterfeit[:2]]
        scores = []
        for n, (index, label, category) in enumerate(planned):
            appraisal = submit(server, tiny_synthetic, index, category, f"m-ours-{n}")
            outcomes[appraisal["id"]] = label
            scores.append(appraisal["decision"]["p_authentic"])
        index, _, category = counterfeit[2]
        unsure = submit(server, tiny_synthetic, index, category, "m-unsure")["id"]
        outcomes[unsure] = "inconclusive"
        with server.client(server.key("admin")) as client:  # routed like traffic; not traffic
            gold = client.post(
                "/v1/review/gold",
                data={"truth": "counterfeit", "category": category},
                files=item_photos(tiny_synthetic, index),
            )
            assert gold.status_code == 201, gold.text
        finalise(server, outcomes)

        out = tmp_path / "recertified"
        done = recertify(server, "--model", ours, "--out", out)
        assert done.exit_code == 0, done.output
        for words in ("other_model", "gold", "inconclusive", "certification 2", "audit"):
            assert words in done.output

        model_dir = load_model_dir(out)  # the hash holds: the same ONNX file
        card, before = model_dir.card, load_model_dir(ours).card
        assert file_sha256(model_dir.onnx_path) == card.onnx.sha256 == before.onnx.sha256
        assert card.version == f"{before.onnx.sha256[:12]}.c2" and before.version != card.version
        thresholds = card.thresholds
        assert thresholds.certification == 2
        assert thresholds.sample == before.thresholds.sample  # calib's items alone
        evidence = thresholds.evidence
        assert evidence["sources"]["audit"] == {"authentic": 3, "counterfeit": 2}
        assert evidence["sources"]["calib"] == before.thresholds.sample.sources["calib"]
        assert evidence["audit"]["left_out"] == {"other_model": 2, "gold": 1, "inconclusive": 1}
        mix = evidence["audit"]["mix"]
        assert (mix["items"], mix["counterfeit"], mix["counterfeit_share"]) == (5, 2, 0.4)
        assert mix["inside_range"] is False and mix["range_excluded"] is False
        assert {"supported", "target"} <= set(evidence["false_authentic"])

        # The item log-odds the command recomputed are those the service scored the items by.
        from serving.recertification_source import read_audit_stream
        from touchstone.evaluation.recertification import audited_sample, scored_by_same_onnx

        engine, sessions = server.database()
        try:
            stream = read_audit_stream(sessions, lambda v: scored_by_same_onnx(before, v))
        finally:
            engine.dispose()
        recomputed = audited_sample(before, stream.items)
        p = sorted(1 / (1 + math.exp(-z)) for z in recomputed.log_odds)
        assert p == pytest.approx(sorted(scores), abs=1e-9)

        # The service picks the new card up like any model; what it scores is still this file.
        assert switch(server, out)["version"] == card.version
        index, label, category = authentic[0]
        later = submit(server, tiny_synthetic, index, category, "m-later")
        finalise(server, {later["id"]: label})
        again = recertify(server, "--model", out, "--out", tmp_path / "third")
        assert again.exit_code == 0, again.output
        third = load_model_dir(tmp_path / "third").card
        assert third.version == f"{before.onnx.sha256[:12]}.c3"
        assert third.thresholds.sample == before.thresholds.sample
        assert third.thresholds.evidence["sources"]["audit"] == {"authentic": 4, "counterfeit": 2}

        # Errors: exit 2, with a reason.
        exists = recertify(server, "--model", ours, "--out", out)
        assert exists.exit_code == 2 and "exists" in exists.output
        missing = recertify(server, "--model", tmp_path / "nowhere", "--out", tmp_path / "x")
        assert missing.exit_code == 2 and "not a model directory" in missing.output
        future = recertify(
            server, "--model", ours, "--out", tmp_path / "y", "--since", "2999-01-01"
        )
        assert future.exit_code == 2 and "nothing to recertify" in future.output
        bad = recertify(server, "--model", ours, "--out", tmp_path / "z", "--since", "lately")
        assert bad.exit_code == 2 and "ISO" in bad.output
        assert not any((tmp_path / name).exists() for name in ("x", "y", "z"))
    finally:
        stop(server)
