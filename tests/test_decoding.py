"""How images are decoded for tagging: worker processes or threads, chosen per machine."""

from __future__ import annotations

import numpy as np
import pytest

from mkt_tag import tagger as tagger_module
from mkt_tag.config import PreprocessConfig
from mkt_tag.tagger import ImageFiles, Tagger, decode_in_threads, default_workers

from .conftest import TINY_CONFIG, make_photo


@pytest.mark.parametrize(
    ("cpus", "torch_threads", "on_cpu", "expected"),
    [
        (2, 2, True, 0),  # torch uses every core: decode between forward passes, in threads
        (16, 16, True, 0),
        (16, 4, True, 8),  # cores torch leaves free, at most 8
        (8, 4, True, 4),
        (2, 2, False, 2),  # the model runs on a GPU: every core can decode
        (16, 16, False, 8),
    ],
)
def test_default_workers_use_only_cores_the_model_leaves_free(
    monkeypatch, cpus, torch_threads, on_cpu, expected
):
    monkeypatch.setattr(tagger_module, "usable_cpus", lambda: cpus)
    monkeypatch.setattr(tagger_module.torch, "get_num_threads", lambda: torch_threads)
    assert default_workers(100, 16, on_cpu) == expected
    assert default_workers(16, 16, on_cpu) == 0  # one batch: no processes to start


def test_threaded_decoding_gives_every_file_in_order(tmp_path):
    paths = [make_photo(tmp_path / f"{i}.jpg", size=(80 + i, 60), seed=i) for i in range(5)]
    (tmp_path / "empty.jpg").write_bytes(b"")
    paths.insert(2, tmp_path / "empty.jpg")
    files = ImageFiles(paths, PreprocessConfig(image_size=32, resize=32))
    batches = list(decode_in_threads(files, 4))
    assert [len(b) for b in batches] == [4, 2]
    items = [item for batch in batches for item in batch]
    assert [index for index, _, _ in items] == list(range(6))
    for index, array, reason in items:
        expected = files[index]
        if index == 2:
            assert array is None and reason == expected[2] and reason
        else:
            assert reason is None and np.array_equal(array, expected[1])


def test_threads_and_worker_processes_score_alike(tmp_path):
    paths = [make_photo(tmp_path / f"{i}.jpg", seed=i) for i in range(5)]
    tagger = Tagger.load(str(TINY_CONFIG), device="cpu", precision="fp32")
    labels = tagger.embed_labels(["cat", "dog", "beach"])
    runs = {}
    for workers in (0, 1):
        batches = list(tagger.score_files(paths, labels, batch_size=2, workers=workers))
        runs[workers] = np.concatenate([b.scores for b in batches])
        assert [i for b in batches for i in b.indices] == list(range(5))
    assert np.allclose(runs[0], runs[1], atol=1e-6)
