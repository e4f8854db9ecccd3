"""Sidecars: txt/json/XMP per image, merging, metadata kept, unsafe XML refused."""

from __future__ import annotations

import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from mkt_tag import sidecar_paths
from mkt_tag.errors import InputFileError, OutputError
from mkt_tag.records import RECORD_NAMESPACE
from mkt_tag.results import Tag
from mkt_tag.sidecar_paths import sidecar_collisions, sidecar_path
from mkt_tag.sidecars import read_sidecar_tags, write_sidecar

RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
DC = "http://purl.org/dc/elements/1.1/"
TAGS = [Tag("dog", 0.9), Tag("beach", 0.4)]


def test_sidecar_names(tmp_path: Path) -> None:
    image = tmp_path / "photo.jpg"
    assert sidecar_path(image, "xmp") == tmp_path / "photo.jpg.xmp"
    assert sidecar_path(image, "txt", "stem") == tmp_path / "photo.txt"
    with pytest.raises(ValueError, match="format"):
        sidecar_path(image, "yaml")
    with pytest.raises(ValueError, match="naming"):
        sidecar_path(image, "xmp", "short")


def test_txt_sidecar_and_merge(tmp_path: Path) -> None:
    image = tmp_path / "photo.jpg"
    path = write_sidecar(image, TAGS, "txt")
    assert path.read_text() == "dog, beach\n"
    path.write_text("sunset, dog\n")
    write_sidecar(image, [Tag("cat", 0.8), Tag("dog", 0.7)], "txt", keep=True)
    assert path.read_text() == "sunset, dog, cat\n"
    assert read_sidecar_tags(path, "txt") == ["sunset", "dog", "cat"]
    write_sidecar(image, [Tag("cat", 0.8)], "txt")
    assert read_sidecar_tags(path, "txt") == ["cat"]


def test_json_sidecar_keeps_the_persons_labels(tmp_path: Path) -> None:
    image = tmp_path / "photo.png"
    path = write_sidecar(image, TAGS, "json", naming="stem")
    assert path == tmp_path / "photo.json"
    document = json.loads(path.read_text())
    assert document["tags"] == [{"label": "dog", "score": 0.9}, {"label": "beach", "score": 0.4}]
    assert document["mkt-tag"]["added"] == ["dog", "beach"]
    existing = {
        "tags": [{"label": "beach", "score": 0.2}, {"label": "sea", "score": 0.6}, "mine"],
        "note": "x",
    }
    path.write_text(json.dumps(existing))  # written by someone else: every label is theirs
    write_sidecar(image, [Tag("beach", 0.5), Tag("cat", 0.3)], "json", naming="stem")
    merged = json.loads(path.read_text())
    assert merged["tags"] == [
        {"label": "beach", "score": 0.2},  # theirs, as they wrote it
        {"label": "sea", "score": 0.6},
        "mine",
        {"label": "cat", "score": 0.3},  # mkt-tag's
    ]
    assert merged["note"] == "x"
    assert merged["mkt-tag"]["added"] == ["cat"]
    assert read_sidecar_tags(path, "json") == ["beach", "sea", "mine", "cat"]
    write_sidecar(image, [Tag("dog", 0.7)], "json", naming="stem")  # cat was mkt-tag's
    assert read_sidecar_tags(path, "json") == ["beach", "sea", "mine", "dog"]


def test_json_sidecar_of_mkt_tag_0_2_is_mkt_tags(tmp_path: Path) -> None:
    """0.2 wrote no record, only "source": the labels with a score were its own."""
    path = tmp_path / "photo.jpg.json"
    old = {"tags": [{"label": "mine"}, {"label": "dog", "score": 0.9}], "source": "mkt-tag"}
    path.write_text(json.dumps(old))
    write_sidecar(tmp_path / "photo.jpg", [Tag("cat", 0.8)], "json")
    document = json.loads(path.read_text())
    assert document["tags"] == [{"label": "mine"}, {"label": "cat", "score": 0.8}]
    assert "source" not in document


def test_malformed_json_sidecar_is_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg.json"
    path.write_text("{oops")
    with pytest.raises(OutputError, match=r"photo\.jpg\.json: cannot update"):
        write_sidecar(tmp_path / "photo.jpg", TAGS, "json", keep=True)
    assert path.read_text() == "{oops"


