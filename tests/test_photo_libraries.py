"""Tagging and untagging sidecars shaped as darktable, digiKam, Lightroom and exiftool write
them (tests/data/library/), through the command line, checked with exiftool.

What is proven on each: the person's keywords stay in every field in their order; every
other element and attribute is unchanged; mkt-tag's tags are in all three keyword fields
and its record says what it wrote; a re-run is a no-op, a new vocabulary or tag root
re-tags, ``--overwrite`` changes only mkt-tag's entries; ``untag`` gives the fixture back.
"""

from __future__ import annotations

import atexit
import datetime
import functools
import hashlib
import json
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mkt_tag.cli import app
from mkt_tag.keywords import HIERARCHICAL, SUBJECT, TAGS_LIST
from mkt_tag.records import RECORD_NAMESPACE
from tests.conftest import DATA, TINY_CONFIG, make_photo

LIBRARY = DATA / "library"
runner = CliRunner()

RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
DC = "http://purl.org/dc/elements/1.1/"
LR = "http://ns.adobe.com/lightroom/1.0/"
DIGIKAM = "http://www.digikam.org/ns/1.0/"
KEYWORD_ELEMENTS = {f"{{{DC}}}subject", f"{{{LR}}}hierarchicalSubject", f"{{{DIGIKAM}}}TagsList"}

# exiftool's names of the three fields mkt-tag writes, and of mkt-tag's record.
FIELDS = {
    SUBJECT: "XMP-dc:Subject",
    HIERARCHICAL: "XMP-lr:HierarchicalSubject",
    TAGS_LIST: "XMP-digiKam:TagsList",
}
RECORD_GROUP = "XMP-mkttag:"

# Vocabularies: "Holiday" is a keyword of every fixture's person (as "holiday"); places/France/
# Paris is one of darktable's and exiftool's paths (as places|France|Paris), and of
# Lightroom's and digiKam's with another case.
BASIC = ("dog", "cat", "Holiday")
OTHER = ("beach", "sunset")
HIERARCHY = ("animal/dog", "animal/cat", "places/France/Paris")


@dataclass(frozen=True)
class Fixture:
    file: str  # in tests/data/library
    sidecar: str  # its name beside photo.jpg, as the program names it
    naming: str  # mkt-tag's --sidecar-naming for that name
    copies: tuple[str, ...]  # the person's keywords mkt-tag copies into digiKam:TagsList


FIXTURES = [
    Fixture(
        "darktable.jpg.xmp",
        "photo.jpg.xmp",
        "full",
        ("darktable/format/jpg", "holiday", "places/France/Paris"),
    ),
    Fixture("digikam.jpg.xmp", "photo.jpg.xmp", "full", ()),
    Fixture("lightroom.xmp", "photo.xmp", "stem", ("Places/France/Paris", "holiday")),
    Fixture("exiftool.jpg.xmp", "photo.jpg.xmp", "full", ("holiday", "places/France/Paris")),
]


@dataclass
class Library:
    """A photo with a fixture as its sidecar, and the vocabularies to tag it with."""

    fixture: Fixture
    folder: Path

    @property
    def photo(self) -> Path:
        return self.folder / "photo.jpg"

    @property
    def sidecar(self) -> Path:
        return self.folder / self.fixture.sidecar

    @property
    def original(self) -> Path:
        return LIBRARY / self.fixture.file

    def labels(self, labels: tuple[str, ...]) -> Path:
        digest = hashlib.sha256("\n".join(labels).encode()).hexdigest()[:8]
        path = self.folder / f"labels-{digest}.txt"
        path.write_text("\n".join(labels) + "\n", encoding="utf-8")
        return path

    def tag(self, labels: tuple[str, ...], *options: str) -> str:
        """Tag the photo with every label of ``labels``; the summary line."""
        result = runner.invoke(
            app,
            [
                "tag",
                str(self.photo),
                "--labels",
                str(self.labels(labels)),
                "--top-k",
                str(len(labels)),
                "--sidecar",
                "xmp",
                "--sidecar-naming",
                self.fixture.naming,
                "--model",
                str(TINY_CONFIG),
                *options,
            ],
        )
        assert result.exit_code == 0, result.output
        return result.stderr

    def untag(self, *options: str) -> Any:
        result = runner.invoke(app, ["untag", str(self.photo), *options])
        assert result.exit_code == 0, result.output
        return result


