"""Merging results files: any format in and out, the order of one run, nothing lost silently."""

from __future__ import annotations

from pathlib import Path

import pytest

from mkt_tag.errors import InputFileError, OutputError
from mkt_tag.merge import merge
from mkt_tag.results import Tag, TagResult, read_results, write_results

RUN = "a1b2c3d4e5f6a7b8"
OTHER_RUN = "ffffeeeeddddcccc"


def row(path: Path, *tags: tuple[str, float], run: str = RUN) -> TagResult:
    return TagResult(path, [Tag(label, score) for label, score in tags], run)


@pytest.fixture
def rows(tmp_path) -> list[TagResult]:
    """Twelve images in two folders, the order of a results file."""
    return [
        row(tmp_path / folder / f"{i}.jpg", ("cat", 0.5 + i / 100), ("dog", 0.12345 * i / 10))
        for folder in ("a", "b")
        for i in range(6)
    ]


def test_mixed_formats_merge_into_the_file_one_run_writes(tmp_path, rows):
    whole = tmp_path / "whole.json"
    write_results(whole, rows)
    parts = [tmp_path / "p1.csv", tmp_path / "p2.jsonl", tmp_path / "p3.json"]
    # Parts in any order, each in any order: the merge sorts as ResultsFile.finish does.
    write_results(parts[0], rows[8:] + rows[:2])
    write_results(parts[1], list(reversed(rows[2:5])))
    write_results(parts[2], rows[5:8])
    for suffix in (".json", ".csv", ".jsonl"):
        out = tmp_path / f"merged{suffix}"
        report = merge(out, parts)
        assert report.complete and report.rows == report.read == 12 and report.runs == {RUN: 12}
        if suffix == ".json":
            assert out.read_bytes() == whole.read_bytes()
        assert [(r.path, r.tags, r.run) for r in read_results(out)] == [
            (r.path, [Tag(t.label, round(t.score, 4)) for t in r.tags], r.run) for r in rows
        ]


def test_identical_duplicates_are_written_once(tmp_path, rows):
    write_results(tmp_path / "p1.csv", rows[:7])
    write_results(tmp_path / "p2.json", rows[5:])  # 5 and 6 in both, rounded the same
    report = merge(tmp_path / "out.csv", [tmp_path / "p1.csv", tmp_path / "p2.json"])
    assert report.rows == 12 and report.read == 14
    assert [(d.path, d.identical) for d in report.duplicates] == [
        (rows[5].path, True),
        (rows[6].path, True),
    ]
    assert report.complete and report.conflicts == []


def test_conflicting_duplicates_keep_the_later_part_and_are_reported(tmp_path, rows):
    first, later = tmp_path / "p1.csv", tmp_path / "p2.csv"
    write_results(first, rows)
    changed = row(rows[3].path, ("dog", 0.9))
    write_results(later, [changed])
    report = merge(tmp_path / "out.jsonl", [first, later])
    assert not report.complete
    assert [(d.path, d.first, d.kept) for d in report.conflicts] == [(rows[3].path, first, later)]
    merged = {r.path: r for r in read_results(tmp_path / "out.jsonl")}
    assert merged[rows[3].path].tags == [Tag("dog", 0.9)] and len(merged) == 12


def test_one_image_spelled_two_ways_is_one_image(tmp_path, rows):
    (tmp_path / "a").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "a")
    write_results(tmp_path / "p1.csv", rows[:1])
    write_results(tmp_path / "p2.csv", [TagResult(tmp_path / "link" / "0.jpg", rows[0].tags, RUN)])
    report = merge(tmp_path / "out.csv", [tmp_path / "p1.csv", tmp_path / "p2.csv"])
    assert report.rows == 1 and report.duplicates[0].identical


def test_parts_of_different_runs_are_refused_unless_forced(tmp_path, rows):
    first, other = tmp_path / "tags.shard-1-of-2.csv", tmp_path / "tags.shard-2-of-2.csv"
    write_results(first, rows[:6])
    write_results(other, [row(r.path, ("cat", 0.5), run=OTHER_RUN) for r in rows[6:]])
    out = tmp_path / "out.csv"
    with pytest.raises(InputFileError) as raised:
        merge(out, [first, other])
    message = str(raised.value)
    assert message.startswith(f"{other}: its rows are from run {OTHER_RUN[:12]}, those of {first}")
    assert "--force" in message and not out.exists()
    report = merge(out, [first, other], force=True)
    assert report.runs == {RUN: 6, OTHER_RUN: 6} and report.rows == 12
    mixed = tmp_path / "mixed.csv"
    write_results(mixed, [rows[0], row(rows[1].path, run="")])  # "" (unknown) is a run too
    with pytest.raises(InputFileError, match="its rows are from runs a1b2c3d4e5f6 and"):
        merge(out, [mixed])