def subjects(path: Path) -> list[str]:
    root = ET.parse(path).getroot()
    return [
        item.text or ""
        for item in root.iter(f"{{{DC}}}subject")
        for item in item.iter(f"{{{RDF}}}li")
    ]


def exiftool(*args: str) -> dict[str, object]:
    if shutil.which("exiftool") is None:
        pytest.fail(
            "exiftool is required by the XMP tests: install it "
            "(apt install libimage-exiftool-perl, brew install exiftool)"
        )
    output = subprocess.run(["exiftool", "-j", *args], check=True, capture_output=True, text=True)
    record: dict[str, object] = json.loads(output.stdout)[0]
    return record


def test_new_xmp_sidecar(tmp_path: Path) -> None:
    path = write_sidecar(tmp_path / "photo.jpg", [*TAGS, Tag("café", 0.1)], "xmp")
    assert path == tmp_path / "photo.jpg.xmp"
    assert subjects(path) == ["dog", "beach", "café"]
    assert read_sidecar_tags(path, "xmp") == ["dog", "beach", "café"]
    text = path.read_text(encoding="utf-8")
    assert "<dc:subject>" in text and "<rdf:Bag>" in text and "x:xmpmeta" in text
    assert exiftool("-XMP-dc:Subject", str(path))["Subject"] == ["dog", "beach", "café"]


DARKTABLE_XMP = """<?xml version="1.0" encoding="UTF-8"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:darktable="http://darktable.sf.net/"
    xmp:Rating="4"
    darktable:xmp_version="5">
   <darktable:history>
    <rdf:Seq>
     <rdf:li darktable:operation="exposure" darktable:enabled="1" darktable:params="0000"/>
    </rdf:Seq>
   </darktable:history>
   <dc:subject>
    <rdf:Bag>
     <rdf:li>holiday</rdf:li>
     <rdf:li>dog</rdf:li>
    </rdf:Bag>
   </dc:subject>
   <dc:title><rdf:Alt><rdf:li xml:lang="x-default">At the beach</rdf:li></rdf:Alt></dc:title>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"""


