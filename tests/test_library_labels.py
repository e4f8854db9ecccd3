"""A photo library's keywords as data: where they are read, how they name vocabulary labels,
which photos count, mkt-tag's own tags left out; then `mkt-tag eval` and `train` on it."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin
from typer.testing import CliRunner

from mkt_tag import datasets as data
from mkt_tag import library_labels as library
from mkt_tag.cli import app
from mkt_tag.keywords import HIERARCHICAL, IPTC_KEYWORDS, SUBJECT, TAGS_LIST, Ownership, add_tags
from mkt_tag.library_labels import LabelMatcher, embedded_keywords, photo_labels
from mkt_tag.records import Record, RunIdentity
from mkt_tag.results import Tag
from mkt_tag.sidecars import write_sidecar
from mkt_tag.vocab import Entry, read_labels
from mkt_tag.xmp import XmpDocument
from tests.conftest import TINY_CONFIG, make_photo

FIXTURES = Path(__file__).parent / "data" / "library"
VOCABULARY = [
    Entry("dog", aliases=["puppy"]),
    Entry("animal/cat", aliases=["kitty"]),
    Entry("holiday", aliases=["vacation"]),
    Entry("Paris"),
    Entry("France"),
    Entry("toy/bear"),
    Entry("animal/bear"),
    Entry("beach"),
]
LABELS = [entry.label for entry in VOCABULARY]
RUN = RunIdentity("tiny", "model-fingerprint", "vocabulary-fingerprint", "top-3")
runner = CliRunner()


def row(*positives: str, unknown: tuple[str, ...] = ()) -> list[int]:
    """The expected targets: +1 for ``positives``, 0 for ``unknown``, -1 for the rest."""
    return [1 if label in positives else 0 if label in unknown else -1 for label in LABELS]


def xmp_text(**fields: list[str]) -> str:
    """An XMP sidecar holding a person's keywords (subject, hierarchicalSubject, TagsList)."""
    names = {"subject": SUBJECT, "hierarchical": HIERARCHICAL, "tags_list": TAGS_LIST}
    document = XmpDocument()
    document.update({names[name]: entries for name, entries in fields.items()}, None)
    return document.to_text()


def with_segment(jpeg: Path, marker: int, payload: bytes) -> Path:
    """``jpeg`` with an APPn segment put right after its start marker."""
    data = jpeg.read_bytes()
    segment = struct.pack(">HH", marker, len(payload) + 2) + payload
    jpeg.write_bytes(data[:2] + segment + data[2:])
    return jpeg


def with_iptc(jpeg: Path, keywords: list[bytes]) -> Path:
    """IPTC Keywords (record 2:25) in a Photoshop APP13 segment, as Photoshop writes them."""
    records = b"".join(b"\x1c\x02\x19" + struct.pack(">H", len(k)) + k for k in keywords)
    records += b"\x00" * (len(records) % 2)
    block = b"8BIM" + struct.pack(">HHI", 0x0404, 0, len(records)) + records
    return with_segment(jpeg, 0xFFED, b"Photoshop 3.0\x00" + block)


