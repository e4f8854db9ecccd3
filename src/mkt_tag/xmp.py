"""XMP documents: the keyword fields photo managers read, and mkt-tag's record, changed in
place with everything else kept.

An XMP sidecar written by darktable, digiKam, Lightroom or exiftool holds much more than
keywords (edit history, ratings, develop settings). Only the elements that change are
touched: a keyword field whose entries stay the same is left as it is, byte for byte in
meaning, and mkt-tag's record lives in an rdf:Description of its own.

Parsing refuses any DOCTYPE (see :func:`_check_xml`), so a hostile file can neither expand
entities nor make the parser fetch anything.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from xml.parsers import expat

from mkt_tag._version import __version__
from mkt_tag.keywords import (
    HIERARCHICAL,
    IPTC_KEYWORDS,
    SUBJECT,
    TAGS_LIST,
    XMP_FIELDS,
    Fields,
    KeywordField,
    Ownership,
)
from mkt_tag.records import (
    NEW,
    RECORD_NAMESPACE,
    RECORD_PREFIX,
    STALE,
    Record,
    RunIdentity,
    state,
)
from mkt_tag.results import MalformedFileError, Tag

_X = "adobe:ns:meta/"
_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
_DC = "http://purl.org/dc/elements/1.1/"
_LR = "http://ns.adobe.com/lightroom/1.0/"
_DIGIKAM = "http://www.digikam.org/ns/1.0/"
_MKT = RECORD_NAMESPACE
_STANDARD_PREFIXES = {
    "x": _X,
    "rdf": _RDF,
    "dc": _DC,
    "lr": _LR,
    "digiKam": _DIGIKAM,
    RECORD_PREFIX: _MKT,
}
_RDF_RDF, _RDF_DESCRIPTION = f"{{{_RDF}}}RDF", f"{{{_RDF}}}Description"
_RDF_ABOUT, _RDF_LI = f"{{{_RDF}}}about", f"{{{_RDF}}}li"
_RDF_BAG, _RDF_SEQ, _RDF_ALT = f"{{{_RDF}}}Bag", f"{{{_RDF}}}Seq", f"{{{_RDF}}}Alt"
_RDF_PARSE_TYPE = f"{{{_RDF}}}parseType"
# Where each field lives, and the array it is: lists are Bags, digiKam's TagsList a Seq.
_ELEMENTS = {
    SUBJECT: (f"{{{_DC}}}subject", _RDF_BAG),
    HIERARCHICAL: (f"{{{_LR}}}hierarchicalSubject", _RDF_BAG),
    TAGS_LIST: (f"{{{_DIGIKAM}}}TagsList", _RDF_SEQ),
}


def _mkt(name: str) -> str:
    return f"{{{_MKT}}}{name}"


class XmpDocument:
    """One XMP document (a sidecar, or the XMP packet inside an image)."""

    def __init__(self, data: bytes | None = None) -> None:
        """Parse ``data``, or start an empty document.

        Raises:
            MalformedFileError: not well-formed XML, a DOCTYPE, no rdf:RDF, or a damaged
                mkt-tag record.
        """
        if data is None or not data.strip():
            self.root = ET.Element(f"{{{_X}}}xmpmeta", {f"{{{_X}}}xmptk": f"mkt-tag {__version__}"})
            ET.SubElement(self.root, _RDF_RDF)
        else:
            self.root = _parse(data)
        rdf = self.root if self.root.tag == _RDF_RDF else self.root.find(f".//{_RDF_RDF}")
        if rdf is None:
            raise MalformedFileError("no rdf:RDF element")
        self.rdf = rdf
        self._record = _read_record(self._descriptions())

    def _descriptions(self) -> list[ET.Element]:
        return self.rdf.findall(_RDF_DESCRIPTION)

    def fields(self) -> Fields:
        """The keyword fields, each entry once, in file order ([] where a field is absent)."""
        result: Fields = {}
        for field, (tag, _) in _ELEMENTS.items():
            entries = [
                item.text.strip()
                for description in self._descriptions()
                for element in description.findall(tag)
                for item in element.iter(_RDF_LI)
                if item.text and item.text.strip()
            ]
            result[field] = list(dict.fromkeys(entries))
        return result

    @property
    def record(self) -> Record | None:
        """mkt-tag's record, if the document has one."""
        return self._record

    def update(self, fields: Fields, record: Record | None) -> None:
        """Write the fields whose entries changed, and replace mkt-tag's record by
        ``record`` (None: remove it)."""
        current = self.fields()
        for field in XMP_FIELDS:
            if field in fields and fields[field] != current[field]:
                self._set_field(field, fields[field])
        self._set_record(record)
        self._record = record

    def _set_field(self, field: KeywordField, entries: list[str]) -> None:
        tag, array = _ELEMENTS[field]
        owner, position = None, 0
        for description in self._descriptions():
            for element in description.findall(tag):
                if owner is None:  # the new list goes where the old one was: small diffs
                    owner, position = description, list(description).index(element)
                    arrays = [child.tag for child in element if child.tag in (_RDF_BAG, _RDF_SEQ)]
                    array = arrays[0] if arrays else array
                description.remove(element)
        if not entries:
            return
        if owner is None:
            owner = self._keyword_description()
            position = len(owner)
        element = ET.Element(tag)
        owner.insert(position, element)
        container = ET.SubElement(element, array)
        for entry in entries:
            ET.SubElement(container, _RDF_LI).text = entry

    def _keyword_description(self) -> ET.Element:
        """Where a new keyword field goes: beside the other keyword fields, else in the
        first description that is not mkt-tag's record."""
        descriptions = [d for d in self._descriptions() if not _is_record(d)]
        for description in descriptions:
            if any(description.find(tag) is not None for tag, _ in _ELEMENTS.values()):
                return description
        if descriptions:
            return descriptions[0]
        description = ET.Element(_RDF_DESCRIPTION, {_RDF_ABOUT: ""})
        self.rdf.insert(0, description)
        return description

    def _set_record(self, record: Record | None) -> None:
        for description in self._descriptions():
            for element in [child for child in description if child.tag.startswith(f"{{{_MKT}}}")]:
                description.remove(element)
            for name in [name for name in description.attrib if name.startswith(f"{{{_MKT}}}")]:
                del description.attrib[name]
            if len(description) == 0 and set(description.attrib) <= {_RDF_ABOUT}:
                self.rdf.remove(description)
        if record is not None:
            self.rdf.append(_record_element(record))

    def is_empty(self) -> bool:
        """Whether the document holds no property at all (what is left when everything in
        a sidecar mkt-tag made was mkt-tag's)."""
        return not any(
            len(description) or set(description.attrib) - {_RDF_ABOUT}
            for description in self._descriptions()
        ) and all(child.tag == _RDF_DESCRIPTION for child in self.rdf)

    def to_text(self) -> str:
        for prefix, uri in _STANDARD_PREFIXES.items():
            ET.register_namespace(prefix, uri)
        ET.indent(self.root, space=" ")
        text = ET.tostring(self.root, encoding="unicode")
        return '<?xml version="1.0" encoding="UTF-8"?>\n' + text + "\n"


