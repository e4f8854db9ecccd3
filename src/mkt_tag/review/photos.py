"""The photos a review shows: read from a results file or from a folder of sidecars.

Each photo gets a number (its ``id``, its place in the list) and the server names photos by
that number only: a request never carries a path, so nothing outside this list can be
reached, whatever ``../`` or absolute path a request spells.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from mkt_tag.errors import InputFileError
from mkt_tag.results import RESULTS_SUFFIXES, MalformedFileError, Tag, image_key, read_rows
from mkt_tag.sidecar_paths import sidecar_path
from mkt_tag.xmp import XmpDocument

# The sidecars whose mkt-tag record a folder is read from, in order of preference.
_SIDECARS = (("xmp", "full"), ("xmp", "stem"), ("json", "full"), ("json", "stem"))


@dataclass
class Photo:
    """One photo under review: the model's tags, best first."""

    id: int  # its place in the review; what the server and the page call it
    filename: str  # absolute (text, not a Path: making 100,000 of those costs seconds)
    tags: list[Tag] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return Path(self.filename)

    @property
    def key(self) -> str:
        """Which image it is, however it is spelled (``results.image_key``)."""
        return image_key(self.path)


def load_photos(source: Path) -> list[Photo]:
    """The photos of a results file (``.csv``, ``.json``, ``.jsonl``) or of a folder whose
    sidecars hold mkt-tag's tags (``mkt-tag tag --sidecar xmp|json``), sorted by path.

    Relative paths in a results file are relative to the working directory, as ``tag``
    wrote them before it made them absolute. In a folder, photos that resolve outside it
    (a symlink pointing elsewhere) are left out.

    Raises:
        InputFileError: the file or folder is missing, malformed, or names no photo.
    """
    source = Path(source)
    if source.is_dir():
        found = _from_folder(source)
    elif not source.exists():
        raise InputFileError(source, "file not found")
    elif source.suffix.lower() not in RESULTS_SUFFIXES:
        accepted = ", ".join(RESULTS_SUFFIXES)
        raise InputFileError(source, f"not a results file (use {accepted}, or a folder)")
    else:
        found = [(os.path.abspath(path), tags) for path, tags, _ in read_rows(source)]
    # One photo per absolute path, a later row winning as in tag. By spelling, not by
    # image_key: resolving costs a system call per photo (seconds for 100,000), and tag
    # writes each image once already.
    unique = dict(found)
    if not unique:
        raise InputFileError(source, "no photos to review (no rows, or no sidecars with tags)")
    return [Photo(number, path, unique[path]) for number, path in enumerate(sorted(unique))]


def _from_folder(folder: Path) -> list[tuple[str, list[Tag]]]:
    from mkt_tag.images import find_images

    root = folder.resolve()
    found = []
    for image in find_images([folder], recursive=True)[0]:
        try:
            inside = image.resolve().is_relative_to(root)
        except (OSError, RuntimeError):
            inside = False
        if not inside:
            continue
        tags = sidecar_tags(image)
        if tags is not None:
            found.append((os.path.abspath(image), tags))
    return found


def sidecar_tags(image: Path) -> list[Tag] | None:
    """mkt-tag's tags of ``image``, with their scores, from the record in its XMP or JSON
    sidecar; None when no sidecar holds a record.

    Raises:
        InputFileError: a sidecar that exists cannot be read or parsed.
    """
    for fmt, naming in _SIDECARS:
        path = sidecar_path(image, fmt, naming)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        except OSError as error:
            raise InputFileError(path, (error.strerror or str(error)).lower()) from None
        try:
            tags = _xmp_tags(data) if fmt == "xmp" else _json_tags(data)
        except MalformedFileError as error:
            raise InputFileError(path, f"malformed {fmt} sidecar ({error})") from None
        if tags is not None:
            return tags
    return None


def _xmp_tags(data: bytes) -> list[Tag] | None:
    record = XmpDocument(data).record
    return None if record is None else list(record.tags)


def _json_tags(data: bytes) -> list[Tag] | None:
    try:
        document = json.loads(data)
    except ValueError as error:
        raise MalformedFileError(f"not JSON: {error}") from None
    record = document.get("mkt-tag") if isinstance(document, dict) else None
    if not isinstance(record, dict):
        return None
    tags = record.get("tags", [])
    if not isinstance(tags, list):
        raise MalformedFileError("mkt-tag's record has no list of tags")
    found = []
    for item in tags:
        if not isinstance(item, dict) or not isinstance(item.get("label"), str):
            raise MalformedFileError(f"a damaged tag in mkt-tag's record: {item!r}")
        score = item.get("score")
        if not isinstance(score, int | float) or isinstance(score, bool):
            raise MalformedFileError(f"tag {item['label']!r} has no score")
        found.append(Tag(item["label"], float(score)))
    return found
