"""Per-image sidecar files (json, txt, xmp) next to each photo, written atomically.

XMP sidecars carry the tags as keywords in ``dc:subject``, which digiKam, darktable,
Lightroom and exiftool read; any other metadata already in an XMP sidecar is kept.
"""

from __future__ import annotations

import json
import math
import os
import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from xml.parsers import expat

from mkt_tag._version import __version__
from mkt_tag.errors import InputFileError, OutputError
from mkt_tag.files import atomic_write_text, write_error
from mkt_tag.images import IMAGE_EXTENSIONS
from mkt_tag.results import MalformedFileError, Tag, label_and_score

SIDECAR_FORMATS = ("json", "txt", "xmp")
SIDECAR_NAMINGS = ("full", "stem")


def sidecar_path(image: Path, fmt: str, naming: str = "full") -> Path:
    """The sidecar file of ``image``: ``photo.jpg.xmp`` with naming "full" (darktable,
    digiKam; photo.jpg and photo.png do not collide) or ``photo.xmp`` with "stem"
    (Lightroom)."""
    if fmt not in SIDECAR_FORMATS:
        raise ValueError(f"unknown sidecar format {fmt!r}; choose one of {SIDECAR_FORMATS}")
    if naming == "full":
        return image.with_name(f"{image.name}.{fmt}")
    if naming == "stem":
        return image.with_suffix(f".{fmt}")
    raise ValueError(f"unknown sidecar naming {naming!r}; choose one of {SIDECAR_NAMINGS}")


def sidecar_collisions(
    images: Sequence[Path], fmt: str, naming: str = "full"
) -> dict[Path, list[Path]]:
    """The images of ``images`` whose sidecar another image would write too, each with
    those other images (in ``images``, or an image file beside it that a folder scan finds).

    Only "stem" naming collides: photo.jpg and photo.png both give photo.xmp, and writing
    both would leave the tags of whichever came last. Where the folder ignores case
    (macOS, Windows), Photo.jpg and photo.png collide as well.
    """
    sidecar_path(Path("photo.jpg"), fmt, naming)  # an unknown format or naming raises
    if naming != "stem":
        return {}
    folders: dict[Path, _Folder] = {}
    groups: dict[tuple[str, str], list[Path]] = defaultdict(list)
    for image in images:
        if image.parent not in folders:
            folders[image.parent] = _Folder(image.parent, image.name)
        groups[folders[image.parent].key(sidecar_path(image, fmt, naming).name)].append(image)
    for directory, folder in folders.items():
        for name in folder.image_names():
            key = folder.key(sidecar_path(Path(name), fmt, naming).name)
            if key in groups:
                groups[key].append(directory / name)
    given = set(images)
    collisions: dict[Path, list[Path]] = {}
    for members in groups.values():
        files = _distinct_files(members)
        if len(files) < 2:
            continue
        for image in dict.fromkeys(members):
            if image in given:
                collisions[image] = [other for other in files if not _same_file(other, image)]
    return collisions


class _Folder:
    """A folder of images: its identity, whether it ignores case, its image files."""

    def __init__(self, path: Path, sample: str) -> None:
        self.path = path
        try:
            self.resolved = str(path.resolve())
        except (OSError, RuntimeError):
            self.resolved = os.path.abspath(path)
        self.ignores_case = _ignores_case(path, sample)

    def key(self, name: str) -> tuple[str, str]:
        return self.resolved, name.casefold() if self.ignores_case else name

    def image_names(self) -> list[str]:
        try:
            entries = list(os.scandir(self.path))
        except OSError:
            return []
        return [
            entry.name
            for entry in entries
            if not entry.name.startswith(".")
            and Path(entry.name).suffix.lower() in IMAGE_EXTENSIONS
            and entry.is_file()
        ]


def _ignores_case(folder: Path, sample: str) -> bool:
    """Whether ``folder`` (holding the file ``sample``) finds files by any case of their name."""
    swapped = sample.swapcase()
    if swapped == sample:
        return False
    try:
        return os.path.samefile(folder / sample, folder / swapped)
    except OSError:
        return False


