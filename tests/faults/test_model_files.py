"""Fault injection: hostile or broken model files, and a first run without network.

Issue "Nothing lost and nothing silently wrong", items 8 (checkpoint folders and backbone
configs) and 13 (offline first run). Each test names its fault; each failed before the fix.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from mkt_tag import checkpoints, hub
from mkt_tag.cli import app
from mkt_tag.config import CONFIG_VERSION, MAX_LAYERS
from mkt_tag.errors import EXIT_ERROR, CheckpointError, ModelError, ModelNotCachedError
from tests.conftest import TINY_CONFIG, make_photo

runner = CliRunner()


@pytest.fixture(scope="module")
def full_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sound checkpoint with every tensor stored ("full"), on the tiny random backbone."""
    folder = tmp_path_factory.mktemp("full") / "ckpt"
    checkpoints.save(checkpoints.load(str(TINY_CONFIG)), folder)
    return folder


def broken_copy(
    source: Path,
    target: Path,
    config: Callable[[dict[str, Any]], None] | None = None,
    tensors: Callable[[dict[str, torch.Tensor]], None] | None = None,
) -> Path:
    """A copy of checkpoint ``source`` with its config and/or tensors edited."""
    shutil.copytree(source, target)
    if config is not None:
        data = json.loads((target / checkpoints.CONFIG_FILE).read_text())
        config(data)
        (target / checkpoints.CONFIG_FILE).write_text(json.dumps(data))
    if tensors is not None:
        stored = load_file(str(target / checkpoints.WEIGHTS_FILE))
        tensors(stored)
        save_file(stored, str(target / checkpoints.WEIGHTS_FILE))
    return target


def load_fails(folder: Path, match: str) -> str:
    """Loading ``folder`` raises a CheckpointError naming its config or weights file."""
    with pytest.raises(CheckpointError, match=match) as info:
        checkpoints.load(folder)
    message = str(info.value)
    assert str(folder) in message and "\n" not in message
    return message


# --- item 8: checkpoint folders -----------------------------------------------------------


def test_top_k_as_text_is_a_clear_error(full_checkpoint, tmp_path):
    """Fault: ``"top_k": "sixteen"`` loaded, then crashed with a traceback while tagging."""
    folder = broken_copy(
        full_checkpoint, tmp_path / "c", config=lambda c: c.update(top_k="sixteen")
    )
    message = load_fails(folder, "top_k")
    assert checkpoints.CONFIG_FILE in message and "'sixteen'" in message


def test_top_k_negative_is_refused(full_checkpoint, tmp_path):
    """Fault: ``"top_k": -5`` was accepted silently (and scored with one patch)."""
    folder = broken_copy(full_checkpoint, tmp_path / "c", config=lambda c: c.update(top_k=-5))
    load_fails(folder, "top_k must be at least 1")


def test_newer_config_version_asks_for_an_upgrade(full_checkpoint, tmp_path):
    """Fault: ``"version": 99`` (a checkpoint from a future mkt-tag) was read as version 1."""
    folder = broken_copy(full_checkpoint, tmp_path / "c", config=lambda c: c.update(version=99))
    message = load_fails(folder, "newer mkt-tag")
    assert "upgrade mkt-tag" in message and str(CONFIG_VERSION) in message


def test_huge_layer_count_fails_at_once(full_checkpoint, tmp_path):
    """Fault: ``"layers": 200000`` in the architecture allocated for minutes (then hung)."""

    def huge(config: dict[str, Any]) -> None:
        config["arch"]["vision_cfg"]["layers"] = 200_000

    folder = broken_copy(full_checkpoint, tmp_path / "c", config=huge)
    started = time.perf_counter()
    message = load_fails(folder, "vision_cfg.layers")
    assert time.perf_counter() - started < 1
    assert "200000" in message and str(MAX_LAYERS) in message


def test_too_many_parameters_fails_at_once(full_checkpoint, tmp_path):
    """Fault: sizes each within reason but together far too big (an 80-layer, 8192-wide
    tower: 65 billion parameters) were built regardless."""

    def big(config: dict[str, Any]) -> None:
        config["arch"]["vision_cfg"].update(layers=80, width=8192)

    folder = broken_copy(full_checkpoint, tmp_path / "c", config=big)
    started = time.perf_counter()
    load_fails(folder, "billion parameters")
    assert time.perf_counter() - started < 1


def test_nan_weights_are_refused(full_checkpoint, tmp_path):
    """Fault: NaN weights tagged every image with an empty tag list, exit code 0 (and the
    next run skipped those images as done)."""

    def nan(tensors: dict[str, torch.Tensor]) -> None:
        tensors["clip.visual.proj"] = torch.full_like(tensors["clip.visual.proj"], math.nan)

    folder = broken_copy(full_checkpoint, tmp_path / "c", tensors=nan)
    message = load_fails(folder, "NaN or infinite")
    assert checkpoints.WEIGHTS_FILE in message and "clip.visual.proj" in message


