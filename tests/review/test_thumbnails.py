"""Thumbnails: made once and cached (a new one when the photo changes), oriented, and made
in background threads, what the page asks for first."""

from __future__ import annotations

import io
import os
import time

from PIL import Image

from mkt_tag.review import thumbnails as module
from mkt_tag.review.thumbnails import Thumbnails, make_thumbnail, thumbnail_folder
from tests.conftest import make_photo


def size_of(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


def test_made_once_then_read_from_the_cache(tmp_path, monkeypatch):
    photo = make_photo(tmp_path / "a.jpg", size=(600, 300))
    made = []
    real = module.make_thumbnail
    monkeypatch.setattr(module, "make_thumbnail", lambda p, s: made.append(p) or real(p, s))
    first = Thumbnails([photo], tmp_path / "cache", workers=1)
    data = first.get(0, 256)
    first.close()
    assert size_of(data) == (256, 128) and made == [photo]
    cached = list(thumbnail_folder(tmp_path / "cache").rglob("*.jpg"))
    assert len(cached) == 1 and cached[0].read_bytes() == data
    second = Thumbnails([photo], tmp_path / "cache", workers=1)  # another review, same cache
    assert second.get(0, 256) == data and made == [photo]
    # The photo changed: a new thumbnail, not the stale one.
    make_photo(photo, size=(300, 600), seed=5)
    os.utime(photo, ns=(1, 1))
    assert size_of(second.get(0, 256)) == (128, 256) and len(made) == 2
    second.close()


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (200, 100), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    image.save(tmp_path / "turned.jpg", exif=exif)
    assert size_of(make_thumbnail(tmp_path / "turned.jpg", 100)) == (50, 100)


def test_what_is_not_an_image_gives_none(tmp_path):
    (tmp_path / "notes.jpg").write_text("not a photo")
    thumbnails = Thumbnails([tmp_path / "notes.jpg", tmp_path / "gone.jpg"], tmp_path / "c")
    assert thumbnails.get(0) is None and thumbnails.get(1) is None
    thumbnails.close()


def test_prefetch_makes_every_thumbnail_in_the_background(tmp_path):
    photos = [make_photo(tmp_path / f"{n}.png", seed=n) for n in range(5)]
    thumbnails = Thumbnails(photos, tmp_path / "cache", workers=2)
    thumbnails.prefetch()
    deadline = time.monotonic() + 30
    made: list = []
    while len(made) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
        made = list(thumbnail_folder(tmp_path / "cache").rglob("*.jpg"))
    assert thumbnails.prefetched() and len(made) == 5
    thumbnails.close()
