"""Settings of a training run: defaults from the MKT paper, a TOML file, then flags.

The resolved settings are saved as ``train_config.json`` in the run folder; ``--resume``
reads them back, so a resumed run is the same run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mkt_tag.config import DEFAULT_BACKBONE, DEFAULT_TEMPLATE, STREAMS
from mkt_tag.devices import DEVICES
from mkt_tag.errors import InputFileError

CONFIG_FILE = "train_config.json"
STAGES = ("1", "2", "all")

# Settings that name files or folders: relative ones in a config file are relative to it.
PATH_SETTINGS = ("data", "labels", "out", "val", "images_root")
# What may change when a run is resumed (the rest is the run itself).
RESUME_SETTINGS = ("device", "workers", "max_steps")
# Flags not spelled as their setting (``--name-with-dashes``).
FLAGS = {"images_root": "--images"}


class SettingsError(InputFileError):
    """A setting has an unknown name, a wrong type or an impossible value."""


@dataclass
class TrainConfig:
    """Every setting of a run (MKT paper defaults). One line per field, as in ``--help``."""

    data: str = ""  # training data: .csv/.tsv/.jsonl, or a folder of images with sidecars
    labels: str = ""  # the seen vocabulary: label file
    out: str = "runs/mkt"  # run folder (checkpoints best/ and last/, metrics.csv, state/)
    model: str = DEFAULT_BACKBONE  # backbone id or checkpoint to start from
    val: str | None = None  # validation data; default: hold out val_fraction of the data
    val_fraction: float = 0.1  # share of the data held out for validation without --val
    images_root: str | None = None  # image paths are relative to this (default: data file)
    separator: str = "|"  # between labels in a CSV/TSV cell
    strict: bool = False  # bad rows and unknown labels are errors instead of warnings
    stage: str = "all"  # "1" (vision side), "2" (prompt tuning) or "all"
    seed: int = 42  # seeds data order, augmentation and the validation split
    template: str = DEFAULT_TEMPLATE  # label prompt
    top_k: int = 16  # patches per label in the local stream
    # scores fused: "both" (MKT), "global", "local"; None: a checkpoint's, "both" from a backbone
    streams: str | None = None
    epochs: int = 20  # stage 1 epochs
    warmup_epochs: int | None = None  # stage 1 linear warm-up (None: 2, fewer if epochs < 3)
    batch_size: int = 64  # stage 1 images per step, all processes together (see torchrun)
    lr: float = 1e-3  # stage 1 base learning rate (AdamW)
    min_lr: float = 1e-6  # stage 1 final learning rate
    weight_decay: float = 0.05  # AdamW weight decay (not on 1-D tensors and biases)
    trainable_blocks: int = 2  # last ViT blocks trained in stage 1 (with ln_post and proj)
    layer_decay: float = 0.65  # lr factor per block below the top (layer-wise decay)
    distill_weight: float = 1.0  # weight of the L1 distillation loss (0 turns it off)
    augment: bool = True  # random resized crop, flip, RandAugment m9 (stage 1)
    prompt_epochs: int = 4  # stage 2 epochs
    prompt_lr: float = 1e-3  # stage 2 learning rate (cosine to prompt_min_lr)
    prompt_min_lr: float = 1e-8  # stage 2 final learning rate
    prompt_batch_size: int = 64  # stage 2 images per step, all processes together
    grad_accum: int = 1  # micro-batches per optimiser step (both stages)
    amp: bool = False  # mixed precision on GPUs (bf16 where supported, else fp16)
    device: str = "auto"  # auto, cpu, cuda or mps
    workers: int | None = None  # image decoding processes (default: cores - 1, at most 8)
    save_every: int = 0  # optimiser steps between resume points (0: end of each epoch only)
    max_steps: int | None = None  # stop after this many optimiser steps, both stages (resumable)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def stages(self) -> list[int]:
        """The stages to run, in order."""
        return {"1": [1], "2": [2], "all": [1, 2]}[self.stage]

    def warmup(self) -> int:
        """Stage 1 warm-up epochs: ``warmup_epochs``, or by default the paper's 2 where that
        leaves at least one epoch of cosine (1 for a 2-epoch run, none for a 1-epoch run)."""
        if self.warmup_epochs is not None:
            return self.warmup_epochs
        return max(0, min(2, self.epochs - 1))

    def updated(
        self, changes: Mapping[str, Any], source: str, names: Mapping[str, str] | None = None
    ) -> TrainConfig:
        """A copy with ``changes`` applied; unknown keys and wrong types name ``source``.

        Messages call each setting as ``names`` says (a flag, ``key (FILE)``), else as the
        key is written in ``changes`` (``warmup-epochs``), else by its field name.

        Raises:
            SettingsError: an unknown setting, a value of the wrong type, or an impossible one.
        """
        kinds = _field_types()
        values = self.to_dict()
        spelled = {key.replace("-", "_"): key for key in changes}
        spelled.update(names or {})
        for key, value in changes.items():
            name = key.replace("-", "_")
            if name not in kinds:
                raise SettingsError(source, f"unknown setting {key!r}")
            values[name] = _coerce(spelled[name], value, kinds[name], source)
        config = TrainConfig(**values)
        config.validate(source, spelled)
        return config

    def validate(self, source: str = "settings", names: Mapping[str, str] | None = None) -> None:
        """Raises SettingsError naming every impossible value (each setting as ``names``
        calls it, else by its field name)."""

        def call(field: str) -> str:
            return (names or {}).get(field, field)

        problems = []
        if self.stage not in STAGES:
            problems.append(f"{call('stage')} must be 1, 2 or all, not {self.stage!r}")
        if self.streams is not None and self.streams not in STREAMS:
            problems.append(
                f"{call('streams')} must be one of {', '.join(STREAMS)}, not {self.streams!r}"
            )
        if self.device not in DEVICES:
            problems.append(
                f"{call('device')} must be one of {', '.join(DEVICES)}, not {self.device!r}"
            )
        for name in (
            "epochs",
            "batch_size",
            "prompt_batch_size",
            "grad_accum",
            "top_k",
            "trainable_blocks",
            "prompt_epochs",
        ):
            if getattr(self, name) < 1:
                problems.append(f"{call(name)} must be at least 1")
        for name in ("lr", "prompt_lr", "layer_decay"):
            if not getattr(self, name) > 0:
                problems.append(f"{call(name)} must be positive")
        for name in ("min_lr", "prompt_min_lr", "weight_decay", "distill_weight", "save_every"):
            if getattr(self, name) < 0:
                problems.append(f"{call(name)} must not be negative")
        if not 0 < self.val_fraction < 1:
            problems.append(f"{call('val_fraction')} must be between 0 and 1")
        if self.warmup_epochs is not None and not 0 <= self.warmup_epochs <= self.epochs:
            problems.append(
                f"{call('warmup_epochs')} must be between 0 and {call('epochs')} ({self.epochs})"
            )
        if self.workers is not None and self.workers < 0:
            problems.append(f"{call('workers')} must not be negative")
        if self.max_steps is not None and self.max_steps < 1:
            problems.append(f"{call('max_steps')} must be at least 1")
        if not self.separator:
            problems.append(f"{call('separator')} must not be empty")
        if self.template.count("{label}") != 1:
            problems.append(f"{call('template')} must contain '{{label}}' exactly once")
        if problems:
            raise SettingsError(source, "; ".join(problems))

    def with_absolute_paths(self) -> TrainConfig:
        """The same settings with file paths made absolute, so a run resumes from anywhere."""
        changes: dict[str, Any] = {
            name: os.path.abspath(Path(value).expanduser())
            for name in PATH_SETTINGS
            if (value := getattr(self, name))
        }
        model = Path(self.model).expanduser()
        if model.exists():
            changes["model"] = os.path.abspath(model)
        return dataclasses.replace(self, **changes)

    def save(self, run_dir: Path) -> None:
        from mkt_tag.files import atomic_write_text

        atomic_write_text(run_dir / CONFIG_FILE, json.dumps(self.to_dict(), indent=2) + "\n")


def flag_names(settings: Iterable[str]) -> dict[str, str]:
    """The command-line flag of each setting (``warmup_epochs`` -> ``--warmup-epochs``)."""
    fields = [name.replace("-", "_") for name in settings]
    return {name: FLAGS.get(name, "--" + name.replace("_", "-")) for name in fields}


def setting_names() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]


@typing.no_type_check
def _field_types() -> dict[str, tuple[type, bool]]:
    """(type, may be None) of each setting, from the annotations."""
    hints = typing.get_type_hints(TrainConfig)
    kinds = {}
    for f in dataclasses.fields(TrainConfig):
        hint = hints[f.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        kinds[f.name] = (args[0], True) if args else (hint, False)
    return kinds


def _coerce(key: str, value: Any, kind: tuple[type, bool], source: str) -> Any:
    """``value`` as the setting's type; ints become floats, numbers strings (stage = 1)."""
    wanted, optional = kind
    if value is None and optional:
        return None
    if isinstance(value, wanted) and not (wanted is not bool and isinstance(value, bool)):
        return value
    if wanted is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if wanted is str and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    name = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}
    raise SettingsError(source, f"{key} must be {name.get(wanted, wanted.__name__)}, not {value!r}")


