"""Keywords inside the image files (``--embed``), for Lightroom Classic (which reads XMP
sidecars only for raw files), phones and Apple Photos (which read none).

The file's XMP packet gets the three XMP keyword fields and mkt-tag's record, exactly as an
XMP sidecar does (``keywords``, ``xmp``). JPEG, TIFF and DNG also carry IPTC, and their
``IPTC:Keywords`` get the same flat keywords; the record (in the XMP) lists what mkt-tag
added there too. HEIC/HEIF/AVIF, PNG and WebP have no standard IPTC and get XMP only. Camera
raw formats other than DNG are refused: writing into a proprietary raw risks the photo, and
their keywords belong in a sidecar.

IPTC's limits: a keyword of mkt-tag's over 64 bytes is left out of IPTC with a warning
(cutting it short would make another keyword) and stays in XMP; a person's is kept whole.
IPTC is written as UTF-8 with its CodedCharacterSet tag, unless the file's IPTC already
holds non-ASCII text without that tag: that text would change meaning, so the file stays
Latin-1 and a keyword Latin-1 cannot spell is left out of IPTC.

exiftool does the reading and writing (``exiftool_process``): everything else in the file
is copied as it was, and the file is replaced atomically with a new modification time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from mkt_tag.camera_raw import CAMERA_RAW_EXTENSIONS
from mkt_tag.errors import OutputError
from mkt_tag.exiftool_process import (
    FAST_EXTENSIONS,
    ExiftoolProcess,
    FileMetadata,
    IptcChange,
)
from mkt_tag.keywords import IPTC_KEYWORDS, Fields, Ownership, add_tags, without_owned
from mkt_tag.records import NEW, STALE, Decided, Record, RunIdentity, labels_by_score
from mkt_tag.results import MalformedFileError, Tag
from mkt_tag.xmp import XmpDocument, record_state

# exiftool's FileType of each format mkt-tag writes into: whether it carries IPTC.
FORMATS = {"JPEG": True, "TIFF": True, "DNG": True, "HEIC": False, "HEIF": False}
FORMATS |= {"AVIF": False, "PNG": False, "WEBP": False, "Extended WEBP": False}
EMBED_EXTENSIONS = FAST_EXTENSIONS | {".heic", ".heif", ".hif", ".avif", ".png", ".webp"}
IPTC_KEYWORD_BYTES = 64  # IPTC IIM's limit for one keyword


@dataclass
class EmbedChange:
    """What ``write`` or ``remove`` did (with ``dry_run``: would do) to one image."""

    path: Path
    added: Fields = field(default_factory=dict)  # the entries each keyword field gained
    removed: Fields = field(default_factory=dict)  # the entries each keyword field lost
    labels: list[str] = field(default_factory=list)  # mkt-tag's tags now (write) / removed
    warnings: list[str] = field(default_factory=list)  # keywords left out of IPTC; exiftool's

    @property
    def changed(self) -> bool:
        return any(self.added.values()) or any(self.removed.values())


def embed_refusal(image: Path) -> str | None:
    """Why keywords cannot go into ``image``, judged by its name; None when they can."""
    suffix = Path(image).suffix.lower()
    if suffix in EMBED_EXTENSIONS:
        return None
    if suffix in CAMERA_RAW_EXTENSIONS:
        return "camera raw files keep their keywords in a sidecar (--sidecar xmp)"
    kinds = "JPEG, TIFF, HEIC, DNG, PNG or WebP"
    return f"keywords can be embedded only in {kinds} files, not in {suffix or 'this'} ones"


class EmbeddedMetadata:
    """Reads and writes mkt-tag's keywords inside image files through one exiftool
    process: ``with EmbeddedMetadata() as embedded: embedded.write(...)``. One per thread.

    Raises:
        MktTagError: PyExifTool or exiftool is missing (on entering, or the first call).
    """

    def __init__(self, executable: str = "exiftool") -> None:
        self.exiftool = ExiftoolProcess(executable)

    def __enter__(self) -> EmbeddedMetadata:
        self.exiftool.start()
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop exiftool."""
        self.exiftool.close()

    def state(self, image: Path, run: RunIdentity, tag_root: str = "") -> str:
        """Whether ``image`` holds ``run``'s tags (see :meth:`states`)."""
        return self.states([image], run, tag_root)[0]

    def states(self, images: Sequence[Path], run: RunIdentity, tag_root: str = "") -> list[str]:
        """For each image, what ``sidecars.sidecar_state`` says of a sidecar: ``CURRENT``
        when its XMP holds mkt-tag's record of ``run`` under ``tag_root``, ``STALE`` for
        another run's (or a record or file that cannot be read: writing will say what is
        wrong), ``NEW`` for no record. A JPEG's XMP is read directly (a fraction of a
        millisecond), other files by exiftool, a hundred per command."""
        found = self.exiftool.read_many(images)
        return [_state(found.get(Path(image)), run, tag_root) for image in images]

    def write(
        self,
        image: Path,
        tags: list[Tag],
        run: RunIdentity,
        tag_root: str = "",
        keep: bool = False,
        dry_run: bool = False,
        rejected: Sequence[str] = (),
    ) -> EmbedChange:
        """Write ``tags`` into ``image``'s keyword fields in place of mkt-tag's earlier
        ones (kept as well with ``keep``), and record ``run``; everyone else's keywords
        keep their place and order. ``dry_run`` only says what would change. No tag of a
        label a person rejected is written: those the file's record lists, and
        ``rejected`` (the photo's sidecar's), which the record lists from then on.

        Raises:
            OutputError: the file cannot take keywords (its format, read-only, damaged)
                or exiftool failed; the file is then as it was.
        """
        path = Path(image)
        if (reason := embed_refusal(path)) is not None:
            raise OutputError(f"{path}: {reason}")
        target = _target(path)
        found = self.exiftool.read(path, target)
        has_iptc = _check_format(path, found)
        xmp = _document(path, found)
        previous = xmp.record
        tags, kept_out = Decided(rejected=rejected).ours(tags, previous, keep)
        before = _fields(xmp, found, has_iptc)
        labels = labels_by_score(tags)
        owned = previous.owned if previous else Ownership()
        after, written = add_tags(before, owned, labels, tag_root)
        change = EmbedChange(path, labels=[tag.label for tag in tags])
        iptc = _iptc_change(found, before, after, written, change.warnings) if has_iptc else None
        xmp.update(after, Record.of(run, tags, written, tag_root, kept_out))
        change.added, change.removed = _difference(before, after)
        if not dry_run:
            change.warnings += self.exiftool.rewrite(path, target, xmp.to_text(), iptc)
        return change

    def remove(self, image: Path, dry_run: bool = False) -> EmbedChange | None:
        """Remove mkt-tag's keywords and record from ``image`` (``untag``); everyone
        else's stay. None when it holds no record of mkt-tag's, or is of a kind mkt-tag
        never writes into. An XMP packet left empty is removed. ``dry_run`` only says
        what would change.

        Raises:
            OutputError: as for :meth:`write`.
        """
        path = Path(image)
        if embed_refusal(path) is not None:
            return None
        target = _target(path)
        found = self.exiftool.read(path, target)
        if found.file_type not in FORMATS:
            return None
        xmp = _document(path, found)
        record = xmp.record
        if record is None:
            return None
        has_iptc = _check_format(path, found)
        before = _fields(xmp, found, has_iptc)
        after = without_owned(before, record.owned)
        change = EmbedChange(path, labels=[tag.label for tag in record.tags])
        iptc = _iptc_change(found, before, after, None, change.warnings) if has_iptc else None
        xmp.update(after, None)
        change.removed = _difference(before, after)[1]
        if not dry_run:
            text = None if xmp.is_empty() else xmp.to_text()
            change.warnings += self.exiftool.rewrite(path, target, text, iptc)
        return change


