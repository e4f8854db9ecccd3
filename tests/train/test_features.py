"""Stage 2's feature cache: reused for the same images and weights only."""

from __future__ import annotations

import json

import numpy as np
import torch

from mkt_tag.train import features as train_features


def test_feature_cache_is_keyed_by_images_and_weights(tmp_path):
    calls = []

    def compute() -> train_features.StoredFeatures:
        calls.append(1)
        return train_features.StoredFeatures(np.ones((2, 4), np.float16), np.ones((2, 3, 4)), [1])

    key = {"images": "abc", "weights": "w1", "mean": (0.5, 0.5)}
    assert train_features.cached(tmp_path, "train", key, compute) is True
    assert train_features.cached(tmp_path, "train", dict(key), compute) is False
    assert train_features.cached(tmp_path, "train", {**key, "weights": "w2"}, compute) is True
    assert len(calls) == 2
    features = train_features.read(tmp_path, "train")
    assert features.patches.shape == (2, 3, 4) and features.failed == [1]
    assert json.loads((tmp_path / "train.json").read_text())["key"]["weights"] == "w2"


def test_weights_fingerprint_sees_any_change():
    layer = torch.nn.Linear(3, 2)
    before = train_features.weights_fingerprint(layer)
    assert train_features.weights_fingerprint(layer) == before
    with torch.no_grad():
        layer.bias[0] += 1e-6
    assert train_features.weights_fingerprint(layer) != before
