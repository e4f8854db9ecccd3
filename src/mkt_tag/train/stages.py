"""What each MKT stage trains and computes, and the learning-rate schedule."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from mkt_tag import checkpoints, hub, identity, published
from mkt_tag.config import TRAINED_STREAMS
from mkt_tag.errors import MktTagError
from mkt_tag.model import MKT, ImageFeatures, visual_blocks, visual_head, visual_tokens
from mkt_tag.prompts import PromptContext
from mkt_tag.train.data import EpochSampler
from mkt_tag.train.labels import LabelTexts
from mkt_tag.train.settings import TrainConfig

Losses = dict[str, tuple[torch.Tensor, torch.Tensor]]  # loss part -> (sum, count)


class EpochData(Protocol):
    """What a stage's batches are drawn from (AugmentedImages, FeatureRows)."""

    epoch: int  # augmentation draws from (seed, epoch, index)

    def __len__(self) -> int: ...

    def path(self, index: int) -> Any: ...

    def collate(self, items: list[Any]) -> dict[str, Any]: ...


@dataclass
class StagePlan:
    """Everything the training loop needs to run the epochs of one stage."""

    stage: int  # 1 (vision side) or 2 (prompt tuning)
    epochs: int  # epochs of the stage
    dataset: EpochData  # what batches are drawn from
    sampler: EpochSampler  # this process's share of each epoch's order
    workers: int  # data-loading processes
    net: nn.Module  # the module run forward (wrapped for data-parallel runs)
    optimizer: torch.optim.Optimizer  # a param group's "lr_scale" multiplies its lr (default 1)
    losses: Callable[[dict[str, Any]], Losses]  # batch -> forward pass -> its losses
    schedule: Callable[[int], float]  # learning rate of the stage's optimiser step s


