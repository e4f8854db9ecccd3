"""Backbone ids, the user cache, and downloads.

A backbone id is one of:

- ``ARCH:TAG``: an open_clip architecture with a pretrained tag, e.g. ``ViT-B-16:openai``;
- ``hf-hub:ORG/REPO``: an open_clip model on the Hugging Face hub;
- ``local-dir:PATH``: open_clip's own layout (``open_clip_config.json`` + weights);
- ``PATH.json``: a custom open_clip model config, randomly initialised (tests, experiments).

Files are resolved here, not by open_clip, so that a model missing from the cache fails at once
with a useful message instead of after a minute of network retries.
"""

from __future__ import annotations

import copy
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs

from mkt_tag.config import CLIP_MEAN, CLIP_STD, PreprocessConfig, check_arch
from mkt_tag.errors import ModelError, ModelNotCachedError

SAFE_WEIGHTS = "open_clip_model.safetensors"
PICKLE_WEIGHTS = "open_clip_pytorch_model.bin"
HF_CONFIG = "open_clip_config.json"

# Backbones worth knowing by name; any open_clip ViT "ARCH:TAG" pair works too.
KNOWN_BACKBONES: dict[str, str] = {
    "ViT-B-16:openai": "CLIP ViT-B/16 (OpenAI), the MKT paper's backbone; default",
    "ViT-B-32:openai": "CLIP ViT-B/32 (OpenAI): about 3x faster, less accurate",
    "ViT-L-14:openai": "CLIP ViT-L/14 (OpenAI): slower, more accurate",
    "ViT-B-16:laion2b_s34b_b88k": "OpenCLIP ViT-B/16 trained on LAION-2B",
    "ViT-L-14:laion2b_s32b_b82k": "OpenCLIP ViT-L/14 trained on LAION-2B",
}