def test_nan_weights_tag_nothing_and_exit_non_zero(full_checkpoint, tmp_path, label_file):
    """Fault, seen from the command line: NaN weights gave empty tags and exit code 0."""

    def nan(tensors: dict[str, torch.Tensor]) -> None:
        tensors["clip.visual.proj"][0, 0] = math.inf

    folder = broken_copy(full_checkpoint, tmp_path / "c", tensors=nan)
    photo = make_photo(tmp_path / "a.jpg")
    out = tmp_path / "tags.csv"
    args = ["tag", str(photo), "--labels", str(label_file), "--model", str(folder), "-o", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == EXIT_ERROR
    assert result.stderr.count("\n") == 1 and "NaN or infinite" in result.stderr
    assert not out.exists()


def test_integer_tensors_are_refused(full_checkpoint, tmp_path):
    """Fault: int32 tensors were cast to float silently (weights rounded to integers)."""

    def to_int(tensors: dict[str, torch.Tensor]) -> None:
        tensors["clip.visual.proj"] = tensors["clip.visual.proj"].to(torch.int32)

    folder = broken_copy(full_checkpoint, tmp_path / "c", tensors=to_int)
    load_fails(folder, "clip.visual.proj is int32")


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("top_k", 16.5, "top_k must be a whole number"),
        ("top_k", True, "top_k must be a whole number"),
        ("streams", "all", "streams must be one of"),
        ("weights", "partial", "weights must be one of"),
        ("prompt_context", "yes", "prompt_context must be true or false"),
        ("template", "a photo", "must contain '{label}' exactly once"),
        ("template", 5, "template must be a text"),
        ("backbone", "", "backbone must be"),
        ("version", 0, "version must be at least 1"),
        ("version", "1", "version must be a whole number"),
        ("arch", [1, 2], "arch must be"),
        ("preprocess", "clip", "preprocess must be"),
    ],
)
def test_config_fields_are_checked(full_checkpoint, tmp_path, field, value, match):
    """Fault: any value of the right name was accepted, whatever its type or range."""
    folder = broken_copy(full_checkpoint, tmp_path / "c", config=lambda c: c.update({field: value}))
    load_fails(folder, match)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"mean": [0.5, 0.5]}, "preprocess.mean must be 3 numbers"),
        ({"mean": [0.5, "x", 0.5]}, "preprocess.mean must be 3 numbers"),
        ({"mean": [0.5, math.nan, 0.5]}, "finite"),
        ({"std": [0.2, 0.0, 0.2]}, "preprocess.std must be more than 0"),
        ({"std": [0.2, -1.0, 0.2]}, "preprocess.std must be more than 0"),
        ({"interpolation": "cubic"}, "preprocess.interpolation must be one of"),
        ({"image_size": 0}, "preprocess.image_size must be at least 1"),
        ({"image_size": 16}, "does not match the architecture's image size"),
        ({"resize": 16}, "preprocess.resize must be at least"),
        ({"resize": 10**9}, "preprocess.resize is 1000000000"),
        ({"crop": 224}, "unknown preprocess keys: crop"),
    ],
)
def test_preprocess_fields_are_checked(full_checkpoint, tmp_path, change, match):
    """Fault: a zero std divided pixels by zero, a two-number mean broke every batch, an
    unknown interpolation failed every image: all only once tagging ran."""
    folder = broken_copy(
        full_checkpoint, tmp_path / "c", config=lambda c: c["preprocess"].update(change)
    )
    load_fails(folder, match)


@pytest.mark.parametrize(
    ("tower", "change", "match"),
    [
        ("vision_cfg", {"width": "wide"}, "vision_cfg.width must be a whole number"),
        ("vision_cfg", {"width": -64}, "vision_cfg.width must be at least 1"),
        ("vision_cfg", {"width": 100, "head_width": 32}, "vision_cfg.width .* multiple"),
        ("vision_cfg", {"head_width": 128}, "head_width is larger"),
        ("vision_cfg", {"image_size": 1024, "patch_size": 4}, "65,536 image patches"),
        ("vision_cfg", {"image_size": 100_000}, "vision_cfg.image_size is 100000"),
        ("vision_cfg", {"mlp_ratio": math.inf}, "vision_cfg.mlp_ratio"),
        ("text_cfg", {"heads": 3}, "text_cfg.width .* multiple"),
        ("text_cfg", {"context_length": 10**7}, "text_cfg.context_length is 10000000"),
        ("text_cfg", {"vocab_size": 10**9}, "text_cfg.vocab_size is 1000000000"),
        ("text_cfg", {"layers": 10**6}, "text_cfg.layers is 1000000"),
    ],
)
def test_architecture_sizes_are_bounded(full_checkpoint, tmp_path, tower, change, match):
    """Fault: any size in the architecture was handed to open_clip, which allocated it (or
    raised a traceback for a wrong type)."""
    folder = broken_copy(
        full_checkpoint, tmp_path / "c", config=lambda c: c["arch"][tower].update(change)
    )
    started = time.perf_counter()
    load_fails(folder, match)
    assert time.perf_counter() - started < 1