def learning_rate(step: int, total: int, warmup: int, base: float, minimum: float) -> float:
    """Linear warm-up over ``warmup`` steps, then half a cosine from ``base`` to ``minimum``."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return minimum + (base - minimum) * 0.5 * (1 + math.cos(math.pi * progress))


def load_model(config: TrainConfig) -> MKT:
    """The model a run starts from, with the run's scoring settings and label prompt.

    Training from a plain backbone fuses both streams (MKT) unless ``config.streams`` says
    otherwise; a checkpoint keeps the streams it was trained with.

    Raises:
        MktTagError: the model cannot be loaded, or has fewer blocks than trainable_blocks.
    """
    located = published.locate(config.model, hub.cache_dir())  # mkt-nus-wide: its folder
    model = checkpoints.load(located)
    first_trainable_block(model.visual, config.trainable_blocks)  # fail before any work
    model.config.top_k = config.top_k
    if config.streams is not None:
        model.config.streams = config.streams
    elif not identity.is_checkpoint(located):
        model.config.streams = TRAINED_STREAMS
    if model.config.template != config.template and not model.config.prompt_context:
        model.config.template = config.template
        model.prompt = PromptContext.from_template(model.clip, model.tokenizer, config.template)
    return model


def first_trainable_block(visual: Any, trainable_blocks: int) -> int:
    """Index of the lowest ViT block stage 1 trains (the last ``trainable_blocks`` are).

    Raises:
        MktTagError: the backbone has fewer blocks than ``trainable_blocks``.
    """
    n_blocks = len(visual.transformer.resblocks)
    if not 1 <= trainable_blocks <= n_blocks:
        raise MktTagError(f"trainable_blocks must be 1..{n_blocks} for this backbone")
    return n_blocks - trainable_blocks


def stage1_parameter_groups(model: MKT, config: TrainConfig) -> list[dict[str, Any]]:
    """The last ``trainable_blocks`` blocks (layer-wise lr decay), ``ln_post`` and ``proj``.

    Block ``i`` of ``L`` gets ``layer_decay ** (L - i)`` as the group's ``lr_scale``; 1-D
    tensors and biases no weight decay.
    """
    visual = model.visual
    blocks = visual.transformer.resblocks
    n_blocks = len(blocks)
    first = first_trainable_block(visual, config.trainable_blocks)
    named: list[tuple[float, str, nn.Parameter]] = []
    for i in range(first, n_blocks):
        scale = config.layer_decay ** (n_blocks - i)
        named += [
            (scale, f"visual.transformer.resblocks.{i}.{n}", p)
            for n, p in blocks[i].named_parameters()
        ]
    named += [(1.0, f"visual.ln_post.{n}", p) for n, p in visual.ln_post.named_parameters()]
    named.append((1.0, "visual.proj", visual.proj))
    groups: dict[tuple[float, bool], dict[str, Any]] = {}
    for scale, name, parameter in named:
        decay = parameter.ndim > 1 and not name.endswith(".bias")
        group = groups.setdefault(
            (scale, decay),
            {
                "params": [],
                "lr_scale": scale,
                "weight_decay": config.weight_decay if decay else 0.0,
            },
        )
        group["params"].append(parameter)
    return list(groups.values())


def trainable_names(model: MKT, stage: int, config: TrainConfig) -> list[str]:
    """State-dict names of what a stage trains (these go into a "delta" checkpoint)."""
    names = {id(p): n for n, p in model.named_parameters()}
    trained = []
    if stage >= 1:
        trained += [
            names[id(p)] for g in stage1_parameter_groups(model, config) for p in g["params"]
        ]
    if stage >= 2:
        trained += ["prompt.prefix", "prompt.suffix"]
    return trained


class Teacher(nn.Module):
    """The frozen top of the starting ViT: stage 1's distillation target.

    Only what stage 1 trains is copied (the top blocks, ``ln_post``, ``proj``): the blocks
    below stay frozen, so student and teacher share their output. It is built from the
    starting weights before a resumed run restores its trained ones.
    """

    def __init__(self, visual: Any, trainable_blocks: int) -> None:
        super().__init__()
        first = first_trainable_block(visual, trainable_blocks)
        self.blocks = nn.ModuleList(copy.deepcopy(b) for b in visual.transformer.resblocks[first:])
        self.ln_post = copy.deepcopy(visual.ln_post)
        self.proj = nn.Parameter(visual.proj.detach().clone())
        self.batch_first = getattr(visual.transformer, "batch_first", True)
        self.requires_grad_(False).eval()

    def forward(self, shared: torch.Tensor) -> ImageFeatures:
        x = shared if self.batch_first else shared.transpose(0, 1)
        for block in self.blocks:
            x = block(x)
        return visual_head(self, x if self.batch_first else x.transpose(0, 1))


class Stage1Net(nn.Module):
    """Student and teacher sharing the frozen lower blocks (computed once per batch)."""

    def __init__(self, model: MKT, teacher: Teacher, labels: LabelTexts) -> None:
        super().__init__()
        self.model = model
        self.split = len(model.visual.transformer.resblocks) - len(teacher.blocks)
        self.teacher = teacher
        self.labels = labels

    def forward(
        self, images: torch.Tensor, candidates: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Label scores (N x labels) from the candidates' embeddings, and the student's and
        the teacher's global embeddings."""
        visual = self.model.visual
        with torch.no_grad():
            shared = visual_blocks(visual, visual_tokens(visual, images), 0, self.split)
            teacher = self.teacher(shared)
        student = visual_head(visual, visual_blocks(visual, shared, self.split))
        scores = self.labels.label_scores(self.model.score(student, candidates).fused)
        return scores, student.global_, teacher.global_

    def train(self, mode: bool = True) -> Stage1Net:
        """Training mode for what stage 1 trains (the top blocks and ``ln_post``) only.

        The rest computes fixed functions and stays in eval mode: the teacher, the text tower,
        the frozen lower blocks and the patch dropout in front of them. Patch dropout would thin
        the tokens that student and teacher share, so the teacher's target would no longer be
        the starting model's embedding of the image; MKT trains without it.
        """
        self.training = mode
        self.model.eval()
        self.teacher.eval()
        visual = self.model.visual
        for module in [*visual.transformer.resblocks[self.split :], visual.ln_post]:
            module.train(mode)
        return self


class Stage2Net(nn.Module):
    """Prompt context -> label embeddings -> scores of precomputed image features."""

    def __init__(self, model: MKT, text_tokens: list[list[int]], labels: LabelTexts) -> None:
        super().__init__()
        self.model = model
        self.text_tokens = text_tokens  # of ``labels.texts``
        self.labels = labels

    def forward(self, global_: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        texts = self.model.prompt.encode(self.model.clip, self.text_tokens)
        candidates = self.labels.embeddings(texts)
        scores = self.model.score(ImageFeatures(global_, patches), candidates).fused
        return self.labels.label_scores(scores)

    def train(self, mode: bool = True) -> Stage2Net:
        """The prompt context has no modes; the frozen text tower stays in eval mode."""
        self.training = mode
        self.model.eval()
        return self
