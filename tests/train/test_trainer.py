"""The training loop: learning-rate scales from the optimiser, stage 2's feature cache."""

from __future__ import annotations

import math

import torch

from mkt_tag import datasets as data
from mkt_tag import vocab
from mkt_tag.train import TrainConfig, train
from mkt_tag.train.stages import learning_rate
from mkt_tag.train.trainer import Trainer
from tests.train.conftest import small_run


def saved_param_groups(run) -> list[dict]:
    saved = torch.load(run / "state" / "optimizer.pt", weights_only=True)
    return saved["optimizer"]["param_groups"]


def test_stage_1_steps_with_each_groups_lr_scale(photo_set, tmp_path):
    """Layer-wise decay reaches the optimiser: block i of L steps with lr * decay ** (L - i)."""
    run = tmp_path / "run"
    settings = small_run(photo_set, run, stage="1", lr=1e-2, min_lr=0.0, layer_decay=0.5)
    train(TrainConfig(**settings, max_steps=1))  # type: ignore[arg-type]
    groups = saved_param_groups(run)
    assert sorted({group["lr_scale"] for group in groups}) == [0.25, 0.5, 1.0]
    lr = learning_rate(0, total=4, warmup=2, base=1e-2, minimum=0.0)  # 2 steps an epoch
    assert lr == 5e-3
    for group in groups:
        assert group["lr"] == lr * group["lr_scale"]


def test_stage_2_steps_with_its_schedule_alone(photo_set, tmp_path):
    """Prompt tuning's one param group has no lr_scale: the schedule's lr, unscaled."""
    run = tmp_path / "run"
    settings = small_run(photo_set, run, stage="2", prompt_lr=1e-2, prompt_min_lr=0.0)
    train(TrainConfig(**settings, max_steps=2))  # type: ignore[arg-type]
    (group,) = saved_param_groups(run)
    assert "lr_scale" not in group
    assert group["lr"] == learning_rate(1, total=4, warmup=0, base=1e-2, minimum=0.0)
    assert group["lr"] == 0.5e-2 * (1 + math.cos(math.pi / 4))


def test_stage_2_reuses_cached_features(photo_set, tmp_path):
    labels = vocab.read_labels(photo_set["labels"]).labels
    train_set = data.load(photo_set["train"], labels, keep_unlabelled=False)
    val_set = data.load(photo_set["val"], labels)
    config = TrainConfig(
        **small_run(photo_set, tmp_path / "run", stage="2", prompt_epochs=3, max_steps=3)  # type: ignore[arg-type]
    )
    events: list[tuple[str, str]] = []

    def report(event: str, **info: object) -> None:
        if event == "features_start":
            events.append((event, str(info["name"])))

    Trainer(config, train_set, val_set, report).run()
    assert events == [("features_start", "train"), ("features_start", "val")]  # once each
    features = tmp_path / "run" / "features"
    stamps = {p.name: p.stat().st_mtime_ns for p in features.iterdir()}
    events.clear()
    config.max_steps = None
    state = Trainer(config, train_set, val_set, report).run()
    assert state.done == [2] and events == []  # resumed: nothing re-encoded
    assert {p.name: p.stat().st_mtime_ns for p in features.iterdir()} == stamps
