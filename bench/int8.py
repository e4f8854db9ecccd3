"""`--precision int8` against fp32 (and bf16 where the CPU has it): agreement and speed.

agreement: trained backbones, where scores mean something (random weights make labels
near-ties): the synthetic world's CLIP (bench/synthetic, `python bench/synthetic/
experiment.py` makes it) and the MKT checkpoint trained on it, on the world's 1,000 test
images and 20 labels. Each image is scored in fp32 and in int8 (and in bf16, for scale: what
`--precision auto` runs on CPUs with native bf16); printed: the share of images whose top-5
label sets are identical, the same counting only swaps of labels whose fp32 scores differ by
more than 0.005 (near-ties aside), the mean overlap of those sets, the scores' largest and
median absolute difference, and mAP in both; then how close fp32's 5th and 6th labels are
(the gap below which any rounding may swap them).

alternatives: weight-only int8 (ONNX Runtime's MatMulNBits, 8 bits, blocks of 64, int8
compute), the other int8 scheme ONNX Runtime offers for CPUs: agreement on the MKT
checkpoint and the speed of ViT-B/16's tower, against the dynamic int8 that `--precision
int8` runs.

speed: ViT-B/16 (random weights seeded into an offline cache: speed does not depend on
them). `model`: the image tower alone on ready-made input, one batch of 16 at a time on all of
torch's threads, img/s, best of 3 (torch fp32, torch bf16 where the CPU has native bf16,
ONNX Runtime int8). `tag`: the whole
`mkt-tag tag -o results.csv` command on camera-sized JPEGs (4000 x 3000) in each precision
(its own img/s, decoding included, start-up not).

    python bench/int8.py                          # both parts
    python bench/int8.py --parts agreement
    python bench/int8.py --parts alternatives
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
NEAR_TIE = 0.005  # fp32 score difference under which two labels' order is a coin toss


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="+", default=["agreement", "speed"])
    parser.add_argument("--world", type=Path, default=WORLD, help="[bench/out/synthetic]")
    parser.add_argument("--n", type=int, default=48, help="12-MP photos for `tag` [48]")
    parser.add_argument("--out", type=Path, default=_common.OUT, help="work dir [bench/out]")
    return parser.parse_args()


def agreement(model: str, world: Path, cache: Path, other: str = "int8") -> dict[str, float]:
    from mkt_tag import datasets, vocab
    from mkt_tag.tagging.tagger import Tagger

    labels = vocab.read_labels(world / "world" / "all.txt")
    data = datasets.load(world / "world" / "test.csv", labels.entries)
    scores = {}
    for precision in ("fp32", other):
        tagger = Tagger.load(model, device="cpu", precision=precision, cache_dir=cache)
        scores[precision] = tagger.scores(data.paths, tagger.embed_labels(labels.entries))
    return compare(scores["fp32"], scores[other], data.targets, other)


def compare(fp32: np.ndarray, other: np.ndarray, targets: np.ndarray, name: str) -> dict:
    """Agreement of ``other``'s scores with fp32's (see the module's docstring)."""
    from mkt_tag.evaluate.metrics import average_precision, mean_average_precision

    scores = {"fp32": fp32, name: other}
    top = {p: np.argsort(-s, axis=1)[:, :5] for p, s in scores.items()}
    overlap = [len(set(a) & set(b)) / 5 for a, b in zip(top["fp32"], top[name], strict=True)]
    fifth = -np.sort(-fp32, axis=1)[:, 4]
    near = [  # every label that moved in or out of the top 5 was within NEAR_TIE of the 5th
        all(abs(fp32[i, label] - fifth[i]) <= NEAR_TIE for label in set(a) ^ set(b))
        for i, (a, b) in enumerate(zip(top["fp32"], top[name], strict=True))
    ]
    ranked = -np.sort(-fp32, axis=1)
    gap = ranked[:, 4] - ranked[:, 5]
    error = np.abs(fp32 - other)
    maps = {
        p: 100 * mean_average_precision(average_precision(s, targets).ap) for p, s in scores.items()
    }
    return {
        "identical top-5 %": 100 * float(np.mean([o == 1.0 for o in overlap])),
        "near-ties aside %": 100 * float(np.mean(near)),
        "mean overlap %": 100 * float(np.mean(overlap)),
        "max |diff|": float(error.max()),
        "median |diff|": float(np.median(error)),
        "mAP fp32": maps["fp32"],
        "mAP other": maps[name],
        "gap 1%": float(np.quantile(gap, 0.01)),
        "gap 5%": float(np.quantile(gap, 0.05)),
    }


def print_row(name: str, other: str, row: dict) -> None:
    print(
        f"{name:15} {other:>7} {row['identical top-5 %']:>12.1f} "
        f"{row['near-ties aside %']:>12.1f} {row['mean overlap %']:>9.1f} "
        f"{row['max |diff|']:>9.4f} {row['median |diff|']:>8.4f} {row['mAP fp32']:>8.2f} "
        f"{row['mAP other']:>9.2f} {row['gap 1%']:>14.5f} {row['gap 5%']:>8.5f}",
        flush=True,
    )


def weight_only(model: object, work: Path) -> Path:
    """``model``'s image tower with int8 weights in blocks of 64 (MatMulNBits), int8 compute."""
    import onnx
    from onnxruntime.quantization import matmul_nbits_quantizer as nbits

    from mkt_tag import onnx_tower

    exported, quantized = work / "tower.onnx", work / "tower.nbits8.onnx"
    onnx_tower.export(model, exported)  # type: ignore[arg-type]
    settings = {"bits": 8, "block_size": 64, "is_symmetric": True, "accuracy_level": 4}
    quantizer = nbits.MatMulNBitsQuantizer(
        onnx.load(str(exported)),
        **settings,
        algo_config=nbits.DefaultWeightOnlyQuantConfig(**settings),
    )
    quantizer.process()
    quantizer.model.save_model_to_file(str(quantized), use_external_data_format=False)
    return quantized


def alternatives(world: Path, out: Path) -> None:
    """Weight-only int8: agreement on the MKT checkpoint, speed of ViT-B/16's tower."""
    import logging
    import tempfile

    from mkt_tag import datasets, onnx_tower, vocab
    from mkt_tag.tagging.tagger import Tagger

    logging.getLogger("onnxruntime.quantization").setLevel(logging.ERROR)
    labels = vocab.read_labels(world / "world" / "all.txt")
    data = datasets.load(world / "world" / "test.csv", labels.entries)
    model = str(world / "runs" / "mkt-stage2-seed0" / "best")
    cache = out / "cache"
    tagger = Tagger.load(model, device="cpu", precision="fp32", cache_dir=cache)
    fp32 = tagger.scores(data.paths, tagger.embed_labels(labels.entries))
    with tempfile.TemporaryDirectory() as work:
        tagger._onnx = onnx_tower.OnnxTower(weight_only(tagger.model, Path(work)))
        other = tagger.scores(data.paths, tagger.embed_labels(labels.entries))
    print_row("MKT on it", "w-only8", compare(fp32, other, data.targets, "w-only8"))
    _common.seed_hub_cache(cache)
    rates = {p: tower_speed(p, cache) for p in ("fp32", "int8")}
    tagger = Tagger.load(_common.BACKBONE, "cpu", "fp32", cache_dir=cache, download=False)
    with tempfile.TemporaryDirectory() as work:
        tower = onnx_tower.OnnxTower(weight_only(tagger.model, Path(work)))
        rates["weight-only int8"] = tower_speed("fp32", cache, tower=tower)
    print(
        "ViT-B/16 image tower, batch 16, best of 3: "
        + ", ".join(f"{p} {r:.2f} img/s" for p, r in rates.items())
    )


def tower_speed(
    precision: str, cache: Path, seconds: float = 10.0, tower: object | None = None
) -> float:
    import torch

    from mkt_tag.model import normalise_pixels
    from mkt_tag.tagging.tagger import Tagger

    tagger = Tagger.load(_common.BACKBONE, "cpu", precision, cache_dir=cache, download=False)
    tower = tower or tagger.image_tower  # on all of torch's threads, in either precision
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
            f"{'model':15} {'vs fp32':>7} {'top-5 same %':>12} {'ties aside %':>12} "
            f"{'overlap %':>9} {'max diff':>9} {'median':>8} {'mAP fp32':>8} {'mAP other':>9} "
            f"{'5th-6th gap 1%':>14} {'5%':>8}"
        )
        for name, model in models.items():
            for other in ("int8", "bf16"):  # bf16: what `auto` runs on CPUs that have it
                print_row(name, other, agreement(model, args.world, out / "cache", other))
    if "alternatives" in args.parts:
        alternatives(args.world, out)
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
