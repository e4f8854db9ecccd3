"""Model resolution against a fake hub: a pre-populated cache and a fake downloader."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import torch

from mkt_tag import checkpoints, hub
from mkt_tag.errors import ModelError, ModelNotCachedError

REVISION = "0123456789abcdef0123456789abcdef01234567"


def seed_hub_cache(cache: Path, repo: str, files: dict[str, Path | bytes]) -> Path:
    """Lay files out as huggingface_hub does: models--ORG--NAME/snapshots/REV + refs/main."""
    repo_dir = hub.hub_cache(cache) / f"models--{repo.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / REVISION
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if isinstance(content, Path):
            shutil.copy(content, snapshot / name)
        else:
            (snapshot / name).write_bytes(content)
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(REVISION)
    return snapshot


def tiny_repo_files(tiny_model_dir: Path) -> dict[str, Path | bytes]:
    return {
        "open_clip_config.json": tiny_model_dir / "open_clip_config.json",
        "open_clip_model.safetensors": tiny_model_dir / "open_clip_model.safetensors",
    }


def test_parse_ids():
    assert hub.parse_id("hf-hub:org/repo") == ("hf-hub", "org/repo")
    assert hub.parse_id("local-dir:/x") == ("local-dir", "/x")
    assert hub.parse_id("my.json") == ("json", "my.json")
    assert hub.parse_id("ViT-B-16:openai") == ("builtin", "ViT-B-16:openai")
    with pytest.raises(ModelError):
        hub.parse_id("hf-hub:")


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("MKT_TAG_CACHE", str(tmp_path / "env"))
    assert hub.cache_dir() == tmp_path / "env"
    assert hub.cache_dir(tmp_path / "flag") == tmp_path / "flag"
    monkeypatch.delenv("MKT_TAG_CACHE")
    assert "mkt-tag" in str(hub.cache_dir())


def test_builtin_cache_hit_resolves_without_network(isolated_cache):
    seed_hub_cache(
        isolated_cache,
        "timm/vit_base_patch16_clip_224.openai",
        {"open_clip_model.safetensors": b"placeholder"},
    )
    backbone = hub.resolve("ViT-B-16:openai", isolated_cache, download=False)
    assert backbone.weights is not None and backbone.weights.name == "open_clip_model.safetensors"
    # OpenAI weights need QuickGELU: the resolved architecture must say so
    assert backbone.arch["quick_gelu"] is True
    assert backbone.preprocess.image_size == 224
    assert hub.is_cached("ViT-B-16:openai", isolated_cache)


def test_missing_model_offline_fails_at_once_with_the_fix(isolated_cache):
    started = time.perf_counter()
    with pytest.raises(ModelNotCachedError) as info:
        hub.resolve("ViT-B-32:openai", isolated_cache)
    message = str(info.value)
    assert "ViT-B-32:openai" in message
    assert str(hub.hub_cache(isolated_cache)) in message
    assert "mkt-tag models download ViT-B-32:openai" in message
    assert time.perf_counter() - started < 5
    assert not hub.is_cached("ViT-B-32:openai", isolated_cache)


def test_unknown_names_and_tags(isolated_cache):
    with pytest.raises(ModelError, match="unknown model"):
        hub.resolve("NoSuchNet:x", isolated_cache)
    with pytest.raises(ModelError, match="unknown pretrained tag"):
        hub.resolve("ViT-B-16:nonsense", isolated_cache)
    with pytest.raises(ModelError, match="needs a pretrained tag"):
        hub.resolve("ViT-B-16", isolated_cache)


def test_hf_hub_model_from_cache_loads(isolated_cache, tiny_model_dir):
    seed_hub_cache(isolated_cache, "test-org/tiny", tiny_repo_files(tiny_model_dir))
    model = checkpoints.load("hf-hub:test-org/tiny", isolated_cache)
    assert model.config.backbone == "hf-hub:test-org/tiny"
    assert model.config.preprocess.mean == (0.5, 0.5, 0.5)
    reference = checkpoints.load(f"local-dir:{tiny_model_dir}")
    for (name, a), (_, b) in zip(
        model.state_dict().items(), reference.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_download_through_fake_hub(isolated_cache, tiny_model_dir, monkeypatch):
    """Online: files come through huggingface_hub.hf_hub_download into our cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    calls = []
    remote = tiny_repo_files(tiny_model_dir)

    def fake_download(repo_id, filename, cache_dir=None, **kwargs):
        calls.append((repo_id, filename))
        if filename not in remote:
            raise FileNotFoundError(filename)
        snapshot = seed_hub_cache(Path(cache_dir).parent, repo_id, {filename: remote[filename]})
        return str(snapshot / filename)

    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_download)
    # the connection check before downloading: the fake hub answers it
    monkeypatch.setattr("huggingface_hub.get_hf_file_metadata", lambda url, **kwargs: None)
    backbone = hub.download("hf-hub:test-org/tiny", isolated_cache)
    assert backbone.weights is not None and backbone.weights.is_file()
    assert ("test-org/tiny", "open_clip_config.json") in calls
    calls.clear()
    hub.download("hf-hub:test-org/tiny", isolated_cache)  # second time: cache hit
    assert calls == []


