"""Fault injection: huge label files (issue "Nothing lost and nothing silently wrong", item 9).

A wrong file (a log, a dump, a word list of millions of lines) must fail in well under a
second with a message naming the file and the limit, before anything is tokenised.
Each test names its fault; each failed before the fix.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mkt_tag import vocab
from mkt_tag.cli import app
from mkt_tag.errors import EXIT_ERROR, LabelFileError
from tests.conftest import TINY_CONFIG, make_photo

runner = CliRunner()


def fails_fast(path: Path, match: str) -> str:
    """Reading ``path`` raises a one-line LabelFileError naming it, in under a second."""
    started = time.perf_counter()
    with pytest.raises(LabelFileError, match=match) as info:
        vocab.read_labels(path)
    assert time.perf_counter() - started < 1
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    return message


def test_huge_single_line_label_fails_at_once(tmp_path):
    """Fault: a 50 MB single-line label file failed only after 100 s and 4 GB (tokenising)."""
    path = tmp_path / "huge.txt"
    path.write_text("a" * 50_000_000 + "\n")
    message = fails_fast(path, "larger than")
    assert f"{vocab.MAX_LABEL_FILE_BYTES // 2**20} MiB" in message


def test_long_label_fails_before_tokenising(tmp_path):
    """Fault: one label of 5 million characters (within the file size limit) went to the
    tokenizer, which took minutes and gigabytes before calling it too long."""
    path = tmp_path / "long.txt"
    path.write_text("cat\n" + "a" * 5_000_000 + "\ndog\n")
    message = fails_fast(path, "line 2: a label, prompt or alias of 5,000,000 characters")
    assert f"{vocab.MAX_LABEL_CHARS:,}" in message


def test_long_alias_in_a_table_fails_before_tokenising(tmp_path):
    """Fault: a 100,000-character alias in a table went to the tokenizer."""
    path = tmp_path / "v.tsv"
    path.write_text("label\taliases\ncat\tkitty|" + "b" * 100_000 + "\n")
    fails_fast(path, "line 2: a label, prompt or alias of 100,000 characters")


def test_table_cell_past_the_csv_limit_is_a_clear_error(tmp_path):
    """Fault: a table cell of 2 million characters raised a traceback (the csv module's
    field limit, 131,072 characters)."""
    path = tmp_path / "v.tsv"
    path.write_text("label\taliases\ncat\tkitty\ndog\t" + "b" * 2_000_000 + "\n")
    fails_fast(path, "line 3: not a valid table row")


def test_millions_of_labels_fail_at_once(tmp_path):
    """Fault: a 2.6-million-line label file gave no output after 300 s at 3 GB."""
    path = tmp_path / "many.txt"
    path.write_text("".join(f"label{i}\n" for i in range(2_600_000)))
    message = fails_fast(path, "more than")
    assert f"{vocab.MAX_LABELS:,} labels" in message


def test_millions_of_aliases_fail_at_once(tmp_path):
    """Fault: a table of few rows but over a million aliases sent them all to the text tower."""
    path = tmp_path / "v.tsv"
    aliases = "|".join(["kitty"] * 20_000)
    path.write_text("label\taliases\n" + "".join(f"cat{i}\t{aliases}\n" for i in range(60)))
    message = fails_fast(path, "labels, prompts and aliases")
    assert f"{vocab.MAX_TEXTS:,}" in message


def test_label_limit_is_far_above_real_vocabularies(tmp_path):
    """Not a fault: the limits leave room for 100,000 labels (five times Open Images'
    classes) of real length, with prompts and aliases."""
    path = tmp_path / "big.tsv"
    row = "label number {i}\t{text} {i}|a photo of {text} {i}\t\t{text} {i} alias|other {i}\n"
    text = "a fairly long label text of forty chars"
    path.write_text(
        "label\tprompts\tthreshold\taliases\n"
        + "".join(row.format(i=i, text=text) for i in range(100_000))
    )
    assert path.stat().st_size < vocab.MAX_LABEL_FILE_BYTES
    assert len(vocab.read_labels(path).labels) == 100_000


def test_huge_label_file_on_the_command_line(tmp_path):
    """Fault, seen from `mkt-tag tag`: no output for minutes, then out of memory."""
    path = tmp_path / "many.txt"
    path.write_text("".join(f"label{i}\n" for i in range(vocab.MAX_LABELS + 1)))
    photo = make_photo(tmp_path / "a.jpg")
    started = time.perf_counter()
    result = runner.invoke(
        app, ["tag", str(photo), "--labels", str(path), "--model", str(TINY_CONFIG)]
    )
    assert time.perf_counter() - started < 5  # the label file is refused before the model loads
    assert result.exit_code == EXIT_ERROR
    assert result.stderr.count("\n") == 1 and str(path) in result.stderr


def test_model_refuses_a_huge_label_before_tokenising():
    """Fault: the Python API handed a 10-million-character label to the tokenizer."""
    from mkt_tag import checkpoints

    model = checkpoints.load(str(TINY_CONFIG))
    started = time.perf_counter()
    with pytest.raises(LabelFileError, match="characters"):
        model.encode_labels(["cat", "x" * 10_000_000], source="api")
    assert time.perf_counter() - started < 1
