"""A review: the photos, the vocabulary and the decisions, and the queries the page makes.

Everything here answers in plain dicts and lists (what the server sends as JSON), so the
same calls serve the page, the tests and a Python user. No HTTP here: see ``server.py``.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

from mkt_tag.errors import UsageError
from mkt_tag.review.corrections import (
    Corrections,
    Decisions,
    decided,
    reviewed,
)
from mkt_tag.review.photos import Photo
from mkt_tag.vocab import normalise

SORTS = ("borderline", "score", "path")  # lowest score first, highest first, by path
STATUSES = ("all", "open", "reviewed")
MAX_PAGE = 500  # photos per page at most


@dataclass
class Query:
    """Which photos the grid shows, in which order."""

    label: str = ""  # only photos tagged with it (by the model, or by a person); "": all
    low: float = 0.0  # the score range: of ``label``, else of any of a photo's tags
    high: float = 1.0
    sort: str = "borderline"  # one of SORTS
    status: str = "all"  # one of STATUSES: open (not reviewed yet) or reviewed photos
    text: str = ""  # part of the path, any case
    offset: int = 0
    limit: int = 60

    def check(self) -> None:
        """Raises UsageError for values the page never sends."""
        if self.sort not in SORTS:
            raise UsageError(f"unknown sort {self.sort!r} (use {', '.join(SORTS)})")
        if self.status not in STATUSES:
            raise UsageError(f"unknown status {self.status!r} (use {', '.join(STATUSES)})")
        if not (0 <= self.low <= self.high <= 1):
            raise UsageError(f"score range {self.low}..{self.high} is not within 0..1")
        if self.offset < 0 or not 1 <= self.limit <= MAX_PAGE:
            raise UsageError(f"offset must be >= 0 and limit within 1..{MAX_PAGE}")


class Review:
    """The photos of one results file under review, with a person's decisions."""

    def __init__(
        self,
        photos: Sequence[Photo],
        labels: Sequence[str],
        corrections: Corrections,
        source: Path | None = None,
    ) -> None:
        self.photos = list(photos)
        self.labels = list(labels)
        self.corrections = corrections
        self.source = source  # the results file (or folder) the photos come from, if known
        self._vocabulary = {normalise(label): label for label in self.labels}
        self.decisions: dict[int, Decisions] = _match(self.photos, corrections)
        self._orders: dict[tuple[str, str], list[Photo]] = {}  # (label, sort): photos
        # The server answers in threads: one change at a time, or two quick decisions on
        # one photo would each start from the same decisions and the first be lost.
        self._changing = threading.Lock()

    # --- what the page reads -------------------------------------------------------------

    def photo(self, photo_id: int) -> dict[str, Any]:
        """One photo as the page shows it: tags with score and decision, added labels.

        Raises:
            UsageError: no photo has this id.
        """
        return self._describe(self._photo(photo_id))

    def page(self, query: Query) -> dict[str, Any]:
        """The photos ``query`` selects, sorted, ``limit`` of them from ``offset``; and how
        many it selects in all."""
        query.check()
        everything = query == Query(sort=query.sort, offset=query.offset, limit=query.limit)
        ordered = self._order(query.label, query.sort)
        if everything:
            chosen = ordered
        else:
            chosen = [photo for photo in ordered if self._selected(photo, query)]
        shown = chosen[query.offset : query.offset + query.limit]
        return {
            "total": len(chosen),
            "offset": query.offset,
            "photos": [self._describe(photo) for photo in shown],
        }

    def label_counts(self) -> list[dict[str, Any]]:
        """Every vocabulary label (and every other label a photo is tagged with), with how
        many photos carry it and how many of those a person rejected."""
        tagged: dict[str, int] = dict.fromkeys(self.labels, 0)
        tagged.update(Counter(chain.from_iterable(photo.scores for photo in self.photos)))
        rejected: dict[str, int] = {}
        for photo_id, decisions in self.decisions.items():
            own = self.photos[photo_id].scores
            for label, right in decisions.verdicts.items():
                if right and label not in own:
                    tagged[label] = tagged.get(label, 0) + 1
                elif not right and label in own:
                    rejected[label] = rejected.get(label, 0) + 1
        return [
            {"label": label, "photos": count, "rejected": rejected.get(label, 0)}
            for label, count in tagged.items()
        ]

    def summary(self) -> dict[str, Any]:
        """How far the review is: photos, reviewed photos, decisions; and the files, in full
        and by name (the page's header: ``tags.csv → tags.corrections.jsonl``)."""
        decisions = self.decisions.values()
        source = self.source
        return {
            "photos": len(self.photos),
            "reviewed": sum(d.reviewed for d in decisions),
            "decisions": sum(len(d.verdicts) for d in decisions),
            "results": "" if source is None else str(source.absolute()),
            "results_name": "" if source is None else source.absolute().name,
            "corrections": str(self.corrections.path.absolute()),
            "corrections_name": self.corrections.path.name,
        }

    # --- what the page changes -----------------------------------------------------------

    def decide(self, photo_id: int, label: str, decision: str) -> dict[str, Any]:
        """Accept, reject or clear ``label`` on a photo, save it, and return the photo.

        A label the model did not give must be in the vocabulary (it is added).

        Raises:
            UsageError: no such photo, label or decision.
            OutputError: the corrections file cannot be written (nothing changed).
        """
        photo = self._photo(photo_id)
        if label not in photo.scores:
            found = self._vocabulary.get(normalise(label))
            if found is None:
                raise UsageError(f"{label!r} is not a label of the vocabulary")
            label = found
        try:
            decided(Decisions(), label, decision)  # an unknown decision: before any change
        except ValueError as error:
            raise UsageError(str(error)) from None
        return self._change(photo, lambda current: decided(current, label, decision))

    def mark_reviewed(self, photo_id: int, done: bool = True) -> dict[str, Any]:
        """Mark a photo reviewed (the tags nobody rejected are right, every other label is
        wrong) or open again; save it and return the photo.

        Raises:
            UsageError: no such photo.
            OutputError: the corrections file cannot be written (nothing changed).
        """
        photo = self._photo(photo_id)
        labels = list(photo.scores)
        return self._change(photo, lambda current: reviewed(current, labels, done))

    # --- inside --------------------------------------------------------------------------

    def _photo(self, photo_id: int) -> Photo:
        if not 0 <= photo_id < len(self.photos):
            raise UsageError(f"no photo {photo_id}")
        return self.photos[photo_id]

    def _change(self, photo: Photo, change: Callable[[Decisions], Decisions]) -> dict[str, Any]:
        with self._changing:
            return self._save(photo, change(self.decisions.get(photo.id, Decisions())))

    def _save(self, photo: Photo, decisions: Decisions) -> dict[str, Any]:
        self.corrections.set(photo.path, decisions)  # first: a failed write changes nothing
        if decisions:
            self.decisions[photo.id] = decisions
        else:
            self.decisions.pop(photo.id, None)
        return self._describe(photo)

    def _labels_of(self, photo: Photo) -> dict[str, float | None]:
        """The photo's labels now: the model's (with its score), then those a person added."""
        found: dict[str, float | None] = dict(photo.scores)
        decisions = self.decisions.get(photo.id)
        if decisions is not None:
            for label, right in decisions.verdicts.items():
                if right:
                    found.setdefault(label, None)
        return found

    def _order(self, label: str, sort: str) -> list[Photo]:
        """Every photo in the order of ``sort`` by the score of ``label`` (or of its lowest
        tag). Scores are the model's and never change: each order is sorted once."""
        key = (label, sort)
        if key not in self._orders:
            if sort == "path":
                self._orders[key] = self.photos
            else:
                missing = 2.0 if sort == "borderline" else -1.0  # no score: last either way
                sign = 1 if sort == "borderline" else -1
                scores = [
                    missing if (score := self._sort_score(photo, label)) is None else score
                    for photo in self.photos
                ]
                ranks = sorted(range(len(self.photos)), key=lambda i: (sign * scores[i], i))
                self._orders[key] = [self.photos[i] for i in ranks]
            while len(self._orders) > 64:  # label views of a long session
                self._orders.pop(next(iter(self._orders)))
        return self._orders[key]

    def _sort_score(self, photo: Photo, label: str) -> float | None:
        if label:
            return photo.scores.get(label)
        return min(photo.scores.values(), default=None)

    def _selected(self, photo: Photo, query: Query) -> bool:
        decisions = self.decisions.get(photo.id)
        if query.status != "all" and (decisions is not None and decisions.reviewed) != (
            query.status == "reviewed"
        ):
            return False
        if query.text and query.text.casefold() not in photo.filename.casefold():
            return False
        whole_range = query.low <= 0 and query.high >= 1
        if query.label:
            labels = self._labels_of(photo) if decisions is not None else None
            if labels is None:
                score = photo.scores.get(query.label)
                if score is None:
                    return False
            elif query.label not in labels:
                return False
            else:
                score = labels[query.label]
            return whole_range if score is None else query.low <= score <= query.high
        if whole_range:
            return True
        return any(query.low <= score <= query.high for score in photo.scores.values())

    def _describe(self, photo: Photo) -> dict[str, Any]:
        decisions = self.decisions.get(photo.id, Decisions())
        tags = [
            {"label": label, "score": round(score, 4), "verdict": _verdict(decisions, label)}
            for label, score in photo.ranked()
        ]
        tags += [
            {"label": label, "score": None, "verdict": "added"}
            for label in decisions.positives()
            if label not in photo.scores
        ]
        return {
            "id": photo.id,
            "name": photo.path.name,
            "folder": str(photo.path.parent),
            "tags": tags,
            "reviewed": decisions.reviewed,
        }


def _verdict(decisions: Decisions, label: str) -> str:
    right = decisions.verdicts.get(label)
    return "" if right is None else "accepted" if right else "rejected"


def _match(photos: list[Photo], corrections: Corrections) -> dict[int, Decisions]:
    """The saved decisions of each photo. Rows are matched by path as written, else by the
    image they name (a symlink, another spelling): resolving every path costs a system call
    per photo, so only when some row is not matched by its spelling."""
    by_path = {photo.filename: photo.id for photo in photos}
    found: dict[int, Decisions] = {}
    unmatched: list[tuple[Path, Decisions]] = []
    for path, decisions in corrections.items():
        photo_id = by_path.get(str(path))
        if photo_id is None:
            unmatched.append((path, decisions))
        else:
            found[photo_id] = decisions
    if unmatched:
        from mkt_tag.results import image_key

        by_key = {photo.key: photo.id for photo in photos}
        for path, decisions in unmatched:
            photo_id = by_key.get(image_key(path))
            if photo_id is not None:
                found.setdefault(photo_id, decisions)
    return found
