"""A photo library's keywords as labels: what people (and other programs) tagged their photos
with, read where photo managers keep it, and matched to a vocabulary.

A photo's keywords are all of these together (``photo_labels``):

- its XMP sidecars, ``photo.jpg.xmp`` and ``photo.xmp``: ``dc:subject``,
  ``lr:hierarchicalSubject`` and ``digiKam:TagsList``;
- the XMP packet inside the image file (JPEG, TIFF, PNG, WebP, HEIC, camera raw) and the IPTC
  Keywords of a JPEG or TIFF;
- the ``.json`` (preferred) or ``.txt`` sidecar ``mkt-tag tag`` writes; a JSON one may also list
  ``negatives`` and ``unknown`` labels.

mkt-tag's own tags, as its record lists them, are left out wherever they are: a model never
learns from, nor is measured on, its own output. A TXT sidecar has no record, so its labels
count as a person's. Hierarchical keywords are paths (``animal/dog``).

How a keyword names a vocabulary label (``LabelMatcher.match``; case and spacing ignored, as
``vocab.normalise`` does, level by level):

1. its whole path is a label (``animal/dog`` names ``animal/dog``, ``dog`` names ``dog``);
2. else its whole path is an alias of a label;
3. else one side is flat and the other a path whose last level it is: ``animal/dog`` names a
   label (or alias) ``dog``, and ``dog`` names a label ``animal/dog``. Two paths never match
   by their leaves alone (``toy/dog`` is not ``animal/dog``).

The first rule that finds anything decides; when it finds two labels or more (``dog`` with
``animal/dog`` and ``toy/dog``) the keyword is ambiguous: reported, never guessed, and those
labels count as unknown (0) for the photo. A photo keyword also gives its containing keywords
(a photo tagged ``places/France/Paris`` is in France), as photo managers export them.
"""

from __future__ import annotations

import json
import struct
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mkt_tag.errors import InputFileError
from mkt_tag.keywords import (
    IPTC_KEYWORDS,
    Fields,
    Ownership,
    label_path,
    person_paths,
    without_owned,
)
from mkt_tag.results import MalformedFileError
from mkt_tag.vocab import Entry, normalise
from mkt_tag.xmp import XmpDocument

_Levels = tuple[str, ...]


def _levels(name: str) -> _Levels:
    return tuple(normalise(level) for level in label_path(name))


def _containing(name: str) -> list[str]:
    """The keywords a path keyword lies under: ``a/b/c`` gives ``a`` and ``a/b``."""
    levels = label_path(name)
    return ["/".join(levels[:depth]) for depth in range(1, len(levels))]


@dataclass
class Matched:
    """One photo's (or row's) keywords against a vocabulary."""

    target: np.ndarray  # one per label: +1 positive, -1 negative, 0 unknown
    named: bool = False  # some keyword named exactly one label
    unmatched: list[str] = field(default_factory=list)  # keywords that name no label
    ambiguous: list[tuple[str, list[str]]] = field(default_factory=list)  # keyword, labels


