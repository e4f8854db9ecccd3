"""The MKT model: a CLIP ViT with a two-stream head over label embeddings.

- global stream: the class token after ``ln_post``, through CLIP's ``proj``: ``s_g = g @ E.T``;
- local stream: every patch token through the same ``proj``; per label, the mean of its
  ``top_k`` best patch scores: ``s_l``;
- fusion: each score vector L2-normalised across labels, then averaged.

``ModelConfig.streams`` can keep one stream only (``"global"`` or ``"local"``, L2-normalised as
inside the fusion), for ablations; MKT is ``"both"``.

Neither image nor label features are normalised and there is no logit scale (as in the paper),
so scores rank labels within an image; they are not calibrated probabilities.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mkt_tag.config import STREAMS, ModelConfig, PreprocessConfig, check_arch
from mkt_tag.errors import LabelFileError, ModelError
from mkt_tag.prompts import PromptContext, Tokenizer, text_tower
from mkt_tag.vocab import MAX_LABEL_CHARS

# Upper bound on elements of one (images x patches x labels) score block, to bound memory.
_SCORE_BLOCK = 1 << 24


@dataclass
class ImageFeatures:
    """Projected image tokens: ``global_`` (B x D) and ``patches`` (B x P x D)."""

    global_: torch.Tensor
    patches: torch.Tensor


@dataclass
class Scores:
    """Per-image, per-label scores (B x C) of each stream and of their fusion."""

    global_: torch.Tensor
    local: torch.Tensor
    fused: torch.Tensor


def normalise_pixels(
    images: torch.Tensor, preprocess: PreprocessConfig, dtype: torch.dtype
) -> torch.Tensor:
    """uint8 B x 3 x H x W pixels -> the model's normalised input (the checkpoint's mean/std)."""
    mean = torch.tensor(preprocess.mean, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(preprocess.std, device=images.device).view(1, 3, 1, 1)
    return ((images.float() / 255.0 - mean) / std).to(dtype)


def local_scores(patches: torch.Tensor, labels: torch.Tensor, top_k: int) -> torch.Tensor:
    """Mean of the ``top_k`` highest patch scores per label (B x C), in label blocks."""
    batch, n_patches, _ = patches.shape
    k = max(1, min(top_k, n_patches))
    step = max(1, _SCORE_BLOCK // max(1, batch * n_patches))
    blocks = [
        (patches @ labels[start : start + step].T).topk(k, dim=1).values.mean(dim=1)
        for start in range(0, labels.shape[0], step)
    ]
    return torch.cat(blocks, dim=1)


def fuse(global_scores: torch.Tensor, local: torch.Tensor, streams: str = "both") -> torch.Tensor:
    """MKT's fusion: L2-normalise each stream's scores across labels, then average.

    ``streams`` ``"global"`` or ``"local"`` keeps that stream's normalised scores alone.
    """
    if streams == "global":
        return F.normalize(global_scores, dim=-1)
    if streams == "local":
        return F.normalize(local, dim=-1)
    if streams != "both":
        raise ValueError(f"streams must be one of {', '.join(STREAMS)}, not {streams!r}")
    return (F.normalize(global_scores, dim=-1) + F.normalize(local, dim=-1)) / 2


def mkt_scores(
    features: ImageFeatures, labels: torch.Tensor, top_k: int, streams: str = "both"
) -> Scores:
    """All three score matrices for a batch of image features and label embeddings (C x D)."""
    labels = labels.to(features.global_.dtype)
    global_scores = features.global_ @ labels.T
    local = local_scores(features.patches, labels, top_k)
    return Scores(global_scores, local, fuse(global_scores, local, streams))


def check_vision_tower(visual: Any) -> None:
    """Fail clearly for towers MKT cannot use (no class token, attention pooling, timm)."""
    needed = (
        "conv1",
        "class_embedding",
        "positional_embedding",
        "ln_pre",
        "transformer",
        "ln_post",
        "proj",
    )
    if not all(getattr(visual, name, None) is not None for name in needed):
        raise ModelError(
            "unsupported image tower: MKT needs a CLIP ViT with a class token and proj"
        )
    if (
        getattr(visual, "attn_pool", None) is not None
        or getattr(visual, "pool_type", "tok") != "tok"
    ):
        raise ModelError(
            "unsupported image tower: MKT needs class-token pooling, not attention/avg"
        )


def build_clip(arch: dict[str, Any]) -> nn.Module:
    """An open_clip CLIP model from its config dict (random weights).

    Everything is checked before anything is allocated (``config.check_arch``: the kind of
    towers, types, sizes); callers that know the config's file check it first, to name it.
    """
    import open_clip

    try:
        check_arch(arch)
    except ValueError as error:
        raise ModelError(str(error)) from error
    arch = copy.deepcopy(arch)
    custom_text = arch.pop("custom_text", False)
    cls = open_clip.CustomTextCLIP if custom_text else open_clip.CLIP
    try:
        clip = cls(**arch)
    except Exception as error:  # open_clip checks little itself: a value of the wrong kind
        raise ModelError(
            f"invalid open_clip model config ({type(error).__name__}: {error})"
        ) from error
    check_vision_tower(clip.visual)
    text_tower(clip)
    return clip


def visual_tokens(visual: Any, images: torch.Tensor) -> torch.Tensor:
    """Patch embedding, class token, positions and ``ln_pre``: the ViT's input (B x 1+P x W)."""
    x = visual.conv1(images.to(visual.conv1.weight.dtype))
    x = x.flatten(2).transpose(1, 2)  # B x P x width
    cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    return visual.ln_pre(visual.patch_dropout(x))


