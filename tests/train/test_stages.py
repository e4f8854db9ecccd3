"""What each stage trains: the schedule, the trainable blocks and their learning-rate scales."""

from __future__ import annotations

import itertools

import pytest

from mkt_tag import checkpoints
from mkt_tag.errors import MktTagError
from mkt_tag.model import MKT
from mkt_tag.train.settings import TrainConfig
from mkt_tag.train.stages import (
    Teacher,
    first_trainable_block,
    learning_rate,
    load_model,
    stage1_parameter_groups,
    trainable_names,
)
from tests.conftest import TINY_CONFIG


@pytest.fixture(scope="module")
def tiny() -> MKT:
    """The tiny backbone: 2 ViT blocks."""
    return checkpoints.load(str(TINY_CONFIG))


def test_learning_rate_warms_up_then_follows_half_a_cosine():
    rates = [learning_rate(s, total=10, warmup=2, base=1.0, minimum=0.1) for s in range(10)]
    assert rates[:2] == [0.5, 1.0]
    assert rates[2] == 1.0 and all(a >= b for a, b in itertools.pairwise(rates[2:]))
    assert learning_rate(10, 10, 2, 1.0, 0.1) == pytest.approx(0.1)
    assert learning_rate(6, 10, 2, 1.0, 0.1) == pytest.approx(0.55)  # half-way: the middle
    assert learning_rate(0, 4, 0, 1.0, 0.0) == 1.0


def test_trainable_blocks_must_fit_the_backbone(tiny):
    assert first_trainable_block(tiny.visual, 2) == 0
    assert first_trainable_block(tiny.visual, 1) == 1
    message = "trainable_blocks must be 1..2 for this backbone"
    for blocks in (0, 3):
        with pytest.raises(MktTagError, match=message):
            first_trainable_block(tiny.visual, blocks)
    too_many = TrainConfig(model=str(TINY_CONFIG), trainable_blocks=3)
    with pytest.raises(MktTagError, match=message):
        stage1_parameter_groups(tiny, too_many)
    with pytest.raises(MktTagError, match=message):
        Teacher(tiny.visual, 3)
    with pytest.raises(MktTagError, match=message):
        load_model(too_many)


def test_stage1_groups_scale_the_lr_per_block(tiny):
    groups = stage1_parameter_groups(tiny, TrainConfig(trainable_blocks=2, layer_decay=0.5))
    by_parameter = {id(p): g for g in groups for p in g["params"]}
    named = dict(tiny.named_parameters())
    for name, scale in [
        ("clip.visual.transformer.resblocks.0.mlp.c_fc.weight", 0.25),
        ("clip.visual.transformer.resblocks.1.attn.in_proj_weight", 0.5),
        ("clip.visual.proj", 1.0),
        ("clip.visual.ln_post.weight", 1.0),
    ]:
        assert by_parameter[id(named[name])]["lr_scale"] == scale, name
    bias = by_parameter[id(named["clip.visual.transformer.resblocks.1.attn.in_proj_bias"])]
    assert bias["weight_decay"] == 0.0
    assert by_parameter[id(named["clip.visual.proj"])]["weight_decay"] == 0.05
    assert id(named["clip.visual.conv1.weight"]) not in by_parameter


def test_trainable_names_of_each_stage(tiny):
    one_block = TrainConfig(trainable_blocks=1)
    stage1 = trainable_names(tiny, 1, one_block)
    assert "clip.visual.proj" in stage1 and "prompt.prefix" not in stage1
    assert not any(".resblocks.0." in name for name in stage1)
    assert any(".resblocks.0." in name for name in trainable_names(tiny, 1, TrainConfig()))
    assert trainable_names(tiny, 2, one_block) == [*stage1, "prompt.prefix", "prompt.suffix"]
