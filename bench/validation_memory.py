"""Peak memory of stage-1 validation: does it grow with the validation set?

Each size runs `mkt_tag.train.train` (stage 1, one epoch of 8 training images, then the
epoch's validation on N images) in a fresh process and reports that process's peak RSS
(``ru_maxrss``). The backbone is tiny (2 blocks of width 64, random weights, no download)
but has ViT-B/16's token layout and embedding: 224-pixel images, 16-pixel patches (196),
512-dimensional projected tokens, so each image's features are as large as ViT-B/16's
(197 x 512 values: 197 KB in float16, 394 KB in float32). Validation that held every image's
features at once would grow by about 1 GB from 200 to 2,000 images.

Target (issue 15): the peak with 2,000 validation images within 1.2x of the peak with 200.

    python bench/validation_memory.py                     # 200 and 2,000 images
    python bench/validation_memory.py --sizes 200 2000 8000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

LABELS = ("red", "green", "blue", "round", "square", "striped", "dotted", "plain")
# ViT-B/16's token layout and embedding width, on a tiny tower (the features' size is what
# validation memory depends on, not the tower's depth).
ARCH = {
    "embed_dim": 512,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 2000], help="val images")
    parser.add_argument("--batch-size", type=int, default=32, help="images per batch [32]")
    parser.add_argument("--workers", type=int, default=0, help="decoding processes [0]")
    parser.add_argument("--work", type=Path, default=None, help="work dir [a temporary one]")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    return parser.parse_args()


def write_images(folder: Path, count: int) -> None:
    """``count`` small JPEG photos (blurred noise) and a CSV of random labels for them."""
    rng = np.random.default_rng(0)
    (folder / "img").mkdir(parents=True, exist_ok=True)
    lines = ["path,labels"]
    for number in range(count):
        coarse = rng.integers(0, 256, (14, 14, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((224, 224), Image.Resampling.BILINEAR)
        image.save(folder / "img" / f"{number}.jpg", quality=85)
        chosen = rng.choice(len(LABELS), size=int(rng.integers(1, 4)), replace=False)
        lines.append(f"img/{number}.jpg,{'|'.join(LABELS[i] for i in chosen)}")
    (folder / "all.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "labels.txt").write_text("\n".join(LABELS) + "\n", encoding="utf-8")
    (folder / "tiny-b16.json").write_text(json.dumps(ARCH), encoding="utf-8")


def subset(folder: Path, name: str, rows: range) -> Path:
    lines = (folder / "all.csv").read_text(encoding="utf-8").splitlines()
    path = folder / f"{name}.csv"
    path.write_text("\n".join([lines[0], *(lines[1 + i] for i in rows)]) + "\n", encoding="utf-8")
    return path


def child(work: Path, images: int, batch_size: int, workers: int) -> dict[str, Any]:
    """One run: stage 1 on 8 images for one epoch, validated on ``images`` (this process)."""
    import torch

    from mkt_tag.train import TrainConfig, train

    torch.manual_seed(0)
    out = work / f"run-{images}"
    shutil.rmtree(out, ignore_errors=True)
    settings = TrainConfig(
        data=str(subset(work, "train", range(8))),
        val=str(subset(work, f"val-{images}", range(8, 8 + images))),
        labels=str(work / "labels.txt"),
        out=str(out),
        model=str(work / "tiny-b16.json"),
        stage="1",
        epochs=1,
        warmup_epochs=0,
        batch_size=batch_size,
        workers=workers,
        device="cpu",
    )  # type: ignore[arg-type]
    started = time.perf_counter()
    result = train(settings)
    seconds = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    shutil.rmtree(out, ignore_errors=True)
    return {
        "val_images": images,
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "seconds": round(seconds, 1),
        "val_map": result.state.best_map,
    }


def main() -> None:
    args = parse_args()
    if args.child is not None:
        assert args.work is not None
        print(json.dumps(child(args.work, args.child, args.batch_size, args.workers)))
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="mkt-validation-memory-"))
    write_images(work, 8 + max(args.sizes))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MKT_TAG_CACHE": str(work / "cache")}
    rows = []
    for size in args.sizes:
        command = [sys.executable, __file__, "--child", str(size), "--work", str(work)]
        command += ["--batch-size", str(args.batch_size), "--workers", str(args.workers)]
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            raise SystemExit(f"failed with {size} images:\n{done.stderr[-3000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    print("| validation images | peak RSS MB | seconds | val mAP |")
    print("| ---: | ---: | ---: | ---: |")
    for row in rows:
        print(
            f"| {row['val_images']:,} | {row['peak_rss_mb']:,.0f} | {row['seconds']:.1f} "
            f"| {row['val_map']:.4f} |"
        )
    ratio = rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
    print(f"peak with {rows[-1]['val_images']:,} / with {rows[0]['val_images']:,}: {ratio:.2f}x")
    print(json.dumps({"rows": rows, "ratio": round(ratio, 3)}))


if __name__ == "__main__":
    main()
