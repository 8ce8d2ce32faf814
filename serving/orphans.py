"""Collecting orphan photos: files in the store that no photo row names.

An upload stores its photos before its row commits, so a crash (or a refused upload, before
uploads stored only accepted photos) can leave files that nothing names and that an erasure,
which finds photos by their rows, would never reach. The sweep deletes those once they are
older than a grace period, so a photo whose upload is still in flight is never taken: `put`
renews the time of a file it finds already stored, and `PhotoStore.remove_if_older` reads the
time again after moving the file aside. Temp files left by interrupted writes go the same way.
A sweep that would delete more than half of the store deletes nothing unless forced: that is a
service pointed at the wrong database, not crashes.

`touchstone photos collect-orphans` runs it; `touchstone serve` runs it at start and every
`SWEEP_SECONDS`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from serving.db import Photo, utcnow
from serving.photos import PhotoStore

GRACE = dt.timedelta(hours=24)  # far longer than any upload takes
SWEEP_SECONDS = 6 * 3600.0
_CHUNK = 500


@dataclass
class OrphanReport:
    files: int = 0  # photo files in the store
    named: int = 0  # kept: a photo row names them
    fresh: int = 0  # kept: no row names them yet, but younger than the grace period
    orphans: int = 0  # deleted (a dry run: would be)
    temp_files: int = 0  # leftovers of interrupted writes, deleted (or would be)


class SweepRefused(Exception):
    """Most of the store looks orphaned: more likely the wrong database than crashes."""

    def __init__(self, report: OrphanReport) -> None:
        super().__init__(
            f"{report.orphans} of {report.files} photo files are named by no photo row: is "
            "this the service's database? Nothing was deleted (force it if it is)"
        )
        self.report = report


def collect_orphans(
    sessions: sessionmaker,
    store: PhotoStore,
    grace: dt.timedelta = GRACE,
    *,
    now: dt.datetime | None = None,
    dry_run: bool = False,
    force: bool = False,
) -> OrphanReport:
    """Delete the store's files that no photo row names and that are older than `grace`.
    Refuses (SweepRefused) when that would be more than half of the store, unless `force`."""
    before = (now or utcnow()).timestamp() - grace.total_seconds()
    report = OrphanReport()
    photos, temps = [], []
    for file in store.files():
        if file.address is not None:
            photos.append(file)
        elif file.mtime < before:
            temps.append(file)
    report.files, report.temp_files = len(photos), len(temps)
    orphans = []
    for start in range(0, len(photos), _CHUNK):
        chunk = photos[start : start + _CHUNK]
        with sessions() as session:
            named = set(
                session.scalars(
                    select(Photo.sha256)
                    .where(Photo.sha256.in_([f.address for f in chunk]))
                    .distinct()
                )
            )
        for file in chunk:
            if file.address in named:
                report.named += 1
            elif file.mtime >= before:
                report.fresh += 1
            else:
                orphans.append(file)
    report.orphans = len(orphans)
    if dry_run:
        return report
    if 2 * len(orphans) > len(photos) and not force:
        # A service pointed at a new or wrong database would otherwise delete every photo.
        raise SweepRefused(report)
    for temp in temps:
        temp.path.unlink(missing_ok=True)
    for file in orphans:
        if not store.remove_if_older(file.path, before):
            report.orphans -= 1  # renewed by an upload since it was listed
            report.fresh += 1
    return report
