"""Per-image sidecar files (json, txt, xmp) next to each photo, written atomically.

XMP sidecars carry the tags in every keyword field photo managers read (``keywords``), with
mkt-tag's record of what it wrote (``records``): re-tagging and :func:`remove_tags` change
only mkt-tag's entries, and every other element of the file is kept. JSON sidecars keep
the same record under ``"mkt-tag"``. A TXT sidecar is a bare list of labels, with no room
for a record: mkt-tag cannot tell whose its labels are, nor which run wrote them.

A review's decisions (``mkt-tag review --apply``) are the person's: labels they accepted or
added become their keywords (not mkt-tag's entries, so no re-tag and no ``untag`` removes
them), and labels they rejected are listed in the record, which keeps every later run from
writing them into that sidecar again. A TXT sidecar has no record: it gets the corrected
labels, and a later ``tag --overwrite`` or ``--append`` may bring a rejected one back.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mkt_tag.errors import InputFileError, OutputError
from mkt_tag.files import atomic_write_text, write_error
from mkt_tag.keywords import (
    SUBJECT,
    KeywordField,
    Ownership,
    add_tags,
    person_paths,
    without_owned,
)
from mkt_tag.records import (
    ANONYMOUS_RUN,
    CURRENT,
    NEW,
    STALE,
    Decided,
    Record,
    RunIdentity,
    allowed,
    labels_by_score,
    state,
)
from mkt_tag.results import MalformedFileError, Tag, label_and_score
from mkt_tag.sidecar_paths import SIDECAR_FORMATS, SIDECAR_NAMINGS, sidecar_path
from mkt_tag.xmp import XmpDocument, record_state

_JSON_RECORD = "mkt-tag"  # the key of mkt-tag's record in a JSON sidecar
_JSON_LABELS = KeywordField("labels", None)  # a JSON sidecar's one list of labels


def write_sidecar(
    image: Path,
    tags: list[Tag],
    fmt: str,
    naming: str = "full",
    run: RunIdentity | None = None,
    tag_root: str = "",
    keep: bool = False,
    *,
    theirs: Sequence[str] = (),
    rejected: Sequence[str] = (),
) -> Path:
    """Write mkt-tag's tags of ``image`` to its sidecar (``json``, ``txt`` or ``xmp``),
    atomically, and return the sidecar's path.

    In XMP and JSON sidecars the tags mkt-tag wrote before are replaced (kept as well with
    ``keep``), and ``run`` is recorded; what a person or another program wrote stays where
    it is. ``tag_root`` puts the hierarchical entries under a root (``auto|dog``). A TXT
    sidecar is replaced (merged into with ``keep``).

    A review's decisions: ``theirs`` (labels a person accepted or added) are written as the
    person's keywords; ``rejected`` join the labels the record keeps out. No tag of a label
    the record keeps out is written (a TXT sidecar has no record: only ``rejected`` count).

    Raises:
        OutputError: the sidecar cannot be written, or an existing one cannot be parsed
            (it is then left untouched).
    """
    path = sidecar_path(image, fmt, naming)
    existing = _read_existing(path)
    decided = Decided(theirs, rejected)
    try:
        if fmt == "txt":
            text = _txt_sidecar(existing, allowed(tags, rejected), keep, decided.theirs)
        else:
            update = _json_update if fmt == "json" else _xmp_update
            text = update(existing, tags, run or ANONYMOUS_RUN, tag_root, keep, decided)
    except MalformedFileError as error:
        raise _cannot_update(path, error) from None
    atomic_write_text(path, text)
    return path


@dataclass
class Removed:
    """What :func:`remove_tags` did to one sidecar."""

    path: Path
    labels: list[str] = field(default_factory=list)  # mkt-tag's tags it held
    deleted: bool = False  # nothing else was in it: the file is gone


def remove_tags(
    image: Path, fmt: str, naming: str = "full", dry_run: bool = False
) -> Removed | None:
    """Remove mkt-tag's tags and record from the sidecar of ``image``; None when it has
    none (no sidecar, no record, or a TXT sidecar, which cannot say whose its labels are).
    A sidecar left with nothing in it is deleted. ``dry_run`` only says what would change.

    Raises:
        OutputError: the sidecar cannot be read, parsed or written.
    """
    path = sidecar_path(image, fmt, naming)
    existing = _read_existing(path)
    if existing is None or fmt == "txt":
        return None
    try:
        if fmt == "json":
            document, record = _json_document(existing)
            if record is None:
                return None
            labels = without_owned({_JSON_LABELS: _json_labels(document)}, record.owned)
            document["tags"] = [
                t for t in document["tags"] if _tag_label(t) in labels[_JSON_LABELS]
            ]
            document.pop(_JSON_RECORD, None)
            empty = not document["tags"] and set(document) <= {"tags", "source"}
            text = json.dumps(document, ensure_ascii=False, indent=2) + "\n"
        else:
            xmp = XmpDocument(existing)
            record = xmp.record
            if record is None:
                return None
            xmp.update(without_owned(xmp.fields(), record.owned), None)
            empty, text = xmp.is_empty(), xmp.to_text()
    except MalformedFileError as error:
        raise _cannot_update(path, error) from None
    removed = Removed(path, [tag.label for tag in record.tags], deleted=empty)
    if dry_run:
        return removed
    try:
        if empty:
            path.unlink()
        else:
            atomic_write_text(path, text)
    except OSError as error:
        raise write_error(path, error) from None
    return removed


def sidecar_state(image: Path, fmt: str, naming: str, run: RunIdentity, tag_root: str = "") -> str:
    """Whether the sidecar of ``image`` holds ``run``'s tags: ``CURRENT``; tags of another
    run (or a record that cannot be read): ``STALE``; no sidecar or no record of mkt-tag:
    ``NEW``. A TXT sidecar that exists is ``CURRENT``: it has no record to tell."""
    path = sidecar_path(image, fmt, naming)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return NEW
    except OSError:
        return STALE  # writing it will say what is wrong
    if fmt == "txt":
        return CURRENT
    if fmt == "xmp":
        return record_state(data, run, tag_root)
    if _JSON_RECORD.encode() not in data:
        return NEW
    try:
        return state(_json_document(data)[1], run, tag_root)
    except MalformedFileError:
        return STALE


def rejected_labels(image: Path) -> list[str]:
    """The labels a person rejected for ``image``, as the records of its XMP and JSON
    sidecars (either naming) list them; a sidecar that cannot be read lists none."""
    found: list[str] = []
    for fmt in ("xmp", "json"):
        for naming in SIDECAR_NAMINGS:
            try:
                data = sidecar_path(image, fmt, naming).read_bytes()
                record = XmpDocument(data).record if fmt == "xmp" else _json_document(data)[1]
            except (OSError, MalformedFileError):
                continue
            found += record.rejected if record is not None else []
    return list(dict.fromkeys(found))


def read_sidecar_tags(path: Path, fmt: str) -> list[str]:
    """The labels stored in a sidecar, in file order (XMP: its flat keywords).

    Raises:
        InputFileError: the file is missing, unreadable or malformed.
    """
    return _read_sidecar(path, fmt, person_only=False)


def person_labels(path: Path, fmt: str) -> list[str]:
    """The labels a person or another program put in a sidecar, not mkt-tag: its own tags,
    as its record lists them, are left out, so a model never learns from its own output.
    Hierarchical keywords are given as paths (``animal/dog``).

    Raises:
        InputFileError: the file is missing, unreadable or malformed.
    """
    return _read_sidecar(path, fmt, person_only=True)


def _read_sidecar(path: Path, fmt: str, person_only: bool) -> list[str]:
    path = Path(path)
    if fmt not in SIDECAR_FORMATS:
        raise ValueError(f"unknown sidecar format {fmt!r}; choose one of {SIDECAR_FORMATS}")
    try:
        data = path.read_bytes()
    except OSError as error:
        reason = "file not found" if isinstance(error, FileNotFoundError) else error.strerror
        raise InputFileError(path, (reason or str(error)).lower()) from None
    try:
        if fmt == "txt":
            return _parse_txt(data)
        if fmt == "json":
            document, record = _json_document(data)
            labels = _json_labels(document)
            if person_only and record is not None:
                labels = without_owned({_JSON_LABELS: labels}, record.owned)[_JSON_LABELS]
            return labels
        xmp = XmpDocument(data)
        fields = xmp.fields()
        if not person_only:
            return fields[SUBJECT]
        record = xmp.record
        theirs = without_owned(fields, record.owned if record else Ownership())
        return ["/".join(path) for path in person_paths(theirs)]
    except MalformedFileError as error:
        raise InputFileError(path, f"malformed {fmt} sidecar ({error})") from None


def _read_existing(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise write_error(path, error) from None


def _cannot_update(path: Path, error: Exception) -> OutputError:
    return OutputError(f"{path}: cannot update the existing sidecar ({error}); fix or delete it")


def _union(first: list[str], second: list[str]) -> list[str]:
    return list(dict.fromkeys([*first, *second]))


def _txt_sidecar(existing: bytes | None, tags: list[Tag], keep: bool, theirs: Sequence[str]) -> str:
    labels = _union([tag.label for tag in tags], list(theirs))
    if keep and existing is not None:
        labels = _union(_parse_txt(existing), labels)
    return ", ".join(labels) + "\n"


def _parse_txt(data: bytes) -> list[str]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise MalformedFileError("not UTF-8 text") from None
    # Comma-separated on one line is the usual convention; one label per line also works.
    labels = (label.strip() for label in re.split(r"[,\n]", text))
    return _union([label for label in labels if label], [])


# --- XMP and JSON: mkt-tag's tags beside everyone else's --------------------------------


def _xmp_update(
    existing: bytes | None,
    tags: list[Tag],
    run: RunIdentity,
    root: str,
    keep: bool,
    decided: Decided,
) -> str:
    xmp = XmpDocument(existing)
    previous = xmp.record
    tags, kept_out = decided.ours(tags, previous, keep)
    owned = previous.owned if previous else Ownership()
    labels = labels_by_score(tags)
    fields, written = add_tags(xmp.fields(), owned, labels, root, decided.theirs)
    xmp.update(fields, Record.of(run, tags, written, root, kept_out))
    return xmp.to_text()


def _json_update(
    existing: bytes | None,
    tags: list[Tag],
    run: RunIdentity,
    root: str,
    keep: bool,
    decided: Decided,
) -> str:
    document, previous = _json_document(existing) if existing is not None else ({}, None)
    tags, kept_out = decided.ours(tags, previous, keep)
    owned = previous.owned if previous else Ownership()
    before = {_JSON_LABELS: _json_labels(document)}
    fields, written = add_tags(before, owned, labels_by_score(tags), persons=decided.theirs)
    scores = {tag.label: tag.score for tag in tags}
    # A label newly the person's is written as a person writes one: a bare label.
    entries: dict[str, Any] = {label: label for label in fields[_JSON_LABELS]}
    entries |= {_tag_label(entry): entry for entry in document.get("tags", [])}
    ours = set(written.added.get(_JSON_LABELS, []))
    document["tags"] = [
        {"label": label, "score": round(scores[label], 4)} if label in ours else entries[label]
        for label in fields[_JSON_LABELS]
    ]
    document.pop("source", None)  # mkt-tag 0.2's mark, replaced by the record
    record = Record.of(run, tags, written, root, kept_out)
    document[_JSON_RECORD] = _json_record(record)
    return json.dumps(document, ensure_ascii=False, indent=2) + "\n"


def _tag_label(entry: Any) -> str:
    return label_and_score(entry)[0]


def _json_labels(document: dict[str, Any]) -> list[str]:
    return _union([_tag_label(entry) for entry in document.get("tags", [])], [])


def _json_document(data: bytes) -> tuple[dict[str, Any], Record | None]:
    """A JSON sidecar and mkt-tag's record in it (for a sidecar of mkt-tag 0.2, which had
    none, the labels with a score were mkt-tag's)."""
    try:
        document = json.loads(data)
    except ValueError as error:
        raise MalformedFileError(f"not JSON: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("tags", []), list):
        raise MalformedFileError('expected an object like {"tags": [...]}')
    scores = dict(label_and_score(item) for item in document.get("tags", []))
    data_record = document.get(_JSON_RECORD)
    if data_record is None:
        if document.get("source") != "mkt-tag":
            return document, None
        scored = [Tag(label, score) for label, score in scores.items() if score is not None]
        owned = Ownership(added={_JSON_LABELS: [tag.label for tag in scored]})
        legacy = Record("", tags=scored, owned=owned)
        return document, legacy
    return document, _record_from_json(data_record)


def _json_record(record: Record) -> dict[str, Any]:
    return {
        "run": record.run,
        "model": record.model,
        "model_fingerprint": record.model_fingerprint,
        "vocabulary": record.vocabulary,
        "selection": record.selection,
        "tag_root": record.tag_root,
        "date": record.date,
        "version": record.version,
        "tags": [{"label": tag.label, "score": round(tag.score, 4)} for tag in record.tags],
        "added": record.owned.added.get(_JSON_LABELS, []),
        **({"rejected": record.rejected} if record.rejected else {}),
    }


def _record_from_json(data: Any) -> Record:
    names = (
        "run",
        "model",
        "model_fingerprint",
        "vocabulary",
        "selection",
        "tag_root",
        "date",
        "version",
    )
    if not isinstance(data, dict) or not all(isinstance(data.get(n, ""), str) for n in names):
        raise MalformedFileError(f"mkt-tag's record in it is damaged: {_JSON_RECORD!r}")
    try:
        tags = [
            Tag(label, float(score))  # type: ignore[arg-type]  # None: TypeError, caught
            for label, score in map(label_and_score, data.get("tags", []))
        ]
    except (TypeError, ValueError):
        raise MalformedFileError("mkt-tag's record in it has a damaged tag") from None
    added = data.get("added", [])
    if not isinstance(added, list) or not all(isinstance(label, str) for label in added):
        raise MalformedFileError("mkt-tag's record in it has a damaged 'added' list")
    rejected = data.get("rejected", [])
    if not isinstance(rejected, list) or not all(isinstance(label, str) for label in rejected):
        raise MalformedFileError("mkt-tag's record in it has a damaged 'rejected' list")
    values = {name: data.get(name, "") for name in names}
    owned = Ownership(added={_JSON_LABELS: added})
    return Record(**values, tags=tags, owned=owned, rejected=rejected)