@pytest.fixture(params=FIXTURES, ids=lambda fixture: fixture.file.split(".")[0])
def library(request: pytest.FixtureRequest, tmp_path: Path) -> Library:
    fixture: Fixture = request.param
    make_photo(tmp_path / "photo.jpg")
    shutil.copyfile(LIBRARY / fixture.file, tmp_path / fixture.sidecar)
    return Library(fixture, tmp_path)


# --- reading sidecars: exiftool, and the XML itself -------------------------------------


@functools.cache
def _exiftool() -> Any:
    """One exiftool process for the whole run (``-stay_open``): a call then takes
    milliseconds, not the quarter second of starting Perl."""
    if shutil.which("exiftool") is None:
        pytest.fail(
            "exiftool is required by the XMP tests: install it "
            "(apt install libimage-exiftool-perl, brew install exiftool)"
        )
    import exiftool  # PyExifTool, a test dependency

    tool = exiftool.ExifTool(common_args=[])  # no -G -n: read as the command line reads
    tool.run()
    atexit.register(tool.terminate)
    return tool


def run_exiftool(*args: str | Path) -> str:
    output: str = _exiftool().execute(*map(str, args))
    return output


def dump(path: Path) -> dict[str, Any]:
    """Everything exiftool reads in a sidecar, by group and name (file system data left out)."""
    return dict(_dump(path, _version(path)))


def _version(path: Path) -> tuple[int, ...]:
    """Tells one content of a file from the next: mkt-tag replaces files, never edits them."""
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


@functools.cache
def _dump(path: Path, version: tuple[int, ...]) -> tuple[tuple[str, Any], ...]:
    data: dict[str, Any] = json.loads(run_exiftool("-j", "-G1", "-a", "-struct", path))[0]
    ignored = ("SourceFile", "ExifTool:ExifToolVersion")
    return tuple(
        (name, value)
        for name, value in data.items()
        if not name.startswith("System:") and name not in ignored
    )


def entries(value: Any) -> list[str]:
    """A list tag as exiftool gives it in JSON: a lone entry is a scalar, numbers are numbers."""
    if value is None:
        return []
    return [str(entry) for entry in value] if isinstance(value, list) else [str(value)]


def keywords(data: dict[str, Any]) -> dict[str, list[str]]:
    return {name: entries(data.get(name)) for name in FIELDS.values()}


def others(data: dict[str, Any]) -> dict[str, Any]:
    """All but the three keyword fields and mkt-tag's record."""
    return {
        name: value
        for name, value in data.items()
        if name not in FIELDS.values() and not name.startswith(RECORD_GROUP)
    }


def record(data: dict[str, Any]) -> dict[str, Any]:
    """mkt-tag's record by lower-case name (``addedsubject``, ``run``, ...)."""
    return {
        name[len(RECORD_GROUP) :].lower(): value
        for name, value in data.items()
        if name.startswith(RECORD_GROUP)
    }


def warnings(path: Path) -> frozenset[str]:
    """What ``exiftool -validate -warning -a`` finds wrong."""
    return _warnings(path, _version(path))


@functools.cache
def _warnings(path: Path, version: tuple[int, ...]) -> frozenset[str]:
    lines = run_exiftool("-validate", "-warning", "-a", "-s", path).splitlines()
    return frozenset(line.split(":", 1)[1].strip() for line in lines if line.startswith("Warning"))


def canonical(element: ET.Element) -> tuple[Any, ...]:
    """An element's meaning: name, attributes, text and children, whitespace aside."""
    return (
        element.tag,
        tuple(sorted(element.attrib.items())),
        (element.text or "").strip(),
        tuple(canonical(child) for child in element),
    )


def xml_meaning(path: Path, keywords: bool = True) -> list[Any]:
    """The properties of each rdf:Description in file order, and the xmpmeta attributes:
    namespace declarations, their place and whitespace do not count. mkt-tag's record is
    left out, and the three keyword fields unless ``keywords``."""
    root = ET.parse(path).getroot()
    meaning: list[Any] = [root.tag, sorted(root.attrib.items())]
    for description in root.iter(f"{{{RDF}}}Description"):
        properties = [
            (name, value)
            for name, value in description.attrib.items()
            if name != f"{{{RDF}}}about" and not name.startswith(f"{{{RECORD_NAMESPACE}}}")
        ]
        properties += [
            canonical(child)
            for child in description
            if not child.tag.startswith(f"{{{RECORD_NAMESPACE}}}")
            and (keywords or child.tag not in KEYWORD_ELEMENTS)
        ]
        if properties:
            meaning.append(properties)
    return meaning


