"""The Ray engine tags as a local run does: the same tags, the same failures.

Runs go through one local Ray instance of 2 CPUs (``ray_instance``, shared by the session's
Ray tests: starting one takes about 10 s, each run a few more for its model actor); what
needs no Ray (the resources rule, URIs, a missing Ray or model) is tested without it.
"""

from __future__ import annotations

import logging
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

from mkt_tag.errors import ImageLoadError, MktTagError, ModelError, UsageError
from mkt_tag.tagging import ray_engine
from mkt_tag.tagging.ray_engine import ActorPlan, RayEngine, plan_actors, refuse_uris
from mkt_tag.tagging.selection import Selection
from mkt_tag.vocab import Entry
from tests.conftest import TINY_CONFIG

# An alias makes "dog" the best of two candidates: the engine must score candidates as the
# local run does, not only labels.
ENTRIES = [Entry("cat"), Entry("dog", aliases=["puppy"]), Entry("beach"), Entry("sunset")]
ENTRIES.append(Entry("traffic light", prompts=["a traffic light", "traffic lights at night"]))


@pytest.fixture(scope="session")
def ray_instance(tmp_path_factory: pytest.TempPathFactory):
    """One local Ray instance of 2 CPUs (as in CI) for every Ray test of this process; its
    workers get their own mkt-tag cache, never the user's."""
    import ray

    if ray.is_initialized():  # started for another test module of this session
        yield ray
        return
    # Ray's processes inherit this environment (a runtime_env would double each run's time).
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MKT_TAG_CACHE", str(tmp_path_factory.mktemp("ray-workers-cache")))
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


def test_the_engine_tags_as_a_local_run(ray_instance, photos):
    from mkt_tag import Tagger

    (photos / "empty.jpg").write_bytes(b"")
    (photos / "text.png").write_text("not an image")
    paths = sorted(path for path in photos.rglob("*") if path.is_file())
    assert len(paths) == 8
    tagger = Tagger.load(str(TINY_CONFIG), precision="fp32")
    labels = tagger.embed_labels(ENTRIES)
    selection = Selection(top_k=len(ENTRIES))  # every label, ranked: the whole order compared
    local = {item.path: item for item in tagger.tag_files(paths, labels, selection, 3)}
    engine = RayEngine(str(TINY_CONFIG), ENTRIES, device="cpu", precision="fp32")
    assert pickle.loads(pickle.dumps(engine)) == engine  # what each actor is given
    assert [entry.label for entry in engine.entries] == labels.labels

    items = list(engine.tag_files(paths, selection, batch_size=3))

    assert sorted(item.path for item in items) == paths  # each path once, in any order
    failed = {item.path.name: item.reason for item in items if isinstance(item, ImageLoadError)}
    assert failed == {
        path.name: item.reason for path, item in local.items() if isinstance(item, ImageLoadError)
    }
    assert failed == {"empty.jpg": "empty file (0 bytes)", "text.png": failed["text.png"]}
    assert "not an image" in failed["text.png"]
    tagged = [item for item in items if not isinstance(item, ImageLoadError)]
    for item in tagged:
        expected = local[item.path]
        assert [tag.label for tag in item.tags] == [tag.label for tag in expected.tags]
        scores = np.array([tag.score for tag in item.tags])
        np.testing.assert_allclose(scores, [tag.score for tag in expected.tags], atol=1e-5)
    assert len(tagged) == 6


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
        ray_engine.check_job([photos], None, None, False)
    assert str(raised.value) == "the Ray engine needs Ray: pip install 'mkt-tag[ray]'"
    engine = RayEngine(str(TINY_CONFIG), ENTRIES)
    with pytest.raises(MktTagError, match=r"needs Ray: pip install 'mkt-tag\[ray\]'"):
        list(engine.tag_files([photos / "a.jpg"], Selection()))


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        (Path("s3://bucket/photos"), "s3://bucket/photos"),  # a Path folds "//" to "/"
        ("gs://bucket/photos/a.jpg", "gs://bucket/photos/a.jpg"),
        ("https://example.com/a.jpg", "https://example.com/a.jpg"),
    ],
)
def test_uris_are_refused_in_one_line(given, shown):
    with pytest.raises(UsageError) as raised:
        refuse_uris([Path("photos"), given])
    assert str(raised.value).startswith(f"{shown}: the Ray engine reads local or mounted paths")
    assert "mountpoint-s3" in str(raised.value) and "\n" not in str(raised.value)


def test_local_paths_are_not_uris():
    refuse_uris([Path("photos"), Path("/mnt/photos/a:b.jpg"), Path("C:/photos"), "a:b"])


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
