"""What tagging a million photos costs: measured on this machine's CPUs, estimated for GPUs.

Measured here: the whole `mkt-tag tag PHOTOS -o results.csv` command on camera-sized JPEGs
(4000 x 3000, as `tag_throughput.py`) with ViT-B/16 (random weights seeded into an offline
cache: speed does not depend on their values), once with `--engine local` and once with
`--engine ray` (a local Ray instance on this machine's CPUs): wall-clock seconds from start
to end (Python, Ray and model start-up included) and the img/s of the tagging itself (the
command's summary). From the better img/s: CPU-hours per million photos, and their price at
`--cpu-price` dollars per vCPU-hour.

Estimated for a GPU (no GPU here): a GPU tags as fast as the slower of its forward pass
(`--gpu-ceiling` img/s, measured: docs/benchmarks.md, "GPU check") and the decoding
processes its CPUs run (7 of every 8 of `--cpus-per-gpu`, as `mkt-tag tag` starts them, each
at the rate `bench/feeding.py` measures per process here, `--decode-ms` CPU ms an image).
Prices are inputs, not measurements: pass your provider's.

    python bench/cost.py                    # 96 photos, both engines
    python bench/cost.py --n 240 --engines local
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import _common

SUMMARY = re.compile(r"tagged (\d+).*; ([\d.]+) s, ([\d.]+) img/s")
MILLION = 1_000_000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=96, help="photos [96]")
    parser.add_argument("--engines", nargs="+", default=["local", "ray"], help="[local ray]")
    parser.add_argument("--n-labels", type=int, default=200, help="labels [200]")
    parser.add_argument(
        "--cpu-price", type=float, default=0.05, help="dollars per vCPU-hour [0.05, assumed]"
    )
    parser.add_argument(
        "--gpu-price",
        type=float,
        default=3.0,
        help="dollars per hour of one GPU with its CPUs [3.0, assumed for an H100]",
    )
    parser.add_argument(
        "--gpu-ceiling",
        type=float,
        default=3408,
        help="forward-pass img/s of one GPU [3408: ViT-B/16 bf16 on an H100, measured]",
    )
    parser.add_argument("--cpus-per-gpu", type=int, default=16, help="[16]")
    parser.add_argument(
        "--decode-ms",
        type=float,
        help="CPU ms to decode one photo [default: measured here, as bench/feeding.py does]",
    )
    parser.add_argument("--out", type=Path, default=_common.OUT, help="work dir [bench/out]")
    return parser.parse_args()


def run_command(
    engine: str, folder: Path, labels: Path, out: Path, cache: Path
) -> dict[str, float]:
    results = out / f"cost-{engine}.csv"
    command = [
        *(sys.executable, "-m", "mkt_tag", "tag", str(folder), "-l", str(labels)),
        *("-m", _common.BACKBONE, "-o", str(results), "--overwrite", "--engine", engine),
    ]
    started = time.perf_counter()
    done = subprocess.run(
        command, env=_common.offline_env(cache), capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - started
    found = SUMMARY.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"mkt-tag tag --engine {engine} failed:\n{done.stderr}")
    return {"wall s": wall, "tagging img/s": float(found.group(3)), "tagged": int(found.group(1))}


def main() -> None:
    args = parse_args()
    out = args.out / "cost"
    out.mkdir(parents=True, exist_ok=True)
    photos = _common.synthetic_photos(args.out / "feeding" / "photos", args.n, (4000, 3000))
    folder = out / f"set-{args.n}"
    _common.linked_folder(folder, photos)
    labels = _common.write_labels(out / "labels.txt", args.n_labels)
    cache = args.out / "feeding" / "cache"
    _common.seed_hub_cache(cache)
    cpus = os.cpu_count() or 1
    print(f"{cpus} CPUs here; {args.n} photos 4000x3000; ViT-B/16; {args.n_labels} labels")

    best = 0.0
    for engine in args.engines:
        load = _common.OtherLoad()
        row = run_command(engine, folder, labels, out, cache)
        best = max(best, row["tagging img/s"])
        print(
            f"  --engine {engine:5}: {row['wall s']:6.1f} s end to end, "
            f"{row['tagging img/s']:5.2f} img/s tagging (busy {load.cpus() or 0:.1f})"
        )
    hours = MILLION / best / 3600
    print(
        f"CPU, this machine: {hours:,.0f} hours of {cpus} vCPUs per million photos = "
        f"{hours * cpus:,.0f} vCPU-hours = ${hours * cpus * args.cpu_price:,.0f} "
        f"at ${args.cpu_price}/vCPU-hour"
    )

    decode_ms = args.decode_ms
    if decode_ms is None:
        sys.path.insert(0, str(Path(__file__).parent))
        from feeding import measure_decode

        decode_ms = measure_decode(photos[:24])["ms per image"]
    decoders = args.cpus_per_gpu - args.cpus_per_gpu // 8
    fed = decoders * 1000 / decode_ms
    rate = min(args.gpu_ceiling, fed)
    gpu_hours = MILLION / rate / 3600
    print(
        f"GPU, estimated: {decoders} decoding processes x {1000 / decode_ms:.1f} img/s "
        f"({decode_ms:.1f} ms a photo) = {fed:.0f} img/s, forward ceiling "
        f"{args.gpu_ceiling:.0f}: {rate:.0f} img/s, {gpu_hours:.2f} GPU-hours per million "
        f"photos = ${gpu_hours * args.gpu_price:,.2f} at ${args.gpu_price}/GPU-hour"
    )


if __name__ == "__main__":
    main()
