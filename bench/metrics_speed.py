"""How long do the evaluation metrics take at NUS-WIDE test size, and how much memory?

Random float32 scores and NUS-WIDE-like targets (about 2.5 positives per image, 2% of
entries ignored, the rest negative) are written once to a temporary folder. Each task then
runs in a fresh Python process that loads them, so its peak RSS (``ru_maxrss``) belongs to
that task alone: "peak" is the whole process (Python, numpy, the loaded scores and targets,
the metric's temporaries), "extra" is the part above the loaded data. Budget (issue 4):
the evaluation in <= 30 s and <= 4 GB on 2 cores. Figures only, no pass/fail.

    python bench/metrics_speed.py                                  # 107,859 x 1,006
    python bench/metrics_speed.py --n-images 20000 --n-labels 300  # quick check
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TASKS = {
    "ap": "per-label AP (all labels)",
    "map": "mAP, both variants (incl. AP)",
    "topk": "P/R/F1 @3,5 (all labels)",
    "evaluation": "eval: AP + mAP x2 + @3,5 for GZSL/ZSL/seen",
    "thresholds": "P/R/F1 at per-label thresholds",
    "calibration": "per-label threshold calibration (F1)",
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-images", type=int, default=107_859, help="images [107859]")
    parser.add_argument("--n-labels", type=int, default=1_006, help="labels [1006]")
    parser.add_argument("--n-unseen", type=int, default=81, help="last labels are unseen [81]")
    parser.add_argument("--positives", type=float, default=2.5, help="per image [2.5]")
    parser.add_argument("--ignored", type=float, default=0.02, help="share of 0 targets [0.02]")
    parser.add_argument("--seed", type=int, default=0, help="random seed [0]")
    parser.add_argument(
        "--tasks", nargs="+", choices=list(TASKS), default=list(TASKS), help="[all]"
    )
    parser.add_argument("--worker", choices=list(TASKS), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


def make_data(args: argparse.Namespace, folder: Path) -> None:
    """Scores in [0, 1), positives shifted up by 0.3 so that AP is neither 0 nor 1."""
    rng = np.random.default_rng(args.seed)
    shape = (args.n_images, args.n_labels)
    targets = np.full(shape, -1, dtype=np.int8)
    flat = targets.reshape(-1)
    flat[rng.integers(0, flat.size, int(flat.size * args.ignored))] = 0
    flat[rng.integers(0, flat.size, int(args.n_images * args.positives))] = 1
    scores = rng.random(shape, dtype=np.float32)
    scores[targets == 1] += np.float32(0.3)
    np.save(folder / "scores.npy", scores)
    np.save(folder / "targets.npy", targets)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def run_task(task: str, folder: Path, n_unseen: int) -> dict[str, float]:
    """One task on the saved data, in this (fresh) process."""
    from mkt_tag.evaluate import calibration, metrics

    scores = np.load(folder / "scores.npy")
    targets = np.load(folder / "targets.npy")
    n_labels = scores.shape[1]
    unseen = np.arange(n_labels) >= n_labels - n_unseen
    data_mb = peak_rss_mb()
    start = time.perf_counter()
    if task == "ap":
        metrics.average_precision(scores, targets)
    elif task == "map":
        ap = metrics.average_precision(scores, targets).ap
        metrics.mean_average_precision(ap)
        metrics.mean_average_precision(ap, reference=True)
    elif task == "topk":
        metrics.top_k_prf(scores, targets, (3, 5))
    elif task == "evaluation":
        ap = metrics.average_precision(scores, targets).ap
        for subset in (None, unseen, ~unseen):  # GZSL, ZSL, seen
            chosen = ap if subset is None else ap[subset]
            metrics.mean_average_precision(chosen)
            metrics.mean_average_precision(chosen, reference=True)
            metrics.top_k_prf(scores, targets, (3, 5), labels=subset)
    elif task == "thresholds":
        limits = np.linspace(0.5, 1.0, n_labels)
        metrics.threshold_prf(scores, targets, limits).micro()
    elif task == "calibration":
        calibration.calibrate_thresholds(scores, targets)
    seconds = time.perf_counter() - start
    peak_mb = peak_rss_mb()
    return {"seconds": seconds, "peak_mb": peak_mb, "extra_mb": peak_mb - data_mb}


def main() -> None:
    args = parse_args()
    if args.worker:
        print(json.dumps(run_task(args.worker, args.data, args.n_unseen)))
        return
    print(
        f"{args.n_images:,} images x {args.n_labels:,} labels ({args.n_unseen} unseen), "
        f"{os.cpu_count()} CPUs, load average before: "
        + ", ".join(f"{value:.2f}" for value in os.getloadavg())
    )
    with tempfile.TemporaryDirectory(prefix="mkt-metrics-bench-") as temporary:
        folder = Path(temporary)
        start = time.perf_counter()
        make_data(args, folder)
        print(f"random data written in {time.perf_counter() - start:.1f} s\n")
        print(f"{'task':<46} {'seconds':>8} {'peak MB':>8} {'extra MB':>9}")
        for task in args.tasks:
            command = [sys.executable, __file__, "--worker", task, "--data", str(folder)]
            command += ["--n-unseen", str(args.n_unseen)]
            result = json.loads(
                subprocess.run(command, check=True, capture_output=True, text=True).stdout
            )
            print(
                f"{TASKS[task]:<46} {result['seconds']:>8.2f} "
                f"{result['peak_mb']:>8.0f} {result['extra_mb']:>9.0f}"
            )
    print("\nload average after: " + ", ".join(f"{value:.2f}" for value in os.getloadavg()))


if __name__ == "__main__":
    main()
