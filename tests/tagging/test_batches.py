"""How files reach the model: batches planned, decoded and run in parallel, in order."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mkt_tag.cli import app
from mkt_tag.config import PreprocessConfig
from mkt_tag.errors import EXIT_USAGE
from mkt_tag.tagging import batches as pipeline
from mkt_tag.tagging.batches import (
    ImageFiles,
    decode_chunk,
    default_parallel,
    default_workers,
    plan_batches,
    run_batches,
)
from mkt_tag.tagging.tagger import Tagger
from tests.conftest import TINY_CONFIG, make_photo


@pytest.mark.parametrize(
    ("cpus", "torch_threads", "on_cpu", "expected"),
    [
        (2, 2, True, 0),  # torch uses every core: each batch's thread decodes it
        (16, 16, True, 0),
        (16, 4, True, 12),  # the cores torch leaves free
        (8, 4, True, 4),
        (2, 2, False, 2),  # the model runs on a GPU: every core can decode
        (7, 16, False, 7),
        (16, 16, False, 14),  # ... but one in eight feeds the GPU
        (64, 16, False, 32),  # at most 32
    ],
)
def test_default_workers_use_only_cores_the_model_leaves_free(
    monkeypatch, cpus, torch_threads, on_cpu, expected
):
    monkeypatch.setattr(pipeline, "usable_cpus", lambda: cpus)
    monkeypatch.setattr(pipeline.torch, "get_num_threads", lambda: torch_threads)
    assert default_workers(100, 16, on_cpu) == expected
    assert default_workers(16, 16, on_cpu) == 0  # one batch: no processes to start


@pytest.mark.parametrize(
    ("torch_threads", "on_cpu", "expected"),
    [(1, True, 1), (2, True, 2), (6, True, 6), (64, True, 8), (16, False, 1)],
)
def test_default_parallel_is_one_batch_per_cpu_thread_and_one_on_a_gpu(
    monkeypatch, torch_threads, on_cpu, expected
):
    monkeypatch.setattr(pipeline.torch, "get_num_threads", lambda: torch_threads)
    assert default_parallel(on_cpu) == expected


@pytest.mark.parametrize("n_images", [1, 2, 3, 5, 16, 17, 31, 100, 200])
@pytest.mark.parametrize("batch_size", [1, 4, 16])
@pytest.mark.parametrize("parallel", [1, 2, 3, 8])
def test_plan_covers_every_image_once_in_even_batches(n_images, batch_size, parallel):
    plan = plan_batches(n_images, batch_size, parallel)
    assert [i for batch in plan for i in batch] == list(range(n_images))
    sizes = [len(batch) for batch in plan]
    assert min(sizes) >= 1 and max(sizes) <= batch_size
    assert max(sizes) - min(sizes) <= 1
    fewest = -(-n_images // batch_size)
    if n_images >= parallel * fewest:  # enough images: every thread gets as many batches
        assert len(plan) % parallel == 0
    assert len(plan) < fewest + parallel  # never more batches than balancing needs


def test_plan_examples():
    assert plan_batches(0, 16, 2) == []
    assert sorted(len(b) for b in plan_batches(200, 16, 1)) == [15] * 8 + [16] * 5
    assert sorted(len(b) for b in plan_batches(200, 16, 2)) == [14] * 10 + [15] * 4
    assert plan_batches(4, 16, 2) == [range(0, 2), range(2, 4)]  # a small job uses both


@pytest.fixture
def files(tmp_path):
    paths = [make_photo(tmp_path / f"{i}.jpg", size=(80 + i, 60), seed=i) for i in range(9)]
    (tmp_path / "empty.jpg").write_bytes(b"")
    paths.insert(2, tmp_path / "empty.jpg")
    return ImageFiles(paths, PreprocessConfig(image_size=32, resize=32))


@pytest.mark.parametrize(
    ("parallel", "workers", "batch_size"),
    [(1, 0, 2), (2, 0, 2), (3, 0, 2), (2, 1, 2), (1, 2, 5), (1, 3, 10)],
)
def test_batches_come_back_decoded_and_in_plan_order(files, parallel, workers, batch_size):
    plan = plan_batches(len(files), batch_size, parallel)
    batches = list(run_batches(files, plan, lambda items: items, parallel, workers))
    assert [[index for index, _, _ in batch] for batch in batches] == [list(b) for b in plan]
    for index, array, reason in (item for batch in batches for item in batch):
        expected = files[index]
        if index == 2:
            assert array is None and reason == expected[2] and "empty" in reason
        else:
            assert reason is None and np.array_equal(array, expected[1])


@pytest.mark.parametrize(
    ("batch_size", "workers", "expected"),
    [(16, 1, 16), (16, 2, 8), (16, 8, 2), (16, 32, 2), (5, 2, 3)],
)
def test_decode_chunks_share_a_batch_among_the_workers(batch_size, workers, expected):
    assert decode_chunk(batch_size, workers) == expected


class _WhoDecodes(ImageFiles):
    """Files whose items say which worker process decoded them (in the reason field)."""

    def __getitem__(self, index):
        info = torch.utils.data.get_worker_info()
        return index, None, str(info.id if info else None)


def test_every_worker_decodes_part_of_the_first_batch(files):
    # Whole batches per worker left all but one idle until the second batch (issue 17).
    who = _WhoDecodes(files.paths, files.preprocess)
    plan = [range(0, 8), range(8, len(files))]
    first = next(run_batches(who, plan, lambda items: items, 1, workers=2))
    assert [index for index, _, _ in first] == list(range(8))
    assert {reason for _, _, reason in first} == {"0", "1"}


def test_parallel_batches_really_run_at_once_with_their_share_of_threads(files):
    both_running = threading.Barrier(2, timeout=20)  # broken if the batches ran one by one
    seen = []

    def work(items):
        seen.append((threading.current_thread().name, torch.get_num_threads()))
        both_running.wait()
        return len(items)

    before = torch.get_num_threads()
    with pipeline.torch_threads(4):
        assert sum(run_batches(files, plan_batches(len(files), 5, 2), work, parallel=2)) == 10
        assert torch.get_num_threads() == 4  # restored afterwards
    assert torch.get_num_threads() == before
    assert len({name for name, _ in seen}) == 2
    assert {threads for _, threads in seen} == {2}  # 4 torch threads shared by 2 batches


def test_a_closed_run_stops_early_and_restores_torch_threads(files):
    calls = []
    run = run_batches(files, plan_batches(len(files), 1, 2), calls.append, parallel=2)
    before = torch.get_num_threads()
    next(run)
    run.close()  # the consumer stops (Ctrl-C, an error downstream)
    assert len(calls) < len(files)  # what was queued was dropped
    assert torch.get_num_threads() == before


def test_an_error_in_a_batch_reaches_the_caller(files):
    def work(items):
        raise RuntimeError("model failed")

    before = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="model failed"):
        list(run_batches(files, plan_batches(len(files), 2, 2), work, parallel=2))
    assert torch.get_num_threads() == before


def test_bad_settings_are_refused(files):
    with pytest.raises(ValueError, match="parallel"):
        list(run_batches(files, [range(1)], len, parallel=0))


@pytest.fixture
def tiny_tagger():
    return Tagger.load(str(TINY_CONFIG), device="cpu", precision="fp32")


def test_parallel_batches_and_worker_processes_score_alike(tmp_path, tiny_tagger):
    paths = [make_photo(tmp_path / f"{i}.jpg", seed=i) for i in range(7)]
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    paths.insert(3, tmp_path / "broken.jpg")
    labels = tiny_tagger.embed_labels(["cat", "dog", "beach"])
    runs = {}
    for parallel, workers in [(1, 0), (2, 0), (3, 0), (2, 1)]:
        batches = list(tiny_tagger.score_files(paths, labels, 2, workers, parallel))
        assert [i for b in batches for i in b.indices] == [0, 1, 2, 4, 5, 6, 7]
        assert [str(f.path) for b in batches for f in b.failed] == [str(paths[3])]
        runs[parallel, workers] = np.concatenate([b.scores for b in batches])
    for scores in runs.values():
        assert np.allclose(scores, runs[1, 0], atol=1e-5)


def test_feature_cache_is_written_from_parallel_batches(tmp_path):
    paths = [make_photo(tmp_path / f"{i}.jpg", seed=i) for i in range(6)]
    tagger = Tagger.load(str(TINY_CONFIG), device="cpu", precision="fp32", feature_cache=True)
    labels = tagger.embed_labels(["cat", "dog"])
    first = list(tagger.score_files(paths, labels, 2, workers=0, parallel=3))
    assert tagger.feature_cache is not None
    assert len(tagger.feature_cache.get(tagger.image_key, paths)) == 6
    again = list(tagger.score_files(paths, labels, 2, workers=0, parallel=3))
    assert np.array_equal(
        np.concatenate([b.scores for b in first]), np.concatenate([b.scores for b in again])
    )


def test_cli_parallel_option(photos, label_file, tmp_path):
    runner = CliRunner()
    outputs = []
    for parallel in ("1", "3"):
        out = tmp_path / f"results-{parallel}.csv"
        command = ["tag", str(photos), "--labels", str(label_file), "--model", str(TINY_CONFIG)]
        result = runner.invoke(app, [*command, "--parallel", parallel, "-b", "2", "-o", str(out)])
        assert result.exit_code == 0, result.output
        outputs.append(out.read_text().splitlines())
    assert len(outputs[0]) == 6 and [r.split(",")[0] for r in outputs[1]] == [
        r.split(",")[0] for r in outputs[0]
    ]
    bad = runner.invoke(app, ["tag", str(photos), "--labels", str(label_file), "--parallel", "0"])
    assert bad.exit_code == EXIT_USAGE and "--parallel" in bad.output


def test_api_scores_paths_through_the_pipeline_and_raises_on_a_bad_file(tmp_path, tiny_tagger):
    from PIL import Image

    from mkt_tag.errors import ImageLoadError

    paths = [make_photo(tmp_path / f"{i}.jpg", seed=i) for i in range(5)]
    labels = ["cat", "dog", "beach"]
    from_paths = tiny_tagger.scores(paths, labels, batch_size=2)
    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(image.copy())
    assert np.allclose(from_paths, tiny_tagger.scores(images, labels, batch_size=2), atol=1e-5)
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(ImageLoadError, match=r"bad\.jpg"):
        tiny_tagger.scores([*paths, tmp_path / "bad.jpg"], labels, batch_size=2)