def test_broken_checkpoint_is_one_line_on_the_command_line(full_checkpoint, tmp_path, label_file):
    """Fault: ``"top_k": "sixteen"`` printed a traceback from deep inside the local stream."""
    folder = broken_copy(
        full_checkpoint, tmp_path / "c", config=lambda c: c.update(top_k="sixteen")
    )
    photo = make_photo(tmp_path / "a.jpg")
    result = runner.invoke(
        app, ["tag", str(photo), "--labels", str(label_file), "--model", str(folder)]
    )
    assert result.exit_code == EXIT_ERROR
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.output and str(folder) in result.stderr


# --- item 8: local-dir and .json backbones --------------------------------------------------


def local_dir_copy(tiny_model_dir: Path, target: Path) -> Path:
    shutil.copytree(tiny_model_dir, target)
    return target


def test_local_dir_config_with_huge_sizes_fails_at_once(tiny_model_dir, tmp_path):
    """Fault: the open_clip config of a ``local-dir:`` backbone was built whatever its sizes."""
    folder = local_dir_copy(tiny_model_dir, tmp_path / "backbone")
    config = json.loads((folder / hub.HF_CONFIG).read_text())
    config["model_cfg"]["vision_cfg"]["layers"] = 200_000
    (folder / hub.HF_CONFIG).write_text(json.dumps(config))
    started = time.perf_counter()
    with pytest.raises(ModelError, match=r"vision_cfg\.layers") as info:
        checkpoints.load(f"local-dir:{folder}")
    assert time.perf_counter() - started < 1
    assert str(folder / hub.HF_CONFIG) in str(info.value)


def test_local_dir_preprocess_with_zero_std_is_refused(tiny_model_dir, tmp_path):
    """Fault: ``preprocess_cfg`` of a ``local-dir:`` backbone was taken as it came."""
    folder = local_dir_copy(tiny_model_dir, tmp_path / "backbone")
    config = json.loads((folder / hub.HF_CONFIG).read_text())
    config["preprocess_cfg"]["std"] = [0.25, 0, 0.25]
    (folder / hub.HF_CONFIG).write_text(json.dumps(config))
    with pytest.raises(ModelError, match="std must be more than 0") as info:
        checkpoints.load(f"local-dir:{folder}")
    assert str(folder / hub.HF_CONFIG) in str(info.value)


def test_json_backbone_with_huge_sizes_fails_at_once(tmp_path):
    """Fault: a ``.json`` backbone config was built whatever its sizes."""
    arch = json.loads(TINY_CONFIG.read_text())
    arch["text_cfg"]["width"] = 10**6
    path = tmp_path / "huge.json"
    path.write_text(json.dumps(arch))
    started = time.perf_counter()
    with pytest.raises(ModelError, match=r"text_cfg\.width") as info:
        checkpoints.load(str(path))
    assert time.perf_counter() - started < 1
    assert str(path) in str(info.value)


def test_json_backbone_with_wrong_types_is_a_clear_error(tmp_path):
    """Fault: ``"layers": "twelve"`` in a ``.json`` backbone raised a traceback."""
    arch = json.loads(TINY_CONFIG.read_text())
    arch["vision_cfg"]["layers"] = "twelve"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(arch))
    with pytest.raises(ModelError, match=r"vision_cfg\.layers must be a whole number") as info:
        checkpoints.load(str(path))
    assert str(path) in str(info.value)


def edit_backbone_weights(folder: Path, edit: Callable[[dict[str, torch.Tensor]], None]) -> Path:
    weights = folder / hub.SAFE_WEIGHTS
    tensors = load_file(str(weights))
    edit(tensors)
    save_file(tensors, str(weights))
    return weights


def test_local_dir_nan_weights_are_refused(tiny_model_dir, tmp_path):
    """Fault: NaN backbone weights (``local-dir:``) gave empty tag lists with exit code 0."""
    folder = local_dir_copy(tiny_model_dir, tmp_path / "backbone")

    def nan(tensors: dict[str, torch.Tensor]) -> None:
        tensors["visual.conv1.weight"][0, 0, 0, 0] = math.nan

    weights = edit_backbone_weights(folder, nan)
    with pytest.raises(ModelError, match="NaN or infinite") as info:
        checkpoints.load(f"local-dir:{folder}")
    assert str(weights) in str(info.value) and "visual.conv1.weight" in str(info.value)


