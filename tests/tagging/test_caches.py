"""Label-embedding and image-feature caches: hits, misses, exact invalidation, damage."""

from __future__ import annotations

import os
import sqlite3

import numpy as np
import pytest
import torch

from mkt_tag import checkpoints
from mkt_tag.files import digest
from mkt_tag.tagging.caches import FeatureCache, LabelCache
from mkt_tag.tagging.label_embeddings import embed
from mkt_tag.tagging.selection import Selection
from mkt_tag.tagging.tagger import Tagger
from mkt_tag.vocab import Entry
from tests.conftest import TINY_CONFIG, make_photo


def test_label_cache_round_trip(tmp_path):
    cache = LabelCache(tmp_path / "labels.sqlite")
    vectors = {"cat": np.arange(4, dtype=np.float32), "dog": np.ones(4, np.float32)}
    cache.put("model-a", vectors)
    found = cache.get("model-a", ["cat", "dog", "owl"])
    assert set(found) == {"cat", "dog"} and np.array_equal(found["cat"], vectors["cat"])
    assert cache.get("model-b", ["cat"]) == {}  # another model never sees these
    assert cache.count() == 2


def test_feature_cache_invalidated_by_file_change(tmp_path):
    image = make_photo(tmp_path / "a.png")
    cache = FeatureCache(tmp_path / "features.sqlite")
    tokens = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float16)
    cache.put("m", [(image, tokens)])
    assert np.array_equal(cache.get("m", [image])[0], tokens)
    assert cache.get("other-model", [image]) == {}
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert cache.get("m", [image]) == {}  # modified file: a miss
    assert cache.get("m", [tmp_path / "missing.png"]) == {}
    assert cache.stats()["images"] == 1


@pytest.mark.parametrize("content", [b"this is not a database", b""])
def test_damaged_or_foreign_cache_is_rebuilt_with_a_warning(tmp_path, content):
    path = tmp_path / "labels.sqlite"
    if content:
        path.write_bytes(content * 200)
    else:  # a valid SQLite file that is not ours
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE labels (x)")
        db.commit()
        db.close()
    cache = LabelCache(path)
    assert cache.warnings and "moved to labels.sqlite.broken" in cache.warnings[0]
    cache.put("m", {"cat": np.zeros(3, np.float32)})
    assert cache.get("m", ["cat"])["cat"].shape == (3,)
    assert (tmp_path / "labels.sqlite.broken").exists()


def test_torn_feature_row_is_a_miss(tmp_path):
    image = make_photo(tmp_path / "a.png")
    cache = FeatureCache(tmp_path / "f.sqlite")
    cache.put("m", [(image, np.zeros((5, 4), np.float16))])
    cache.db.execute("UPDATE features SET data = substr(data, 1, 7)")
    cache.db.commit()
    assert cache.get("m", [image]) == {}


def test_digest_is_stable_and_distinguishes():
    assert digest("a", [1, 2], b"x") == digest("a", [1, 2], b"x")
    assert digest("a", [1, 2]) != digest("a", [2, 1])
    assert digest("ab", "c") != digest("a", "bc")


# --- through the tagger ---------------------------------------------------------------------


@pytest.fixture
def tagger_factory(tmp_path):
    def make(feature_cache: bool = False, precision: str = "fp32", model: str = str(TINY_CONFIG)):
        return Tagger.load(
            model,
            device="cpu",
            precision=precision,
            cache_dir=tmp_path / "cache",
            feature_cache=feature_cache,
        )

    return make


def test_unchanged_labels_are_never_encoded_twice(tagger_factory, monkeypatch):
    first = tagger_factory().embed_labels(["cat", "dog"])
    assert first.encoded == 2
    tagger = tagger_factory()
    calls = []
    original = tagger.model.encode_labels
    monkeypatch.setattr(
        tagger.model,
        "encode_labels",
        lambda texts, **kw: calls.append(list(texts)) or original(texts, **kw),
    )
    second = tagger.embed_labels(["cat", "dog", "owl"])
    assert calls == [["owl"]] and second.encoded == 1
    assert torch.equal(second.embeddings[:2], first.embeddings)


