"""Settings: types, a TOML file's relative paths, absolute paths, a run's saved settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from mkt_tag.train.settings import SettingsError, TrainConfig, read_run, read_toml


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
