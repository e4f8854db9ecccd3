"""`--precision int8` against fp32 (and bf16 where the CPU has it): agreement and speed.

agreement: trained backbones, where scores mean something (random weights make labels
near-ties): the synthetic world's CLIP (bench/synthetic, `python bench/synthetic/
experiment.py` makes it) and the MKT checkpoint trained on it, on the world's 1,000 test
images and 20 labels. Each image is scored in fp32 and in int8 (and in bf16, for scale: what
`--precision auto` runs on CPUs with native bf16); printed: the share of images whose top-5
label sets are identical, the mean overlap of those sets, the scores' largest and median
absolute difference, and mAP in both.

speed: ViT-B/16 (random weights seeded into an offline cache: speed does not depend on
them). `model`: the image tower alone on ready-made input, one batch of 16 at a time on all of
torch's threads, img/s, best of 3 (torch fp32, torch bf16 where the CPU has native bf16,
ONNX Runtime int8). `tag`: the whole
`mkt-tag tag -o results.csv` command on camera-sized JPEGs (4000 x 3000) in each precision
(its own img/s, decoding included, start-up not).

    python bench/int8.py                          # both parts
    python bench/int8.py --parts agreement
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

import _common
import numpy as np

SUMMARY = re.compile(r"tagged (\d+).*; ([\d.]+) s, ([\d.]+) img/s")
WORLD = _common.OUT / "synthetic"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="+", default=["agreement", "speed"])
    parser.add_argument("--world", type=Path, default=WORLD, help="[bench/out/synthetic]")
    parser.add_argument("--n", type=int, default=48, help="12-MP photos for `tag` [48]")
    parser.add_argument("--out", type=Path, default=_common.OUT, help="work dir [bench/out]")
    return parser.parse_args()


def agreement(model: str, world: Path, cache: Path, other: str = "int8") -> dict[str, float]:
    from mkt_tag import datasets, vocab
    from mkt_tag.evaluate.metrics import average_precision, mean_average_precision
    from mkt_tag.tagging.tagger import Tagger

    labels = vocab.read_labels(world / "world" / "all.txt")
    data = datasets.load(world / "world" / "test.csv", labels.entries)
    scores = {}
    for precision in ("fp32", other):
        tagger = Tagger.load(model, device="cpu", precision=precision, cache_dir=cache)
        scores[precision] = tagger.scores(data.paths, tagger.embed_labels(labels.entries))
    top = {p: np.argsort(-s, axis=1)[:, :5] for p, s in scores.items()}
    overlap = [len(set(a) & set(b)) / 5 for a, b in zip(top["fp32"], top[other], strict=True)]
    error = np.abs(scores["fp32"] - scores[other])
    maps = {
        p: 100 * mean_average_precision(average_precision(s, data.targets).ap)
        for p, s in scores.items()
    }
    return {
        "identical top-5 %": 100 * float(np.mean([o == 1.0 for o in overlap])),
        "mean overlap %": 100 * float(np.mean(overlap)),
        "max |diff|": float(error.max()),
        "median |diff|": float(np.median(error)),
        "mAP fp32": maps["fp32"],
        f"mAP {other}": maps[other],
    }


def tower_speed(precision: str, cache: Path, seconds: float = 10.0) -> float:
    import torch

    from mkt_tag.model import normalise_pixels
    from mkt_tag.tagging.tagger import Tagger

    tagger = Tagger.load(_common.BACKBONE, "cpu", precision, cache_dir=cache, download=False)
    tower = tagger.image_tower  # on all of torch's threads, in either precision
    pixels = torch.randint(0, 256, (16, 224, 224, 3), dtype=torch.uint8).permute(0, 3, 1, 2)
    batch = normalise_pixels(pixels, tagger.preprocess, tagger.dtype)
    best = 0.0
    for _ in range(3):
        done, started = 0, time.perf_counter()
        with torch.inference_mode():
            while time.perf_counter() - started < seconds / 3 or done == 0:
                tower(batch)
                done += len(batch)
        best = max(best, done / (time.perf_counter() - started))
    return best


def tag_speed(precision: str, folder: Path, labels: Path, out: Path, cache: Path) -> float:
    command = [
        *(sys.executable, "-m", "mkt_tag", "tag", str(folder), "-l", str(labels)),
        *("-m", _common.BACKBONE, "-o", str(out / f"int8-{precision}.csv"), "--overwrite"),
        *("--precision", precision),
    ]
    done = subprocess.run(command, env=_common.offline_env(cache), capture_output=True, text=True)
    found = SUMMARY.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"mkt-tag tag --precision {precision} failed:\n{done.stderr}")
    return float(found.group(3))


def main() -> None:
    args = parse_args()
    out = args.out / "int8"
    out.mkdir(parents=True, exist_ok=True)
    if "agreement" in args.parts:
        models = {
            "synthetic CLIP": f"local-dir:{args.world / 'backbone'}",
            "MKT on it": str(args.world / "runs" / "mkt-stage2-seed0" / "best"),
        }
        print(
            f"{'model':15} {'against fp32':>12} {'top-5 same %':>12} {'overlap %':>9} "
            f"{'max diff':>9} {'median':>8} {'mAP fp32':>8} {'mAP other':>9}"
        )
        for name, model in models.items():
            for other in ("int8", "bf16"):  # bf16: what `auto` runs on CPUs that have it
                row = agreement(model, args.world, out / "cache", other)
                print(
                    f"{name:15} {other:>12} {row['identical top-5 %']:>12.1f} "
                    f"{row['mean overlap %']:>9.1f} {row['max |diff|']:>9.4f} "
                    f"{row['median |diff|']:>8.4f} {row['mAP fp32']:>8.2f} "
                    f"{row[f'mAP {other}']:>9.2f}",
                    flush=True,
                )
    if "speed" in args.parts:
        from mkt_tag.devices import cpu_has_bf16

        cache = out / "cache"
        _common.seed_hub_cache(cache)
        precisions = ["fp32", *(["bf16"] if cpu_has_bf16() else []), "int8"]
        rates = {p: tower_speed(p, cache) for p in precisions}
        print(
            "image tower, batch 16, best of 3: "
            + ", ".join(f"{p} {r:.2f} img/s" for p, r in rates.items())
            + f"; int8 / fp32 = {rates['int8'] / rates['fp32']:.2f}"
        )
        photos = _common.synthetic_photos(args.out / "feeding" / "photos", args.n, (4000, 3000))
        folder = out / f"photos-{args.n}"
        _common.linked_folder(folder, photos)
        labels = _common.write_labels(out / "labels.txt", 200)
        tagged = {p: tag_speed(p, folder, labels, out, cache) for p in precisions}
        print(
            f"mkt-tag tag, {args.n} photos 4000x3000, 200 labels: "
            + ", ".join(f"{p} {r:.2f} img/s" for p, r in tagged.items())
            + f"; int8 / fp32 = {tagged['int8'] / tagged['fp32']:.2f}"
        )


if __name__ == "__main__":
    main()
