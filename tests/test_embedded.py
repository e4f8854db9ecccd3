"""Keywords inside image files (--embed): what exiftool reads back, what stays as it was,
atomic replacement, and the files mkt-tag refuses.

Every test photo carries a person's metadata first (keywords "holiday" and "summer", a
title, a rating, IPTC City), written with exiftool as a photo manager would. One exiftool
process serves the module (``embedded``), another reads files back as a user would see them
(``exiftool -j -G1``).
"""

from __future__ import annotations

import importlib.util
import io
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageCms

from mkt_tag import embedded as embedded_module
from mkt_tag import exiftool_process
from mkt_tag.embedded import EmbeddedMetadata, embed_refusal
from mkt_tag.errors import MktTagError, OutputError
from mkt_tag.exiftool_process import _jpeg_xmp
from mkt_tag.keywords import HIERARCHICAL, IPTC_KEYWORDS, SUBJECT, TAGS_LIST
from mkt_tag.records import RunIdentity
from mkt_tag.results import Tag
from mkt_tag.sidecars import CURRENT, NEW, STALE
from tests.test_images_formats import bayer, jpeg, scene, write_dng

pytestmark = pytest.mark.skipif(
    shutil.which("exiftool") is None or importlib.util.find_spec("exiftool") is None,
    reason="needs exiftool and PyExifTool: pip install 'mkt-tag[embed]', apt install "
    "libimage-exiftool-perl",
)

RUN = RunIdentity("ViT-B-16", "model-fingerprint", "vocabulary-fingerprint", "top 3")
OTHER_RUN = RunIdentity("ViT-B-16", "model-fingerprint", "vocabulary-fingerprint", "top 5")
TAGS = [Tag("animal/dog", 0.9), Tag("beach", 0.6)]
PERSON = ["holiday", "summer"]
FORMATS = ["jpg", "tif", "dng", "heic", "png", "webp"]
WITH_IPTC = {"jpg", "tif", "dng"}
# What a write may change besides the keyword fields and mkt-tag's record (XMP-mkttag:*):
# file-system facts, the IPTC character set mkt-tag declares (and its envelope), the digest
# exiftool computes over IPTC, and where the pixel data now starts.
BOOKKEEPING = {
    "SourceFile",
    "File:CurrentIPTCDigest",
    "IPTC:CodedCharacterSet",
    "IPTC:EnvelopeRecordVersion",
    "IFD0:StripOffsets",
    "SubIFD:StripOffsets",
    "IFD0:PreviewImageStart",
    "QuickTime:MediaDataSize",
}
KEYWORD_TAGS = {
    "IPTC:Keywords",
    "XMP-dc:Subject",
    "XMP-lr:HierarchicalSubject",
    "XMP-digiKam:TagsList",
}


# --- test photos ------------------------------------------------------------------------


