"""`mkt-tag tag --engine ray`: the same files as a local run, resumed alike, every error path in
one line. Runs share the local Ray instance of ``tests/tagging/test_ray_engine.py``."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mkt_tag.cli import app
from mkt_tag.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_PARTIAL, EXIT_USAGE
from mkt_tag.tagging.ray_engine import RayEngine
from tests.conftest import TINY_CONFIG
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


def test_a_uri_is_refused_before_any_work(label_file, monkeypatch):
    monkeypatch.setattr(RayEngine, "tag_files", no_ray)
    result = tag("s3://bucket/photos", "-r", "-l", label_file, "--engine", "ray")
    assert result.exit_code == EXIT_USAGE, result.output
    assert result.stderr.strip() == (
        "error: s3://bucket/photos: the Ray engine reads local or mounted paths for now; "
        "mount the bucket (mountpoint-s3, gcsfuse) and give its path"
    )


def test_without_ray_the_engine_is_one_line_and_exit_1(photos, label_file, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    result = tag(photos, "-l", label_file, "--engine", "ray")
    assert result.exit_code == EXIT_ERROR
    assert result.stderr.strip() == "error: the Ray engine needs Ray: pip install 'mkt-tag[ray]'"
