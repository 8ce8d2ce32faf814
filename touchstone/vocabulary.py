"""The fixed words of the domain: regions, labels, splits, sources and member tiers.

A data set may declare its own region vocabulary (see `touchstone.data.manifest.DatasetInfo`);
these are the defaults that training, evaluation and serving share.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

DEFAULT_REGIONS: tuple[str, ...] = ("hardware", "stitching", "logo")
LABELS: tuple[str, ...] = ("authentic", "counterfeit")
SPLITS: tuple[str, ...] = ("train", "val", "calib", "test")
SOURCES: tuple[str, ...] = ("synthetic", "review", "import")

# Member tiers, lowest to highest: the membership platform's words, defined here once. The
# routing policy and the benefits configuration must give each of them its SLA and free quota
# (checked when they load), so a tier can never silently get nothing.
TIERS: tuple[str, ...] = ("explorer", "connoisseur", "collector", "master", "brand_confidant")
# A member the membership platform has not announced (PUT /v1/members/{id}) is an explorer.
DEFAULT_TIER = "explorer"

_REGION_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def check_region_vocabulary(regions: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Return the vocabulary as a tuple, or raise ValueError naming the bad entry.

    Region names become multipart field names in the API and column values in manifests, so
    they are short lowercase identifiers.
    """
    if not regions:
        raise ValueError("a region vocabulary needs at least one region")
    seen: set[str] = set()
    for name in regions:
        if not _REGION_NAME.match(name):
            raise ValueError(
                f"region name {name!r} must be a lowercase identifier (a-z, 0-9, _; up to 32)"
            )
        if name in seen:
            raise ValueError(f"region {name!r} is declared twice")
        seen.add(name)
    return tuple(regions)


def check_tier_names(names: Iterable[str], where: str, every: bool = False) -> None:
    """Raise ValueError naming any of `names` that is not a tier, and, with `every`, any tier
    `names` leaves out; `where` says which setting is wrong."""
    given = list(names)
    unknown = [name for name in given if name not in TIERS]
    if unknown:
        raise ValueError(
            f"{where} names unknown tier(s) {', '.join(map(repr, unknown))}; "
            f"the tiers are {', '.join(TIERS)}"
        )
    missing = [tier for tier in TIERS if tier not in given]
    if every and missing:
        raise ValueError(f"{where} has no entry for tier(s) {', '.join(map(repr, missing))}")