class LabelMatcher:
    """Which labels of a vocabulary a keyword names (the rules are in the module's doc)."""

    def __init__(self, vocabulary: Sequence[str | Entry]) -> None:
        entries = [item if isinstance(item, Entry) else Entry(item) for item in vocabulary]
        self.labels = [entry.label for entry in entries]
        self._labels: dict[_Levels, set[int]] = {}
        self._aliases: dict[_Levels, set[int]] = {}
        self._flat: dict[str, set[int]] = {}  # one-level labels and aliases
        self._leaves: dict[str, set[int]] = {}  # labels and aliases with levels, by their leaf
        for index, entry in enumerate(entries):
            for table, names in ((self._labels, [entry.label]), (self._aliases, entry.aliases)):
                for name in names:
                    levels = _levels(name)
                    table.setdefault(levels, set()).add(index)
                    by_leaf = self._flat if len(levels) == 1 else self._leaves
                    by_leaf.setdefault(levels[-1], set()).add(index)

    def match(self, keyword: str) -> list[int]:
        """The labels ``keyword`` names: one, several (ambiguous) or none, by column."""
        levels = _levels(keyword)
        by_leaf = self._flat if len(levels) > 1 else self._leaves
        for found in (self._labels.get(levels), self._aliases.get(levels), by_leaf.get(levels[-1])):
            if found:
                return sorted(found)
        return []

    def targets(
        self, positives: Sequence[str], negatives: Sequence[str] = (), unknown: Sequence[str] = ()
    ) -> Matched:
        """The target of every label: a label named as a positive is +1, as a negative -1, as
        unknown 0, by an ambiguous keyword 0; the strongest wins (positive over negative over
        unknown); a label nothing names is a negative."""
        matched = Matched(np.full(len(self.labels), -1, dtype=np.int8))
        chosen: dict[int, set[int]] = {0: set(), -1: set(), 1: set()}
        doubtful: set[int] = set()
        groups = [[[name] for name in unknown], [[name] for name in negatives]]
        groups.append([[name, *_containing(name)] for name in positives])
        for value, group in zip((0, -1, 1), groups, strict=True):
            for names in group:
                found = False
                for name in names:
                    columns = self.match(name)
                    found = found or bool(columns)
                    if len(columns) == 1:
                        matched.named = True
                        chosen[value].update(columns)
                    elif columns:
                        matched.ambiguous.append((name, [self.labels[i] for i in columns]))
                        doubtful.update(columns)
                if not found:  # a containing keyword that names a label is enough
                    matched.unmatched.append(names[0])
        for value, named in [(0, doubtful), *chosen.items()]:  # the strongest last
            matched.target[sorted(named)] = value
        return matched


# --- a photo's keywords ---------------------------------------------------------------


@dataclass
class PhotoLabels:
    """What a photo's metadata says about it, mkt-tag's own tags left out."""

    positives: list[str] = field(default_factory=list)  # keywords; hierarchical: a/b paths
    negatives: list[str] = field(default_factory=list)  # only a JSON sidecar has these
    unknown: list[str] = field(default_factory=list)
    own_tags: bool = False  # a sidecar or the file held mkt-tag's tags and no one else's
    errors: list[str] = field(default_factory=list)  # "file (reason)": not read

    def __bool__(self) -> bool:
        return bool(self.positives or self.negatives or self.unknown)


def photo_labels(image: Path) -> PhotoLabels:
    """The keywords of ``image``: its sidecars', and those embedded in the file."""
    from mkt_tag.sidecars import person_labels, read_sidecar_tags  # Pillow: when reading

    found = PhotoLabels()
    mkt_tag_sidecars = [path for fmt in ("json", "txt") for path in _both(image, fmt)]
    sidecars = [path for path in mkt_tag_sidecars if path.is_file()][:1]  # JSON preferred
    sidecars += [path for path in _both(image, "xmp") if path.is_file()]
    for path in sidecars:
        fmt = path.suffix[1:]
        try:
            labels = person_labels(path, fmt)
            if not labels and read_sidecar_tags(path, fmt):
                found.own_tags = True
            if fmt == "json":
                _add_json_lists(path, found)
        except (InputFileError, OSError, ValueError) as error:
            found.errors.append(f"{path} ({getattr(error, 'reason', error)})")
            continue
        found.positives += labels
    try:
        labels, own = embedded_keywords(image)
    except (OSError, MalformedFileError) as error:
        found.errors.append(f"{image} (its embedded keywords: {error})")
    else:
        found.positives += labels
        found.own_tags = found.own_tags or (own and not labels)
    found.positives = _once(found.positives)
    return found


def _both(image: Path, fmt: str) -> list[Path]:
    from mkt_tag.sidecar_paths import sidecar_path

    return [sidecar_path(image, fmt, naming) for naming in ("full", "stem")]


def _once(names: list[str]) -> list[str]:
    """``names`` less repeats (case and spacing aside), in order."""
    first: dict[_Levels, str] = {}
    for name in names:
        first.setdefault(_levels(name), name)
    return list(first.values())


def _add_json_lists(path: Path, found: PhotoLabels) -> None:
    """The ``negatives`` and ``unknown`` lists of a JSON sidecar (read after it parsed)."""
    document = json.loads(path.read_text(encoding="utf-8-sig"))
    found.negatives += split_labels(document.get("negatives"), "|")
    found.unknown += split_labels(document.get("unknown"), "|")


