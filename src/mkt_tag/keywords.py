"""Keyword fields of photo metadata, and which of their entries are mkt-tag's.

Photo managers read keywords from different fields (docs/photo-managers.md): ``dc:subject``
holds flat keywords, ``lr:hierarchicalSubject`` paths as ``animal|dog|chihuahua``,
``digiKam:TagsList`` the same paths as ``animal/dog/chihuahua``, and inside JPEG and TIFF
files ``IPTC:Keywords`` flat keywords again. Immich reads only the first of TagsList,
hierarchicalSubject and IPTC Keywords that is not empty, darktable hierarchicalSubject
before dc:subject: so every field must hold the whole set, the person's keywords as well
as mkt-tag's, or some manager loses some of them.

mkt-tag therefore writes its tags to every field of a photo's metadata, copies the
person's keywords into the fields that held none (those a manager may now read first), and
records each entry it added and each it copied (``Ownership``). Removing its tags removes
its own entries, and the copies only from a field that holds nothing else: what a person
or another program wrote is never removed or reordered, and a copy that a manager may
since have taken for its own (digiKam rewrites TagsList whole) stays.

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


_OTHER_SEPARATOR = {"|": "/", "/": "|"}


def _entry(path: Sequence[str], field: KeywordField) -> str:
    """``path`` as ``field`` holds it. A level holding the field's separator (``AC/DC`` in
    TagsList) has it swapped for the other one, as Immich writes it, so it stays one level."""
    if field.separator is None:
        return path[-1]
    other = _OTHER_SEPARATOR[field.separator]
    return field.separator.join(level.replace(field.separator, other) for level in path)


def _key(text: str) -> str:
    return " ".join(text.split()).casefold()


def _entry_key(entry: str, field: KeywordField) -> str:
    """What makes two entries of ``field`` the same keyword: case, spacing and the spaces
    around separators do not count."""
    return "\0".join(_key(level) for level in _entry_path(entry, field))


def without_owned(fields: Mapping[KeywordField, list[str]], owned: Ownership) -> Fields:
    """``fields`` as they would be had mkt-tag never written to them: its own entries
    removed, and its copies of the person's keywords where nothing else is left beside
    them. What a person or another program wrote keeps its order."""
    result: Fields = {}
    for name, entries in fields.items():
        mine = {_entry_key(entry, name) for entry in owned.added.get(name, [])}
        rest = [entry for entry in entries if _entry_key(entry, name) not in mine]
        copies = {_entry_key(entry, name) for entry in owned.copied.get(name, [])}
        only_copies = all(_entry_key(entry, name) in copies for entry in rest)
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
    persons: Iterable[str] = (),
) -> tuple[Fields, Ownership]:
    """Replace mkt-tag's entries in ``fields`` by those for ``labels``.

    ``fields`` are the keyword fields of one photo's metadata (those this container can
    hold: a sidecar has no IPTC), ``owned`` what mkt-tag wrote to them before. Returns the
    new fields and what mkt-tag wrote to them now. The person's entries keep their place
    and order, and come first; with no labels, every field is as it was before mkt-tag
    wrote to it.

    ``persons`` are labels a person confirmed (a review's accepted and added ones): they
    become the person's keywords, after theirs and never under ``root``, and are not
    recorded as mkt-tag's, so no later run or ``untag`` removes them.
    """
    if persons := list(persons):
        # Theirs first, as if the person had written them: the copies of their earlier
        # keywords (into fields that held none) stay mkt-tag's, the new entries do not.
        fields, handed = add_tags(fields, owned, persons)
        tagged, written = add_tags(fields, Ownership(), labels, root)
        return tagged, Ownership(added=written.added, copied=handed.copied)
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
        present = {_entry_key(entry, name) for entry in entries}
        result[name] = list(entries)
        # The person's keywords are copied only into a field that holds none: it is the one
        # a manager may now read first, where it read another field before.
        groups = [(copies, "copied")] if not entries else []
        for group, kind in [*groups, (tags, "added")]:
            for entry in _field_entries(name, group):
                if (key := _entry_key(entry, name)) not in present:
                    present.add(key)
                    result[name].append(entry)
                    getattr(written, kind).setdefault(name, []).append(entry)
    return result, written


def _field_entries(name: KeywordField, group: tuple[list[tuple[str, ...]], list[str]]) -> list[str]:
    """A group's entries as ``name`` holds them: paths joined by its separator, or the
    flat keywords."""
    paths, flat = group
    if name.separator is None:
        return flat
    return [_entry(path, name) for path in paths]
