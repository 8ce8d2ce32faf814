"""Group splits: no item crosses splits, strata keep their shares, kept splits stay kept."""

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from touchstone.data.manifest import PhotoRecord
from touchstone.data.near_duplicates import find_pairs
from touchstone.data.splitting import assign_splits, parse_fractions

FRACTIONS = parse_fractions("0.7,0.1,0.1,0.1")


def _records(items: int, seed: int = 0) -> list[PhotoRecord]:
    """Items of uneven size, labels and categories, photos in shuffled order."""
    rng = np.random.default_rng(seed)
    records = []
    for index in range(items):
        label = "counterfeit" if rng.random() < 0.4 else "authentic"
        category = ["bag", "watch", "jewellery"][int(rng.integers(3))]
        for photo in range(int(rng.integers(1, 7))):
            records.append(
                PhotoRecord(
                    line=0,
                    image=f"{index}-{photo}.jpg",
                    path=Path(f"/x/{index}-{photo}.jpg"),
                    item_id=f"item{index}",
                    region="logo",
                    label=label,
                    category=category,
                )
            )
    order = rng.permutation(len(records))
    return [records[i] for i in order]


def _items(records: list[PhotoRecord]) -> dict[str, set[str | None]]:
    splits: dict[str, set[str | None]] = {}
    for record in records:
        splits.setdefault(record.item_id, set()).add(record.split)
    return splits


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_item_crosses_splits_and_strata_keep_their_shares(seed: int) -> None:
    records = assign_splits(_records(500, seed), FRACTIONS, seed)
    splits = _items(records)
    assert all(len(s) == 1 for s in splits.values())
    item_split = {item: next(iter(s)) for item, s in splits.items()}
    totals = Counter(item_split.values())
    assert totals == {"train": 350, "val": 50, "calib": 50, "test": 50}
    strata = {r.item_id: (r.label, r.category) for r in records}
    for stratum in set(strata.values()):
        members = [i for i, s in strata.items() if s == stratum]
        counts = Counter(item_split[i] for i in members)
        for split, fraction in FRACTIONS.items():
            assert abs(counts[split] - fraction * len(members)) <= 1.0, (stratum, counts)


def test_seed_decides_and_repeats() -> None:
    records = _records(200)
    first = assign_splits(records, FRACTIONS, 7)
    again = assign_splits(records, FRACTIONS, 7)
    other = assign_splits(records, FRACTIONS, 8)
    assert [r.split for r in first] == [r.split for r in again]
    assert [r.split for r in first] != [r.split for r in other]


def test_existing_splits_are_kept_unless_reassigned() -> None:
    records = assign_splits(_records(200), FRACTIONS, 0)
    frozen_test = {r.item_id for r in records if r.split == "test"}
    more = records + [
        PhotoRecord(
            line=0,
            image=f"new{i}.jpg",
            path=Path(f"/y/new{i}.jpg"),
            item_id=f"new{i}",
            region="logo",
            label="authentic",
            category="bag",
        )
        for i in range(60)
    ]
    resplit = assign_splits(more, FRACTIONS, 99)
    assert {r.item_id for r in resplit if r.split == "test"} >= frozen_test
    assert all(r.split is not None for r in resplit)
    fresh = assign_splits(more, FRACTIONS, 99, reassign=True)
    assert {r.item_id for r in fresh if r.split == "test"} != frozen_test


def test_linked_items_share_a_split() -> None:
    records = _records(120)
    links = [("item1", "item2"), ("item2", "item50"), ("item7", "item99")]
    splits = {r.item_id: r.split for r in assign_splits(records, FRACTIONS, 3, linked_items=links)}
    assert splits["item1"] == splits["item2"] == splits["item50"]
    assert splits["item7"] == splits["item99"]


def test_a_zero_fraction_gets_nothing() -> None:
    records = assign_splits(_records(100), parse_fractions([0.8, 0.2, 0.0, 0.0]), 0)
    assert {r.split for r in records} == {"train", "val"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0.7,0.1,0.1", "give 4"),
        ("0.7,0.1,0.1,0.2", "add up to 1"),
        ("0.7,a,0.1,0.1", "numbers"),
        ("1.2,-0.2,0,0", ">= 0"),
    ],
)
def test_bad_fractions(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_fractions(text)


@pytest.mark.parametrize("max_distance", [0, 3, 5, 10])
def test_near_duplicate_search_matches_brute_force(max_distance: int) -> None:
    rng = np.random.default_rng(max_distance)
    base = rng.integers(0, 2**63, 60, dtype=np.int64).astype(np.uint64)
    hashes: list[int | None] = [int(h) for h in base]
    for h in base[:30]:  # near copies: flip a few bits
        flips = rng.choice(64, size=int(rng.integers(0, 12)), replace=False)
        mask = sum(1 << int(b) for b in flips)
        hashes.append(int(h) ^ mask)
    hashes.append(None)  # an undecodable photo has no hash
    expected = sorted(
        (i, j, bin(hashes[i] ^ hashes[j]).count("1"))
        for i in range(len(hashes))
        for j in range(i + 1, len(hashes))
        if hashes[i] is not None
        and hashes[j] is not None
        and bin(hashes[i] ^ hashes[j]).count("1") <= max_distance
    )
    assert find_pairs(hashes, max_distance) == expected
    assert expected or max_distance == 0
