"""How long do keywords inside image files (``--embed``) take per photo?

Makes N photo-like JPEGs (default 200 at 4000x3000, ~3 MB each, as a camera writes them),
copies them, gives each a person's keyword (one exiftool command), then times, per file,
through one ``EmbeddedMetadata`` (one exiftool process):

- ``states()`` over all files (planning a run: batched, 100 files per exiftool command),
  before and after writing, and ``state()`` one file at a time;
- ``write()`` (dry run, then for real), and ``remove()`` (``untag``);
- for comparison, one ``exiftool`` process per file, as a shell loop would start it.

    python bench/embed.py [--n 200] [--size 4000x3000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _common import OUT, machine_info, synthetic_photos

from mkt_tag.embedded import EmbeddedMetadata
from mkt_tag.records import RunIdentity
from mkt_tag.results import Tag

RUN = RunIdentity("ViT-B-16", "model-fingerprint", "vocabulary-fingerprint", "top 5")
TAGS = [Tag("animal/dog", 0.91), Tag("beach", 0.72), Tag("sea", 0.55), Tag("summer", 0.41)]


def per_file(seconds: float, n: int) -> float:
    return round(seconds / n * 1000, 2)


def timed(step: Callable[[], Any]) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="photos [200]")
    parser.add_argument("--size", default="4000x3000", help="WIDTHxHEIGHT [4000x3000]")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    photos = synthetic_photos(args.out / f"photos_{args.size}", args.n, (width, height))
    work = args.out / "embed"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    images = [Path(shutil.copy(photo, work / photo.name)) for photo in photos]
    person = ["-Keywords=holiday", "-XMP-dc:Subject=holiday", "-overwrite_original", "-q"]
    subprocess.run(["exiftool", *person, str(work)], check=True)
    mb = sum(image.stat().st_size for image in images) / len(images) / 1e6

    n = len(images)
    times: dict[str, float] = {}
    with EmbeddedMetadata() as embedded:
        times["states, batched (new)"] = timed(lambda: embedded.states(images, RUN))
        times["state, one call per file"] = timed(lambda: [embedded.state(i, RUN) for i in images])
        times["write, dry run"] = timed(
            lambda: [embedded.write(i, TAGS, RUN, dry_run=True) for i in images]
        )
        times["write"] = timed(lambda: [embedded.write(i, TAGS, RUN) for i in images])
        states: list[str] = []
        times["states, batched (current)"] = timed(
            lambda: states.extend(embedded.states(images, RUN))
        )
        assert set(states) == {"current"}, set(states)
        times["remove (untag)"] = timed(lambda: [embedded.remove(i) for i in images])
    sample = images[:10]
    one_each = timed(
        lambda: [
            subprocess.run(["exiftool", "-XMP:XMP", "-b", str(i)], capture_output=True)
            for i in sample
        ]
    )

    result = {
        "photos": n,
        "size": args.size,
        "mean_file_mb": round(mb, 2),
        "ms_per_file": {name: per_file(seconds, n) for name, seconds in times.items()},
        "ms_per_file_one_exiftool_process_each": per_file(one_each, len(sample)),
        "machine": machine_info(),
    }
    print(f"{n} JPEGs of {args.size}, {mb:.1f} MB each: milliseconds per file")
    for name, ms in result["ms_per_file"].items():
        print(f"  {name:<28} {ms:8.2f}")
    one_each_ms = result["ms_per_file_one_exiftool_process_each"]
    print(f"  {'exiftool started per file':<28} {one_each_ms:8.2f}")
    (args.out / "embed.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
