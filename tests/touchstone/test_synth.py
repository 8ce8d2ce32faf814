"""The generator: deterministic for a seed, balanced labels, cues recorded, difficulty honoured."""

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from touchstone.data.manifest import load_manifest
from touchstone.data.synth import SynthConfig, generate_dataset
from touchstone.data.synth.counterfeits import DIFFICULTIES
from touchstone.data.synth.generate import _labels, plan_item
from touchstone.data.synth.styles import CATEGORY_REGIONS
from touchstone.data.validation import validate_manifest
from touchstone.imaging import decode_photo


def _fingerprint(manifest: Path) -> str:
    digest = hashlib.sha256(manifest.read_bytes())
    for record in load_manifest(manifest).records:
        digest.update(record.path.read_bytes())
    return digest.hexdigest()


def test_same_seed_same_bytes_whatever_the_workers(tmp_path: Path) -> None:
    config = SynthConfig(items=10, seed=5, size=64)
    one = generate_dataset(tmp_path / "a", config, workers=1, show_progress=False)
    two = generate_dataset(tmp_path / "b", config, workers=2, show_progress=False)
    assert _fingerprint(one) == _fingerprint(two)
    other = generate_dataset(
        tmp_path / "c", config.model_copy(update={"seed": 6}), workers=1, show_progress=False
    )
    assert _fingerprint(other) != _fingerprint(one)


def test_the_data_set_is_valid_and_complete(tiny_synthetic: Path) -> None:
    manifest = load_manifest(tiny_synthetic)
    report = validate_manifest(manifest, show_progress=False)
    assert report.issues == []
    items: dict[str, set[str]] = {}
    for record in manifest.records:
        items.setdefault(record.item_id, set()).add(record.region)
        assert record.source == "synthetic" and record.split is not None
    for record in manifest.records:
        assert items[record.item_id] == set(CATEGORY_REGIONS[record.category])
    photo = decode_photo(manifest.records[0].path)
    assert photo.size == (96, 96)
    assert manifest.info.generator is not None and manifest.info.generator["seed"] == 3


def test_cue_strengths_are_recorded(tiny_synthetic: Path) -> None:
    records = load_manifest(tiny_synthetic).records
    for record in records:
        strength = float(record.extra["cue_strength"])
        if record.label == "authentic":
            assert strength == 0.0 and record.extra["cues"] == ""
            assert record.extra["super_fake"] == "0"
        elif record.extra["super_fake"] == "0":
            low, high = DIFFICULTIES["standard"].strength
            assert low <= strength <= high
            assert record.extra["cues"]  # names which cues were off, e.g. font_weight=0.52


@pytest.mark.parametrize(("items", "share"), [(600, 0.5), (101, 0.5), (50, 0.2)])
def test_labels_are_balanced_exactly(items: int, share: float) -> None:
    labels = _labels(SynthConfig(items=items, counterfeit_share=share))
    assert Counter(labels)["counterfeit"] == round(items * share)
    assert len(labels) == items


def test_label_balance_in_a_written_data_set(tiny_synthetic: Path) -> None:
    items = {r.item_id: r.label for r in load_manifest(tiny_synthetic).records}
    assert Counter(items.values()) == {"authentic": 12, "counterfeit": 12}


def test_difficulty_sets_how_far_fakes_sit_and_how_many_are_super_fakes() -> None:
    mean_strength, super_share = {}, {}
    for name in ("easy", "standard", "hard"):
        config = SynthConfig(items=3000, difficulty=name)
        strengths, supers = [], 0
        for index in range(config.items):
            plan = plan_item(config, index, "counterfeit", np.random.default_rng([0, index]))
            strengths.extend(c.strength for c in plan.cues.values())
            supers += plan.super_fake
            if plan.super_fake:
                wrong = [c for c in plan.cues.values() if c.strength > 0]
                assert len(wrong) <= 1  # flawless everywhere but at most one region
        mean_strength[name] = np.mean(strengths)
        super_share[name] = supers / config.items
    assert mean_strength["easy"] > mean_strength["standard"] > mean_strength["hard"]
    assert super_share["easy"] == 0.0
    assert super_share["standard"] == pytest.approx(0.10, abs=0.02)
    assert super_share["hard"] == pytest.approx(0.25, abs=0.03)


def test_authentic_items_carry_no_cues() -> None:
    config = SynthConfig(items=50, difficulty="hard")
    for index in range(config.items):
        plan = plan_item(config, index, "authentic", np.random.default_rng([1, index]))
        assert all(c.strength == 0 for c in plan.cues.values()) and not plan.super_fake
