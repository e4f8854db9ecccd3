"""The pieces of training on their own: data order, schedule, losses, settings, resume state."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mkt_tag.errors import MktTagError
from mkt_tag.train import features as train_features
from mkt_tag.train import resume as run_state
from mkt_tag.train.data import EpochSampler, collate
from mkt_tag.train.distributed import Distributed
from mkt_tag.train.losses import distillation_loss, global_mean, ranking_loss
from mkt_tag.train.settings import SettingsError, TrainConfig, read_run, read_toml
from mkt_tag.train.stages import learning_rate

# --- data order ---------------------------------------------------------------------------


def batches(sampler: EpochSampler) -> list[list[int]]:
    order = list(sampler)
    size = sampler.batch_size
    return [order[i : i + size] for i in range(0, len(order), size)]


@pytest.mark.parametrize("size", [16, 17, 24])
def test_processes_together_take_the_single_process_batches(size):
    single = EpochSampler(size, seed=3, batch_size=8)
    single.set_epoch(2)
    ranks = [EpochSampler(size, seed=3, batch_size=8, rank=r, world=2) for r in range(2)]
    for sampler in ranks:
        sampler.set_epoch(2)
    assert all(s.batch_size == 4 for s in ranks)
    assert single.batches_per_epoch() == ranks[0].batches_per_epoch() == math.ceil(size / 8)
    for step, expected in enumerate(batches(single)):
        together = sorted(batches(ranks[0])[step] + batches(ranks[1])[step])
        if size % 2 == 0:
            assert together == sorted(expected)
        else:  # padded by repeating the epoch's first index, only so that shares are equal
            assert set(together) >= set(expected) and len(together) == len(expected) + (
                step == len(batches(single)) - 1
            )


def test_epochs_differ_and_repeat_with_the_seed():
    sampler = EpochSampler(20, seed=1, batch_size=4)
    sampler.set_epoch(0)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first and sorted(sampler) == list(range(20))
    again = EpochSampler(20, seed=1, batch_size=4)
    again.set_epoch(0)
    assert list(again) == first
    assert list(EpochSampler(20, seed=2, batch_size=4)) != first


def test_resuming_mid_epoch_skips_the_batches_done():
    sampler = EpochSampler(10, seed=0, batch_size=4)
    sampler.set_epoch(1)
    whole = list(sampler)
    sampler.set_epoch(1, start_batch=2)
    assert list(sampler) == whole[8:] and len(sampler) == 2


def test_global_batch_must_split_evenly():
    with pytest.raises(MktTagError, match="batch size 6 cannot be split evenly over 4"):
        EpochSampler(10, seed=0, batch_size=6, world=4)


def test_collate_keeps_failed_rows_as_ignored_blanks():
    good = torch.full((3, 2, 2), 7, dtype=torch.uint8)
    blank = torch.zeros((3, 2, 2), dtype=torch.uint8)
    target = torch.tensor([1, -1], dtype=torch.int8)
    batch = collate([(4, good, target, ""), (9, blank, target, "truncated")])
    assert batch["index"].tolist() == [4, 9] and batch["failed"] == [(9, "truncated")]
    assert batch["valid"].tolist() == [True, False]
    assert batch["targets"].tolist() == [[1, -1], [0, 0]]
    assert batch["images"].shape == (2, 3, 2, 2)


# --- schedule and losses ------------------------------------------------------------------


def test_learning_rate_warms_up_then_follows_half_a_cosine():
    rates = [learning_rate(s, total=10, warmup=2, base=1.0, minimum=0.1) for s in range(10)]
    assert rates[:2] == [0.5, 1.0]
    assert rates[2] == 1.0 and all(a >= b for a, b in itertools.pairwise(rates[2:]))
    assert learning_rate(10, 10, 2, 1.0, 0.1) == pytest.approx(0.1)
    assert learning_rate(6, 10, 2, 1.0, 0.1) == pytest.approx(0.55)  # half-way: the middle
    assert learning_rate(0, 4, 0, 1.0, 0.0) == 1.0


def test_ranking_loss_by_hand():
    scores = torch.tensor(
        [
            [0.9, 0.1, 0.5, 0.0],  # pos 0 (vs 1: 0.2, vs 2: 0.6), label 3 unknown
            [0.0, 0.3, 0.2, 0.9],  # no positive: not counted
            [0.5, 0.5, 0.5, 0.5],  # pos 1, negatives 0, 2: margins 1 each -> mean 1
        ],
        requires_grad=True,
    )
    targets = torch.tensor([[1, -1, -1, 0], [-1, -1, -1, -1], [-1, 1, -1, 0]])
    total, count = ranking_loss(scores, targets)
    assert int(count) == 2
    assert float(total.detach()) == pytest.approx((0.2 + 0.6) / 2 + 1.0)
    total.backward()
    assert scores.grad is not None and float(scores.grad[1].abs().sum()) == 0
    assert float(scores.grad[0, 3]) == 0  # unknown labels take no part


def test_ranking_loss_without_any_positive_still_has_a_graph():
    scores = torch.zeros(2, 3, requires_grad=True)
    total, count = ranking_loss(scores, -torch.ones(2, 3))
    assert float(total.detach()) == 0 and int(count) == 0
    total.backward()  # every process of a DDP run must be able to run backward


def test_distillation_leaves_out_failed_images():
    student, teacher = torch.ones(3, 4), torch.zeros(3, 4)
    assert [int(v) for v in distillation_loss(student, teacher)] == [12, 12]
    total, count = distillation_loss(student, teacher, torch.tensor([True, False, True]))
    assert (float(total), int(count)) == (8.0, 8)


def test_global_mean_alone():
    parts = {
        "rank": (torch.tensor(3.0, requires_grad=True), torch.tensor(2)),
        "distill": (torch.tensor(1.0), torch.tensor(0)),  # nothing counted: divided by 1
    }
    loss, means = global_mean(parts, Distributed())
    assert float(loss.detach()) == pytest.approx(2.5) and means == {"rank": 1.5, "distill": 1.0}


# --- settings -----------------------------------------------------------------------------


def test_settings_types_are_checked_and_coerced():
    config = TrainConfig().updated(
        {"lr": 1, "stage": 2, "max-steps": 5, "workers": None, "val": "v.csv"}, "test"
    )
    assert config.lr == 1.0 and isinstance(config.lr, float)
    assert config.stage == "2" and config.max_steps == 5 and config.val == "v.csv"
    for changes, message in [
        ({"epochs": 1.5}, "epochs must be a whole number"),
        ({"epochs": True}, "epochs must be a whole number"),
        ({"strict": "yes"}, "strict must be true or false"),
        ({"workers": "2"}, "workers must be a whole number"),
        ({"data": None}, "data must be text"),
        ({"device": "tpu"}, "device must be one of auto, cpu, cuda, mps"),
        ({"nope": 1}, "unknown setting 'nope'"),
    ]:
        with pytest.raises(SettingsError, match=message):
            TrainConfig().updated(changes, "test")


def test_paths_in_a_config_file_are_relative_to_it(tmp_path):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "ckpt").mkdir()
    settings = tmp_path / "conf" / "train.toml"
    settings.write_text(
        'data = "../data/train.csv"\nlabels = "/abs/labels.txt"\nmodel = "ckpt"\n'
        'images_root = "~/photos"\n'
    )
    values = read_toml(settings)
    assert values["data"] == str(tmp_path / "data" / "train.csv")
    assert values["labels"] == "/abs/labels.txt"
    assert values["model"] == str(tmp_path / "conf" / "ckpt")
    assert values["images_root"] == str(Path("~/photos").expanduser())
    settings.write_text('model = "ViT-B-16:openai"\n')
    assert read_toml(settings) == {"model": "ViT-B-16:openai"}


def test_absolute_paths_for_the_saved_settings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ckpt").mkdir()
    config = TrainConfig(data="a/../train.csv", labels="l.txt", model="ckpt").with_absolute_paths()
    assert config.data == str(tmp_path / "train.csv") and config.out == str(tmp_path / "runs/mkt")
    assert config.model == str(tmp_path / "ckpt") and config.val is None
    assert TrainConfig(model="ViT-B-16:openai").with_absolute_paths().model == "ViT-B-16:openai"


def test_read_run_follows_a_moved_folder_and_drops_max_steps(tmp_path):
    TrainConfig(data="d.csv", labels="l.txt", out="/old/place", max_steps=3).save(tmp_path)
    config = read_run(tmp_path)
    assert config.out == str(tmp_path) and config.max_steps is None and config.data == "d.csv"


# --- resume state and the feature cache ---------------------------------------------------


def test_state_round_trip_and_recovery_after_a_torn_swap(tmp_path):
    state = run_state.ResumeState(stage=2, epoch=1, batch=3, step=9, total_steps=20, done=[1])
    tensors = {"prompt.prefix": torch.arange(6.0).reshape(2, 3)}
    run_state.save(tmp_path, state, tensors, {"optimizer": {"x": torch.ones(2)}})
    (tmp_path / "state").rename(tmp_path / ".state.old")  # killed between the two renames
    (tmp_path / ".best.k2j4").mkdir()  # killed while writing a checkpoint
    loaded, restored = run_state.load(tmp_path)  # type: ignore[misc]
    assert loaded == state and torch.equal(restored["prompt.prefix"], tensors["prompt.prefix"])
    assert torch.equal(
        run_state.load_optimizer(tmp_path, torch.device("cpu"))["optimizer"]["x"], torch.ones(2)
    )  # type: ignore[index]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]
    assert run_state.load(tmp_path / "nothing") is None


def test_unreadable_state_is_a_clear_error(tmp_path):
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "state.json").write_text('{"stage": 1, "surprise": 2}')
    with pytest.raises(MktTagError, match="cannot resume"):
        run_state.load(tmp_path)


def test_metrics_rows_after_the_resume_point_are_dropped(tmp_path):
    for stage, epoch in [(1, 1), (1, 2), (1, 3), (2, 1)]:
        run_state.append_metrics(tmp_path, {"stage": stage, "epoch": epoch, "loss": 0.5})
    run_state.trim_metrics(tmp_path, run_state.ResumeState(stage=1, epoch=2))
    lines = (tmp_path / run_state.METRICS_FILE).read_text().splitlines()
    assert lines[0] == ",".join(run_state.METRIC_COLUMNS)
    assert [line.split(",")[:2] for line in lines[1:]] == [["1", "1"], ["1", "2"]]


def test_feature_cache_is_keyed_by_images_and_weights(tmp_path):
    calls = []

    def compute() -> train_features.Features:
        calls.append(1)
        return train_features.Features(np.ones((2, 4), np.float16), np.ones((2, 3, 4)), [1])

    key = {"images": "abc", "weights": "w1", "mean": (0.5, 0.5)}
    assert train_features.cached(tmp_path, "train", key, compute) is True
    assert train_features.cached(tmp_path, "train", dict(key), compute) is False
    assert train_features.cached(tmp_path, "train", {**key, "weights": "w2"}, compute) is True
    assert len(calls) == 2
    features = train_features.read(tmp_path, "train")
    assert features.patches.shape == (2, 3, 4) and features.failed == [1]
    assert json.loads((tmp_path / "train.json").read_text())["key"]["weights"] == "w2"


def test_weights_fingerprint_sees_any_change():
    layer = torch.nn.Linear(3, 2)
    before = train_features.weights_fingerprint(layer)
    assert train_features.weights_fingerprint(layer) == before
    with torch.no_grad():
        layer.bias[0] += 1e-6
    assert train_features.weights_fingerprint(layer) != before