def split_labels(value: Any, separator: str) -> list[str]:
    """Labels from a cell: a ``separator``-joined string, or a list of strings / tag objects."""
    if value is None:
        return []
    if isinstance(value, list):
        items = [item.get("label", "") if isinstance(item, dict) else item for item in value]
        items = [item if isinstance(item, str) else str(item) for item in items]
    else:
        items = str(value).split(separator)
    return [item.strip() for item in items if item and item.strip()]


def embedded_keywords(image: Path) -> tuple[list[str], bool]:
    """The keywords inside ``image`` (its XMP packet and IPTC Keywords) that a person or
    another program wrote, as paths; and whether mkt-tag's own were there too.

    Raises:
        OSError: the file cannot be read.
        MalformedFileError: its XMP packet is damaged.
    """
    packet, iptc = _embedded_metadata(image)
    fields: Fields = {}
    owned = Ownership()
    if packet is not None:
        document = XmpDocument(packet)
        fields = document.fields()
        owned = document.record.owned if document.record is not None else owned
    fields[IPTC_KEYWORDS] = iptc
    theirs = without_owned(fields, owned)
    own = any(len(theirs[name]) < len(entries) for name, entries in fields.items())
    return ["/".join(path) for path in person_paths(theirs)], own


_XMP_START, _XMP_END = b"<x:xmpmeta", b"</x:xmpmeta>"
_BLOCK = 2**20  # bytes read at a time when scanning a file for its XMP packet
_MAX_PACKET = 16 * 2**20  # an XMP packet larger than this is not one
_PILLOW_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, struct.error)


def _embedded_metadata(image: Path) -> tuple[bytes | None, list[str]]:
    """The XMP packet of ``image`` (None without one) and its IPTC Keywords.

    Pillow reads only a file's header to open it (a JPEG up to its image data, where every
    metadata segment is), and keeps the XMP packet and the IPTC block it found there. A file
    Pillow cannot open (a camera raw file, HEIC) is scanned for the packet instead: XMP is
    stored uncompressed, so its bytes are in the file as they are.
    """
    from PIL import Image, IptcImagePlugin

    try:
        with warnings.catch_warnings():  # odd tags, large images: nothing to decode here
            warnings.simplefilter("ignore")
            with Image.open(image) as opened:
                packet = opened.info.get("xmp")
                try:
                    iptc = IptcImagePlugin.getiptcinfo(opened) or {}
                except _PILLOW_ERRORS:  # a damaged IPTC block: the XMP packet may be fine
                    iptc = {}
    except (*_PILLOW_ERRORS, Image.DecompressionBombError):
        return _scan_for_xmp(image), []
    keywords = iptc.get((2, 25), [])
    keywords = [keywords] if isinstance(keywords, bytes) else keywords
    return _packet(packet) if isinstance(packet, bytes) else None, [
        _iptc_text(keyword) for keyword in keywords if keyword.strip()
    ]


def _packet(data: bytes) -> bytes:
    """The ``x:xmpmeta`` element of an XMP packet (its wrapper and padding left off)."""
    start = data.find(_XMP_START)
    end = data.find(_XMP_END, max(start, 0))
    return data[start : end + len(_XMP_END)] if 0 <= start < end else data


def _scan_for_xmp(image: Path) -> bytes | None:
    """The first XMP packet in the bytes of ``image``, read a block at a time up to its end."""
    buffer = b""
    with image.open("rb") as file:
        while block := file.read(_BLOCK):
            buffer += block
            start = buffer.find(_XMP_START)
            if start < 0:
                buffer = buffer[-len(_XMP_START) :]  # the marker may straddle two blocks
                continue
            buffer = buffer[start:]
            end = buffer.find(_XMP_END)
            if end >= 0:
                return buffer[: end + len(_XMP_END)]
            if len(buffer) > _MAX_PACKET:
                return None
    return None


def _iptc_text(value: bytes) -> str:
    """An IPTC keyword: UTF-8 where it is (exiftool, digiKam), else Latin-1 (older writers)."""
    try:
        return value.decode("utf-8").strip()
    except UnicodeDecodeError:
        return value.decode("latin-1").strip()