def mkt_tag_packet(person: dict, labels: list[str]) -> tuple[bytes, list[str]]:
    """An XMP packet in which mkt-tag added ``labels`` beside the person's keywords (IPTC
    included, as a packet inside a file records it), and the IPTC Keywords it would hold."""
    document = XmpDocument()
    fields = {**document.fields(), **person}
    fields, written = add_tags(fields, Ownership(), labels)
    document.update(fields, Record.of(RUN, [Tag(label, 0.9) for label in labels], written))
    return document.to_text().encode(), fields[IPTC_KEYWORDS]


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """A small library: every place keywords are kept, mkt-tag's tags, nothing at all."""
    root = tmp_path / "Photos"
    names = ["darktable", "digikam", "lightroom", "tagslist", "mixed", "machine", "bear"]
    names += ["plain", "strangers", "2024/embedded", "iptc"]
    for seed, name in enumerate(names):
        make_photo(root / f"{name}.jpg", size=(16, 16), seed=seed)
    for name in ("darktable", "digikam", "exiftool"):  # photo.jpg.xmp
        shutil.copy(FIXTURES / f"{name}.jpg.xmp", root / f"{name}.jpg.xmp")
    shutil.copy(FIXTURES / "lightroom.xmp", root / "lightroom.xmp")  # stem-named: photo.xmp
    # digiKam's TagsList alone: a path whose leaf is an alias, and an alias.
    (root / "tagslist.jpg.xmp").write_text(xmp_text(tags_list=["Pets/Puppy", "Vacation"]))
    # A person's keywords (exiftool's sidecar), then mkt-tag's tags added by `mkt-tag tag`.
    (root / "exiftool.jpg.xmp").rename(root / "mixed.jpg.xmp")
    write_sidecar(root / "mixed.jpg", [Tag("dog", 0.9), Tag("beach", 0.4)], "xmp")
    write_sidecar(root / "machine.jpg", [Tag("dog", 0.9)], "xmp")  # mkt-tag's tags only
    (root / "bear.jpg.xmp").write_text(xmp_text(subject=["bear", "dog"]))  # bear: ambiguous
    (root / "strangers.jpg.xmp").write_text(xmp_text(subject=["sunset", "Anna"]))
    embedded = root / "2024" / "embedded.jpg"
    with Image.open(embedded) as image:
        image.save(embedded, xmp=xmp_text(subject=["cat"], hierarchical=["x|beach"]).encode())
    with_iptc(root / "iptc.jpg", [b"Beach", "kitty".encode("latin-1"), b"\xe9t\xe9"])
    return root


# --- matching -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "keyword, labels",
    [
        ("DOG", ["dog"]),  # case and spacing aside
        ("puppy", ["dog"]),  # an alias
        ("animal/dog", ["dog"]),  # a path names the flat label that is its leaf
        ("pets / Puppy", ["dog"]),  # ... or the flat alias
        ("cat", ["animal/cat"]),  # a flat keyword names the path label that ends in it
        ("Animal / Cat", ["animal/cat"]),  # the whole path
        ("kitty", ["animal/cat"]),
        ("toy/cat", []),  # two paths never match by their leaves alone
        ("bear", ["toy/bear", "animal/bear"]),  # two labels end in it: ambiguous
        ("zebra", []),
        ("", []),
    ],
)
def test_a_keyword_names_labels_by_name_alias_or_hierarchy(keyword, labels):
    matcher = LabelMatcher(VOCABULARY)
    assert [LABELS[i] for i in matcher.match(keyword)] == labels


def test_the_first_rule_that_finds_a_label_decides():
    matcher = LabelMatcher(["dog", "animal/dog", "pets/dog", Entry("cat", aliases=["tiger"])])
    assert matcher.match("dog") == [0]  # the label itself, though two paths end in it
    assert matcher.match("animal/dog") == [1]  # the whole path, not its leaf
    assert matcher.match("wild/dog") == [0]  # the leaf, as a flat label
    assert LabelMatcher(["tiger", Entry("cat", aliases=["tiger"])]).match("tiger") == [0]


def test_targets_with_containing_keywords_ambiguity_and_strangers():
    matcher = LabelMatcher(VOCABULARY)
    matched = matcher.targets(
        ["places/France/Paris", "bear", "zebra", "darktable/format/jpg"],
        negatives=["holiday", "toy/bear"],
        unknown=["beach"],
    )
    assert matched.named
    # Paris by its leaf, France as the keyword it lies under; "bear" is not guessed: unknown,
    # but the explicit negative stands; "places" names nothing and is not reported on its own.
    expected = row("Paris", "France", unknown=("animal/bear", "beach"))
    expected[LABELS.index("holiday")] = -1
    assert matched.target.tolist() == expected and matched.target.dtype == np.int8
    assert matched.unmatched == ["zebra", "darktable/format/jpg"]
    assert matched.ambiguous == [("bear", ["toy/bear", "animal/bear"])]
    nothing = matcher.targets(["bear", "zebra"])
    assert not nothing.named and nothing.target.tolist() == row(unknown=("toy/bear", "animal/bear"))


