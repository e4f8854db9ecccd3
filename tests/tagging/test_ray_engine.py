"""The Ray engine tags as a local run does: the same tags, the same failures.

Runs go through one local Ray instance of 2 CPUs (``ray_instance``, shared by the session's
Ray tests: starting one takes about 10 s, each run a few more for its model actor); what
needs no Ray (the resources rule, a missing Ray or model) is tested without it. Images in
buckets come from the S3 and GCS servers of ``tests/object_stores.py``.
"""

from __future__ import annotations

import logging
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

from mkt_tag.errors import ImageLoadError, MktTagError, ModelError
from mkt_tag.remote import RemoteImage, parse_input
from mkt_tag.results import TagResult
from mkt_tag.tagging import ray_engine
from mkt_tag.tagging.ray_engine import ActorPlan, RayEngine, plan_actors
from mkt_tag.tagging.selection import Selection
from mkt_tag.vocab import Entry
from tests import object_stores
from tests.conftest import TINY_CONFIG

# An alias makes "dog" the best of two candidates: the engine must score candidates as the
# local run does, not only labels.
ENTRIES = [Entry("cat"), Entry("dog", aliases=["puppy"]), Entry("beach"), Entry("sunset")]
ENTRIES.append(Entry("traffic light", prompts=["a traffic light", "traffic lights at night"]))


@pytest.fixture(scope="session")
def ray_instance(tmp_path_factory: pytest.TempPathFactory):
    """One local Ray instance of 2 CPUs (as in CI) for every Ray test of this process; its
    workers get their own mkt-tag cache, never the user's, and the test object stores."""
    import ray

    if ray.is_initialized():  # started for another test module of this session
        yield ray
        return
    # Ray's processes inherit this environment (a runtime_env would double each run's time).
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MKT_TAG_CACHE", str(tmp_path_factory.mktemp("ray-workers-cache")))
        for name, value in object_stores.ENVIRONMENT.items():  # servers started when needed
            env.setenv(name, value)
        ray.init(
            address="local",  # never a cluster named by RAY_ADDRESS
            num_cpus=2,
            num_gpus=0,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
        )
    yield ray
    ray.shutdown()


def named(item: TagResult | ImageLoadError) -> Path | RemoteImage:
    """The image an item of ``tag_files`` is about (an error names a URI in its message only:
    ``ImageLoadError.path`` is a Path, which folds the "//")."""
    if isinstance(item, ImageLoadError):
        return parse_input(str(item)[: -len(item.reason) - 2])
    return item.path


def test_the_engine_tags_as_a_local_run(ray_instance, photos):
    """Local files, and the same files in an S3 and a GCS bucket (fetched by the decoding
    tasks), in one run: the tags and failures of a local run of the local files."""
    from mkt_tag import Tagger

    (photos / "empty.jpg").write_bytes(b"")
    (photos / "text.png").write_text("not an image")
    paths = sorted(path for path in photos.rglob("*") if path.is_file())
    assert len(paths) == 8
    stores = object_stores.start()
    sources: dict[Path | RemoteImage, Path] = {path: path for path in paths}  # -> local file
    for scheme in ("s3", "gs"):  # all but empty.jpg in GCS (see object_stores.upload)
        uploaded = stores.upload(photos, f"{scheme}://engine/p/")
        sources.update((RemoteImage(uri), path) for uri, path in uploaded.items())
    assert len(sources) == 8 + 8 + 7
    tagger = Tagger.load(str(TINY_CONFIG), precision="fp32")
    labels = tagger.embed_labels(ENTRIES)
    selection = Selection(top_k=len(ENTRIES))  # every label, ranked: the whole order compared
    local = {item.path: item for item in tagger.tag_files(paths, labels, selection, 3)}
    engine = RayEngine(str(TINY_CONFIG), ENTRIES, device="cpu", precision="fp32")
    assert pickle.loads(pickle.dumps(engine)) == engine  # what each actor is given
    assert [entry.label for entry in engine.entries] == labels.labels

    items = list(engine.tag_files(list(sources), selection, batch_size=3))

    assert sorted(map(named, items), key=str) == sorted(sources, key=str)  # each once
    failed = {named(item): item.reason for item in items if isinstance(item, ImageLoadError)}
    assert failed == {
        image: local[path].reason
        for image, path in sources.items()
        if isinstance(local[path], ImageLoadError)
    }
    assert sorted(image.name for image in failed) == ["empty.jpg"] * 2 + ["text.png"] * 3
    assert {failed[image] for image in failed if image.name == "empty.jpg"} == {
        "empty file (0 bytes)"
    }
    assert all("not an image" in failed[image] for image in failed if image.name == "text.png")
    tagged = [item for item in items if not isinstance(item, ImageLoadError)]
    for item in tagged:
        expected = local[sources[item.path]]
        assert [tag.label for tag in item.tags] == [tag.label for tag in expected.tags]
        scores = np.array([tag.score for tag in item.tags])
        np.testing.assert_allclose(scores, [tag.score for tag in expected.tags], atol=1e-5)
    assert len(tagged) == 18 and sum(isinstance(item.path, RemoteImage) for item in tagged) == 12


