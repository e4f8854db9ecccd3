"""A small tagged photo folder, its results file and vocabulary, and a running review server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mkt_tag.results import Tag, TagResult, write_results
from mkt_tag.review import open_review
from mkt_tag.review.server import ReviewServer
from mkt_tag.review.session import Review
from mkt_tag.review.thumbnails import Thumbnails
from tests.conftest import make_photo

LABELS = ["cat", "dog", "beach", "sunset", "traffic light"]
# photo name -> the model's tags
TAGS = {
    "a.jpg": [Tag("dog", 0.91), Tag("beach", 0.42)],
    "b.png": [Tag("cat", 0.35)],
    "c.jpg": [Tag("dog", 0.28), Tag("sunset", 0.77)],
    "d.jpg": [],
}


@pytest.fixture
def tagged(tmp_path: Path) -> dict[str, Path]:
    """Four photos, their results file (tags.csv) and the vocabulary."""
    folder = tmp_path / "photos"
    for seed, name in enumerate(TAGS):
        make_photo(folder / name, size=(80, 60), seed=seed)
    results = tmp_path / "tags.csv"
    write_results(results, [TagResult(folder / name, tags) for name, tags in TAGS.items()])
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(LABELS) + "\n", encoding="utf-8")
    return {"folder": folder, "results": results, "labels": labels, "root": tmp_path}


@pytest.fixture
def review(tagged: dict[str, Path]) -> Review:
    return open_review(tagged["results"], tagged["labels"])


def photo_id(review: Review, name: str) -> int:
    return next(photo.id for photo in review.photos if photo.path.name == name)


@contextmanager
def serving(review: Review, cache: Path) -> Iterator[ReviewServer]:
    """``review`` served on a free port of 127.0.0.1, in a background thread."""
    thumbnails = Thumbnails([photo.path for photo in review.photos], cache, workers=1)
    running = ReviewServer(review, thumbnails)
    thread = threading.Thread(target=running.serve_forever, daemon=True)
    thread.start()
    yield running
    running.shutdown()
    running.server_close()
    thread.join(5)


@pytest.fixture
def server(review: Review, isolated_cache: Path) -> Iterator[ReviewServer]:
    """The review served on a free port of 127.0.0.1, in a background thread."""
    with serving(review, isolated_cache) as running:
        yield running
