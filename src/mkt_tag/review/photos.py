"""The photos a review shows: read from a results file or from a folder of sidecars.

Each photo gets a number (its ``id``, its place in the list) and the server names photos by
that number only: a request never carries a path, so nothing outside this list can be
reached, whatever ``../`` or absolute path a request spells.

A photo keeps its tags as a plain ``{label: score}`` dict, not as ``results.Tag`` objects:
100,000 photos of 5 tags made 500,000 of those, a second of CPU before the page could open.
Results files are read by a faster path than ``results.read_rows`` (JSON Lines parsed in
batches by one ``json.loads``, types checked a column at a time); anything it does not
expect is read again by ``read_rows``, which accepts and rejects exactly the same files and
names what is wrong.
"""

from __future__ import annotations

import csv
import gc
import io
import json
import json.scanner
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

from mkt_tag.errors import InputFileError
from mkt_tag.remote import uri_of
from mkt_tag.results import (
    CSV_HEADER,
    LABEL_SEPARATOR,
    RESULTS_SUFFIXES,
    MalformedFileError,
    Tag,
    image_key,
    read_rows,
)
from mkt_tag.sidecar_paths import sidecar_path
from mkt_tag.xmp import XmpDocument

# The sidecars whose mkt-tag record a folder is read from, in order of preference.
_SIDECARS = (("xmp", "full"), ("xmp", "stem"), ("json", "full"), ("json", "stem"))
_BATCH = 10_000  # JSON records checked and made into rows at a time: few parsed at once

Scores = dict[str, float]  # a photo's tags: label -> the model's score


@dataclass(slots=True)
class Photo:
    """One photo under review and the model's tags."""

    id: int  # its place in the review; what the server and the page call it
    filename: str  # absolute (text, not a Path: making 100,000 of those costs seconds)
    scores: Scores = field(default_factory=dict)  # label -> score, in no particular order

    @property
    def path(self) -> Path:
        return Path(self.filename)

    @property
    def key(self) -> str:
        """Which image it is, however it is spelled (``results.image_key``)."""
        return image_key(self.path)

    def ranked(self) -> list[tuple[str, float]]:
        """``(label, score)`` best first, ties by label: the order of ``results.TagResult``."""
        return sorted(self.scores.items(), key=lambda item: (-item[1], item[0]))

    @property
    def tags(self) -> list[Tag]:
        """The tags as ``results.Tag``, best first (made on each call: for a few photos)."""
        return [Tag(label, score) for label, score in self.ranked()]


