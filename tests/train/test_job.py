"""The training flow from Python: settings and their rules, warnings as events, a whole run."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from mkt_tag import checkpoints
from mkt_tag.errors import InputFileError, MktTagError
from mkt_tag.train import (
    COMMAND_LINE,
    SettingsError,
    TrainConfig,
    TrainResult,
    UsageError,
    resolve_settings,
    train,
)
from tests.conftest import TINY_CONFIG
from tests.train.conftest import small_run, write_set

Events = list[tuple[str, dict[str, Any]]]


def recorder(events: Events, stop_at: str | None = None) -> Any:
    """A report callback that keeps every event, and ends the run at ``stop_at``."""

    def report(event: str, **details: Any) -> None:
        events.append((event, details))
        if event == stop_at:
            raise EndOfTest

    return report


class EndOfTest(Exception):
    pass


# --- a whole run --------------------------------------------------------------------------


def test_train_from_python(photo_set, tmp_path, monkeypatch, capsys):
    """Relative paths as a user types them; the result names the checkpoints; nothing printed."""
    monkeypatch.chdir(photo_set["root"])
    settings = TrainConfig(**small_run(photo_set, tmp_path / "run"))  # type: ignore[arg-type]
    settings.data, settings.val, settings.labels = "train.csv", "val.csv", "labels.txt"
    events: Events = []
    result = train(settings, recorder(events))
    run = tmp_path / "run"
    assert isinstance(result, TrainResult) and result.finished
    assert (result.run_dir, result.best, result.last) == (run, run / "best", run / "last")
    assert result.state.done == [1, 2] and result.state.total_steps == 8
    assert result.state.best.startswith("stage ") and 0 <= result.state.best_map <= 1
    saved = json.loads((run / "train_config.json").read_text())
    assert saved["data"] == str(photo_set["train"]) and saved["val"] == str(photo_set["val"])
    assert checkpoints.load(result.last).config.prompt_context is True
    names = [event for event, _ in events]
    assert names.index("data_loaded") < names.index("epoch_start")
    assert names.count("epoch_end") == 4 and names.count("stage_done") == 2
    assert "stopped" not in names
    loaded = dict(events)["data_loaded"]
    assert loaded == {"train": 8, "val": 4, "labels": 3, "run_dir": str(run)}
    assert capsys.readouterr() == ("", "")  # the library reports, the CLI prints


def test_training_again_continues_the_same_run_only(photo_set, tmp_path):
    run = tmp_path / "run"
    settings = TrainConfig(**small_run(photo_set, run, max_steps=3))  # type: ignore[arg-type]
    events: Events = []
    stopped = train(settings, recorder(events))
    assert not stopped.finished and stopped.state.total_steps == 3
    assert ("stopped", {"step": 3}) in events
    assert stopped.best is not None and stopped.last is not None  # epoch 1 (2 steps) ended
    finished = train(TrainConfig(**small_run(photo_set, run)))  # type: ignore[arg-type]
    assert finished.finished and finished.state.total_steps == 8
    assert not finished.already_finished
    rows = (run / "metrics.csv").read_text().splitlines()[1:]
    assert [row.split(",")[:2] for row in rows] == [["1", "1"], ["1", "2"], ["2", "1"], ["2", "2"]]

    events.clear()  # a finished run: nothing is read, reported or trained
    again = train(TrainConfig(**small_run(photo_set, run)), recorder(events))  # type: ignore[arg-type]
    assert again.finished and again.already_finished and events == []
    assert (again.state, again.best, again.last) == (finished.state, run / "best", run / "last")
    assert (run / "metrics.csv").read_text().splitlines()[1:] == rows

    other = TrainConfig(**small_run(photo_set, run, epochs=3))  # type: ignore[arg-type]
    with pytest.raises(MktTagError, match="already holds a run: continue it with --resume"):
        train(other)
    (run / "train_config.json").write_text("{broken")  # unreadable: not this run either
    with pytest.raises(MktTagError, match="already holds a run"):
        train(TrainConfig(**small_run(photo_set, run)))  # type: ignore[arg-type]


def test_train_checks_its_settings_and_folder_first(photo_set, tmp_path):
    with pytest.raises(SettingsError, match="settings: epochs must be at least 1"):
        train(TrainConfig(**small_run(photo_set, tmp_path / "a", epochs=0)))  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="give --data and --labels"):
        train(TrainConfig(out=str(tmp_path / "b")))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    with pytest.raises(MktTagError, match="is not an empty folder"):
        train(TrainConfig(**small_run(photo_set, tmp_path / "full")))  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]


# --- warnings reach the caller as events --------------------------------------------------


def test_warnings_come_as_events_before_training(photo_set, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("red\ngreen\nred\nblue\n")
    data = write_set(tmp_path, "train", 6)
    with data.open("a") as handle:
        handle.write("img/gone.png,red\n")
    val = tmp_path / "val.csv"  # only labels outside the vocabulary: no positive at all
    val.write_text("path,labels\nimg/0.png,shape\nimg/1.png,shape\n")
    run = tmp_path / "run"
    settings = small_run(photo_set, run, data=str(data), val=str(val), labels=str(labels))
    events: Events = []
    with pytest.raises(EndOfTest):
        train(TrainConfig(**settings), recorder(events, stop_at="data_loaded"))  # type: ignore[arg-type]
    warnings = [details["message"] for event, details in events if event == "warning"]
    assert warnings == [
        f"{labels}:3: duplicate label 'red' (same as 'red' on line 1), ignored",
        f"{data}: 1 labels not in the vocabulary (ignored), e.g. 'shape'",
        f"{data}: 1 rows whose image is missing (skipped), e.g. {tmp_path / 'img' / 'gone.png'}",
        f"{val}: 1 labels not in the vocabulary (ignored), e.g. 'shape'",
        "no validation image has a positive label: best/ will be the last epoch",
    ]
    assert events[-1] == ("data_loaded", {"train": 6, "val": 2, "labels": 3, "run_dir": str(run)})
    assert not run.exists()  # stopped before the trainer made the folder


def test_a_held_out_share_reports_only_the_data_file(photo_set, tmp_path):
    settings = small_run(photo_set, tmp_path / "run", val=None, val_fraction=0.25)
    events: Events = []
    with pytest.raises(EndOfTest):
        train(TrainConfig(**settings), recorder(events, stop_at="data_loaded"))  # type: ignore[arg-type]
    warnings = [details["message"] for event, details in events if event == "warning"]
    assert warnings == [
        f"{photo_set['train']}: 1 labels not in the vocabulary (ignored), e.g. 'shape'"
    ]
    assert events[-1][1]["train"] == 6 and events[-1][1]["val"] == 2


# --- resolve_settings ---------------------------------------------------------------------


def test_defaults_then_config_file_then_flags(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "conf" / "train.toml"
    config.parent.mkdir()
    config.write_text('[train]\ndata = "train.csv"\nlabels = "l.txt"\nepochs = 3\nlr = 0.01\n')
    settings = resolve_settings({"epochs": 5, "out": "runs/x"}, config)
    assert settings.epochs == 5 and settings.lr == 0.01 and settings.batch_size == 64
    assert settings.data == str(tmp_path / "conf" / "train.csv")  # relative to the file
    assert settings.out == str(tmp_path / "runs" / "x")  # absolute: resumes from anywhere
    assert resolve_settings({"data": "d.csv", "labels": "l.txt"}).out == str(
        tmp_path / "runs" / "mkt"
    )


def test_flag_errors_name_the_command_line(tmp_path):
    with pytest.raises(SettingsError) as caught:
        resolve_settings({"data": "d.csv", "labels": "l.txt", "separator": ""})
    assert str(caught.value) == "command line: --separator must not be empty"
    assert str(caught.value.path) == COMMAND_LINE
    config = tmp_path / "train.toml"
    config.write_text("epochs = 0\n")
    with pytest.raises(SettingsError) as caught:
        resolve_settings({"data": "d.csv", "labels": "l.txt"}, config)
    assert caught.value.path == config
    with pytest.raises(InputFileError, match="file not found"):
        resolve_settings({}, tmp_path / "nope.toml")


def test_the_default_warm_up_fits_short_runs():
    """The paper's 2 warm-up epochs where they leave some cosine; fewer in shorter runs."""
    inputs = {"data": "d.csv", "labels": "l.txt"}
    for epochs, warmup in [(1, 0), (2, 1), (3, 2), (20, 2)]:
        settings = resolve_settings({**inputs, "epochs": epochs})
        assert settings.warmup_epochs is None and settings.warmup() == warmup, epochs
    assert resolve_settings({**inputs, "epochs": 1, "warmup_epochs": 1}).warmup() == 1
    assert TrainConfig(epochs=4, warmup_epochs=0).warmup() == 0


