"""`mkt-tag review` through Typer's CliRunner and as a real process: serve, apply, export,
and one clear line for every mistake a user can make."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mkt_tag.cli import app
from mkt_tag.errors import EXIT_ERROR, EXIT_USAGE
from mkt_tag.review import open_review
from mkt_tag.sidecar_paths import sidecar_path
from tests.cli.test_train import assert_one_line_error
from tests.review.conftest import photo_id

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


def review_cli(*args: object):
    return runner.invoke(app, ["review", *map(str, args)])


@pytest.mark.parametrize(
    "case, code, fragments",
    [
        ("missing results", EXIT_ERROR, ["nope.csv: file not found"]),
        ("not a results file", EXIT_ERROR, ["labels.txt: not a results file"]),
        ("malformed results", EXIT_ERROR, ["bad.csv: malformed results file"]),
        ("missing labels", EXIT_ERROR, ["missing.txt"]),
        ("damaged corrections", EXIT_ERROR, ["tags.corrections.jsonl: line 1: not a corrections"]),
        ("gallery not html", EXIT_USAGE, ["gallery.png: the gallery is an .html file"]),
    ],
)
def test_mistakes_are_one_clear_line(tagged, case, code, fragments):
    root, results, labels = tagged["root"], tagged["results"], tagged["labels"]
    args: list[object] = [results, "--labels", labels, "--no-browser"]
    if case == "missing results":
        args[0] = root / "nope.csv"
    elif case == "not a results file":
        args[0] = labels
    elif case == "malformed results":
        (root / "bad.csv").write_text("path,tags\nx.jpg,dog\n")
        args[0] = root / "bad.csv"
    elif case == "missing labels":
        args[2] = root / "missing.txt"
    elif case == "damaged corrections":
        (root / "tags.corrections.jsonl").write_text("{oops\n")
    elif case == "gallery not html":
        args += ["--export", root / "gallery.png"]
    assert_one_line_error(review_cli(*args), code, *fragments)


def test_apply_writes_sidecars_and_lists_them(review, tagged):
    a = photo_id(review, "a.jpg")
    review.decide(a, "beach", "reject")
    result = review_cli(
        tagged["results"], "--labels", tagged["labels"], "--apply", "--sidecar", "json"
    )
    assert result.exit_code == 0, result.output
    sidecar = sidecar_path(review.photos[a].path, "json")
    assert result.stdout == f"{sidecar}\tdog\n"
    assert "wrote the corrected tags of 1 photos to json sidecars, failed 0" in result.stderr
    assert [t["label"] for t in json.loads(sidecar.read_text())["tags"]] == ["dog"]


def test_export_writes_a_gallery(tagged):
    gallery = tagged["root"] / "gallery.html"
    result = review_cli(tagged["results"], "--labels", tagged["labels"], "--export", gallery)
    assert result.exit_code == 0, result.output
    assert "gallery of 4 photos" in result.stderr and gallery.read_text().count("<figure") == 4


def test_serve_opens_the_browser_and_stops_on_ctrl_c(tagged, monkeypatch):
    opened: list[str] = []
    monkeypatch.setattr("webbrowser.open", opened.append)

    def interrupted(self, poll_interval=0.5):
        raise KeyboardInterrupt

    monkeypatch.setattr("mkt_tag.review.server.ReviewServer.serve_forever", interrupted)
    result = review_cli(tagged["results"], "--labels", tagged["labels"])
    assert result.exit_code == 0, result.output
    url = result.stdout.strip()
    assert url.startswith("http://127.0.0.1:") and "/?token=" in url and opened == [url]
    assert "4 photos, 0 reviewed; decisions go to" in result.stderr and "stopped" in result.stderr


def test_a_real_server_process_keeps_every_decision(tagged):
    """Start `mkt-tag review`, decide through the API, kill it: the decision is in the file."""
    command = [sys.executable, "-m", "mkt_tag", "review", str(tagged["results"])]
    command += ["--labels", str(tagged["labels"]), "--no-browser"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), process.stderr.read() if process.stderr else ""
        token = url.split("token=")[1]
        with urllib.request.urlopen(url) as page:
            assert page.status == 200 and b"mkt-tag review" in page.read()
        base = url.split("/?")[0]
        decision = json.dumps({"id": 0, "label": "beach", "decision": "reject"}).encode()
        call = urllib.request.Request(
            f"{base}/api/decide",
            data=decision,
            headers={"X-Review-Token": token, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(call) as answer:
            assert answer.status == 200
        process.send_signal(signal.SIGKILL)  # no chance to save anything more
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    again = open_review(tagged["results"], tagged["labels"])
    assert again.photo(0)["tags"][1] == {"label": "beach", "score": 0.42, "verdict": "rejected"}
