"""Training embeds each label as `tag` and `eval` do: its phrasings (averaged) and aliases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mkt_tag import checkpoints
from mkt_tag.evaluate.job import EvalSettings, ScoringSettings, evaluate_model
from mkt_tag.model import MKT, ImageFeatures
from mkt_tag.tagging.tagger import Tagger
from mkt_tag.train import TrainConfig, train
from mkt_tag.train.labels import LabelTexts, plain_entries
from mkt_tag.vocab import Entry
from tests.conftest import TINY_CONFIG
from tests.train.conftest import small_run

ENTRIES = [
    Entry("sofa", prompts=["sofa", "a couch to sit on"], aliases=["couch", "settee"]),
    Entry("animal/dog"),  # phrased by its last level
    Entry("cat", aliases=["kitty"]),
    Entry("pet/dog"),  # the same text as animal/dog: encoded once, two labels
]


@pytest.fixture(scope="module")
def tiny() -> MKT:
    return checkpoints.load(str(TINY_CONFIG))


def test_texts_candidates_and_owners():
    labels = LabelTexts(ENTRIES)
    assert labels.labels == ["sofa", "animal/dog", "cat", "pet/dog"] and len(labels) == 4
    assert labels.texts == ["sofa", "a couch to sit on", "dog", "cat", "couch", "settee", "kitty"]
    assert labels.owner.tolist() == [0, 1, 2, 3, 0, 0, 2] and not labels.plain
    texts = torch.arange(7.0)[:, None] * torch.tensor([[1.0, 10.0]])
    expected = [[0.5, 5], [2, 20], [3, 30], [2, 20], [4, 40], [5, 50], [6, 60]]
    assert labels.embeddings(texts).tolist() == expected
    scores = torch.tensor(
        [[0.1, 0.2, 0.3, 0.4, 0.9, 0.0, 0.1], [0.5, 0.2, 0.3, 0.4, 0.1, 0.2, 0.6]]
    )
    best = torch.tensor([[0.9, 0.2, 0.3, 0.4], [0.5, 0.2, 0.6, 0.4]])
    assert torch.equal(labels.label_scores(scores), best)


def test_plain_labels_are_their_own_texts():
    labels = LabelTexts(plain_entries(["red", "green"]))
    assert labels.plain and labels.texts == ["red", "green"] and labels.candidates == 2
    texts = torch.randn(2, 3)
    assert labels.embeddings(texts) is texts
    scores = torch.randn(4, 2)
    assert labels.label_scores(scores) is scores


def test_gradients_reach_the_best_candidate_and_every_phrasing():
    labels = LabelTexts(ENTRIES)
    texts = torch.randn(7, 3, requires_grad=True)
    candidates = labels.embeddings(texts)
    scores = torch.tensor([[0.0, 1, 2, 3, 9, 0, 0]], requires_grad=True)
    labels.label_scores(scores)[:, 0].sum().backward()
    assert scores.grad is not None and scores.grad.tolist() == [[0, 0, 0, 0, 1, 0, 0]]
    candidates[0].sum().backward()
    assert texts.grad is not None
    assert texts.grad[:2].tolist() == [[0.5] * 3] * 2 and not texts.grad[2:].any()


def test_scores_equal_the_taggers(tiny):
    """What training ranks is what `tag` and `eval` score, label for label."""
    labels = LabelTexts(ENTRIES)
    torch.manual_seed(0)
    features = ImageFeatures(torch.randn(5, 32), torch.randn(5, 16, 32))
    with torch.no_grad():
        candidates = labels.embeddings(tiny.encode_labels(labels.texts).float())
        ours = labels.label_scores(tiny.score(features, candidates).fused).numpy()
    tagger = Tagger(tiny, device="cpu", precision="fp32")
    theirs = tagger.score_features(features, tagger.embed_labels(ENTRIES))
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)


def test_validation_map_is_evals_map(photo_set, tmp_path):
    """A vocabulary with phrasings and aliases: the validation mAP of the best epoch is what
    `eval` measures for the best checkpoint on the same images."""
    vocabulary = tmp_path / "labels.tsv"
    vocabulary.write_text(
        "label\tprompts\taliases\n"
        "red\tred|a red thing\tcrimson\n"
        "green\t\tlime|grass\n"
        "colour/blue\tsomething blue\t\n"
    )
    val = tmp_path / "val.csv"  # the validation set, with the hierarchical label's full name
    val.write_text(photo_set["val"].read_text().replace(",blue", ",colour/blue"))
    val.with_name("img").symlink_to(photo_set["root"] / "img")
    run = tmp_path / "run"
    settings = small_run(photo_set, run, labels=str(vocabulary), val=str(val), stage="1", epochs=1)
    result = train(TrainConfig(**settings))  # type: ignore[arg-type]
    assert result.best is not None and result.state.best_map >= 0
    measured = evaluate_model(
        val,
        vocabulary,
        model=result.best,
        settings=EvalSettings(),
        scoring=ScoringSettings(device="cpu", precision="fp32", workers=0),
    )
    row = measured.report.row("GZSL")
    assert row is not None
    assert row.map == pytest.approx(result.state.best_map, abs=1e-6)
