"""The scores file: written through a temporary file that no error leaves behind; each
stream's scores kept since format 2, older files still read."""

from __future__ import annotations

import numpy as np
import pytest

from mkt_tag.errors import InputFileError, OutputError
from mkt_tag.evaluate import scores as scores_module
from mkt_tag.evaluate.scores import SCORES_FORMAT, ScoreSet, load_scores, save_scores
from mkt_tag.evaluate.streams import StreamScores


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


# --- stream scores (format 2) ---------------------------------------------------------------


def with_streams() -> ScoreSet:
    """3 images, labels cat and dog, dog with an alias: 3 candidates."""
    scores = score_set()
    rng = np.random.default_rng(0)
    scores.stream_scores = StreamScores(
        rng.normal(size=(3, 3)).astype(np.float32),
        rng.normal(size=(3, 3)).astype(np.float32),
        np.array([0, 1, 1]),
        "both",
    )
    return scores


def test_stream_scores_round_trip(tmp_path):
    path = tmp_path / "s.npz"
    save_scores(path, with_streams())
    loaded = load_scores(path)
    assert loaded.format == SCORES_FORMAT == 2
    assert loaded.stream_scores is not None
    assert np.array_equal(loaded.stream_scores.global_, with_streams().stream_scores.global_)
    assert loaded.stream_scores.owner.tolist() == [0, 1, 1]
    assert np.array_equal(loaded.row_scores(np.array([1])), with_streams().row_scores([1]))
    # a subset keeps them, unless calibration asks for the fused scores alone
    rows = np.array([2, 0])
    assert np.array_equal(loaded.subset(rows).row_scores([0, 1]), loaded.row_scores([0, 1])[rows])
    assert loaded.subset(rows, streams=False).stream_scores is None


def test_without_stream_scores_every_row_reads_the_fused_scores(tmp_path):
    """A format-1 file (written by mkt-tag 0.2; earlier ones had no ``format``) still loads."""
    path = tmp_path / "old.npz"
    arrays = stored_arrays(score_set())
    for version in (None, 1):
        if version is None:
            del arrays["format"]
        else:
            arrays["format"] = np.array(version)
        np.savez(path, **arrays)
        loaded = load_scores(path)
        assert loaded.format == 1 and loaded.stream_scores is None
        assert np.array_equal(loaded.row_scores(np.array([True, False])), loaded.scores[:, :1])
        assert np.array_equal(loaded.row_scores([0, 1], keep=[1]), loaded.scores[:, [1]])


def stored_arrays(scores: ScoreSet) -> dict[str, np.ndarray]:
    """What ``save_scores`` writes, as arrays."""
    return {
        "format": np.array(1),
        "scores": scores.scores,
        "targets": scores.targets,
        "labels": np.array(scores.labels),
        "paths": np.array(scores.paths),
        "unseen": scores.unseen,
        "model": np.array(scores.model),
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": np.array(3)}, "newer mkt-tag \\(format 3"),
        ({"format": np.array([2, 2])}, "format must be one integer"),
        ({"streams": None}, "stream scores without streams"),
        ({"global_scores": np.zeros((2, 3), np.float32)}, "global_scores must be a 3 x K"),
        ({"local_scores": np.zeros((3, 2), np.float32)}, "local_scores must be floats"),
        ({"candidate_labels": np.array([0, 1])}, "candidate_labels must be 3 integers"),
        ({"candidate_labels": np.array([0, 0, 0])}, "each of the 2 labels a candidate"),
        ({"candidate_labels": np.array([0, 1, 5])}, "each of the 2 labels a candidate"),
        ({"candidate_labels": np.array([0, 1, -1])}, "each of the 2 labels a candidate"),
        ({"streams": np.array("neither")}, "streams must be one of"),
        ({"local_scores": np.full((3, 3), np.nan, np.float32)}, "contain NaN"),
    ],
)
def test_bad_stream_arrays_are_refused(tmp_path, change, message):
    path = tmp_path / "s.npz"
    save_scores(path, with_streams())
    with np.load(path) as file:
        arrays = {key: file[key] for key in file.files}
    for key, value in change.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    np.savez(path, **arrays)
    with pytest.raises(InputFileError, match=message):
        load_scores(path)


def test_stream_scores_must_fit_the_scores():
    scores = with_streams()
    streams = scores.stream_scores
    assert streams is not None
    with pytest.raises(ValueError, match="do not fit"):
        ScoreSet(
            scores.scores[:2], scores.targets[:2], scores.labels, scores.paths[:2],
            scores.unseen, stream_scores=streams,
        )  # fmt: skip
    with pytest.raises(ValueError, match="do not fit"):
        ScoreSet(
            scores.scores, scores.targets, scores.labels, scores.paths, scores.unseen,
            stream_scores=StreamScores(streams.global_, streams.local, np.array([0, 1, 2])),
        )  # fmt: skip
