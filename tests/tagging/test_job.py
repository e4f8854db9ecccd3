"""A run is planned before any model is loaded; a run killed at any moment leaves no partial
file, and the next run resumes to the same end."""

from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mkt_tag.errors import InputFileError
from mkt_tag.results import ResultsFile, read_results
from mkt_tag.tagging.job import TagJob, plan, run, run_identity
from mkt_tag.tagging.selection import Selection
from tests.conftest import TINY_CONFIG, make_photo

N_PHOTOS = 300


# --- the library's flow: plan, then a model only where needed ----------------------------


@pytest.fixture(scope="module")
def tagger():
    from mkt_tag import Tagger

    return Tagger.load(str(TINY_CONFIG), precision="fp32")


def drain(events):
    """Every item of a run, and its report."""
    items = []
    while True:
        try:
            items.append(next(events))
        except StopIteration as stop:
            return items, stop.value


def test_plan_then_run_loads_no_model_when_nothing_is_left(tmp_path, photos, tagger):
    identity = run_identity(TINY_CONFIG, ["cat", "dog"], Selection(top_k=2))
    assert identity.model_fingerprint == tagger.scores_fingerprint  # found without loading
    job = TagJob(
        [photos], Selection(top_k=2), output=tmp_path / "r.csv", sidecar="json", run=identity
    )
    with plan(job) as work:
        assert work.todo == work.images and len(work.images) == 5
        items, report = drain(run(work, tagger, tagger.embed_labels(["cat", "dog"])))
    assert report.tagged == 5 and len(items) == 5
    with plan(job) as work:
        assert work.todo == [] and work.skipped == 5
        items, report = drain(run(work, None, None))  # no model at all
    assert items == [] and (report.tagged, report.skipped, report.failures) == (0, 5, [])
    assert report.states == {"new": 0, "stale": 0, "current": 5}
    assert len(read_results(tmp_path / "r.csv")) == 5
    for changed in (
        run_identity(TINY_CONFIG, ["cat", "dog", "sea"], Selection(top_k=2)),  # vocabulary
        run_identity(TINY_CONFIG, ["cat", "dog"], Selection(top_k=3)),  # selection
        None,  # unknown: nothing can be current
    ):
        job.run = changed
        with plan(job) as work:
            assert work.todo == work.images and work.states["stale"] == 5


def test_a_plan_holds_the_results_file_until_the_run_ends(tmp_path, photos, tagger):
    job = TagJob([photos / "a.jpg"], Selection(top_k=2), output=tmp_path / "r.csv")
    work = plan(job)
    with pytest.raises(ValueError, match="give a tagger"):
        drain(run(work, None, None))
    ResultsFile(tmp_path / "r.csv").close()  # the failed run let the file go
    with plan(job) as work:
        drain(run(work, tagger, tagger.embed_labels(["cat"])))
    ResultsFile(tmp_path / "r.csv").close()


def test_a_job_whose_every_input_is_missing_fails_at_planning(tmp_path):
    job = TagJob([tmp_path / "nope", tmp_path / "gone.jpg"], Selection(), output=tmp_path / "r.csv")
    with pytest.raises(InputFileError) as caught:
        plan(job)
    assert str(caught.value) == (
        f"{tmp_path / 'nope'}: file not found; {tmp_path / 'gone.jpg'}: file not found"
    )
    assert not (tmp_path / "r.csv").exists()


def test_run_given_a_job_plans_it_and_yields_missing_inputs_first(tmp_path, photos, tagger):
    job = TagJob([photos / "a.jpg", tmp_path / "nope.jpg"], Selection(top_k=1))
    items, report = drain(run(job, tagger, tagger.embed_labels(["cat", "dog"])))
    assert [str(item) for item in items[:1]] == [f"{tmp_path / 'nope.jpg'}: file not found"]
    assert [item.path for item in items[1:]] == [photos / "a.jpg"]
    assert report.tagged == 1 and len(report.failures) == 1


# --- real processes killed mid-run: seconds each (`pytest -m "not slow"` skips them) ----


