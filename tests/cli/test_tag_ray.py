"""`mkt-tag tag --engine ray`: the same files as a local run, resumed alike, every error path in
one line; images in buckets (``tests/object_stores.py``) too. Runs share the local Ray
instance of ``tests/tagging/test_ray_engine.py``."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mkt_tag import remote
from mkt_tag.cli import app
from mkt_tag.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_PARTIAL, EXIT_USAGE
from mkt_tag.results import TagResult
from mkt_tag.tagging.ray_engine import RayEngine
from tests import object_stores
from tests.conftest import TINY_CONFIG, make_photo
from tests.tagging.test_ray_engine import ray_instance  # noqa: F401  (the shared instance)

runner = CliRunner()


def tag(*args: str | Path, model: str | Path = TINY_CONFIG):
    options = ["--model", str(model), "--precision", "fp32"]
    return runner.invoke(app, ["tag", *map(str, args), *options])


def rows(path: Path) -> dict[str, tuple[list[str], list[float], str]]:
    """path -> (labels, scores, run) of a results file."""
    with path.open(encoding="utf-8") as file:
        return {
            row["path"]: (
                row["tags"].split("|"),
                [float(score) for score in row["scores"].split("|")],
                row["run"],
            )
            for row in csv.DictReader(file)
        }


def assert_same_tags(ray_file: Path, local_file: Path) -> None:
    ours, theirs = rows(ray_file), rows(local_file)
    assert ours.keys() == theirs.keys()
    for path, (labels, scores, run) in ours.items():
        assert (labels, run) == (theirs[path][0], theirs[path][2]), path
        assert scores == pytest.approx(theirs[path][1], abs=1.01e-4)  # 4 decimals written


def no_ray(*args: object, **kwargs: object) -> None:
    raise AssertionError("the Ray engine was started")


@pytest.mark.usefixtures("ray_instance")
def test_a_run_on_ray_writes_what_a_local_run_writes(photos, label_file, tmp_path, monkeypatch):
    (photos / "bad.jpg").write_bytes(b"")
    local = tag(photos, "-r", "-l", label_file, "-o", tmp_path / "local.csv")
    assert local.exit_code == EXIT_PARTIAL, local.output
    args = (photos, "-r", "-l", label_file, "-o", tmp_path / "results.csv", "--sidecar", "json")

    result = tag(*args, "--engine", "ray")

    assert result.exit_code == EXIT_PARTIAL, result.output
    assert f"failed: {photos / 'bad.jpg'}: empty file (0 bytes)" in result.stderr
    assert "7 images: tagged 6, skipped 0 current, failed 1 (listed above)" in result.stderr
    assert "Traceback" not in result.output
    assert_same_tags(tmp_path / "results.csv", tmp_path / "local.csv")
    assert (photos / "sub" / "f.jpg.json").is_file() and not (photos / "bad.jpg.json").exists()
    # Everything current: the engine is not even started.
    (photos / "bad.jpg").unlink()
    monkeypatch.setattr(RayEngine, "tag_files", no_ray)
    again = tag(*args, "--engine", "ray")
    assert again.exit_code == 0, again.output
    assert "6 images (0 new, 0 stale, 6 current): tagged 0, skipped 6 current" in again.stderr


def test_with_nothing_to_tag_neither_ray_nor_torch_is_imported(photos, label_file, tmp_path):
    """Outputs of a local run are current for a Ray run too (the tags depend on the model,
    vocabulary and selection, not on the engine): nothing to tag, nothing started."""
    assert tag(photos, "-l", label_file, "-o", tmp_path / "r.csv").exit_code == 0
    script = (
        "import sys; from typer.testing import CliRunner; from mkt_tag.cli import app; "
        "result = CliRunner().invoke(app, sys.argv[1:]); "
        "print(result.exit_code, result.stderr.strip(), 'ray' in sys.modules, "
        "'torch' in sys.modules)"
    )
    args = ["tag", photos, "-l", label_file, "-o", tmp_path / "r.csv", "--engine", "ray"]
    args += ["--model", TINY_CONFIG, "--precision", "fp32"]
    done = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == (
        "0 5 images (0 new, 0 stale, 5 current): tagged 0, skipped 5 current, failed 0; "
        "0.0 s, 0.0 img/s False False"
    )


@pytest.mark.usefixtures("ray_instance")
def test_an_interrupted_shard_resumes_on_ray(photos, label_file, tmp_path, monkeypatch):
    from mkt_tag import Tagger

    tagger = Tagger.load(str(TINY_CONFIG), precision="fp32")
    asked: list[list[Path]] = []

    def first_batch_then_ctrl_c(engine, paths, selection, batch_size=16):
        """An engine stopped by Ctrl-C once its first batch is tagged (and journaled)."""
        asked.append(list(paths))
        labels = tagger.embed_labels(engine.entries)
        yield from tagger.tag_files(paths[:batch_size], labels, selection, batch_size)
        raise KeyboardInterrupt

    real = RayEngine.tag_files

    def recorded(engine, paths, selection, batch_size=16):
        asked.append(list(paths))
        return real(engine, paths, selection, batch_size)

    shard = (photos, "-r", "-l", label_file, "--shard", "1/2", "-b", "1")
    args = (*shard, "-o", tmp_path / "tags.csv")
    monkeypatch.setattr(RayEngine, "tag_files", first_batch_then_ctrl_c)
    stopped = tag(*args, "--engine", "ray")
    assert stopped.exit_code == EXIT_INTERRUPTED, stopped.output
    assert "run the same command again to resume" in stopped.stderr
    assert (tmp_path / "tags.shard-1-of-2.csv.partial.jsonl").exists()
    assert not (tmp_path / "tags.shard-1-of-2.csv").exists()
    monkeypatch.setattr(RayEngine, "tag_files", recorded)

    resumed = tag(*args, "--engine", "ray")

    assert resumed.exit_code == 0, resumed.output
    assert "3 images (2 new, 0 stale, 1 current): tagged 2, skipped 1 current" in resumed.stderr
    assert [len(paths) for paths in asked] == [3, 2] and asked[0][0] not in asked[1]
    assert not (tmp_path / "tags.shard-1-of-2.csv.partial.jsonl").exists()
    local = tag(*shard, "-o", tmp_path / "local.csv")  # the same shard in one local run
    assert local.exit_code == 0, local.output
    assert_same_tags(tmp_path / "tags.shard-1-of-2.csv", tmp_path / "local.shard-1-of-2.csv")


@pytest.mark.usefixtures("ray_instance")
def test_a_model_that_fails_in_the_actors_is_one_line(photos, label_file, tmp_path):
    from mkt_tag import checkpoints

    checkpoints.save(checkpoints.load(str(TINY_CONFIG)), tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / "model.safetensors"
    weights.write_bytes(b"not safetensors")  # found on the driver, unreadable in an actor

    result = tag(photos / "a.jpg", "-l", label_file, "--engine", "ray", model=tmp_path / "ckpt")

    assert result.exit_code == EXIT_ERROR, result.output
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: the Ray engine's model actor failed: ")
    assert f"{weights}: cannot read weights" in lines[-1]
    assert "Traceback" not in result.output and len(lines) == 1


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["--workers", "2", "--engine", "ray"], "--workers: not with --engine ray", EXIT_USAGE),
        (["--parallel", "2", "--engine", "ray"], "--parallel: not with --engine ray", EXIT_USAGE),
        (["--feature-cache", "--engine", "ray"], "--feature-cache: not with --engine", EXIT_USAGE),
        (["--ray-address", "auto"], "--ray-address: only with --engine ray", EXIT_USAGE),
        (["--engine", "spark"], "'spark' is not one of", EXIT_USAGE),
        (["--engine", "ray", "-m", "Nope:x"], "unknown model", EXIT_ERROR),
    ],
)
def test_what_the_engine_cannot_do_is_refused_in_one_line(
    photos, label_file, monkeypatch, args, message, code
):
    monkeypatch.setattr(RayEngine, "tag_files", no_ray)
    result = runner.invoke(app, ["tag", str(photos), "-l", str(label_file), *args])
    assert result.exit_code == code, result.output
    assert message in result.stderr and "Traceback" not in result.output


def test_thresholds_of_another_model_are_refused_without_loading_it(
    photos, label_file, tmp_path, monkeypatch
):
    """The model check of --thresholds needs no weights: the engine's scores fingerprint is
    found from the model's files, on the driver, before Ray starts."""
    thresholds = tmp_path / "t.tsv"
    thresholds.write_text("# model: another\n# model fingerprint: 0123abcd\ncat\t0.1\n")
    monkeypatch.setattr(RayEngine, "tag_files", no_ray)
    args = (photos, "-l", label_file, "--thresholds", thresholds, "--engine", "ray")
    refused = tag(*args)
    assert refused.exit_code == EXIT_ERROR, refused.output
    assert "calibrated for another model" in refused.stderr and "Traceback" not in refused.output
    monkeypatch.setattr(RayEngine, "tag_files", lambda *args, **kwargs: iter(()))
    forced = tag(*args, "--force-thresholds")
    assert forced.exit_code == 0, forced.output
    assert forced.stderr.count("calibrated for another model") == 1


