"""Import the MKT paper's released checkpoints (reference code: GitHub ``sunanhe/MKT``).

The authors released two PyTorch files trained on NUS-WIDE:

- stage 1, the image side: ``CLIPVIT.state_dict()``, OpenAI CLIP's ``visual.*`` layout without
  the ``visual.`` prefix, ``proj`` renamed ``projection_dist``, plus an MLP
  ``projection.fc1/fc2.*`` that the reference builds but never uses;
- stage 2, prompt tuning: a DDP ``PromptLearner`` state dict (``module.`` prefix) holding OpenAI
  CLIP's text tower, whose ``token_embedding`` table was trained.

They become an mkt-tag checkpoint folder that computes what the reference's evaluation
computes (``tests/test_reference.py`` checks it against an independent implementation):

- the image tower's tensors go to ``clip.visual.*`` under the same names (open_clip keeps
  OpenAI's), ``projection_dist`` to ``proj``; the MLP is dropped;
- of stage 2's token table only the template's tokens were tuned (start, "there is a",
  "in the scene", end): those rows become the prompt context. The rest of that table is not
  used: the reference's evaluation embeds label words with the original CLIP table (it builds
  them before loading stage 2), and so does mkt-tag, from the backbone;
- stage 2's other text tensors are frozen CLIP weights and normally equal the backbone's; any
  that differ are imported anyway (stored in the checkpoint), with a note;
- the config records the reference's eval preprocessing (resize 256, centre crop 224, bicubic,
  ImageNet mean/std) and ``top_k = 16`` (its evaluation; its ``inference.py`` uses 18).

Files are read with ``torch.load(weights_only=True)`` only: nothing is ever unpickled.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from mkt_tag import checkpoints
from mkt_tag.checkpoints import read_state_dict, short_list
from mkt_tag.config import (
    DEFAULT_TEMPLATE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelConfig,
    PreprocessConfig,
)
from mkt_tag.errors import CheckpointError, ModelError, OutputError
from mkt_tag.identity import LABELS_FILE
from mkt_tag.model import MKT
from mkt_tag.prompts import split_template, text_tower

REFERENCE_BACKBONE = "ViT-B-16:openai"  # CLIP ViT-B/16, OpenAI weights, QuickGELU
REFERENCE_TOP_K = 16  # patches per label in the reference's evaluation

# Stage 1 names that differ from open_clip's visual tower, and tensors dropped on import.
_VISION_RENAMES = {"projection_dist": "proj"}
_UNUSED_STAGE1 = (
    "projection.fc1.weight",
    "projection.fc1.bias",
    "projection.fc2.weight",
    "projection.fc2.bias",
)
# Top-level names of CLIP's text tower, as in stage 2 (and in open_clip).
_TEXT_ROOTS = (
    "token_embedding",
    "positional_embedding",
    "text_projection",
    "ln_final",
    "transformer",
)
_DDP_PREFIX = "module."


@dataclass
class Conversion:
    """A converted model, the names of its tensors that differ from the backbone, and notes."""

    model: MKT
    stored: list[str]  # model tensors to write to the checkpoint (they differ from the backbone)
    notes: list[str] = field(default_factory=list)  # what was dropped or is worth knowing


@dataclass
class ImportReport:
    """What ``import_reference`` wrote."""

    folder: Path  # the checkpoint folder
    config: ModelConfig  # its configuration, as saved
    stored: list[str]  # tensors stored in model.safetensors
    notes: list[str]  # one line each, for the user
    labels: int | None = None  # labels bundled as labels.txt (None: no --labels)
    warnings: list[str] = field(default_factory=list)  # about the label file, one line each


def reference_preprocess(image_size: int = 224) -> PreprocessConfig:
    """The reference's eval transform: resize to ``size/0.875`` (256 for 224), centre crop,
    bicubic, ImageNet mean/std (timm's defaults, not CLIP's own)."""
    resize = int(image_size / (224 / 256)) if image_size <= 224 else image_size
    return PreprocessConfig(
        image_size=image_size,
        resize=resize,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        interpolation="bicubic",
    )


def template_token_ids(model: MKT) -> tuple[list[int], list[int]]:
    """Token ids of the prompt context around ``{label}`` (start/end tokens included).

    For "There is a {label} in the scene": [49406, 997, 533, 320] and [530, 518, 3562, 49407].
    """
    tokenizer = model.tokenizer
    prefix_text, suffix_text = split_template(model.config.template)
    prefix = [tokenizer.sot_token_id, *tokenizer.encode(prefix_text)]
    suffix = [*tokenizer.encode(suffix_text), tokenizer.eot_token_id]
    if (len(prefix), len(suffix)) != (model.prompt.prefix.shape[0], model.prompt.suffix.shape[0]):
        raise ModelError("internal: template tokens disagree with the model's prompt context")
    return prefix, suffix


def convert(
    stage1: Mapping[str, torch.Tensor],
    stage2: Mapping[str, torch.Tensor] | None = None,
    backbone: str = REFERENCE_BACKBONE,
    cache_dir: Path | None = None,
    download: bool = True,
    sources: tuple[str, str] = ("stage 1", "stage 2"),
) -> Conversion:
    """The reference's model as an mkt-tag ``MKT``, from its state dicts (see module docs).

    ``backbone`` must be the CLIP the reference was trained from (``ViT-B-16:openai``; tests use
    tiny ones); it supplies the label-word token rows and everything the files do not hold.
    ``sources`` names the two files in error messages.
    """
    stage1 = _strip_ddp(stage1, sources[0])
    stage2 = _strip_ddp(stage2, sources[1]) if stage2 is not None else None
    _check_not_swapped(stage1, stage2, sources)  # before a possibly long backbone download
    config = ModelConfig(
        backbone=backbone,
        template=DEFAULT_TEMPLATE,
        top_k=REFERENCE_TOP_K,
        prompt_context=stage2 is not None,
    )
    model = checkpoints.from_backbone(backbone, cache_dir, download, config)
    arch = config.arch or {}
    if not arch.get("quick_gelu", False):
        raise ModelError(
            f"backbone {backbone!r} is built with GELU, but the paper's checkpoints are OpenAI "
            'CLIP weights, which need QuickGELU: use ViT-B-16:openai, or set "quick_gelu": true '
            "in the model_cfg of a local copy's open_clip_config.json"
        )
    size = arch.get("vision_cfg", {}).get("image_size", 224)
    config.preprocess = reference_preprocess(
        int(size[0] if isinstance(size, list | tuple) else size)
    )
    notes = [
        f"preprocessing: resize {config.preprocess.resize}, centre crop "
        f"{config.preprocess.image_size}, bicubic, ImageNet mean/std (the reference's eval "
        f"transform); top_k {config.top_k} (its evaluation)"
    ]
    stored = _import_stage1(model, stage1, sources[0], backbone, notes)
    if stage2 is None:
        notes.append(
            "no stage 2: labels use the plain template, as the paper's stage-1 model "
            "(before prompt tuning)"
        )
    else:
        stored += _import_stage2(model, stage2, sources[1], backbone, notes)
    # These are no longer the backbone's weights: caches must not key results on its fingerprint.
    model.fingerprint = ""
    return Conversion(model.eval(), stored, notes)


def import_reference(
    stage1: str | Path,
    out: str | Path,
    stage2: str | Path | None = None,
    labels: str | Path | None = None,
    backbone: str = REFERENCE_BACKBONE,
    cache_dir: Path | None = None,
    download: bool = True,
) -> ImportReport:
    """Convert the reference's stage-1 (and stage-2) files into the checkpoint folder ``out``.

    ``labels``, a label file, is checked and copied into the folder as ``labels.txt``. An
    existing checkpoint at ``out`` is replaced; any other non-empty folder is refused.
    """
    from mkt_tag import vocab

    out = Path(out)
    _check_out(out)
    vocabulary = vocab.read_labels(labels) if labels is not None else None
    state1 = read_state_dict(stage1, "stage-1")
    state2 = read_state_dict(stage2, "stage-2") if stage2 is not None else None
    conversion = convert(
        state1, state2, backbone, cache_dir, download, sources=(str(stage1), str(stage2))
    )
    if vocabulary is not None:
        conversion.model.tokenize(vocabulary.labels, source=str(labels))  # all fit the context?
    checkpoints.save(conversion.model, out, trained=conversion.stored)
    if labels is not None:
        try:
            shutil.copyfile(labels, out / LABELS_FILE)
        except OSError as error:
            raise OutputError(f"{out / LABELS_FILE}: cannot write ({error})") from error
    return ImportReport(
        folder=out,
        config=conversion.model.config,
        stored=sorted(conversion.stored),
        notes=conversion.notes,
        labels=len(vocabulary.labels) if vocabulary is not None else None,
        warnings=vocabulary.warnings if vocabulary is not None else [],
    )


def _import_stage1(
    model: MKT, state: dict[str, torch.Tensor], source: str, backbone: str, notes: list[str]
) -> list[str]:
    visual = model.visual
    renamed_back = {new: old for old, new in _VISION_RENAMES.items()}
    expected = {renamed_back.get(k, k): v.shape for k, v in visual.state_dict().items()}
    _check_layout(
        state, expected, source, f"an MKT stage-1 checkpoint for {backbone}", _UNUSED_STAGE1
    )
    dropped = [k for k in _UNUSED_STAGE1 if k in state]
    if dropped:
        notes.append(
            f"dropped {', '.join(dropped)}: an MLP head the reference builds but never uses "
            "(both streams use projection_dist, imported as proj)"
        )
    tensors = {_VISION_RENAMES.get(k, k): v for k, v in state.items() if k not in _UNUSED_STAGE1}
    prefix = _module_name(model, visual)
    changed = _copy_into(visual, prefix, tensors)
    notes.append(
        f"image tower: {len(changed)} of {len(tensors)} tensors differ from the backbone's "
        f"(stored): {_grouped(name.removeprefix(prefix) for name in changed) or 'none'}"
    )
    return changed


def _import_stage2(
    model: MKT, state: dict[str, torch.Tensor], source: str, backbone: str, notes: list[str]
) -> list[str]:
    tower = text_tower(model.clip)
    expected = {k: v.shape for k, v in tower.state_dict().items() if k.split(".")[0] in _TEXT_ROOTS}
    _check_layout(state, expected, source, f"an MKT stage-2 checkpoint for {backbone}")
    tuned = state["token_embedding.weight"]
    prefix_ids, suffix_ids = template_token_ids(model)
    with torch.no_grad():
        model.prompt.prefix.copy_(tuned[prefix_ids])
        model.prompt.suffix.copy_(tuned[suffix_ids])
    notes.append(
        f"prompt context: stage 2's tuned rows of the template tokens {prefix_ids} + {{label}} + "
        f"{suffix_ids}"
    )
    original = tower.token_embedding.weight
    others = torch.ones(original.shape[0], dtype=torch.bool)
    others[prefix_ids + suffix_ids] = False
    drift = (tuned[others].to(original.dtype) - original[others].detach()).abs().max().item()
    if drift > 0:
        notes.append(
            f"stage 2's other token rows differ from the backbone's (max {drift:.2g}, likely "
            "weight decay on the whole table); label words use the backbone's rows, as the "
            "reference's evaluation does"
        )
    rest = {k: v for k, v in state.items() if k != "token_embedding.weight"}
    changed = _copy_into(tower, _module_name(model, tower), rest)
    if changed:
        notes.append(
            f"stage 2's text tower differs from the backbone's in {len(changed)} tensor(s) "
            f"({short_list(changed)}); imported them, though the reference keeps them frozen: "
            "was it trained from this backbone?"
        )
    prompt = _module_name(model, model.prompt)
    return [*changed, f"{prompt}prefix", f"{prompt}suffix"]


def _check_not_swapped(
    stage1: Mapping[str, torch.Tensor],
    stage2: Mapping[str, torch.Tensor] | None,
    sources: tuple[str, str],
) -> None:
    if "token_embedding.weight" in stage1:
        raise CheckpointError(
            f"{sources[0]}: this is a stage-2 (prompt) checkpoint, not stage 1: swap the two files"
        )
    if stage2 is not None and ("projection_dist" in stage2 or "conv1.weight" in stage2):
        raise CheckpointError(
            f"{sources[1]}: this is a stage-1 (image) checkpoint, not stage 2: swap the two files"
        )


def _strip_ddp(state: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Drop DistributedDataParallel's ``module.`` prefix (all names or none may have it)."""
    prefixed = [k.startswith(_DDP_PREFIX) for k in state]
    if state and all(prefixed):
        return {k[len(_DDP_PREFIX) :]: v for k, v in state.items()}
    if any(prefixed):
        raise CheckpointError(
            f"{source}: mixes tensor names with and without DDP's {_DDP_PREFIX!r} prefix"
        )
    return dict(state)


