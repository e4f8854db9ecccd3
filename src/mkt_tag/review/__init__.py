"""``mkt-tag review``: look through tagging results in the browser, accept, reject and add
tags, and keep every decision as training data.

- ``photos``: the photos and tags of a results file or a folder of sidecars;
- ``corrections``: the decisions and their file (a ``train``/``eval --data`` set);
- ``session``: a review and the queries its page makes (filter, sort, pages);
- ``thumbnails``: thumbnails made in background threads, cached;
- ``server``: the local web server (token, API, the page in ``static/``);
- ``apply``: corrected tags into sidecars (``--apply``); ``export``: a static gallery.

Example:
    >>> from mkt_tag.review import open_review
    >>> review = open_review("tags.csv", "labels.txt")
    >>> review.decide(0, "dog", "reject")  # saved in tags.corrections.jsonl at once
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mkt_tag.review.corrections import Corrections, corrections_path
from mkt_tag.review.photos import load_photos
from mkt_tag.review.session import Query, Review


def open_review(
    source: str | Path,
    labels: str | Path,
    corrections: str | Path | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> Review:
    """A review of the results file (or folder of sidecars) ``source`` against the
    vocabulary ``labels``, resuming the decisions in ``corrections`` (default: beside the
    results, ``corrections_path``).

    Raises:
        InputFileError: the results, the vocabulary or the corrections cannot be read.
    """
    from mkt_tag.vocab import read_labels

    source = Path(source)
    vocabulary = read_labels(labels)
    if on_warning is not None:
        for line in vocabulary.warnings:
            on_warning(line)
    photos = load_photos(source, on_warning)
    saved = Corrections(Path(corrections) if corrections else corrections_path(source))
    return Review(photos, vocabulary.labels, saved, source)


__all__ = ["Corrections", "Query", "Review", "corrections_path", "load_photos", "open_review"]
