"""Fault injection on the label and feature caches (issue "Nothing lost and nothing silently
wrong", items 1 to 3): damaged bytes, short blobs, a full disk, a locked or read-only file,
and the feature cache changing scores. One test per fault; each docstring names it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mkt_tag.cli import app
from mkt_tag.tagging import caches
from mkt_tag.tagging.caches import FeatureCache, LabelCache
from mkt_tag.tagging.selection import Selection
from mkt_tag.tagging.tagger import Tagger
from tests.conftest import TINY_CONFIG, make_photo

LABELS = ["cat", "dog", "beach", "sunset", "car", "tree", "snow", "boat"]


def load(cache: Path, feature_cache: bool = False) -> Tagger:
    return Tagger.load(
        str(TINY_CONFIG),
        device="cpu",
        precision="fp32",
        cache_dir=cache,
        feature_cache=feature_cache,
    )


def close(tagger: Tagger) -> None:
    """Close the caches: SQLite moves the write-ahead log into the main file."""
    for store in (tagger.label_cache, tagger.feature_cache):
        if store is not None:
            store.close()


def flip_inside(path: Path, blob: bytes, at: int) -> None:
    """Flip byte ``at`` (< 16) of ``blob`` where it is stored in the file ``path``.

    Found by its first 16 bytes: a long blob may continue on an overflow page.
    """
    assert at < 16
    data = bytearray(path.read_bytes())
    start = data.find(blob[:16])
    assert start >= 0 and data.find(blob[:16], start + 1) < 0, "the blob must be there once"
    data[start + at] ^= 0x40
    path.write_bytes(bytes(data))


def photos(folder: Path, n: int) -> list[Path]:
    return [make_photo(folder / f"{i:03d}.jpg", size=(40, 40), seed=i) for i in range(n)]


def scores_of(tagger: Tagger, paths: list[Path], labels) -> np.ndarray:
    out = np.zeros((len(paths), len(labels.labels)), np.float32)
    for batch in tagger.score_files(paths, labels, batch_size=4, workers=0, parallel=1):
        assert not batch.failed
        out[batch.indices] = batch.scores
    return out


def fill_features(path: Path, n: int, folder: Path, shape=(20, 64)) -> list[Path]:
    """A feature cache of ``n`` images (small random vectors, committed and closed)."""
    images = photos(folder, n)
    store = FeatureCache(path)
    rng = np.random.default_rng(0)
    store.put("m", [(image, rng.normal(size=shape).astype(np.float16)) for image in images])
    store.close()
    return images


# --- item 1: a damaged cache is never used -------------------------------------------------


def test_flipped_byte_in_label_cache_is_detected_and_recomputed(tmp_path):
    """Fault: flipping bytes inside labels.sqlite changed every image's scores, no warning."""
    cache = tmp_path / "cache"
    first = load(cache)
    fresh = first.embed_labels(LABELS)
    vector = first.label_cache.get(first.text_key, ["beach"])["beach"]
    close(first)
    flip_inside(cache / caches.LABELS_FILE, vector.tobytes(), at=4 * 2 + 3)  # an exponent byte
    tagger = load(cache)
    warnings: list[str] = []
    tagger.report_cache_warnings(warnings.append)
    again = tagger.embed_labels(LABELS)
    # the damaged vector was not used (encoded again, alone: equal up to the batch's rounding)
    assert torch.allclose(again.embeddings, fresh.embeddings, rtol=0, atol=1e-5)
    assert again.encoded == 1  # only "beach" went through the text tower again
    assert len(warnings) == 1 and "labels.sqlite" in warnings[0] and "1 damaged" in warnings[0]
    close(tagger)
    repaired = load(cache)  # the recomputed vector replaced the damaged one
    assert repaired.embed_labels(LABELS).encoded == 0 and repaired.label_cache.warnings == []


