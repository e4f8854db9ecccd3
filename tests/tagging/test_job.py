"""A run killed at any moment leaves no partial file, and the next run resumes to the same end."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import TINY_CONFIG, make_photo

# Real processes killed mid-run: seconds each (`pytest -m "not slow"` skips them).
pytestmark = pytest.mark.slow

N_PHOTOS = 300


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
    return {p.name: p.read_bytes() for p in sorted(root.glob("*.json"))}


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


def test_kill_9_then_resume(world):
    ended = interrupt(world, signal.SIGKILL)
    assert ended.returncode == -signal.SIGKILL
    check_resumes_to_reference(world)


def test_ctrl_c_then_resume(world):
    ended = interrupt(world, signal.SIGINT)
    assert ended.returncode == 130
    assert "run the same command again to resume" in ended.stderr
    assert "Traceback" not in ended.stderr
    check_resumes_to_reference(world)
