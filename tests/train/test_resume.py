"""Resume points survive a kill at any moment; metrics rows after the resume point go."""

from __future__ import annotations

import pytest
import torch

from mkt_tag.errors import MktTagError
from mkt_tag.train import resume as run_state


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