# --- what every manager must find ---------------------------------------------------------


def paths(entries: list[str], separator: str) -> list[tuple[str, ...]]:
    return [tuple(level.strip() for level in entry.split(separator)) for entry in entries]


def first_non_empty(fields: dict[str, list[str]], *order: str) -> list[tuple[str, ...]]:
    """The keyword paths a manager that reads only the first non-empty of ``order`` gets."""
    separators = {FIELDS[SUBJECT]: "\0", FIELDS[HIERARCHICAL]: "|", FIELDS[TAGS_LIST]: "/"}
    for name in order:
        if fields[name]:
            return paths(fields[name], separators[name])
    return []


def tree(found: list[tuple[str, ...]]) -> set[tuple[str, ...]]:
    """Every path and its ancestors, case aside: Immich creates ``animal`` for ``animal/dog``."""
    return {
        tuple(level.casefold() for level in path[:n])
        for path in found
        for n in range(1, len(path) + 1)
    }


def person_keywords(original: dict[str, list[str]]) -> list[tuple[str, ...]]:
    """The person's keywords in a fixture: its paths, and its flat keywords alone."""
    return [
        *paths(original[FIELDS[HIERARCHICAL]], "|"),
        *paths(original[FIELDS[TAGS_LIST]], "/"),
        *[(keyword,) for keyword in original[FIELDS[SUBJECT]]],
    ]


def assert_every_manager_reads_everything(
    sidecar: Path, original: Path, ours: list[tuple[str, ...]]
) -> None:
    """Immich (TagsList, else hierarchicalSubject), darktable (hierarchicalSubject, else
    dc:subject) and PhotoPrism (dc:subject) each find every person's keyword and every one
    of mkt-tag's, ``ours`` as hierarchical paths (under the tag root)."""
    now, before = keywords(dump(sidecar)), keywords(dump(original))
    wanted = person_keywords(before)
    for order in [
        (FIELDS[TAGS_LIST], FIELDS[HIERARCHICAL]),
        (FIELDS[HIERARCHICAL], FIELDS[SUBJECT]),
    ]:
        found = tree(first_non_empty(now, *order))
        leaves = {path[-1] for path in found}
        for path in wanted:
            key = tuple(level.casefold() for level in path)
            assert (key in found) if len(path) > 1 else (key[0] in leaves), (order, path)
        for path in ours:
            assert tuple(level.casefold() for level in path) in found, (order, path)
    flat = {keyword.casefold() for keyword in now[FIELDS[SUBJECT]]}
    assert {
        level.casefold() for path in paths(before[FIELDS[SUBJECT]], "\0") for level in path
    } <= flat
    # dc:subject has no root: mkt-tag's labels are its paths less the root.
    assert all(path[-1].casefold() in flat for path in ours)


# --- the tests ----------------------------------------------------------------------------


def assert_kept(library: Library) -> dict[str, list[str]]:
    """The sidecar holds the fixture's every element and attribute as they were, and the
    person's keywords first, in their order, in every field; its keyword fields."""
    before, after = dump(library.original), dump(library.sidecar)
    assert others(after) == others(before)
    assert xml_meaning(library.sidecar, keywords=False) == xml_meaning(
        library.original, keywords=False
    )
    old, new = keywords(before), keywords(after)
    for name in FIELDS.values():
        assert new[name][: len(old[name])] == old[name], name
    if not old[FIELDS[TAGS_LIST]]:
        assert new[FIELDS[TAGS_LIST]][: len(library.fixture.copies)] == list(library.fixture.copies)
    return new


def summary(stderr: str, new: int, stale: int, current: int, tagged: int) -> str:
    states = "" if new == 1 else f" ({new} new, {stale} stale, {current} current)"
    return f"1 images{states}: tagged {tagged}, skipped {current} current, failed 0"


