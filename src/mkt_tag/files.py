"""Files mkt-tag writes and fingerprints: atomic replacement, and content hashes.

Every output is replaced atomically (temporary file, fsync, rename), so a crash or a
``kill -9`` leaves either the old file or the new one, never a half-written mix. A kill
between the temporary file's creation and its rename leaves the temporary file behind
(hidden, named by its process); ``remove_stale_temporaries`` removes those of processes
that are gone.
Fingerprints (``digest``, ``file_identity``, ``file_content``) key the caches and say which
weights a model was loaded from.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mkt_tag.errors import OutputError

# The temporary file of an atomic write: ".NAME.PID.TOKEN.tmp" beside NAME. Hidden, so that
# folder scans (images.find_images) never take it for a photo; named by its process, so
# that a later run can tell the leftovers of a killed process from a write in progress.
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.(?P<pid>[1-9][0-9]{0,9})\.(?P<token>[0-9a-f]{8})\.tmp")


def temporary_path(path: Path) -> Path:
    """Where ``atomic_write_bytes`` writes ``path`` before renaming it into place."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new file, never
    a partial one. An existing file keeps its permission bits.

    Raises:
        OutputError: the file or its directory cannot be written.
    """
    path = Path(path)
    try:
        old_mode: int | None = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        old_mode = None
    except OSError as error:
        raise write_error(path, error) from None
    temporary = temporary_path(path)
    try:
        # Mode 0o666 lets the umask decide a new file's permissions, as open() would;
        # tempfile's helpers create 0o600 files, which would make every output private.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        with os.fdopen(os.open(temporary, flags, 0o666), "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        if old_mode is not None:
            os.chmod(temporary, old_mode)
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise write_error(path, error) from None
        raise
    fsync_directory(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """Atomically replace ``path`` with ``text`` encoded as UTF-8 (see atomic_write_bytes)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def fsync_directory(directory: Path) -> None:
    # Makes the rename itself survive a power cut. Not possible everywhere (Windows),
    # and the file is already complete either way, so failures are ignored.
    with contextlib.suppress(OSError):
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


@contextlib.contextmanager
def atomic_directory(folder: Path) -> Iterator[Path]:
    """Fill a staging folder; on success it replaces ``folder`` in one rename.

    A crash leaves the old folder (or, in the instant between the two renames, a
    ``.NAME.old`` copy beside it) and never a half-written one. Used for checkpoints.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes it private; a checkpoint is not
    try:
        yield staging
        for file in staging.iterdir():
            if file.is_file():
                with open(file, "rb") as handle:
                    os.fsync(handle.fileno())
        old = folder.with_name(f".{folder.name}.old")
        if folder.exists():
            shutil.rmtree(old, ignore_errors=True)
            folder.rename(old)
        staging.rename(folder)
        fsync_directory(folder.parent)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the temporary files that killed processes left in ``folder``; return them.

    Only files named exactly as ``temporary_path`` names them, whose process is no longer
    running, are removed: a write in progress (its process is alive) and every other file
    are left alone. Files that cannot be removed are left too; they are harmless.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed  # an unreadable folder is reported by whoever reads it
    for entry in entries:
        match = _TEMPORARY.fullmatch(entry.name)
        if match is None or process_alive(int(match["pid"])):
            continue
        with contextlib.suppress(OSError):
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(Path(folder) / entry.name)
    return removed


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine; True where that cannot be told."""
    if pid == os.getpid():
        return True
    if os.name == "nt":  # os.kill(pid, 0) would send Ctrl-C there: never guess
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # PermissionError: it runs, as another user
        return True
    return True


def write_error(path: Path, error: OSError) -> OutputError:
    reason = "permission denied" if isinstance(error, PermissionError) else error.strerror
    return OutputError(f"{path}: cannot write ({(reason or str(error)).lower()})")


def tree_size(folder: Path) -> int:
    """Bytes the files under ``folder`` take (symlinks not followed, so not counted twice)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


# --- fingerprints ---------------------------------------------------------------------


def digest(*parts: Any) -> str:
    """A short stable hash of JSON-able parts and bytes."""
    hasher = hashlib.blake2b(digest_size=16)
    for part in parts:
        data = (
            part
            if isinstance(part, bytes | bytearray | memoryview)
            else json.dumps(part, sort_keys=True, default=str).encode()
        )
        hasher.update(len(data).to_bytes(8, "little"))
        hasher.update(data)
    return hasher.hexdigest()


def file_identity(path: Path) -> list[Any]:
    """Path, size and modification time: cheap, and exact for the hub's content-addressed files."""
    stat = path.stat()
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]


def file_content(path: Path) -> str:
    """Content hash, for small files whose path says nothing about their content."""
    hasher = hashlib.blake2b(digest_size=16)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()
