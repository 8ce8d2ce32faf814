"""Group splits: every photo of an item lands in one split, stratified by label and category.

Items that share a near-duplicate photo are grouped too, so a fresh split has no near-duplicate
pair across splits. Splits already present are kept (a frozen test set stays frozen as new
data arrives); new items fill each stratum toward the target fractions.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

import numpy as np

from touchstone.data.manifest import PhotoRecord
from touchstone.vocabulary import SPLITS

DEFAULT_FRACTIONS: tuple[float, ...] = (0.7, 0.1, 0.1, 0.1)


def parse_fractions(text: str | Sequence[float]) -> dict[str, float]:
    """`0.7,0.1,0.1,0.1` -> {train: 0.7, val: 0.1, calib: 0.1, test: 0.1}, checked."""
    if isinstance(text, str):
        try:
            values = [float(part) for part in text.split(",")]
        except ValueError as exc:
            raise ValueError(f"fractions {text!r} must be numbers separated by commas") from exc
    else:
        values = [float(v) for v in text]
    if len(values) != len(SPLITS):
        raise ValueError(
            f"give {len(SPLITS)} fractions, one each for {', '.join(SPLITS)}; got {len(values)}"
        )
    if any(not np.isfinite(v) or v < 0 for v in values):
        raise ValueError("fractions must be finite and >= 0")
    if abs(sum(values) - 1.0) > 1e-6:
        raise ValueError(f"fractions must add up to 1; they add up to {sum(values):.6g}")
    return dict(zip(SPLITS, values, strict=True))


def assign_splits(
    records: Sequence[PhotoRecord],
    fractions: dict[str, float],
    seed: int,
    *,
    linked_items: Iterable[tuple[str, str]] = (),
    reassign: bool = False,
) -> list[PhotoRecord]:
    """Return the records with `split` set for every item.

    `linked_items` are pairs of item ids that must share a split (near-duplicate photos).
    With `reassign`, existing splits are ignored and everything is split afresh.
    """
    groups = _item_groups(records, linked_items)
    strata: dict[tuple[str, str], list[str]] = defaultdict(list)
    group_items: dict[str, list[str]] = defaultdict(list)
    for item, group in groups.items():
        group_items[group].append(item)
    item_stratum = _item_strata(records)
    existing = {} if reassign else _existing_splits(records)

    for group, items in group_items.items():
        votes = Counter(item_stratum[i] for i in items)
        stratum = min(votes, key=lambda s: (-votes[s], s))
        strata[stratum].append(group)

    rng = np.random.default_rng(seed)
    order = sorted(strata)
    sizes = {k: sum(len(group_items[g]) for g in strata[k]) for k in order}
    quotas = _quotas(sizes, fractions)
    split_of_group: dict[str, str] = {}
    for stratum in order:
        quota = quotas[stratum]
        filled = Counter[str]()
        pending = []
        for group in sorted(strata[stratum]):
            kept = next((existing[i] for i in group_items[group] if i in existing), None)
            if kept is None:
                pending.append(group)
            else:
                split_of_group[group] = kept
                filled[kept] += len(group_items[group])
        for index in rng.permutation(len(pending)):
            group = pending[index]
            split = max(SPLITS, key=lambda s: (quota[s] - filled[s], -SPLITS.index(s)))
            split_of_group[group] = split
            filled[split] += len(group_items[group])

    out = []
    for record in records:
        split = existing.get(record.item_id) or split_of_group[groups[record.item_id]]
        out.append(dataclasses.replace(record, split=split))
    return out


def _quotas(
    sizes: dict[tuple[str, str], int], fractions: dict[str, float]
) -> dict[tuple[str, str], dict[str, int]]:
    """Whole numbers of items per stratum and split that add up both ways: each stratum's
    quotas sum to its size, and each split's quotas sum to its overall share (largest
    remainder), so rounding inside small strata does not pile up in one split."""
    total = sum(sizes.values())
    overall = _largest_remainder(total, fractions)
    base = {k: {s: int(np.floor(n * fractions[s])) for s in SPLITS} for k, n in sizes.items()}
    need_stratum = {k: sizes[k] - sum(base[k].values()) for k in sizes}
    need_split = {s: overall[s] - sum(base[k][s] for k in sizes) for s in SPLITS}
    cells = sorted(
        ((sizes[k] * fractions[s] - base[k][s], k, s) for k in sizes for s in SPLITS),
        key=lambda cell: (-cell[0], cell[1], SPLITS.index(cell[2])),
    )
    for remainder, stratum, split in cells:
        if remainder > 0 and need_stratum[stratum] > 0 and need_split[split] > 0:
            base[stratum][split] += 1
            need_stratum[stratum] -= 1
            need_split[split] -= 1
    for stratum in sizes:  # rare leftovers once the greedy pass is boxed in
        for split in SPLITS:
            while need_stratum[stratum] > 0 and need_split[split] > 0:
                base[stratum][split] += 1
                need_stratum[stratum] -= 1
                need_split[split] -= 1
    return base


def _largest_remainder(total: int, fractions: dict[str, float]) -> dict[str, int]:
    exact = {s: total * fractions[s] for s in SPLITS}
    counts = {s: int(np.floor(v)) for s, v in exact.items()}
    for split in sorted(SPLITS, key=lambda s: (-(exact[s] - counts[s]), SPLITS.index(s))):
        if sum(counts.values()) >= total:
            break
        counts[split] += 1
    return counts


def _item_strata(records: Sequence[PhotoRecord]) -> dict[str, tuple[str, str]]:
    strata: dict[str, tuple[str, str]] = {}
    for record in records:
        label, category = record.label or "", record.category or ""
        current = strata.get(record.item_id)
        if current is None or (not current[0] and label):
            strata[record.item_id] = (label, category)
    return strata


def _existing_splits(records: Sequence[PhotoRecord]) -> dict[str, str]:
    existing: dict[str, str] = {}
    for record in records:
        if record.split is not None:
            existing.setdefault(record.item_id, record.split)
    return existing


def _item_groups(
    records: Sequence[PhotoRecord], links: Iterable[tuple[str, str]]
) -> dict[str, str]:
    """Union-find over items: linked items share a group (named by its smallest item id)."""
    parent = {r.item_id: r.item_id for r in records}

    def find(item: str) -> str:
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    for a, b in links:
        if a in parent and b in parent:
            root_a, root_b = find(a), find(b)
            if root_a != root_b:
                parent[max(root_a, root_b)] = min(root_a, root_b)
    return {item: find(item) for item in parent}
