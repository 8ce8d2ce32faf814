"""The fixed words of the domain: regions, labels, splits and sources.

A data set may declare its own region vocabulary (see `touchstone.data.manifest.DatasetInfo`);
these are the defaults that training, evaluation and serving share.
"""

from __future__ import annotations

import re

DEFAULT_REGIONS: tuple[str, ...] = ("hardware", "stitching", "logo")
LABELS: tuple[str, ...] = ("authentic", "counterfeit")
SPLITS: tuple[str, ...] = ("train", "val", "calib", "test")
SOURCES: tuple[str, ...] = ("synthetic", "review", "import")

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
