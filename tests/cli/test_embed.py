"""`tag --embed` and `untag --embed` through the command line: keywords inside the files."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mkt_tag.cli import app
from mkt_tag.errors import EXIT_PARTIAL
from tests.conftest import TINY_CONFIG, make_photo


def run(*args: str | Path):
    return CliRunner().invoke(app, [str(a) for a in args])


def tag(*args: str | Path):
    return run("tag", *args, "--model", TINY_CONFIG, "--precision", "fp32")


def keywords(path: Path) -> dict[str, object]:
    fields = ["-IPTC:Keywords", "-XMP-dc:Subject", "-XMP-lr:HierarchicalSubject"]
    output = subprocess.run(
        ["exiftool", "-j", "-G1", *fields, "-XMP-digiKam:TagsList", str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    record: dict[str, object] = json.loads(output.stdout)[0]
    return record


@pytest.fixture
def library(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    make_photo(folder / "a.jpg")
    make_photo(folder / "b.jpg", (20, 200, 20))
    subprocess.run(
        ["exiftool", "-q", "-overwrite_original", "-Keywords=holiday", "-XMP-dc:Subject=holiday",
         str(folder / "a.jpg")],
        check=True,
    )  # fmt: skip
    (folder / "c.cr2").write_bytes(b"not really raw")
    return folder


@pytest.fixture
def labels(tmp_path: Path) -> Path:
    path = tmp_path / "labels.txt"
    path.write_text("animal/dog\ncat\n")
    return path


def test_embed_dry_run_then_tag_then_untag(library: Path, labels: Path) -> None:
    photo = library / "a.jpg"
    before = photo.read_bytes()
    preview = tag(photo, "--labels", labels, "--embed", "--dry-run", "-k", "2")
    assert preview.exit_code == 0, preview.output
    assert photo.read_bytes() == before  # a dry run writes nothing
    line = preview.stdout.strip()
    assert line.startswith(f"{photo}\t") and "+animal|dog" in line and "+cat" in line

    tagged = tag(photo, "--labels", labels, "--embed", "-k", "2")
    assert tagged.exit_code == 0, tagged.output
    found = keywords(photo)
    assert found["IPTC:Keywords"] == ["holiday", "animal", "dog", "cat"]
    assert found["XMP-dc:Subject"] == ["holiday", "animal", "dog", "cat"]
    assert found["XMP-digiKam:TagsList"] == ["holiday", "animal/dog", "cat"]

    again = tag(photo, "--labels", labels, "--embed", "-k", "2")
    assert "(0 new, 0 stale, 1 current)" in again.stderr
    other = tag(photo, "--labels", labels, "--embed", "-k", "1")  # another selection
    assert "(0 new, 1 stale, 0 current)" in other.stderr

    removed = run("untag", photo, "--embed")
    assert removed.exit_code == 0, removed.output
    assert keywords(photo) == {
        "SourceFile": str(photo),
        "IPTC:Keywords": "holiday",
        "XMP-dc:Subject": "holiday",
    }


def test_raw_files_cannot_take_keywords_without_a_sidecar(library: Path, labels: Path) -> None:
    result = tag(library, "--labels", labels, "--embed")
    assert result.exit_code == EXIT_PARTIAL, result.output
    assert "c.cr2: camera raw files keep their keywords in a sidecar" in result.stderr
    assert "Traceback" not in result.output


def test_dry_run_alone_or_with_other_outputs_is_refused(library: Path, labels: Path) -> None:
    for extra in ([], ["--embed", "--sidecar", "xmp"]):
        result = tag(library / "a.jpg", "--labels", labels, "--dry-run", *extra)
        assert result.exit_code == 1 and "a dry run previews --embed alone" in result.stderr
