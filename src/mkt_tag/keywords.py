"""Keyword fields of photo metadata, and which of their entries are mkt-tag's.

Photo managers read keywords from different fields (docs/photo-managers.md): ``dc:subject``
holds flat keywords, ``lr:hierarchicalSubject`` paths as ``animal|dog|chihuahua``,
``digiKam:TagsList`` the same paths as ``animal/dog/chihuahua``, and inside JPEG and TIFF
files ``IPTC:Keywords`` flat keywords again. Immich reads only the first of TagsList,
hierarchicalSubject and IPTC Keywords that is not empty, darktable hierarchicalSubject
before dc:subject: so every field must hold the whole set, the person's keywords as well
as mkt-tag's, or some manager loses some of them.

mkt-tag therefore writes its tags to every field of a photo's metadata, copies the
person's keywords into the fields that lack them, and records each entry it added and each
it copied (``Ownership``). Removing its tags removes its own entries, and the copies only
from a field that holds nothing else (a field that was empty before mkt-tag wrote to it):
what a person or another program wrote is never removed or reordered, and a copy that a
manager may since have taken for its own (digiKam rewrites TagsList whole) stays.

A label written as a path, ``animal/dog/chihuahua``, is a hierarchical keyword: the path
goes into the hierarchical fields (under ``root`` when one is given: ``auto|animal|dog``),
and each of its parts into the flat ones (a chihuahua is also a dog and an animal). The
root never becomes a flat keyword: flat fields have no place to keep machine tags apart,
and a flat ``auto`` would only be noise in a keyword list.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

PATH_SEPARATOR = "/"  # between the levels of a hierarchical label


@dataclass(frozen=True)
class KeywordField:
    """One place photo managers read keywords from."""

    name: str  # how mkt-tag's record names it
    separator: str | None  # between the levels of a path; None for flat keywords


SUBJECT = KeywordField("Subject", None)  # XMP dc:subject
HIERARCHICAL = KeywordField("HierarchicalSubject", "|")  # XMP lr:hierarchicalSubject
TAGS_LIST = KeywordField("TagsList", "/")  # XMP digiKam:TagsList
IPTC_KEYWORDS = KeywordField("Keywords", None)  # IPTC:Keywords inside a JPEG or TIFF
XMP_FIELDS = (SUBJECT, HIERARCHICAL, TAGS_LIST)

Fields = dict[KeywordField, list[str]]  # each field's entries, in file order


@dataclass
class Ownership:
    """The entries of each field that mkt-tag wrote."""

    added: Fields = dataclasses.field(default_factory=dict)  # its own tags
    copied: Fields = dataclasses.field(
        default_factory=dict
    )  # the person's, copied where they lacked


def label_path(label: str) -> tuple[str, ...]:
    """The levels of a label: ``"animal/dog"`` is ``("animal", "dog")``; a plain label is
    one level. Spaces around the separators and empty levels do not count."""
    parts = tuple(part.strip() for part in label.split(PATH_SEPARATOR))
    return tuple(part for part in parts if part) or (label.strip(),)


def leaf(label: str) -> str:
    """What a hierarchical label names: its last level (``chihuahua``)."""
    return label_path(label)[-1]


def _entry_path(entry: str, field: KeywordField) -> tuple[str, ...]:
    if field.separator is None:
        return (entry.strip(),)
    parts = tuple(part.strip() for part in entry.split(field.separator))
    return tuple(part for part in parts if part)


def _entry(path: Sequence[str], field: KeywordField) -> str:
    return (field.separator or "").join(path)


def _key(text: str) -> str:
    return " ".join(text.split()).casefold()


def without_owned(fields: Mapping[KeywordField, list[str]], owned: Ownership) -> Fields:
    """``fields`` as they would be had mkt-tag never written to them: its own entries
    removed, and its copies of the person's keywords where nothing else is left beside
    them. What a person or another program wrote keeps its order."""
    result: Fields = {}
    for name, entries in fields.items():
        mine = {_key(entry) for entry in owned.added.get(name, [])}
        rest = [entry for entry in entries if _key(entry) not in mine]
        copies = {_key(entry) for entry in owned.copied.get(name, [])}
        only_copies = all(_key(entry) in copies for entry in rest)
        result[name] = [] if only_copies else rest
    return result


def person_paths(fields: Mapping[KeywordField, list[str]]) -> list[tuple[str, ...]]:
    """The keywords in ``fields`` as paths (flat keywords are one level), once each, the
    hierarchical fields first; a flat keyword that is a level of one of those paths is
    not repeated on its own."""
    paths: dict[tuple[str, ...], tuple[str, ...]] = {}  # by the path's key
    for field in sorted(fields, key=lambda field: field.separator is None):
        covered = {_key(part) for path in paths.values() for part in path}
        for entry in fields[field]:
            path = _entry_path(entry, field)
            if not path or (field.separator is None and _key(path[0]) in covered):
                continue
            paths.setdefault(tuple(map(_key, path)), path)
    return list(paths.values())


def add_tags(
    fields: Mapping[KeywordField, list[str]],
    owned: Ownership,
    labels: Iterable[str],
    root: str | None = None,
) -> tuple[Fields, Ownership]:
    """Replace mkt-tag's entries in ``fields`` by those for ``labels``.

    ``fields`` are the keyword fields of one photo's metadata (those this container can
    hold: a sidecar has no IPTC), ``owned`` what mkt-tag wrote to them before. Returns the
    new fields and what mkt-tag wrote to them now. The person's entries keep their place
    and order, and come first; with no labels, every field is as it was before mkt-tag
    wrote to it.
    """
    theirs = without_owned(fields, owned)
    ours = [label_path(label) for label in labels]
    if not ours:
        return theirs, Ownership()
    prefix = tuple(label_path(root)) if root and root.strip() else ()
    paths = person_paths(theirs)
    copies = ([*paths], [path[-1] for path in paths])  # hierarchical, flat
    tags = ([prefix + path for path in ours], [part for path in ours for part in path])
    result: Fields = {}
    written = Ownership()
    for name, entries in theirs.items():
        present = {_key(entry) for entry in entries}
        result[name] = list(entries)
        for wanted, kind in zip(
            _field_entries(name, copies, tags), ("copied", "added"), strict=True
        ):
            for entry in wanted:
                if _key(entry) not in present:
                    present.add(_key(entry))
                    result[name].append(entry)
                    getattr(written, kind).setdefault(name, []).append(entry)
    return result, written


def _field_entries(
    name: KeywordField,
    *groups: tuple[list[tuple[str, ...]], list[str]],
) -> list[list[str]]:
    """Each group's entries as ``name`` holds them: paths joined by its separator, or the
    flat keywords."""
    if name.separator is None:
        return [flat for _, flat in groups]
    return [[_entry(path, name) for path in paths] for paths, _ in groups]
