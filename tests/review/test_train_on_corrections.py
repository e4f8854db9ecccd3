"""The corrections file of a review is a data set as it stands: `train --data` trains on it,
`eval --data` tests on it and `eval --calibrate` fits thresholds to it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mkt_tag.cli import app
from mkt_tag.results import Tag, TagResult, write_results
from mkt_tag.review import open_review
from tests.cli.test_train import COLOURS, colour_photo
from tests.conftest import TINY_CONFIG

runner = CliRunner()
FAST = ["--model", str(TINY_CONFIG), "--workers", "0", "--device", "cpu"]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def corrections(tmp_path: Path) -> dict[str, Path]:
    """12 colour photos whose tags a person corrected: each one's wrong colour rejected;
    half of them marked reviewed, the others' right colour accepted but on photo 1; a
    colour added to photo 11."""
    colours = list(COLOURS)
    results = []
    for i in range(12):
        colour, wrong = colours[i % 3], colours[(i + 1) % 3]
        path = colour_photo(tmp_path / "img" / f"{i}.png", colour, seed=i)
        results.append(TagResult(path, [Tag(colour, 0.6), Tag(wrong, 0.55)]))
    write_results(tmp_path / "tags.csv", results)
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(colours) + "\n")
    review = open_review(tmp_path / "tags.csv", labels)
    for photo in review.photos:
        wrong = photo.tags[1].label
        review.decide(photo.id, wrong, "reject")
        if photo.id % 2 == 0:
            review.mark_reviewed(photo.id)
        elif photo.id != 1:
            review.decide(photo.id, photo.tags[0].label, "accept")
    review.decide(11, "red", "accept")
    return {"data": tmp_path / "tags.corrections.jsonl", "labels": labels, "root": tmp_path}


def test_train_and_eval_read_the_corrections(corrections):
    data, labels, root = corrections["data"], corrections["labels"], corrections["root"]
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    assert len(rows) == 12 and sum(row["unknown"] == "*" for row in rows) == 6
    result = runner.invoke(
        app,
        [
            *("train", "--data", data, "--val", data, "--labels", labels, "--out", root / "run"),
            *("--stage", "1", "--epochs", "1", "--warmup-epochs", "0", "-b", "4", *FAST),
        ],
    )
    assert result.exit_code == 0, result.output
    # Photo 1 has only a rejection: train, as for any data set, skips an image without a
    # positive label (validation and eval keep it).
    assert "1 rows without a vocabulary label (skipped), e.g." in result.stderr
    assert "training on 11 images, validating on 12, 3 labels" in result.stderr
    assert (root / "run" / "best" / "model.safetensors").exists()
    result = runner.invoke(
        app,
        [
            *("eval", "--data", data, "--labels", labels, "--model", root / "run" / "best"),
            *("--out", root / "eval", "--calibrate", root / "thresholds.tsv"),
            *("--min-positives", "1", "--workers", "0", "--device", "cpu"),
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((root / "eval" / "metrics.json").read_text())
    assert metrics and (root / "thresholds.tsv").read_text().count("\n") >= 3
