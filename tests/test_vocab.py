from __future__ import annotations

import pytest

from mkt_tag.errors import LabelFileError
from mkt_tag.vocab import normalise, read_labels, read_thresholds


def write(tmp_path, content: str | bytes, name: str = "labels.txt"):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def test_comments_blank_lines_and_bom(tmp_path):
    path = write(tmp_path, "\ufeffcat\n# a comment\n\n   \n  dog  \r\nred   car\n".encode())
    vocab = read_labels(path)
    assert vocab.labels == ["cat", "dog", "red car"]
    assert vocab.warnings == []


def test_duplicates_warn_with_line_numbers(tmp_path):
    vocab = read_labels(write(tmp_path, "Cat\ndog\ncat\nDOG \n"))
    assert vocab.labels == ["Cat", "dog"]
    assert len(vocab.warnings) == 2
    assert ":3: duplicate label 'cat'" in vocab.warnings[0]
    assert "line 1" in vocab.warnings[0]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("", "no labels"),
        ("# only\n# comments\n\n", "no labels"),
        (b"\xff\xfe\x00bad", "not UTF-8"),
        (b"cat\x00dog", "binary file"),
    ],
)
def test_bad_label_files(tmp_path, content, reason):
    path = write(tmp_path, content)
    with pytest.raises(LabelFileError, match=reason) as info:
        read_labels(path)
    assert str(path) in str(info.value)


def test_missing_and_directory(tmp_path):
    with pytest.raises(LabelFileError, match="file not found"):
        read_labels(tmp_path / "nope.txt")
    with pytest.raises(LabelFileError, match="is a directory"):
        read_labels(tmp_path)


def test_thresholds(tmp_path):
    path = write(tmp_path, "# label\tthreshold\nCat\t0.5\ntraffic  light\t-0.25\n", "t.tsv")
    assert read_thresholds(path) == {"cat": 0.5, "traffic light": -0.25}
    assert normalise(" Traffic   LIGHT ") == "traffic light"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("cat 0.5\n", "expected 'label<TAB>threshold'"),
        ("cat\thigh\n", "'high' is not a number"),
        ("cat\tnan\n", "finite"),
        ("\n", "no thresholds"),
    ],
)
def test_bad_thresholds(tmp_path, content, reason):
    with pytest.raises(LabelFileError, match=reason):
        read_thresholds(write(tmp_path, content, "t.tsv"))