def visual_blocks(
    visual: Any, x: torch.Tensor, start: int = 0, stop: int | None = None
) -> torch.Tensor:
    """Transformer blocks ``start:stop`` of the ViT (batch-first in and out).

    Split runs let training share the frozen lower blocks between student and teacher.
    """
    transformer = visual.transformer
    batch_first = getattr(transformer, "batch_first", True)
    if not batch_first:
        x = x.transpose(0, 1)
    for block in transformer.resblocks[start:stop]:
        x = block(x)
    return x if batch_first else x.transpose(0, 1)


def visual_head(visual: Any, x: torch.Tensor) -> ImageFeatures:
    """``ln_post`` on every token, then CLIP's ``proj``: global (class token) and patches."""
    # The head runs in fp32 even for a bf16 tower: bf16 scores (3 significant digits)
    # would tie and reorder labels, and this part costs almost nothing.
    x = visual.ln_post(x).float() @ visual.proj.float()
    return ImageFeatures(global_=x[:, 0], patches=x[:, 1:])


class MKT(nn.Module):
    """MKT over an open_clip CLIP model. ``forward(images, labels)`` gives fused scores."""

    def __init__(self, clip: nn.Module, config: ModelConfig, tokenizer: Tokenizer) -> None:
        super().__init__()
        check_vision_tower(clip.visual)
        self.clip = clip
        self.config = config
        self.tokenizer = tokenizer
        self.prompt = PromptContext.from_template(clip, tokenizer, config.template)
        # Identifies the weights this model was loaded from, for cache keys ("" = unknown).
        self.fingerprint = ""

    @property
    def visual(self) -> Any:
        return self.clip.visual

    @property
    def context_length(self) -> int:
        return int(text_tower(self.clip).positional_embedding.shape[0])

    @property
    def max_label_tokens(self) -> int:
        """How many tokens a label may have so that its prompt fits the text context."""
        return self.context_length - self.prompt.length

    def encode_images(self, images: torch.Tensor) -> ImageFeatures:
        """Run the ViT to ``ln_post`` keeping all tokens; project them with CLIP's ``proj``."""
        return visual_head(
            self.visual, visual_blocks(self.visual, visual_tokens(self.visual, images))
        )

    def tokenize(self, labels: Sequence[str], source: str = "labels") -> list[list[int]]:
        """BPE tokens of each label; labels too long for the text context are an error.

        ``source`` names where the labels came from (a file) in the error message.
        """
        # A label of megabytes would keep the tokenizer busy for minutes: refuse it unread.
        huge = [label for label in labels if len(label) > MAX_LABEL_CHARS]
        if huge:
            shown = ", ".join(
                f"{label[:20]!r}... ({len(label):,} characters)" for label in huge[:3]
            )
            raise LabelFileError(
                source,
                f"{len(huge)} label(s) longer than {MAX_LABEL_CHARS:,} characters: {shown}",
            )
        tokens = [self.tokenizer.encode(label) for label in labels]
        too_long = [
            (lab, len(t))
            for lab, t in zip(labels, tokens, strict=True)
            if len(t) > self.max_label_tokens
        ]
        if too_long:
            shown = ", ".join(f"{lab[:40]!r} ({n} tokens)" for lab, n in too_long[:3])
            raise LabelFileError(
                source,
                f"{len(too_long)} label(s) too long for the text context "
                f"(at most {self.max_label_tokens} tokens with this template): {shown}",
            )
        return tokens

    def encode_labels(
        self, labels: Sequence[str], batch_size: int = 256, source: str = "labels"
    ) -> torch.Tensor:
        """Label embeddings (C x D), not normalised, from the prompt and the text tower."""
        return self.prompt.encode(self.clip, self.tokenize(labels, source), batch_size)

    def score(self, features: ImageFeatures, labels: torch.Tensor) -> Scores:
        return mkt_scores(features, labels, self.config.top_k, self.config.streams)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.score(self.encode_images(images), labels).fused
