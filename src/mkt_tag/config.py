"""Configuration dataclasses saved inside every checkpoint, so loading needs no flags.

A checkpoint's config is a file a user can edit, copy or receive from someone else:
``ModelConfig.from_dict`` checks every field's type and range, and ``check_arch`` bounds the
backbone architecture's sizes before anything is allocated.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from mkt_tag._version import __version__

# CLIP's own normalisation (OpenAI). The MKT reference code uses ImageNet's instead;
# a checkpoint records whichever it was trained with.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DEFAULT_BACKBONE = "ViT-B-16:openai"
DEFAULT_TEMPLATE = "There is a {label} in the scene"
# Which scores a model fuses (``ModelConfig.streams``). MKT training uses both streams; a
# backbone not trained with MKT scores with its class token alone: contrastive pretraining
# aligns only the class token with text, and its patch tokens lower the fused score
# (docs/models.md#which-scores-a-model-uses gives the measurements behind this choice).
TRAINED_STREAMS = "both"
UNTRAINED_STREAMS = "global"
CONFIG_VERSION = 1

# PIL resampling filters a checkpoint may name (images.INTERPOLATIONS maps them).
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos")
WEIGHTS_MODES = ("none", "delta", "full")

# Limits on a backbone architecture, checked before anything is allocated, so that a damaged
# or hostile config fails at once instead of allocating for minutes. Far above every CLIP ViT
# in open_clip (the largest, ViT-e-14: 56 layers, width 1792, 4.6 billion parameters;
# ViT-H-14-378: 729 patches; vocabularies up to 901,629 tokens).
MAX_LAYERS = 128  # transformer blocks of either tower
MAX_WIDTH = 8192  # token width of either tower, and the embedding size
MAX_HEADS = 256  # attention heads of either tower
MAX_MLP_RATIO = 16.0  # MLP width / token width
MAX_IMAGE_SIZE = 1024  # side of the ViT's square input, in pixels
MAX_RESIZE = 4096  # shortest side of a photo after the resize before the centre crop
MAX_PATCHES = 4096  # image tokens: (image_size / patch_size) squared
MAX_CONTEXT_LENGTH = 1024  # text tokens
MAX_VOCAB_SIZE = 2**20  # token vocabulary of the text tower
MAX_PARAMETERS = 5_000_000_000  # both towers; 20 GB in fp32

# open_clip's defaults (CLIPVisionCfg, CLIPTextCfg) for sizes a config leaves out.
_VISION_DEFAULTS = {"layers": 12, "width": 768, "head_width": 64, "mlp_ratio": 4.0,
                    "patch_size": 16, "image_size": 224}  # fmt: skip
_TEXT_DEFAULTS = {"layers": 12, "width": 512, "heads": 8, "mlp_ratio": 4.0,
                  "context_length": 77, "vocab_size": 49408}  # fmt: skip
_VISION_LIMITS = (("layers", MAX_LAYERS), ("width", MAX_WIDTH), ("head_width", MAX_WIDTH))
_TEXT_LIMITS = (
    ("layers", MAX_LAYERS),
    ("width", MAX_WIDTH),
    ("heads", MAX_HEADS),
    ("context_length", MAX_CONTEXT_LENGTH),
    ("vocab_size", MAX_VOCAB_SIZE),
)


class Streams(str, Enum):
    """Which scores are fused: MKT's two streams, or one alone (ablations)."""

    both = "both"
    global_ = "global"
    local = "local"


STREAMS = tuple(choice.value for choice in Streams)


def check_streams(value: Any) -> str:
    """``value`` if it names the scores a model can use (``STREAMS``); ``ValueError`` if not."""
    return _choice("streams", value, STREAMS)


