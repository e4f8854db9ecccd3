"""Results files: layouts, round trips, resumable runs through the journal, bad files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mkt_tag.errors import InputFileError, OutputError
from mkt_tag.results import (
    ResultsFile,
    Tag,
    TagResult,
    image_key,
    read_results,
    write_results,
)

RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
DC = "http://purl.org/dc/elements/1.1/"


def result(path: str, **scores: float) -> TagResult:
    return TagResult(Path(path), [Tag(label, score) for label, score in scores.items()])


RESULTS = [
    result("photos/b.jpg", dog=0.912345, cat=0.1),
    result("photos/a, with comma.png", **{"café": 0.5, "beach": 0.75}),
    result("photos/nothing.gif"),
]


def files_in(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


# --- combined results -----------------------------------------------------------------


def test_tags_are_sorted_by_score() -> None:
    tags = result("a.jpg", low=0.1, high=0.9, tie_b=0.5, tie_a=0.5).tags
    assert [tag.label for tag in tags] == ["high", "tie_a", "tie_b", "low"]


@pytest.mark.parametrize("suffix", [".csv", ".json", ".jsonl"])
def test_results_round_trip(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"tags{suffix}"
    write_results(path, RESULTS)
    back = read_results(path)
    assert [str(item.path) for item in back] == [str(item.path) for item in RESULTS]
    assert back[0].tags == [Tag("dog", 0.9123), Tag("cat", 0.1)]
    assert back[1].tags == [Tag("beach", 0.75), Tag("café", 0.5)]
    assert back[2].tags == []


def test_csv_layout(tmp_path: Path) -> None:
    write_results(tmp_path / "tags.csv", RESULTS)
    assert (tmp_path / "tags.csv").read_text(encoding="utf-8") == (
        "path,tags,scores,run\n"
        "photos/b.jpg,dog|cat,0.9123|0.1000,\n"
        '"photos/a, with comma.png",beach|café,0.7500|0.5000,\n'
        "photos/nothing.gif,,,\n"
    )


def test_rows_record_their_run_and_files_without_it_still_read(tmp_path: Path) -> None:
    path = tmp_path / "tags.csv"
    write_results(path, [TagResult(Path("a.jpg"), [Tag("dog", 0.5)], run="5d0c")])
    assert path.read_text().splitlines()[1] == "a.jpg,dog,0.5000,5d0c"
    assert read_results(path)[0].run == "5d0c"
    path.write_text("path,tags,scores\na.jpg,dog,0.5000\n")  # mkt-tag 0.2
    assert read_results(path)[0] == TagResult(Path("a.jpg"), [Tag("dog", 0.5)], run="")
    write_results(tmp_path / "tags.jsonl", [TagResult(Path("a.jpg"), [], run="5d0c")])
    assert read_results(tmp_path / "tags.jsonl")[0].run == "5d0c"


def test_json_and_jsonl_layout(tmp_path: Path) -> None:
    write_results(tmp_path / "tags.json", RESULTS[:1])
    write_results(tmp_path / "tags.jsonl", RESULTS[:2])
    expected = {
        "path": "photos/b.jpg",
        "tags": [{"label": "dog", "score": 0.9123}, {"label": "cat", "score": 0.1}],
    }
    assert json.loads((tmp_path / "tags.json").read_text()) == [expected]
    lines = (tmp_path / "tags.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    assert json.loads(lines[0]) == expected


def test_unknown_results_extension(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match=r"tags\.xlsx: .*\.csv, \.json, \.jsonl"):
        write_results(tmp_path / "tags.xlsx", RESULTS)
    with pytest.raises(OutputError, match=r"tags\.txt"):
        ResultsFile(tmp_path / "tags.txt")


def test_csv_refuses_labels_containing_the_separator(tmp_path: Path) -> None:
    bad = [result("a.jpg", **{"rock|pop": 0.5})]
    with pytest.raises(OutputError, match=r"label 'rock\|pop' contains '\|'"):
        write_results(tmp_path / "tags.csv", bad)
    with pytest.raises(OutputError, match=r"label 'rock\|pop' contains '\|'"):
        ResultsFile(tmp_path / "tags.csv").add(bad)
    write_results(tmp_path / "tags.json", bad)  # fine where labels are quoted


def test_malformed_results_file_is_an_input_file_error(tmp_path: Path) -> None:
    (tmp_path / "tags.csv").write_text("name,labels\nx,y\n")
    with pytest.raises(InputFileError, match="header"):
        read_results(tmp_path / "tags.csv")


# --- ResultsFile: kill-safe, resumable ------------------------------------------------


BATCHES = [[RESULTS[0]], [RESULTS[1], RESULTS[2]]]


def uninterrupted(path: Path) -> bytes:
    results = ResultsFile(path)
    for batch in BATCHES:
        results.add(batch)
    results.finish()
    return path.read_bytes()


@pytest.mark.parametrize("suffix", [".csv", ".json", ".jsonl"])
def test_resumed_run_ends_with_the_same_bytes(
    tmp_path: Path, suffix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "clean").mkdir()
    expected = uninterrupted(tmp_path / "clean" / f"tags{suffix}")
    path = tmp_path / f"tags{suffix}"

    first = ResultsFile(path)
    first.add(BATCHES[0])  # ... then killed: no finish()
    first.close()  # what the end of a killed process does to its lock
    assert not path.exists()  # never a partial output
    journal = first.journal_path
    with journal.open("a", encoding="utf-8") as file:
        file.write('{"path": "photos/a, with comma.png", "tags": [{"lab')  # torn write

    second = ResultsFile(path)
    assert [str(item.path) for item in second.done().values()] == [str(tmp_path / "photos/b.jpg")]
    assert journal.read_text(encoding="utf-8").endswith("]}\n")  # the fragment is cut off
    second.add(BATCHES[1])  # ... killed again
    second.close()
    third = ResultsFile(path)
    assert sorted(third.done()) == sorted(str(tmp_path / item.path) for item in RESULTS)
    third.finish()
    assert path.read_bytes() == expected
    assert not journal.exists()


@pytest.mark.parametrize("suffix", [".csv", ".json", ".jsonl"])
def test_rounding_ties_serialise_the_same_after_reading_back(tmp_path: Path, suffix: str) -> None:
    # b outranks a in memory, but both are written as 0.8123: the order must not depend
    # on digits that were never written, or a resumed run would differ from a clean one.
    path = tmp_path / f"tags{suffix}"
    write_results(path, [result("x.jpg", b=0.81231, a=0.81229)])
    first = path.read_bytes()
    write_results(path, read_results(path))
    assert path.read_bytes() == first
    assert [tag.label for tag in read_results(path)[0].tags] == ["a", "b"]


def test_results_are_sorted_by_path_and_later_results_win(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    results = ResultsFile(tmp_path / "tags.jsonl")
    results.add([result("z.jpg", a=0.1), result("m.jpg", a=0.2)])
    results.add([result("z.jpg", b=0.3)])
    results.finish()
    back = read_results(tmp_path / "tags.jsonl")
    assert [(str(item.path), item.tags) for item in back] == [
        (str(tmp_path / "m.jpg"), [Tag("a", 0.2)]),
        (str(tmp_path / "z.jpg"), [Tag("b", 0.3)]),
    ]


def test_previous_output_is_kept_unless_overwrite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "tags.csv"
    write_results(path, [RESULTS[0]])  # a path as given, as earlier versions wrote them
    kept = ResultsFile(path)
    assert list(kept.done()) == [str(tmp_path / "photos/b.jpg")]
    kept.add([RESULTS[2]])
    kept.finish()
    # The earlier row keeps its spelling; the new one is absolute.
    assert [str(item.path) for item in read_results(path)] == [
        str(tmp_path / "photos/nothing.gif"),
        "photos/b.jpg",
    ]

    replaced = ResultsFile(path, overwrite=True)
    assert replaced.done() == {}
    replaced.add([RESULTS[1]])
    replaced.finish()
    assert [str(item.path) for item in read_results(path)] == [
        str(tmp_path / "photos/a, with comma.png")
    ]


def test_finish_without_results_writes_an_empty_file(tmp_path: Path) -> None:
    ResultsFile(tmp_path / "tags.json").finish()
    assert json.loads((tmp_path / "tags.json").read_text()) == []


def test_unreadable_previous_output_is_an_output_error(tmp_path: Path) -> None:
    (tmp_path / "tags.json").write_text("{not json")
    with pytest.raises(OutputError, match=r"tags\.json: malformed results file"):
        ResultsFile(tmp_path / "tags.json")
    assert ResultsFile(tmp_path / "tags.json", overwrite=True).done() == {}


def test_corrupt_journal_line_is_an_output_error(tmp_path: Path) -> None:
    journal = tmp_path / "tags.csv.partial.jsonl"
    journal.write_text('garbage\n{"path": "a.jpg", "tags": []}\n')
    with pytest.raises(OutputError, match="line 1 is corrupt"):
        ResultsFile(tmp_path / "tags.csv")


# --- one image, one row; one run at a time --------------------------------------------


def test_rows_are_keyed_by_image_and_written_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "photos")
    monkeypatch.chdir(tmp_path)
    results = ResultsFile(tmp_path / "tags.jsonl")
    for spelling in ["photos/a.jpg", "./photos/../photos/a.jpg", "link/a.jpg"]:
        assert image_key(Path(spelling)) == str(tmp_path / "photos" / "a.jpg")
        results.add([result(spelling, cat=0.5)])
    assert list(results.done()) == [str(tmp_path / "photos" / "a.jpg")]
    results.finish()
    # the spelling of the last run that tagged it, made absolute (symlinks kept)
    assert [str(item.path) for item in read_results(tmp_path / "tags.jsonl")] == [
        str(tmp_path / "link" / "a.jpg")
    ]


def test_a_second_opener_waits_for_the_first(tmp_path: Path) -> None:
    path = tmp_path / "tags.csv"
    first = ResultsFile(path)
    first.add([result("a.jpg", cat=0.5)])
    waited: list[Path] = []
    opened: list[ResultsFile] = []
    thread = threading.Thread(
        target=lambda: opened.append(ResultsFile(path, on_wait=waited.append)), daemon=True
    )
    thread.start()
    thread.join(0.5)
    assert thread.is_alive() and waited == [path]  # told, and waiting
    first.finish()
    thread.join(10)
    assert not thread.is_alive()
    second = opened[0]
    assert list(second.done()) == [image_key(Path("a.jpg"))]  # it sees what the first wrote
    second.finish()


def test_the_lock_of_a_killed_run_is_free_at_once(tmp_path: Path) -> None:
    path = tmp_path / "tags.csv"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from pathlib import Path\n"
            "from mkt_tag.results import ResultsFile\n"
            "results = ResultsFile(Path(sys.argv[1]))\n"
            "print('locked', flush=True)\n"
            "time.sleep(120)\n",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    finally:
        holder.kill()
    waited: list[Path] = []
    ResultsFile(path, on_wait=waited.append).finish()
    assert waited == []
    assert read_results(path) == []


def test_a_second_open_in_one_thread_is_an_error_not_a_deadlock(tmp_path: Path) -> None:
    first = ResultsFile(tmp_path / "tags.csv")
    with pytest.raises(OutputError, match="already open in this process"):
        ResultsFile(tmp_path / "tags.csv")
    first.close()
    ResultsFile(tmp_path / "tags.csv").close()


def test_the_folder_is_created_or_the_error_comes_at_open(tmp_path: Path) -> None:
    ResultsFile(tmp_path / "new" / "tags.csv").finish()
    assert read_results(tmp_path / "new" / "tags.csv") == []
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match=r"file/tags\.csv: cannot write"):
        ResultsFile(tmp_path / "file" / "tags.csv")


def test_an_unchanged_output_is_not_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "tags.csv"
    write_results(path, [result(str(tmp_path / "a.jpg"), cat=0.5)])
    os.utime(path, ns=(0, 0))
    ResultsFile(path).finish()
    assert path.stat().st_mtime_ns == 0
    results = ResultsFile(path)
    results.add([result(str(tmp_path / "b.jpg"), dog=0.5)])
    results.finish()
    assert path.stat().st_mtime_ns != 0 and len(read_results(path)) == 2


def test_two_rows_of_one_image_from_earlier_versions_become_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "tags.csv"
    write_results(path, [result(str(tmp_path / "a.jpg"), cat=0.5), result("a.jpg", dog=0.25)])
    ResultsFile(path).finish()
    assert [(str(item.path), item.tags) for item in read_results(path)] == [
        ("a.jpg", [Tag("dog", 0.25)])  # the later row in the file
    ]