@pytest.mark.usefixtures("ray_instance")
def test_a_bucket_on_ray_is_tagged_as_its_files_are(photos, label_file, tmp_path, monkeypatch):
    """A prefix of an S3 bucket and a local file in one run: the rows of a local run of the
    same files, under the objects' URIs; a broken object is one line; a rerun skips all."""
    stores = object_stores.start()
    (photos / "bad.jpg").write_bytes(b"")
    uploaded = stores.upload(photos, "s3://cli-run/photos/")
    extra = make_photo(tmp_path / "extra" / "g.jpg", seed=7)
    local = tag(photos, extra, "-r", "-l", label_file, "-o", tmp_path / "local.csv")
    assert local.exit_code == EXIT_PARTIAL, local.output
    args = ("s3://cli-run/photos/", extra, "-r", "-l", label_file, "-o", tmp_path / "tags.csv")

    def driver_reads(image):
        raise AssertionError(f"the driver read {image}: the decoding tasks are to")

    monkeypatch.setattr(remote, "_read", driver_reads)  # Ray's workers import their own

    result = tag(*args, "--engine", "ray")

    assert result.exit_code == EXIT_PARTIAL, result.output
    failures = [line for line in result.stderr.splitlines() if line.startswith("failed")]
    assert failures == ["failed: s3://cli-run/photos/bad.jpg: empty file (0 bytes)"]
    assert "8 images: tagged 7, skipped 0 current, failed 1 (listed above)" in result.stderr
    assert "Traceback" not in result.output
    ours, theirs = rows(tmp_path / "tags.csv"), rows(tmp_path / "local.csv")
    as_local = {uri: str(path) for uri, path in uploaded.items()} | {str(extra): str(extra)}
    assert sorted(ours) == sorted(uri for uri in as_local if not uri.endswith("bad.jpg"))
    for written, (labels, scores, run) in ours.items():
        assert (labels, run) == (theirs[as_local[written]][0], theirs[as_local[written]][2])
        assert scores == pytest.approx(theirs[as_local[written]][1], abs=1.01e-4)
    # Everything current: the engine is not even started.
    stores.s3.delete_object(Bucket="cli-run", Key="photos/bad.jpg")
    monkeypatch.setattr(RayEngine, "tag_files", no_ray)
    again = tag(*args, "--engine", "ray")
    assert again.exit_code == 0, again.output
    assert "7 images (0 new, 0 stale, 7 current): tagged 0, skipped 7 current" in again.stderr


