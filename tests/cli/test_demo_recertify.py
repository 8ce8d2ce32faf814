"""`scripts/demo_recertify.py`, `make demo`'s recertification loop, end to end on tiny data: a
real `touchstone serve`, items submitted and audited through the API, verdicts from the
manifest's labels, and `touchstone recertify`'s new card (or its refusal, exit 2)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from sqlalchemy import select

from serving.db import AuditEntry, ReviewTask, default_database_url, make_engine, make_sessionmaker
from touchstone.data.manifest import load_manifest
from touchstone.model_card import file_sha256, load_model_dir

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "demo_recertify.py"


def demo_recertify(model: Path, manifest: Path, work: Path, out: Path, *extra: str):
    env = {k: v for k, v in os.environ.items() if k != "TOUCHSTONE_DATABASE_URL"}
    env.update(NO_ALBUMENTATIONS_UPDATE="1", MLFLOW_DISABLE_TELEMETRY="true", HF_HUB_OFFLINE="1")
    env["COLUMNS"] = "400"  # rich wraps at the width: keep each sentence on one line
    args = ["--model", model, "--data", manifest, "--work", work, "--out", out, *extra]
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=ROOT,
    )


def labels(manifest: Path, split: str) -> Counter[str]:
    """Items of the split by label."""
    records = load_manifest(manifest).records
    return Counter({r.item_id: r.label for r in records if r.split == split}.values())


def test_the_loop_writes_a_recertified_card(
    tmp_path: Path, tiny_model: Path, tiny_synthetic: Path
) -> None:
    # The tiny card certifies neither side; everything it may judge is audited here.
    out = tmp_path / "recertified"
    done = demo_recertify(
        tiny_model, tiny_synthetic, tmp_path / "work", out, "--audit-share", "1.0"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    expected = labels(tiny_synthetic, "test")
    assert sum(expected.values()) >= 2 and set(expected) == {"authentic", "counterfeit"}
    items = sum(expected.values())
    assert f"{items} audited and finalised" in done.stdout, done.stdout
    assert "certification 2" in done.stdout  # recertify's before/after table

    model, before = load_model_dir(out), load_model_dir(tiny_model).card
    card = model.card
    assert file_sha256(model.onnx_path) == before.onnx.sha256
    assert card.thresholds.certification == 2
    assert card.version == f"{before.onnx.sha256[:12]}.c2"
    audit = card.thresholds.evidence["sources"]["audit"]
    assert audit == {"authentic": expected["authentic"], "counterfeit": expected["counterfeit"]}
    # The service ran on a fresh SQLite database in the work folder, with the demo's policy.
    assert (tmp_path / "work" / "service").is_dir()
    assert "audit_share: 1.0" in (tmp_path / "work" / "policy.yaml").read_text()


def test_other_review_tasks_are_left_open(
    tmp_path: Path, tiny_model: Path, tiny_synthetic: Path
) -> None:
    """The train split's jewellery shows no stitching: `missing_region`, a review task that is
    no audit. Its reviewers hold those tasks, audit the rest, and release them at the end."""
    out = tmp_path / "recertified"
    done = demo_recertify(
        tiny_model,
        tiny_synthetic,
        tmp_path / "work",
        out,
        *("--audit-share", "1.0", "--split", "train", "--clients", "1"),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "missing_region" in done.stdout, done.stdout

    engine = make_engine(default_database_url(tmp_path / "work" / "service"))
    try:
        with make_sessionmaker(engine)() as session:
            statuses = Counter(session.scalars(select(ReviewTask.status)))
            actions = Counter(session.scalars(select(AuditEntry.action)))
    finally:
        engine.dispose()
    audited = load_model_dir(out).card.thresholds.evidence["sources"]["audit"]
    assert statuses["done"] == actions["verdict"] == sum(audited.values()) > 0
    # Some were claimed on the way to an audit, and released: none is left claimed or judged.
    assert actions["release"] > 0 and f"{actions['release']} of them claimed" in done.stdout
    assert statuses["open"] >= actions["release"] and statuses["claimed"] == 0, statuses


def test_no_audited_item_is_a_refusal_with_the_reason(
    tmp_path: Path, tiny_model: Path, tiny_synthetic: Path
) -> None:
    out = tmp_path / "recertified"
    done = demo_recertify(tiny_model, tiny_synthetic, tmp_path / "work", out, "--audit-share", "0")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "nothing to recertify" in done.stdout and "refused" in done.stdout
    assert not out.exists()


def test_an_existing_out_is_refused_before_anything_runs(
    tmp_path: Path, tiny_model: Path, tiny_synthetic: Path
) -> None:
    out = tmp_path / "recertified"
    out.mkdir()
    done = demo_recertify(tiny_model, tiny_synthetic, tmp_path / "work", out)
    assert done.returncode == 1 and "exists" in done.stdout
    assert not (tmp_path / "work").exists()
