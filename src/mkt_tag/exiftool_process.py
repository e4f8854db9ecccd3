"""One exiftool process for a whole run: it reads the XMP packet and IPTC of image files,
and writes a changed copy of a file that then replaces it atomically.

exiftool is the one writer of JPEG, TIFF, DNG and HEIF metadata alike (exiv2 cannot write
HEIF), and what photo managers' own documentation uses. PyExifTool keeps it running in its
``-stay_open`` mode: a command costs milliseconds instead of a Perl start (0.2-0.5 s).

To plan a run over thousands of photos, a JPEG's XMP packet is read without exiftool (a
walk over its segments); anything out of the plain goes to exiftool.

Arguments go to exiftool one per line, so no value that a file could hold (an XMP packet,
a keyword) travels as an argument: the packet is handed over in a file (``-XMP<=``), IPTC
values in a JSON file (``-json=``), and file names with a line break are refused.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from mkt_tag.errors import MktTagError, OutputError
from mkt_tag.files import fsync_directory, temporary_path, write_error

INSTALL_HINT = (
    "pip install 'mkt-tag[embed]' and install exiftool "
    "(apt install libimage-exiftool-perl, brew install exiftool)"
)
# Where the metadata comes before the pixels, -fast2 (no maker notes, no scan for a trailer)
# is safe; PNG and WebP may keep their XMP after the pixels, HEIF inside its media data.
FAST_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".tif", ".tiff", ".dng"})
_JPEG = frozenset({".jpg", ".jpeg", ".jpe"})
_XMP_APP1 = b"http://ns.adobe.com/xap/1.0/\0"  # how a JPEG's APP1 segment says it is XMP
_READ_TAGS = ("-XMP:XMP", "-XMP-xmpNote:HasExtendedXMP", "-File:FileType")
_IPTC_TAGS = ("-IPTC:all", "-Photoshop:IPTCDigest", "-File:CurrentIPTCDigest")
_BATCH = 100  # files per exiftool command when reading many
_PACKET = '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n{}<?xpacket end="w"?>'


@dataclass
class FileMetadata:
    """What exiftool read from one file."""

    file_type: str = ""  # exiftool's FileType, from the content: JPEG, TIFF, DNG, HEIC, ...
    xmp: bytes | None = None  # the XMP packet
    extended_xmp: bool = False  # a JPEG whose XMP continues in extended segments
    iptc: dict[str, list[str]] = field(default_factory=dict)  # "IPTC:Keywords": its values
    iptc_digest: bool = False  # a Photoshop IPTCDigest that matches the IPTC: XMP in sync


@dataclass
class IptcChange:
    """IPTC values for exiftool to set, and how."""

    values: dict[str, Any]  # "IPTC:Keywords": [...] ([] removes them)
    charset: str = "UTF8"  # exiftool's -charset iptc=: UTF8, or Latin for a legacy file
    over_length: bool = False  # keep values over IPTC's limits whole (exiftool's -m)


class ExiftoolProcess:
    """A running exiftool; use as a context manager, one per thread.

    Raises:
        MktTagError: PyExifTool or exiftool is missing, or exiftool does not start.
    """

    def __init__(self, executable: str = "exiftool") -> None:
        self._executable = executable
        self._tool: Any = None
        self._scratch: Path | None = None  # the files handed to exiftool

    def __enter__(self) -> ExiftoolProcess:
        self.start()
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def start(self) -> None:
        """Start exiftool (the first command does otherwise)."""
        if self._tool is not None:
            return
        try:
            import exiftool as pyexiftool
        except ImportError:
            raise MktTagError(f"--embed needs PyExifTool: {INSTALL_HINT}") from None
        executable = shutil.which(self._executable)
        if executable is None:
            raise MktTagError(f"--embed needs exiftool, which was not found: {INSTALL_HINT}")
        tool = pyexiftool.ExifTool(executable=executable, common_args=[], encoding="utf-8")
        try:
            tool.run()
        except (OSError, RuntimeError, pyexiftool.exceptions.ExifToolException) as error:
            raise MktTagError(f"cannot start exiftool ({error}): {INSTALL_HINT}") from None
        self._tool = tool
        self._scratch = Path(tempfile.mkdtemp(prefix="mkt-tag-exiftool-"))

    def close(self) -> None:
        """Stop exiftool and remove its scratch folder."""
        if self._tool is not None:
            with contextlib.suppress(Exception):
                self._tool.terminate()
            self._tool = None
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def read_many(self, images: Sequence[Path]) -> dict[Path, FileMetadata]:
        """The XMP (no IPTC) of each image; files that cannot be read are missing from the
        result. A JPEG's packet is read here (exiftool costs milliseconds a file, this
        walk over its segments microseconds), everything else a hundred per command."""
        found: dict[Path, FileMetadata] = {}
        for path in map(Path, images):
            if path.suffix.lower() in _JPEG and (metadata := _jpeg_xmp(path)) is not None:
                found[path] = metadata
        rest = [path for path in map(Path, images) if path not in found and _safe_name(path)]
        for fast in (True, False):
            group = [path for path in rest if _fast(path) == fast]
            for start in range(0, len(group), _BATCH):
                batch = group[start : start + _BATCH]  # absolute: no name starts with "-"
                by_name = {str(image.absolute()): image for image in batch}
                _, out, _ = self._execute(*_read_options(fast, iptc=False), *map(Path, by_name))
                for entry in _json(out):
                    if entry.get("SourceFile") in by_name:
                        found[by_name[entry["SourceFile"]]] = _metadata(entry)
        return found

    def read(self, path: Path, target: Path) -> FileMetadata:
        """The XMP and IPTC of ``target``; ``path`` is how errors name it.

        Raises:
            OutputError: exiftool cannot read it (missing, damaged, not an image).
        """
        if not _safe_name(target):
            raise OutputError(f"{path}: exiftool cannot take a file name with a line break")
        status, out, err = self._execute(*_read_options(_fast(target), iptc=True), target)
        entries = _json(out)
        if status != 0 or not entries:
            raise OutputError(f"{path}: cannot read its metadata ({_message(err, target)})")
        return _metadata(entries[0])

    def rewrite(
        self, path: Path, target: Path, xmp: str | None, iptc: IptcChange | None
    ) -> list[str]:
        """Replace ``target``'s XMP packet by ``xmp`` (None: remove it) and set ``iptc``,
        atomically: exiftool writes a new file beside it (``files.temporary_path``), which
        is fsynced, given the permission bits (and group) of ``target`` and renamed over
        it. ``path`` is how errors name the file. Returns exiftool's warnings.

        Raises:
            OutputError: the file is read-only, has other hard links (renaming over it
                would break them), changed meanwhile, or exiftool failed; it is then as
                it was, and no temporary file is left.
        """
        try:
            before = target.stat()
        except OSError as error:
            raise write_error(path, error) from None
        if not os.access(target, os.W_OK):
            raise OutputError(f"{path}: read-only file; its keywords were not changed")
        if before.st_nlink > 1:
            raise OutputError(
                f"{path}: has other hard links, which replacing it would break; "
                "use a sidecar (--sidecar xmp) for it"
            )
        self.start()
        assert self._scratch is not None
        options: list[str | Path] = ["-XMP="]
        packet = b""
        if xmp is not None:  # exiftool refuses an XML declaration; it needs the wrapper
            packet = _PACKET.format(xmp.split("?>", 1)[1].lstrip()).encode()
            (self._scratch / "packet.xmp").write_bytes(packet)
            options = [f"-XMP<={self._scratch / 'packet.xmp'}"]
        if iptc is not None:
            values = self._scratch / "iptc.json"
            values.write_text(json.dumps([{"SourceFile": "*", **iptc.values}]), encoding="utf-8")
            options += ["-charset", f"iptc={iptc.charset}", f"-json={values}"]
            options += ["-m"] if iptc.over_length else []
        temporary = temporary_path(target)
        try:
            status, _, err = self._execute(*options, "-o", temporary, target)
            if status != 0 or not temporary.exists() or self._packet(temporary) != _body(packet):
                # exiftool drops a value it rejects with a mere warning: hence the check
                raise OutputError(f"{path}: cannot embed keywords ({_message(err, target)})")
            with open(temporary, "rb+") as file:
                os.fsync(file.fileno())
            os.chmod(temporary, stat.S_IMODE(before.st_mode))
            if temporary.stat().st_gid != before.st_gid:
                with contextlib.suppress(OSError):  # only a member of that group may
                    os.chown(temporary, -1, before.st_gid)
            if _version(target.stat()) != _version(before):
                raise OutputError(f"{path}: changed while its keywords were written; run again")
            os.replace(temporary, target)
        except OSError as error:
            raise write_error(path, error) from None
        finally:
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
        fsync_directory(target.parent)
        return _warnings(err, target)

    def _packet(self, path: Path) -> bytes | None:
        """The XMP packet exiftool wrote (b"" none), None when unreadable."""
        found = _jpeg_xmp(path) or self.read_many([path]).get(path)
        return None if found is None else _body(found.xmp or b"")

    def _execute(self, *args: str | Path) -> tuple[int, str, str]:
        """Run one exiftool command: its exit status, output and messages."""
        self.start()
        import exiftool as pyexiftool

        params = [os.fsencode(arg) if isinstance(arg, Path) else arg for arg in args]
        if os.name == "nt":  # file names as UTF-8, which os.fsencode gives there
            params = ["-charset", "filename=utf8", *params]
        try:
            out = self._tool.execute(*params)
        except (OSError, pyexiftool.exceptions.ExifToolException) as error:
            self.close()
            raise MktTagError(f"exiftool stopped working ({error}); run again") from None
        return self._tool.last_status, out, self._tool.last_stderr


def _safe_name(path: Path) -> bool:
    return "\n" not in str(path) and "\r" not in str(path)


def _fast(path: Path) -> bool:
    return path.suffix.lower() in FAST_EXTENSIONS


def _read_options(fast: bool, iptc: bool) -> list[str]:
    # -b: the XMP packet as it is; -G: "XMP:XMP", "IPTC:Keywords", ... as names
    options = ["-j", "-b", "-G", "-fast2" if fast else "-fast", *_READ_TAGS]
    return [*options, *_IPTC_TAGS] if iptc else options


def _json(out: str) -> list[dict[str, Any]]:
    # Numbers as exiftool wrote them: a keyword "1.50" must not become 1.5.
    try:
        return list(json.loads(out or "[]", parse_float=str, parse_int=str))
    except ValueError:
        return []


def _text(value: Any) -> str:
    # exiftool leaves true, false and null unquoted too
    return {True: "true", False: "false", None: "null"}.get(value, str(value))


def _metadata(entry: dict[str, Any]) -> FileMetadata:
    xmp = entry.get("XMP:XMP")
    if isinstance(xmp, str):  # base64 when not UTF-8 (a UTF-16 packet)
        packet = base64.b64decode(xmp[7:]) if xmp.startswith("base64:") else xmp.encode()
    iptc = {
        name: [_text(item) for item in (value if isinstance(value, list) else [value])]
        for name, value in entry.items()
        if name.startswith("IPTC:")
    }
    return FileMetadata(
        str(entry.get("File:FileType", "")),
        packet if isinstance(xmp, str) else None,
        "XMP:HasExtendedXMP" in entry,
        iptc,
        entry.get("Photoshop:IPTCDigest", 0) == entry.get("File:CurrentIPTCDigest"),
    )


def _jpeg_xmp(path: Path) -> FileMetadata | None:
    """A JPEG's XMP packet, from a walk over its segments up to the picture; None where
    anything is out of the plain (extended XMP, two packets, odd markers, not a JPEG):
    exiftool then reads the file."""
    packet = None
    try:
        with open(path, "rb") as file:
            if file.read(2) != b"\xff\xd8":
                return None
            while True:
                head = file.read(4)
                if len(head) < 4 or head[0] != 0xFF or not 0xC0 <= head[1] < 0xFF:
                    return None
                if head[1] in (0xDA, 0xD9):  # the picture starts (or the file ends)
                    break
                length = int.from_bytes(head[2:4], "big") - 2
                if length < 0:
                    return None
                start = file.read(min(length, len(_XMP_APP1))) if head[1] == 0xE1 else b""
                if start == _XMP_APP1 and packet is None:
                    packet = file.read(length - len(start))
                elif start == _XMP_APP1 or start.startswith(b"http://ns.adobe.com/xmp/ext"):
                    return None  # a second packet, or extended XMP
                else:
                    file.seek(length - len(start), os.SEEK_CUR)
    except OSError:
        return None
    return FileMetadata("JPEG", packet)


def _body(packet: bytes) -> bytes:
    """An XMP packet without its wrapper, which exiftool rewrites in PNG files."""
    return re.sub(rb"^\s*<\?xpacket[^>]*>|<\?xpacket[^>]*>\s*$", b"", packet).strip()


def _message(err: str, path: Path) -> str:
    """exiftool's first error (else warning), without its ``- FILE`` tail."""
    lines = [line.strip() for line in err.splitlines()]
    errors = [line for line in lines if line.startswith("Error:")]
    picked = (
        errors
        or [line for line in lines if line.startswith("Warning:")]
        or ["Error: exiftool failed"]
    )
    return picked[0].split(":", 1)[1].strip().removesuffix(f" - {path}").strip()


def _warnings(err: str, path: Path) -> list[str]:
    return [
        "exiftool: " + line.strip().removeprefix("Warning:").strip().removesuffix(f" - {path}")
        for line in err.splitlines()
        if line.strip().startswith("Warning")
    ]


def _version(status: os.stat_result) -> tuple[int, int, int]:
    return status.st_ino, status.st_size, status.st_mtime_ns
