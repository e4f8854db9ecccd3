"""The bookkeeping of sharded runs at scale: listing, planning and merging 1,000,000 images.

Makes N zero-byte ``.jpg`` files in 1,000 folders (listing and planning never open an
image), and K shard results files of N rows (5 tags each, as `tag --shard I/K` writes
them), in a child process: a child forked from a big parent would start with the
parent's ``ru_maxrss``. Then each step runs in a fresh process, so that its peak memory
(the child's ``ru_maxrss``, from ``os.wait4``) is its own:

- baseline: Python with mkt-tag's planning and merging modules imported;
- list: ``images.scan_inputs`` over the folders (one ``resolve`` per image);
- plan: ``tagging.job.plan`` of the whole run with a results file (``-o``);
- plan shard 1/K: the same, for one shard (what each machine of a sharded run does);
- merge: ``merge.merge`` of the K parts into one CSV (read, one dict by image, sort, write);
- read csv / read pandas: reading the K parts with ``results.read_results`` (the csv
  module, into tags) and with ``pandas.read_csv`` (strings only), to choose the reader;
- merge pandas: concat, drop duplicates by path, sort and ``to_csv`` in pandas (no symlink
  resolution, no tags parsed: a lower bound for a pandas merge).

    python bench/scaling.py [--n 1000000] [--shards 8] [--root DIR]

A ``--root`` that holds a world already (its ``photos`` and shard files) is reused.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FOLDERS = 1000
STEPS = (
    "setup",
    "baseline",
    "list",
    "plan",
    "plan-shard",
    "merge",
    "read-csv",
    "read-pandas",
    "merge-pandas",
)


def make_world(root: Path, n: int, shards: int) -> tuple[float, float]:
    """Zero-byte photos and the shards' results files; seconds for each."""
    from mkt_tag.results import Tag, TagResult, write_results

    photos = root / "photos"
    started = time.perf_counter()
    paths = []
    for folder in range(FOLDERS):
        directory = photos / f"d{folder:04d}"
        directory.mkdir(parents=True, exist_ok=True)
        for i in range(folder, n, FOLDERS):
            path = directory / f"img{i:07d}.jpg"
            path.touch()
            paths.append(path)
    made = time.perf_counter() - started
    started = time.perf_counter()
    paths.sort(key=str)
    rng = random.Random(0)
    labels = [f"label {i}" for i in range(200)]
    for index in range(shards):
        chunk = paths[index * n // shards : (index + 1) * n // shards]
        rows = [
            TagResult(path, [Tag(label, rng.random()) for label in rng.sample(labels, 5)], "r1")
            for path in chunk
        ]
        write_results(root / f"tags.shard-{index + 1}-of-{shards}.csv", rows)
    return made, time.perf_counter() - started


def step(name: str, root: Path, n: int, shards: int) -> dict[str, object]:
    """One measured step, in this (fresh) process."""
    from mkt_tag.images import scan_inputs
    from mkt_tag.merge import merge
    from mkt_tag.results import read_results
    from mkt_tag.shards import Shard
    from mkt_tag.tagging.job import TagJob, plan
    from mkt_tag.tagging.selection import Selection

    photos = root / "photos"
    parts = [root / f"tags.shard-{i}-of-{shards}.csv" for i in range(1, shards + 1)]
    started = time.perf_counter()
    count: int = 0
    if name == "setup":
        if not parts[-1].exists():
            made, written = make_world(root, n, shards)
            print(f"setup: {made:.1f} s making the files, {written:.1f} s writing the shards")
        count = n
    elif name == "list":
        count = len(scan_inputs([photos], recursive=True).images)
    elif name in ("plan", "plan-shard"):
        shard = Shard(1, shards) if name == "plan-shard" else None
        job = TagJob([photos], Selection(top_k=5), True, root / "plan.csv", shard=shard)
        with plan(job) as work:
            count = len(work.todo)
    elif name == "merge":
        count = merge(root / "merged.csv", parts).rows
    elif name == "read-csv":
        count = sum(len(read_results(part)) for part in parts)
    elif name in ("read-pandas", "merge-pandas"):
        import pandas

        frames = [
            pandas.read_csv(part, dtype=str, keep_default_na=False, encoding="utf-8")
            for part in parts
        ]
        table = pandas.concat(frames, ignore_index=True)
        if name == "merge-pandas":
            table = table.drop_duplicates("path", keep="last").sort_values("path")
            table.to_csv(root / "merged-pandas.csv", index=False, lineterminator="\n")
        count = len(table)
    return {"step": name, "seconds": time.perf_counter() - started, "count": count}


def measure(name: str, root: Path, n: int, shards: int) -> dict[str, object]:
    """Run ``step`` in a child process; add its peak resident memory."""
    command = [sys.executable, __file__, "--step", name, "--root", str(root), "--n", str(n)]
    child = subprocess.Popen([*command, "--shards", str(shards)], stdout=subprocess.PIPE)
    assert child.stdout is not None
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"step {name} failed with exit code {child.returncode}")
    *notes, line = output.decode().splitlines()
    for note in notes:
        print(note)
    result = json.loads(line)
    result["peak_mib"] = usage.ru_maxrss / 1024  # kilobytes on Linux
    # CPU seconds too: on a shared machine the wall clock also counts waiting for a core.
    result["cpu"] = usage.ru_utime + usage.ru_stime
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--root", type=Path, help="work folder [default: a temporary one]")
    parser.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        print(json.dumps(step(args.step, args.root, args.n, args.shards)))
        return
    with tempfile.TemporaryDirectory(prefix="mkt-tag-scaling-") as temporary:
        root = args.root or Path(temporary)
        print(f"{args.n:,} images in {FOLDERS} folders, {args.shards} shards")
        print(f"{'step':<14} {'seconds':>8} {'CPU s':>8} {'peak MiB':>9} {'count':>10}")
        for name in STEPS:
            result = measure(name, root, args.n, args.shards)
            print(
                f"{name:<14} {result['seconds']:>8.1f} {result['cpu']:>8.1f} "
                f"{result['peak_mib']:>9.0f} "
                f"{result['count']:>10,}",
                flush=True,
            )


if __name__ == "__main__":
    main()
