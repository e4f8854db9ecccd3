"""Public Google Drive files, downloaded resumably and checked before anything reads them.

The MKT paper's authors publish their trained model on Google Drive. Drive does not always
answer with the file: a file many people fetched gets a quota page ("Too many users have
viewed or downloaded this file recently"), a large one a virus-scan confirmation page, a
moved one a sign-in page. ``gdown`` (the common downloader for public Drive files) follows
the confirmation page and resumes interrupted downloads; this module adds what a tool that
imports the files needs on top:

- a download goes to ``NAME.download`` and becomes ``NAME`` only once checked, so a partial
  or wrong file is never read (``gdown`` keeps its own resumable temporary file meanwhile);
- every answer is checked for what it must be (a PyTorch file, a text file) and a web page
  in its place is named as such, with the way round it (the manual route);
- Drive's own refusals (the quota page) and network failures become one-line
  :class:`DownloadError` messages.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mkt_tag.errors import ModelError

# What a file must be: "torch" (torch.save: a zip archive, or the legacy pickle stream), or
# "text" (UTF-8).
KINDS = ("torch", "text")

_ZIP = b"PK\x03\x04"
_PICKLE = b"\x80"  # the pickle protocol opcode torch's legacy format starts with
_HTML_STARTS = (b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")
QUOTA_WORDS = ("too many users", "quota", "download limit")


class DownloadError(ModelError):
    """A file could not be downloaded, or what arrived is not the file."""


@dataclass(frozen=True)
class DriveFile:
    """A public Google Drive file, what it must be, and the name it is saved under."""

    id: str  # Drive's file id (drive.google.com/file/d/ID)
    name: str  # file name in the download folder
    kind: str  # one of KINDS

    @property
    def url(self) -> str:
        return f"https://drive.google.com/file/d/{self.id}/view"


def fetch(file: DriveFile, folder: Path, quiet: bool = True, manual: str = "") -> Path:
    """``folder/file.name``, downloaded unless a checked copy is there already.

    ``manual`` is appended to every error: how to do without the download. An interrupted
    download resumes where it stopped on the next call.

    Raises:
        DownloadError: Drive refused (quota, permissions), the network failed, or the answer
            is not the file (a web page, another kind of file); nothing is left at the name.
    """
    import gdown
    from gdown.exceptions import FileURLRetrievalError

    target = folder / file.name
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    arrived = folder / f"{file.name}.download"
    hint = f" {manual}" if manual else ""
    try:
        gdown.download(id=file.id, output=str(arrived), quiet=quiet, resume=True)
    except FileURLRetrievalError as error:
        raise DownloadError(f"{file.url}: {_refusal(str(error))}.{hint}") from None
    except OSError as error:  # requests' errors are OSErrors: no connection, timeout, disk
        raise DownloadError(f"{file.url}: cannot download ({_first_line(error)}).{hint}") from None
    check(arrived, file, hint)
    os.replace(arrived, target)
    return target


def list_folder(folder_id: str, manual: str = "") -> dict[str, str]:
    """The files of a public Drive folder: name -> file id (nothing is downloaded).

    Raises:
        DownloadError: Drive refused, or the network failed.
    """
    import gdown
    from gdown.exceptions import FileURLRetrievalError

    url = f"https://drive.google.com/drive/folders/{folder_id}"
    hint = f" {manual}" if manual else ""
    try:
        found = gdown.download_folder(id=folder_id, quiet=True, skip_download=True)
    except FileURLRetrievalError as error:
        raise DownloadError(f"{url}: {_refusal(str(error))}.{hint}") from None
    except OSError as error:
        raise DownloadError(f"{url}: cannot list ({_first_line(error)}).{hint}") from None
    if not found:
        raise DownloadError(f"{url}: Drive listed no files.{hint}")
    return {Path(entry.path).name: entry.id for entry in found if not isinstance(entry, str)}


def check(path: Path, file: DriveFile, hint: str = "") -> None:
    """That ``path`` holds a file of ``file.kind``; otherwise it is deleted and the reason
    raised (a web page where the file should be: Drive's quota or sign-in page)."""
    try:
        with path.open("rb") as stream:
            head = stream.read(4096)
    except OSError as error:
        raise DownloadError(f"{path}: cannot read ({_first_line(error)})") from None
    reason = ""
    if _is_html(head):
        page = head.decode("utf-8", "replace").lower()
        reason = (
            "Drive's download quota for this file is used up for now (its answer was the "
            "'too many users' page); try again in a day"
            if any(words in page for words in QUOTA_WORDS)
            else "Drive answered with a web page instead of the file (a sign-in, quota or "
            "moved-file page)"
        )
    elif file.kind == "torch" and not head.startswith((_ZIP, _PICKLE)):
        reason = "not a PyTorch file"
    elif file.kind == "text" and not _is_text(path):
        reason = "not a UTF-8 text file"
    elif not head:
        reason = "empty file"
    if reason:
        path.unlink(missing_ok=True)
        raise DownloadError(f"{file.url}: {reason}.{hint}")


def _refusal(message: str) -> str:
    lowered = message.lower()
    if any(words in lowered for words in QUOTA_WORDS):
        return (
            "Drive's download quota for this file is used up for now ('too many users have "
            "viewed or downloaded this file recently'); try again in a day"
        )
    said = " ".join(message.split())
    return f"Drive refused the download ({said[:300]})"


def _is_html(head: bytes) -> bool:
    start = head.lstrip().lower()
    return start.startswith(_HTML_STARTS)


def _is_text(path: Path) -> bool:
    try:
        path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return True


def _first_line(error: object) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
