"""Fixtures for the training tests: one torch thread, and a small labelled photo set."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import TINY_CONFIG, make_photo

LABELS = ("red", "green", "blue")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model's many small operations run fastest on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_set(root: Path, name: str, n: int, offset: int = 0) -> Path:
    """``n`` photos and a CSV giving each a label (and every 3rd 'shape', not a label)."""
    rows = ["path,labels"]
    for i in range(offset, offset + n):
        make_photo(root / "img" / f"{i}.png", size=(40, 36), seed=i)
        rows.append(f"img/{i}.png,{LABELS[i % 3]}{'|shape' if i % 3 == 0 else ''}")
    path = root / f"{name}.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="session")
def photo_set(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """8 training photos, 4 validation photos, a label file of 3 labels."""
    root = tmp_path_factory.mktemp("photo-set")
    labels = root / "labels.txt"
    labels.write_text("\n".join(LABELS) + "\n")
    return {
        "train": write_set(root, "train", 8),
        "val": write_set(root, "val", 4, offset=100),
        "labels": labels,
        "root": root,
    }


def small_run(photo_set: dict[str, Path], out: Path, **changes: object) -> dict[str, object]:
    """TrainConfig fields of a run of a few seconds on the tiny backbone (4 steps a stage)."""
    return {
        "data": str(photo_set["train"]),
        "val": str(photo_set["val"]),
        "labels": str(photo_set["labels"]),
        "out": str(out),
        "model": str(TINY_CONFIG),
        "epochs": 2,
        "warmup_epochs": 1,
        "prompt_epochs": 2,
        "batch_size": 4,
        "prompt_batch_size": 4,
        "workers": 0,
        "device": "cpu",
        **changes,
    }
