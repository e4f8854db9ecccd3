"""Shared fixtures: a tiny open_clip backbone (no downloads) and an isolated cache."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mkt_tag import auto_precision

DATA = Path(__file__).parent / "data"
TINY_CONFIG = DATA / "tiny-vit.json"

# Tests never touch the network: a model missing from the cache must fail at once.
os.environ["HF_HUB_OFFLINE"] = "1"
# Two threads, or one per worker when pytest-xdist runs two workers on two cores (-n 2).
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)


LAUNCHER_VARIABLES = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_COUNT",
    "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_STEP",
)


@pytest.fixture(autouse=True)
def no_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests run as one process: a torchrun or Slurm array around pytest would shard `tag`."""
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)


# The real test of whether ONNX Runtime is there, for the tests of `--precision auto` itself.
INT8_AVAILABLE = auto_precision.int8_available


@pytest.fixture(autouse=True, scope="session")
def auto_without_int8() -> Iterator[None]:
    """`--precision auto` as where ONNX Runtime is not installed: fp32 on CPUs without native
    bf16, so the suite's figures stay fp32's (the dev extra installs ONNX Runtime, and auto
    would pick int8). For the whole session, module fixtures included;
    tests/test_auto_precision.py puts ``INT8_AVAILABLE`` back."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(auto_precision, "int8_available", lambda: False)
        yield


@pytest.fixture(autouse=True)
def isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Every test gets its own empty mkt-tag cache (never the user's)."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("MKT_TAG_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny backbone in open_clip's `local-dir:` layout, with seeded random weights."""
    import open_clip
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("tiny-open-clip")
    arch = json.loads(TINY_CONFIG.read_text())
    torch.manual_seed(0)
    clip = open_clip.CLIP(**arch)
    save_file(
        {k: v.contiguous() for k, v in clip.state_dict().items()},
        str(folder / "open_clip_model.safetensors"),
    )
    (folder / "open_clip_config.json").write_text(
        json.dumps(
            {
                "model_cfg": arch,
                "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
            }
        )
    )
    return folder


@pytest.fixture(scope="session")
def tiny_id(tiny_model_dir: Path) -> str:
    return f"local-dir:{tiny_model_dir}"


def make_photo(
    path: Path, size: tuple[int, int] = (64, 48), seed: int = 0, fmt: str | None = None
) -> Path:
    """A small random RGB image file."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt)
    return path


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """A folder with five photos in mixed formats and one in a sub-folder."""
    folder = tmp_path / "photos"
    for i, name in enumerate(["a.jpg", "b.png", "c.webp", "d.bmp", "e.tiff"]):
        make_photo(folder / name, seed=i)
    make_photo(folder / "sub" / "f.jpg", seed=9)
    return folder


@pytest.fixture
def label_file(tmp_path: Path) -> Path:
    path = tmp_path / "labels.txt"
    path.write_text("# my labels\ncat\ndog\n\nbeach\nsunset\ntraffic light\n", encoding="utf-8")
    return path


def fill_deterministic(module: torch.nn.Module, seed: int = 0) -> None:
    """Overwrite every tensor from our own seeded generator, independent of open_clip's init."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, tensor in sorted(module.state_dict(keep_vars=True).items()):
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