def command(photos: Path, labels: Path, output: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mkt_tag",
        "tag",
        str(photos),
        "--labels",
        str(labels),
        "--model",
        str(TINY_CONFIG),
        "-o",
        str(output),
        "--sidecar",
        "json",
        "--batch-size",
        "1",
        "--workers",
        "0",
        "--precision",
        "fp32",
        "-q",
    ]


def rows(path: Path, root: Path) -> list[tuple[str, str, str]]:
    with path.open(encoding="utf-8") as handle:
        return [
            (str(Path(r["path"]).relative_to(root)), r["tags"], r["scores"])
            for r in csv.DictReader(handle)
        ]


def sidecars(root: Path) -> dict[str, bytes]:
    """Each sidecar's bytes, less the date in mkt-tag's record (when it was written)."""
    return {
        p.name: re.sub(rb'"date": "[^"]*"', b'"date": ""', p.read_bytes())
        for p in sorted(root.glob("*.json"))
    }


# One thread: tiny models are slower with several, and the test wants many small steps.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Photos, labels, and the outputs of a run that was not interrupted."""
    root = tmp_path_factory.mktemp("uninterrupted")
    photos = root / "photos"
    for i in range(N_PHOTOS):
        make_photo(photos / f"{i:03d}.jpg", size=(96, 72), seed=i)
    labels = root / "labels.txt"
    labels.write_text("cat\ndog\nbeach\nsunset\ntraffic light\n")
    reference = root / "reference"
    shutil.copytree(photos, reference)
    done = subprocess.run(
        command(reference, labels, root / "reference.csv"),
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )
    assert done.returncode == 0, done.stderr
    return {"photos": photos, "reference": reference, "labels": labels, "root": root}


@pytest.fixture
def world(tmp_path: Path, uninterrupted: dict[str, Path]) -> dict[str, Path]:
    shutil.copytree(uninterrupted["photos"], tmp_path / "photos")
    return {**uninterrupted, "photos": tmp_path / "photos", "tmp": tmp_path}


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt(world: dict[str, Path], sig: int) -> subprocess.CompletedProcess[str]:
    """Start a run, send ``sig`` once some images are journalled, return how it ended."""
    output = world["tmp"] / "out.csv"
    journal = output.with_name(output.name + ".partial.jsonl")
    process = subprocess.Popen(
        command(world["photos"], world["labels"], output),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        # a shell's background job (`cmd &` without job control) ignores SIGINT, and so would
        # the run: give it the default disposition, as a terminal's Ctrl-C finds it
        preexec_fn=_default_sigint,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if journal.exists() and journal.read_bytes().count(b"\n") >= 20:
            break
        time.sleep(0.005)
    assert process.poll() is None, "the run ended before it could be interrupted"
    os.kill(process.pid, sig)
    stdout, stderr = process.communicate(timeout=60)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def check_resumes_to_reference(world: dict[str, Path]) -> None:
    output = world["tmp"] / "out.csv"
    assert not output.exists(), "the combined output must not exist before the run completes"
    # every sidecar on disk is complete JSON (atomic writes), and some images are left to do
    partial = sidecars(world["photos"])
    assert 0 < len(partial) < N_PHOTOS
    reference = sidecars(world["reference"])
    for name, content in partial.items():
        assert content == reference[name]
    resumed = subprocess.run(
        command(world["photos"], world["labels"], output),
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert rows(output, world["photos"]) == rows(
        world["root"] / "reference.csv", world["reference"]
    )
    assert sidecars(world["photos"]) == reference
    leftovers = [p.name for p in world["tmp"].iterdir() if "partial" in p.name or ".tmp" in p.name]
    assert leftovers == []


@pytest.mark.slow
def test_kill_9_then_resume(world):
    ended = interrupt(world, signal.SIGKILL)
    assert ended.returncode == -signal.SIGKILL
    check_resumes_to_reference(world)


@pytest.mark.slow
def test_ctrl_c_then_resume(world):
    ended = interrupt(world, signal.SIGINT)
    assert ended.returncode == 130
    assert "run the same command again to resume" in ended.stderr
    assert "Traceback" not in ended.stderr
    check_resumes_to_reference(world)