def test_missing_shards_are_named_from_the_parts_names(tmp_path, rows):
    parts = [tmp_path / f"tags.shard-{i}-of-5.csv" for i in range(1, 6)]
    chunks = (rows[:3], rows[3:6], rows[6:9], rows[9:11], rows[11:])
    for part, chunk in zip(parts, chunks, strict=True):
        write_results(part, chunk)
    (tmp_path / "tags.shard-4-of-5.json.partial.jsonl").write_text("")  # shard 4 was killed
    parts[3].unlink()
    parts[1].unlink()
    given = [parts[0], parts[2], parts[4].with_suffix(".json")]
    write_results(given[2], read_results(parts[4]))
    parts[4].unlink()
    write_results(tmp_path / "tags.shard-2-of-5.jsonl", rows[3:6])  # there, not given
    report = merge(tmp_path / "tags.csv", given)
    assert [(m.path.name, m.unfinished, m.exists) for m in report.missing_parts] == [
        ("tags.shard-2-of-5.jsonl", False, True),
        ("tags.shard-4-of-5.csv", True, False),
    ]
    assert not report.complete and report.rows == 7
    everything = [*given, tmp_path / "tags.shard-2-of-5.jsonl"]
    (tmp_path / "tags.shard-4-of-5.json.partial.jsonl").unlink()
    write_results(tmp_path / "tags.shard-4-of-5.csv", rows[9:11])
    report = merge(tmp_path / "tags.csv", [*everything, tmp_path / "tags.shard-4-of-5.csv"])
    assert report.complete and report.rows == 12


def test_a_part_whose_run_was_interrupted_is_reported(tmp_path, rows):
    part = tmp_path / "tags.csv"
    write_results(part, rows)
    (tmp_path / "tags.csv.partial.jsonl").write_text("")
    report = merge(tmp_path / "out.csv", [part])
    assert report.interrupted == [part] and not report.complete


def test_expected_images_without_a_row_are_named(tmp_path, rows):
    for result in rows[:11]:
        result.path.parent.mkdir(exist_ok=True)
        result.path.touch()
    (tmp_path / "a" / "new.jpg").touch()
    part = tmp_path / "tags.jsonl"
    write_results(part, rows[:4] + rows[5:])
    report = merge(tmp_path / "out.csv", [part], expect=[tmp_path / "a", tmp_path / "b"])
    assert report.missing == [tmp_path / "a" / "4.jpg", tmp_path / "a" / "new.jpg"]
    assert report.unexpected == [rows[11].path] and not report.complete
    with pytest.raises(InputFileError, match="nowhere"):
        merge(tmp_path / "out.csv", [part], expect=[tmp_path / "nowhere"])


def test_bad_parts_and_outputs_leave_the_output_untouched(tmp_path, rows):
    out = tmp_path / "out.csv"
    out.write_text("old\n")
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    write_results(good, rows)
    bad.write_text("path,tags\n")
    with pytest.raises(InputFileError, match=f"^{bad}: malformed results file"):
        merge(out, [good, bad])
    with pytest.raises(InputFileError, match=r"missing\.csv"):
        merge(out, [good, tmp_path / "missing.csv"])
    assert out.read_text() == "old\n"
    with pytest.raises(OutputError, match=r"out\.txt: use a \.csv, \.json or \.jsonl"):
        merge(tmp_path / "out.txt", [good])
    piped = tmp_path / "piped.json"
    write_results(piped, [row(rows[0].path, ("a|b", 0.5))])  # "|" cannot go into a CSV cell
    with pytest.raises(OutputError, match=r"contains '\|'"):
        merge(out, [good, piped])
    assert out.read_text() == "old\n"


def test_the_output_may_be_one_of_the_parts(tmp_path, rows):
    part, other = tmp_path / "tags.csv", tmp_path / "more.json"
    write_results(part, rows[:6])
    write_results(other, rows[6:])
    assert merge(part, [part, other]).rows == 12
    assert len(read_results(part)) == 12