# --- where keywords are read --------------------------------------------------------------


def test_keywords_of_each_photo(photos):
    found = {
        name: photo_labels(photos / name).positives
        for name in ("darktable.jpg", "digikam.jpg", "lightroom.jpg", "tagslist.jpg")
    }
    assert found == {
        "darktable.jpg": ["darktable/format/jpg", "holiday", "places/France/Paris"],
        "digikam.jpg": ["People/Anna", "holiday", "Places/France/Paris"],
        "lightroom.jpg": ["Places/France/Paris", "holiday"],
        "tagslist.jpg": ["Pets/Puppy", "Vacation"],
    }
    mixed = photo_labels(photos / "mixed.jpg")  # mkt-tag's dog and beach are left out
    assert mixed.positives == ["holiday", "places/France/Paris"] and not mixed.own_tags
    machine = photo_labels(photos / "machine.jpg")
    assert not machine and machine.own_tags
    assert photo_labels(photos / "2024" / "embedded.jpg").positives == ["x/beach", "cat"]
    assert photo_labels(photos / "iptc.jpg").positives == ["Beach", "kitty", "été"]
    plain = photo_labels(photos / "plain.jpg")
    assert not plain and not plain.own_tags


def test_mkt_tag_entries_in_an_embedded_packet_and_in_iptc_are_left_out(tmp_path):
    person = {SUBJECT: ["beach"], IPTC_KEYWORDS: ["sea"]}
    packet, iptc = mkt_tag_packet(person, ["dog", "animal/cat"])
    assert set(iptc) >= {"sea", "dog", "cat"}  # mkt-tag wrote its tags into IPTC too
    photo = make_photo(tmp_path / "p.jpg", size=(8, 8))
    with Image.open(photo) as image:
        image.save(photo, xmp=packet)
    with_iptc(photo, [keyword.encode() for keyword in iptc])
    assert embedded_keywords(photo) == (["beach", "sea"], True)
    only_theirs = make_photo(tmp_path / "q.jpg", size=(8, 8))
    with_iptc(only_theirs, [b"dog"])  # no record: every keyword is the person's
    assert embedded_keywords(only_theirs) == (["dog"], False)


@pytest.mark.parametrize("suffix", [".png", ".webp", ".tif"])
def test_embedded_xmp_in_other_formats(tmp_path, suffix):
    packet = xmp_text(hierarchical=["animal|cat"], subject=["animal", "cat", "dog"])
    photo = make_photo(tmp_path / "p.jpg", size=(8, 8))
    with Image.open(photo) as image:
        target = tmp_path / f"p{suffix}"
        if suffix == ".png":
            info = PngImagePlugin.PngInfo()
            info.add_itxt("XML:com.adobe.xmp", packet)
            image.save(target, pnginfo=info)
        elif suffix == ".tif":
            image.save(target, tiffinfo={700: packet.encode()})
        else:
            image.save(target, xmp=packet.encode())
    assert embedded_keywords(target) == (["animal/cat", "dog"], False)


def test_a_file_pillow_cannot_open_is_scanned_for_its_packet(tmp_path, monkeypatch):
    packet = xmp_text(subject=["dog"]).encode()
    raw = tmp_path / "photo.orf"  # not a format Pillow knows
    raw.write_bytes(b"IIRO" + b"\x00" * 100 + b"<?xpacket begin?>" + packet + b"\xff" * 50)
    monkeypatch.setattr(library, "_BLOCK", 7)  # markers straddle the blocks read
    assert embedded_keywords(raw) == (["dog"], False)
    raw.write_bytes(b"IIRO" + b"\x00" * 100)
    assert embedded_keywords(raw) == ([], False)