@dataclass
class PreprocessConfig:
    """How an image becomes the model's input tensor (eval time)."""

    image_size: int = 224  # side of the square crop fed to the ViT
    resize: int = 224  # shortest side after resizing, before the centre crop (reference MKT: 256)
    mean: tuple[float, float, float] = CLIP_MEAN  # per-channel mean, RGB in [0, 1]
    std: tuple[float, float, float] = CLIP_STD  # per-channel standard deviation
    interpolation: str = "bicubic"  # PIL resampling filter used for the resize

    @classmethod
    def from_dict(cls, data: Any, where: str = "preprocess") -> PreprocessConfig:
        """Build from JSON, checking every value; ``where`` prefixes the field names."""
        if not isinstance(data, dict):
            raise ValueError(f"{where} must be a JSON object, not {_show(data)}")
        _no_unknown_keys(data, cls, f"{where} ")
        pre = cls()
        image_size = _whole(f"{where}.image_size", data.get("image_size", pre.image_size))
        _at_most(f"{where}.image_size", image_size, MAX_IMAGE_SIZE)
        resize = _whole(f"{where}.resize", data.get("resize", pre.resize), low=image_size)
        _at_most(f"{where}.resize", resize, MAX_RESIZE)
        interpolation = data.get("interpolation", pre.interpolation)
        if interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"{where}.interpolation must be one of {', '.join(INTERPOLATIONS)}, "
                f"not {_show(interpolation)}"
            )
        mean = _three_numbers(f"{where}.mean", data.get("mean", pre.mean))
        std = _three_numbers(f"{where}.std", data.get("std", pre.std))
        if min(std) <= 0:
            raise ValueError(f"{where}.std must be more than 0 in every channel, not {list(std)}")
        return cls(image_size, resize, mean, std, interpolation)


@dataclass
class ModelConfig:
    """Everything needed to rebuild an MKT model; stored as JSON in each checkpoint."""

    backbone: str = DEFAULT_BACKBONE  # backbone id: "ARCH:TAG", "hf-hub:org/repo", "local-dir:PATH"
    arch: dict[str, Any] | None = None  # open_clip model config of the backbone (filled on load)
    template: str = DEFAULT_TEMPLATE  # label prompt; "{label}" is replaced by the label text
    top_k: int = 16  # patches averaged per label by the local stream
    streams: str = TRAINED_STREAMS  # scores fused: "both" (MKT), "global" or "local" alone
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    prompt_context: bool = False  # the checkpoint carries learned prompt context vectors
    weights: str = "none"  # checkpoint weights: "none" (backbone only), "delta" or "full"
    version: int = CONFIG_VERSION  # layout version of this config

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def for_backbone(cls, backbone: str, preprocess: PreprocessConfig) -> ModelConfig:
        """The configuration of a backbone used as it is, before any MKT training."""
        return cls(backbone=backbone, streams=UNTRAINED_STREAMS, preprocess=preprocess)

    @classmethod
    def from_dict(cls, data: Any) -> ModelConfig:
        """Build from JSON, checking every field's type and range (``ValueError``, one line).

        A config from a newer mkt-tag is refused first (it may mean something else), then
        unknown keys, so that typos in hand-edited files show.
        """
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, not {_show(data)}")
        version = _whole("version", data.get("version", CONFIG_VERSION))
        if version > CONFIG_VERSION:
            raise ValueError(
                f"written by a newer mkt-tag (config version {version}; mkt-tag {__version__} "
                f"reads version {CONFIG_VERSION}): upgrade mkt-tag (pip install --upgrade mkt-tag)"
            )
        _no_unknown_keys(data, cls, "config ")
        config = cls()
        backbone = data.get("backbone", config.backbone)
        if not isinstance(backbone, str) or not backbone.strip():
            raise ValueError(f"backbone must be a model id, not {_show(backbone)}")
        arch = data.get("arch")
        if arch is not None:
            check_arch(arch)
        template = data.get("template", config.template)
        if not isinstance(template, str):
            raise ValueError(f"template must be a text, not {_show(template)}")
        if template.count("{label}") != 1:
            raise ValueError(f"template {_show(template)} must contain '{{label}}' exactly once")
        top_k = _whole("top_k", data.get("top_k", config.top_k))
        streams = _choice("streams", data.get("streams", config.streams), STREAMS)
        preprocess = PreprocessConfig.from_dict(data.get("preprocess", {}))
        prompt_context = data.get("prompt_context", config.prompt_context)
        if not isinstance(prompt_context, bool):
            raise ValueError(f"prompt_context must be true or false, not {_show(prompt_context)}")
        weights = _choice("weights", data.get("weights", config.weights), WEIGHTS_MODES)
        if arch is not None:
            size = _vision(arch)["image_size"]
            if [preprocess.image_size] * 2 != _pair(size):
                raise ValueError(
                    f"preprocess.image_size {preprocess.image_size} does not match the "
                    f"architecture's image size {size} (arch.vision_cfg.image_size)"
                )
        return cls(
            backbone=backbone,
            arch=dict(arch) if arch is not None else None,
            template=template,
            top_k=top_k,
            streams=streams,
            preprocess=preprocess,
            prompt_context=prompt_context,
            weights=weights,
            version=version,
        )


