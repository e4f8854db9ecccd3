"""Sharded runs: N shards merged give exactly the file one run gives; a shard resumes alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from mkt_tag.merge import merge
from mkt_tag.results import read_results
from mkt_tag.shards import Shard
from mkt_tag.tagging.job import TagJob, plan, run, run_identity
from mkt_tag.tagging.selection import Selection
from tests.conftest import TINY_CONFIG, make_photo
from tests.tagging.test_job import drain

LABELS = ["cat", "dog", "beach", "sunset", "traffic light"]
SELECTION = Selection(top_k=3)


@pytest.fixture(scope="module")
def tagger():
    from mkt_tag import Tagger

    return Tagger.load(str(TINY_CONFIG), precision="fp32")


@pytest.fixture(scope="module")
def labels(tagger):
    return tagger.embed_labels(LABELS)


@pytest.fixture(scope="module")
def identity():
    return run_identity(TINY_CONFIG, LABELS, SELECTION)


def tag_into(inputs, output, tagger, labels, identity, shard=None, **options):
    """One ``mkt-tag tag -r`` run, or one shard of it; the results file it wrote."""
    # One image per batch: each image's scores are computed alike in a run and in a shard
    # (a batch of another size may round a last bit the other way).
    job = TagJob(
        inputs, SELECTION, True, output, run=identity, shard=shard, batch_size=1, **options
    )
    with plan(job) as work:
        drain(run(work, tagger if work.todo else None, labels if work.todo else None))
    assert job.results_path is not None
    return job.results_path


@pytest.mark.parametrize("count", [1, 2, 3, 8])  # 8 shards for 6 photos: two are empty
def test_n_shards_merged_are_exactly_one_run(tmp_path, photos, tagger, labels, identity, count):
    one_run = tag_into([photos], tmp_path / "one.csv", tagger, labels, identity)
    parts = [
        # Shards in every format: the merge reads any.
        tag_into(
            [photos],
            tmp_path / f"tags.{('csv', 'json', 'jsonl')[i % 3]}",
            tagger,
            labels,
            identity,
            Shard(i, count),
        )
        for i in range(1, count + 1)
    ]
    assert [part.name for part in parts[:2]] == [
        f"tags.shard-1-of-{count}.json",
        f"tags.shard-2-of-{count}.jsonl",
    ][: len(parts[:2])]
    sizes = [len(read_results(part)) for part in parts]
    assert sum(sizes) == 6 and max(sizes) - min(sizes) <= 1
    report = merge(tmp_path / "merged.csv", parts)
    assert report.complete and report.duplicates == [] and report.rows == 6
    assert (tmp_path / "merged.csv").read_bytes() == one_run.read_bytes()
    rows = read_results(one_run)
    assert {row.run for row in rows} == {identity.fingerprint} and all(r.tags for r in rows)
    # Any format out: the JSON a single run writes, from the same parts.
    one_json = tag_into([photos], tmp_path / "one.json", tagger, labels, identity)
    merge(tmp_path / "merged.json", parts)
    assert (tmp_path / "merged.json").read_bytes() == one_json.read_bytes()


def test_shards_spelled_differently_are_the_same_shards(
    tmp_path, photos, tagger, labels, identity, monkeypatch
):
    """Two machines, one giving the folder absolute, the other relative: the shards still
    split the images between them, with nothing twice and nothing left out."""
    first = tag_into([photos], tmp_path / "t.csv", tagger, labels, identity, Shard(1, 2))
    monkeypatch.chdir(photos.parent)
    second = tag_into([Path("photos")], tmp_path / "t.csv", tagger, labels, identity, Shard(2, 2))
    one_run = tag_into([photos], tmp_path / "one.csv", tagger, labels, identity)
    report = merge(tmp_path / "merged.csv", [first, second])
    assert report.complete and report.duplicates == []
    assert (tmp_path / "merged.csv").read_bytes() == one_run.read_bytes()


def test_a_killed_shard_resumes_to_the_same_file(tmp_path, photos, tagger, labels, identity):
    complete = tag_into([photos], tmp_path / "a.csv", tagger, labels, identity, Shard(1, 2))
    job = TagJob(
        [photos],
        SELECTION,
        True,
        tmp_path / "b.csv",
        run=identity,
        shard=Shard(1, 2),
        batch_size=1,
    )
    with plan(job) as work:
        assert len(work.todo) == 3 and work.total == 6
        events = run(work, tagger, labels)
        next(events)  # one image tagged and journaled (one batch), then the run is killed
        events.close()
    journal = tmp_path / "b.shard-1-of-2.csv.partial.jsonl"
    assert journal.exists() and not (tmp_path / "b.shard-1-of-2.csv").exists()
    # A merge before the shard is done names it as unfinished.
    other = tag_into([photos], tmp_path / "b.csv", tagger, labels, identity, Shard(2, 2))
    report = merge(tmp_path / "early.csv", [other])
    assert [(m.path.name, m.unfinished) for m in report.missing_parts] == [
        ("b.shard-1-of-2.csv", True)
    ]
    with plan(job) as work:
        assert len(work.todo) == 2  # resumed: the journaled image is done
        drain(run(work, tagger, labels))
    assert not journal.exists()
    assert (tmp_path / "b.shard-1-of-2.csv").read_bytes() == complete.read_bytes()
    with plan(job) as work:  # and again: nothing left, no model needed
        assert work.todo == [] and work.skipped == 3


def test_sidecars_of_shards_cover_every_image_once(tmp_path, photos, tagger, labels, identity):
    for index in (1, 2, 3):
        tag_into(
            [photos], tmp_path / "t.csv", tagger, labels, identity, Shard(index, 3), sidecar="json"
        )
    images = sorted(photos.rglob("*.*"))
    images = [image for image in images if not image.name.endswith(".json")]
    assert len(images) == 6
    assert all(image.with_name(image.name + ".json").exists() for image in images)
    for index in (1, 2, 3):  # each shard now finds its images current
        job = TagJob(
            [photos],
            SELECTION,
            True,
            tmp_path / "t.csv",
            sidecar="json",
            run=identity,
            shard=Shard(index, 3),
        )
        with plan(job) as work:
            assert work.todo == [] and work.skipped == 2


def test_a_stem_sidecar_shared_across_shards_is_refused_in_both(tmp_path, tagger, labels, identity):
    folder = tmp_path / "photos"
    for i, name in enumerate(["a.jpg", "a.png", "b.jpg", "c.jpg"]):
        make_photo(folder / name, seed=i)
    refused = set()
    for index in (1, 2):
        job = TagJob(
            [folder],
            SELECTION,
            output=tmp_path / "t.csv",
            sidecar="json",
            sidecar_naming="stem",
            run=identity,
            shard=Shard(index, 2),
        )
        with plan(job) as work:
            refused |= {Path(str(f).split(":")[0]).name for f in work.failures}
            assert all(image.stem != "a" for image in work.todo)
    assert refused == {"a.jpg", "a.png"}
