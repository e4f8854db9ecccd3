"""Time to the first screen of `mkt-tag review`, and its memory, for large results files.

For 10,000 and 100,000 synthetic photos (results files only: no image is decoded), measures
in one process each: reading the results and starting the review, the page's HTML, the first
API page (60 photos, borderline first), the label list, a per-label page, and the peak memory.
"First screen" is what the browser needs before it shows the grid: HTML + labels + first page.

    python bench/review_speed.py            # 10,000 and 100,000
    python bench/review_speed.py 20000      # other sizes
"""

from __future__ import annotations

import http.client
import json
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

LABELS = [f"label {n}" for n in range(500)]


def synthetic(folder: Path, photos: int) -> tuple[Path, Path]:
    rng = random.Random(0)
    lines = []
    for n in range(photos):
        chosen = rng.sample(LABELS, 5)
        tags = [{"label": label, "score": round(rng.random(), 4)} for label in chosen]
        lines.append(json.dumps({"path": f"/photos/{n // 1000:03d}/{n:06d}.jpg", "tags": tags}))
    results = folder / "tags.jsonl"
    results.write_text("\n".join(lines) + "\n")
    labels = folder / "labels.txt"
    labels.write_text("\n".join(LABELS) + "\n")
    return results, labels


def get(server, path: str) -> tuple[float, int]:
    started = time.perf_counter()
    connection = http.client.HTTPConnection(*server.server_address[:2])
    connection.request("GET", path, headers={"X-Review-Token": server.token})
    response = connection.getresponse()
    body = response.read()
    connection.close()
    assert response.status == 200, body[:200]
    return time.perf_counter() - started, len(body)


def one(photos: int) -> dict[str, float]:
    from mkt_tag.review import open_review
    from mkt_tag.review.server import ReviewServer
    from mkt_tag.review.thumbnails import Thumbnails

    with tempfile.TemporaryDirectory() as folder:
        results, labels = synthetic(Path(folder), photos)
        started, cpu = time.perf_counter(), time.process_time()
        review = open_review(results, labels)
        server = ReviewServer(review, Thumbnails([p.filename for p in review.photos], Path(folder)))
        startup = time.perf_counter() - started
        startup_cpu = time.process_time() - cpu  # what a shared machine's load does not inflate
        threading.Thread(target=server.serve_forever, daemon=True).start()
        html, _ = get(server, "/")
        page, size = get(server, "/api/photos?limit=60")
        label_list, _ = get(server, "/api/labels")
        label_page, _ = get(server, "/api/photos?label=label%207&sort=borderline&limit=60")
        server.shutdown()
        server.server_close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {
        "photos": photos,
        "startup_s": startup,
        "startup_cpu_s": startup_cpu,
        "html_s": html,
        "first_page_s": page,
        "first_page_kb": size / 1024,
        "labels_s": label_list,
        "first_screen_s": html + page + label_list,
        "label_view_s": label_page,
        "peak_mib": peak,
    }


def main() -> None:
    sizes = [int(arg) for arg in sys.argv[1:]] or [10_000, 100_000]
    if len(sizes) > 1:  # one process per size: peak memory is per size
        for size in sizes:
            subprocess.run([sys.executable, __file__, str(size)], check=True)
        return
    row = one(sizes[0])
    print(
        f"{row['photos']:>7,} photos: start {row['startup_s']:.2f} s "
        f"({row['startup_cpu_s']:.2f} s of CPU), first screen "
        f"{row['first_screen_s']:.3f} s (HTML {row['html_s']:.3f}, first page "
        f"{row['first_page_s']:.3f} = {row['first_page_kb']:.0f} kB, labels "
        f"{row['labels_s']:.3f}), per-label page {row['label_view_s']:.3f} s, "
        f"peak memory {row['peak_mib']:.0f} MiB"
    )


if __name__ == "__main__":
    main()
