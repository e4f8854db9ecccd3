"""The queries of the page: filters, sorts, pages, the per-label view, and decisions."""

from __future__ import annotations

import pytest

from mkt_tag.errors import UsageError
from mkt_tag.review.session import Query
from tests.review.conftest import photo_id


def names(page: dict) -> list[str]:
    return [photo["name"] for photo in page["photos"]]


def test_borderline_first_and_the_other_sorts(review):
    assert names(review.page(Query())) == ["c.jpg", "b.png", "a.jpg", "d.jpg"]  # min score
    assert names(review.page(Query(sort="score"))) == ["a.jpg", "b.png", "c.jpg", "d.jpg"]
    assert names(review.page(Query(sort="path"))) == ["a.jpg", "b.png", "c.jpg", "d.jpg"]


def test_the_per_label_view_lowest_score_first(review):
    page = review.page(Query(label="dog"))
    assert names(page) == ["c.jpg", "a.jpg"] and page["total"] == 2


def test_score_range_of_the_label_or_of_any_tag(review):
    assert names(review.page(Query(label="dog", low=0.5))) == ["a.jpg"]
    assert names(review.page(Query(low=0.3, high=0.5))) == ["b.png", "a.jpg"]  # 0.35, 0.42


def test_path_status_and_pages(review):
    assert names(review.page(Query(text="B.PN"))) == ["b.png"]
    review.mark_reviewed(photo_id(review, "a.jpg"))
    assert names(review.page(Query(status="reviewed"))) == ["a.jpg"]
    assert "a.jpg" not in names(review.page(Query(status="open")))
    page = review.page(Query(sort="path", offset=1, limit=2))
    assert names(page) == ["b.png", "c.jpg"] and page["total"] == 4 and page["offset"] == 1


def test_added_labels_count_for_the_label_view_and_rejected_ones_stay(review):
    d, a = photo_id(review, "d.jpg"), photo_id(review, "a.jpg")
    review.decide(d, "dog", "accept")
    review.decide(a, "dog", "reject")
    assert names(review.page(Query(label="dog"))) == ["c.jpg", "a.jpg", "d.jpg"]  # no score: last
    assert names(review.page(Query(label="dog", low=0.1))) == ["c.jpg", "a.jpg"]
    counts = {item["label"]: item for item in review.label_counts()}
    assert counts["dog"] == {"label": "dog", "photos": 3, "rejected": 1}
    assert counts["traffic light"]["photos"] == 0  # every vocabulary label is listed


def test_reviewed_accepts_what_nobody_rejected(review):
    c = photo_id(review, "c.jpg")
    review.decide(c, "dog", "reject")
    photo = review.mark_reviewed(c)
    assert photo["reviewed"] is True
    assert [(t["label"], t["verdict"]) for t in photo["tags"]] == [
        ("sunset", "accepted"),
        ("dog", "rejected"),
    ]
    assert review.summary()["reviewed"] == 1 and review.summary()["decisions"] == 2
    assert review.mark_reviewed(c, done=False)["reviewed"] is False


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda r: r.decide(99, "dog", "accept"), "no photo 99"),
        (lambda r: r.decide(0, "giraffe", "accept"), "'giraffe' is not a label of the vocabulary"),
        (lambda r: r.decide(0, "dog", "maybe"), "unknown decision 'maybe'"),
        (lambda r: r.page(Query(sort="random")), "unknown sort 'random'"),
        (lambda r: r.page(Query(low=0.8, high=0.2)), "score range 0.8..0.2"),
        (lambda r: r.page(Query(limit=10_000)), "limit within 1..500"),
    ],
)
def test_what_the_page_never_sends_is_refused(review, call, message):
    with pytest.raises(UsageError, match=message):
        call(review)


def test_decisions_in_many_threads_are_all_kept(review):
    """The server answers in threads: quick decisions on one photo must not undo each other."""
    import threading

    a = photo_id(review, "a.jpg")
    labels = ["cat", "sunset", "traffic light", "beach", "dog"]
    threads = [
        threading.Thread(target=review.decide, args=(a, label, "accept")) for label in labels
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(review.corrections.get(review.photos[a].path).positives()) == sorted(labels)
