"""MKT's fusion again over some labels (``StreamScores.fused``): what a vocabulary of those
labels alone gives, and the same as the model's fusion over all of them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mkt_tag.evaluate import streams as streams_module
from mkt_tag.evaluate.streams import StreamScores
from mkt_tag.model import fuse


def random_streams(seed: int, streams: str = "both") -> StreamScores:
    """Scores of 1-40 images for 1-12 labels, each with 0-2 aliases, candidates shuffled."""
    rng = np.random.default_rng(seed)
    n_images, n_labels = int(rng.integers(1, 41)), int(rng.integers(1, 13))
    owner = np.concatenate([np.arange(n_labels), rng.integers(0, n_labels, rng.integers(0, 25))])
    owner = owner[rng.permutation(owner.size)]
    shape = (n_images, owner.size)
    global_ = rng.normal(size=shape).astype(np.float32) * np.float32(rng.uniform(0.1, 50))
    local = rng.normal(size=shape).astype(np.float32)
    return StreamScores(global_, local, owner.astype(np.int64), streams)


def alone(scores: StreamScores, labels: np.ndarray) -> StreamScores:
    """The stream scores a vocabulary of ``labels`` alone would have: their candidates only,
    renumbered in the order of ``labels``."""
    mine = np.flatnonzero(np.isin(scores.owner, labels))
    renumber = {int(label): i for i, label in enumerate(labels)}
    owner = np.array([renumber[int(label)] for label in scores.owner[mine]], dtype=np.int64)
    return StreamScores(scores.global_[:, mine], scores.local[:, mine], owner, scores.streams)


@pytest.mark.parametrize("streams", ["both", "global", "local"])
@pytest.mark.parametrize("seed", range(12))
def test_some_labels_fused_again_are_those_labels_alone(seed, streams):
    """For any scores, any labels in any order: bit for bit what a vocabulary of them alone
    gives (the same numbers in, the same arithmetic)."""
    scores = random_streams(seed, streams)
    rng = np.random.default_rng(1000 + seed)
    labels = rng.permutation(scores.labels)[: rng.integers(1, scores.labels + 1)]
    mine = scores.fused(labels)
    theirs = alone(scores, labels).fused(np.arange(labels.size))
    assert mine.dtype == np.float32 and mine.shape == (len(scores), labels.size)
    assert np.array_equal(mine, theirs)
    keep = rng.permutation(labels.size)[:2]
    assert np.array_equal(scores.fused(labels, keep), mine[:, keep])
    mask = np.isin(np.arange(scores.labels), labels)
    assert np.array_equal(scores.fused(mask), scores.fused(np.sort(labels)))


@pytest.mark.parametrize("streams", ["both", "global", "local"])
@pytest.mark.parametrize("seed", range(4))
def test_all_labels_fused_again_are_the_models_fusion(seed, streams):
    """Over every label: the model's fusion (``model.fuse``, float32 torch) and each label's
    best candidate, to float32 rounding."""
    scores = random_streams(seed, streams)
    fused = fuse(torch.from_numpy(scores.global_), torch.from_numpy(scores.local), streams)
    expected = np.full((len(scores), scores.labels), -np.inf, dtype=np.float32)
    for candidate, label in enumerate(scores.owner):
        expected[:, label] = np.maximum(expected[:, label], fused[:, candidate].numpy())
    np.testing.assert_allclose(scores.fused(np.arange(scores.labels)), expected, atol=1e-6)


def test_chunks_of_rows_change_nothing(monkeypatch):
    scores = random_streams(3)
    whole = scores.fused(np.arange(scores.labels))
    monkeypatch.setattr(streams_module, "CHUNK_VALUES", 7)  # one image per chunk
    assert np.array_equal(scores.fused(np.arange(scores.labels)), whole)


def test_a_zero_stream_stays_zero():
    """As torch's normalize: a zero vector is divided by eps, not by 0."""
    scores = StreamScores(
        np.zeros((2, 3), np.float32), np.ones((2, 3), np.float32), np.arange(3), "both"
    )
    assert np.allclose(scores.fused([0, 1]), 0.5 / np.sqrt(2))


def test_subset_keeps_rows():
    scores = random_streams(5)
    rows = np.array([0])
    assert np.array_equal(scores.subset(rows).fused([0]), scores.fused([0])[rows])


def test_bad_arguments():
    good = random_streams(2)
    with pytest.raises(ValueError, match="mask"):
        good.fused(np.ones(good.labels + 1, dtype=bool))
    with pytest.raises(ValueError, match="repeat"):
        good.fused([0, 0])
    with pytest.raises(ValueError, match="lie in"):
        good.fused([good.labels])
    ones = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="at least one candidate"):
        StreamScores(ones, ones, np.array([0, 2, 2]))  # label 1 has none
    with pytest.raises(ValueError, match="one shape"):
        StreamScores(ones, ones[:, :2], np.arange(3))
    with pytest.raises(ValueError, match="owner"):
        StreamScores(ones, ones, np.arange(2))
    with pytest.raises(ValueError, match="streams"):
        StreamScores(ones, ones, np.arange(3), "neither")
