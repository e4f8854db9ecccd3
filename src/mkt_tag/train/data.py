"""What training feeds the model: the epoch order, augmented images, eval-time features.

Everything random is derived from (seed, epoch, image index), never from hidden global state,
so that a resumed run and a run split across processes see exactly the same batches.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from mkt_tag.config import PreprocessConfig
from mkt_tag.errors import ImageLoadError, MktTagError
from mkt_tag.images import INTERPOLATIONS, load_image


class EpochSampler(torch.utils.data.Sampler[int]):
    """A seeded permutation per epoch, cut into this process's share, from batch ``start``.

    ``batch_size`` is the global batch: with ``world`` processes each takes every
    ``world``-th index in batches of ``batch_size / world``, so step ``s`` of all processes
    together covers exactly the images of step ``s`` of a single-process run. The permutation
    is padded (repeating its start) to a multiple of ``world`` only, so that every process
    gets an equal share; a single process is never padded.
    """

    def __init__(
        self, size: int, seed: int, batch_size: int, rank: int = 0, world: int = 1
    ) -> None:
        if batch_size % world:
            raise MktTagError(
                f"batch size {batch_size} cannot be split evenly over {world} processes: "
                f"use a multiple of {world}"
            )
        self.size = size
        self.seed = seed
        self.batch_size = batch_size // world  # per process
        self.rank = rank
        self.world = world
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = epoch
        self.start_batch = start_batch

    def global_order(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        padded = math.ceil(self.size / self.world) * self.world
        return (order * math.ceil(padded / max(1, self.size)))[:padded]

    def __iter__(self) -> Iterator[int]:
        mine = self.global_order()[self.rank :: self.world]
        return iter(mine[self.start_batch * self.batch_size :])

    def __len__(self) -> int:
        per_rank = math.ceil(self.size / self.world)
        return max(0, per_rank - self.start_batch * self.batch_size)

    def batches_per_epoch(self) -> int:
        return math.ceil(math.ceil(self.size / self.world) / self.batch_size)


def train_transform(preprocess: PreprocessConfig, augment: bool) -> Any:
    """MKT's training augmentation: random resized crop (scale 0.08-1), flip, RandAugment m9."""
    import torchvision.transforms as T
    from timm.data import rand_augment_transform

    resample = INTERPOLATIONS[preprocess.interpolation]
    steps: list[Any] = []
    if augment:
        mean = tuple(round(255 * m) for m in preprocess.mean)
        steps = [
            T.RandomResizedCrop(
                preprocess.image_size,
                scale=(0.08, 1.0),
                interpolation=T.InterpolationMode(preprocess.interpolation),
            ),
            T.RandomHorizontalFlip(0.5),
            rand_augment_transform(
                "rand-m9-mstd0.5", {"img_mean": mean, "interpolation": resample}
            ),
        ]
    else:
        steps = [
            T.Resize(
                preprocess.resize, interpolation=T.InterpolationMode(preprocess.interpolation)
            ),
            T.CenterCrop(preprocess.image_size),
        ]
    return T.Compose([*steps, T.PILToTensor()])


def seed_everything_for(seed: int, epoch: int, index: int) -> None:
    """Seed the global generators that torchvision and timm transforms draw from."""
    value = (seed * 1_000_003 + epoch) * 10_000_019 + index
    random.seed(value)
    np.random.seed(value % 2**32)
    torch.manual_seed(value % 2**63)


Item = tuple[int, torch.Tensor, torch.Tensor, str]  # index, uint8 image, targets, error


class AugmentedImages(torch.utils.data.Dataset):
    """Training images, augmented reproducibly.

    A file that fails to load gives a black image and the reason: batches keep their size, so
    every process of a data-parallel run takes the same steps, and the losses ignore the row.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        targets: np.ndarray,
        preprocess: PreprocessConfig,
        seed: int,
        augment: bool = True,
    ) -> None:
        self.paths = list(paths)
        self.targets = torch.from_numpy(targets.astype(np.int8))
        self.transform = train_transform(preprocess, augment)
        self.min_side = 2 * preprocess.resize
        self.image_size = preprocess.image_size
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.paths)

    def path(self, index: int) -> Path:
        return self.paths[index]

    @staticmethod
    def collate(items: list[Item]) -> dict[str, Any]:
        return collate(items)

    def __getitem__(self, index: int) -> Item:
        try:
            image: Image.Image = load_image(self.paths[index], self.min_side)
        except ImageLoadError as error:  # reported by the trainer, once per file
            reason = error.reason
        except Exception as error:
            reason = f"cannot decode ({type(error).__name__}: {error})"
        else:
            seed_everything_for(self.seed, self.epoch, index)
            return index, self.transform(image), self.targets[index], ""
        blank = torch.zeros((3, self.image_size, self.image_size), dtype=torch.uint8)
        return index, blank, self.targets[index], reason


def collate(items: list[Item]) -> dict[str, Any]:
    """Stack a batch; rows whose image failed get targets 0 (ignored) and ``valid`` False."""
    valid = torch.tensor([not error for *_, error in items], dtype=torch.bool)
    targets = torch.stack([target for _, _, target, _ in items])
    return {
        "index": torch.tensor([index for index, *_ in items], dtype=torch.long),
        "images": torch.stack([image for _, image, _, _ in items]),
        "targets": targets * valid[:, None].to(targets.dtype),
        "valid": valid,
        "failed": [(index, error) for index, _, _, error in items if error],
    }


class FeatureRows(torch.utils.data.Dataset):
    """Rows of precomputed image features (memory-mapped float16), for stage 2."""

    def __init__(self, features: dict[str, np.ndarray], targets: np.ndarray) -> None:
        self.features = features
        self.targets = torch.from_numpy(targets.astype(np.int8))
        self.epoch = 0  # the same rows every epoch: nothing is augmented

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> int:
        return index

    def path(self, index: int) -> str:
        return f"row {index}"

    def collate(self, indices: list[int]) -> dict[str, Any]:
        rows = np.asarray(indices)
        return {
            "index": torch.from_numpy(rows),
            "global": torch.from_numpy(np.asarray(self.features["global"][rows], np.float32)),
            "patches": torch.from_numpy(np.asarray(self.features["patches"][rows], np.float32)),
            "targets": self.targets[rows],
            "valid": torch.ones(len(rows), dtype=torch.bool),
            "failed": [],
        }