def _target(path: Path) -> Path:
    """The file to write: a symbolic link's target (the link stays a link), absolute
    (exiftool would take a name starting with ``-`` for an option)."""
    return path.resolve() if path.is_symlink() else path.absolute()


def _state(found: FileMetadata | None, run: RunIdentity, tag_root: str) -> str:
    if found is None:
        return STALE
    return record_state(found.xmp, run, tag_root) if found.xmp else NEW


def _check_format(path: Path, found: FileMetadata) -> bool:
    """Whether the file carries IPTC; refuses what mkt-tag does not write into."""
    if found.file_type not in FORMATS:
        kind = found.file_type or "unknown"
        raise OutputError(f"{path}: cannot embed keywords in a {kind} file")
    if found.extended_xmp:
        raise OutputError(
            f"{path}: its XMP continues in extended segments (a depth map?), which "
            "rewriting would lose; use a sidecar (--sidecar xmp) for it"
        )
    return FORMATS[found.file_type]


def _document(path: Path, found: FileMetadata) -> XmpDocument:
    try:
        return XmpDocument(found.xmp)
    except MalformedFileError as error:
        raise OutputError(f"{path}: cannot update the XMP inside it ({error})") from None


def _fields(xmp: XmpDocument, found: FileMetadata, has_iptc: bool) -> Fields:
    fields = xmp.fields()
    if has_iptc:
        fields[IPTC_KEYWORDS] = list(found.iptc.get("IPTC:Keywords", []))
    return fields


