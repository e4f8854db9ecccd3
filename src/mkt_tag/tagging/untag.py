"""Removing mkt-tag's tags from photos: its own keywords and record, nothing else.

The tags, the record and the copies mkt-tag made of a person's keywords (where a field
holds nothing else) come out of each XMP and JSON sidecar; every keyword a person or
another program wrote stays where it is, and so does every other element of the file. A
sidecar left with nothing in it was mkt-tag's alone and is deleted. TXT sidecars record no
owner, so they are left alone. With ``embed``, the keywords mkt-tag wrote into the image
files themselves (``mkt-tag tag --embed``) come out the same way.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mkt_tag.errors import MktTagError
from mkt_tag.images import scan_inputs
from mkt_tag.sidecar_paths import SIDECAR_NAMINGS, sidecar_path
from mkt_tag.sidecars import Removed, remove_tags

if TYPE_CHECKING:
    from mkt_tag.embedded import EmbedChange, EmbeddedMetadata

UNTAG_FORMATS = ("xmp", "json")  # the sidecars that say which of their tags are mkt-tag's


@dataclass
class UntagJob:
    """What a ``mkt-tag untag`` run does."""

    inputs: Sequence[Path]  # files and folders
    recursive: bool = False  # descend into sub-folders
    formats: Sequence[str] = UNTAG_FORMATS  # the sidecar formats to clean
    embed: bool = False  # also the keywords inside the image files (needs exiftool)
    dry_run: bool = False  # only say what would change


@dataclass
class UntagReport:
    """What an untag run did."""

    found: int = 0  # images (and photos in formats mkt-tag cannot read) looked at
    changed: int = 0  # sidecars (and files) mkt-tag's tags were removed from
    deleted: int = 0  # of those, sidecars left empty and deleted
    failures: list[MktTagError] = field(default_factory=list)


def untag(
    job: UntagJob,
) -> Generator[Removed | EmbedChange | MktTagError, None, UntagReport]:
    """Remove mkt-tag's tags from the sidecars of the images in ``job.inputs``, yielding
    each sidecar changed (or that would be, with ``dry_run``) and each failure; the
    report is the generator's return value.

    Both namings are looked at (``photo.jpg.xmp`` and ``photo.xmp``), and photos in formats
    mkt-tag cannot read are included: their sidecars may hold its tags all the same.
    """
    for fmt in job.formats:
        if fmt not in UNTAG_FORMATS:
            raise MktTagError(f"untag: {fmt!r} sidecars record no owner; use {UNTAG_FORMATS}")
    embedded = _embedded() if job.embed else None  # a missing exiftool: said at once
    try:
        return (yield from _untag(job, embedded))
    finally:
        if embedded is not None:
            embedded.close()


def _embedded() -> EmbeddedMetadata:
    from mkt_tag.embedded import EmbeddedMetadata

    return EmbeddedMetadata().__enter__()


def _untag(
    job: UntagJob, embedded: EmbeddedMetadata | None
) -> Generator[Removed | EmbedChange | MktTagError, None, UntagReport]:
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
        if embedded is not None:
            try:
                change = embedded.remove(image, dry_run=job.dry_run)
            except MktTagError as error:
                report.failures.append(error)
                yield error
                continue
            if change is not None:
                report.changed += 1
                yield change
    return report