def load_photos(source: Path, on_warning: Callable[[str], None] | None = None) -> list[Photo]:
    """The photos of a results file (``.csv``, ``.json``, ``.jsonl``) or of a folder whose
    sidecars hold mkt-tag's tags (``mkt-tag tag --sidecar xmp|json``), sorted by path.

    Relative paths in a results file are relative to the working directory, as ``tag``
    wrote them before it made them absolute. In a folder, photos that resolve outside it
    (a symlink pointing elsewhere) are left out. Rows of images in a bucket (``s3://``,
    ``gs://``: ``tag --engine ray``) are left out, said to ``on_warning``: the page shows
    and corrects local photos.

    Raises:
        InputFileError: the file or folder is missing, malformed, or names no local photo.
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
        with _collector_paused():
            rows = read_scores(source)
            # Absolute local paths start with "/", a URI never does: one test per row.
            remote = [path for path, _ in rows if path[:1] != "/" and uri_of(path)]
            skipped = set(remote)
            found = [(_absolute(path), scores) for path, scores in rows if path not in skipped]
        if remote:
            _left_out(source, remote, bool(found), on_warning)
    # One photo per absolute path, a later row winning as in tag. By spelling, not by
    # image_key: resolving costs a system call per photo (seconds for 100,000), and tag
    # writes each image once already.
    unique = dict(found)
    if not unique:
        raise InputFileError(source, "no photos to review (no rows, or no sidecars with tags)")
    with _collector_paused():
        return [Photo(number, path, unique[path]) for number, path in enumerate(sorted(unique))]


def _left_out(
    source: Path, remote: list[str], local: bool, on_warning: Callable[[str], None] | None
) -> None:
    """Rows of images in buckets: a warning, or the error when no local photo is left."""
    what = f"{len(remote)} image(s) in a bucket ({remote[0]}{', ...' if len(remote) > 1 else ''})"
    hint = "review shows local photos: copy them to a folder and tag that to review them"
    if not local:
        raise InputFileError(source, f"no local photos to review, only {what}: {hint}")
    if on_warning is not None:
        on_warning(f"{source}: left out {what}: {hint}")


def _absolute(path: str) -> str:
    """``os.path.abspath(path)``, without the call where it changes nothing (an absolute,
    normal POSIX path, as ``tag`` writes them): a tenth of a second per 100,000 photos."""
    if os.sep == "/" and path[:1] == "/" and "/." not in path and "//" not in path:
        return path if path[-1:] != "/" else os.path.abspath(path)
    return os.path.abspath(path)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cycle collector off while a results file becomes photos: it would scan the
    600,000 objects of 100,000 photos again and again (a quarter of the time), to free none."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def read_scores(path: Path) -> list[tuple[str, Scores]]:
    """The rows of a results file as ``(path as written, {label: score})``: what
    ``results.read_rows`` reads, without a ``Tag`` per tag, in a third of its time. (A label
    listed twice in a row, which ``tag`` never writes, keeps its last score.)

    Raises:
        InputFileError: the file is missing, unreadable or malformed (``read_rows``'s words).
    """
    path = Path(path)
    try:
        return _read_fast(path.read_text(encoding="utf-8"), path.suffix.lower())
    except (OSError, ValueError, KeyError, TypeError, StopIteration):
        pass  # something unusual: read_rows reads it, or says what is wrong
    return [(name, {t.label: t.score for t in tags}) for name, tags, _ in read_rows(path)]


def _read_fast(text: str, suffix: str) -> list[tuple[str, Scores]]:
    """The rows of a results file as mkt-tag writes it. Raises ValueError, KeyError,
    TypeError or StopIteration on anything else (``read_rows`` then reads it again)."""
    if suffix == ".csv":
        return _csv_scores(text)
    if suffix == ".json":
        records = json.loads(text)
        if type(records) is not list:
            raise MalformedFileError("not a JSON array")
        return _json_scores(records)
    if suffix != ".jsonl":
        raise MalformedFileError(f"unknown suffix {suffix}")
    return _jsonl_scores(text)


def _jsonl_scores(text: str) -> list[tuple[str, Scores]]:
    """One JSON value per line, parsed where it lies by json's own scanner: a third less CPU
    than a ``json.loads`` per line, and no copy of each line."""
    if any(mark in text for mark in "\r\x85\u2028\u2029"):
        raise MalformedFileError("line breaks other than \\n")  # splitlines would cut there
    scan = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]
    records: list[Any] = []
    found: list[tuple[str, Scores]] = []
    position, end_of_text = 0, len(text)
    while position < end_of_text:
        if text[position] == "\n":  # an empty line
            position += 1
            continue
        record, end = scan(text, position)
        if (end < end_of_text and text[end] != "\n") or text.find("\n", position, end) >= 0:
            raise MalformedFileError("not one JSON value per line")
        records.append(record)
        position = end + 1
        if len(records) == _BATCH:
            found += _json_scores(records)
            records = []
    return found + _json_scores(records)


def _json_scores(records: list[Any]) -> list[tuple[str, Scores]]:
    """Rows of JSON records, their types checked a column at a time (C loops, not a Python
    check per value). What ``read_rows`` rejects raises KeyError, TypeError or ValueError."""
    paths = [record["path"] for record in records]
    tag_lists = [record["tags"] for record in records]
    scores = [{tag["label"]: tag["score"] for tag in tags} for tags in tag_lists]
    if not (
        _only(paths, str)
        and _only(tag_lists, list)
        and _only(chain.from_iterable(scores), str)
        and _only(chain.from_iterable(map(dict.values, scores)), float, int)  # not bool
        and _only((record.get("run", "") for record in records), str)
    ):
        raise MalformedFileError("a value of an unexpected type")
    return list(zip(paths, scores, strict=True))


def _csv_scores(text: str) -> list[tuple[str, Scores]]:
    """``results``' CSV rows (path, labels, scores[, run]), as ``read_rows`` checks them."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header not in (CSV_HEADER, CSV_HEADER[:3]):
        raise MalformedFileError("not mkt-tag's CSV header")
    columns = len(header)
    found = []
    for row in reader:
        labels = row[1].split(LABEL_SEPARATOR) if row[1] else []
        scores = row[2].split(LABEL_SEPARATOR) if row[2] else []
        if len(row) != columns or len(labels) != len(scores):
            raise MalformedFileError("a row of another shape")
        found.append((row[0], dict(zip(labels, map(float, scores), strict=True))))
    return found


def _only(values: Iterable[object], *kinds: type) -> bool:
    return set(map(type, values)) <= set(kinds)


def _from_folder(folder: Path) -> list[tuple[str, Scores]]:
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
            found.append((os.path.abspath(image), {tag.label: tag.score for tag in tags}))
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