def _distinct_files(paths: list[Path]) -> list[Path]:
    """``paths`` less the second spelling of any file (by device and inode)."""
    seen: dict[object, Path] = {}
    for path in paths:
        try:
            info = path.stat()
            identity: object = (info.st_dev, info.st_ino)
        except OSError:
            identity = os.path.abspath(path)
        seen.setdefault(identity, path)
    return list(seen.values())


def _same_file(first: Path, second: Path) -> bool:
    try:
        return os.path.samefile(first, second)
    except OSError:
        return os.path.abspath(first) == os.path.abspath(second)


def write_sidecar(
    image: Path, tags: list[Tag], fmt: str, naming: str = "full", merge: bool = False
) -> Path:
    """Write the tags of ``image`` to its sidecar (``json``, ``txt`` or ``xmp``), atomically,
    and return the sidecar's path.

    With ``merge`` the labels already in the sidecar are kept (new ones are added after
    them). An existing XMP keeps all its other metadata in any case: only ``dc:subject``,
    the keyword list read by digiKam, darktable, Lightroom and exiftool, is changed.

    Raises:
        OutputError: the sidecar cannot be written, or an existing one cannot be parsed
            (it is then left untouched).
    """
    path = sidecar_path(image, fmt, naming)
    try:
        existing: bytes | None = path.read_bytes()
    except FileNotFoundError:
        existing = None
    except OSError as error:
        raise write_error(path, error) from None
    try:
        if fmt == "txt":
            text = _txt_sidecar(existing, tags, merge)
        elif fmt == "json":
            text = _json_sidecar(existing, tags, merge)
        else:
            text = _xmp_sidecar(existing, tags, merge)
    except MalformedFileError as error:
        raise OutputError(
            f"{path}: cannot update the existing sidecar ({error}); fix or delete it"
        ) from None
    atomic_write_text(path, text)
    return path


def read_sidecar_tags(path: Path, fmt: str) -> list[str]:
    """The labels stored in a sidecar, in file order.

    Raises:
        InputFileError: the file is missing, unreadable or malformed.
    """
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
            return list(_parse_json_tags(data)[1])
        return _subjects(_parse_xmp(data))
    except MalformedFileError as error:
        raise InputFileError(path, f"malformed {fmt} sidecar ({error})") from None


def _union(first: list[str], second: list[str]) -> list[str]:
    return list(dict.fromkeys([*first, *second]))


def _txt_sidecar(existing: bytes | None, tags: list[Tag], merge: bool) -> str:
    labels = [tag.label for tag in tags]
    if merge and existing is not None:
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


def _json_sidecar(existing: bytes | None, tags: list[Tag], merge: bool) -> str:
    document: dict[str, Any] = {}
    scores: dict[str, float | None] = {}
    if merge and existing is not None:
        document, scores = _parse_json_tags(existing)
    scores.update((tag.label, tag.score) for tag in tags)
    entries: list[dict[str, Any]] = [
        {"label": label} if score is None else {"label": label, "score": round(score, 4)}
        for label, score in scores.items()
    ]
    # Labels without a score were added by hand: they stay first, as the surest.
    entries.sort(key=lambda entry: -entry.get("score", math.inf))
    document.update(tags=entries, source="mkt-tag")
    return json.dumps(document, ensure_ascii=False, indent=2) + "\n"


