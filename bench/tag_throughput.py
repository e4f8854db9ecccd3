"""How fast does `mkt-tag tag` tag photos, against a plain loop and the model's own ceiling?

For each image set (camera-sized 4000 x 3000 JPEGs, small 640 x 480 ones) it measures:

- mkt-tag: the real `mkt-tag tag ... --model ViT-B-16:openai -o results.csv` as a subprocess,
  offline, on random weights seeded into its cache (wall time and its own img/s summary);
- plain: PIL + open_clip's preprocess + fp32 `encode_image`, batch by batch, no workers;
- ceiling: MKT's forward (`encode_images` + scoring) alone on ready-made input tensors, in the
  precision mkt-tag chose;

and the top-5 agreement between that precision and fp32. Figures only, no pass/fail.

    python bench/tag_throughput.py                          # full run (minutes on 2 cores)
    python bench/tag_throughput.py --n-large 8 --n-small 8  # quick check
"""

from __future__ import annotations

import argparse
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

from mkt_tag.caches import LABELS_FILE

SETS = {"large": (4000, 3000), "small": (640, 480)}
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
    parser.add_argument("--precision", default="auto", help="mkt-tag --precision [auto]")
    parser.add_argument("--device", default="auto", help="mkt-tag --device [auto]")
    parser.add_argument("--out", type=Path, default=_common.OUT, help="work dir [bench/out]")
    parser.add_argument("--ceiling-seconds", type=float, default=15.0, help="ceiling timing [15]")
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
    files: list[Path], labels: Path, results: Path, args: argparse.Namespace, workers: str
) -> dict[str, Any]:
    """One `mkt-tag tag` run: its wall time and the rate it reports itself."""
    command = [sys.executable, "-m", "mkt_tag", "tag", *map(str, files), "--labels", str(labels)]
    command += ["--model", _common.BACKBONE, "-o", str(results), "--overwrite"]
    command += ["--no-feature-cache"]  # a cached image tower would measure nothing
    command += ["--batch-size", str(args.batch_size), "--precision", args.precision]
    command += ["--device", args.device] + ([] if workers == "auto" else ["--workers", workers])
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


def forward_ceiling(tagger: Any, labelset: Any, batch_size: int, seconds: float) -> float:
    """images/s of MKT's forward alone (features + scores) on ready-made input tensors."""
    import torch

    size = tagger.preprocess.image_size
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(batch_size, 3, size, size, generator=generator)
    inputs = inputs.to(device=tagger.device, dtype=tagger.dtype)
    model = tagger.model

    def step() -> None:
        model.score(model.encode_images(inputs), labelset.embeddings).fused.float().cpu()

    with torch.inference_mode():
        step()  # warm-up: kernel selection, allocator
        batches, started = 0, time.perf_counter()
        while batches < 2 or time.perf_counter() - started < seconds:
            step()
            batches += 1
    return batches * batch_size / (time.perf_counter() - started)


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


def model_checks(
    args: argparse.Namespace, label_list: list[str], images: list[Path]
) -> dict[str, Any]:
    """Forward ceiling in the chosen precision; top-5 agreement of bf16 (or it) with fp32."""
    import torch

    from mkt_tag import checkpoints
    from mkt_tag.tagger import Tagger, pick_device, pick_dtype

    names = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
    chosen = names[pick_dtype(args.precision, pick_device(args.device))]
    compared = chosen if chosen != "fp32" else "bf16"
    found: dict[str, Any] = {"precision": chosen}
    model = checkpoints.load(_common.BACKBONE, args.out / "cache", download=False)
    reference = None
    for precision in dict.fromkeys(["fp32", compared]):  # fp32 first: Tagger casts in place
        tagger = Tagger(model, args.device, precision)
        if not args.skip_agreement:
            scores = tagger.scores(images, label_list, args.batch_size)
            if reference is None:
                reference = scores
            else:
                agreement = top5_agreement(reference, scores)
                found["agreement"] = {"compared": precision, "images": len(images), **agreement}
        if precision == chosen and not args.skip_ceiling:
            labelset = tagger.embed_labels(label_list)
            other = _common.OtherLoad()
            found["ceiling_img_s"] = forward_ceiling(
                tagger, labelset, args.batch_size, args.ceiling_seconds
            )
            found["ceiling_other_cpus"] = other.cpus()
    return found


def fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def report(figures: dict[str, Any]) -> None:
    machine, ceiling = figures["machine"], figures.get("ceiling_img_s")
    print(
        f"\nmachine: {machine['cpu']}; {machine['cpus_usable']} usable CPUs "
        f"(cpu_count {machine['cpu_count']}); bf16 {'yes' if machine['cpu_bf16'] else 'no'}; "
        f"torch {machine['torch']}, {machine['torch_threads']} threads; "
        f"precision {figures['precision']}; batch {figures['batch_size']}; "
        f"{figures['n_labels']} labels"
    )
    header = (
        f"{'set':<17}{'workers':>8}{'plain':>8}{'mkt-tag':>9}{'x plain':>9}"
        f"{'wall':>7}{'startup s':>11}{'ceiling':>9}{'% ceil':>8}{'busy':>6}"
    )
    print(header + "\n" + "-" * len(header))
    for row in figures["sets"]:
        plain = row.get("plain_img_s")
        for run in row["mkt_tag"]:
            speedup = run["img_s"] / plain if plain else None
            share = 100 * run["img_s"] / ceiling if ceiling else None
            print(
                f"{row['set']:<17}{run['workers']:>8}{fmt(plain):>8}{run['img_s']:>9.1f}"
                f"{fmt(speedup, '.2f'):>9}{run['wall_img_s']:>7.1f}{run['startup_s']:>11.1f}"
                f"{fmt(ceiling):>9}{fmt(share, '.0f'):>8}{fmt(run['other_cpus']):>6}"
            )
    print(
        "img/s; mkt-tag = its own summary (tagging only), wall = whole command, "
        "startup = imports + model load + label embeddings"
        + (" (cached after the first run)" if figures["warm_labels"] else "")
    )
    plain = "/".join(fmt(row.get("plain_other_cpus")) for row in figures["sets"])
    print(
        f"busy: CPUs kept busy by other processes, on average: whole run "
        f"{fmt(figures['other_cpus'])}, mkt-tag runs above, plain loops {plain}, ceiling "
        f"{fmt(figures.get('ceiling_other_cpus'))}; figures are only trustworthy near 0"
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


def main() -> None:
    args = parse_args()
    if args.n_large <= 0 and args.n_small <= 0:
        raise SystemExit("nothing to measure: --n-large and --n-small are both 0")
    # huggingface_hub reads this at import time: set it before anything imports it.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["MKT_TAG_CACHE"] = str(args.out / "cache")
    from mkt_tag.tagger import default_workers, pick_device

    counts = {"large": args.n_large, "small": args.n_small}
    print(f"photos: generating or reusing in {args.out / 'images'}", flush=True)
    sets = {
        name: _common.synthetic_photos(args.out / "images" / name, counts[name], size)
        for name, size in SETS.items()
        if counts[name] > 0
    }
    print("model: seeding random ViT-B-16 weights into the offline cache", flush=True)
    weights = _common.seed_hub_cache(args.out / "cache")
    label_file = _common.write_labels(args.out / "labels.txt", args.n_labels)
    figures: dict[str, Any] = {"machine": _common.machine_info(), "sets": []}
    figures.update(batch_size=args.batch_size, n_labels=args.n_labels)
    figures["warm_labels"] = args.warm_labels
    whole_run = _common.OtherLoad()
    for name, files in sets.items():
        row: dict[str, Any] = {"set": f"{name} {SETS[name][0]}x{SETS[name][1]}", "n": len(files)}
        row["mkt_tag"] = []
        for workers in args.workers:
            print(f"{name}: mkt-tag tag, {len(files)} photos, workers {workers}", flush=True)
            results = args.out / f"results-{name}.csv"
            run = run_mkt_tag(files, label_file, results, args, workers)
            if workers == "auto":  # what mkt-tag's default came to for this many images
                on_cpu = pick_device(args.device).type == "cpu"
                run["workers"] = f"auto={default_workers(len(files), args.batch_size, on_cpu)}"
            row["mkt_tag"].append(run)
        if not args.skip_plain:
            print(f"{name}: plain loop", flush=True)
            device = str(pick_device(args.device))
            other = _common.OtherLoad()
            row["plain_img_s"] = plain_loop(files, weights, args.batch_size, device)
            row["plain_other_cpus"] = other.cpus()
        figures["sets"].append(row)
    print("model checks: forward ceiling and precision agreement", flush=True)
    share = max(1, args.agree_images // len(sets))
    agree_images = [p for files in sets.values() for p in files[:share]]
    figures.update(model_checks(args, _common.labels(args.n_labels), agree_images))
    figures["other_cpus"] = whole_run.cpus()
    report(figures)
    (args.out / "tag_throughput.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(f"figures: {args.out / 'tag_throughput.json'}")


if __name__ == "__main__":
    main()