# --- the architecture (an open_clip model config) ---------------------------------------------


def check_arch(arch: Any) -> None:
    """Check an open_clip model config: towers MKT can use (a CLIP ViT, a CLIP text
    transformer), types, and sizes within the limits above (``ValueError``, one line)."""
    if not isinstance(arch, dict):
        raise ValueError(
            f"arch must be a JSON object (an open_clip model config), not {_show(arch)}"
        )
    for name in ("vision_cfg", "text_cfg"):
        if not isinstance(arch.get(name), dict):
            raise ValueError(f"arch.{name} must be a JSON object, not {_show(arch.get(name))}")
    _check_supported(arch)
    if "embed_dim" not in arch:
        raise ValueError("arch has no embed_dim (the size of image and label embeddings)")
    _at_most("embed_dim", _whole("embed_dim", arch["embed_dim"]), MAX_WIDTH)
    for flag in ("quick_gelu", "custom_text"):
        if not isinstance(arch.get(flag, False), bool):
            raise ValueError(f"{flag} must be true or false, not {_show(arch[flag])}")
    vision, text = _vision(arch), _text(arch)
    for key, limit in _VISION_LIMITS:
        _tower_size("vision_cfg", vision, key, limit)
    _heads_divide("vision_cfg", vision["width"], vision["width"] // vision["head_width"])
    _ratio("vision_cfg", vision["mlp_ratio"])
    side = [_whole("vision_cfg.image_size", value) for value in _pair(vision["image_size"])]
    _at_most("vision_cfg.image_size", max(side), MAX_IMAGE_SIZE)
    patch = _whole("vision_cfg.patch_size", vision["patch_size"])
    if patch > min(side):
        raise ValueError(f"vision_cfg.patch_size {patch} is larger than the image ({min(side)})")
    patches = (side[0] // patch) * (side[1] // patch)
    if patches > MAX_PATCHES:
        raise ValueError(
            f"vision_cfg: {patches:,} image patches ({side[0]} px / {patch} px squared), "
            f"more than mkt-tag allows ({MAX_PATCHES:,})"
        )
    for key, limit in _TEXT_LIMITS:
        _tower_size("text_cfg", text, key, limit)
    _heads_divide("text_cfg", text["width"], text["heads"])
    _ratio("text_cfg", text["mlp_ratio"])
    parameters = estimate_parameters(arch)
    if parameters > MAX_PARAMETERS:
        raise ValueError(
            f"the architecture has {parameters / 1e9:.1f} billion parameters, more than "
            f"mkt-tag allows ({MAX_PARAMETERS / 1e9:.0f} billion)"
        )


def _check_supported(arch: dict[str, Any]) -> None:
    """MKT needs a CLIP ViT (class token, ``proj``) and OpenAI CLIP's text transformer."""
    vision, text = arch["vision_cfg"], arch["text_cfg"]
    if vision.get("timm_model_name") or text.get("hf_model_name"):
        raise ValueError(
            "unsupported backbone: timm image towers and Hugging Face text towers "
            "are not CLIP ViTs (use an OpenAI-style ViT such as ViT-B-16:openai)"
        )
    if isinstance(vision.get("layers"), list | tuple):
        raise ValueError("unsupported backbone: a ResNet image tower is not a ViT (MKT needs one)")
    if text.get("hf_tokenizer_name"):
        raise ValueError("unsupported backbone: it needs a Hugging Face tokenizer")
    if "multimodal_cfg" in arch:
        raise ValueError("unsupported backbone: CoCa models are not supported")


def estimate_parameters(arch: dict[str, Any]) -> int:
    """Parameters of a CLIP ViT + CLIP text tower, from its config (open_clip's layout; exact
    to 0.1% for every ViT in open_clip). Call ``check_arch`` first."""
    vision, text = _vision(arch), _text(arch)
    embed = int(arch["embed_dim"])
    width = int(vision["width"])
    side = _pair(vision["image_size"])
    patch = int(vision["patch_size"])
    patches = (side[0] // patch) * (side[1] // patch)
    image = (
        3 * patch * patch * width  # patch embedding
        + (patches + 2) * width  # positions and class token
        + 4 * width  # ln_pre, ln_post
        + _blocks(int(vision["layers"]), width, float(vision["mlp_ratio"]))
        + width * embed  # proj
    )
    text_width = int(text["width"])
    words = (
        (int(text["vocab_size"]) + int(text["context_length"])) * text_width
        + _blocks(int(text["layers"]), text_width, float(text["mlp_ratio"]))
        + 2 * text_width  # ln_final
        + text_width * embed  # text_projection
    )
    return image + words + 1  # logit_scale


def _blocks(layers: int, width: int, mlp_ratio: float) -> int:
    hidden = int(width * mlp_ratio)
    attention = 4 * width * width + 4 * width
    mlp = 2 * width * hidden + hidden + width
    return layers * (attention + mlp + 4 * width)  # + two layer norms


def _vision(arch: dict[str, Any]) -> dict[str, Any]:
    return {**_VISION_DEFAULTS, **arch["vision_cfg"]}


def _text(arch: dict[str, Any]) -> dict[str, Any]:
    return {**_TEXT_DEFAULTS, **arch["text_cfg"]}


def _tower_size(tower: str, cfg: dict[str, Any], key: str, limit: int) -> int:
    return _at_most(f"{tower}.{key}", _whole(f"{tower}.{key}", cfg[key]), limit)


def _heads_divide(tower: str, width: int, heads: int) -> None:
    if heads < 1:  # only from head_width > width
        raise ValueError(f"{tower}.head_width is larger than {tower}.width ({width})")
    if width % heads:
        raise ValueError(
            f"{tower}.width {width} must be a multiple of its number of attention heads ({heads})"
        )
    _at_most(f"{tower} attention heads", heads, MAX_HEADS)


def _ratio(tower: str, value: Any) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 < value <= MAX_MLP_RATIO
    ):
        raise ValueError(
            f"{tower}.mlp_ratio must be a number above 0 and at most {MAX_MLP_RATIO:g}, "
            f"not {_show(value)}"
        )


def _pair(size: Any) -> list[Any]:
    """An image size as [height, width]: open_clip takes one number or two."""
    if isinstance(size, list | tuple):
        if len(size) != 2:
            raise ValueError(f"vision_cfg.image_size must be one number or two, not {_show(size)}")
        return list(size)
    return [size, size]


# --- small checks shared by both dataclasses ------------------------------------------------


def _show(value: Any) -> str:
    """A value for a message: its repr, cut short (a field may hold megabytes)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _whole(name: str, value: Any, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a whole number, not {_show(value)}")
    if value < low:
        raise ValueError(f"{name} must be at least {low}, not {value}")
    return value


def _at_most(name: str, value: int, limit: int) -> int:
    if value > limit:
        raise ValueError(f"{name} is {value}, more than mkt-tag allows ({limit:,})")
    return value


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, not {_show(value)}")
    return str(value)


def _three_numbers(name: str, value: Any) -> tuple[float, float, float]:
    if (
        not isinstance(value, list | tuple)
        or len(value) != 3
        or any(isinstance(v, bool) or not isinstance(v, int | float) for v in value)
    ):
        raise ValueError(f"{name} must be 3 numbers (red, green, blue), not {_show(value)}")
    if not all(math.isfinite(v) for v in value):
        raise ValueError(f"{name} must be finite numbers, not {_show(value)}")
    red, green, blue = (float(v) for v in value)
    return red, green, blue


def _no_unknown_keys(data: dict[str, Any], cls: type, what: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(str(key) for key in set(data) - known)
    if unknown:
        raise ValueError(f"unknown {what}keys: {', '.join(unknown)}")
