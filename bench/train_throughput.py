"""How fast does `mkt-tag train` train, and what does stage 2's feature cache save?

On ViT-B-16 with random weights (seeded into an offline cache; speed does not depend on the
values), batch 16, on whatever device is picked (CPU here):

- stage 1: images/s of the training steps (augmentation, frozen lower blocks, teacher, student
  top blocks and their backward), from the trainer itself;
- stage 2, mkt-tag: the one-off feature cache (every training image through the ViT once), then
  seconds per epoch (prompt context -> text tower -> scores on cached features);
- stage 2, reference-style baseline: each step runs the frozen ViT on the batch with autograd
  on through the vision tower (its weights require grad, as in the reference, which never turns
  them off) and back-propagates through it; images are decoded and preprocessed once beforehand,
  which only flatters the baseline.

Target: a stage-2 epoch at least 10x cheaper than the baseline's. Prints a table, writes JSON.

    python bench/train_throughput.py                          # default: 64 photos, 20 labels
    python bench/train_throughput.py --images 256 --labels 100 --baseline-epochs 2
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import _common

SIZE = (640, 480)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=64, help="training photos [64]")
    parser.add_argument("--val-images", type=int, default=8, help="validation photos [8]")
    parser.add_argument("--labels", type=int, default=20, help="seen labels [20]")
    parser.add_argument("--batch-size", type=int, default=16, help="images per step [16]")
    parser.add_argument("--epochs", type=int, default=1, help="stage 1 epochs [1]")
    parser.add_argument("--prompt-epochs", type=int, default=2, help="stage 2 epochs [2]")
    parser.add_argument("--baseline-epochs", type=int, default=1, help="baseline epochs [1]")
    parser.add_argument("--device", default="auto", help="mkt-tag --device [auto]")
    parser.add_argument("--workers", type=int, default=None, help="decoding processes [auto]")
    parser.add_argument("--threads", type=int, default=None, help="torch threads [torch's]")
    parser.add_argument("--out", type=Path, default=_common.OUT, help="work dir [bench/out]")
    return parser.parse_args()


def write_dataset(folder: Path, photos: list[Path], labels: list[str], seed: int) -> Path:
    """A CSV giving each photo 1-3 random labels (the values do not matter for speed)."""
    rng = random.Random(seed)
    lines = ["path,labels"]
    for photo in photos:
        lines.append(f"{photo},{'|'.join(rng.sample(labels, rng.randint(1, 3)))}")
    path = folder / f"data-{seed}.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class Clock:
    """Trainer events with their times: epochs, steps and the feature cache."""

    def __init__(self) -> None:
        self.events: list[tuple[float, str, dict[str, Any]]] = []

    def __call__(self, event: str, **info: Any) -> None:
        if event != "features_step":
            self.events.append((time.perf_counter(), event, info))
        if event in ("epoch_end", "features_start", "stage_done"):
            detail = {k: v for k, v in info.items() if k in ("stage", "epoch", "name", "loss")}
            print(f"  {event} {detail}", flush=True)

    def epochs(self, stage: int) -> list[dict[str, float]]:
        """Per epoch: training-step seconds, whole epoch seconds, images/s (trainer's own)."""
        found = []
        start = last_step = 0.0
        for at, event, info in self.events:
            if info.get("stage") != stage:
                continue
            if event == "epoch_start":
                start = last_step = at
            elif event == "step":
                last_step = at
            elif event == "epoch_end":
                found.append(
                    {
                        "steps_s": last_step - start,
                        "epoch_s": at - start,
                        "images_per_s": info["images_per_s"],
                    }
                )
        return found

    def features_seconds(self, name: str) -> float:
        starts = [at for at, e, i in self.events if e == "features_start" and i["name"] == name]
        later = [at for at, e, _ in self.events if starts and at > starts[0] and e != "step"]
        return (later[0] - starts[0]) if later else float("nan")


def run_mkt_tag(args: argparse.Namespace, data: Path, val: Path, labels: Path) -> dict[str, Any]:
    from mkt_tag import datasets, vocab
    from mkt_tag.train.settings import TrainConfig
    from mkt_tag.train.trainer import Trainer

    run = args.out / "train-run"
    shutil.rmtree(run, ignore_errors=True)
    config = TrainConfig(
        data=str(data),
        labels=str(labels),
        val=str(val),
        out=str(run),
        model=_common.BACKBONE,
        epochs=args.epochs,
        warmup_epochs=0,
        prompt_epochs=args.prompt_epochs,
        batch_size=args.batch_size,
        prompt_batch_size=args.batch_size,
        device=args.device,
        workers=args.workers,
    )
    names = vocab.read_labels(labels).labels
    train_set = datasets.load(data, names, keep_unlabelled=False)
    val_set = datasets.load(val, names)
    clock = Clock()
    other = _common.OtherLoad()
    started = time.perf_counter()
    Trainer(config, train_set, val_set, clock).run()
    stage1, stage2 = clock.epochs(1), clock.epochs(2)
    return {
        "stage1_images_per_s": sum(e["images_per_s"] for e in stage1) / len(stage1),
        "stage1_epochs": stage1,
        "stage2_feature_cache_s": clock.features_seconds("train"),
        "stage2_epochs": stage2,
        "stage2_epoch_steps_s": sum(e["steps_s"] for e in stage2) / len(stage2),
        "stage2_epoch_s": sum(e["epoch_s"] for e in stage2) / len(stage2),
        "wall_s": time.perf_counter() - started,
        "other_cpus": other.cpus(),
        "run_folder_mb": sum(p.stat().st_size for p in run.rglob("*") if p.is_file()) / 1e6,
        "feature_cache_mb": sum(p.stat().st_size for p in (run / "features").iterdir()) / 1e6,
    }


def run_baseline(args: argparse.Namespace, data: Path, labels: Path) -> dict[str, Any]:
    """Stage 2 as the reference runs it: ViT forward and backward inside every step."""
    import numpy as np
    import torch

    from mkt_tag import checkpoints, datasets, vocab
    from mkt_tag.devices import pick_device
    from mkt_tag.images import load_image, prepare
    from mkt_tag.model import mkt_scores, normalise_pixels
    from mkt_tag.train.losses import ranking_loss

    device = pick_device(args.device)
    model = checkpoints.load(_common.BACKBONE).to(device)
    names = vocab.read_labels(labels).labels
    train_set = datasets.load(data, names, keep_unlabelled=False)
    preprocess = model.config.preprocess
    arrays = [prepare(load_image(p, 2 * preprocess.resize), preprocess) for p in train_set.paths]
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    targets = torch.from_numpy(train_set.targets.astype(np.int8))
    tokens = model.tokenize(names)
    model.requires_grad_(False)
    model.visual.requires_grad_(True)  # as in the reference: never switched off
    model.prompt.requires_grad_(True)
    optimizer = torch.optim.AdamW(model.prompt.parameters(), lr=1e-3, weight_decay=0.05)
    epochs = []
    other = _common.OtherLoad()
    for epoch in range(args.baseline_epochs):
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(epoch))
        started = time.perf_counter()
        for start in range(0, len(order), args.batch_size):
            rows = order[start : start + args.batch_size]
            batch = normalise_pixels(images[rows].to(device), preprocess, torch.float32)
            features = model.encode_images(batch)
            label_embeddings = model.prompt.encode(model.clip, tokens)
            scores = mkt_scores(features, label_embeddings, model.config.top_k).fused
            total, count = ranking_loss(scores, targets[rows].to(device))
            (total / count.clamp(min=1)).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - started
        epochs.append(seconds)
        print(f"  baseline epoch {epoch + 1}: {seconds:.1f} s", flush=True)
    return {
        "stage2_epoch_s": sum(epochs) / len(epochs),
        "epochs_s": epochs,
        "other_cpus": other.cpus(),
    }


