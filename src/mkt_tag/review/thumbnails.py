"""Thumbnails of the photos under review: made once, in background threads, kept in the cache.

A thumbnail is a JPEG of the photo decoded by ``images.load_image`` (so HEIC, camera raw and
EXIF orientation work as they do for tagging), at most ``size`` pixels on its long side. It
is cached under ``<cache>/review-thumbnails/``, keyed by the photo's path, size and
modification time, so an edited photo gets a new one and the old one is never shown. The
page asks for what it shows first; the rest is made in the background, in order.
"""

from __future__ import annotations

import heapq
import io
import itertools
import os
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path

from mkt_tag.errors import ImageLoadError, OutputError
from mkt_tag.files import atomic_write_bytes, digest

THUMBNAIL = 256  # pixels on the long side of a grid thumbnail
PREVIEW = 1600  # of the large view of one photo
_QUALITY = 82  # JPEG quality: small files, no visible blocks at these sizes


def thumbnail_folder(cache: Path) -> Path:
    return Path(cache) / "review-thumbnails"


def make_thumbnail(path: Path, size: int) -> bytes:
    """A JPEG of the photo at ``path``, at most ``size`` pixels on its long side.

    Raises:
        ImageLoadError: the photo cannot be read as an image.
    """
    from PIL import Image

    from mkt_tag.images import load_image

    image = load_image(path, min_side=size)
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=_QUALITY, optimize=True)
    return buffer.getvalue()


class Thumbnails:
    """Thumbnails of a fixed list of photos, made by ``workers`` background threads.

    ``get(index, size)`` waits for one, made before anything else; ``prefetch()`` has the
    threads make every photo's grid thumbnail, in order, whenever nobody waits. Only the
    cache holds them: memory stays small however many photos there are.
    """

    def __init__(self, paths: Sequence[Path | str], cache: Path, workers: int = 2) -> None:
        self.paths = list(paths)
        self.folder = thumbnail_folder(cache)
        self._queue: list[tuple[int, int, int]] = []  # (order, index, size): asked for
        self._order = itertools.count()
        self._pending: dict[tuple[int, int], Future[bytes | None]] = {}
        self._prefetch: int | None = None  # the next photo to prefetch; None: not asked
        self._lock = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"thumbnails-{n}", daemon=True)
            for n in range(max(1, workers))
        ]
        for thread in self._threads:
            thread.start()

    def cached_path(self, index: int, size: int) -> Path | None:
        """Where the thumbnail of photo ``index`` is kept; None when the photo is gone."""
        path = Path(self.paths[index])
        try:
            info = path.stat()
        except OSError:
            return None
        key = digest("review-thumbnail", str(path), info.st_size, info.st_mtime_ns, size)
        return self.folder / key[:2] / f"{key}.jpg"

    def get(self, index: int, size: int = THUMBNAIL, timeout: float = 60.0) -> bytes | None:
        """The JPEG thumbnail of photo ``index``: from the cache, else made now, before
        anything prefetched. None when the photo cannot be read as an image."""
        return self.request(index, size).result(timeout)

    def request(self, index: int, size: int = THUMBNAIL) -> Future[bytes | None]:
        """The thumbnail of photo ``index``, to come (one request per photo at a time)."""
        with self._lock:
            future = self._pending.get((index, size))
            if future is None:
                future = Future()
                self._pending[(index, size)] = future
                heapq.heappush(self._queue, (next(self._order), index, size))
                self._lock.notify()
            return future

    def prefetch(self) -> None:
        """Make every photo's grid thumbnail that the cache lacks, in order, in the
        background, whenever no request waits."""
        with self._lock:
            self._prefetch = 0
            self._lock.notify_all()

    def prefetched(self) -> bool:
        """Whether prefetching has gone through every photo."""
        with self._lock:
            return self._prefetch is not None and self._prefetch >= len(self.paths)

    def close(self) -> None:
        """Stop the threads once their current photo is done."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()

    def _next_job(self) -> tuple[int, int, Future[bytes | None] | None] | None:
        """What to do next (None: stop), waiting for work: a request, else a prefetch."""
        with self._lock:
            while True:
                if self._closed:
                    return None
                if self._queue:
                    _, index, size = heapq.heappop(self._queue)
                    future = self._pending[(index, size)]
                    future.set_running_or_notify_cancel()
                    return index, size, future
                if self._prefetch is not None and self._prefetch < len(self.paths):
                    self._prefetch += 1
                    return self._prefetch - 1, THUMBNAIL, None
                self._lock.wait()

    def _work(self) -> None:
        while (job := self._next_job()) is not None:
            index, size, future = job
            try:
                data = self._load_or_make(index, size, read=future is not None)
            except BaseException as error:  # a bug: the page's request reports it
                if future is None:
                    continue
                future.set_exception(error)
            else:
                if future is not None:
                    future.set_result(data)
            if future is not None:
                with self._lock:
                    self._pending.pop((index, size), None)

    def _load_or_make(self, index: int, size: int, read: bool = True) -> bytes | None:
        cached = self.cached_path(index, size)
        if cached is None:
            return None
        try:
            if read:
                return cached.read_bytes()
            if cached.exists():
                return None  # prefetching: made before
        except OSError:
            pass  # not made yet
        try:
            data = make_thumbnail(Path(self.paths[index]), size)
        except ImageLoadError:
            return None
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(cached, data)
        except (OSError, OutputError):
            pass  # a read-only cache: the page still gets the thumbnail, made again next time
        return data


def default_workers() -> int:
    """Background threads: half the cores, at least one, at most four (decoding is mostly
    in Pillow's C code, which releases the GIL)."""
    return max(1, min(4, (os.cpu_count() or 2) // 2))
