"""The feedback loop end to end: reviewers' verdicts through the real API, exported as a
manifest, merged with the synthetic set, split, and trained on."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import hashlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.serving_support import TOUCHSTONE, form, item_photos, start_server, stop
from touchstone.data.manifest import load_manifest, read_manifest
from touchstone.imaging import decode_photo

ROOT = Path(__file__).resolve().parents[2]
PHOTO_KEY = base64.b64encode(bytes(range(32))).decode()


@dataclass
class Reviewed:
    """A service's data after people reviewed some items; the server is stopped."""

    data_dir: Path
    database_url: str | None
    plan: dict[str, dict[str, Any]]  # appraisal id -> item, outcome, member, ...

    def env(self) -> dict[str, str]:
        env = dict(os.environ, TOUCHSTONE_PHOTO_KEY=PHOTO_KEY)
        env.pop("TOUCHSTONE_DATABASE_URL", None)
        if self.database_url:
            env["TOUCHSTONE_DATABASE_URL"] = self.database_url
        return env

    def ids(self, *outcomes: str) -> set[str]:
        return {a for a, p in self.plan.items() if p["outcome"] in outcomes}


@pytest.fixture
def reviewed(
    tmp_path: Path,
    database_url: str | None,
    tiny_synthetic: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Reviewed:
    """No model, so every upload goes to people; photos encrypted at rest. Two authentic and
    two counterfeit verdicts (the synthetic truth), one inconclusive, and one item sent back
    for more photos that never came."""
    monkeypatch.setenv("TOUCHSTONE_PHOTO_KEY", PHOTO_KEY)
    server = start_server(tmp_path / "data", None, database_url)
    try:
        records = load_manifest(tiny_synthetic).records
        first = {}
        for record in records:
            first.setdefault(record.item_id, record)
        items = sorted(first)
        authentic = [i for i in items if first[i].label == "authentic"]
        counterfeit = [i for i in items if first[i].label == "counterfeit"]
        outcomes = {
            authentic[0]: "authentic",
            authentic[1]: "authentic",
            counterfeit[0]: "counterfeit",
            counterfeit[1]: "counterfeit",
            authentic[2]: "inconclusive",
            counterfeit[2]: "needs_more_photos",
        }
        app, reviewer = server.key("member_backend"), server.key("reviewer")
        plan: dict[str, dict[str, Any]] = {}
        with server.client(app) as client:
            for n, item in enumerate(outcomes):
                fields = form(
                    member=f"member-{n}", category=first[item].category, brand=first[item].brand
                )
                photos = item_photos(tiny_synthetic, items.index(item))
                answer = client.post("/v1/appraisals", data=fields, files=photos)
                assert answer.status_code == 201, answer.text
                assert answer.json()["status"] == "in_review"
                plan[answer.json()["id"]] = {
                    "item": item,
                    "outcome": outcomes[item],
                    "member": f"member-{n}",
                    "category": first[item].category,
                    "brand": first[item].brand,
                    "photos": len(photos),
                }
        with server.client(reviewer) as client:
            for _ in plan:
                task = client.post("/v1/review/claim").json()
                outcome = plan[task["appraisal"]["id"]]["outcome"]
                done = client.post(
                    f"/v1/review/tasks/{task['task']['id']}/verdict", json={"outcome": outcome}
                )
                assert done.status_code == 200, done.text
                expected = "awaiting_photos" if outcome == "needs_more_photos" else "finalized"
                with server.client(server.key("platform")) as platform:  # not in the verdict's
                    shown = platform.get(f"/v1/appraisals/{task['appraisal']['id']}").json()
                assert shown["status"] == expected
            assert client.post("/v1/review/claim").status_code == 204
    finally:
        stop(server)
    return Reviewed(server.data_dir, database_url, plan)


def touchstone(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [TOUCHSTONE, *map(str, args)], capture_output=True, text=True, env=env, timeout=300
    )


def export(reviewed: Reviewed, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return touchstone(
        "data",
        "export-reviews",
        "--out",
        out,
        "--data-dir",
        reviewed.data_dir,
        *extra,
        env=reviewed.env(),
    )


def test_export_reviews(reviewed: Reviewed, tmp_path: Path) -> None:
    from serving.db import default_database_url, make_engine, make_sessionmaker
    from serving.feedback import ExportError, export_reviews
    from serving.photos import PhotoStore
    from serving.settings import Settings

    out = tmp_path / "reviews" / "manifest.csv"
    done = export(reviewed, out)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "inconclusive" in done.stdout and f"wrote {out}" in done.stdout

    manifest = load_manifest(out)
    labelled = reviewed.ids("authentic", "counterfeit")
    assert {r.item_id for r in manifest.records} == labelled  # no inconclusive, no unfinished
    store = PhotoStore(reviewed.data_dir / "photos", Settings().photo_key_bytes())
    for record in manifest.records:
        item = reviewed.plan[record.item_id]
        assert record.label == item["outcome"]
        assert (record.category, record.brand) == (item["category"], item["brand"])
        assert record.source == "review" and record.split is None
        assert record.extra["reviewers"] == "1"
        finalized = dt.datetime.fromisoformat(record.extra["finalized_at"])
        assert abs(dt.datetime.now(dt.UTC) - finalized) < dt.timedelta(minutes=10)
        # The file is the store's clean photo, decrypted: the same bytes, named by their hash.
        data = record.path.read_bytes()
        sha256 = record.path.stem
        assert record.image == f"images/{record.item_id}/{sha256}.jpg"
        assert hashlib.sha256(data).hexdigest() == sha256
        assert data == store.get(sha256) != store.path_for(sha256).read_bytes()
        assert decode_photo(data).size == (96, 96)
    per_item = {a: sum(r.item_id == a for r in manifest.records) for a in labelled}
    assert per_item == {a: reviewed.plan[a]["photos"] for a in labelled}

    validated = touchstone("data", "validate", out)
    assert validated.returncode == 0, validated.stdout

    refused = export(reviewed, out)
    assert refused.returncode == 2 and "--force" in refused.stdout
    assert export(reviewed, out, "--force", "--since", "2000-01-01").returncode == 0
    assert load_manifest(out).records == manifest.records

    future = tmp_path / "future" / "manifest.csv"
    nothing = export(reviewed, future, "--since", "2999-01-01T00:00:00Z")
    assert nothing.returncode == 0, nothing.stdout
    assert "nothing to export" in nothing.stdout and not future.exists()
    bad = export(reviewed, future, "--since", "last tuesday")
    assert bad.returncode == 2 and "ISO" in bad.stdout
    # Without the service's key the photos cannot be read: an error, not a quiet empty month.
    env = {k: v for k, v in reviewed.env().items() if k != "TOUCHSTONE_PHOTO_KEY"}
    keyless = touchstone(
        "data", "export-reviews", "--out", future, "--data-dir", reviewed.data_dir, env=env
    )
    assert keyless.returncode == 1 and "TOUCHSTONE_PHOTO_KEY" in keyless.stdout

    # Gold items and erased members leave.
    engine = make_engine(reviewed.database_url or default_database_url(reviewed.data_dir))
    sessions = make_sessionmaker(engine)
    gold = sorted(reviewed.ids("authentic"))[0]
    erased = sorted(reviewed.ids("counterfeit"))[0]
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE appraisals SET is_gold = :t WHERE id = :id"), {"t": True, "id": gold}
        )
        connection.execute(
            text("INSERT INTO erased_members (member_id, erased_at) VALUES (:m, :t)"),
            {"m": reviewed.plan[erased]["member"], "t": dt.datetime.now(dt.UTC)},
        )
    summary = export_reviews(sessions, store, tmp_path / "after" / "m.csv")
    assert summary.left_out == {"gold": 1, "erased_member": 1, "inconclusive": 1}
    assert summary.items == {"authentic": 1, "counterfeit": 1}
    kept = {r.item_id for r in read_manifest(summary.manifest).records}
    assert kept == labelled - {gold, erased}

    # Every export is recorded with the members it holds, the erased one not among them.
    with engine.connect() as connection:
        held = connection.execute(
            text("SELECT member_id FROM training_export_members WHERE export_id = :e"),
            {"e": summary.export_id},
        )
        assert {m for (m,) in held} == {reviewed.plan[a]["member"] for a in kept}

    # A database that cannot record exports yet is refused: an export erasure could not find
    # is what the record is for. Nothing is written.
    # Only this branch goes down: off a merge of the branches first, if there is one.
    downgrade(engine, "0009_training_exports")
    downgrade(engine, "0009_training_exports@-1")
    with pytest.raises(ExportError, match="0009_training_exports"):
        export_reviews(sessions, store, tmp_path / "before" / "m.csv")
    engine.dispose()
    assert not (tmp_path / "before").exists()


def downgrade(engine: Engine, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    from serving.db import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            # SQLite alters a table by copying it, which the service's foreign keys forbid
            # while rows point at it. (A pragma before the first write takes effect.)
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_loop_merges_splits_and_trains(
    reviewed: Reviewed, tiny_synthetic: Path, tmp_path: Path
) -> None:
    reviews = tmp_path / "reviews" / "manifest.csv"
    assert export(reviewed, reviews).returncode == 0
    # A second export whose dates overlap the first: the same items, in another folder.
    again = tmp_path / "reviews-again" / "manifest.csv"
    assert export(reviewed, again, "--since", "2000-01-01").returncode == 0

    merged = tmp_path / "next" / "merged.csv"
    done = touchstone("data", "merge", tiny_synthetic, reviews, again, "--out", merged)
    assert done.returncode == 0, done.stdout
    synthetic, exported = load_manifest(tiny_synthetic), load_manifest(reviews)
    assert f"{len(exported.records)} row(s) left out" in done.stdout
    rows = load_manifest(merged).records
    assert len(rows) == len(synthetic.records) + len(exported.records)
    assert [(r.path, r.label, r.split) for r in rows] == [
        (r.path, r.label, r.split) for r in synthetic.records + exported.records
    ]
    assert touchstone("data", "validate", merged).returncode == 0
    assert touchstone("data", "merge", tiny_synthetic, reviews, "--out", merged).returncode == 2

    # An item that one manifest calls authentic and another counterfeit is refused.
    flipped = tmp_path / "reviews" / "flipped.csv"
    with reviews.open() as source, flipped.open("w", newline="") as target:
        table = list(csv.DictReader(source))
        writer = csv.DictWriter(target, fieldnames=list(table[0]))
        writer.writeheader()
        for row in table:
            swap = {"authentic": "counterfeit", "counterfeit": "authentic"}
            writer.writerow({**row, "label": swap[row["label"]]})
    clash = touchstone("data", "merge", reviews, flipped, "--out", tmp_path / "clash.csv")
    assert clash.returncode == 2 and "has the label" in clash.stdout

    split = tmp_path / "next" / "split.csv"
    done = touchstone("data", "split", merged, "--out", split)
    assert done.returncode == 0, done.stdout
    assigned = load_manifest(split).records
    split_of = {r.item_id: r.split for r in assigned}
    # The synthetic splits are frozen; each review item is a re-encoded copy of a synthetic
    # item, so near-duplicate linking puts it in that item's split: no leak into test.
    assert all(split_of[r.item_id] == r.split for r in synthetic.records)
    for appraisal_id, item in reviewed.plan.items():
        if appraisal_id in split_of:
            assert split_of[appraisal_id] == split_of[item["item"]]

    # A member erased after the export: training leaves their rows out, and without the
    # service's database to ask it refuses a manifest with review rows.
    erased = sorted(a for a in reviewed.plan if a in split_of)[0]
    erase_member_of(reviewed, erased)
    run = tmp_path / "run"
    args = ["train", "--config", ROOT / "configs" / "tiny-test.yaml", "--data", split]
    args += ["--out", run, "--set", "tracking.enabled=false"]
    refused = touchstone(*args)
    assert refused.returncode == 2 and "--database-url" in refused.stdout, refused.stdout
    assert not run.exists()
    database = f"sqlite:///{reviewed.data_dir / 'touchstone.db'}"
    trained = touchstone(*args, "--database-url", database)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    rows = sum(r.item_id == erased for r in assigned)
    assert f"left out {rows} row(s) of 1 item(s)" in trained.stdout, trained.stdout
    assert (run / "checkpoints" / "best.pt").exists()


def erase_member_of(reviewed: Reviewed, appraisal_id: str) -> None:
    from serving.db import default_database_url, make_engine, make_sessionmaker
    from serving.erasure import erase_member
    from serving.photos import PhotoStore
    from serving.settings import Settings

    engine = make_engine(reviewed.database_url or default_database_url(reviewed.data_dir))
    store = PhotoStore(reviewed.data_dir / "photos", Settings().photo_key_bytes())
    erase_member(make_sessionmaker(engine), store, reviewed.plan[appraisal_id]["member"], 0)
    engine.dispose()


def test_exported_photos_are_named_by_their_stored_format() -> None:
    # The store keeps WebP uploads as WebP now (stripped, not re-encoded): exported as .png, a
    # WebP file would be misnamed and `touchstone data validate` would read the wrong decoder.
    import io

    from PIL import Image

    from serving.feedback import _extension

    def encoded(kind: str) -> bytes:
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), (120, 80, 40)).save(buffer, kind)
        return buffer.getvalue()

    assert [_extension(encoded(kind)) for kind in ("JPEG", "PNG", "WEBP")] == ["jpg", "png", "webp"]
