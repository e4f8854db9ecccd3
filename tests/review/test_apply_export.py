"""`--apply`: corrected tags into sidecars under tag's ownership rules; `--export`: a gallery."""

from __future__ import annotations

import base64
import json
import re

from mkt_tag.keywords import SUBJECT
from mkt_tag.records import CURRENT, RunIdentity
from mkt_tag.review.apply import apply_corrections
from mkt_tag.review.export import export_gallery
from mkt_tag.review.thumbnails import Thumbnails
from mkt_tag.sidecar_paths import sidecar_path
from mkt_tag.sidecars import (
    person_labels,
    read_sidecar_tags,
    remove_tags,
    sidecar_state,
    write_sidecar,
)
from mkt_tag.xmp import XmpDocument
from tests.review.conftest import photo_id

RUN = RunIdentity("tiny", "f" * 16, "v" * 16, "top-5")


def person_sidecar(image, keywords):
    """An XMP sidecar a photo manager wrote: the person's keywords, no mkt-tag record."""
    document = XmpDocument()
    document.update({SUBJECT: keywords}, None)
    sidecar_path(image, "xmp").write_text(document.to_text(), encoding="utf-8")


def test_apply_follows_the_ownership_rules_of_tag(review, tagged):
    a = photo_id(review, "a.jpg")
    image = review.photos[a].path
    person_sidecar(image, ["holiday", "beach"])  # the person wrote "beach" too
    write_sidecar(image, review.photos[a].tags, "xmp", run=RUN)  # mkt-tag tag --sidecar xmp
    review.decide(a, "beach", "reject")
    review.decide(a, "sunset", "accept")  # added
    applied = apply_corrections(review, "xmp")
    sidecar = sidecar_path(image, "xmp")
    assert applied.failures == [] and applied.written == [(sidecar, ["dog", "sunset"])]
    # The person's keywords first, then the one they added; dog (undecided) is mkt-tag's.
    assert read_sidecar_tags(sidecar, "xmp") == ["holiday", "beach", "sunset", "dog"]
    assert person_labels(sidecar, "xmp") == ["holiday", "beach", "sunset"]  # beach: theirs
    # Still the tagging run's: `tag` with the same run finds it current, keeps the corrections.
    assert sidecar_state(image, "xmp", "full", RUN) == CURRENT
    record = XmpDocument(sidecar.read_bytes()).record
    assert record is not None and [t.label for t in record.tags] == ["dog"]
    assert record.rejected == ["beach"]
    # untag takes mkt-tag's undecided tag out, and only that.
    remove_tags(image, "xmp")
    assert read_sidecar_tags(sidecar, "xmp") == ["holiday", "beach", "sunset"]


def test_a_later_apply_keeps_earlier_rejections_unless_accepted(review, tagged):
    a = photo_id(review, "a.jpg")
    image = review.photos[a].path
    write_sidecar(image, review.photos[a].tags, "json", run=RUN)
    review.decide(a, "beach", "reject")
    apply_corrections(review, "json")
    review.decide(a, "beach", "clear")  # undecided again: still kept out
    review.decide(a, "dog", "reject")
    apply_corrections(review, "json")
    record = json.loads(sidecar_path(image, "json").read_text())["mkt-tag"]
    assert record["rejected"] == ["beach", "dog"] and record["tags"] == []
    review.decide(a, "beach", "accept")  # the person changed their mind: theirs now
    apply_corrections(review, "json")
    record = json.loads(sidecar_path(image, "json").read_text())["mkt-tag"]
    assert record["rejected"] == ["dog"]
    assert read_sidecar_tags(sidecar_path(image, "json"), "json") == ["beach"]


def test_apply_writes_only_photos_with_decisions_and_reports_failures(review, tagged):
    b, c = photo_id(review, "b.png"), photo_id(review, "c.jpg")
    review.decide(b, "cat", "reject")
    review.mark_reviewed(c)
    broken = sidecar_path(review.photos[c].path, "json")
    broken.write_text("{not json", encoding="utf-8")
    applied = apply_corrections(review, "json")
    assert [path.name for path, _ in applied.written] == ["b.png.json"]
    assert applied.written[0][1] == []  # every tag rejected: none of mkt-tag's left
    assert len(applied.failures) == 1 and str(broken) in applied.failures[0]
    assert broken.read_text() == "{not json"  # left untouched
    assert not sidecar_path(review.photos[photo_id(review, "a.jpg")].path, "json").exists()


def test_export_is_one_static_file_with_the_corrected_tags(review, tagged, isolated_cache):
    a = photo_id(review, "a.jpg")
    review.decide(a, "beach", "reject")
    review.decide(a, "cat", "accept")
    (tagged["folder"] / "d.jpg").write_text("no longer a photo")
    thumbnails = Thumbnails([p.path for p in review.photos], isolated_cache, workers=1)
    gallery = tagged["root"] / "share" / "gallery.html"
    gallery.parent.mkdir()
    shown = export_gallery(review, thumbnails, gallery, title="Holiday <2026>")
    thumbnails.close()
    page = gallery.read_text(encoding="utf-8")
    assert shown == 3 and page.count("<figure") == 3
    assert "<title>Holiday &lt;2026&gt;</title>" in page
    first = re.search(
        r'<figure data-labels="([^"]*)"><img alt="a.jpg" src="data:image/jpeg;base64,([^"]+)"', page
    )
    assert first is not None and first[1] == "dog\ncat"  # beach rejected, cat added
    assert base64.b64decode(first[2]).startswith(b"\xff\xd8")
    assert "/thumb/" not in page and str(tagged["folder"]) not in page  # nothing to fetch
    assert [p.name for p in gallery.parent.iterdir()] == ["gallery.html"]  # no temporaries
