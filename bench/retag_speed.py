"""Re-tagging speed with the caches: first run vs re-run after adding one label.

Tags N photos (default 1,000 at 640x480) with ViT-B-16 (random weights) and the feature cache
on, then adds one label and tags them again. Prints, in one run:

- in-process (the Tagger API, model already loaded): first run vs re-tag seconds;
- end to end (`mkt-tag tag ... --feature-cache --overwrite` as a command): both runs, which
  include starting Python, importing torch and loading the model;
- the feature cache's size per image and in total.

    python bench/retag_speed.py [--n 1000] [--size 640x480]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import (
    BACKBONE,
    OUT,
    OtherLoad,
    machine_info,
    offline_env,
    seed_hub_cache,
    synthetic_photos,
    write_labels,
)


def _cli(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "mkt_tag", *args], env=env, check=True, stdout=subprocess.DEVNULL
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--n-labels", type=int, default=100)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    root = args.out / "retag"
    cache = root / "cache"
    photos = synthetic_photos(args.out / f"photos_{args.size}", args.n, (width, height))
    seed_hub_cache(cache)
    env = offline_env(cache)
    os.environ.update(env)
    labels = write_labels(root / "labels.txt", args.n_labels)
    more = root / "labels_plus_one.txt"
    more.write_text(labels.read_text() + "a label added later\n")
    load = OtherLoad()

    from mkt_tag.tagging.caches import FEATURES_FILE, FeatureCache
    from mkt_tag.tagging.selection import Selection
    from mkt_tag.tagging.tagger import Tagger
    from mkt_tag.vocab import read_labels

    for name in (FEATURES_FILE, FEATURES_FILE + "-wal", FEATURES_FILE + "-shm"):
        (cache / name).unlink(missing_ok=True)
    tagger = Tagger.load(BACKBONE, cache_dir=cache, feature_cache=True)
    selection = Selection(top_k=5)
    first_labels = tagger.embed_labels(read_labels(labels).labels)
    started = time.perf_counter()
    done = sum(1 for _ in tagger.tag_files(photos, first_labels, selection))
    first_s = time.perf_counter() - started
    started = time.perf_counter()
    second_labels = tagger.embed_labels(read_labels(more).labels)  # one new label to encode
    retag = sum(1 for _ in tagger.tag_files(photos, second_labels, selection))
    retag_s = time.perf_counter() - started
    assert done == retag == len(photos)
    stats = tagger.feature_cache.stats() if tagger.feature_cache else {}
    disk = FeatureCache(cache / FEATURES_FILE).size_bytes()

    for name in (FEATURES_FILE, FEATURES_FILE + "-wal", FEATURES_FILE + "-shm"):
        (cache / name).unlink(missing_ok=True)
    folder = str(photos[0].parent)
    out = str(root / "results.csv")
    cli_first = _cli(
        ["tag", folder, "--labels", str(labels), "-o", out, "--feature-cache", "--overwrite", "-q"],
        env,
    )
    cli_retag = _cli(
        ["tag", folder, "--labels", str(more), "-o", out, "--feature-cache", "--overwrite", "-q"],
        env,
    )

    info = {**machine_info(), "other_load_cpus": load.cpus()}
    result = {
        "images": len(photos),
        "size": args.size,
        "labels": args.n_labels,
        "in_process": {"first_s": first_s, "retag_s": retag_s, "speedup": first_s / retag_s},
        "command": {"first_s": cli_first, "retag_s": cli_retag, "speedup": cli_first / cli_retag},
        "cache": {
            "bytes_per_image": stats.get("data_bytes", 0) / max(1, stats.get("images", 1)),
            "file_bytes": disk,
        },
        "machine": info,
    }
    print(
        f"{len(photos)} photos {args.size}, {args.n_labels} labels + 1, {info['cpu']}, "
        f"{info['cpus_usable']} CPUs"
    )
    print(f"{'':<28}{'first run s':>12}{'re-tag s':>10}{'speed-up':>10}")
    for name, row in (
        ("in-process (model loaded)", result["in_process"]),
        ("command, end to end", result["command"]),
    ):
        print(f"{name:<28}{row['first_s']:>12.2f}{row['retag_s']:>10.2f}{row['speedup']:>9.1f}x")
    print(
        f"feature cache: {result['cache']['bytes_per_image'] / 1024:.0f} KB per image, "
        f"{disk / 2**20:.0f} MB on disk for {len(photos)} images"
    )
    if info["other_load_cpus"]:
        print(f"other processes kept {info['other_load_cpus']:.2f} CPUs busy meanwhile")
    (args.out / "retag_speed.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
