"""Image features at eval preprocessing, for validation and for stage 2's feature cache.

Stage 2 freezes the whole vision side, so each image's features (global embedding and
projected patch tokens) are computed once and stored in the run folder as float16 ``.npy``
files, memory-mapped by every epoch: about ``(1 + P) * D * 2`` bytes per image (197 KiB for
ViT-B/16: 197 tokens x 512 x 2 bytes). A small JSON file beside them records which images and
which weights they belong to; anything else is recomputed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from mkt_tag.evaluate import metrics
from mkt_tag.files import atomic_write_text
from mkt_tag.images import Decoded, ImageFiles
from mkt_tag.model import MKT, ImageFeatures, normalise_pixels
from mkt_tag.train.labels import LabelTexts

Report = Callable[..., None]


@dataclass
class StoredFeatures:
    """A data set's image features as stored in the run folder (stage 2, validation): global
    (N x D) and patch (N x P x D) features, and the rows whose image failed."""

    global_: np.ndarray
    patches: np.ndarray
    failed: list[int]


@dataclass
class FeatureBatch:
    """One batch of ``encode`` (or of stored features): float16 global (B x D) and
    patch (B x P x D) features of consecutive images, and which of them failed (their rows
    in the whole set; their features are zeros)."""

    global_: np.ndarray
    patches: np.ndarray
    failed: list[int]


def weights_fingerprint(module: nn.Module) -> str:
    """A hash of every tensor of ``module``: features are only reused for the same weights."""
    digest = hashlib.sha1()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@torch.inference_mode()
def encode(
    model: MKT,
    paths: Sequence[Path],
    batch_size: int,
    workers: int,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager[Any]],
    report: Report,
    name: str,
) -> Iterator[FeatureBatch]:
    """Features of every image, batch by batch in order (only one batch in memory at once);
    a file that cannot be read gets zeros, listed in its batch's ``failed``."""
    model.eval()
    preprocess = model.config.preprocess
    loader = torch.utils.data.DataLoader[Decoded](
        cast("torch.utils.data.Dataset[Decoded]", ImageFiles(paths, preprocess)),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=list,
    )
    blank = np.zeros((preprocess.image_size, preprocess.image_size, 3), np.uint8)
    report("features_start", name=name, images=len(paths))
    for items in loader:
        bad = [(index, reason) for index, array, reason in items if array is None]
        if bad:
            report(
                "bad_images",
                paths=[str(paths[i]) for i, _ in bad],
                reasons=[reason for _, reason in bad],
            )
        arrays = [array if array is not None else blank for _, array, _ in items]
        batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).to(device)
        with autocast():
            features = model.encode_images(normalise_pixels(batch, preprocess, torch.float32))
        yield FeatureBatch(
            features.global_.float().cpu().numpy().astype(np.float16),
            features.patches.float().cpu().numpy().astype(np.float16),
            [index for index, _ in bad],
        )
        report("features_step", name=name, images=len(items))


def gather(batches: Iterable[FeatureBatch]) -> StoredFeatures:
    """Every batch's features in one array each (stage 2 stores them)."""
    parts = list(batches)
    return StoredFeatures(
        np.concatenate([batch.global_ for batch in parts]),
        np.concatenate([batch.patches for batch in parts]),
        [index for batch in parts for index in batch.failed],
    )


def stored_batches(features: StoredFeatures, batch_size: int) -> Iterator[FeatureBatch]:
    """Stored (memory-mapped) features, ``batch_size`` images at a time."""
    for start in range(0, len(features.global_), batch_size):
        stop = start + batch_size
        yield FeatureBatch(
            features.global_[start:stop],
            features.patches[start:stop],
            [index for index in features.failed if start <= index < stop],
        )


def cached(
    folder: Path, name: str, key: dict[str, Any], compute: Callable[[], StoredFeatures]
) -> bool:
    """Compute and store features ``name`` unless ``folder`` has them for this ``key``.

    Returns whether they were computed. Files are written under temporary names and renamed,
    the key file last: a kill leaves either the old set or none.
    """
    paths = _paths(folder, name)
    key = json.loads(json.dumps(key))  # as it reads back (tuples become lists)
    try:
        if json.loads(paths["key"].read_text(encoding="utf-8"))["key"] == key:
            return False
    except (OSError, ValueError, KeyError, TypeError):
        pass
    folder.mkdir(parents=True, exist_ok=True)
    paths["key"].unlink(missing_ok=True)
    features = compute()
    for part, array in (("global", features.global_), ("patches", features.patches)):
        partial = paths[part].with_suffix(".partial.npy")
        np.save(partial, array)
        partial.replace(paths[part])
    atomic_write_text(paths["key"], json.dumps({"key": key, "failed": features.failed}) + "\n")
    return True


def read(folder: Path, name: str) -> StoredFeatures:
    """Stored features, memory-mapped (nothing is read until used)."""
    paths = _paths(folder, name)
    failed = json.loads(paths["key"].read_text(encoding="utf-8"))["failed"]
    return StoredFeatures(
        np.load(paths["global"], mmap_mode="r"), np.load(paths["patches"], mmap_mode="r"), failed
    )


def paths_fingerprint(paths: Sequence[Path]) -> str:
    return hashlib.sha1("\n".join(str(p) for p in paths).encode()).hexdigest()


def _paths(folder: Path, name: str) -> dict[str, Path]:
    return {
        "global": folder / f"{name}_global.npy",
        "patches": folder / f"{name}_patches.npy",
        "key": folder / f"{name}.json",
    }


@torch.inference_mode()
def validation_map(
    model: MKT, batches: Iterable[FeatureBatch], labels: LabelTexts, targets: np.ndarray
) -> float:
    """mAP over the labels with a validation positive, scored as `eval` scores them (each
    label's phrasings and aliases); unreadable images left out.

    ``batches`` (``encode``, ``stored_batches``) cover the images in order; each is
    scored as it comes and let go, so memory holds one batch of features and the N x labels
    scores, however large the validation set.
    """
    device = model.visual.proj.device
    candidates = labels.embeddings(model.encode_labels(labels.texts).float())
    scores = np.zeros((len(targets), len(labels)), dtype=np.float32)
    targets = targets.copy()
    row = 0
    for batch in batches:
        fused = model.score(
            ImageFeatures(
                torch.from_numpy(np.asarray(batch.global_, np.float32)).to(device),
                torch.from_numpy(np.asarray(batch.patches, np.float32)).to(device),
            ),
            candidates,
        ).fused
        scores[row : row + len(batch.global_)] = labels.label_scores(fused).float().cpu().numpy()
        targets[batch.failed] = 0
        row += len(batch.global_)
    if row != len(targets):
        raise ValueError(f"features of {row} images for {len(targets)} targets")
    per_label = metrics.average_precision(scores, targets)
    return metrics.mean_average_precision(per_label.ap)