def test_tagging_keeps_what_the_person_wrote_and_records_what_mkt_tag_wrote(
    library: Library,
) -> None:
    started = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    stderr = library.tag(BASIC)
    # A sidecar full of keywords, but without mkt-tag's record, is new: not done.
    assert summary(stderr, new=1, stale=0, current=0, tagged=1) in stderr
    fields = assert_kept(library)
    # exiftool reads mkt-tag's tags from all three fields; "Holiday" was the person's.
    person = {keyword.casefold() for keyword in keywords(dump(library.original))[FIELDS[SUBJECT]]}
    for name, found in fields.items():
        assert {"dog", "cat"} <= set(found), name
        assert [entry for entry in found if entry.casefold() == "holiday"] == ["holiday"], name
    assert "holiday" in person
    assert warnings(library.sidecar) <= warnings(library.original)

    # The record: which run, and each entry mkt-tag added or copied.
    from mkt_tag import vocab
    from mkt_tag.tagging.job import run_identity
    from mkt_tag.tagging.selection import selection_for

    written = record(dump(library.sidecar))
    vocabulary = vocab.read_labels(library.labels(BASIC))
    selection, _ = selection_for(vocabulary, top_k=3)
    run = run_identity(str(TINY_CONFIG), vocabulary.entries, selection)
    assert written["run"] == run.fingerprint
    assert written["model"] == str(TINY_CONFIG)
    assert written["modelfingerprint"] == run.model_fingerprint != ""
    assert written["vocabulary"] == run.vocabulary
    assert written["selection"] == run.selection == "top 3"
    assert "tagroot" not in written
    date = datetime.datetime.strptime(written["date"], "%Y:%m:%d %H:%M:%SZ")
    assert (
        started
        <= date.replace(tzinfo=datetime.timezone.utc)
        <= started + datetime.timedelta(minutes=5)
    )
    tags = written["tags"]
    assert sorted(tag["Label"] for tag in tags) == sorted(BASIC)
    scores = [tag["Score"] for tag in tags]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    ours = [tag["Label"] for tag in tags if tag["Label"] != "Holiday"]
    for field, name in FIELDS.items():
        assert entries(written[f"added{field.name.lower()}"]) == ours
        assert fields[name][-2:] == ours  # mkt-tag's come last, by score
    copied = {name[len("copied") :]: value for name, value in written.items() if "copied" in name}
    assert copied == ({"tagslist": list(library.fixture.copies)} if library.fixture.copies else {})
    # The scores are those the same run prints.
    printed = runner.invoke(
        app,
        [
            "tag",
            str(library.photo),
            "--labels",
            str(library.labels(BASIC)),
            "--top-k",
            "3",
            "--model",
            str(TINY_CONFIG),
        ],
    )
    line = printed.stdout.strip().split("\t")[1]
    assert line == ", ".join(f"{tag['Label']} ({tag['Score']:.3f})" for tag in tags)
    assert_every_manager_reads_everything(
        library.sidecar, library.original, [(label,) for label in BASIC]
    )


def test_a_rerun_is_current_and_overwrite_changes_only_mkt_tags_entries(
    library: Library,
) -> None:
    library.tag(BASIC)
    tagged = library.sidecar.read_bytes()
    stderr = library.tag(BASIC)
    assert summary(stderr, new=0, stale=0, current=1, tagged=0) in stderr
    assert library.sidecar.read_bytes() == tagged
    before = dump(library.sidecar)
    stderr = library.tag(BASIC, "--overwrite")
    assert "1 images (0 new, 0 stale, 1 current): tagged 1, skipped 0 current" in stderr
    after = dump(library.sidecar)
    assert {**after, "XMP-mkttag:Date": None} == {**before, "XMP-mkttag:Date": None}
    assert_kept(library)


def test_a_new_vocabulary_makes_it_stale_and_replaces_only_mkt_tags_tags(
    library: Library,
) -> None:
    library.tag(BASIC)
    stderr = library.tag(OTHER)
    assert summary(stderr, new=0, stale=1, current=0, tagged=1) in stderr
    fields = assert_kept(library)
    original = keywords(dump(library.original))
    for name, found in fields.items():
        assert not {"dog", "cat"} & set(found), name  # mkt-tag's old tags are gone
        assert set(found[-2:]) == set(OTHER), name
        assert len(found) == len(original[name] or library.fixture.copies) + 2, name
    written = record(dump(library.sidecar))
    assert sorted(tag["Label"] for tag in written["tags"]) == sorted(OTHER)
    assert_every_manager_reads_everything(
        library.sidecar, library.original, [(label,) for label in OTHER]
    )