def test_messages_name_settings_as_the_user_wrote_them(tmp_path):
    """A flag by its flag, a config file's key by its key (and file)."""
    inputs = {"data": "d.csv", "labels": "l.txt"}
    with pytest.raises(SettingsError) as caught:
        resolve_settings({**inputs, "epochs": 2, "warmup_epochs": 3})
    assert str(caught.value) == "command line: --warmup-epochs must be between 0 and --epochs (2)"
    with pytest.raises(SettingsError) as caught:
        resolve_settings({**inputs, "val_fraction": 2.0, "max_steps": 0})
    assert str(caught.value) == (
        "command line: --val-fraction must be between 0 and 1; --max-steps must be at least 1"
    )
    config = tmp_path / "train.toml"
    config.write_text("warmup-epochs = 30\n")
    with pytest.raises(SettingsError) as caught:
        resolve_settings(inputs, config)
    assert str(caught.value) == f"{config}: warmup-epochs must be between 0 and epochs (20)"
    config.write_text("warmup_epochs = 3\n")  # fine in the file; the flag makes it impossible
    with pytest.raises(SettingsError) as caught:
        resolve_settings({**inputs, "epochs": 2}, config)
    assert str(caught.value) == (
        f"command line: warmup_epochs ({config}) must be between 0 and --epochs (2)"
    )
    assert resolve_settings({**inputs, "epochs": 2, "warmup_epochs": 1}, config).warmup() == 1
    with pytest.raises(SettingsError) as caught:
        TrainConfig(epochs=2, warmup_epochs=3).validate()
    assert str(caught.value) == "settings: warmup_epochs must be between 0 and epochs (2)"


