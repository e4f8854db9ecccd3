"""Feeding a GPU: what the CPU side delivers, with the model replaced by a no-op.

On a GPU the forward pass costs well under a millisecond an image, so a tagging run goes as
fast as its decoding processes hand it photos. This measures that side alone, on any
machine, for camera-sized JPEGs (4000 x 3000, quality 90, as `tag_throughput.py`):

- decode: one image at a time in this process (open, 1/4-scale draft decode, EXIF
  orientation, resize and centre crop: `ImageFiles[i]`), CPU ms per image, so the most one
  decoding process can deliver is 1000 / ms images a second;
- handover: the same with ready-made 224 x 224 arrays instead of files (no decoding): what
  handing decoded images from the processes to the main one costs, as img/s and main-process
  CPU ms an image;
- pipeline: `tagging.batches.run_batches` with a no-op model, for each `--workers` value:
  img/s, the time until the first batch reached the model, the main process's CPU seconds
  (receiving batches), and the scaling: img/s per worker against one worker's img/s (what a
  worker delivers alone; fair while there are as many cores as workers);
- tagger: `Tagger.score_files` with a near-no-op backbone (one 64-wide transformer block at
  224 px, 32 labels), so the same decoding and hand-over, plus batching and scoring;
- cli: the whole `mkt-tag tag ... -o results.csv` command with that backbone (its own img/s
  summary: tagging only, start-up excluded).

Each is measured `--rounds` times, alternated, and the median reported with the load other
processes put on the machine meanwhile (`busy`). Figures only, no pass/fail.

    python bench/feeding.py                        # 48 and 240 photos, workers 1 and 2
    python bench/feeding.py --n 48 --workers 1 2 4 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from inspect import signature
from pathlib import Path
from typing import Any

import _common

PARTS = ("decode", "handover", "pipeline", "tagger", "cli")
SUMMARY = re.compile(r"tagged (\d+).*; ([\d.]+) s, ([\d.]+) img/s")

# A backbone whose forward pass costs next to nothing: what the CPU side looks like when
# the model is on a GPU (a ViT-B/16 forward on an H100 is ~0.3 ms an image).
NO_OP_BACKBONE = {
    "embed_dim": 32,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 224, "layers": 1, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[48, 240], help="photos [48 240]")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="[1 2]")
    parser.add_argument("--batch-size", type=int, default=16, help="images per batch [16]")
    parser.add_argument("--rounds", type=int, default=3, help="median of this many [3]")
    parser.add_argument(
        "--parts",
        nargs="+",
        help="what to measure [all]",
        default=list(PARTS),
        choices=PARTS,
    )
    parser.add_argument(
        "--model",
        choices=["no-op", "ViT-B-16"],
        default="no-op",
        help="the model of the tagger and cli parts: the near-no-op backbone, or ViT-B/16 "
        "(random weights seeded into an offline cache) to compare a GPU's real path [no-op]",
    )
    parser.add_argument("--device", default="cpu", help="of the tagger and cli parts [cpu]")
    parser.add_argument("--out", type=Path, default=_common.OUT, help="work dir [bench/out]")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args()


def no_op_model(folder: Path) -> str:
    """The near-no-op backbone as an open_clip `local-dir:` folder (random weights)."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    weights = folder / "open_clip_model.safetensors"
    if not weights.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        clip = open_clip.CLIP(**NO_OP_BACKBONE)
        state = {k: v.contiguous() for k, v in clip.state_dict().items()}
        save_file(state, str(folder / "weights.part"))
        (folder / "open_clip_config.json").write_text(
            json.dumps({"model_cfg": NO_OP_BACKBONE, "preprocess_cfg": {}})
        )
        (folder / "weights.part").replace(weights)
    return f"local-dir:{folder}"


def measure_decode(paths: list[Path]) -> dict[str, float]:
    """CPU ms per image for `ImageFiles[i]` in this process (one core)."""
    from mkt_tag.config import PreprocessConfig
    from mkt_tag.images import ImageFiles

    files = ImageFiles(paths, PreprocessConfig())
    files[0]  # warm: imports, the HEIF opener
    times = []
    for i in range(len(files)):
        started = time.process_time()
        _, array, reason = files[i]
        times.append(time.process_time() - started)
        assert array is not None, reason
    ms = 1000 * statistics.median(times)
    return {"ms per image": ms, "ceiling img/s per worker": 1000 / ms}


def measure_pipeline(paths: list[Path], workers: int, batch_size: int) -> dict[str, float]:
    """`run_batches` with a no-op model: img/s, first batch, main-process CPU."""
    from mkt_tag.config import PreprocessConfig
    from mkt_tag.images import ImageFiles
    from mkt_tag.tagging.batches import plan_batches, run_batches

    files = ImageFiles(paths, PreprocessConfig())
    plan = plan_batches(len(paths), batch_size, 1)
    reached: list[float] = []  # when the model got each batch

    def no_op(items: list[Any]) -> int:
        reached.append(time.perf_counter())
        return len(items)

    started, cpu = time.perf_counter(), time.process_time()
    # Not niced, as with the model on a GPU (mkt-tag 0.4 has no such setting: it niced them).
    niceable = "nice_workers" in signature(run_batches).parameters
    settings = {"nice_workers": False} if niceable else {}
    done = sum(run_batches(files, plan, no_op, 1, workers, **settings))
    wall = time.perf_counter() - started
    assert done == len(paths)
    return {
        "img/s": done / wall,
        "first batch s": reached[0] - started,
        "main CPU s": time.process_time() - cpu,
    }