def added(library: Library) -> dict[str, set[str]]:
    """The entries of each field that were neither the fixture's nor its copies, as
    exiftool reads them; they must be what mkt-tag's record says it added."""
    now, before = dump(library.sidecar), keywords(dump(library.original))
    theirs = {name: {e.casefold() for e in found} for name, found in before.items()}
    theirs[FIELDS[TAGS_LIST]] |= {copy.casefold() for copy in library.fixture.copies}
    result = {
        name: {entry for entry in found if entry.casefold() not in theirs[name]}
        for name, found in keywords(now).items()
    }
    written = record(now)
    for field, name in FIELDS.items():
        assert set(entries(written.get(f"added{field.name.lower()}"))) == result[name], name
    return result


def test_a_hierarchical_vocabulary_then_a_tag_root(library: Library) -> None:
    library.tag(HIERARCHY)
    assert_kept(library)
    subject = {"animal", "dog", "cat", "places", "France", "Paris"}
    person = {keyword.casefold() for keyword in keywords(dump(library.original))[FIELDS[SUBJECT]]}
    flat = {keyword for keyword in subject if keyword.casefold() not in person}
    # places|France|Paris is a path every fixture's person has (in some case): not added.
    assert added(library) == {
        FIELDS[SUBJECT]: flat,
        FIELDS[HIERARCHICAL]: {"animal|dog", "animal|cat"},
        FIELDS[TAGS_LIST]: {"animal/dog", "animal/cat"},
    }
    assert_every_manager_reads_everything(
        library.sidecar, library.original, [tuple(label.split("/")) for label in HIERARCHY]
    )

    stderr = library.tag(HIERARCHY, "--tag-root", "auto")  # another root: stale
    assert summary(stderr, new=0, stale=1, current=0, tagged=1) in stderr
    assert_kept(library)
    assert added(library) == {
        FIELDS[SUBJECT]: flat,  # flat keywords stay plain: no "auto"
        FIELDS[HIERARCHICAL]: {"auto|animal|dog", "auto|animal|cat", "auto|places|France|Paris"},
        FIELDS[TAGS_LIST]: {"auto/animal/dog", "auto/animal/cat", "auto/places/France/Paris"},
    }
    assert record(dump(library.sidecar))["tagroot"] == "auto"
    rooted = [("auto", *label.split("/")) for label in HIERARCHY]
    assert_every_manager_reads_everything(library.sidecar, library.original, rooted)

    tagged = library.sidecar.read_bytes()
    stderr = library.tag(HIERARCHY, "--tag-root", "auto")
    assert summary(stderr, new=0, stale=0, current=1, tagged=0) in stderr
    assert library.sidecar.read_bytes() == tagged


def test_untag_gives_the_fixture_back(library: Library) -> None:
    library.tag(BASIC)
    library.tag(HIERARCHY, "--tag-root", "auto", "--append")  # keeps dog, cat as well
    assert added(library)[FIELDS[HIERARCHICAL]] == {
        "auto|dog",
        "auto|cat",
        "auto|Holiday",
        "auto|animal|dog",
        "auto|animal|cat",
        "auto|places|France|Paris",
    }
    result = library.untag()
    labels = result.stdout.strip().split("\t")
    assert labels[0] == str(library.sidecar)
    assert sorted(labels[1].split(", ")) == sorted({*BASIC, *HIERARCHY})
    assert "1 images: removed mkt-tag's tags from 1 sidecars, failed 0" in result.stderr
    # Equal in meaning: what exiftool reads, and the XML but for namespace declarations.
    assert dump(library.sidecar) == dump(library.original)
    assert xml_meaning(library.sidecar) == xml_meaning(library.original)
    assert b"mkt-tag" not in library.sidecar.read_bytes()
    assert warnings(library.sidecar) == warnings(library.original)
    untagged = library.sidecar.read_bytes()
    again = library.untag()
    assert again.stdout == ""
    assert "1 images: removed mkt-tag's tags from 0 sidecars, failed 0" in again.stderr
    assert library.sidecar.read_bytes() == untagged


