from __future__ import annotations

import json

import pytest
import torch

from mkt_tag import checkpoints
from mkt_tag.errors import CheckpointError
from tests.conftest import TINY_CONFIG


def _trained_names(model) -> list[str]:
    return [
        n
        for n in model.state_dict()
        if n.startswith(("clip.visual.ln_post", "clip.visual.proj", "prompt."))
    ]


def test_delta_checkpoint_round_trip(tmp_path, tiny_id):
    model = checkpoints.load(tiny_id)
    with torch.no_grad():
        model.clip.visual.proj.add_(1.0)
        model.prompt.prefix.mul_(2.0)
    model.config.prompt_context = True
    checkpoints.save(model, tmp_path / "ckpt", trained=_trained_names(model))
    config = json.loads((tmp_path / "ckpt" / "mkt_config.json").read_text())
    assert config["weights"] == "delta" and config["backbone"] == tiny_id
    loaded = checkpoints.load(tmp_path / "ckpt")
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    # only the trained tensors are stored
    from safetensors.torch import load_file

    stored = load_file(str(tmp_path / "ckpt" / "model.safetensors"))
    assert set(stored) == set(_trained_names(model))


def test_full_checkpoint_for_random_backbone(tmp_path):
    model = checkpoints.load(str(TINY_CONFIG))
    checkpoints.save(model, tmp_path / "full")
    loaded = checkpoints.load(tmp_path / "full")
    assert loaded.config.weights == "full"
    images = torch.randn(1, 3, 32, 32)
    labels = model.encode_labels(["cat"])
    with torch.no_grad():
        assert torch.equal(model(images, labels), loaded(images, labels))


def test_save_replaces_atomically(tmp_path):
    model = checkpoints.load(str(TINY_CONFIG))
    checkpoints.save(model, tmp_path / "c")
    checkpoints.save(model, tmp_path / "c")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_broken_checkpoints(tmp_path):
    model = checkpoints.load(str(TINY_CONFIG))
    checkpoints.save(model, tmp_path / "c")
    (tmp_path / "c" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="cannot read weights"):
        checkpoints.load(tmp_path / "c")
    (tmp_path / "c" / "mkt_config.json").write_text("{broken")
    with pytest.raises(CheckpointError, match="unreadable checkpoint config"):
        checkpoints.load(tmp_path / "c")
    (tmp_path / "c" / "mkt_config.json").write_text(json.dumps({"backbonez": "x"}))
    with pytest.raises(CheckpointError, match="unknown config keys"):
        checkpoints.load(tmp_path / "c")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not an mkt-tag checkpoint"):
        checkpoints.load(tmp_path / "empty")


def test_checkpoint_with_foreign_tensors_is_rejected(tmp_path):
    from safetensors.torch import save_file

    model = checkpoints.load(str(TINY_CONFIG))
    checkpoints.save(model, tmp_path / "c")
    save_file({"clip.visual.proj": torch.zeros(3, 3)}, str(tmp_path / "c" / "model.safetensors"))
    with pytest.raises(CheckpointError, match="has shape"):
        checkpoints.load(tmp_path / "c")
    save_file({"nonsense.weight": torch.zeros(3)}, str(tmp_path / "c" / "model.safetensors"))
    with pytest.raises(CheckpointError, match="unexpected tensors"):
        checkpoints.load(tmp_path / "c")


def test_save_never_replaces_a_folder_of_something_else(tmp_path):
    model = checkpoints.load(str(TINY_CONFIG))
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(CheckpointError, match="not an mkt-tag checkpoint"):
        checkpoints.save(model, photos)
    assert (photos / "holiday.jpg").read_bytes() == b"precious"
    (tmp_path / "empty").mkdir()
    checkpoints.save(model, tmp_path / "empty")  # an empty folder is fine
    assert checkpoints.is_checkpoint(tmp_path / "empty")


def test_checkpoint_folder_is_not_private(tmp_path):
    import os
    import stat

    model = checkpoints.load(str(TINY_CONFIG))
    checkpoints.save(model, tmp_path / "c")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "c").stat().st_mode) == 0o777 & ~umask


def test_config_round_trips_through_json(tmp_path, tiny_id):
    """Validation accepts every config mkt-tag writes, and reads back the same values."""
    from mkt_tag.config import ModelConfig
    from mkt_tag.paper_checkpoints import reference_preprocess

    for model in (checkpoints.load(tiny_id), checkpoints.load(str(TINY_CONFIG))):
        data = json.loads(json.dumps(model.config.to_dict()))
        assert ModelConfig.from_dict(data) == model.config
    paper = ModelConfig(top_k=16, streams="local", preprocess=reference_preprocess(224))
    assert ModelConfig.from_dict(json.loads(json.dumps(paper.to_dict()))) == paper


def test_large_finite_weights_are_not_mistaken_for_infinite(tmp_path):
    """The NaN check sums each tensor first; a sum that overflows must not refuse it."""
    from mkt_tag.checkpoints import _check_finite

    big = torch.full((4,), 60_000.0, dtype=torch.float16)  # sums to inf in fp16
    assert not bool(big.sum().isfinite())
    _check_finite({"big": big}, tmp_path / "model.safetensors")
    big[1] = float("nan")
    with pytest.raises(CheckpointError, match="big has NaN or infinite values"):
        _check_finite({"big": big}, tmp_path / "model.safetensors")
