"""Loading any model id, and saving/loading mkt-tag checkpoints.

A checkpoint is a directory::

    mkt_config.json      ModelConfig as JSON (backbone id, its architecture, template, ...)
    model.safetensors    only what differs from the backbone's pretrained weights ("delta"),
                         or everything when the backbone has no pretrained weights ("full")

Nothing is ever unpickled: safetensors only.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mkt_tag import hub, identity
from mkt_tag.config import ModelConfig
from mkt_tag.errors import CheckpointError, ModelError
from mkt_tag.files import atomic_directory
from mkt_tag.identity import CONFIG_FILE, WEIGHTS_FILE, is_checkpoint
from mkt_tag.model import MKT, build_clip


def _tokenizer(arch: dict) -> object:
    from open_clip.tokenizer import SimpleTokenizer

    if arch.get("text_cfg", {}).get("hf_tokenizer_name"):
        raise ModelError("unsupported backbone: it needs a Hugging Face tokenizer")
    context = int(arch.get("text_cfg", {}).get("context_length", 77))
    return SimpleTokenizer(context_length=context)


def _load_backbone_weights(clip: nn.Module, weights: Path) -> None:
    import open_clip

    _check_stored_types(clip, weights)
    try:
        open_clip.load_checkpoint(clip, str(weights), strict=True, weights_only=True)
    except Exception as error:
        raise ModelError(f"{weights}: cannot load backbone weights ({error})") from error
    _check_finite(clip.state_dict(), weights, ModelError)


def _check_stored_types(clip: nn.Module, weights: Path) -> None:
    """Refuse integer tensors stored for floating-point weights (loading would cast them).

    Reads only the file's header (safetensors) or maps it (PyTorch zip files); a file this
    cannot read is left to ``open_clip.load_checkpoint``, which says what is wrong with it.
    """
    try:
        stored = _non_float_tensors(weights)
    except Exception:
        return
    state = clip.state_dict()
    for name, dtype in stored.items():
        name = name.removeprefix("module.")
        if name in state and state[name].is_floating_point():
            raise ModelError(
                f"{weights}: tensor {name} is {dtype}, expected floating point weights "
                "(a damaged or converted file?)"
            )


_SAFETENSORS_INTEGERS = {"BOOL": "bool", "U8": "uint8", "I8": "int8", "I16": "int16",
                         "I32": "int32", "I64": "int64"}  # fmt: skip


def _non_float_tensors(weights: Path) -> dict[str, str]:
    """Tensors of a weights file that are not floating point, and their types (no data read)."""
    if weights.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as handle:
            types = {name: handle.get_slice(name).get_dtype() for name in handle.keys()}  # noqa: SIM118
        return {
            name: _SAFETENSORS_INTEGERS.get(dtype, dtype.lower())
            for name, dtype in types.items()
            if not dtype.startswith(("F", "BF"))
        }
    data = torch.load(weights, map_location="cpu", weights_only=True, mmap=True)
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        return {}
    return {
        str(name): str(tensor.dtype).removeprefix("torch.")
        for name, tensor in data.items()
        if torch.is_tensor(tensor) and not tensor.is_floating_point()
    }


def _check_finite(
    tensors: dict[str, torch.Tensor], source: Path, error: type[ModelError] = CheckpointError
) -> None:
    """Refuse NaN or infinite weights: every score would be NaN, and no tag would pass."""
    for name, tensor in tensors.items():
        if not tensor.is_floating_point() or bool(tensor.sum().isfinite()):
            continue  # a NaN or infinity anywhere makes the sum one: 5x faster than isfinite
        if not bool(torch.isfinite(tensor).all()):  # or the sum overflowed
            raise error(
                f"{source}: tensor {name} has NaN or infinite values: the weights are damaged "
                "(a diverged training run, or a broken copy); use another checkpoint"
            )


def from_backbone(
    backbone_id: str,
    cache_dir: Path | None = None,
    download: bool = True,
    config: ModelConfig | None = None,
) -> MKT:
    """A zero-shot MKT model on a backbone (no trained head): the baseline the paper starts from."""
    backbone = hub.resolve(backbone_id, cache_dir, download)
    config = config or ModelConfig.for_backbone(backbone_id, backbone.preprocess)
    config.arch = backbone.arch
    clip = _backbone_clip(backbone)
    model = MKT(clip.eval(), config, _tokenizer(backbone.arch))  # type: ignore[arg-type]
    model.fingerprint = identity.backbone_fingerprint(backbone)
    return model


def _backbone_clip(backbone: hub.Backbone, arch: dict | None = None) -> torch.nn.Module:
    """The CLIP model of a backbone with its pretrained weights (seeded random without)."""
    if backbone.weights is None:
        # A custom config without weights: seeded, so the same id always gives the same model.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return build_clip(arch or backbone.arch)
    clip = build_clip(arch or backbone.arch)
    _load_backbone_weights(clip, backbone.weights)
    return clip


def load(model_id: str | Path, cache_dir: Path | None = None, download: bool = True) -> MKT:
    """Load an mkt-tag checkpoint directory or a backbone id (see ``hub``), in eval mode."""
    found = identity.resolve(model_id, cache_dir, download)
    if found.checkpoint is None:
        return _on_backbone(found)
    return _load_checkpoint(found)


def _on_backbone(found: identity.ModelIdentity) -> MKT:
    assert found.backbone is not None
    clip = _backbone_clip(found.backbone)
    tokenizer = _tokenizer(found.backbone.arch)
    model = MKT(clip.eval(), found.config, tokenizer)  # type: ignore[arg-type]
    model.fingerprint = found.weights
    return model


def _load_checkpoint(found: identity.ModelIdentity) -> MKT:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config, folder = found.config, found.checkpoint
    assert folder is not None and config.arch is not None
    if found.backbone is not None:
        clip = _backbone_clip(found.backbone, config.arch)
    else:
        clip = build_clip(config.arch)
    model = MKT(clip, config, _tokenizer(config.arch))  # type: ignore[arg-type]
    if config.weights != "none":
        weights = folder / WEIGHTS_FILE
        try:
            tensors = load_file(str(weights))
        except (OSError, SafetensorError) as error:
            raise CheckpointError(f"{weights}: cannot read weights ({error})") from error
        _apply(model, tensors, weights, full=config.weights == "full")
    model.fingerprint = found.weights
    return model.eval()


def _apply(model: MKT, tensors: dict[str, torch.Tensor], source: Path, full: bool) -> None:
    """Copy checkpoint tensors into the model, checking every name and shape first."""
    state = model.state_dict()
    unknown = sorted(set(tensors) - set(state))
    if unknown:
        raise CheckpointError(
            f"{source}: unexpected tensors {', '.join(unknown[:5])}"
            f"{' ...' if len(unknown) > 5 else ''} (made for another architecture?)"
        )
    wrong = [k for k, v in tensors.items() if v.shape != state[k].shape]
    if wrong:
        k = wrong[0]
        raise CheckpointError(
            f"{source}: tensor {k} has shape {tuple(tensors[k].shape)}, "
            f"the model expects {tuple(state[k].shape)}"
        )
    if full:
        missing = sorted(set(state) - set(tensors))
        if missing:
            raise CheckpointError(f"{source}: missing tensors {', '.join(missing[:5])}")
    for name, tensor in tensors.items():
        if tensor.is_floating_point() != state[name].is_floating_point():
            raise CheckpointError(
                f"{source}: tensor {name} is {str(tensor.dtype).removeprefix('torch.')}, the "
                f"model expects {str(state[name].dtype).removeprefix('torch.')} "
                "(a damaged or converted file?)"
            )
    _check_finite(tensors, source)
    model.load_state_dict(tensors, strict=False)


def save(model: MKT, folder: Path, trained: Iterable[str] | None = None) -> None:
    """Write ``model`` as a checkpoint directory, atomically (a folder swap).

    ``trained`` names the parameters that differ from the backbone's pretrained weights; only
    those are stored. With ``None``, or for a backbone without pretrained weights, all are.
    """
    from safetensors.torch import save_file

    config = model.config
    state = model.state_dict()
    has_pretrained = hub.parse_id(config.backbone)[0] != "json"
    if trained is not None and has_pretrained:
        names = sorted(set(trained))
        missing = [n for n in names if n not in state]
        if missing:
            raise ValueError(f"not model parameters: {missing[:5]}")
        config.weights = "delta"
    else:
        names = sorted(state)
        config.weights = "full"
    tensors = {n: state[n].detach().to("cpu").contiguous() for n in names}
    folder = Path(folder)
    if (
        folder.exists()
        and not is_checkpoint(folder)
        and (not folder.is_dir() or any(folder.iterdir()))
    ):
        # Saving replaces the folder: never a folder of something else (photos, a run, ...).
        raise CheckpointError(
            f"{folder}: exists and is not an mkt-tag checkpoint; choose another folder"
        )
    with atomic_directory(folder) as staging:
        save_file(tensors, str(staging / WEIGHTS_FILE), metadata={"format": "pt", "mkt_tag": "1"})
        (staging / CONFIG_FILE).write_text(
            json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8"
        )


def read_state_dict(path: str | Path, stage: str = "") -> dict[str, torch.Tensor]:
    """A plain ``{name: tensor}`` file, loaded with ``weights_only=True``; never unpickles code.

    ``stage`` ("stage-1", "stage-2") only makes messages clearer.
    """
    path = Path(path)
    what = f"{stage} checkpoint" if stage else "checkpoint"
    if not path.exists():
        raise CheckpointError(f"{path}: file not found ({what})")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a file ({what})")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's safe unpickler names any class or function the file asks for as "GLOBAL x".
        text = str(error)
        found = re.search(r"GLOBAL ([\w.]+)", text)
        if found:
            raise CheckpointError(
                f"{path}: refused: loading it would unpickle Python objects ({found.group(1)}), "
                f"which can run arbitrary code; a {what} must be a plain state_dict of tensors"
            ) from error
        detail = _first_line(text.split("WeightsUnpickler error:")[-1])
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint ({detail}): damaged, or not a plain "
            "state_dict of tensors"
        ) from error
    except Exception as error:  # torch.load raises a grab-bag for damaged files
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint "
            f"({type(error).__name__}: {_first_line(str(error))}); download it again?"
        ) from error
    if not isinstance(data, dict):
        raise CheckpointError(
            f"{path}: expected a state_dict (names to tensors), found a {type(data).__name__}"
        )
    bad = [str(k) for k, v in data.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise CheckpointError(f"{path}: {short_list(bad)}: not tensors (expected a state_dict)")
    return dict(data)


def short_list(names: Iterable[Any], shown: int = 5) -> str:
    """The first ``shown`` names, and how many more: "a, b, c (+4 more)"."""
    names = list(names)
    more = f" (+{len(names) - shown} more)" if len(names) > shown else ""
    return ", ".join(str(n) for n in names[:shown]) + more


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[0] if lines else "no details")[:200]


def stored_tensor_names(model_id: str | Path) -> set[str]:
    """Names of the tensors a checkpoint folder stores (empty for a backbone id)."""
    if not is_checkpoint(model_id):
        return set()
    from safetensors import safe_open

    path = Path(model_id) / WEIGHTS_FILE
    if not path.is_file():
        return set()
    with safe_open(str(path), framework="pt") as handle:
        return set(handle.keys())