def test_xmp_merge_preserves_all_other_metadata(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg.xmp"
    path.write_text(DARKTABLE_XMP)
    write_sidecar(tmp_path / "photo.jpg", TAGS, "xmp")
    assert subjects(path) == ["holiday", "dog", "beach"]
    text = path.read_text(encoding="utf-8")
    for kept in ['xmp:Rating="4"', 'darktable:xmp_version="5"', "<darktable:history>",
                 'darktable:operation="exposure"', 'x:xmptk="XMP Core 4.4.0-Exiv2"',
                 'xml:lang="x-default">At the beach<']:  # fmt: skip
        assert kept in text
    metadata = exiftool("-XMP:all", str(path))
    assert metadata["Rating"] == 4
    assert metadata["Subject"] == ["holiday", "dog", "beach"]
    assert metadata["Title"] == "At the beach"
    assert metadata["HistoryOperation"] == "exposure"


def test_xmp_retag_replaces_only_mkt_tags_keywords(tmp_path: Path) -> None:
    path = tmp_path / "photo.xmp"
    path.write_text(DARKTABLE_XMP)
    write_sidecar(tmp_path / "photo.jpg", [Tag("cat", 0.9)], "xmp", naming="stem")
    assert subjects(path) == ["holiday", "dog", "cat"]
    write_sidecar(tmp_path / "photo.jpg", [Tag("dog", 0.9), Tag("sea", 0.5)], "xmp", naming="stem")
    assert subjects(path) == ["holiday", "dog", "sea"]  # cat was mkt-tag's; dog is theirs
    assert 'xmp:Rating="4"' in path.read_text() and "<darktable:history>" in path.read_text()


def test_xmp_without_keywords_gets_them_in_its_description(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg.xmp"
    path.write_text(
        DARKTABLE_XMP.replace("<dc:subject>", "<dc:ignored>").replace(
            "</dc:subject>", "</dc:ignored>"
        )
    )
    write_sidecar(tmp_path / "photo.jpg", TAGS, "xmp")
    root = ET.parse(path).getroot()
    descriptions = root.findall(f".//{{{RDF}}}Description")
    assert len(descriptions) == 2  # darktable's, and mkt-tag's record
    assert descriptions[0].find(f"{{{DC}}}subject") is not None
    assert descriptions[1].find(f"{{{RECORD_NAMESPACE}}}Run") is not None
    assert subjects(path) == ["dog", "beach"]


def test_malformed_xmp_is_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg.xmp"
    path.write_text("<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF>")
    with pytest.raises(OutputError, match=r"photo\.jpg\.xmp: cannot update .*not well-formed"):
        write_sidecar(tmp_path / "photo.jpg", TAGS, "xmp")
    assert path.read_text() == "<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF>"
    with pytest.raises(InputFileError, match="malformed xmp sidecar"):
        read_sidecar_tags(path, "xmp")


def test_xmp_without_rdf_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg.xmp"
    path.write_text("<notes>hello</notes>")
    with pytest.raises(OutputError, match="no rdf:RDF"):
        write_sidecar(tmp_path / "photo.jpg", TAGS, "xmp")


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/">
<dc:subject><rdf:Bag><rdf:li>&lol3;</rdf:li></rdf:Bag></dc:subject>
</rdf:Description></rdf:RDF></x:xmpmeta>
"""


@pytest.mark.parametrize(
    "document",
    [
        BILLION_LAUGHS,
        '<!DOCTYPE x SYSTEM "http://example.com/x.dtd"><x:xmpmeta xmlns:x="adobe:ns:meta/"/>',
    ],
    ids=["entities", "external-dtd"],
)
def test_xmp_with_doctype_is_refused(tmp_path: Path, document: str) -> None:
    path = tmp_path / "photo.jpg.xmp"
    path.write_text(document)
    with pytest.raises(OutputError, match="DOCTYPE"):
        write_sidecar(tmp_path / "photo.jpg", TAGS, "xmp", keep=True)
    assert path.read_text() == document
    with pytest.raises(InputFileError, match="DOCTYPE"):
        read_sidecar_tags(path, "xmp")


def test_read_missing_sidecar(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="file not found"):
        read_sidecar_tags(tmp_path / "nope.txt", "txt")


# --- sidecars two images would share ----------------------------------------------------


def touch(*paths: Path) -> None:
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def test_stem_naming_collisions_name_every_image_involved(tmp_path: Path) -> None:
    a_jpg, a_jpeg, b_png, c_jpg, c_png = (
        tmp_path / name for name in ["a.jpg", "a.jpeg", "b.png", "c.jpg", "c.png"]
    )
    touch(a_jpg, a_jpeg, b_png, c_jpg, c_png, tmp_path / "b.txt", tmp_path / ".c.gif")
    # c.png is not in the run, but a folder scan would tag it and write c.xmp too.
    collisions = sidecar_collisions([a_jpeg, a_jpg, b_png, c_jpg], "xmp", "stem")
    assert collisions == {a_jpeg: [a_jpg], a_jpg: [a_jpeg], c_jpg: [c_png]}
    assert sidecar_collisions([a_jpeg, a_jpg, b_png, c_jpg], "xmp", "full") == {}


def test_one_image_spelled_twice_does_not_collide_with_itself(tmp_path: Path) -> None:
    touch(tmp_path / "photos" / "a.jpg")
    (tmp_path / "link").symlink_to(tmp_path / "photos")
    images = [tmp_path / "photos" / "a.jpg", tmp_path / "link" / "a.jpg"]
    assert sidecar_collisions(images, "txt", "stem") == {}


def test_stem_collisions_ignore_case_where_the_folder_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    touch(tmp_path / "Photo.jpg", tmp_path / "photo.png")
    images = [tmp_path / "Photo.jpg", tmp_path / "photo.png"]
    assert sidecar_collisions(images, "xmp", "stem") == {}  # this folder tells case apart
    monkeypatch.setattr(sidecar_paths, "_ignores_case", lambda folder, sample: True)
    assert sidecar_collisions(images, "xmp", "stem") == {
        images[0]: [images[1]],
        images[1]: [images[0]],
    }
