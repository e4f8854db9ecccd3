"""Labelled image sets: every format, +1/-1/0 targets, bad rows, bad files, the split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mkt_tag import datasets as data
from mkt_tag.errors import InputFileError
from mkt_tag.results import Tag, TagResult, write_results
from mkt_tag.sidecars import write_sidecar
from tests.conftest import make_photo

LABELS = ["cat", "dog", "beach", "traffic light"]


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "img"
    for i in range(4):
        make_photo(folder / f"{i}.png", size=(8, 8), seed=i)
    return folder


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def targets_of(loaded: data.LabelledImages) -> dict[str, list[int]]:
    return {p.name: row.tolist() for p, row in zip(loaded.paths, loaded.targets, strict=True)}


# --- formats ------------------------------------------------------------------------------


def test_csv_positives_negatives_unknown(tmp_path, images):
    source = write(
        tmp_path / "train.csv",
        "path,labels,negatives,unknown\n"
        "img/0.png,cat|dog,,beach\n"
        "img/1.png,Traffic  Light,cat,\n"  # labels match case- and space-insensitively
        "img/2.png,beach, dog ,cat|dog\n",  # positive wins over unknown, negative too
    )
    loaded = data.load(source, LABELS)
    assert loaded.labels == LABELS and loaded.source == source
    assert loaded.targets.dtype == np.int8
    assert targets_of(loaded) == {
        "0.png": [1, 1, 0, -1],  # not mentioned: negative; unknown: 0
        "1.png": [-1, -1, -1, 1],
        "2.png": [0, -1, 1, -1],
    }
    assert not loaded.problems


def test_tsv_and_separator_and_column_aliases(tmp_path, images):
    source = write(tmp_path / "train.tsv", "Image\tTags\nimg/0.png\tcat;beach\nimg/3.png\tdog\n")
    loaded = data.load(source, LABELS, separator=";")
    assert targets_of(loaded) == {"0.png": [1, -1, 1, -1], "3.png": [-1, 1, -1, -1]}


def test_csv_with_a_bom_and_quoted_cells(tmp_path, images):
    source = tmp_path / "train.csv"
    source.write_bytes('\ufeffpath,labels\n"img/0.png","cat|traffic light"\n'.encode())
    assert targets_of(data.load(source, LABELS)) == {"0.png": [1, -1, -1, 1]}


def test_jsonl_lists_strings_and_mkt_tag_results(tmp_path, images):
    source = write(
        tmp_path / "train.jsonl",
        json.dumps({"path": "img/0.png", "labels": ["cat", "dog"], "unknown": "beach"})
        + "\n\n"  # blank lines are fine
        + json.dumps({"path": "img/1.png", "labels": "beach|dog", "negatives": ["cat"]})
        + "\n"
        + json.dumps({"path": "img/2.png", "tags": [{"label": "cat", "score": 0.9}, "dog"]})
        + "\n",
    )
    assert targets_of(data.load(source, LABELS)) == {
        "0.png": [1, 1, 0, -1],
        "1.png": [-1, 1, 1, -1],
        "2.png": [1, 1, -1, -1],
    }


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv"])
def test_mkt_tag_results_files_train_as_they_are(tmp_path, images, suffix):
    results = [
        TagResult(images / "0.png", [Tag("cat", 0.9), Tag("beach", 0.2)]),
        TagResult(images / "1.png", [Tag("dog", 0.7)]),
    ]
    source = tmp_path / f"results{suffix}"
    write_results(source, results)
    assert targets_of(data.load(source, LABELS)) == {
        "0.png": [1, -1, 1, -1],
        "1.png": [-1, 1, -1, -1],
    }


def claimed(sidecar: Path, **extra: object) -> Path:
    """A JSON sidecar of mkt-tag, corrected by a person who then removed mkt-tag's record:
    its tags are the person's now (with the record, they are mkt-tag's and never count)."""
    document = json.loads(sidecar.read_text())
    document.pop("mkt-tag")
    sidecar.write_text(json.dumps({**document, **extra}))
    return sidecar


def test_folder_with_json_and_txt_sidecars(tmp_path):
    folder = tmp_path / "photos"
    a = make_photo(folder / "a.jpg", size=(8, 8))
    b = make_photo(folder / "sub" / "b.png", size=(8, 8), seed=1)
    c = make_photo(folder / "c.png", size=(8, 8), seed=2)
    make_photo(folder / "d.png", size=(8, 8), seed=3)  # no sidecar: no labels, left out
    claimed(write_sidecar(a, [Tag("cat", 0.8), Tag("dog", 0.1)], "json"))
    write_sidecar(b, [Tag("beach", 0.5)], "txt", naming="stem")
    # A corrected JSON sidecar may also name negatives and unknown labels.
    sidecar = write_sidecar(c, [Tag("dog", 0.5)], "json")
    claimed(sidecar, negatives=["cat"], unknown=["beach"])
    loaded = data.load(folder, LABELS, keep_unlabelled=True)
    assert targets_of(loaded) == {
        "a.jpg": [1, 1, -1, -1],
        "b.png": [-1, -1, 1, -1],
        "c.png": [-1, 1, 0, -1],
    }
    assert loaded.problems.counts == {data.NO_KEYWORDS: 1} and not loaded.problems
    training = data.load(folder, LABELS, keep_unlabelled=False)
    assert len(training) == 3
    assert training.problems.counts == {data.NO_KEYWORDS: 1}


def test_folder_with_a_broken_sidecar_is_reported(tmp_path):
    folder = tmp_path / "photos"
    a = make_photo(folder / "a.jpg", size=(8, 8))
    make_photo(folder / "b.jpg", size=(8, 8), seed=1)
    (folder / "b.jpg.json").write_text("{not json")
    claimed(write_sidecar(a, [Tag("cat", 0.8)], "json"))
    loaded = data.load(folder, LABELS, keep_unlabelled=False)
    assert [p.name for p in loaded.paths] == ["a.jpg"]
    assert loaded.problems.counts[data.BAD_SIDECAR] == 1
    assert "b.jpg.json" in loaded.problems.lines()[0]


def test_images_root(tmp_path, images):
    source = write(tmp_path / "lists" / "train.csv", "path,labels\n0.png,cat\n1.png,dog\n")
    with pytest.raises(InputFileError, match="no usable labelled images"):
        data.load(source, LABELS)  # relative to lists/: missing
    loaded = data.load(source, LABELS, images_root=images)
    assert loaded.paths == [images / "0.png", images / "1.png"]
    with pytest.raises(InputFileError, match="image folder not found"):
        data.load(source, LABELS, images_root=tmp_path / "nowhere")


def test_absolute_paths_ignore_the_root(tmp_path, images):
    source = write(tmp_path / "train.csv", f"path,labels\n{images / '2.png'},cat\n")
    assert data.load(source, LABELS, images_root=tmp_path).paths == [images / "2.png"]


# --- bad rows -----------------------------------------------------------------------------


def test_unknown_labels_are_counted_once_each_and_ignored(tmp_path, images):
    source = write(
        tmp_path / "train.csv",
        "path,labels,negatives\n"
        "img/0.png,cat|kitten|doge,\n"
        "img/1.png,dog|Kitten,puppy\n"
        "img/2.png,otter|bear|seal,\n",
    )
    loaded = data.load(source, LABELS)
    assert len(loaded) == 3
    assert targets_of(loaded)["1.png"] == [-1, 1, -1, -1]
    assert loaded.problems.counts == {data.UNKNOWN_LABELS: 6}  # kitten doge puppy otter bear seal
    line = loaded.problems.lines()[0]
    assert line.startswith("6 labels not in the vocabulary (ignored), e.g. 'kitten', 'doge'")
    assert line.count("'") == 2 * data.MAX_EXAMPLES
    with pytest.raises(InputFileError, match=r"--strict.*6 labels not in the vocabulary"):
        data.load(source, LABELS, strict=True)


def test_missing_images_duplicates_and_rows_without_labels(tmp_path, images):
    source = write(
        tmp_path / "train.csv",
        "path,labels\n"
        "img/0.png,cat\n"
        "img/gone.png,dog\n"
        "img/./0.png,dog\n"  # the same file again
        "img/1.png,\n"
        "img/2.png,seal\n"  # only labels outside the vocabulary
        ",cat\n",  # no path
    )
    loaded = data.load(source, LABELS, keep_unlabelled=False)
    assert [p.name for p in loaded.paths] == ["0.png"]
    assert loaded.problems.counts == {
        data.MISSING: 1,
        data.DUPLICATE: 1,
        data.UNLABELLED: 2,
        data.UNKNOWN_LABELS: 1,
        data.NO_PATH: 1,
    }
    lines = "\n".join(loaded.problems.lines())
    assert "gone.png" in lines and f"{source}:4" in lines and f"{source}:5" in lines
    kept = data.load(source, LABELS, keep_unlabelled=True)
    assert [p.name for p in kept.paths] == ["0.png", "1.png", "2.png"]
    with pytest.raises(InputFileError, match="--strict"):
        data.load(source, LABELS, strict=True)


def test_strict_passes_a_clean_file(tmp_path, images):
    source = write(tmp_path / "train.csv", "path,labels\nimg/0.png,cat\n")
    assert len(data.load(source, LABELS, strict=True)) == 1


def test_all_images_missing_says_why(tmp_path):
    source = write(tmp_path / "train.csv", "path,labels\na.png,cat\nb.png,dog\n")
    with pytest.raises(InputFileError) as caught:
        data.load(source, LABELS)
    message = str(caught.value)
    assert message.startswith(f"{source}: no usable labelled images (2 rows whose image is missing")
    assert "a.png" in message and "\n" not in message


@pytest.mark.parametrize(
    "name, text",
    [
        ("empty.csv", "path,labels\n"),
        ("empty.jsonl", "\n\n"),
        ("empty.json", "[]"),
    ],
)
def test_empty_dataset(tmp_path, name, text):
    with pytest.raises(InputFileError, match=r"no usable labelled images \(the file has no rows"):
        data.load(write(tmp_path / name, text), LABELS)


def test_empty_folder(tmp_path):
    (tmp_path / "photos").mkdir()
    with pytest.raises(InputFileError, match="no usable labelled images"):
        data.load(tmp_path / "photos", LABELS)


# --- bad files ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.csv", None, "file not found"),
        ("train.parquet", "x", "unknown data format: use .csv, .tsv, .jsonl"),
        ("blank.csv", "", r"cannot read as CSV"),
        ("bad.csv", 'path,labels\na.png,"cat\n', r"cannot read as CSV"),
        ("ragged.csv", "path,labels\na.png,cat,dog,more\n", r"cannot read as CSV"),
        ("latin1.csv", b"path,labels\n\xe9.png,cat\n", r"cannot read as CSV"),
        ("columns.csv", "file_name,label\na.png,cat\n", r"needs a 'path' and a 'labels' column"),
        ("tabs.csv", "path\tlabels\na.png\tcat\n", r"wrong separator\? TSV files need"),
        ("bad.jsonl", '{"path": "a.png"}\n{"path": \n', r"line 2: not JSON"),
        ("list.jsonl", '["a.png", "cat"]\n', r"record 1: expected an object"),
        ("bad.json", '[{"path": "a.png",', r"not JSON"),
        ("bin.jsonl", b"\xff\xfe\x00", r"cannot read"),
    ],
)
def test_bad_files_are_one_clear_error(tmp_path, name, content, message):
    source = tmp_path / name
    if isinstance(content, bytes):
        source.write_bytes(content)
    elif content is not None:
        source.write_text(content)
    with pytest.raises(InputFileError, match=message) as caught:
        data.load(source, LABELS)
    assert str(caught.value).startswith(str(source)) and "\n" not in str(caught.value)


def test_json_object_without_path_is_a_skipped_row(tmp_path, images):
    source = write(tmp_path / "train.jsonl", '{"labels": ["cat"]}\n{"path": "img/0.png"}\n')
    loaded = data.load(source, LABELS)
    assert loaded.problems.counts == {data.NO_PATH: 1}
    assert targets_of(loaded) == {"0.png": [-1, -1, -1, -1]}


# --- split and subsets --------------------------------------------------------------------


def test_split_is_seeded_disjoint_and_complete(tmp_path):
    rows = ["path,labels"]
    for i in range(20):
        make_photo(tmp_path / "img" / f"{i}.png", size=(4, 4), seed=i)
        rows.append(f"img/{i}.png,{LABELS[i % 4]}")
    loaded = data.load(write(tmp_path / "train.csv", "\n".join(rows)), LABELS)
    train, val = data.split(loaded, 0.25, seed=1)
    assert (len(train), len(val)) == (15, 5)
    assert sorted(train.paths + val.paths) == sorted(loaded.paths)
    again_train, again_val = data.split(loaded, 0.25, seed=1)
    assert again_val.paths == val.paths and again_train.paths == train.paths
    assert data.split(loaded, 0.25, seed=2)[1].paths != val.paths
    for part in (train, val):
        for path, row in zip(part.paths, part.targets, strict=True):
            assert (row == loaded.targets[loaded.paths.index(path)]).all()
    assert data.split(loaded, 0.01, seed=0)[1].paths.__len__() == 1  # at least one
    with pytest.raises(ValueError):
        data.split(loaded, 1.0, seed=0)


def test_split_of_too_few_images(tmp_path, images):
    loaded = data.load(write(tmp_path / "train.csv", "path,labels\nimg/0.png,cat\n"), LABELS)
    with pytest.raises(InputFileError, match=r"too few images \(1\).*give --val"):
        data.split(loaded, 0.1, seed=0)


def test_subset(tmp_path, images):
    loaded = data.load(
        write(tmp_path / "t.csv", "path,labels\nimg/0.png,cat\nimg/1.png,dog\n"), LABELS
    )
    part = loaded.subset([1])
    assert [p.name for p in part.paths] == ["1.png"] and part.targets.tolist() == [[-1, 1, -1, -1]]