def test_short_vector_blob_in_label_cache_is_recomputed_not_a_traceback(tmp_path):
    """Fault: a 10-byte vector blob in the label cache raised ValueError (buffer size must
    be a multiple of element size)."""
    cache = tmp_path / "cache"
    first = load(cache)
    fresh = first.embed_labels(LABELS)
    close(first)
    db = sqlite3.connect(cache / caches.LABELS_FILE)
    with db:
        db.execute("UPDATE labels SET vector = randomblob(10) WHERE text = 'dog'")
    db.close()
    tagger = load(cache)
    again = tagger.embed_labels(LABELS)
    assert torch.allclose(again.embeddings, fresh.embeddings, rtol=0, atol=1e-5)
    assert again.encoded == 1
    assert any("1 damaged" in line for line in tagger.label_cache.warnings)


def test_altered_feature_vector_is_detected_and_recomputed(tmp_path, monkeypatch):
    """Fault: altered vectors in features.sqlite (--feature-cache) were used as they were."""
    cache, paths = tmp_path / "cache", photos(tmp_path / "photos", 6)
    first = load(cache, feature_cache=True)
    labels = first.embed_labels(LABELS)
    expected = scores_of(first, paths, labels)
    stored = first.feature_cache.get(first.image_key, paths)[2]
    close(first)
    flip_inside(cache / caches.FEATURES_FILE, stored.tobytes(), at=2 * 3 + 1)  # a high byte
    tagger = load(cache, feature_cache=True)
    warnings: list[str] = []
    tagger.report_cache_warnings(warnings.append)
    encoded: list[int] = []
    original = tagger.model.encode_images
    monkeypatch.setattr(
        tagger.model, "encode_images", lambda x: encoded.append(len(x)) or original(x)
    )
    assert np.array_equal(scores_of(tagger, paths, labels), expected)
    assert encoded == [1]  # only the damaged image went through the image tower
    assert len(warnings) == 1 and "features.sqlite" in warnings[0] and "1 damaged" in warnings[0]


def test_old_cache_format_is_moved_aside_with_a_warning(tmp_path):
    """A cache of the previous format (no checksums) is not trusted: moved aside, rebuilt."""
    path = tmp_path / caches.LABELS_FILE
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA application_id={caches.APPLICATION_ID}")
    db.execute("PRAGMA user_version=1")
    db.execute("CREATE TABLE labels (model TEXT, text TEXT, vector BLOB)")
    db.commit()
    db.close()
    store = LabelCache(path)
    assert len(store.warnings) == 1 and "version 1" in store.warnings[0]
    assert (tmp_path / (caches.LABELS_FILE + ".broken")).exists()
    store.put("m", {"cat": np.ones(3, np.float32)})
    assert store.get("m", ["cat"])["cat"].shape == (3,)


