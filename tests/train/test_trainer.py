"""The training loop: learning-rate scales from the optimiser, stage 2's feature cache,
gradient accumulation and the epoch's mean losses."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from mkt_tag import datasets as data
from mkt_tag import vocab
from mkt_tag.train import TrainConfig, train
from mkt_tag.train import trainer as trainer_module
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


def test_an_uneven_last_step_averages_its_own_micro_batches(photo_set, tmp_path):
    """8 images in micro-batches of 3 with grad_accum 2 make steps of 3 + 3 and of 2 images:
    they train as batches of 6 and 2 do (the last step's loss is its one micro-batch's
    mean, not half of it)."""
    prompts = {}
    for name, batch, accum in (("accumulated", 3, 2), ("plain", 6, 1)):
        run = tmp_path / name
        settings = small_run(
            photo_set, run, stage="2", prompt_epochs=1, prompt_batch_size=batch, grad_accum=accum
        )
        result = train(TrainConfig(**settings, prompt_lr=1e-2))  # type: ignore[arg-type]
        assert result.state.total_steps == 2
        prompts[name] = load_file(str(run / "last" / "model.safetensors"))
    for key in ("prompt.prefix", "prompt.suffix"):
        mine, reference = prompts["accumulated"][key], prompts["plain"][key]
        torch.testing.assert_close(mine, reference, rtol=0, atol=1e-6, msg=key)


def test_epoch_losses_are_means_over_its_batches(photo_set, tmp_path, monkeypatch):
    """With grad_accum, each batch (micro-batch) counts once, whichever step it is part of."""
    recorded: list[dict[str, float]] = []
    original = trainer_module.global_mean

    def recording(parts: Any, group: Any) -> Any:
        loss, means = original(parts, group)
        recorded.append(means)
        return loss, means

    monkeypatch.setattr(trainer_module, "global_mean", recording)
    rows: list[dict[str, Any]] = []
    settings = small_run(
        photo_set, tmp_path / "run", stage="2", prompt_epochs=1, prompt_batch_size=3, grad_accum=2
    )
    report = lambda event, **row: rows.append(row) if event == "epoch_end" else None  # noqa: E731
    train(TrainConfig(**settings), report)  # type: ignore[arg-type]
    (row,) = rows
    first, second, last = (means["rank"] for means in recorded)
    assert row["rank_loss"] == pytest.approx((first + second + last) / 3)
    assert row["loss"] == row["rank_loss"]
    assert row["rank_loss"] != pytest.approx(((first + second) / 2 + last) / 2)  # not by step


def all_at_once_map(model_dir: Path, val: Path, labels: list[str]) -> float:
    """Validation mAP as it was computed before validation streamed: every image's features
    encoded first, then scored in one call."""
    from contextlib import nullcontext

    import numpy as np

    from mkt_tag import checkpoints
    from mkt_tag.evaluate import metrics
    from mkt_tag.model import ImageFeatures
    from mkt_tag.train import features as train_features
    from mkt_tag.train.labels import LabelTexts, plain_entries

    model = checkpoints.load(str(model_dir)).eval()
    data_set = data.load(val, labels)
    features = train_features.gather(
        train_features.encode(
            model, data_set.paths, 64, 0, torch.device("cpu"), nullcontext, _ignore, "val"
        )
    )
    texts = LabelTexts(plain_entries(labels))
    with torch.no_grad():
        candidates = texts.embeddings(model.encode_labels(texts.texts).float())
        scores = model.score(
            ImageFeatures(
                torch.from_numpy(features.global_.astype(np.float32)),
                torch.from_numpy(features.patches.astype(np.float32)),
            ),
            candidates,
        ).fused
        scores = texts.label_scores(scores).numpy()
    targets = data_set.targets.copy()
    targets[features.failed] = 0
    return metrics.mean_average_precision(metrics.average_precision(scores, targets).ap)


def _ignore(event: str, **details: object) -> None:
    pass


@pytest.mark.parametrize("stage", ["1", "2"])
def test_validation_scores_one_batch_at_a_time(photo_set, tmp_path, monkeypatch, stage):
    """Validation holds one batch of features at a time (stage 1: as they are encoded;
    stage 2: read from the stored ones), and its mAP is the all-at-once one (to 1e-6)."""
    import weakref

    from mkt_tag.train import features as train_features
    from tests.train.conftest import write_set

    val = write_set(tmp_path, "val", 10, offset=100)  # 3 batches of 4, 4 and 2 images
    held: list[int] = []  # per validation batch: how many earlier batches are still alive
    original = train_features.validation_map

    def watching(model, batches, labels, targets):  # type: ignore[no-untyped-def]
        alive: list[weakref.ref] = []

        def watched():  # type: ignore[no-untyped-def]
            for batch in batches:
                held.append(sum(ref() is not None for ref in alive))
                alive.append(weakref.ref(batch.patches))
                yield batch

        return original(model, watched(), labels, targets)

    monkeypatch.setattr(train_features, "validation_map", watching)
    run = tmp_path / "run"
    settings = small_run(photo_set, run, val=str(val), stage=stage, epochs=1, prompt_epochs=1)
    result = train(TrainConfig(**settings))  # type: ignore[arg-type]
    assert len(held) == 3 and max(held) <= 1  # the loop's last batch, while the next comes
    labels = vocab.read_labels(photo_set["labels"]).labels
    expected = all_at_once_map(run / "best", val, labels)
    assert result.state.best_map == pytest.approx(expected, abs=1e-6)
