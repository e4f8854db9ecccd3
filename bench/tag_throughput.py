"""How fast does `mkt-tag tag` tag photos, against a plain loop and the model's own ceiling?

For each image set (camera-sized 4000 x 3000 JPEGs, small 640 x 480 ones) it measures:

- mkt-tag: the real `mkt-tag tag ... --model ViT-B-16:openai -o results.csv` as a subprocess,
  offline, on random weights seeded into its cache (wall time and its own img/s summary);
- plain: PIL + open_clip's preprocess + fp32 `encode_image`, batch by batch, no workers;
- ceiling: MKT's forward (`encode_images` + scoring) alone on ready-made input tensors, in the
  precision mkt-tag chose, with as many batches at once as the setting compared (`--parallel`);

and the top-5 agreement between that precision and fp32. Each setting (`--parallel` x
`--workers`) and its ceiling are measured `--rounds` times, alternated, so that all see the
same neighbours on a shared machine; the medians are reported. Figures only, no pass/fail.

    python bench/tag_throughput.py                          # full run (minutes on 2 cores)
    python bench/tag_throughput.py --n-large 8 --n-small 8  # quick check
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _common
import numpy as np

from mkt_tag.tagging.caches import LABELS_FILE

SUMMARY = re.compile(r"tagged (\d+).*; ([\d.]+) s, ([\d.]+) img/s")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-large", type=int, default=200, help="4000x3000 photos [200]")
    parser.add_argument("--n-small", type=int, default=200, help="640x480 photos [200]")
    parser.add_argument("--n-labels", type=int, default=200, help="labels to score [200]")
    parser.add_argument("--batch-size", type=int, default=16, help="images per forward [16]")
    parser.add_argument(
        "--workers",
        nargs="+",
        default=["auto"],
        help="mkt-tag --workers values to compare, e.g. `auto 0 1` [auto: mkt-tag's default]",
    )
    parser.add_argument(
        "--parallel",
        nargs="+",
        default=["auto"],
        help="mkt-tag --parallel values to compare, e.g. `auto 1` [auto: mkt-tag's default]",
    )
    parser.add_argument("--precision", default="auto", help="mkt-tag --precision [auto]")
    parser.add_argument("--device", default="auto", help="mkt-tag --device [auto]")
    parser.add_argument("--out", type=Path, default=_common.OUT, help="work dir [bench/out]")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="measure every setting this many times, alternated, and report the median [3]",
    )
    parser.add_argument(
        "--ceiling-seconds", type=float, default=10.0, help="each ceiling measurement [10]"
    )
    parser.add_argument("--agree-images", type=int, default=32, help="images for agreement [32]")
    parser.add_argument(
        "--warm-labels",
        action="store_true",
        help="keep mkt-tag's label-embedding cache between runs [default: empty it before each]",
    )
    parser.add_argument("--skip-plain", action="store_true", help="no plain-loop baseline")
    parser.add_argument("--skip-ceiling", action="store_true", help="no forward-only ceiling")
    parser.add_argument("--skip-agreement", action="store_true", help="no precision agreement")
    return parser.parse_args()


def run_mkt_tag(
    files: list[Path],
    labels: Path,
    results: Path,
    args: argparse.Namespace,
    workers: str,
    parallel: str,
) -> dict[str, Any]:
    """One `mkt-tag tag` run: its wall time and the rate it reports itself."""
    command = [sys.executable, "-m", "mkt_tag", "tag", *map(str, files), "--labels", str(labels)]
    command += ["--model", _common.BACKBONE, "-o", str(results), "--overwrite"]
    command += ["--no-feature-cache"]  # a cached image tower would measure nothing
    command += ["--batch-size", str(args.batch_size), "--precision", args.precision]
    command += ["--device", args.device] + ([] if workers == "auto" else ["--workers", workers])
    command += [] if parallel == "auto" else ["--parallel", parallel]
    # No -q: it also hides the summary line ("...; 12.3 s, 4.5 img/s") parsed here. The progress
    # bar is off anyway, stderr being a pipe.
    env = _common.offline_env(args.out / "cache")
    if not args.warm_labels:  # every run pays for its label embeddings, as a first run does
        (args.out / "cache" / LABELS_FILE).unlink(missing_ok=True)
    other = _common.OtherLoad()
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    summary = SUMMARY.search(done.stderr)
    if done.returncode != 0 or summary is None:
        raise SystemExit(f"mkt-tag failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    tagged, tagging_s = int(summary[1]), float(summary[2])
    if tagged != len(files):
        print(f"warning: mkt-tag tagged {tagged} of {len(files)} images", file=sys.stderr)
    return {
        "workers": workers,
        "parallel": parallel,
        "wall_s": wall,
        "startup_s": wall - tagging_s,  # interpreter, imports, model load, label embeddings
        "tagging_s": tagging_s,
        "img_s": float(summary[3]),  # mkt-tag's own figure: tagging only
        "wall_img_s": len(files) / wall,
        "other_cpus": other.cpus(),
    }


def plain_loop(files: list[Path], weights: Path, batch_size: int, device: str) -> float:
    """images/s of the loop most people write first: PIL, open_clip's transform, fp32."""
    import open_clip
    import torch
    from PIL import Image

    model, _, preprocess = open_clip.create_model_and_transforms(
        "ViT-B-16-quickgelu", pretrained=str(weights), device=device
    )
    model.eval()
    started = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(files), batch_size):
            batch = []
            for path in files[start : start + batch_size]:
                with Image.open(path) as image:
                    batch.append(preprocess(image.convert("RGB")))
            model.encode_image(torch.stack(batch).to(device)).cpu()
    return len(files) / (time.perf_counter() - started)


