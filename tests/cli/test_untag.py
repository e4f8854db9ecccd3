"""`mkt-tag untag` through Typer's CliRunner: folders, --dry-run, every sidecar format, and
the files it cannot clean."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner, Result

from mkt_tag.cli import app
from mkt_tag.errors import EXIT_PARTIAL
from mkt_tag.records import RunIdentity
from mkt_tag.results import Tag
from mkt_tag.sidecar_paths import sidecar_path
from mkt_tag.sidecars import read_sidecar_tags, write_sidecar
from tests.conftest import DATA, make_photo

runner = CliRunner()
RUN = RunIdentity("tiny", "0123abcd", "fedc9876", "top 2")
TAGS = [Tag("dog", 0.9), Tag("beach", 0.4)]


def untag(*args: str | Path) -> Result:
    return runner.invoke(app, ["untag", *map(str, args)])


def listed(stdout: str) -> list[tuple[str, list[str], bool]]:
    """Each line "sidecar<TAB>labels[; ... deleted]": the sidecar, the labels it held, and
    whether it is (or would be) deleted."""
    lines = []
    for line in stdout.splitlines():
        path, rest = line.split("\t")
        labels, _, note = rest.partition(";")
        lines.append((path, labels.split(", "), "deleted" in note))
    return lines


def files(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def tagged(image: Path, fmt: str = "xmp", naming: str = "full", person: Path | None = None) -> Path:
    """``image`` (made if missing) with a sidecar mkt-tag wrote into, over ``person``'s."""
    if not image.exists():
        make_photo(image)
    if person is not None:
        shutil.copyfile(person, sidecar_path(image, fmt, naming))
    return write_sidecar(image, TAGS, fmt, naming, RUN)