def test_damaged_metadata_is_reported_and_the_rest_still_read(tmp_path):
    folder = tmp_path / "Photos"
    bomb = make_photo(folder / "bomb.jpg", size=(8, 8))
    packet = (  # a DTD never reaches the parser: its entity stays undefined, not expanded
        b'<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">]>'
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">&a;</rdf:RDF></x:xmpmeta>'
    )
    with_segment(bomb, 0xFFE1, b"http://ns.adobe.com/xap/1.0/\x00" + packet)
    (folder / "bomb.jpg.xmp").write_text(xmp_text(subject=["dog"]))
    broken = make_photo(folder / "broken.jpg", size=(8, 8), seed=1)
    (folder / "broken.jpg.xmp").write_text("<x:xmpmeta>not closed")
    with_iptc(broken, [b"beach"])
    loaded = data.load(folder, LABELS)
    assert {p.name: t.tolist() for p, t in zip(loaded.paths, loaded.targets, strict=True)} == {
        "bomb.jpg": row("dog"),
        "broken.jpg": row("beach"),
    }
    assert loaded.problems.counts == {data.BAD_SIDECAR: 2}
    lines = loaded.problems.lines()[0]
    assert "bomb.jpg (its embedded keywords: not well-formed XML" in lines
    assert "broken.jpg.xmp (malformed xmp sidecar" in lines


# --- which photos count -------------------------------------------------------------------


def test_a_library_as_labelled_images(photos):
    loaded = data.load(photos, VOCABULARY)
    targets = {p.name: t.tolist() for p, t in zip(loaded.paths, loaded.targets, strict=True)}
    assert targets == {
        "embedded.jpg": row("animal/cat", "beach"),  # x|beach: the leaf names beach
        "bear.jpg": row("dog", unknown=("toy/bear", "animal/bear")),
        "darktable.jpg": row("holiday", "Paris", "France"),
        "digikam.jpg": row("holiday", "Paris", "France"),
        "iptc.jpg": row("beach", "animal/cat"),
        "lightroom.jpg": row("holiday", "Paris", "France"),
        "mixed.jpg": row("holiday", "Paris", "France"),  # mkt-tag's dog and beach ignored
        "tagslist.jpg": row("dog", "holiday"),
    }
    assert loaded.labels == LABELS
    assert loaded.problems.counts == {
        data.AMBIGUOUS: 1,
        data.OTHER_KEYWORDS: 5,  # darktable/format/jpg, People/Anna, été, sunset, Anna
        data.OWN_TAGS_ONLY: 1,
        data.NO_KEYWORDS: 1,
        data.NO_MATCH: 1,
    }
    lines = loaded.problems.lines()
    assert f"1 photos without keywords (left out), e.g. {photos / 'plain.jpg'}" in lines
    assert f"1 photos with only mkt-tag's own tags (left out), e.g. {photos / 'machine.jpg'}" in (
        lines
    )
    assert f"1 photos whose keywords name no vocabulary label (left out), e.g. {photos}" in (
        "\n".join(lines)
    )
    ambiguous = "1 keywords naming several vocabulary labels (not guessed: those labels unknown)"
    assert f"{ambiguous}, e.g. 'bear' (toy/bear, animal/bear)" in lines
    assert any(
        line.startswith("5 keywords not in the vocabulary (ignored), e.g.") for line in lines
    )
    training = data.load(photos, VOCABULARY, keep_unlabelled=False)
    assert len(training) == 8  # every photo kept here has a positive


def test_plain_labels_miss_the_aliases(photos):
    loaded = data.load(photos, LABELS)  # strings, as a plain label list: no aliases
    names = [p.name for p in loaded.paths]
    assert "tagslist.jpg" not in names  # Pets/Puppy and Vacation name nothing now
    assert loaded.problems.counts[data.NO_MATCH] == 2