def test_a_new_run_needs_data_labels_and_a_free_folder(tmp_path):
    for flags in ({"labels": "l.txt"}, {"data": "d.csv"}, {}):
        with pytest.raises(UsageError) as caught:
            resolve_settings({**flags, "out": str(tmp_path / "r")})
        assert str(caught.value) == "give --data and --labels (or set them in --config)"
    inputs = {"data": "d.csv", "labels": "l.txt"}
    held = tmp_path / "held"
    held.mkdir()
    TrainConfig(**inputs).save(held)
    with pytest.raises(MktTagError) as caught:
        resolve_settings({**inputs, "out": str(held)})
    assert str(caught.value) == (
        f"{held} already holds a run: continue it with --resume {held}, or choose another --out"
    )
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "photo.jpg").write_text("x")
    (tmp_path / "file").write_text("x")
    for name in ("full", "file"):
        with pytest.raises(MktTagError) as caught:
            resolve_settings({**inputs, "out": str(tmp_path / name)})
        assert str(caught.value) == (
            f"{tmp_path / name} exists and is not an empty folder: choose another --out"
        )
    (tmp_path / "empty").mkdir()
    assert resolve_settings({**inputs, "out": str(tmp_path / "empty")}).out == str(
        tmp_path / "empty"
    )


def test_resume_takes_the_saved_settings_and_three_flags(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    TrainConfig(data="/d.csv", labels="/l.txt", out="/old", epochs=7, max_steps=2).save(run)
    settings = resolve_settings({"device": "cpu", "workers": 0, "max_steps": 9}, resume=run)
    assert (settings.epochs, settings.out, settings.data) == (7, str(run), "/d.csv")
    assert (settings.device, settings.workers, settings.max_steps) == ("cpu", 0, 9)
    assert resolve_settings(resume=run).max_steps is None  # not carried over
    message = (
        "--resume continues a run with its saved settings; only --device, "
        "--workers and --max-steps may be given with it"
    )
    with pytest.raises(UsageError) as caught:
        resolve_settings({"epochs": 5}, resume=run)
    assert str(caught.value) == message
    with pytest.raises(UsageError) as caught:
        resolve_settings({}, tmp_path / "x.toml", resume=run)
    assert str(caught.value) == message
    with pytest.raises(InputFileError, match="not a training run"):
        resolve_settings(resume=tmp_path)


def test_a_resumed_run_is_the_same_run(tmp_path):
    """What resolve_settings gives for --resume is what train accepts for that folder."""
    from mkt_tag.train.job import _same_run

    run = tmp_path / "run"
    run.mkdir()
    saved = TrainConfig(data="/d.csv", labels="/l.txt", out=str(run), model=str(TINY_CONFIG))
    saved.save(run)
    resumed = resolve_settings({"max_steps": 1, "device": "cpu"}, resume=run)
    assert _same_run(run, resumed)
    moved = tmp_path / "moved"
    os.rename(run, moved)  # a run folder may move
    assert _same_run(moved, resolve_settings(resume=moved))
    assert not _same_run(moved, resolve_settings(resume=moved).updated({"lr": 1.0}, "test"))
    assert not _same_run(tmp_path / "nothing", saved)