def test_a_missing_model_fails_before_ray_starts(monkeypatch, photos):
    def no_ray():
        raise AssertionError("Ray was started")

    monkeypatch.setattr(ray_engine, "_import_ray", no_ray)
    engine = RayEngine("Nope:x", ENTRIES)
    with pytest.raises(ModelError, match="unknown model"):
        list(engine.tag_files([photos / "a.jpg"], Selection()))
    assert list(engine.tag_files([], Selection())) == []  # nothing to tag: nothing started


def test_without_ray_the_engine_says_how_to_install_it(monkeypatch, photos):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails
    with pytest.raises(MktTagError) as raised:
        ray_engine.check_job(None, None, False)
    assert str(raised.value) == "the Ray engine needs Ray: pip install 'mkt-tag[ray]'"
    engine = RayEngine(str(TINY_CONFIG), ENTRIES)
    with pytest.raises(MktTagError, match=r"needs Ray: pip install 'mkt-tag\[ray\]'"):
        list(engine.tag_files([photos / "a.jpg"], Selection()))


@pytest.mark.parametrize(
    ("nodes", "options", "expected"),
    [
        ([(2, 0)], {}, ActorPlan(1, 1, 0.0, "cpu")),  # CI: one actor, one CPU left to decode
        ([(16, 0)], {}, ActorPlan(3, 4, 0.0, "cpu")),  # 3 groups of 4 + 1, 4 CPUs decode
        ([(0, 0), (8, 0), (8, 0)], {}, ActorPlan(2, 4, 0.0, "cpu")),  # a head without CPUs
        ([(8, 0), (8, 0)], {"cpus_per_actor": 3}, ActorPlan(4, 3, 0.0, "cpu")),
        ([(4, 0)], {"device": "mps"}, ActorPlan(1, 3, 0.0, "mps")),
        ([(16, 8)], {}, ActorPlan(8, 1, 1.0, "cuda")),  # one model per GPU
        ([(16, 4), (16, 4)], {"device": "cuda"}, ActorPlan(8, 1, 1.0, "cuda")),
        ([(32, 8)], {"gpus_per_actor": 0.5}, ActorPlan(16, 1, 0.5, "cuda")),
        ([(16, 8)], {"device": "cpu"}, ActorPlan(3, 4, 0.0, "cpu")),
        ([(16, 8)], {"actors": 2, "cpus_per_actor": 4}, ActorPlan(2, 4, 1.0, "cuda")),
    ],
)
def test_actors_per_gpu_or_per_group_of_cpus(nodes, options, expected):
    assert plan_actors(nodes, **options) == expected


@pytest.mark.parametrize(
    ("nodes", "options", "message"),
    [
        ([(8, 0)], {"device": "cuda"}, "--device cuda: the Ray cluster has no GPU"),
        ([(1, 0)], {}, r"no CPU left to decode on a Ray cluster of 1 CPUs: the model takes 1 x 1"),
        ([(4, 0)], {"actors": 2, "cpus_per_actor": 2}, r"of 4 CPUs: the model takes 2 x 2"),
        ([(8, 8)], {}, r"no CPU left to decode .* 8 x 1 \(actors x CPUs\); ask for fewer actors"),
    ],
)
def test_plans_that_would_hang_are_refused(nodes, options, message):
    with pytest.raises(MktTagError, match=message):
        plan_actors(nodes, **options)


def test_a_failed_ray_task_is_one_line_naming_its_cause():
    class TaskError(Exception):  # as Ray's RayTaskError: the task's exception in ``cause``
        cause = ValueError("cannot decode\n  File ...\nTraceback")

    assert ray_engine._one_line(TaskError("ray::MapBatches(_decode)")) == (
        "ValueError: cannot decode"
    )
    try:
        raise ConnectionError("no cluster at 10.0.0.1:6379") from OSError("refused")
    except ConnectionError as error:
        assert ray_engine._one_line(error) == "OSError: refused"


def test_an_address_nothing_answers_at_fails_at_once():
    """Ray itself retries a dead address for minutes, one warning every few seconds."""
    import socket

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]  # closed below: nothing listens there
    with pytest.raises(MktTagError, match=rf"^cannot reach Ray at 127.0.0.1:{port}: "):
        ray_engine._check_reachable(f"127.0.0.1:{port}")
    for left_to_ray in (None, "auto", "local", "ray://head:10001"):
        ray_engine._check_reachable(left_to_ray)