def test_download_failure_names_model_and_cache(isolated_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)

    def no_network(*args, **kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.setattr("huggingface_hub.hf_hub_download", no_network)
    monkeypatch.setattr("huggingface_hub.get_hf_file_metadata", no_network)
    with pytest.raises(ModelNotCachedError, match="could not be downloaded"):
        hub.download("ViT-B-32:openai", isolated_cache)


def test_corrupted_weights_are_a_clear_error(isolated_cache, tiny_model_dir):
    files = tiny_repo_files(tiny_model_dir)
    files["open_clip_model.safetensors"] = b"\x00garbage, not safetensors"
    seed_hub_cache(isolated_cache, "test-org/broken", files)
    with pytest.raises(ModelError, match="cannot load backbone weights"):
        checkpoints.load("hf-hub:test-org/broken", isolated_cache)


def test_pickle_weights_are_loaded_weights_only(tmp_path, tiny_model_dir):
    """A .bin that would need arbitrary unpickling is refused."""
    folder = tmp_path / "evil"
    folder.mkdir()
    shutil.copy(tiny_model_dir / "open_clip_config.json", folder)

    class Payload:
        def __reduce__(self):
            return (print, ("owned",))

    torch.save({"x": Payload()}, folder / "open_clip_pytorch_model.bin")
    with pytest.raises(ModelError, match="cannot load backbone weights"):
        checkpoints.load(f"local-dir:{folder}")


def test_local_dir_errors(tmp_path):
    with pytest.raises(ModelError, match="directory not found"):
        hub.resolve(f"local-dir:{tmp_path / 'nope'}")
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": {"x": 1}}))
    with pytest.raises(ModelError, match="not an open_clip model config"):
        hub.resolve(f"local-dir:{tmp_path}")


def test_every_open_clip_vit_fits_the_architecture_limits():
    """The limits on sizes refuse hostile configs, never a real backbone."""
    import open_clip

    from mkt_tag.config import check_arch

    checked = 0
    for arch_name, tag in open_clip.list_pretrained():
        try:
            arch, pretrained, _ = hub._builtin_files(f"{arch_name}:{tag}")
        except ModelError:  # not on the hub
            continue
        try:
            check_arch(arch)
        except ValueError as error:  # ResNets, timm and Hugging Face towers, CoCa
            assert str(error).startswith("unsupported backbone"), (arch_name, error)
            continue
        hub._preprocess_from(arch, pretrained, f"{arch_name}:{tag}")
        checked += 1
    assert checked > 50  # 80 with open_clip 3.3


def online(monkeypatch, download, probe=lambda url, **kwargs: None) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.hf_hub_download", download)
    monkeypatch.setattr("huggingface_hub.get_hf_file_metadata", probe)


def test_connection_error_wrapped_by_huggingface_hub_stops_downloads(isolated_cache, monkeypatch):
    """huggingface_hub raises LocalEntryNotFoundError from the HTTP library's ConnectError."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    calls = []

    def lost(repo_id, filename, **kwargs):
        calls.append(filename)
        try:
            raise OSError("[Errno -3] Temporary failure in name resolution")
        except OSError as inner:
            connect_error = type("ConnectError", (Exception,), {})  # httpx's, by name
            try:
                raise connect_error("cannot connect") from inner
            except Exception as error:
                raise LocalEntryNotFoundError("cannot find the requested files") from error

    online(monkeypatch, lost)
    with pytest.raises(ModelNotCachedError, match="no connection to the Hugging Face hub"):
        hub.download("ViT-B-32:openai", isolated_cache)
    assert calls == ["open_clip_model.safetensors"]  # not the .bin after it


def test_missing_file_on_the_hub_tries_the_next_one(isolated_cache, tiny_model_dir, monkeypatch):
    """A file the repo lacks (the probe and the download say 404) is not "no network"."""
    remote = {"open_clip_pytorch_model.bin": tiny_model_dir / "open_clip_model.safetensors"}
    calls = []

    def download(repo_id, filename, cache_dir=None, **kwargs):
        calls.append(filename)
        if filename not in remote:
            raise FileNotFoundError(filename)
        snapshot = seed_hub_cache(Path(cache_dir).parent, repo_id, {filename: remote[filename]})
        return str(snapshot / filename)

    def probe(url, **kwargs):
        raise FileNotFoundError(url)  # like huggingface_hub's RemoteEntryNotFoundError

    online(monkeypatch, download, probe)
    backbone = hub.download("ViT-B-32:openai", isolated_cache)
    assert backbone.weights is not None and backbone.weights.name == "open_clip_pytorch_model.bin"
    assert calls == ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