def _iptc_change(
    found: FileMetadata,
    before: Fields,
    after: Fields,
    written: Ownership | None,
    warnings: list[str],
) -> IptcChange | None:
    """What makes the file's IPTC:Keywords ``after[IPTC_KEYWORDS]``; None when they stay
    as they were. mkt-tag's entries (``written``) that IPTC cannot hold are dropped from
    ``after`` and ``written``, with a warning each."""
    coded = found.iptc.get("IPTC:CodedCharacterSet", [""])[0]
    texts = [v for name, vs in found.iptc.items() if name != "IPTC:CodedCharacterSet" for v in vs]
    # ASCII reads the same in every character set; other text written in a legacy one
    # would change meaning under a new CodedCharacterSet, so the file keeps Latin-1.
    utf8 = coded == "UTF8" or all(text.isascii() for text in texts)
    encoding = "utf-8" if utf8 else "cp1252"
    owned = [] if written is None else [written.added, written.copied]
    ours = {entry for kind in owned for entry in kind.get(IPTC_KEYWORDS, [])}
    kept = []
    for entry in after[IPTC_KEYWORDS]:
        if entry in ours and not _encodable(entry, encoding):
            warnings.append(f"IPTC:Keywords: left out {entry!r} (not in the file's Latin-1)")
        elif entry in ours and len(entry.encode(encoding)) > IPTC_KEYWORD_BYTES:
            warnings.append(f"IPTC:Keywords: left out {entry!r} (over IPTC's 64 bytes)")
        else:
            kept.append(entry)
    after[IPTC_KEYWORDS] = kept
    for kind in owned:
        if entries := [entry for entry in kind.pop(IPTC_KEYWORDS, []) if entry in kept]:
            kind[IPTC_KEYWORDS] = entries
    if kept == before[IPTC_KEYWORDS]:
        return None
    values: dict[str, object] = {"IPTC:Keywords": kept}
    if utf8 and coded != "UTF8":
        values["IPTC:CodedCharacterSet"] = "UTF8"
    if found.iptc_digest:  # XMP and IPTC were in sync, and still are (MWG's digest)
        values["Photoshop:IPTCDigest"] = "new"  # after the IPTC: exiftool needs that order
    # A person's keyword over the limit: exiftool would cut it short, unless told not to.
    longer = any(len(entry.encode(encoding, "replace")) > IPTC_KEYWORD_BYTES for entry in kept)
    return IptcChange(values, "UTF8" if utf8 else "Latin", longer)


def _encodable(text: str, encoding: str) -> bool:
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        return False
    return True


def _difference(before: Fields, after: Fields) -> tuple[Fields, Fields]:
    """The entries each field gained, and those it lost."""
    added = {f: [e for e in after[f] if e not in before.get(f, [])] for f in after}
    removed = {f: [e for e in before[f] if e not in after.get(f, [])] for f in before}
    return {f: e for f, e in added.items() if e}, {f: e for f, e in removed.items() if e}