def test_the_summary_counts_new_stale_and_current_sidecars(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    for name, fixture in [("a", "darktable"), ("b", "digikam"), ("c", "exiftool")]:
        make_photo(folder / f"{name}.jpg", seed=ord(name))
        shutil.copyfile(LIBRARY / f"{fixture}.jpg.xmp", folder / f"{name}.jpg.xmp")
    basic, other = tmp_path / "basic.txt", tmp_path / "other.txt"
    basic.write_text("\n".join(BASIC))
    other.write_text("\n".join(OTHER))

    def tag(path: Path, labels: Path) -> str:
        result = runner.invoke(
            app,
            [
                "tag",
                str(path),
                "--labels",
                str(labels),
                "--sidecar",
                "xmp",
                "--model",
                str(TINY_CONFIG),
            ],
        )
        assert result.exit_code == 0, result.output
        return result.stderr

    assert "3 images: tagged 3, skipped 0 current, failed 0" in tag(folder, basic)
    tag(folder / "b.jpg", other)  # b is now stale for the basic labels
    make_photo(folder / "d.jpg", seed=4)  # d has the person's keywords, no record: new
    shutil.copyfile(LIBRARY / "darktable.jpg.xmp", folder / "d.jpg.xmp")
    current = {name: (folder / f"{name}.jpg.xmp").read_bytes() for name in "ac"}
    stderr = tag(folder, basic)
    assert "4 images (1 new, 1 stale, 2 current): tagged 2, skipped 2 current, failed 0" in stderr
    assert {name: (folder / f"{name}.jpg.xmp").read_bytes() for name in "ac"} == current


def test_untag_gives_back_a_lightroom_sidecar_with_a_synonym(tmp_path: Path) -> None:
    # Lightroom writes a keyword's exported synonyms to dc:subject only.
    text = (LIBRARY / "lightroom.xmp").read_text(encoding="utf-8")
    text = text.replace(
        "<rdf:li>Paris</rdf:li>", "<rdf:li>Paris</rdf:li>\n     <rdf:li>Paname</rdf:li>"
    )
    library = Library(FIXTURES[2], tmp_path)
    make_photo(library.photo)
    library.sidecar.write_text(text, encoding="utf-8")
    original = tmp_path / "original.xmp"
    original.write_text(text, encoding="utf-8")
    library.tag(BASIC)
    library.untag()
    assert keywords(dump(library.sidecar)) == keywords(dump(original))


def test_a_persons_edit_made_after_tagging_survives_retagging_and_untag(tmp_path: Path) -> None:
    library = Library(FIXTURES[3], tmp_path)
    make_photo(library.photo)
    shutil.copyfile(library.original, library.sidecar)
    library.tag(BASIC)
    # The person adds a tag, and exiftool rewrites the whole file in its own layout.
    run_exiftool("-overwrite_original", "-XMP-digiKam:TagsList+=People/Bob", library.sidecar)
    edited = library.sidecar.read_bytes()
    stderr = library.tag(BASIC)
    assert summary(stderr, new=0, stale=0, current=1, tagged=0) in stderr  # record intact
    assert library.sidecar.read_bytes() == edited
    person = ["holiday", "places/France/Paris", "People/Bob"]
    library.tag(OTHER)
    tags_list = keywords(dump(library.sidecar))[FIELDS[TAGS_LIST]]
    assert tags_list[:3] == person and set(tags_list[3:]) == set(OTHER)
    library.untag()
    # The copies stay where the person has made the field their own; all else is as it was.
    after, before = dump(library.sidecar), dump(library.original)
    now, then = keywords(after), keywords(before)
    assert now[FIELDS[TAGS_LIST]] == person
    for name in (FIELDS[SUBJECT], FIELDS[HIERARCHICAL]):
        assert now[name][: len(then[name])] == then[name]
        # (Bob, People|Bob: copied there by the second run, and left by untag, like the
        # synonym in test_untag_gives_back_a_lightroom_sidecar_with_a_synonym.)
        assert not {*BASIC, *OTHER} & set(now[name][len(then[name]) :])
    ignored = {"XMP-x:XMPToolkit": None}  # exiftool's, since it rewrote the file
    assert {**others(after), **ignored} == {**others(before), **ignored}
    assert not record(after)
