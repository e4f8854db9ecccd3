"""The paper's protocol: each row of `mkt-tag eval` is what a vocabulary of the row's labels
alone gives. The ZSL row of ``eval --unseen U`` equals the all-labels row of an eval whose
vocabulary is U (its phrasings and aliases included); the seen row likewise."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from tests.cli.test_eval import invoke, stored
from tests.conftest import TINY_CONFIG, make_photo

HEADER = "label\tprompts\taliases\n"
ENTRIES = {  # label -> its .tsv line: phrasings and aliases are candidates of their own
    "cat": "cat\ta cat|a small cat\tkitten\n",
    "dog": "dog\t\tpuppy|hound\n",
    "sunset": "sunset\t\tdusk\n",
    "beach": "beach\tsand by the sea\t\n",
    "snow": "snow\twhite snow|snowfall\tsleet\n",
    "tree": "tree\t\t\n",
}
UNSEEN = ["beach", "snow", "tree"]
SEEN = ["cat", "dog", "sunset"]
KS = (1, 2, 3, 5)  # 5: more than a row's labels (every label predicted)


def write_vocabulary(path: Path, labels: list[str]) -> Path:
    path.write_text(HEADER + "".join(ENTRIES[label] for label in labels), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 random photos; each label positive, unknown or negative at random (some photos
    have no positive at all)."""
    root = tmp_path_factory.mktemp("protocol")
    rng = np.random.default_rng(7)
    rows = []
    for number in range(24):
        make_photo(root / "img" / f"{number}.jpg", seed=100 + number)
        draw = rng.random(len(ENTRIES))
        positives = [label for label, x in zip(ENTRIES, draw, strict=True) if x < 0.35]
        unknown = [label for label, x in zip(ENTRIES, draw, strict=True) if 0.35 <= x < 0.45]
        rows.append((f"img/{number}.jpg", "|".join(positives), "|".join(unknown)))
    with (root / "data.csv").open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["path", "labels", "unknown"])
        writer.writerows(rows)
    write_vocabulary(root / "all.tsv", list(ENTRIES))
    write_vocabulary(root / "unseen.tsv", UNSEEN)  # the same lines as in all.tsv
    write_vocabulary(root / "seen.tsv", SEEN)
    (root / "unseen.txt").write_text("\n".join(UNSEEN) + "\n", encoding="utf-8")
    return root


def evaluated(world: Path, out: Path, labels: Path, *more: str | Path) -> dict:
    ks = [word for k in KS for word in ("--k", str(k))]
    result = invoke(
        "--data", world / "data.csv", "--labels", labels, "--model", TINY_CONFIG,
        "--workers", "0", "--cache-dir", world / "cache", "--reference-map", "--out", out,
        *ks, *more,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return json.loads((out / "metrics.json").read_text())["rows"]


def assert_same_row(mine: dict, theirs: dict) -> None:
    assert mine["labels"] == theirs["labels"]
    assert mine["labels_with_positives"] == theirs["labels_with_positives"]
    for key in ("map", "map_reference"):
        assert mine[key] == pytest.approx(theirs[key], abs=1e-6), key
    for k in map(str, KS):
        for key in ("true_positives", "predicted", "positives"):
            assert mine["at_k"][k][key] == theirs["at_k"][k][key], (k, key)
        for key in ("precision", "recall", "f1"):
            assert mine["at_k"][k][key] == pytest.approx(theirs["at_k"][k][key], abs=1e-6)


@pytest.mark.parametrize("streams", ["both", "global"])
def test_each_row_is_its_labels_alone(world, tmp_path, streams):
    """ZSL row = the unseen labels' vocabulary alone, seen row = the seen labels' alone, for
    MKT's fusion and for one stream (whose normalisation also depends on the labels)."""
    flags = ("--streams", streams)
    rows = evaluated(
        world, tmp_path / "all", world / "all.tsv", "--unseen", world / "unseen.txt",
        "--save-scores", tmp_path / "all.npz", *flags,
    )  # fmt: skip
    unseen_alone = evaluated(
        world, tmp_path / "unseen", world / "unseen.tsv", "--save-scores", tmp_path / "u.npz",
        *flags,
    )  # fmt: skip
    seen_alone = evaluated(world, tmp_path / "seen", world / "seen.tsv", *flags)
    assert_same_row(rows["ZSL"], unseen_alone["GZSL"])
    assert_same_row(rows["seen"], seen_alone["GZSL"])
    # what `eval` did before: fuse over all labels, then read the unseen columns
    everything, alone = stored(tmp_path / "all.npz"), stored(tmp_path / "u.npz")
    assert everything["global_scores"].shape == (24, 6 + 5)  # 6 labels and 5 aliases
    assert not np.allclose(everything["scores"][:, everything["unseen"]], alone["scores"])


def test_saved_scores_give_the_same_rows_with_other_unseen_labels(world, tmp_path):
    """The scores file keeps the streams: `--scores` with another `--unseen` fuses again."""
    evaluated(world, tmp_path / "all", world / "all.tsv", "--save-scores", tmp_path / "all.npz")
    (tmp_path / "u.txt").write_text("cat\ntree\n", encoding="utf-8")
    ks = [word for k in KS for word in ("--k", str(k))]
    result = invoke(
        "--scores", tmp_path / "all.npz", "--unseen", tmp_path / "u.txt", "--reference-map",
        "--out", tmp_path / "again", *ks,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "fused scores only" not in result.stderr
    rows = json.loads((tmp_path / "again" / "metrics.json").read_text())["rows"]
    alone = write_vocabulary(tmp_path / "cat-tree.tsv", ["cat", "tree"])
    assert_same_row(rows["ZSL"], evaluated(world, tmp_path / "ct", alone)["GZSL"])
