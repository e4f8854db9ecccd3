"""Atomic writes: the old file or the new one, never a mix; clear errors; permissions kept."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mkt_tag.errors import OutputError
from mkt_tag.files import (
    atomic_write_bytes,
    atomic_write_text,
    remove_stale_temporaries,
    temporary_path,
)


def files_in(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def test_atomic_write_creates_and_replaces_leaving_no_temporary_files(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    atomic_write_text(target, "first\n")
    atomic_write_bytes(target, "second ✓\n".encode())
    assert target.read_text(encoding="utf-8") == "second ✓\n"
    assert files_in(tmp_path) == ["out.txt"]


def test_atomic_write_keeps_permissions_of_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    target.chmod(0o640)
    atomic_write_text(target, "new")
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_atomic_write_gives_new_files_the_umask_permissions(tmp_path: Path) -> None:
    old_umask = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "out.txt", "new")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE((tmp_path / "out.txt").stat().st_mode) == 0o640


def test_failed_replace_keeps_the_old_file_and_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")

    def broken_replace(source: object, destination: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OutputError) as caught:
        atomic_write_text(target, "new")
    assert str(caught.value) == f"{target}: cannot write (no space left on device)"
    assert target.read_text() == "old"
    assert files_in(tmp_path) == ["out.txt"]


def test_interrupt_during_write_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted_fsync(descriptor: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted_fsync)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(tmp_path / "out.txt", "new")
    assert files_in(tmp_path) == []


def test_unwritable_directory_is_an_output_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Simulated, because permissions do not stop root (and CI containers run as root).
    def read_only(*args: object, **kwargs: object) -> int:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(OutputError, match=r"out\.txt: cannot write \(permission denied\)"):
        atomic_write_text(tmp_path / "out.txt", "new")


def test_writing_over_a_directory_is_an_output_error(tmp_path: Path) -> None:
    (tmp_path / "out.txt").mkdir()
    with pytest.raises(OutputError, match="cannot write"):
        atomic_write_text(tmp_path / "out.txt", "new")
    assert files_in(tmp_path) == ["out.txt"]


# --- temporary files left by killed processes ------------------------------------------


def dead_pid() -> int:
    """The id of a process that has just ended."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_temporary_names_are_hidden_and_name_their_process(tmp_path: Path) -> None:
    temporary = temporary_path(tmp_path / "photo.jpg.xmp")
    assert temporary.parent == tmp_path
    assert re.fullmatch(rf"\.photo\.jpg\.xmp\.{os.getpid()}\.[0-9a-f]{{8}}\.tmp", temporary.name)


def test_stale_temporaries_are_removed_and_nothing_else(tmp_path: Path) -> None:
    gone = dead_pid()
    stale = [tmp_path / f".a.jpg.xmp.{gone}.0123abcd.tmp", tmp_path / f".t.csv.{gone}.ffffffff.tmp"]
    kept = [
        tmp_path / f".a.jpg.xmp.{os.getpid()}.0123abcd.tmp",  # this process: a write going on
        tmp_path / ".a.jpg.xmp.1.0123abcd.tmp",  # pid 1 runs (and is not ours to judge)
        tmp_path / f"a.jpg.xmp.{gone}.0123abcd.tmp",  # not hidden
        tmp_path / f".a.jpg.xmp.{gone}.0123ABCD.tmp",  # not our token
        tmp_path / f".a.jpg.xmp.{gone}.0123abcd.tmp~",
        tmp_path / ".a.jpg.xmp.99999999999.0123abcd.tmp",  # no such pid can exist
        tmp_path / "a.jpg",
    ]
    for path in [*stale, *kept]:
        path.write_bytes(b"")
    (tmp_path / f".dir.{gone}.0123abcd.tmp").mkdir()  # not a file
    kept.append(tmp_path / f".dir.{gone}.0123abcd.tmp")
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted(stale)
    assert sorted(tmp_path.iterdir()) == sorted(kept)
    assert remove_stale_temporaries(tmp_path / "missing") == []