def test_mkt_tag_json_sidecars_are_its_own_tags_and_txt_ones_a_persons(tmp_path):
    folder = tmp_path / "Photos"
    a, b = (make_photo(folder / f"{name}.jpg", size=(8, 8)) for name in "ab")
    write_sidecar(a, [Tag("dog", 0.9)], "json")  # mkt-tag's record: its own tags
    write_sidecar(b, [Tag("beach", 0.9)], "txt")  # no room for a record: a person's
    loaded = data.load(folder, LABELS)
    assert [p.name for p in loaded.paths] == ["b.jpg"]
    assert loaded.problems.counts == {data.OWN_TAGS_ONLY: 1}


def test_strict_fails_on_problems_but_not_on_what_a_library_normally_holds(photos, tmp_path):
    with pytest.raises(data.InputFileError, match=r"--strict.*keywords naming several"):
        data.load(photos, VOCABULARY, strict=True)
    (photos / "bear.jpg.xmp").unlink()  # the one ambiguous keyword
    assert len(data.load(photos, VOCABULARY, strict=True)) == 7
    empty = tmp_path / "empty"
    make_photo(empty / "a.jpg", size=(8, 8))
    with pytest.raises(data.InputFileError, match=r"no usable .*1 photos without keywords"):
        data.load(empty, LABELS)


def test_exiftool_written_keywords(tmp_path):
    exiftool = shutil.which("exiftool")
    if exiftool is None:
        pytest.skip("exiftool is not installed")
    folder = tmp_path / "Photos"
    for name in ("a.jpg", "b.jpg", "c.tif"):
        make_photo(folder / name, size=(8, 8))
    arguments = [
        ["-XMP-dc:Subject=dog", "-XMP-lr:HierarchicalSubject=animal|cat", "a.jpg"],
        ["-Keywords=beach", "-Keywords=Vacation", "b.jpg"],
        ["-Keywords=France", "-XMP-digiKam:TagsList=places/Paris", "c.tif"],
    ]
    for args in arguments:
        subprocess.run([exiftool, "-q", "-overwrite_original", *args], cwd=folder, check=True)
    loaded = data.load(folder, VOCABULARY)
    assert [t.tolist() for t in loaded.targets] == [
        row("dog", "animal/cat"),
        row("beach", "holiday"),
        row("France", "Paris"),
    ]


# --- the commands -------------------------------------------------------------------------


@pytest.fixture
def vocabulary_file(tmp_path: Path) -> Path:
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(LABELS) + "\n")
    return path


def test_eval_on_a_library(photos, vocabulary_file):
    labels = read_labels(vocabulary_file).labels
    expected = len(data.load(photos, labels))  # as plain labels: 7 photos
    result = runner.invoke(
        app,
        [
            *("eval", "--data", str(photos), "--labels", str(vocabulary_file)),
            *("--model", str(TINY_CONFIG), "--workers", "0", "--device", "cpu"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"{expected} images, {len(LABELS)} labels" in result.stdout
    summary = ["1 photos without keywords", "1 photos with only mkt-tag's own tags"]
    for line in summary:
        assert f"warning: {photos}: {line} (left out), e.g." in result.stderr
    assert "2 photos whose keywords name no vocabulary label (left out)" in result.stderr


def test_train_on_a_library(photos, vocabulary_file, tmp_path):
    run = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            *("train", "--data", str(photos), "--labels", str(vocabulary_file), "--out", str(run)),
            *("--model", str(TINY_CONFIG), "--workers", "0", "--device", "cpu", "--stage", "1"),
            *("--epochs", "1", "--warmup-epochs", "0", "--max-steps", "1", "--batch-size", "2"),
            *("--val-fraction", "0.25"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "training on 5 images, validating on 2, 8 labels" in result.stderr
    assert "1 photos without keywords (left out)" in result.stderr
    assert "stopped after step 1" in result.stderr