def test_local_dir_integer_weights_are_refused(tiny_model_dir, tmp_path):
    """Fault: int32 backbone weights (``local-dir:``) were cast to float silently."""
    folder = local_dir_copy(tiny_model_dir, tmp_path / "backbone")

    def to_int(tensors: dict[str, torch.Tensor]) -> None:
        tensors["visual.proj"] = (tensors["visual.proj"] * 100).to(torch.int32)

    weights = edit_backbone_weights(folder, to_int)
    with pytest.raises(ModelError, match=r"visual\.proj is int32") as info:
        checkpoints.load(f"local-dir:{folder}")
    assert str(weights) in str(info.value)


# --- item 13: a first run without network ---------------------------------------------------

#: What a real ``hf_hub_download`` costs when there is no network: ~23 s of retries per file
#: (1+2+4+8+8 s). The fake below sleeps a second per call to stand for it.
RETRIES_S = 1.0


class NoNetwork:
    """A fake hub without network: every request fails with a connection error."""

    def __init__(self) -> None:
        self.downloads: list[str] = []
        self.probes: list[str] = []

    def hf_hub_download(self, repo_id: str, filename: str, **kwargs: Any) -> str:
        self.downloads.append(filename)
        time.sleep(RETRIES_S)  # huggingface_hub's own retries
        raise ConnectionError("[Errno 101] Network is unreachable")

    def get_hf_file_metadata(self, url: str, **kwargs: Any) -> None:
        self.probes.append(url)
        raise ConnectionError("[Errno 101] Network is unreachable")


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> NoNetwork:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    fake = NoNetwork()
    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake.hf_hub_download)
    monkeypatch.setattr("huggingface_hub.get_hf_file_metadata", fake.get_hf_file_metadata)
    return fake


def assert_explains_offline_fix(message: str, model: str, cache: Path) -> None:
    """The message says what to do: the model, the cache folder, downloading it where there
    is network and copying the cache (or MKT_TAG_CACHE), HF_HUB_OFFLINE=1."""
    assert model in message
    assert str(cache) in message
    assert f"mkt-tag models download {model}" in message
    assert "copy" in message and "MKT_TAG_CACHE" in message
    assert "HF_HUB_OFFLINE=1" in message


def test_offline_first_run_stops_at_the_first_connection_error(no_network, isolated_cache):
    """Fault: without network a missing model failed after ~52 s of `Retrying in 8s` lines
    (huggingface_hub's retries, for each candidate file), and the message did not say how to
    get the model onto an offline machine."""
    started = time.perf_counter()
    with pytest.raises(ModelNotCachedError) as info:
        hub.resolve("ViT-B-32:openai", isolated_cache)
    assert time.perf_counter() - started < RETRIES_S / 2
    assert len(no_network.probes) == 1 and no_network.downloads == []
    assert "no connection" in str(info.value)
    assert_explains_offline_fix(str(info.value), "ViT-B-32:openai", isolated_cache)


def test_connection_lost_during_download_stops_at_once(no_network, isolated_cache, monkeypatch):
    """Fault: a connection error while downloading went on to the next candidate file,
    paying huggingface_hub's retries again for each."""
    monkeypatch.setattr("huggingface_hub.get_hf_file_metadata", lambda url, **kwargs: None)
    with pytest.raises(ModelNotCachedError) as info:
        hub.resolve("ViT-B-32:openai", isolated_cache)
    assert len(no_network.downloads) == 1
    assert_explains_offline_fix(str(info.value), "ViT-B-32:openai", isolated_cache)


def test_models_download_offline_gives_the_same_message(no_network, isolated_cache):
    """Fault: `mkt-tag models download` without network retried for ~52 s too."""
    started = time.perf_counter()
    result = runner.invoke(app, ["models", "download", "ViT-B-32:openai"])
    assert time.perf_counter() - started < RETRIES_S / 2
    assert result.exit_code == EXIT_ERROR
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert_explains_offline_fix(result.stderr.replace("\n", ""), "ViT-B-32:openai", isolated_cache)


def test_hf_hub_offline_message_explains_the_fix(isolated_cache):
    """Fault: with HF_HUB_OFFLINE=1 the message did not say how to bring the model over."""
    with pytest.raises(ModelNotCachedError) as info:
        hub.resolve("ViT-B-32:openai", isolated_cache)
    message = str(info.value)
    assert "HF_HUB_OFFLINE" in message
    assert "mkt-tag models download ViT-B-32:openai" in message
    assert "copy" in message and "MKT_TAG_CACHE" in message
