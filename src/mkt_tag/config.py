"""Configuration dataclasses saved inside every checkpoint, so loading needs no flags."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

# CLIP's own normalisation (OpenAI). The MKT reference code uses ImageNet's instead;
# a checkpoint records whichever it was trained with.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DEFAULT_BACKBONE = "ViT-B-16:openai"
DEFAULT_TEMPLATE = "There is a {label} in the scene"
CONFIG_VERSION = 1


class Streams(str, Enum):
    """Which scores are fused: MKT's two streams, or one alone (ablations)."""

    both = "both"
    global_ = "global"
    local = "local"


STREAMS = tuple(choice.value for choice in Streams)


@dataclass
class PreprocessConfig:
    """How an image becomes the model's input tensor (eval time)."""

    image_size: int = 224  # side of the square crop fed to the ViT
    resize: int = 224  # shortest side after resizing, before the centre crop (reference MKT: 256)
    mean: tuple[float, float, float] = CLIP_MEAN  # per-channel mean, RGB in [0, 1]
    std: tuple[float, float, float] = CLIP_STD  # per-channel standard deviation
    interpolation: str = "bicubic"  # PIL resampling filter used for the resize


@dataclass
class ModelConfig:
    """Everything needed to rebuild an MKT model; stored as JSON in each checkpoint."""

    backbone: str = DEFAULT_BACKBONE  # backbone id: "ARCH:TAG", "hf-hub:org/repo", "local-dir:PATH"
    arch: dict[str, Any] | None = None  # open_clip model config of the backbone (filled on load)
    template: str = DEFAULT_TEMPLATE  # label prompt; "{label}" is replaced by the label text
    top_k: int = 16  # patches averaged per label by the local stream
    streams: str = "both"  # scores fused: "both" (MKT), "global" or "local" alone (ablations)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    prompt_context: bool = False  # the checkpoint carries learned prompt context vectors
    weights: str = "none"  # checkpoint weights: "none" (backbone only), "delta" or "full"
    version: int = CONFIG_VERSION  # layout version of this config

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build from JSON; unknown keys are an error so typos in hand-edited files show."""
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(unknown)}")
        pre = dict(data.pop("preprocess", {}) or {})
        for key in ("mean", "std"):
            if key in pre:
                pre[key] = tuple(float(v) for v in pre[key])
        return cls(preprocess=PreprocessConfig(**pre), **data)
