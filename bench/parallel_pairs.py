"""Batches at once on a CPU: `--parallel` settings compared in pairs, in one process.

A shared machine's noise (10-20% between minutes) hides differences of a few percent between
separate `mkt-tag tag` commands. Here one loaded model tags the same photos with each setting
in turn, round after round, the order alternated each round, and the script prints the
median img/s of each setting and the median of the per-round ratios, which cancels the
drift that the rounds share.

    python bench/parallel_pairs.py                       # 96 photos per set, 8 rounds, 1 vs 2
    python bench/parallel_pairs.py --parallel 1 2 4 --rounds 4
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import _common
import numpy as np


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=96, help="photos per set [96]")
    parser.add_argument("--rounds", type=int, default=8, help="rounds [8]")
    parser.add_argument("--parallel", type=int, nargs="+", default=[1, 2], help="[1 2]")
    parser.add_argument("--batch-size", type=int, default=16, help="images per batch [16]")
    parser.add_argument("--n-labels", type=int, default=200, help="labels to score [200]")
    parser.add_argument("--precision", default="auto", help="[auto]")
    parser.add_argument("--out", type=Path, default=_common.OUT, help="work dir [bench/out]")
    return parser.parse_args()


def tag_rate(tagger: Any, files: list[Path], labels: Any, batch_size: int, parallel: int) -> float:
    started = time.perf_counter()
    for _ in tagger.score_files(files, labels, batch_size, workers=0, parallel=parallel):
        pass
    return len(files) / (time.perf_counter() - started)


def main() -> None:
    args = parse_args()
    if args.n < 1 or args.rounds < 1 or min(args.parallel) < 1 or len(args.parallel) < 2:
        raise SystemExit("need --n and --rounds >= 1 and two or more --parallel values >= 1")
    os.environ["HF_HUB_OFFLINE"] = "1"  # before huggingface_hub is imported
    sets = _common.photo_sets(args.out / "images", dict.fromkeys(_common.PHOTO_SETS, args.n))
    _common.seed_hub_cache(args.out / "cache")
    tagger = _common.offline_tagger(args.out / "cache", "cpu", args.precision)
    labels = tagger.embed_labels(_common.labels(args.n_labels))
    print(f"{tagger.dtype}, {args.n} photos per set, batch {args.batch_size}", flush=True)
    rates: dict[tuple[str, int], list[float]] = {
        (name, p): [] for name in sets for p in args.parallel
    }
    other = _common.OtherLoad()
    for round_ in range(args.rounds):
        order = args.parallel if round_ % 2 == 0 else args.parallel[::-1]
        for name, files in sets.items():
            for parallel in order:
                rates[name, parallel].append(
                    tag_rate(tagger, files, labels, args.batch_size, parallel)
                )
        shown = ", ".join(f"{n} {p}: {r[-1]:.2f}" for (n, p), r in rates.items())
        print(f"round {round_ + 1}/{args.rounds}: {shown}", flush=True)
    first = args.parallel[0]
    print(f"\nimg/s, median over {args.rounds} rounds (ratio: per-round, against {first})")
    for (name, parallel), measured in rates.items():
        ratios = np.array(measured) / np.array(rates[name, first])
        wins = int((ratios > 1).sum())
        print(
            f"{name:<6} parallel {parallel}: {np.median(measured):.2f} img/s, ratio "
            f"{np.median(ratios):.3f}, faster in {wins}/{args.rounds} rounds"
        )
    print(f"other processes kept {other.cpus() or 0:.2f} CPUs busy on average")


if __name__ == "__main__":
    main()