def forward_ceiling(
    tagger: Any, labelset: Any, batch_size: int, seconds: float, parallel: int
) -> float:
    """images/s of MKT's forward alone (features + scores) on ready-made input tensors.

    ``parallel`` threads each run batch after batch with an equal share of torch's threads,
    as `mkt-tag tag --parallel` does; no decoding, no outputs.
    """
    import threading

    import torch

    from mkt_tag.tagging.batches import torch_threads

    size = tagger.preprocess.image_size
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(batch_size, 3, size, size, generator=generator)
    inputs = inputs.to(device=tagger.device, dtype=tagger.dtype)
    model = tagger.model
    done = [0] * parallel

    @torch.inference_mode()
    def loop(slot: int, until: float) -> None:
        while done[slot] < 2 or time.perf_counter() < until:
            model.score(model.encode_images(inputs), labelset.embeddings).fused.float().cpu()
            done[slot] += 1

    with torch_threads(max(1, torch.get_num_threads() // parallel)):
        loop(0, 0.0)  # warm-up: kernel selection, allocator
        done[0] = 0
        started = time.perf_counter()
        threads = [
            threading.Thread(target=loop, args=(slot, started + seconds))
            for slot in range(parallel)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return sum(done) * batch_size / (time.perf_counter() - started)


def top5_agreement(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """How often the top-5 label sets match, and how close the 5th/6th labels are."""
    k = 5
    ref_top = np.argsort(-reference, axis=1, kind="stable")[:, :k]
    other_top = np.argsort(-other, axis=1, kind="stable")[:, :k]
    overlap = [len(set(a) & set(b)) / k for a, b in zip(ref_top, other_top, strict=True)]
    ranked = -np.sort(-reference, axis=1)
    return {
        "identical": float(np.mean([o == 1.0 for o in overlap])),
        "mean_overlap": float(np.mean(overlap)),
        # If the typical score error is close to the 5th-6th gap, swaps are expected: random
        # weights give flat score vectors, so this is pessimistic for trained ones.
        "median_gap_5_6": float(np.median(ranked[:, k - 1] - ranked[:, k])),
        "median_abs_error": float(np.median(np.abs(other - reference))),
    }


def precision_agreement(
    args: argparse.Namespace, label_list: list[str], images: list[Path], chosen: str
) -> dict[str, Any]:
    """Top-5 agreement of the chosen precision (bf16 if that is fp32) with fp32."""
    compared = chosen if chosen != "fp32" else "bf16"
    scores = {}
    for precision in ("fp32", compared):  # a fresh model each: Tagger casts in place
        tagger = _common.offline_tagger(args.out / "cache", args.device, precision)
        scores[precision] = tagger.scores(images, label_list, args.batch_size)
    agreement = top5_agreement(scores["fp32"], scores[compared])
    return {"compared": compared, "images": len(images), **agreement}


def fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def spread(values: list[float]) -> str:
    """median (min-max) of repeated measurements."""
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{np.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def report(figures: dict[str, Any]) -> None:
    machine = figures["machine"]
    print(
        f"\nmachine: {machine['cpu']}; {machine['cpus_usable']} usable CPUs "
        f"(cpu_count {machine['cpu_count']}); bf16 {'yes' if machine['cpu_bf16'] else 'no'}; "
        f"torch {machine['torch']}, {machine['torch_threads']} threads; "
        f"precision {figures['precision']}; batch {figures['batch_size']}; "
        f"{figures['n_labels']} labels; {figures['rounds']} round(s)"
    )
    header = (
        f"{'set':<17}{'parallel':>9}{'workers':>8}{'plain':>7}{'mkt-tag':>20}{'x plain':>8}"
        f"{'startup s':>10}{'ceiling':>20}{'% ceil':>7}{'busy':>6}"
    )
    print(header + "\n" + "-" * len(header))
    for row in figures["sets"]:
        plain = row.get("plain_img_s")
        for setting in row["settings"]:
            rates = [run["img_s"] for run in setting["runs"]]
            ceiling = row.get("ceilings", {}).get(str(setting["parallel_count"]), [])
            speedup = np.median(rates) / plain if plain else None
            share = 100 * np.median(rates) / np.median(ceiling) if ceiling else None
            startup = np.median([run["startup_s"] for run in setting["runs"]])
            busy = max(run["other_cpus"] or 0.0 for run in setting["runs"])
            print(
                f"{row['set']:<17}{setting['parallel']:>9}{setting['workers']:>8}"
                f"{fmt(plain):>7}{spread(rates):>20}{fmt(speedup, '.2f'):>8}{startup:>10.1f}"
                f"{spread(ceiling) if ceiling else '-':>20}{fmt(share, '.0f'):>7}{busy:>6.1f}"
            )
    print(
        "img/s, median (min-max) over the rounds; mkt-tag = its own summary (tagging only); "
        "startup = imports + model load + label embeddings"
        + (" (cached after the first run)" if figures["warm_labels"] else "")
        + "; ceiling = forward only, with as many batches at once as that row, measured in "
        "the same rounds; busy = most CPUs other processes used during a run (trust ~0 only)"
    )
    agreement = figures.get("agreement")
    if agreement:
        print(
            f"top-5 agreement {agreement['compared']} vs fp32 on {agreement['images']} images: "
            f"{100 * agreement['identical']:.0f}% identical sets, mean overlap "
            f"{100 * agreement['mean_overlap']:.1f}% (random weights: median 5th-6th score gap "
            f"{agreement['median_gap_5_6']:.2g} vs median score error "
            f"{agreement['median_abs_error']:.2g}, so near-ties make this pessimistic)"
        )


def measure_set(
    name: str,
    files: list[Path],
    label_file: Path,
    args: argparse.Namespace,
    tagger: Any,
    labelset: Any,
) -> dict[str, Any]:
    """mkt-tag runs of every setting and the matching ceilings, alternated round by round."""
    from mkt_tag.tagging.batches import default_parallel, default_workers

    on_cpu = tagger.device.type == "cpu"
    width, height = _common.PHOTO_SETS[name]
    row: dict[str, Any] = {"set": f"{name} {width}x{height}", "n": len(files)}
    row["settings"] = []
    for parallel, workers in itertools.product(args.parallel, args.workers):
        count = default_parallel(on_cpu) if parallel == "auto" else int(parallel)
        decoders = default_workers(len(files), args.batch_size, on_cpu)  # what auto comes to
        row["settings"].append(
            {
                "parallel": f"auto={count}" if parallel == "auto" else parallel,
                "parallel_count": count,
                "workers": f"auto={decoders}" if workers == "auto" else workers,
                "options": (parallel, workers),
                "runs": [],
            }
        )
    counts = sorted({setting["parallel_count"] for setting in row["settings"]})
    ceilings: dict[str, list[float]] = {str(count): [] for count in counts}
    for round_ in range(args.rounds):
        for setting in row["settings"]:
            parallel, workers = setting["options"]
            print(
                f"{name} round {round_ + 1}/{args.rounds}: mkt-tag tag, {len(files)} photos, "
                f"parallel {parallel}, workers {workers}",
                flush=True,
            )
            results = args.out / f"results-{name}.csv"
            setting["runs"].append(run_mkt_tag(files, label_file, results, args, workers, parallel))
        if not args.skip_ceiling:
            print(f"{name} round {round_ + 1}/{args.rounds}: forward-only ceilings", flush=True)
            for count in counts:
                ceilings[str(count)].append(
                    forward_ceiling(tagger, labelset, args.batch_size, args.ceiling_seconds, count)
                )
    for setting in row["settings"]:
        del setting["options"]
    if not args.skip_ceiling:
        row["ceilings"] = ceilings
    return row


def main() -> None:
    args = parse_args()
    if args.n_large <= 0 and args.n_small <= 0:
        raise SystemExit("nothing to measure: --n-large and --n-small are both 0")
    if args.rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    # huggingface_hub reads this at import time: set it before anything imports it.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["MKT_TAG_CACHE"] = str(args.out / "cache")
    import torch

    counts = {"large": args.n_large, "small": args.n_small}
    print(f"photos: generating or reusing in {args.out / 'images'}", flush=True)
    sets = _common.photo_sets(args.out / "images", counts)
    print("model: seeding random ViT-B-16 weights into the offline cache", flush=True)
    weights = _common.seed_hub_cache(args.out / "cache")
    label_file = _common.write_labels(args.out / "labels.txt", args.n_labels)
    tagger = _common.offline_tagger(args.out / "cache", args.device, args.precision)
    labelset = tagger.embed_labels(_common.labels(args.n_labels))
    names = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
    figures: dict[str, Any] = {"machine": _common.machine_info(), "sets": []}
    figures.update(batch_size=args.batch_size, n_labels=args.n_labels, rounds=args.rounds)
    figures.update(precision=names[tagger.dtype], warm_labels=args.warm_labels)
    whole_run = _common.OtherLoad()
    for name, files in sets.items():
        row = measure_set(name, files, label_file, args, tagger, labelset)
        if not args.skip_plain:
            print(f"{name}: plain loop", flush=True)
            other = _common.OtherLoad()
            row["plain_img_s"] = plain_loop(files, weights, args.batch_size, str(tagger.device))
            row["plain_other_cpus"] = other.cpus()
        figures["sets"].append(row)
    del tagger
    if not args.skip_agreement:
        print("precision agreement", flush=True)
        share = max(1, args.agree_images // len(sets))
        agree_images = [p for files in sets.values() for p in files[:share]]
        figures["agreement"] = precision_agreement(
            args, _common.labels(args.n_labels), agree_images, figures["precision"]
        )
    figures["other_cpus"] = whole_run.cpus()
    report(figures)
    (args.out / "tag_throughput.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(f"figures: {args.out / 'tag_throughput.json'}")


if __name__ == "__main__":
    main()