def _parse_json_tags(data: bytes) -> tuple[dict[str, Any], dict[str, float | None]]:
    try:
        document = json.loads(data)
    except ValueError as error:
        raise MalformedFileError(f"not JSON: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("tags", []), list):
        raise MalformedFileError('expected an object like {"tags": [...]}')
    return document, dict(label_and_score(item) for item in document.get("tags", []))


# --- XMP ------------------------------------------------------------------------------

_X = "adobe:ns:meta/"
_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
_DC = "http://purl.org/dc/elements/1.1/"
_STANDARD_PREFIXES = {"x": _X, "rdf": _RDF, "dc": _DC}
_RDF_RDF, _RDF_DESCRIPTION = f"{{{_RDF}}}RDF", f"{{{_RDF}}}Description"
_RDF_ABOUT, _RDF_BAG, _RDF_LI = f"{{{_RDF}}}about", f"{{{_RDF}}}Bag", f"{{{_RDF}}}li"
_DC_SUBJECT = f"{{{_DC}}}subject"


def _xmp_sidecar(existing: bytes | None, tags: list[Tag], merge: bool) -> str:
    if existing is None:
        root = ET.Element(f"{{{_X}}}xmpmeta", {f"{{{_X}}}xmptk": f"mkt-tag {__version__}"})
        ET.SubElement(ET.SubElement(root, _RDF_RDF), _RDF_DESCRIPTION, {_RDF_ABOUT: ""})
    else:
        root = _parse_xmp(existing)
    for prefix, uri in _STANDARD_PREFIXES.items():
        ET.register_namespace(prefix, uri)
    _set_subjects(root, [tag.label for tag in tags], merge)
    ET.indent(root, space=" ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _parse_xmp(data: bytes) -> ET.Element:
    """Parse XMP safely, registering its namespace prefixes so they survive a rewrite."""
    for prefix, uri in _check_xml(data).items():
        # ElementTree reserves ns0, ns1, ... for prefixes it invents itself; "" (a default
        # namespace) cannot be registered. Both then get invented prefixes: same meaning.
        if prefix and prefix != "xml" and not re.fullmatch(r"ns\d+", prefix):
            ET.register_namespace(prefix, uri)
    builder = ET.TreeBuilder(insert_comments=True, insert_pis=True)
    try:
        return ET.fromstring(data, parser=ET.XMLParser(target=builder))
    except ET.ParseError as error:  # expat accepted it above, so this is not expected
        raise MalformedFileError(f"not well-formed XML: {error}") from None


def _check_xml(data: bytes) -> dict[str, str]:
    """Check that ``data`` is well-formed XML without a DOCTYPE; return the namespace
    prefixes it declares.

    Refusing any DOCTYPE is what makes parsing safe: entities can only be declared in a
    DTD, so without one there is no entity expansion (billion laughs, quadratic blow-up)
    and no external entity to fetch. XMP never needs a DTD. The check runs on the same
    bytes that ElementTree then parses, before ElementTree sees them.
    """
    namespaces: dict[str, str] = {}

    def refuse(*_: object) -> None:
        raise MalformedFileError("DOCTYPE and entity declarations are not allowed in XMP")

    def remember(prefix: str | None, uri: str) -> None:
        namespaces.setdefault(prefix or "", uri)

    parser = expat.ParserCreate(namespace_separator=" ")
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse  # unreachable without a DOCTYPE; kept as a backstop
    parser.StartNamespaceDeclHandler = remember
    try:
        parser.Parse(data, True)
    except expat.ExpatError as error:
        raise MalformedFileError(f"not well-formed XML: {error}") from None
    return namespaces


def _rdf_descriptions(root: ET.Element) -> tuple[ET.Element, list[ET.Element]]:
    rdf = root if root.tag == _RDF_RDF else root.find(f".//{_RDF_RDF}")
    if rdf is None:
        raise MalformedFileError("no rdf:RDF element")
    return rdf, rdf.findall(_RDF_DESCRIPTION)


def _subjects(root: ET.Element) -> list[str]:
    _, descriptions = _rdf_descriptions(root)
    labels = [
        item.text.strip()
        for description in descriptions
        for subject in description.findall(_DC_SUBJECT)
        for item in subject.iter(_RDF_LI)
        if item.text and item.text.strip()
    ]
    return _union(labels, [])


def _set_subjects(root: ET.Element, labels: list[str], merge: bool) -> None:
    """Replace every dc:subject by one rdf:Bag of ``labels`` (after the existing keywords
    with ``merge``), leaving every other element and attribute as it was."""
    rdf, descriptions = _rdf_descriptions(root)
    keywords = _union(_subjects(root), labels) if merge else labels
    owner, position = None, 0
    for description in descriptions:
        for subject in description.findall(_DC_SUBJECT):
            if owner is None:  # the new list goes where the first one was: smaller diffs
                owner, position = description, list(description).index(subject)
            description.remove(subject)
    if not keywords:
        return
    if owner is None:
        owner = descriptions[0] if descriptions else ET.SubElement(rdf, _RDF_DESCRIPTION)
        owner.set(_RDF_ABOUT, owner.get(_RDF_ABOUT, ""))
        position = len(owner)
    subject = ET.Element(_DC_SUBJECT)
    owner.insert(position, subject)
    bag = ET.SubElement(subject, _RDF_BAG)
    for keyword in keywords:
        ET.SubElement(bag, _RDF_LI).text = keyword