def cache_dir(override: str | Path | None = None) -> Path:
    """The mkt-tag cache: ``--cache-dir``, else ``$MKT_TAG_CACHE``, else the user cache dir."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get("MKT_TAG_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("mkt-tag"))


def hub_cache(root: Path) -> Path:
    """Where Hugging Face files live inside the mkt-tag cache (the hub's own layout)."""
    return root / "hub"


def offline() -> bool:
    """True when downloads are switched off (``HF_HUB_OFFLINE``), read at call time."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    return bool(constants.HF_HUB_OFFLINE) or env in {"1", "true", "yes", "on"}


@dataclass
class Backbone:
    """A resolved backbone: enough to build it and load its pretrained weights."""

    id: str  # the id as the user wrote it
    arch: dict[str, Any]  # open_clip model config (architecture)
    preprocess: PreprocessConfig  # eval preprocessing the weights were trained with
    weights: Path | None  # weight file, None for a randomly initialised custom config


@dataclass(frozen=True)
class HubFile:
    """A file to fetch from the hub."""

    repo: str
    filename: str


def parse_id(backbone_id: str) -> tuple[str, str]:
    """Split an id into (kind, rest): kind is "hf-hub", "local-dir", "json" or "builtin"."""
    for prefix in ("hf-hub:", "local-dir:"):
        if backbone_id.startswith(prefix):
            rest = backbone_id[len(prefix) :]
            if not rest:
                raise ModelError(f"model id {backbone_id!r} names nothing after {prefix!r}")
            return prefix[:-1], rest
    if backbone_id.endswith(".json"):
        return "json", backbone_id
    return "builtin", backbone_id


def _builtin_parts(backbone_id: str) -> tuple[str, str]:
    import open_clip

    arch, _, tag = backbone_id.partition(":")
    arch = arch.replace("/", "-")
    if open_clip.get_model_config(arch) is None:
        raise ModelError(
            f"unknown model {backbone_id!r}: not an mkt-tag checkpoint directory, an open_clip "
            "architecture, 'hf-hub:ORG/REPO' or 'local-dir:PATH' (see `mkt-tag models`)"
        )
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if not tag:
        raise ModelError(
            f"model {backbone_id!r} needs a pretrained tag, e.g. "
            f"'{arch}:{tags[0] if tags else 'TAG'}' (tags: {', '.join(tags) or 'none'})"
        )
    if tag not in tags:
        raise ModelError(
            f"unknown pretrained tag {tag!r} for {arch} (tags: {', '.join(tags) or 'none'})"
        )
    return arch, tag


def _preprocess_from(
    arch: dict[str, Any], cfg: dict[str, Any], source: Path | str
) -> PreprocessConfig:
    """Eval preprocessing from open_clip's ``preprocess_cfg``, checked like a checkpoint's."""
    size = arch.get("vision_cfg", {}).get("image_size", 224)
    size = size[0] if isinstance(size, list | tuple) and size else size
    try:
        return PreprocessConfig.from_dict(
            {
                "image_size": size,
                "resize": size,
                "mean": cfg.get("mean") or CLIP_MEAN,
                "std": cfg.get("std") or CLIP_STD,
                "interpolation": cfg.get("interpolation") or "bicubic",
            },
            where="preprocess_cfg",
        )
    except ValueError as error:
        raise ModelError(f"{source}: {error}") from error


def _builtin_files(backbone_id: str) -> tuple[dict[str, Any], dict[str, Any], list[HubFile]]:
    """Architecture, pretrained settings and candidate weight files of ``ARCH:TAG``."""
    import open_clip

    arch_name, tag = _builtin_parts(backbone_id)
    arch = copy.deepcopy(open_clip.get_model_config(arch_name))
    pretrained = dict(open_clip.get_pretrained_cfg(arch_name, tag))
    # The tag's activation wins over the architecture file: OpenAI weights need QuickGELU and
    # open_clip would otherwise only warn while computing embeddings ~6% off.
    arch["quick_gelu"] = bool(pretrained.get("quick_gelu", arch.get("quick_gelu", False)))
    hub = pretrained.get("hf_hub", "")
    if not hub:
        raise ModelError(
            f"{backbone_id}: its weights are not on the Hugging Face hub; "
            "download them yourself and use 'local-dir:PATH'"
        )
    # open_clip writes "org/repo/" (default file name) or "org/repo/file.ext".
    repo, filename = os.path.split(hub)
    files = [HubFile(repo, filename)] if filename else []
    if not filename or filename == PICKLE_WEIGHTS:
        files = [HubFile(repo, SAFE_WEIGHTS), HubFile(repo, PICKLE_WEIGHTS)]
    elif filename.endswith((".bin", ".pth", ".pt")):
        files.insert(0, HubFile(repo, filename.rsplit(".", 1)[0] + ".safetensors"))
    return arch, pretrained, files


def _fetch(backbone_id: str, files: list[HubFile], root: Path, download: bool) -> Path:
    """The first of ``files`` that is cached or downloadable; a clear error otherwise."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    hub_dir = hub_cache(root)
    for f in files:
        cached = try_to_load_from_cache(f.repo, f.filename, cache_dir=hub_dir)
        if isinstance(cached, str):
            return Path(cached)
    if not download or offline():
        raise ModelNotCachedError(
            f"model {backbone_id!r} is not in the cache ({hub_dir}) and downloads are off "
            f"(HF_HUB_OFFLINE is set): {_bring_over(backbone_id, root)}; or unset HF_HUB_OFFLINE "
            "to download it here"
        )
    _check_connection(backbone_id, files[0], root)
    errors = []
    for f in files:
        try:
            return Path(hf_hub_download(f.repo, f.filename, cache_dir=hub_dir))
        except Exception as error:
            if _no_connection(error):  # lost on the way: the next file would fail the same
                raise _offline_error(backbone_id, root, error) from error
            errors.append(f"{f.filename}: {type(error).__name__}")
    raise ModelNotCachedError(
        f"model {backbone_id!r} could not be downloaded from {files[0].repo} into {hub_dir} "
        f"({'; '.join(errors)}); check the network, or run `mkt-tag models download {backbone_id}` "
        "where there is one"
    )


def _check_connection(backbone_id: str, first: HubFile, root: Path) -> None:
    """One request to the hub, without retries, before downloading anything.

    huggingface_hub retries a failed connection for ~23 s per file before it gives up, so a
    machine without network would wait most of a minute for an error; this fails at once
    (or after ``HF_HUB_ETAG_TIMEOUT``, 10 s by default, where the network drops packets).
    """
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url

    try:
        get_hf_file_metadata(
            hf_hub_url(first.repo, first.filename), timeout=constants.HF_HUB_ETAG_TIMEOUT
        )
    except Exception as error:  # a missing file, a gated repo...: hf_hub_download says which
        if _no_connection(error):
            raise _offline_error(backbone_id, root, error) from error


# Names of the exceptions that mean "no network" in huggingface_hub and the HTTP libraries
# it has used (requests, httpx): matched by name, as they share no base class.
_CONNECTION_ERRORS = frozenset(
    {
        "ConnectError",
        "ConnectionError",
        "ConnectTimeout",
        "NetworkError",
        "OfflineModeIsEnabled",
        "ProxyError",
        "Timeout",
        "TimeoutException",
    }
)


def _no_connection(error: BaseException) -> bool:
    """Whether ``error``, or an error it was raised from, says the network cannot be reached."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionError | TimeoutError | socket.gaierror):
            return True
        if any(cls.__name__ in _CONNECTION_ERRORS for cls in type(current).__mro__):
            return True
        current = current.__cause__ or current.__context__
    return False


def _root_cause(error: BaseException) -> BaseException:
    seen = {id(error)}
    while (inner := error.__cause__ or error.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        error = inner
    return error


def _bring_over(backbone_id: str, root: Path) -> str:
    """How to get a model onto a machine without network."""
    return (
        f"on a machine with network, run `mkt-tag models download {backbone_id}`, then copy "
        f"its cache folder (`mkt-tag models` shows it) to {root} here, or point MKT_TAG_CACHE "
        "(or --cache-dir) at the copy"
    )


def _offline_error(backbone_id: str, root: Path, error: BaseException) -> ModelNotCachedError:
    cause = _root_cause(error)
    fix = _bring_over(backbone_id, root)
    detail = (str(cause).strip().splitlines() or [""])[0][:120]
    return ModelNotCachedError(
        f"model {backbone_id!r} is not in the cache ({hub_cache(root)}) and could not be "
        f"downloaded: no connection to the Hugging Face hub ({type(cause).__name__}"
        f"{': ' + detail if detail else ''}). {fix[0].upper()}{fix[1:]}; "
        "set HF_HUB_OFFLINE=1 to fail at once without trying the network"
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise ModelError(f"{path}: file not found") from error
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelError(f"{path}: not a readable JSON file ({error})") from error
    if not isinstance(data, dict):
        raise ModelError(f"{path}: expected a JSON object")
    return data


def _split_open_clip_config(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model_cfg, preprocess_cfg) from an ``open_clip_config.json`` or a bare model config."""
    data = _read_json(path)
    arch = data.get("model_cfg", data)
    if not isinstance(arch, dict) or "vision_cfg" not in arch or "text_cfg" not in arch:
        raise ModelError(f"{path}: not an open_clip model config (needs vision_cfg and text_cfg)")
    try:
        check_arch(arch)
    except ValueError as error:
        raise ModelError(f"{path}: {error}") from error
    preprocess = data.get("preprocess_cfg") or {}
    if not isinstance(preprocess, dict):
        raise ModelError(f"{path}: preprocess_cfg must be a JSON object")
    return dict(arch), dict(preprocess)


def _local_weights(folder: Path) -> Path | None:
    for name in (
        SAFE_WEIGHTS,
        "open_clip_pytorch_model.safetensors",
        "model.safetensors",
        PICKLE_WEIGHTS,
        "open_clip_pytorch_model.pth",
        "pytorch_model.bin",
    ):
        if (folder / name).is_file():
            return folder / name
    found = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
    return found[0] if found else None


def resolve(backbone_id: str, root: Path | None = None, download: bool = True) -> Backbone:
    """Find (and if needed download) everything needed to build ``backbone_id``."""
    root = cache_dir(root)
    kind, rest = parse_id(backbone_id)
    if kind == "builtin":
        arch, pretrained, files = _builtin_files(backbone_id)
        weights = _fetch(backbone_id, files, root, download)
        return Backbone(backbone_id, arch, _preprocess_from(arch, pretrained, backbone_id), weights)
    if kind == "hf-hub":
        config = _fetch(backbone_id, [HubFile(rest, HF_CONFIG)], root, download)
        arch, pre = _split_open_clip_config(config)
        preprocess = _preprocess_from(arch, pre, config)
        weights = _fetch(
            backbone_id,
            [HubFile(rest, SAFE_WEIGHTS), HubFile(rest, PICKLE_WEIGHTS)],
            root,
            download,
        )
        return Backbone(backbone_id, arch, preprocess, weights)
    if kind == "local-dir":
        folder = Path(rest).expanduser()
        if not folder.is_dir():
            raise ModelError(f"{folder}: directory not found (from model id {backbone_id!r})")
        arch, pre = _split_open_clip_config(folder / HF_CONFIG)
        preprocess = _preprocess_from(arch, pre, folder / HF_CONFIG)
        local_weights = _local_weights(folder)
        if local_weights is None:
            raise ModelError(
                f"{folder}: no weights file (.safetensors or .bin) next to {HF_CONFIG}"
            )
        return Backbone(backbone_id, arch, preprocess, local_weights)
    path = Path(rest).expanduser()
    arch, pre = _split_open_clip_config(path)
    return Backbone(backbone_id, arch, _preprocess_from(arch, pre, path), None)


def download(backbone_id: str, root: Path | None = None) -> Backbone:
    """Download a backbone into the cache (no-op when cached)."""
    return resolve(backbone_id, root, download=True)


def is_cached(backbone_id: str, root: Path | None = None) -> bool:
    """Whether ``resolve`` would succeed without the network."""
    try:
        resolve(backbone_id, root, download=False)
    except ModelError:
        return False
    return True