def test_malformed_file_found_mid_run_is_still_moved_aside(tmp_path):
    """Real damage (SQLITE_CORRUPT) found by a query is still moved aside and rebuilt."""
    path = tmp_path / caches.FEATURES_FILE
    images = fill_features(path, 40, tmp_path / "photos")
    db = sqlite3.connect(path)
    root, size = (
        db.execute("SELECT rootpage FROM sqlite_master WHERE name='features'").fetchone()[0],
        db.execute("PRAGMA page_size").fetchone()[0],
    )
    db.close()
    data = bytearray(path.read_bytes())
    data[(root - 1) * size : root * size] = bytes(range(256)) * (size // 256)  # the table's root
    path.write_bytes(bytes(data))
    store = FeatureCache(path)
    assert store.get("m", images) == {}
    assert len(store.warnings) == 1 and "damaged" in store.warnings[0]
    assert (tmp_path / (caches.FEATURES_FILE + ".broken")).exists()
    store.put("m", [(images[0], np.ones((2, 2), np.float16))])  # the new file works
    assert list(store.get("m", images)) == [0]


# --- item 2: a failed write leaves the old cache intact ------------------------------------


def _make_full(db: sqlite3.Connection) -> None:
    """The disk is full: the file may not grow by a single page (SQLITE_FULL on write)."""
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count={pages}")


def _make_read_only(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA query_only=1")  # SQLITE_READONLY on write, as for a read-only file


@pytest.mark.parametrize("fault", [_make_full, _make_read_only], ids=["disk-full", "read-only"])
def test_failed_write_keeps_the_existing_feature_cache(tmp_path, fault):
    """Fault: a full disk while writing features.sqlite replaced the cache of 200 entries by
    one of 64, without a warning (the failed write was taken for damage)."""
    path = tmp_path / caches.FEATURES_FILE
    fill_features(path, 200, tmp_path / "old")
    store = FeatureCache(path)
    fault(store.db)
    new = photos(tmp_path / "new", 64)
    rng = np.random.default_rng(1)
    for start in range(0, 64, 16):  # four batches, as a tagging run writes them
        chunk = new[start : start + 16]
        store.put("m", [(image, rng.normal(size=(20, 64)).astype(np.float16)) for image in chunk])
    assert len(store.warnings) == 1, store.warnings  # warned once, then stopped writing
    assert "cannot write" in store.warnings[0] and str(path) in store.warnings[0]
    assert store.get("m", new) == {}
    store.close()
    assert not (tmp_path / (caches.FEATURES_FILE + ".broken")).exists()
    reopened = FeatureCache(path)
    assert reopened.warnings == [] and reopened.stats()["images"] == 200


def test_locked_cache_write_keeps_the_cache_and_tagging_goes_on(tmp_path):
    """Fault: a cache locked by another process (SQLITE_BUSY on write) was moved aside."""
    path = tmp_path / caches.LABELS_FILE
    store = LabelCache(path)
    store.put("m", {f"label {i}": np.full(8, i, np.float32) for i in range(50)})
    store.db.execute("PRAGMA busy_timeout=20")
    other = sqlite3.connect(path)
    other.execute("BEGIN IMMEDIATE")  # another process is writing
    try:
        store.put("m", {"new": np.zeros(8, np.float32)})
        store.put("m", {"newer": np.zeros(8, np.float32)})
    finally:
        other.rollback()
        other.close()
    assert len(store.warnings) == 1 and "cannot write" in store.warnings[0]
    assert store.count() == 50 and not (tmp_path / (caches.LABELS_FILE + ".broken")).exists()
    assert set(store.get("m", ["label 3", "new"])) == {"label 3"}  # reading still works


def test_full_disk_during_a_tagging_run_tags_everything_and_keeps_the_cache(tmp_path):
    """Fault: the full-disk case through the tagger: every image is tagged, the cache kept."""
    cache = tmp_path / "cache"
    old, new = photos(tmp_path / "old", 30), photos(tmp_path / "new", 20)
    first = load(cache, feature_cache=True)
    labels = first.embed_labels(LABELS)
    scores_of(first, old, labels)
    close(first)
    plain = load(cache)
    expected = list(plain.tag_files(new, labels, Selection(top_k=3), batch_size=4, workers=0))
    tagger = load(cache, feature_cache=True)
    warnings: list[str] = []
    tagger.report_cache_warnings(warnings.append)
    assert tagger.feature_cache is not None
    _make_full(tagger.feature_cache.db)
    results = list(tagger.tag_files(new, labels, Selection(top_k=3), batch_size=4, workers=0))
    assert [r.tags for r in results] == [r.tags for r in expected]
    assert len(warnings) == 1 and "cannot write" in warnings[0]
    close(tagger)
    assert FeatureCache(cache / caches.FEATURES_FILE).stats()["images"] == 30


def test_unusable_cache_folder_tags_without_caches(tmp_path):
    """A cache folder that cannot be made (a file is in the way): one warning, no traceback."""
    blocker = tmp_path / "cache"
    blocker.write_text("not a folder")
    tagger = load(blocker, feature_cache=True)
    warnings: list[str] = []
    tagger.report_cache_warnings(warnings.append)
    assert len(warnings) == 2 and all("cannot use the cache" in line for line in warnings)
    labels = tagger.embed_labels(LABELS)
    paths = photos(tmp_path / "photos", 3)
    assert len(list(tagger.tag_files(paths, labels, Selection(top_k=2), workers=0))) == 3


# --- item 3: the feature cache does not change scores --------------------------------------


def test_feature_cache_does_not_change_scores(tmp_path):
    """Fault: with --feature-cache, 162 of 200 rows differed at the 4th decimal from a run
    without it (features were scored unrounded without the cache, float16 with it)."""
    cache, paths = tmp_path / "cache", photos(tmp_path / "photos", 12)
    plain = load(cache)
    labels = plain.embed_labels(LABELS)
    without = scores_of(plain, paths, labels)
    filling = scores_of(load(cache, feature_cache=True), paths, labels)
    reading = load(cache, feature_cache=True)
    reading.model.encode_images = lambda x: pytest.fail("an image was not read from the cache")
    from_cache = scores_of(reading, paths, labels)
    assert np.array_equal(filling, without)
    assert np.array_equal(from_cache, without)


def test_results_files_are_byte_identical_with_and_without_feature_cache(tmp_path):
    """Fault: the same photos tagged with and without --feature-cache (filling it, then
    reading it) gave different results files."""
    folder = tmp_path / "photos"
    photos(folder, 24)
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(LABELS) + "\n", encoding="utf-8")
    runner = CliRunner()
    outputs = []
    for name, extra in [
        ("plain", []),
        ("filling", ["--feature-cache"]),
        ("reading", ["--feature-cache"]),
    ]:
        out = tmp_path / f"{name}.csv"
        args = ["tag", str(folder), "--labels", str(labels), "--model", str(TINY_CONFIG)]
        args += [
            "-o",
            str(out),
            "--top-k",
            "5",
            "--workers",
            "0",
            "--cache-dir",
            str(tmp_path / "c"),
        ]
        result = runner.invoke(app, args + extra)
        assert result.exit_code == 0, result.output
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]


