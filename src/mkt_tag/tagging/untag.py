"""Removing mkt-tag's tags from photos: its own keywords and record, nothing else.

The tags, the record and the copies mkt-tag made of a person's keywords (where a field
holds nothing else) come out of each XMP and JSON sidecar; every keyword a person or
another program wrote stays where it is, and so does every other element of the file. A
sidecar left with nothing in it was mkt-tag's alone and is deleted. TXT sidecars record no
owner, so they are left alone.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mkt_tag.errors import MktTagError
from mkt_tag.images import scan_inputs
from mkt_tag.sidecar_paths import SIDECAR_NAMINGS, sidecar_path
from mkt_tag.sidecars import Removed, remove_tags

UNTAG_FORMATS = ("xmp", "json")  # the sidecars that say which of their tags are mkt-tag's


@dataclass
class UntagJob:
    """What a ``mkt-tag untag`` run does."""

    inputs: Sequence[Path]  # files and folders
    recursive: bool = False  # descend into sub-folders
    formats: Sequence[str] = UNTAG_FORMATS  # the sidecar formats to clean
    dry_run: bool = False  # only say what would change


@dataclass
class UntagReport:
    """What an untag run did."""

    found: int = 0  # images (and photos in formats mkt-tag cannot read) looked at
    changed: int = 0  # sidecars mkt-tag's tags were removed from
    deleted: int = 0  # of those, sidecars left empty and deleted
    failures: list[MktTagError] = field(default_factory=list)


def untag(job: UntagJob) -> Generator[Removed | MktTagError, None, UntagReport]:
    """Remove mkt-tag's tags from the sidecars of the images in ``job.inputs``, yielding
    each sidecar changed (or that would be, with ``dry_run``) and each failure; the
    report is the generator's return value.

    Both namings are looked at (``photo.jpg.xmp`` and ``photo.xmp``), and photos in formats
    mkt-tag cannot read are included: their sidecars may hold its tags all the same.
    """
    for fmt in job.formats:
        if fmt not in UNTAG_FORMATS:
            raise MktTagError(f"untag: {fmt!r} sidecars record no owner; use {UNTAG_FORMATS}")
    found = scan_inputs(job.inputs, job.recursive)
    report = UntagReport(failures=list(found.errors))
    yield from found.errors
    images = sorted({*found.images, *found.unreadable})
    report.found = len(images)
    done: set[Path] = set()  # photo.jpg and photo.png share photo.xmp: clean it once
    for image in images:
        for fmt in job.formats:
            for naming in SIDECAR_NAMINGS:
                path = sidecar_path(image, fmt, naming)
                if path in done:
                    continue
                done.add(path)
                try:
                    removed = remove_tags(image, fmt, naming, dry_run=job.dry_run)
                except MktTagError as error:
                    report.failures.append(error)
                    yield error
                    continue
                if removed is not None:
                    report.changed += 1
                    report.deleted += removed.deleted
                    yield removed
    return report
