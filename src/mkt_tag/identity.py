"""Which weights and configuration a model id names, found without torch.

A model's fingerprint keys the caches, the thresholds files and the record mkt-tag keeps in
each photo's metadata. ``tag`` needs it before it decides whether to load a model at all
(are the tags already in a photo's sidecar from this model?), so it is computed here from
the files alone; ``checkpoints.load`` gives the loaded model the same value.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from mkt_tag import files, hub
from mkt_tag.config import ModelConfig
from mkt_tag.errors import CheckpointError

CONFIG_FILE = "mkt_config.json"
LABELS_FILE = "labels.txt"  # a checkpoint's bundled vocabulary, next to mkt_config.json
WEIGHTS_FILE = "model.safetensors"


@dataclass
class ModelIdentity:
    """A model id resolved to its files: what a loaded model's fingerprint is made of."""

    id: str  # the id as given, ``local-dir:`` added for an open_clip model folder
    config: ModelConfig  # the model's configuration, as loading builds it
    weights: str  # fingerprint of the weights ("" unknown)
    backbone: hub.Backbone | None  # the backbone whose weights are loaded first, if any
    checkpoint: Path | None = None  # an mkt-tag checkpoint folder

    @property
    def scores(self) -> str:
        """What the scores depend on: see :func:`scores_fingerprint`."""
        return scores_fingerprint(self.weights, self.config)


def scores_fingerprint(weights: str, config: ModelConfig) -> str:
    """The weights and the configuration (template, streams, top-K patches...), not device
    or precision; "" when the weights are unknown."""
    return files.digest(weights, "scores", config.to_dict()) if weights else ""


def is_checkpoint(path: str | Path) -> bool:
    return (Path(path) / CONFIG_FILE).is_file()


def read_config(folder: Path) -> ModelConfig:
    """A checkpoint's config, every field checked: one line naming the file otherwise."""
    path = folder / CONFIG_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: unreadable checkpoint config ({error})") from error
    try:
        return ModelConfig.from_dict(data)
    except ValueError as error:
        raise CheckpointError(f"{path}: {error}") from error


def resolve(
    model_id: str | Path, cache_dir: Path | None = None, download: bool = True
) -> ModelIdentity:
    """Find the files of a checkpoint directory or backbone id (downloading a backbone's
    when needed and allowed), and fingerprint them.

    Raises:
        ModelError: unknown id, missing files, or (offline) weights not in the cache.
        CheckpointError: an unreadable checkpoint configuration.
    """
    if is_checkpoint(model_id):
        return _checkpoint(Path(model_id), cache_dir, download)
    text = str(model_id)
    path = Path(text).expanduser()
    if path.is_dir() and (path / hub.HF_CONFIG).is_file():
        text = f"local-dir:{path}"
    elif path.is_dir():
        raise CheckpointError(
            f"{path}: not an mkt-tag checkpoint (no {CONFIG_FILE}) "
            f"nor an open_clip model directory (no {hub.HF_CONFIG})"
        )
    backbone = hub.resolve(text, cache_dir, download)
    config = ModelConfig.for_backbone(text, backbone.preprocess)
    config.arch = backbone.arch
    return ModelIdentity(text, config, backbone_fingerprint(backbone), backbone)


def _checkpoint(folder: Path, cache_dir: Path | None, download: bool) -> ModelIdentity:
    config = read_config(folder)
    if config.arch is None:
        raise CheckpointError(f"{folder / CONFIG_FILE}: no 'arch' (backbone architecture)")
    parts: list[object] = ["checkpoint", config.to_dict()]
    backbone = None
    if config.weights in ("none", "delta"):
        backbone = hub.resolve(config.backbone, cache_dir, download)
        parts.append(backbone_fingerprint(backbone))
    if config.weights != "none":
        weights = folder / WEIGHTS_FILE
        try:
            parts.append(_content(*files.file_identity(weights)))
        except OSError as error:
            raise CheckpointError(f"{weights}: cannot read weights ({error})") from error
    return ModelIdentity(str(folder), config, files.digest(*parts), backbone, folder)


@functools.lru_cache(maxsize=16)
def _content(path: str, size: int, mtime_ns: int) -> str:
    """A weights file's content hash, once per version of the file in a process: planning a
    run and loading its model both need it, and a large file takes a second to hash."""
    return files.file_content(Path(path))


def backbone_fingerprint(backbone: hub.Backbone) -> str:
    # Hub files are content-addressed, local ones are named by path, size and mtime.
    weights = files.file_identity(backbone.weights) if backbone.weights else None
    return files.digest("backbone", backbone.id, backbone.arch, weights)
