"""Pretrain a tiny CLIP on the synthetic world's captions, and measure its zero-shot ability.

The model is an open_clip ``CLIP`` from a custom config (below): a ViT with class-token
pooling over an 8x8 grid of patches (8-pixel patches of the large-object world's 64-pixel
images, 16-pixel ones of the small-object world's 128-pixel images) and a small causal text
transformer with
open_clip's ``SimpleTokenizer`` vocabulary (49,408 tokens). It is trained from scratch with
CLIP's contrastive loss on image-caption pairs covering every concept, seen and unseen, and
saved in open_clip's ``local-dir:`` layout (``open_clip_config.json`` with ``model_cfg`` and
``preprocess_cfg``, and ``open_clip_model.safetensors``), so mkt-tag uses it as it would any
other backbone: ``--model local-dir:OUT``.

Zero-shot ability is reported as CLIP would be used: cosine similarity between the image
embedding and the prompt "There is a {concept} in the scene" (mkt-tag's default template),
giving per-concept presence mAP over the test images (all, seen and unseen concepts) and
top-1 accuracy on the test images holding a single object.

    python bench/synthetic/pretrain.py --out bench/out/synthetic/backbone
    python bench/synthetic/pretrain.py --world small --out bench/out/synthetic-small/backbone
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import world


def arch_for(layout: world.Layout) -> dict[str, Any]:
    """The backbone for a world's images: ~0.3M parameters in the ViT (8x8 patches of the
    layout's images), 3.4M in the text tower (mostly the 49,408-token embedding table, of which
    the captions use a few dozen rows)."""
    return {
        "embed_dim": 64,
        "quick_gelu": False,
        "vision_cfg": {
            "image_size": layout.size,
            "patch_size": layout.patch,
            "layers": 6,
            "width": 64,
            "head_width": 32,
        },
        "text_cfg": {
            "context_length": 32,
            "vocab_size": 49408,
            "width": 64,
            "heads": 2,
            "layers": 3,
        },
    }


ARCH = arch_for(world.LARGE)
# Per-channel statistics of the synthetic images (RGB in [0, 1]), recorded in
# ``preprocess_cfg`` so that mkt-tag normalises exactly as pretraining did.
MEAN = (0.57, 0.49, 0.47)
STD = (0.34, 0.28, 0.33)
TEMPLATE = "There is a {} in the scene"


@dataclass
class PretrainConfig:
    """How the backbone is pretrained."""

    images: int = 12000  # distinct pretraining images (each with 5 captions)
    steps: int = 3500  # optimiser steps (about 10 minutes on 2 idle cores)
    batch_size: int = 64  # image-caption pairs per step
    lr: float = 1.5e-3  # AdamW peak learning rate
    weight_decay: float = 0.1  # AdamW weight decay on matrices
    warmup: int = 200  # linear warm-up steps, then cosine to 0
    seed: int = 0  # initialisation, batch order, caption choice, augmentation
    threads: int = 2  # torch CPU threads


def _tokenize(captions: Sequence[Sequence[str]], context: int) -> Any:
    """All captions as token ids: N x captions x context (int32)."""
    import torch
    from open_clip.tokenizer import SimpleTokenizer

    tokenizer = SimpleTokenizer(context_length=context)
    flat = [c for per_image in captions for c in per_image]
    ids = tokenizer(flat).to(torch.int32)
    return ids.view(len(captions), -1, context)


def _normalise(batch: Any) -> Any:
    import torch

    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (batch.float() / 255 - mean) / std


def _augment(batch: Any, generator: Any) -> Any:
    """Random shifts of up to 4 pixels (edge padding): objects move, none is cut away."""
    import torch
    import torch.nn.functional as F

    pad = 4
    padded = F.pad(batch, (pad, pad, pad, pad), mode="replicate")
    out = torch.empty_like(batch)
    offsets = torch.randint(0, 2 * pad + 1, (batch.shape[0], 2), generator=generator)
    size = batch.shape[-1]
    for i, (dx, dy) in enumerate(offsets.tolist()):
        out[i] = padded[i, :, dy : dy + size, dx : dx + size]
    return out


def learning_rate(step: int, config: PretrainConfig) -> float:
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return config.lr * 0.5 * (1 + math.cos(math.pi * progress))


def pretrain(
    out: Path,
    config: PretrainConfig,
    arch: dict[str, Any] | None = None,
    log_every: int = 50,
    quiet: bool = False,
    watch: Sequence[world.Sample] = (),
    spec: world.Spec = world.DEFAULT,
) -> Path:
    """Train the tiny CLIP and save it as ``out/`` (open_clip ``local-dir:`` layout).

    With ``watch`` images, the zero-shot mAP on them is logged every ``log_every`` steps.
    """
    import open_clip
    import torch
    import torch.nn.functional as F

    arch = arch or arch_for(spec.layout)
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    started = time.perf_counter()
    images, captions = world.pretrain_arrays(config.images, spec)
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # N x 3 x H x W uint8
    tokens = _tokenize(captions, arch["text_cfg"]["context_length"])
    generated = time.perf_counter() - started

    model = open_clip.CLIP(**arch)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "embedding" in n]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    generator = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(len(pixels), generator=generator)
    cursor = 0
    model.train()
    log = []
    for step in range(config.steps):
        if cursor + config.batch_size > len(order):
            order, cursor = torch.randperm(len(pixels), generator=generator), 0
        rows = order[cursor : cursor + config.batch_size]
        cursor += config.batch_size
        which = torch.randint(0, tokens.shape[1], (len(rows),), generator=generator)
        text = tokens[rows, which].long()
        batch = _normalise(_augment(pixels[rows], generator))
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config)
        image_features, text_features, logit_scale = model(batch, text)[:3]
        logits = logit_scale * image_features @ text_features.T
        target = torch.arange(len(rows))
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():  # as CLIP: the temperature may not exceed 100
            model.logit_scale.clamp_(0, math.log(100))
        if (step + 1) % log_every == 0 or step + 1 == config.steps:
            seconds = time.perf_counter() - started
            entry = {"step": step + 1, "loss": round(loss.item(), 4), "seconds": round(seconds, 1)}
            if watch:
                model.eval()
                entry.update(
                    {k: round(v, 4) for k, v in scores(model, watch, spec).items() if "map" in k}
                )
                model.train()
            log.append(entry)
            if not quiet:
                print("  ".join(f"{k} {v}" for k, v in entry.items()), flush=True)
    save(model.eval(), out, arch)
    record = {
        "config": asdict(config),
        "arch": arch,
        "seconds": round(time.perf_counter() - started, 1),
        "generate_seconds": round(generated, 1),
        "log": log,
    }
    (out / "pretrain.json").write_text(json.dumps(record, indent=2) + "\n")
    return out


def save(model: Any, out: Path, arch: dict[str, Any]) -> None:
    """open_clip's ``local-dir:`` layout: config (model + preprocessing) and safetensors."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.detach().contiguous() for k, v in model.state_dict().items()},
        str(out / "open_clip_model.safetensors"),
    )
    config = {
        "model_cfg": arch,
        "preprocess_cfg": {
            "mean": list(MEAN),
            "std": list(STD),
            "interpolation": "bicubic",
            "resize_mode": "shortest",
        },
    }
    (out / "open_clip_config.json").write_text(json.dumps(config, indent=2) + "\n")