def report(figures: dict[str, Any]) -> None:
    ours, base, n = figures["mkt_tag"], figures["baseline"], figures["settings"]["images"]
    epoch_ratio = base["stage2_epoch_s"] / ours["stage2_epoch_steps_s"]
    prompt_epochs = figures["settings"]["prompt_epochs"]
    with_cache = ours["stage2_feature_cache_s"] + prompt_epochs * ours["stage2_epoch_s"]
    rows = [
        ("stage 1, training steps", f"{ours['stage1_images_per_s']:.2f} img/s", ""),
        ("stage 2 feature cache (once)", f"{ours['stage2_feature_cache_s']:.1f} s", f"{n} images"),
        ("stage 2 epoch, mkt-tag (steps)", f"{ours['stage2_epoch_steps_s']:.2f} s", ""),
        (
            "stage 2 epoch, mkt-tag (all)",
            f"{ours['stage2_epoch_s']:.2f} s",
            "+ validation, checkpoints",
        ),
        ("stage 2 epoch, baseline", f"{base['stage2_epoch_s']:.1f} s", "ViT fwd+bwd every step"),
        ("epoch speed-up", f"{epoch_ratio:.0f}x", "target >= 10x"),
        (
            f"stage 2, {prompt_epochs} epochs incl. cache",
            f"{with_cache:.1f} s",
            f"baseline {prompt_epochs * base['stage2_epoch_s']:.1f} s",
        ),
        ("feature cache on disk", f"{ours['feature_cache_mb']:.1f} MB", f"{n} + val images"),
    ]
    width = max(len(r[0]) for r in rows)
    print("\n" + f"{'':{width}}  value        note")
    for name, value, note in rows:
        print(f"{name:{width}}  {value:11}  {note}")
    figures["stage2_epoch_speedup"] = epoch_ratio


def main() -> None:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ["HF_HUB_OFFLINE"] = "1"  # before huggingface_hub is imported
    os.environ["MKT_TAG_CACHE"] = str(args.out / "cache")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    folder = args.out / "train"
    folder.mkdir(parents=True, exist_ok=True)
    print(f"photos: generating or reusing in {folder}", flush=True)
    photos = _common.synthetic_photos(folder / "images", args.images + args.val_images, SIZE)
    labels = _common.write_labels(folder / "labels.txt", args.labels)
    names = _common.labels(args.labels)
    data = write_dataset(folder, photos[: args.images], names, seed=0)
    val = write_dataset(folder, photos[args.images :], names, seed=1)
    print("model: seeding random ViT-B-16 weights into the offline cache", flush=True)
    _common.seed_hub_cache(args.out / "cache")

    figures: dict[str, Any] = {"machine": _common.machine_info(), "settings": vars(args).copy()}
    figures["settings"]["out"] = str(args.out)
    print(
        f"mkt-tag train: stage 1 ({args.epochs} epoch), stage 2 ({args.prompt_epochs})", flush=True
    )
    figures["mkt_tag"] = run_mkt_tag(args, data, val, labels)
    print("baseline: stage 2 with the ViT inside every step", flush=True)
    figures["baseline"] = run_baseline(args, data, labels)
    report(figures)
    path = args.out / "train_throughput.json"
    path.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(f"figures: {path}")


if __name__ == "__main__":
    sys.exit(main())