def read_toml(path: Path) -> dict[str, Any]:
    """Settings from a TOML file: top-level keys, or a ``[train]`` table.

    Relative paths in it (data, labels, out, val, images_root, a model folder) are relative to
    the file's folder.

    Raises:
        InputFileError: the file is missing, not TOML, or not laid out as settings.
    """
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputFileError(path, "file not found") from None
    except IsADirectoryError:
        raise InputFileError(path, "is a directory, expected a TOML file") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise InputFileError(path, f"not a valid TOML file ({error})") from None
    if "train" in data:
        others = sorted(set(data) - {"train"})
        if not isinstance(data["train"], dict) or others:
            raise SettingsError(
                path,
                "put every setting in the [train] table, or none (found "
                + (", ".join(repr(k) for k in others) or "train = a value, not a table")
                + ")",
            )
        data = data["train"]
    settings = dict(data)
    for name, value in settings.items():
        if name.replace("-", "_") in PATH_SETTINGS and isinstance(value, str) and value:
            settings[name] = os.path.abspath(path.parent / Path(value).expanduser())
    model = settings.get("model")
    if isinstance(model, str) and not Path(model).is_absolute() and (path.parent / model).exists():
        settings["model"] = os.path.abspath(path.parent / model)
    return settings


def read_run(run_dir: Path) -> TrainConfig:
    """The saved settings of a run folder (for ``--resume``).

    ``out`` becomes ``run_dir`` (the folder may have moved) and ``max_steps`` is cleared: a
    resumed run goes to the end unless told otherwise.

    Raises:
        InputFileError: ``run_dir`` is not a training run, or its settings are unreadable.
    """
    run_dir = Path(run_dir)
    path = run_dir / CONFIG_FILE
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputFileError(run_dir, f"not a training run (no {CONFIG_FILE})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputFileError(path, f"unreadable ({error})") from None
    if not isinstance(values, dict):
        raise InputFileError(path, "unreadable (expected a JSON object)")
    values.update(out=str(run_dir), max_steps=None)
    return TrainConfig().updated(values, str(path))