# --- through the command line ---------------------------------------------------------------


def tag_cli(folder: Path, cache: Path, *extra: str):
    labels = folder.parent / "labels.txt"
    labels.write_text("\n".join(LABELS) + "\n", encoding="utf-8")
    args = ["tag", str(folder), "--labels", str(labels), "--model", str(TINY_CONFIG)]
    args += ["--workers", "0", "--cache-dir", str(cache), *extra]
    return CliRunner().invoke(app, args)


def test_damaged_label_cache_warns_once_on_the_command_line(tmp_path):
    """Fault: the damaged label cache gave other tags with exit 0 and not a word."""
    folder, cache = tmp_path / "photos", tmp_path / "cache"
    photos(folder, 3)
    before = tag_cli(folder, cache)
    assert before.exit_code == 0, before.output
    store = LabelCache(cache / caches.LABELS_FILE)
    assert store.db is not None
    key = store.db.execute("SELECT model FROM labels LIMIT 1").fetchone()[0]
    vector = store.get(key, ["sunset"])["sunset"]
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the run's rows into the file
    store.close()
    flip_inside(cache / caches.LABELS_FILE, vector.tobytes(), at=7)
    after = tag_cli(folder, cache)
    assert after.exit_code == 0, after.output
    assert after.stderr.count("damaged label embedding") == 1
    assert after.stdout == before.stdout  # the same tags: the damaged vector was not used


def test_damaged_feature_cache_warns_on_the_command_line(tmp_path):
    """Fault: altered vectors in features.sqlite were used; on the command line the warning
    must reach stderr, although the feature cache is read while the job runs."""
    folder, cache = tmp_path / "photos", tmp_path / "cache"
    paths = photos(folder, 3)
    before = tag_cli(folder, cache, "--feature-cache")
    assert before.exit_code == 0, before.output
    store = FeatureCache(cache / caches.FEATURES_FILE)
    assert store.db is not None
    key = store.db.execute("SELECT model FROM features LIMIT 1").fetchone()[0]
    stored = store.get(key, paths)[1]
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the run's rows into the file
    store.close()
    flip_inside(cache / caches.FEATURES_FILE, stored.tobytes(), at=5)
    after = tag_cli(folder, cache, "--feature-cache")
    assert after.exit_code == 0, after.output
    # the same tags (cached images are printed first, so compare the sorted lines)
    assert sorted(after.stdout.splitlines()) == sorted(before.stdout.splitlines())
    assert after.stderr.count("1 damaged image feature row") == 1
