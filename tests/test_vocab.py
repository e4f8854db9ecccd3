from __future__ import annotations

import pytest

from mkt_tag.errors import LabelFileError
from mkt_tag.thresholds import (
    labels_fingerprint,
    read_thresholds,
    read_thresholds_file,
    write_thresholds,
)
from mkt_tag.vocab import normalise, read_labels


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


def test_thresholds_header_round_trip(tmp_path):
    path = tmp_path / "t.tsv"
    write_thresholds(
        path, ["Cat", "dog"], [0.5, float("inf")], "from a test\nmodel: ignored", "m:1", "ab12"
    )
    found = read_thresholds_file(path)
    assert found.thresholds == {"cat": 0.5, "dog": 1e308}
    assert (found.model, found.model_fingerprint) == ("m:1", "ab12")  # the header line wins
    assert found.vocabulary == labels_fingerprint(["dog", "CAT"]) and found.vocabulary_size == 2
    assert labels_fingerprint(["cat", "dog"]) != labels_fingerprint(["cat", "dog", "owl"])


def test_thresholds_header_only_before_the_first_threshold(tmp_path):
    # an older eval wrote "# model: unknown"; a "#" line among the thresholds is a comment
    path = write(tmp_path, "# model: unknown\ncat\t0.5\n# model: later\ndog\t1\n", "t.tsv")
    found = read_thresholds_file(path)
    assert found.model == "" and found.thresholds == {"cat": 0.5, "dog": 1.0}
    path = write(tmp_path, "# model: runs/mine/best\ncat\t0.5\n", "old.tsv")
    assert read_thresholds_file(path).model == "runs/mine/best"  # older eval files: named


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


# --- tables, checking, editing ------------------------------------------------------------

from mkt_tag.vocab import add, check, diff, read_entries, remove  # noqa: E402

TABLE = (
    "# my vocabulary\n"
    "label\tprompts\tthreshold\taliases\n"
    "sofa\tsofa|a comfy couch\t0.05\tcouch|settee\n"
    "dog\t\t\tpuppy\n"
    "# birds later\n"
    "tree\t\t-0.1\t\n"
)


def test_tsv_columns(tmp_path):
    vocab = read_labels(write(tmp_path, TABLE, "v.tsv"))
    assert vocab.labels == ["sofa", "dog", "tree"]
    sofa, dog, tree = vocab.entries
    assert tree.threshold == -0.1 and tree.aliases == []
    assert sofa.prompts == ["sofa", "a comfy couch"] and sofa.texts == sofa.prompts
    assert sofa.aliases == ["couch", "settee"] and sofa.threshold == 0.05
    assert dog.texts == ["dog"] and dog.aliases == ["puppy"] and dog.threshold is None
    assert vocab.thresholds == {"sofa": 0.05, "tree": -0.1}
    assert sofa.line == 3


def test_csv_with_quotes(tmp_path):
    path = write(tmp_path, 'label,prompts\n"red, shiny car","a red car|a shiny car"\n', "v.csv")
    (entry,) = read_labels(path).entries
    assert entry.label == "red, shiny car" and entry.prompts == ["a red car", "a shiny car"]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("name\nsofa\n", "needs a 'label' column"),
        ("label\tcolour\nsofa\tred\n", "unknown column"),
        ("label\tthreshold\nsofa\thigh\n", "threshold 'high' is not a number"),
    ],
)
def test_bad_tables(tmp_path, content, reason):
    with pytest.raises(LabelFileError, match=reason):
        read_labels(write(tmp_path, content, "v.tsv"))


def count_words(text: str) -> int:
    return len(text.split())


def test_check_finds_every_kind_of_problem(tmp_path):
    path = write(
        tmp_path,
        "label\taliases\ncat\t\nCat \t\ncat\t\n\tkitty\n"
        "a b c d e\t\nodd\u200bword\t\nbrace{s}\t\nok\tone two three four five six\n",
        "v.tsv",
    )
    problems = check(path, count_words, max_tokens=4)
    text = "\n".join(problems)
    assert ":3: duplicate (case or spacing) of 'cat' on line 2" in text
    assert ":4: exact duplicate of 'cat'" in text
    assert ":5: empty label" in text
    assert ":6: 'a b c d e' is 5 tokens, more than the 4" in text
    assert ":7:" in text and "U+200B" in text
    assert ":8:" in text and "U+007B" in text
    assert ":9: 'one two three four five six' is 6 tokens" in text  # aliases are checked too
    assert len(problems) == 7


def test_check_clean_file(tmp_path):
    assert check(write(tmp_path, "cat\ndog\n"), count_words, max_tokens=10) == []


def test_add_keeps_comments_and_order(tmp_path):
    path = write(tmp_path, "# animals\ncat\n\n# more\ndog")
    added, skipped = add(path, ["horse", "CAT", "  ", "horse"])
    assert added == ["horse"] and skipped == ["CAT", "", "horse"]
    assert path.read_text() == "# animals\ncat\n\n# more\ndog\nhorse\n"
    added, _ = add(tmp_path / "new.txt", ["owl"])
    assert (tmp_path / "new.txt").read_text() == "owl\n" and added == ["owl"]


def test_add_and_remove_in_a_table(tmp_path):
    path = write(tmp_path, TABLE, "v.tsv")
    add(path, ["red car"])
    assert read_labels(path).labels == ["sofa", "dog", "tree", "red car"]
    removed, missing = remove(path, ["DOG", "zebra"])
    assert removed == ["DOG"] and missing == ["zebra"]
    text = path.read_text()
    assert "# my vocabulary" in text and "# birds later" in text and "puppy" not in text
    assert read_labels(path).labels == ["sofa", "tree", "red car"]
    sofa = read_labels(path).entries[0]
    assert sofa.aliases == ["couch", "settee"]  # other rows untouched


def test_remove_from_text_file(tmp_path):
    path = write(tmp_path, "# keep me\ncat\nDog\nbird\n")
    removed, missing = remove(path, ["dog"])
    assert removed == ["dog"] and missing == []
    assert path.read_text() == "# keep me\ncat\nbird\n"
    assert read_entries(path)[1].line == 3


def test_diff(tmp_path):
    old = write(tmp_path, TABLE, "old.tsv")
    new = write(
        tmp_path, TABLE.replace("0.05", "0.07").replace("tree", "oak") + "Dog\t\t\t\n", "new.tsv"
    )
    changes = diff(old, new)
    assert changes.added == ["oak"] and changes.removed == ["tree"] and changes.changed == ["sofa"]
