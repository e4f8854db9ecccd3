"""Label embeddings: CLIP's text tower run on prompts with (optionally learned) context.

A prompt is ``[prefix context] + label tokens + [suffix context]``. The context vectors start
as the token embeddings of the template around ``{label}`` ("There is a" / "in the scene",
with the start and end tokens), and MKT's stage 2 learns them, CoOp-style.

The text tower is causal, so the end-of-text output does not depend on the padding after it:
prompts are encoded at their real length, batched by length, instead of being padded to the
77-token context. Same numbers as ``encode_text`` (see tests), several times faster.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch import nn

from mkt_tag.errors import ModelError


class Tokenizer(Protocol):
    sot_token_id: int
    eot_token_id: int

    def encode(self, text: str) -> list[int]: ...


def text_tower(clip: nn.Module) -> Any:
    """The module holding CLIP's text transformer (``CLIP`` or ``CustomTextCLIP``)."""
    tower = getattr(clip, "text", clip)
    needed = ("token_embedding", "positional_embedding", "transformer", "ln_final")
    if not all(hasattr(tower, name) for name in needed):
        raise ModelError("unsupported text tower: mkt-tag needs a CLIP-style text transformer")
    if (
        getattr(tower, "attn_mask", None) is None
        or getattr(tower, "text_pool_type", "argmax") != "argmax"
    ):
        raise ModelError(
            "unsupported text tower: mkt-tag needs a causal text transformer pooled at the "
            "end-of-text token (OpenAI CLIP style)"
        )
    return tower


def split_template(template: str) -> tuple[str, str]:
    """("There is a", "in the scene") from "There is a {label} in the scene"."""
    if template.count("{label}") != 1:
        raise ModelError(f"prompt template {template!r} must contain '{{label}}' exactly once")
    prefix, suffix = template.split("{label}")
    return prefix.strip(), suffix.strip()


def template_token_ids(tokenizer: Tokenizer, template: str) -> tuple[list[int], list[int]]:
    """The tokens around the label: ([start, "there", "is", "a"], ["in", "the", "scene", end])."""
    prefix_text, suffix_text = split_template(template)
    prefix = [tokenizer.sot_token_id, *tokenizer.encode(prefix_text)]
    return prefix, [*tokenizer.encode(suffix_text), tokenizer.eot_token_id]


def label_token_budget(tokenizer: Tokenizer, template: str, context_length: int) -> int:
    """How many tokens a label may have so that its prompt fits the text context."""
    prefix, suffix = template_token_ids(tokenizer, template)
    return context_length - len(prefix) - len(suffix)


class PromptContext(nn.Module):
    """The prompt's context vectors around the label tokens (learnable in stage 2)."""

    def __init__(self, prefix: torch.Tensor, suffix: torch.Tensor) -> None:
        super().__init__()
        self.prefix = nn.Parameter(prefix.detach().clone(), requires_grad=False)
        self.suffix = nn.Parameter(suffix.detach().clone(), requires_grad=False)

    @classmethod
    def from_template(cls, clip: nn.Module, tokenizer: Tokenizer, template: str) -> PromptContext:
        tower = text_tower(clip)
        prefix_ids, suffix_ids = template_token_ids(tokenizer, template)
        table = tower.token_embedding.weight
        with torch.no_grad():
            return cls(table[prefix_ids].float(), table[suffix_ids].float())

    @property
    def length(self) -> int:
        """Context tokens around the label (start and end tokens included)."""
        return int(self.prefix.shape[0] + self.suffix.shape[0])

    def encode(
        self, clip: nn.Module, label_tokens: Sequence[Sequence[int]], batch_size: int = 256
    ) -> torch.Tensor:
        """Label embeddings (C x D, not normalised) for tokenised labels, in input order."""
        tower = text_tower(clip)
        table = tower.token_embedding.weight
        by_length: dict[int, list[int]] = defaultdict(list)
        for index, tokens in enumerate(label_tokens):
            by_length[len(tokens)].append(index)
        out: torch.Tensor | None = None
        for n_tokens, indices in sorted(by_length.items()):
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                ids = torch.tensor(
                    [list(label_tokens[i]) for i in chunk], dtype=torch.long, device=table.device
                ).reshape(len(chunk), n_tokens)
                embedded = self._encode_same_length(tower, table[ids])
                if out is None:
                    out = embedded.new_empty((len(label_tokens), embedded.shape[1]))
                out[torch.tensor(chunk, device=out.device)] = embedded
        if out is None:
            raise ModelError("no labels to encode")
        return out

    def _encode_same_length(self, tower: Any, labels: torch.Tensor) -> torch.Tensor:
        batch = labels.shape[0]
        dtype = labels.dtype
        x = torch.cat(
            [
                self.prefix.to(dtype).expand(batch, -1, -1),
                labels,
                self.suffix.to(dtype).expand(batch, -1, -1),
            ],
            dim=1,
        )
        length = x.shape[1]
        x = x + tower.positional_embedding[:length].to(dtype)
        mask = torch.full((length, length), float("-inf"), device=x.device, dtype=dtype).triu(1)
        x = tower.transformer(x, attn_mask=mask)
        x = tower.ln_final(x[:, -1])  # the end-of-text token is last: nothing padded after it
        projection = tower.text_projection
        if projection is None:
            return x
        return projection(x) if isinstance(projection, nn.Module) else x @ projection