def exif_block() -> bytes:
    """EXIF as a camera writes it (big-endian): IFD0, an Exif IFD, a Canon maker note."""
    ascii_, short, long_, rational, undefined = 2, 3, 4, 5, 7
    maker_note = struct.pack(">HHHII", 1, 0x0010, long_, 1, 0x80000213) + bytes(4)
    ifd0 = {
        0x010F: (ascii_, b"Canon\0"),
        0x0110: (ascii_, b"Canon EOS 5D\0"),
        0x011A: (rational, struct.pack(">II", 72, 1)),
        0x011B: (rational, struct.pack(">II", 72, 1)),
        0x0128: (short, struct.pack(">H", 2)),
        0x0213: (short, struct.pack(">H", 1)),
        0x8769: (long_, bytes(4)),  # the Exif IFD's offset, filled in below
    }
    exif = {
        0x9000: (undefined, b"0232"),
        0x9003: (ascii_, b"2024:07:01 12:00:00\0"),
        0x9101: (undefined, b"\1\2\3\0"),
        0x927C: (undefined, maker_note),
        0xA000: (undefined, b"0100"),
        0xA001: (short, struct.pack(">H", 1)),
        0xA002: (long_, struct.pack(">I", 64)),
        0xA003: (long_, struct.pack(">I", 48)),
    }
    sizes = {ascii_: 1, short: 2, long_: 4, rational: 8, undefined: 1}

    def directory(entries: dict[int, tuple[int, bytes]], start: int) -> bytes:
        head, extra = struct.pack(">H", len(entries)), b""
        extra_at = start + 2 + 12 * len(entries) + 4
        for tag in sorted(entries):
            kind, data = entries[tag]
            value = data.ljust(4, b"\0")
            if len(data) > 4:
                value = struct.pack(">I", extra_at + len(extra))
                extra += data + b"\0" * (len(data) % 2)
            head += struct.pack(">HHI", tag, kind, len(data) // sizes[kind]) + value
        return head + bytes(4) + extra

    first = directory(ifd0, 8)
    ifd0[0x8769] = (long_, struct.pack(">I", 8 + len(first)))
    first = directory(ifd0, 8)
    return b"Exif\0\0MM\0*" + struct.pack(">I", 8) + first + directory(exif, 8 + len(first))


def picture() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def reader() -> Iterator[Any]:
    """exiftool as a user runs it, to read files back (and to write the person's tags)."""
    import exiftool

    with exiftool.ExifToolHelper(common_args=[]) as helper:
        yield helper


def read(reader: Any, path: Path, *options: str) -> dict[str, Any]:
    """``exiftool -j -G1 [options] path``"""
    return dict(reader.execute_json("-G1", *options, str(path))[0])


def dump(reader: Any, path: Path) -> dict[str, Any]:
    """Every tag exiftool finds, duplicates and binary values included."""
    return read(reader, path, "-a", "-b")


@pytest.fixture(scope="module")
def originals(tmp_path_factory: pytest.TempPathFactory, reader: Any) -> dict[str, Path]:
    """One photo of each format with a person's metadata, made once."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    folder = tmp_path_factory.mktemp("originals")
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    image = picture()
    image.save(folder / "photo.jpg", "JPEG", exif=exif_block(), icc_profile=icc, quality=90)
    image.save(folder / "photo.tif", icc_profile=icc)
    image.save(folder / "photo.heic", format="HEIF", quality=80)
    image.save(folder / "photo.png")
    image.save(folder / "photo.webp", quality=80)
    write_dng(folder / "photo.dng", scene(), preview=jpeg((64, 48)))
    person = ["-XMP-dc:Title=A day at the sea", "-XMP-xmp:Rating=3"]
    person += [f"-XMP-dc:Subject={keyword}" for keyword in PERSON]
    for fmt in FORMATS:
        iptc = [f"-IPTC:Keywords={k}" for k in PERSON] + ["-IPTC:City=Paris"]
        extra = iptc if fmt in WITH_IPTC else []
        extra += ["-Make=mkt-tag", "-DateTimeOriginal=2024:07:01 12:00:00"] if fmt != "jpg" else []
        reader.execute("-overwrite_original", *person, *extra, str(folder / f"photo.{fmt}"))
    return {fmt: folder / f"photo.{fmt}" for fmt in FORMATS}


@pytest.fixture
def photo(originals: dict[str, Path], tmp_path: Path) -> Any:
    def make(fmt: str = "jpg", name: str = "photo") -> Path:
        path = tmp_path / f"{name}.{fmt}"
        shutil.copyfile(originals[fmt], path)
        return path

    return make


@pytest.fixture(scope="module")
def embedded() -> Iterator[EmbeddedMetadata]:
    with EmbeddedMetadata() as metadata:
        yield metadata


def pixels(path: Path) -> bytes:
    """What the picture looks like: decoded pixels, and for a JPEG its compressed scan
    itself; for a DNG the sensor data and the preview exactly as stored."""
    data = path.read_bytes()
    if path.suffix == ".dng":
        mosaic, preview = bayer(scene()), jpeg((64, 48))
        assert mosaic in data and preview in data
        return mosaic + preview
    decoded = np.asarray(Image.open(path).convert("RGB")).tobytes()
    return decoded + (jpeg_scan(data) if path.suffix == ".jpg" else b"")


def jpeg_scan(data: bytes) -> bytes:
    """A JPEG from its start-of-scan marker on: the entropy-coded picture."""
    at = 2
    while data[at : at + 2] != b"\xff\xda":
        at += 2 + int.from_bytes(data[at + 2 : at + 4], "big")
    return data[at:]


def changed(before: dict[str, Any], after: dict[str, Any]) -> set[str]:
    return {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}


def others(keys: set[str]) -> set[str]:
    """Keys that are neither keywords, mkt-tag's record, nor bookkeeping."""
    return {
        key
        for key in keys - KEYWORD_TAGS - BOOKKEEPING
        if not key.startswith(("XMP-mkttag:", "System:File"))
    }


def folder_names(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


# --- what is written where ---------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_keywords_go_where_photo_managers_read_them(
    fmt: str, photo: Any, embedded: EmbeddedMetadata, reader: Any
) -> None:
    path = photo(fmt)
    assert embedded.state(path, RUN) == NEW
    change = embedded.write(path, TAGS, RUN)
    found = read(reader, path)
    assert found["XMP-dc:Subject"] == [*PERSON, "animal", "dog", "beach"]
    assert found["XMP-lr:HierarchicalSubject"] == [*PERSON, "animal|dog", "beach"]
    assert found["XMP-digiKam:TagsList"] == [*PERSON, "animal/dog", "beach"]
    if fmt in WITH_IPTC:
        assert found["IPTC:Keywords"] == [*PERSON, "animal", "dog", "beach"]
        assert found["IPTC:CodedCharacterSet"] == "UTF8"
        assert change.added[IPTC_KEYWORDS] == ["animal", "dog", "beach"]
    else:
        assert "IPTC:Keywords" not in found and IPTC_KEYWORDS not in change.added
    assert found["XMP-mkttag:Run"] == RUN.fingerprint
    assert change.labels == ["animal/dog", "beach"] and change.warnings == []
    assert change.added[TAGS_LIST] == [*PERSON, "animal/dog", "beach"]  # copies, then tags
    assert embedded.state(path, RUN) == CURRENT


@pytest.mark.parametrize("fmt", FORMATS)
def test_nothing_else_in_the_file_changes(
    fmt: str, photo: Any, embedded: EmbeddedMetadata, reader: Any
) -> None:
    path = photo(fmt)
    before, picture_before = dump(reader, path), pixels(path)
    embedded.write(path, TAGS, RUN)
    after = dump(reader, path)
    assert others(changed(before, after)) == set()
    assert after["System:FilePermissions"] == before["System:FilePermissions"]
    assert pixels(path) == picture_before
    if fmt == "jpg":  # EXIF, maker notes and ICC profile were there to be kept
        assert after["Canon:CanonModelID"] == "EOS 5D"
        assert after["ICC_Profile:ProfileDescription"] == "sRGB built-in"
        assert after["ExifIFD:DateTimeOriginal"] == "2024:07:01 12:00:00"
    assert after["XMP-dc:Title"] == "A day at the sea" and after["XMP-xmp:Rating"] == 3


@pytest.mark.parametrize("fmt", ["jpg", "tif", "dng"])
def test_exiftool_validates_the_written_file(
    fmt: str, photo: Any, embedded: EmbeddedMetadata, reader: Any
) -> None:
    path = photo(fmt)
    before = read(reader, path, "-validate", "-warning", "-a")
    embedded.write(path, [*TAGS, Tag("Köln", 0.5)], RUN)
    after = read(reader, path, "-validate", "-warning", "-a")
    assert after == {**before, "SourceFile": after["SourceFile"]}
    if fmt == "jpg":
        assert after["ExifTool:Validate"] == "OK"


@pytest.mark.parametrize("fmt", ["jpg", "heic"])
def test_a_persons_keywords_survive_retagging_and_untagging(
    fmt: str, photo: Any, embedded: EmbeddedMetadata, reader: Any
) -> None:
    path = photo(fmt)
    original = dump(reader, path)
    embedded.write(path, TAGS, RUN)
    change = embedded.write(path, [Tag("cat", 0.8)], OTHER_RUN)
    assert change.removed[SUBJECT] == ["animal", "dog", "beach"]
    assert change.added == {field: ["cat"] for field in change.added}
    found = read(reader, path)
    assert found["XMP-dc:Subject"] == [*PERSON, "cat"]
    assert found["XMP-digiKam:TagsList"] == [*PERSON, "cat"]
    assert found.get("IPTC:Keywords") == ([*PERSON, "cat"] if fmt == "jpg" else None)
    assert embedded.state(path, RUN) == STALE and embedded.state(path, OTHER_RUN) == CURRENT

    removed = embedded.remove(path)
    assert removed is not None and removed.labels == ["cat"]
    assert removed.removed[HIERARCHICAL] == [*PERSON, "cat"]  # copies in a field of its own
    after = dump(reader, path)
    assert others(changed(original, after)) == set()
    assert {key: after.get(key) for key in KEYWORD_TAGS} == {
        key: original.get(key) for key in KEYWORD_TAGS
    }
    assert not any(key.startswith("XMP-mkttag:") for key in after)
    assert embedded.state(path, RUN) == NEW
    assert embedded.remove(path) is None


@pytest.mark.parametrize("fmt", ["tif", "dng", "png", "webp"])
def test_untagging_leaves_the_metadata_as_it_was(
    fmt: str, photo: Any, embedded: EmbeddedMetadata, reader: Any
) -> None:
    path = photo(fmt)
    original = dump(reader, path)
    embedded.write(path, TAGS, RUN)
    assert embedded.remove(path) is not None
    after = dump(reader, path)
    assert changed(original, after) - BOOKKEEPING <= {
        key for key in after if key.startswith("System:File")
    }
    assert pixels(path) == pixels(photo(fmt, "again"))


def test_an_xmp_packet_only_mkt_tag_wrote_is_removed(
    tmp_path: Path, embedded: EmbeddedMetadata, reader: Any
) -> None:
    path = tmp_path / "bare.jpg"
    picture().save(path, quality=90)
    embedded.write(path, TAGS, RUN)
    embedded.remove(path)
    found = read(reader, path)
    assert not any(key.startswith("XMP") for key in found)
    assert "IPTC:Keywords" not in found


def test_keep_adds_to_the_tags_of_the_last_run(photo: Any, embedded: EmbeddedMetadata) -> None:
    path = photo()
    embedded.write(path, TAGS, RUN)
    change = embedded.write(path, [Tag("cat", 0.95)], OTHER_RUN, keep=True)
    assert change.labels == ["cat", "animal/dog", "beach"]
    assert change.removed == {}


def test_a_tag_root_goes_into_the_hierarchical_fields_only(
    photo: Any, embedded: EmbeddedMetadata, reader: Any
) -> None:
    path = photo()
    embedded.write(path, TAGS, RUN, tag_root="auto")
    found = read(reader, path)
    assert found["XMP-lr:HierarchicalSubject"] == [*PERSON, "auto|animal|dog", "auto|beach"]
    assert found["IPTC:Keywords"] == [*PERSON, "animal", "dog", "beach"]
    assert embedded.state(path, RUN, tag_root="auto") == CURRENT
    assert embedded.state(path, RUN) == STALE


# --- state and dry runs ------------------------------------------------------------------


def test_states_of_many_files_in_one_call(photo: Any, embedded: EmbeddedMetadata) -> None:
    done, other, png = photo("jpg", "done"), photo("jpg", "other"), photo("png", "done")
    embedded.write(done, TAGS, RUN)
    embedded.write(png, TAGS, RUN)
    embedded.write(other, TAGS, OTHER_RUN)
    images = [done, photo("jpg", "new"), other, png, done.with_name("missing.jpg")]
    assert embedded.states(images, RUN) == [CURRENT, NEW, STALE, CURRENT, STALE]


def test_a_jpegs_packet_is_read_as_exiftool_reads_it(
    photo: Any, embedded: EmbeddedMetadata, reader: Any, tmp_path: Path
) -> None:
    bare, person, ours = tmp_path / "bare.jpg", photo("jpg", "person"), photo("jpg", "ours")
    picture().save(bare)
    embedded.write(ours, TAGS, RUN)
    for path in (bare, person, ours):
        found = _jpeg_xmp(path)
        assert found is not None and found.file_type == "JPEG"
        packet = reader.execute("-XMP:XMP", "-b", str(path), raw_bytes=True)
        assert found.xmp == (packet or None)
    reader.execute("-overwrite_original", f"-XMP-dc:Description={'z' * 70_000}", str(person))
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(ours.read_bytes()[:300])
    assert _jpeg_xmp(person) is None and _jpeg_xmp(cut) is None  # exiftool reads those
    assert embedded.states([person, cut, ours], RUN) == [NEW, NEW, CURRENT]


def test_a_dry_run_changes_nothing(photo: Any, embedded: EmbeddedMetadata) -> None:
    path = photo()
    before, mtime = path.read_bytes(), path.stat().st_mtime_ns
    dry = embedded.write(path, TAGS, RUN, dry_run=True)
    assert path.read_bytes() == before and path.stat().st_mtime_ns == mtime
    assert embedded.write(path, TAGS, RUN).added == dry.added
    written = path.read_bytes()
    removal = embedded.remove(path, dry_run=True)
    assert removal is not None and removal.removed[SUBJECT] == ["animal", "dog", "beach"]
    assert path.read_bytes() == written
    assert folder_names(path) == ["photo.jpg"]


# --- IPTC's limits and character sets ----------------------------------------------------


def test_a_keyword_too_long_for_iptc_is_left_out_with_a_warning(
    photo: Any, embedded: EmbeddedMetadata, reader: Any
) -> None:
    path = photo()
    long_label = "a very long label " * 4  # 72 bytes
    change = embedded.write(path, [Tag(long_label.strip(), 0.9)], RUN)
    found = read(reader, path)
    assert found["IPTC:Keywords"] == PERSON
    assert long_label.strip() in found["XMP-dc:Subject"]
    assert "over IPTC's 64 bytes" in change.warnings[0]
    assert IPTC_KEYWORDS not in change.added


def test_a_persons_long_iptc_keyword_is_kept_whole(
    photo: Any, embedded: EmbeddedMetadata, reader: Any
) -> None:
    path = photo()
    theirs = "x" * 70
    reader.execute("-overwrite_original", "-m", f"-IPTC:Keywords+={theirs}", str(path))
    embedded.write(path, TAGS, RUN)
    assert read(reader, path)["IPTC:Keywords"] == [*PERSON, theirs, "animal", "dog", "beach"]


def test_keywords_that_look_like_numbers_stay_as_they_are(
    photo: Any, embedded: EmbeddedMetadata, reader: Any
) -> None:
    path = photo()
    odd = ["1.50", "007", "true", "1e3"]
    reader.execute("-overwrite_original", *[f"-IPTC:Keywords+={k}" for k in odd], str(path))
    embedded.write(path, TAGS, RUN)
    embedded.remove(path)
    found = reader.execute("-IPTC:Keywords", "-b", "-sep", ";;", str(path))
    assert found.split(";;") == [*PERSON, *odd]


def test_utf8_keywords_round_trip(photo: Any, embedded: EmbeddedMetadata, reader: Any) -> None:
    path = photo()
    embedded.write(path, [Tag("Köln", 0.9), Tag("日本/東京", 0.8)], RUN)
    found = read(reader, path)
    assert found["IPTC:Keywords"] == [*PERSON, "Köln", "日本", "東京"]
    assert found["IPTC:CodedCharacterSet"] == "UTF8"
    assert found["XMP-lr:HierarchicalSubject"][-1] == "日本|東京"


def test_a_legacy_latin_iptc_stays_latin(
    photo: Any, embedded: EmbeddedMetadata, reader: Any
) -> None:
    path = photo()
    # Latin-1 text without a CodedCharacterSet, as older programs wrote it
    reader.execute("-overwrite_original", "-IPTC:City=Zürich", str(path))
    before = read(reader, path, "-IPTC:all", "-b")
    change = embedded.write(path, [Tag("Köln", 0.9), Tag("東京", 0.8)], RUN)
    after = read(reader, path, "-IPTC:all", "-b")
    assert after["IPTC:City"] == before["IPTC:City"] == "Zürich"
    assert "IPTC:CodedCharacterSet" not in after
    assert after["IPTC:Keywords"] == [*PERSON, "Köln"]
    assert change.warnings == ["IPTC:Keywords: left out '東京' (not in the file's Latin-1)"]
    assert "東京" in read(reader, path)["XMP-dc:Subject"]


@pytest.mark.parametrize("in_sync", [True, False])
def test_a_photoshop_iptc_digest_is_kept_current_only_if_it_was(
    photo: Any, embedded: EmbeddedMetadata, reader: Any, in_sync: bool
) -> None:
    path = photo()
    digest = "new" if in_sync else "0123456789abcdef0123456789abcdef"
    reader.execute("-overwrite_original", f"-Photoshop:IPTCDigest={digest}", str(path))
    before = read(reader, path, "-Photoshop:IPTCDigest")["Photoshop:IPTCDigest"]
    embedded.write(path, TAGS, RUN)
    after = read(reader, path, "-Photoshop:IPTCDigest", "-File:CurrentIPTCDigest")
    if in_sync:  # Lightroom and Photoshop (MWG) trust the XMP only while they match
        assert after["Photoshop:IPTCDigest"] == after["File:CurrentIPTCDigest"] != before
    else:
        assert after["Photoshop:IPTCDigest"] == before != after["File:CurrentIPTCDigest"]


# --- atomic, and errors a user can cause -------------------------------------------------


def test_exiftool_failing_leaves_the_original_untouched(
    photo: Any, embedded: EmbeddedMetadata, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = photo()
    before = path.read_bytes()
    real = embedded.exiftool._execute

    def fails_after_writing(*args: Any) -> tuple[int, str, str]:
        status, out, err = real(*args)
        if "-o" in args:  # it wrote the new file, then says it failed
            assert any(name.endswith(".tmp") for name in folder_names(path))
            return 1, out, f"Error: Something broke - {args[-1]}\n"
        return status, out, err

    monkeypatch.setattr(embedded.exiftool, "_execute", fails_after_writing)
    with pytest.raises(OutputError) as caught:
        embedded.write(path, TAGS, RUN)
    assert str(caught.value) == f"{path}: cannot embed keywords (Something broke)"
    assert path.read_bytes() == before
    assert folder_names(path) == ["photo.jpg"]


def test_a_value_exiftool_rejects_is_an_error_not_a_silent_copy(
    photo: Any, embedded: EmbeddedMetadata, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = photo()
    before = path.read_bytes()
    # exiftool refuses a packet that opens with an XML declaration, but only warns
    monkeypatch.setattr(exiftool_process, "_PACKET", '<?xml version="1.0"?>\n{}')
    with pytest.raises(OutputError) as caught:
        embedded.write(path, TAGS, RUN)
    assert str(caught.value) == f"{path}: cannot embed keywords (Invalid XMP data for XMP:XMP)"
    assert path.read_bytes() == before and folder_names(path) == ["photo.jpg"]


def test_an_interruption_before_the_rename_leaves_the_original(
    photo: Any, embedded: EmbeddedMetadata, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = photo()
    before = path.read_bytes()

    def interrupted(*_: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        embedded.write(path, TAGS, RUN)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert folder_names(path) == ["photo.jpg"]
    embedded.write(path, TAGS, RUN)  # exiftool is still in step
    assert embedded.state(path, RUN) == CURRENT


def test_a_read_only_file_is_refused(
    photo: Any, embedded: EmbeddedMetadata, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = photo()
    path.chmod(0o444)
    before = path.read_bytes()
    if getattr(os, "geteuid", lambda: -1)() == 0:  # root may write anything: pretend not
        monkeypatch.setattr(os, "access", lambda *_, **__: False)
    with pytest.raises(OutputError, match="read-only file"):
        embedded.write(path, TAGS, RUN)
    assert path.read_bytes() == before
    assert embedded.write(path, TAGS, RUN, dry_run=True).changed  # reading still works


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
def test_a_read_only_folder_fails_cleanly(photo: Any, embedded: EmbeddedMetadata) -> None:
    path = photo()
    before = path.read_bytes()
    path.parent.chmod(0o555)
    try:
        with pytest.raises(OutputError, match=re.escape(f"{path}: cannot embed keywords")):
            embedded.write(path, TAGS, RUN)
    finally:
        path.parent.chmod(0o755)
    assert path.read_bytes() == before and folder_names(path) == ["photo.jpg"]


def test_permissions_kept_new_mtime_and_links_stay_links(
    photo: Any, embedded: EmbeddedMetadata
) -> None:
    path = photo()
    path.chmod(0o640)
    old = path.stat().st_mtime_ns - 10**9
    os.utime(path, ns=(old, old))
    link = path.with_name("link.jpg")
    link.symlink_to(path.name)
    embedded.write(link, TAGS, RUN)
    assert link.is_symlink() and embedded.state(path, RUN) == CURRENT
    assert (path.stat().st_mode & 0o777) == 0o640
    assert path.stat().st_mtime_ns > old
    hard = path.with_name("hard.jpg")
    os.link(path, hard)
    with pytest.raises(OutputError, match="other hard links"):
        embedded.write(path, TAGS, OTHER_RUN)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("photo.cr2", "camera raw files keep their keywords in a sidecar (--sidecar xmp)"),
        ("photo.NEF", "camera raw files keep their keywords in a sidecar (--sidecar xmp)"),
        ("photo.gif", "keywords can be embedded only in JPEG, TIFF, HEIC, DNG, PNG or WebP"),
    ],
)
def test_formats_mkt_tag_does_not_write_into(
    tmp_path: Path, embedded: EmbeddedMetadata, name: str, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(b"not read")
    assert message in (embed_refusal(path) or "")
    with pytest.raises(OutputError, match=re.escape(f"{path}: {message}")):
        embedded.write(path, TAGS, RUN)
    assert embedded.remove(path) is None
    assert embed_refusal(tmp_path / "photo.HEIC") is None


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"hello", "cannot embed keywords in a TXT file"),
        (b"", "cannot read its metadata (File is empty)"),
        ("cut", "cannot embed keywords (Corrupted JPEG image)"),
    ],
)
def test_a_damaged_file_is_one_line_and_left_alone(
    photo: Any, embedded: EmbeddedMetadata, content: Any, reason: str
) -> None:
    path = photo()
    data = path.read_bytes()[:1500] if content == "cut" else content  # cut inside the XMP
    path.write_bytes(data)
    with pytest.raises(OutputError) as caught:
        embedded.write(path, TAGS, RUN)
    assert str(caught.value) == f"{path}: {reason}"
    assert path.read_bytes() == data and folder_names(path) == ["photo.jpg"]


def test_a_jpeg_with_extended_xmp_is_refused(
    photo: Any, embedded: EmbeddedMetadata, reader: Any
) -> None:
    path = photo()
    big = [f"-XMP-dc:Description=depth map {'z' * 70_000}"]
    reader.execute("-overwrite_original", *big, str(path))
    before = path.read_bytes()
    with pytest.raises(OutputError, match="XMP continues in extended segments"):
        embedded.write(path, TAGS, RUN)
    assert path.read_bytes() == before


def test_damaged_xmp_inside_is_one_line(
    photo: Any, embedded: EmbeddedMetadata, tmp_path: Path, reader: Any
) -> None:
    path = photo()
    packet = tmp_path / "bad.xmp"
    packet.write_text(
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/'
        '02/22-rdf-syntax-ns#"><rdf:Description xmlns:mkttag="http://ns.mkt-tag.org/xmp/1.0/">'
        "<mkttag:Version>1</mkttag:Version></rdf:Description></rdf:RDF></x:xmpmeta>"
    )
    reader.execute("-overwrite_original", f"-XMP<={packet}", str(path))
    with pytest.raises(OutputError, match=r"cannot update the XMP inside it \(mkt-tag's record"):
        embedded.write(path, TAGS, RUN)
    assert embedded.state(path, RUN) == STALE


def test_missing_exiftool_or_pyexiftool_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(MktTagError) as caught:
        EmbeddedMetadata("no-such-exiftool").__enter__()
    assert "exiftool, which was not found" in str(caught.value)
    assert "apt install libimage-exiftool-perl" in str(caught.value)
    monkeypatch.setitem(sys.modules, "exiftool", None)  # import exiftool raises ImportError
    with pytest.raises(MktTagError, match=r"needs PyExifTool: pip install 'mkt-tag\[embed\]'"):
        EmbeddedMetadata().state(Path("photo.jpg"), RUN)


def test_the_module_stays_torch_free() -> None:
    code = "import sys, mkt_tag.embedded; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
    assert embedded_module.IPTC_KEYWORD_BYTES == 64


# --- a kill at any moment ----------------------------------------------------------------

_WRITER = """
import sys
from pathlib import Path
from mkt_tag.embedded import EmbeddedMetadata
from mkt_tag.records import RunIdentity
from mkt_tag.results import Tag
runs = [RunIdentity("m", "f", "v", str(n)) for n in range(2)]
with EmbeddedMetadata() as embedded:
    print("ready", flush=True)
    for n in range(10_000):
        embedded.write(Path(sys.argv[1]), [Tag(f"tag {n}", 0.5)], runs[n % 2])
"""


@pytest.mark.slow
def test_a_kill_leaves_the_old_file_or_the_new_one(
    photo: Any, embedded: EmbeddedMetadata, reader: Any
) -> None:
    path = photo()
    picture_before = pixels(path)
    for delay in (0.05, 0.13, 0.31, 0.47, 0.72):
        writer = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True
        )
        assert writer.stdout is not None and writer.stdout.readline() == "ready\n"
        time.sleep(delay)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        assert pixels(path) == picture_before
        found = read(reader, path)
        assert found["IPTC:Keywords"][:2] == PERSON
        record = found.get("XMP-mkttag:TagsLabel")
        assert record is None or found["XMP-dc:Subject"][-1] == record
        for name in folder_names(path):  # the killed writer's temporary, if any
            if name != "photo.jpg":
                (path.parent / name).unlink()
        Image.open(io.BytesIO(path.read_bytes())).load()