def record_state(data: bytes, run: RunIdentity, tag_root: str = "") -> str:
    """What the XMP ``data`` says of ``run``'s tags (``records.state``); a record that
    cannot be read is STALE (writing will say what is wrong). Most documents are judged
    without parsing: no record, or another run's fingerprint."""
    if RECORD_NAMESPACE.encode() not in data:
        return NEW
    if run.fingerprint.encode() not in data:
        return STALE
    try:
        return state(XmpDocument(data).record, run, tag_root)
    except MalformedFileError:
        return STALE


# --- mkt-tag's record -----------------------------------------------------------------

_SIMPLE = {  # Record attribute: element name
    "version": "Version",
    "date": "Date",
    "model": "Model",
    "model_fingerprint": "ModelFingerprint",
    "vocabulary": "Vocabulary",
    "selection": "Selection",
    "run": "Run",
    "tag_root": "TagRoot",
}


def _is_record(description: ET.Element) -> bool:
    return any(child.tag.startswith(f"{{{_MKT}}}") for child in description)


def _record_element(record: Record) -> ET.Element:
    description = ET.Element(_RDF_DESCRIPTION, {_RDF_ABOUT: ""})
    for attribute, name in _SIMPLE.items():
        if value := getattr(record, attribute):
            ET.SubElement(description, _mkt(name)).text = value
    tags = ET.SubElement(ET.SubElement(description, _mkt("Tags")), _RDF_SEQ)
    for tag in record.tags:
        item = ET.SubElement(tags, _RDF_LI, {_RDF_PARSE_TYPE: "Resource"})
        ET.SubElement(item, _mkt("Label")).text = tag.label
        ET.SubElement(item, _mkt("Score")).text = f"{tag.score:.4f}"
    bags = [
        (f"{kind.capitalize()}{field.name}", entries)
        for kind in ("added", "copied")
        for field, entries in getattr(record.owned, kind).items()
    ]
    if record.rejected:  # labels a person rejected: never written here again
        bags.append(("Rejected", record.rejected))
    for name, entries in bags:
        bag = ET.SubElement(ET.SubElement(description, _mkt(name)), _RDF_BAG)
        for entry in entries:
            ET.SubElement(bag, _RDF_LI).text = entry
    return description


def _read_record(descriptions: list[ET.Element]) -> Record | None:
    elements = {
        child.tag[len(_MKT) + 2 :]: child
        for description in descriptions
        for child in description
        if child.tag.startswith(f"{{{_MKT}}}")
    }
    if not elements:
        return None
    values = {attribute: _text(elements.get(name)) for attribute, name in _SIMPLE.items()}
    if not values["run"]:
        raise MalformedFileError("mkt-tag's record in it has no run fingerprint (damaged?)")
    tags = []
    for item in elements["Tags"].iter(_RDF_LI) if "Tags" in elements else []:
        label, score = _text(item.find(_mkt("Label"))), _text(item.find(_mkt("Score")))
        try:
            value = float(score)
        except ValueError:
            value = math.nan
        if not label or not math.isfinite(value):
            raise MalformedFileError(f"mkt-tag's record in it has a damaged tag ({label!r})")
        tags.append(Tag(label, value))
    owned = Ownership()
    for kind in ("added", "copied"):
        for field in (*XMP_FIELDS, IPTC_KEYWORDS):  # IPTC: in the XMP packet of a file
            element = elements.get(f"{kind.capitalize()}{field.name}")
            if element is not None:
                entries = [item.text for item in element.iter(_RDF_LI) if item.text]
                getattr(owned, kind)[field] = entries
    found = elements.get("Rejected")
    rejected = [item.text for item in found.iter(_RDF_LI) if item.text] if found is not None else []
    return Record(**values, tags=tags, owned=owned, rejected=rejected)


def _text(element: ET.Element | None) -> str:
    return (element.text or "").strip() if element is not None else ""


# --- safe parsing ---------------------------------------------------------------------


def _parse(data: bytes) -> ET.Element:
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