def test_label_cache_keys_are_exact(tagger_factory, tmp_path):
    tagger_factory().embed_labels(["cat"])
    assert tagger_factory(precision="bf16").embed_labels(["cat"]).encoded == 1  # other precision
    other = tagger_factory()
    from mkt_tag.prompts import PromptContext

    other.model.prompt = PromptContext.from_template(
        other.model.clip, other.model.tokenizer, "a photo of {label}"
    )
    other.model.config.template = "a photo of {label}"
    retemplated = Tagger(other.model, "cpu", "fp32", other.label_cache)
    assert retemplated.text_key != other.text_key
    assert retemplated.embed_labels(["cat"]).encoded == 1  # other template
    # another checkpoint (trained weights) gets its own key too
    model = checkpoints.load(str(TINY_CONFIG))
    with torch.no_grad():
        model.prompt.prefix.add_(0.5)
    checkpoints.save(model, tmp_path / "ckpt")
    assert tagger_factory(model=str(tmp_path / "ckpt")).embed_labels(["cat"]).encoded == 1


def test_prompts_are_averaged_and_aliases_merged():
    model = checkpoints.load(str(TINY_CONFIG))
    single = embed(model, ["sofa", "couch", "a comfy sofa"])
    both = embed(model, [Entry("sofa", prompts=["sofa", "a comfy sofa"], aliases=["couch"])])
    assert both.labels == ["sofa"] and list(both.owner) == [0, 0]
    expected = (single.embeddings[0] + single.embeddings[2]) / 2
    assert torch.allclose(both.embeddings[0], expected, atol=1e-6)
    assert torch.allclose(both.embeddings[1], single.embeddings[1])
    candidate_scores = np.array([[0.1, 0.7], [0.9, 0.2]])
    assert np.array_equal(both.label_scores(candidate_scores), [[0.7], [0.9]])


def test_cached_features_give_identical_results_and_skip_the_image_model(
    tagger_factory, tmp_path, monkeypatch
):
    paths = [make_photo(tmp_path / f"{i}.jpg", seed=i) for i in range(5)]
    selection = Selection(top_k=3)
    first = tagger_factory(feature_cache=True)
    labels = first.embed_labels(["cat", "dog", "car", "tree"])
    fresh = list(first.tag_files(paths, labels, selection, batch_size=2, workers=0))
    without_cache = tagger_factory(feature_cache=False)
    plain = list(without_cache.tag_files(paths, labels, selection, batch_size=2, workers=0))
    second = tagger_factory(feature_cache=True)
    monkeypatch.setattr(
        second.model,
        "encode_images",
        lambda *a: pytest.fail("the image tower ran for a cached image"),
    )
    again = list(second.tag_files(paths, labels, selection, batch_size=2, workers=0))
    assert [r.tags for r in again] == [r.tags for r in fresh]
    # features are scored float16-rounded with the cache or without it: the same tags exactly
    assert [r.tags for r in plain] == [r.tags for r in fresh]
    # an edited vocabulary re-tags from the cache as well
    more = second.embed_labels(["cat", "dog", "car", "tree", "sunset"])
    assert len(list(second.tag_files(paths, more, selection, workers=0))) == 5


def test_feature_cache_key_depends_on_precision(tagger_factory):
    assert tagger_factory(True, "fp32").image_key != tagger_factory(True, "bf16").image_key


def test_cache_parts_and_clear_from_python(tmp_path):
    from mkt_tag.tagging.caches import cache_parts, clear_cache

    labels = LabelCache(tmp_path / "labels.sqlite")
    labels.put("model", {"cat": np.ones(4, np.float32), "dog": np.zeros(4, np.float32)})
    labels.close()
    features = FeatureCache(tmp_path / "features.sqlite")
    photo = make_photo(tmp_path / "a.jpg")
    features.put("model", [(photo, np.ones((3, 4), np.float16))])
    features.close()
    (tmp_path / "hub" / "models--org--repo").mkdir(parents=True)
    (tmp_path / "hub" / "models--org--repo" / "w.bin").write_bytes(b"x" * 10)
    parts, warnings = cache_parts(tmp_path)
    assert warnings == []
    by_name = {part.name: part for part in parts}
    assert by_name["models"].entries == 1 and by_name["models"].models == ["org/repo"]
    assert by_name["label embeddings"].entries == 2
    assert by_name["image features"].entries == 1
    assert by_name["image features"].bytes_per_entry == 3 * 4 * 2
    cleared = clear_cache(tmp_path, labels=True)
    assert cleared.parts == ["labels.sqlite"] and cleared.freed_bytes > 0
    assert (tmp_path / "features.sqlite").exists()
    cleared = clear_cache(tmp_path, models=True)
    assert cleared.parts == ["features.sqlite", "labels.sqlite", "models"]
    assert not (tmp_path / "features.sqlite").exists() and not (tmp_path / "hub").exists()
