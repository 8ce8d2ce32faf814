"""The trust migrations (0006 to 0010, one head again) upgrade a database that already holds
data: nothing is lost, old rows get the values the new columns promise, and the service reads
them back."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import MetaData, insert, select
from sqlalchemy.engine import Engine

BEFORE = "0005_certificates"
T0 = dt.datetime(2026, 10, 1, 8, 0, tzinfo=dt.UTC)


def migrate(engine: Engine, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    from serving.db import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def appraisal_row(appraisal_id: str, status: str, **extra: object) -> dict[str, object]:
    return {
        "id": appraisal_id,
        "member_id": "m-old",
        "member_tier": "collector",
        "category": "bag",
        "status": status,
        "rule": "photo_quality",
        "reasons": ["retake the logo photo"],
        "reviews_required": 0,
        "photo_rounds": 1,
        "created_at": T0,
        "updated_at": T0 + dt.timedelta(minutes=5),
        "sla_due_at": T0 + dt.timedelta(hours=24),
        # Every row names the same columns: an executemany takes them from the first row.
        "outcome": None,
        "path": None,
        **extra,
    }


def test_the_trust_migrations_upgrade_a_database_holding_data(
    tmp_path: Path, database_url: str | None
) -> None:
    from serving.auth import authenticate, create_key
    from serving.benefits.tiers import tier_at
    from serving.db import (
        ApiKey,
        Appraisal,
        default_database_url,
        make_engine,
        make_sessionmaker,
        upgrade,
    )

    engine = make_engine(database_url or default_database_url(tmp_path))
    migrate(engine, BEFORE)
    tables = MetaData()
    tables.reflect(engine)
    with engine.begin() as connection:
        connection.execute(
            insert(tables.tables["members"]),
            [{"id": "m-old", "tier": "collector", "created_at": T0, "updated_at": T0}],
        )
        connection.execute(
            insert(tables.tables["appraisals"]),
            [
                appraisal_row("a-waiting", "awaiting_photos"),
                appraisal_row("a-final", "finalized", outcome="authentic", path="human"),
            ],
        )
        connection.execute(
            insert(tables.tables["api_keys"]),
            [
                {
                    "prefix": "aaaaaaaaaaaa",
                    "secret_sha256": "0" * 64,
                    "role": "platform",
                    "label": "old",
                    "created_at": T0,
                }
            ],
        )

    upgrade(engine)  # what the service does at start: every head

    sessions = make_sessionmaker(engine)
    with sessions() as session:
        waiting = session.get(Appraisal, "a-waiting")
        final = session.get(Appraisal, "a-final")
        assert waiting is not None and final is not None
        # The clock of an item already waiting for photos stopped when it last changed.
        assert waiting.sla_paused_at is not None
        assert waiting.sla_paused_at.replace(tzinfo=dt.UTC) == T0 + dt.timedelta(minutes=5)
        assert final.sla_paused_at is None and final.outcome == "authentic"
        # The member's tier became the first entry of its history.
        assert tier_at(session, "m-old", T0 + dt.timedelta(days=1)) == "collector"
        old_key = session.scalar(select(ApiKey).where(ApiKey.label == "old"))
        assert old_key is not None and old_key.expires_at is None and old_key.role == "platform"
        # A key made after the upgrade still authenticates.
        key = create_key(session, "admin")
        assert authenticate(session, f"Bearer {key}").role == "admin"
    engine.dispose()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_migrations_end_in_one_head(database_url: str | None) -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from serving.db import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert len(ScriptDirectory.from_config(config).get_heads()) == 1