def test_shards_of_a_bucket_resume_and_merge_into_one_run(
    photos, label_file, tmp_path, monkeypatch
):
    """--shard 1/2 (interrupted, then resumed from its journal) and 2/2 of a GCS prefix,
    merged, give the file one run writes. The engine here is a local Tagger over the fetched
    objects (Ray's own reading is tested above): sharding and results are the engine's
    caller's."""
    from mkt_tag import Tagger

    object_stores.start().upload(photos, "gs://cli-shards/photos/")
    tagger = Tagger.load(str(TINY_CONFIG), precision="fp32")
    asked: list[list[object]] = []

    def fetching_engine(engine, paths, selection, batch_size=16, stop=False):
        asked.append(list(paths))
        labels = tagger.embed_labels(engine.entries)
        with remote.fetched(paths) as files:
            image = dict(zip(files, paths, strict=True))
            for item in tagger.tag_files(files, labels, selection, batch_size):
                yield TagResult(image[item.path], item.tags)
                if stop:
                    raise KeyboardInterrupt

    def stopping_engine(engine, paths, selection, batch_size=16):
        return fetching_engine(engine, paths, selection, batch_size, stop=True)

    args = ("gs://cli-shards/photos", "-r", "-l", label_file, "-b", "1", "--engine", "ray")
    monkeypatch.setattr(RayEngine, "tag_files", stopping_engine)
    stopped = tag(*args, "--shard", "1/2", "-o", tmp_path / "tags.csv")
    assert stopped.exit_code == EXIT_INTERRUPTED, stopped.output
    assert (tmp_path / "tags.shard-1-of-2.csv.partial.jsonl").exists()
    monkeypatch.setattr(RayEngine, "tag_files", fetching_engine)

    resumed = tag(*args, "--shard", "1/2", "-o", tmp_path / "tags.csv")
    second = tag(*args, "--shard", "2/2", "-o", tmp_path / "tags.csv")
    whole = tag(*args, "-o", tmp_path / "one.csv")

    assert (resumed.exit_code, second.exit_code, whole.exit_code) == (0, 0, 0)
    assert "3 images (2 new, 0 stale, 1 current): tagged 2, skipped 1 current" in resumed.stderr
    assert [len(paths) for paths in asked] == [3, 2, 3, 6] and asked[0][0] not in asked[1]
    shards = [tmp_path / f"tags.shard-{index}-of-2.csv" for index in (1, 2)]
    expect = ("--expect", "gs://cli-shards/photos", "-r")
    merged = runner.invoke(app, ["merge", str(tmp_path / "tags.csv"), *map(str, shards), *expect])
    assert merged.exit_code == 0, merged.output
    assert (tmp_path / "tags.csv").read_bytes() == (tmp_path / "one.csv").read_bytes()
    assert all(path.startswith("gs://cli-shards/photos/") for path in rows(tmp_path / "one.csv"))