def test_untag_a_folder_recursively(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    darktable = tagged(folder / "a.jpg", person=DATA / "library" / "darktable.jpg.xmp")
    lightroom = tagged(folder / "b.jpg", naming="stem", person=DATA / "library" / "lightroom.xmp")
    mine = tagged(folder / "sub" / "c.png")  # only mkt-tag's: deleted
    deep = tagged(folder / "sub" / "deeper" / "d.jpg", "json")
    make_photo(folder / "e.jpg")  # no sidecar at all
    before = files(folder)

    shallow = untag(folder)
    assert shallow.exit_code == 0, shallow.output
    assert listed(shallow.stdout) == [
        (str(darktable), ["dog", "beach"], False),
        (str(lightroom), ["dog", "beach"], False),
    ]
    assert "3 images: removed mkt-tag's tags from 2 sidecars, failed 0" in shallow.stderr
    assert files(folder / "sub") == {
        name[len("sub/") :]: data for name, data in before.items() if name.startswith("sub/")
    }

    result = untag(folder, "-r")
    assert result.exit_code == 0, result.output
    assert listed(result.stdout) == [
        (str(mine), ["dog", "beach"], True),
        (str(deep), ["dog", "beach"], True),
    ]
    assert (
        "5 images: removed mkt-tag's tags from 2 sidecars (2 left empty and deleted), failed 0"
        in result.stderr
    )
    assert not mine.exists() and not deep.exists()
    assert read_sidecar_tags(darktable, "xmp") == read_sidecar_tags(
        DATA / "library" / "darktable.jpg.xmp", "xmp"
    )
    assert b"mkt-tag" not in darktable.read_bytes() + lightroom.read_bytes()


def test_dry_run_changes_nothing_and_lists_the_same(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    tagged(folder / "a.jpg", person=DATA / "library" / "digikam.jpg.xmp")
    tagged(folder / "b.jpg", "json")
    tagged(folder / "sub" / "c.jpg")
    (folder / "sub" / "c.jpg.txt").write_text("dog, beach\n")
    before = files(folder)
    dry = untag(folder, "-r", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert files(folder) == before
    assert (
        "3 images: would remove mkt-tag's tags from 3 sidecars (2 left empty and deleted), "
        "failed 0" in dry.stderr
    )
    real = untag(folder, "-r")
    assert real.exit_code == 0, real.output
    assert listed(real.stdout) == listed(dry.stdout)
    assert [deleted for _, _, deleted in listed(real.stdout)] == [False, True, True]
    assert real.stderr == dry.stderr.replace("would remove", "removed")
    assert files(folder) != before


def test_a_json_sidecar_keeps_the_persons_labels_and_fields(tmp_path: Path) -> None:
    image = tmp_path / "photo.jpg"
    make_photo(image)
    sidecar = tmp_path / "photo.jpg.json"
    theirs = {"tags": [{"label": "sea", "score": 0.6}, "Anna"], "note": "from another tool"}
    sidecar.write_text(json.dumps(theirs))
    write_sidecar(image, [Tag("dog", 0.9), Tag("sea", 0.5)], "json", run=RUN)
    assert "mkt-tag" in json.loads(sidecar.read_text())
    result = untag(image)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{sidecar}\tdog, sea\n"
    assert json.loads(sidecar.read_text()) == theirs  # sea was theirs: it stays as they wrote it


def test_a_sidecar_only_mkt_tag_wrote_is_deleted(tmp_path: Path) -> None:
    xmp = tagged(tmp_path / "a.jpg")
    json_sidecar = tagged(tmp_path / "b.jpg", "json", "stem")
    result = untag(tmp_path / "a.jpg", tmp_path / "b.jpg")
    assert result.exit_code == 0, result.output
    assert not xmp.exists() and not json_sidecar.exists()
    assert "(2 left empty and deleted)" in result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.jpg", "b.jpg"]


def test_a_txt_sidecar_is_left_alone(tmp_path: Path) -> None:
    image = tmp_path / "photo.jpg"
    make_photo(image)
    txt = write_sidecar(image, TAGS, "txt")
    result = untag(image)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "1 images: removed mkt-tag's tags from 0 sidecars, failed 0" in result.stderr
    assert txt.read_text() == "dog, beach\n"


def test_a_sidecar_without_mkt_tags_record_is_left_alone(tmp_path: Path) -> None:
    image = tmp_path / "photo.jpg"
    make_photo(image)
    for name in ["photo.jpg.xmp", "photo.xmp"]:
        shutil.copyfile(DATA / "library" / "exiftool.jpg.xmp", tmp_path / name)
    (tmp_path / "photo.json").write_text('{"tags": ["dog"]}')
    before = files(tmp_path)
    result = untag(image)
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and files(tmp_path) == before


def test_a_malformed_sidecar_fails_alone(tmp_path: Path) -> None:
    good = tagged(tmp_path / "a.jpg", person=DATA / "library" / "exiftool.jpg.xmp")
    make_photo(tmp_path / "b.jpg")
    broken = tmp_path / "b.jpg.xmp"
    broken.write_text("<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF>")
    damaged = tagged(tmp_path / "c.jpg", "json")
    damaged.write_text(damaged.read_text().replace('"run": "', '"run": 7, "was": "'))
    make_photo(tmp_path / "d.jpg")
    (tmp_path / "d.xmp").write_text("not xml")
    before = {path: path.read_bytes() for path in (broken, damaged, tmp_path / "d.xmp")}
    result = untag(tmp_path)
    assert result.exit_code == EXIT_PARTIAL
    failures = [line for line in result.stderr.splitlines() if line.startswith("failed:")]
    assert len(failures) == 3
    for path, line in zip([broken, damaged, tmp_path / "d.xmp"], failures, strict=True):
        assert str(path) in line and "fix or delete it" in line
    assert "4 images: removed mkt-tag's tags from 1 sidecars, failed 3 (listed above)" in (
        result.stderr
    )
    assert result.stdout == f"{good}\tdog, beach\n"  # the rest is done
    assert b"mkt-tag" not in good.read_bytes()
    assert {path: path.read_bytes() for path in before} == before
    assert "Traceback" not in result.output


def test_photos_mkt_tag_cannot_read_are_included(tmp_path: Path) -> None:
    jxl = tmp_path / "photo.jxl"
    jxl.write_bytes(b"\xff\x0a not decoded")
    sidecar = write_sidecar(jxl, TAGS, "xmp", run=RUN)
    raw = tmp_path / "raw.cr2"
    raw.write_bytes(b"II*\x00 not decoded")
    shutil.copyfile(DATA / "library" / "lightroom.xmp", tmp_path / "raw.xmp")
    raw_sidecar = write_sidecar(raw, TAGS, "xmp", "stem", RUN)
    result = untag(tmp_path)
    assert result.exit_code == 0, result.output
    assert sorted(listed(result.stdout)) == [
        (str(sidecar), ["dog", "beach"], True),
        (str(raw_sidecar), ["dog", "beach"], False),
    ]
    assert "2 images: removed mkt-tag's tags from 2 sidecars" in result.stderr
    assert read_sidecar_tags(raw_sidecar, "xmp") == ["France", "Paris", "Places", "holiday"]


def test_a_missing_path_is_one_failure(tmp_path: Path) -> None:
    sidecar = tagged(tmp_path / "a.jpg")
    result = untag(tmp_path / "a.jpg", tmp_path / "missing.jpg")
    assert result.exit_code == EXIT_PARTIAL
    failures = [line for line in result.stderr.splitlines() if line.startswith("failed:")]
    assert len(failures) == 1 and "missing.jpg" in failures[0] and "not found" in failures[0]
    assert not sidecar.exists()


def test_help_has_an_example() -> None:
    result = runner.invoke(app, ["untag", "--help"])
    assert result.exit_code == 0
    assert "--dry-run" in result.stdout and "mkt-tag untag ~/Photos -r --dry-run" in result.stdout