def _check_layout(
    state: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Size],
    source: str,
    what: str,
    optional: Iterable[str] = (),
) -> None:
    """Every expected name present with its shape, nothing else, all floating and finite."""
    missing = [k for k in expected if k not in state]
    if missing:
        raise CheckpointError(f"{source}: not {what}: missing {short_list(missing)}")
    unexpected = [k for k in state if k not in expected and k not in set(optional)]
    if unexpected:
        raise CheckpointError(f"{source}: not {what}: unexpected {short_list(unexpected)}")
    for name, shape in expected.items():
        if state[name].shape != shape:
            raise CheckpointError(
                f"{source}: not {what}: {name} has shape {tuple(state[name].shape)}, "
                f"expected {tuple(shape)}"
            )
    for name, tensor in state.items():
        if not tensor.is_floating_point():
            raise CheckpointError(f"{source}: {name} is {tensor.dtype}, expected floating point")
        if not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{source}: {name} contains NaN or infinity (damaged file?)")


def _copy_into(module: nn.Module, prefix: str, tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """Copy tensors into ``module``; the model names (``prefix`` + name) of those that changed."""
    state = module.state_dict()
    changed = []
    with torch.no_grad():
        for name, tensor in tensors.items():
            target = state[name]  # shares storage with the parameter
            value = tensor.to(target.dtype)
            if not torch.equal(value, target):
                target.copy_(value)
                changed.append(prefix + name)
    return changed


def _module_name(model: nn.Module, module: nn.Module) -> str:
    """``module``'s state-dict prefix inside ``model`` ("clip.visual.", "clip.", ...)."""
    for name, candidate in model.named_modules():
        if candidate is module:
            return f"{name}." if name else ""
    raise ModelError("internal: module not found in the model")


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder; choose a new checkpoint folder")
    if out.is_dir() and any(out.iterdir()) and not checkpoints.is_checkpoint(out):
        raise OutputError(
            f"{out}: folder is not empty and not an mkt-tag checkpoint; choose a new folder "
            "(an existing checkpoint would be replaced)"
        )


def _grouped(names: Iterable[str]) -> str:
    """Names with transformer blocks collapsed: "transformer.resblocks.10.*, proj"."""
    groups = dict.fromkeys(re.sub(r"^(transformer\.resblocks\.\d+)\..*", r"\1.*", n) for n in names)
    return ", ".join(groups)