def load(folder: Path) -> Any:
    import open_clip
    from safetensors.torch import load_file

    config = json.loads((folder / "open_clip_config.json").read_text())
    model = open_clip.CLIP(**config["model_cfg"])
    model.load_state_dict(load_file(str(folder / "open_clip_model.safetensors")))
    return model.eval()


def record_zero_shot(
    folder: Path, test_images: int, spec: world.Spec = world.DEFAULT
) -> dict[str, Any]:
    """Score the saved backbone zero-shot on the first ``test_images`` test images (CLIP-style:
    presence mAP, top-1), add that to its ``pretrain.json`` as ``zero_shot``; the record."""
    test = list(world.samples(world.SPLIT_SEEDS["test"], test_images, spec))
    record_file = folder / "pretrain.json"
    record = json.loads(record_file.read_text())
    record["zero_shot"] = scores(load(folder), test, spec)
    record_file.write_text(json.dumps(record, indent=2) + "\n")
    return dict(record)


def scores(
    model: Any, samples: Sequence[world.Sample], spec: world.Spec = world.DEFAULT
) -> dict[str, Any]:
    """CLIP-style zero-shot scores of ``model`` on ``samples``: presence mAP, top-1."""
    import torch
    from open_clip.tokenizer import SimpleTokenizer

    from mkt_tag.evaluate import metrics

    context = model.context_length
    tokenizer = SimpleTokenizer(context_length=context)
    with torch.no_grad():
        text = model.encode_text(tokenizer([TEMPLATE.format(c) for c in spec.concepts]))
        pixels = torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2)
        image = torch.cat([model.encode_image(_normalise(b)) for b in pixels.split(256)])
        scores = (
            torch.nn.functional.normalize(image, dim=-1)
            @ torch.nn.functional.normalize(text, dim=-1).T
        ).numpy()
    targets = np.full(scores.shape, -1, dtype=np.int8)
    for i, sample in enumerate(samples):
        for label in sample.labels:
            targets[i, spec.concepts.index(label)] = 1
    ap = metrics.average_precision(scores, targets).ap
    n_seen = len(spec.seen)
    single = [i for i, s in enumerate(samples) if len(s.things) == 1]
    hits = [spec.concepts[int(scores[i].argmax())] == samples[i].labels[0] for i in single]
    top1 = float(np.mean(hits)) if hits else None  # the small-object world has none
    result = {
        "map_all": float(np.nanmean(ap)),
        "map_seen": float(np.nanmean(ap[:n_seen])),
        "map_unseen": float(np.nanmean(ap[n_seen:])),
        "top1_single": top1,
        "single_images": len(single),
        "chance_map": float((targets == 1).mean()),
        "per_concept_ap": {c: round(float(a), 4) for c, a in zip(spec.concepts, ap, strict=True)},
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench/out/synthetic/backbone"))
    parser.add_argument("--world", choices=sorted(world.WORLDS), default="large")
    defaults = PretrainConfig()
    for name, value in asdict(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    parser.add_argument("--test-images", type=int, default=world.DEFAULT_SIZES["test"])
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument(
        "--watch", type=int, default=0, help="Log zero-shot mAP on N validation images."
    )
    args = parser.parse_args()
    config = PretrainConfig(**{k: getattr(args, k) for k in asdict(defaults)})
    spec = world.WORLDS[args.world]
    watch = list(world.samples(world.SPLIT_SEEDS["val"], args.watch, spec)) if args.watch else []
    pretrain(args.out, config, log_every=args.log_every, watch=watch, spec=spec)
    record = record_zero_shot(args.out, args.test_images, spec)
    result = record["zero_shot"]
    top1 = ""
    if result["top1_single"] is not None:
        top1 = (
            f"; top-1 on {result['single_images']} single-object images "
            f"{result['top1_single']:.3f} (chance {1 / len(spec.concepts):.3f})"
        )
    print(
        f"zero-shot on {args.test_images} test images: mAP all {result['map_all']:.3f}, "
        f"seen {result['map_seen']:.3f}, unseen {result['map_unseen']:.3f} "
        f"(chance {result['chance_map']:.3f}){top1}"
    )
    print(f"wrote {args.out} in {record['seconds']:.0f}s")


if __name__ == "__main__":
    main()