class _Ready:
    """``ImageFiles`` look-alike whose items are ready-made arrays: no file, no decoding."""

    def __init__(self, n: int) -> None:
        import numpy as np

        self.paths = [Path(f"{i}.jpg") for i in range(n)]
        self.pixels = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, Any, None]:
        return index, self.pixels.copy(), None


def measure_handover(n: int, workers: int, batch_size: int) -> dict[str, float]:
    """`run_batches` over ready arrays: the cost of the hand-over alone."""
    from mkt_tag.tagging.batches import plan_batches, run_batches

    files: Any = _Ready(n)
    plan = plan_batches(n, batch_size, 1)
    started, cpu = time.perf_counter(), time.process_time()
    done = sum(run_batches(files, plan, lambda items: len(items), 1, workers))
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert done == n
    return {"img/s": n / wall, "main CPU s": cpu, "main CPU ms/img": 1000 * cpu / n}


def measure_tagger(tagger: Any, labels: Any, paths: list[Path], workers: int, batch: int) -> float:
    started = time.perf_counter()
    done = 0
    for scored in tagger.score_files(paths, labels, batch, workers=workers, parallel=1):
        done += len(scored.indices)
    assert done == len(paths)
    return done / (time.perf_counter() - started)


def measure_cli(
    model: str, folder: Path, labels: Path, out: Path, args: argparse.Namespace, workers: int
) -> float:
    command = [
        *(sys.executable, "-m", "mkt_tag", "tag", str(folder)),
        *("-l", str(labels), "-m", model, "-o", str(out), "--overwrite"),
        *("--workers", str(workers), "--parallel", "1", "--batch-size", str(args.batch_size)),
        *("--device", args.device),
    ]
    env = _common.offline_env(args.out / "feeding" / "cache")
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    found = SUMMARY.search(done.stderr)
    if found is None:
        raise SystemExit(f"no summary in mkt-tag's output:\n{done.stderr}")
    return float(found.group(3))


def main() -> None:
    args = parse_args()
    out = args.out / "feeding"
    largest = max(args.n)
    photos = _common.synthetic_photos(out / "photos", largest, _common.PHOTO_SETS["large"])
    labels = _common.write_labels(out / "labels.txt", 32)
    if args.model == "no-op":
        model = no_op_model(out / "no-op-backbone")
    else:
        _common.seed_hub_cache(out / "cache")
        model = _common.BACKBONE
    figures: dict[str, Any] = {"machine": _common.machine_info(), "cpus": os.cpu_count()}
    print(
        f"{os.cpu_count()} CPUs; photos 4000x3000 JPEG q90; batch {args.batch_size}; "
        f"tagger and cli: {args.model} on {args.device}"
    )

    if "decode" in args.parts:
        load = _common.OtherLoad()
        decode = measure_decode(photos[: min(largest, 48)])
        decode["busy"] = load.cpus() or 0.0
        figures["decode"] = decode
        print(
            f"decode: {decode['ms per image']:.1f} CPU ms an image, so at most "
            f"{decode['ceiling img/s per worker']:.1f} img/s per decoding process "
            f"(busy {decode['busy']:.1f})"
        )

    tagger = labelset = None
    if "tagger" in args.parts:
        from mkt_tag.tagging.tagger import Tagger

        tagger = Tagger.load(model, args.device, cache_dir=out / "cache", download=False)
        labelset = tagger.embed_labels(labels.read_text().split("\n"))

    print(
        f"{'part':10} {'n':>5} {'workers':>7} {'img/s':>7} {'per worker':>10} "
        f"{'scaling':>10} {'first s':>7} {'main CPU s':>10} {'busy':>5}"
    )
    rows: list[dict[str, Any]] = []
    for n in args.n:
        folder = out / f"set-{n}"
        subset = _common.linked_folder(folder, photos[:n])
        for part in [p for p in PARTS[1:] if p in args.parts]:
            for workers in args.workers:
                samples: list[dict[str, float]] = []
                for _ in range(args.rounds):
                    load = _common.OtherLoad()
                    if part == "handover":
                        sample = measure_handover(20 * n, workers, args.batch_size)
                    elif part == "pipeline":
                        sample = measure_pipeline(subset, workers, args.batch_size)
                    elif part == "tagger":
                        rate = measure_tagger(tagger, labelset, subset, workers, args.batch_size)
                        sample = {"img/s": rate}
                    else:
                        results = out / f"results-{n}.csv"
                        rate = measure_cli(model, folder, labels, results, args, workers)
                        sample = {"img/s": rate}
                    sample["busy"] = load.cpus() or 0.0
                    samples.append(sample)
                row = {key: statistics.median(s[key] for s in samples) for key in samples[0]}
                count = 20 * n if part == "handover" else n
                rows.append({**row, "part": part, "n": count, "workers": workers})
                per = row["img/s"] / workers
                alone = [
                    r["img/s"]
                    for r in rows[:-1]
                    if (r["part"], r["n"], r["workers"]) == (part, count, 1)
                ]
                share = f"{100 * per / alone[0]:.0f}%" if alone else "-"
                first = f"{row['first batch s']:.2f}" if "first batch s" in row else "-"
                main_cpu = f"{row['main CPU s']:.2f}" if "main CPU s" in row else "-"
                print(
                    f"{part:10} {count:>5} {workers:>7} {row['img/s']:>7.1f} {per:>10.1f} "
                    f"{share:>10} {first:>7} {main_cpu:>10} {row['busy']:>5.1f}",
                    flush=True,
                )
    figures["rows"] = rows
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