REFUSED_WITH_URIS = {  # what is asked -> the one line that refuses it
    "s3://b/p -o r.csv": "s3://b/p: the local engine reads local paths: use --engine ray, or "
    "mount the bucket (mountpoint-s3, gcsfuse) and give its path",
    "s3://b/p -o r.csv --engine ray --sidecar json": "--sidecar: not with images given as "
    "URIs (s3://b/p): a sidecar is written beside its image",
    "gs://b/p -o r.csv --engine ray --embed": "--embed: not with images given as URIs "
    "(gs://b/p): keywords are written into the image files",
    "s3://b/p --engine ray": "s3://b/p: give --output, the results file the tags of a bucket go to",
    "photos -o s3://b/tags.csv": "--output s3://b/tags.csv: the results file is written on this "
    "machine (locked and journaled); give a local path, and copy the file to the bucket after "
    "the run",
    "https://example.com/a.jpg -o r.csv --engine ray": "https://example.com/a.jpg: mkt-tag reads "
    "URIs of s3:// and gs:// only; download or mount the images and give their path",
}


@pytest.mark.parametrize("args", REFUSED_WITH_URIS)
def test_what_cannot_be_done_with_uris_is_refused_in_one_line(label_file, monkeypatch, args):
    monkeypatch.setattr(RayEngine, "tag_files", no_ray)
    result = tag(*args.split(), "-l", label_file)
    assert result.exit_code == EXIT_USAGE, result.output
    assert result.stderr.strip() == f"error: {REFUSED_WITH_URIS[args]}"


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_a_missing_bucket_is_one_line(label_file, tmp_path, monkeypatch, scheme):
    object_stores.start()
    monkeypatch.setattr(RayEngine, "tag_files", no_ray)
    args = ("-r", "-l", label_file, "--engine", "ray", "-o", tmp_path / "r.csv")
    result = tag(f"{scheme}://no-such-bucket/photos/", *args)
    assert result.exit_code == EXIT_ERROR, result.output
    assert result.stderr.strip() == f"error: {scheme}://no-such-bucket/photos/: no such bucket"


def test_without_ray_the_engine_is_one_line_and_exit_1(photos, label_file, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    result = tag(photos, "-l", label_file, "--engine", "ray")
    assert result.exit_code == EXIT_ERROR
    assert result.stderr.strip() == "error: the Ray engine needs Ray: pip install 'mkt-tag[ray]'"
