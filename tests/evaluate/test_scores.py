"""The scores file: written through a temporary file that no error leaves behind."""

from __future__ import annotations

import numpy as np
import pytest

from mkt_tag.errors import OutputError
from mkt_tag.evaluate import scores as scores_module
from mkt_tag.evaluate.scores import ScoreSet, load_scores, save_scores


def score_set(value: float = 0.5) -> ScoreSet:
    return ScoreSet(
        scores=np.full((3, 2), value, dtype=np.float32),
        targets=np.int8([[1, -1], [-1, 1], [0, 1]]),
        labels=["cat", "dog"],
        paths=["a.jpg", "b.jpg", "c.jpg"],
        unseen=np.array([False, True]),
        model="handmade",
    )


def test_round_trip_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "deep" / "s.npz"
    save_scores(path, score_set())
    loaded = load_scores(path)
    assert np.array_equal(loaded.scores, score_set().scores)
    assert loaded.labels == ["cat", "dog"] and loaded.unseen.tolist() == [False, True]
    assert sorted(p.name for p in path.parent.iterdir()) == ["s.npz"]


@pytest.mark.parametrize("error", [RuntimeError("a bug"), KeyboardInterrupt(), OSError(28, "full")])
def test_any_error_removes_the_half_written_file(tmp_path, monkeypatch, error):
    path = tmp_path / "s.npz"
    save_scores(path, score_set(0.25))
    before = path.read_bytes()

    def half_then_fail(file, **arrays):
        file.write(b"PK half a zip")
        assert any(p.name.endswith(".tmp") for p in tmp_path.iterdir())  # streamed there
        raise error

    monkeypatch.setattr(scores_module.np, "savez", half_then_fail)
    expected = OutputError if isinstance(error, OSError) else type(error)
    with pytest.raises(expected):
        save_scores(path, score_set(0.75))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npz"]  # no .s.npz.PID.tmp
    assert path.read_bytes() == before  # the old file is untouched


def test_a_folder_that_cannot_be_made(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OutputError, match="cannot write"):
        save_scores(blocker / "s.npz", score_set())
