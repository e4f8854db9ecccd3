"""A training run from its settings to its checkpoints: what `mkt-tag train` does.

``resolve_settings`` merges the defaults, a TOML file and flags (or, to resume, a run's saved
settings) and applies the rules of the run folder. ``train`` reads the vocabulary and the
data, reports what is wrong with them, and runs the Trainer::

    from mkt_tag.train import TrainConfig, train

    result = train(TrainConfig(data="train.csv", labels="seen.txt", out="runs/mine"))
    print(result.best)  # a checkpoint folder for `mkt-tag tag --model`
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mkt_tag import datasets, vocab
from mkt_tag.datasets import LabelledImages
from mkt_tag.errors import MktTagError, UsageError
from mkt_tag.train import resume as run_state
from mkt_tag.train.resume import ResumeState
from mkt_tag.train.settings import (
    CONFIG_FILE,
    RESUME_SETTINGS,
    TrainConfig,
    flag_names,
    read_run,
    read_toml,
    setting_names,
)
from mkt_tag.train.trainer import Report, Trainer

COMMAND_LINE = "command line"  # where flag values come from, in messages


@dataclass
class TrainResult:
    """Where a run ended and what it left in its folder."""

    state: ResumeState  # finished stages, steps taken, the best epoch and its validation mAP
    run_dir: Path  # the run folder (settings.out)
    best: Path | None  # checkpoint of the best epoch, for `mkt-tag tag --model`; None if none
    last: Path | None  # checkpoint of the latest epoch; None before the first epoch ends
    finished: bool  # every stage done (False: max_steps stopped it; train again to continue)
    already_finished: bool = False  # finished before this call: nothing was left to do


def resolve_settings(
    flags: Mapping[str, Any] | None = None,
    config_file: str | Path | None = None,
    resume: str | Path | None = None,
) -> TrainConfig:
    """The settings of a run: defaults, then ``config_file`` (TOML), then ``flags``.

    With ``resume`` (a run folder) they are that run's saved settings, and ``flags`` may only
    change ``device``, ``workers`` and ``max_steps``. A new run needs ``data`` and ``labels``
    and a run folder (``out``) that is missing or empty; its paths are made absolute, so that
    it resumes from anywhere.

    Raises:
        UsageError: settings that do not go together (``resume`` with other flags or a
            config file; no ``data`` or ``labels``).
        SettingsError: an unknown setting, a wrong type or an impossible value; errors in
            ``flags`` name the "command line" and each setting by its flag (``--warmup-epochs``),
            or as the config file writes it when it came from there.
        MktTagError: the config file or the run folder cannot be used.
    """
    flags = dict(flags or {})
    if resume is not None:
        extra = sorted(set(flags) - set(RESUME_SETTINGS))
        if extra or config_file is not None:
            raise UsageError(
                "--resume continues a run with its saved settings; only --device, "
                "--workers and --max-steps may be given with it"
            )
        return read_run(Path(resume)).updated(flags, COMMAND_LINE, flag_names(flags))
    settings, names = TrainConfig(), flag_names(setting_names())
    if config_file is not None:
        from_file = read_toml(Path(config_file))
        settings = settings.updated(from_file, str(config_file))
        names.update({key.replace("-", "_"): f"{key} ({config_file})" for key in from_file})
        names.update(flag_names(flags))  # the flag wins, and is what the message names
    settings = settings.updated(flags, COMMAND_LINE, names)
    _check_new_run(settings)
    return settings.with_absolute_paths()


def train(settings: TrainConfig, report: Report | None = None) -> TrainResult:
    """Train MKT with ``settings``; checkpoints, metrics and resume points go to ``out``.

    A run folder that already holds a run with these same settings (``device``, ``workers``
    and ``max_steps`` aside) is continued from its resume point, as ``--resume`` does; one
    holding another run is refused. Under torchrun every process calls this, and reports;
    ``distributed.is_main_process()`` tells the one that should show them.

    A run that is already finished is left as it is: nothing is read or trained, and the
    result says ``already_finished``.

    ``report(event, **details)`` receives the Trainer's events (see ``Trainer``) and, before
    training starts, ``warning`` (``message``: a vocabulary warning, a problem in the data, a
    validation set without positives) and ``data_loaded`` (``train``, ``val`` and ``labels``
    counts, ``run_dir``).

    Raises:
        MktTagError: bad settings, an unusable run folder, label file, data or model.
    """
    report = report or _ignore
    settings = _settings_to_run(settings)
    run_dir = Path(settings.out)
    saved = run_state.read_state(run_dir)
    if saved is not None and all(stage in saved.done for stage in settings.stages):
        return _result(saved, run_dir, finished=True, already_finished=True)
    vocabulary = vocab.read_labels(settings.labels)
    train_set, val_set = _load_data(settings, vocabulary.entries)
    for line in vocabulary.warnings:
        report("warning", message=line)
    for name, loaded in ((settings.data, train_set), (settings.val, val_set)):
        for line in loaded.problems.lines() if name else []:
            report("warning", message=f"{name}: {line}")
    if not (val_set.targets == 1).any():
        message = "no validation image has a positive label: best/ will be the last epoch"
        report("warning", message=message)
    report(
        "data_loaded",
        train=len(train_set),
        val=len(val_set),
        labels=len(vocabulary.labels),
        run_dir=settings.out,
    )
    trainer = Trainer(settings, train_set, val_set, report, vocabulary.entries)
    state = trainer.run()
    return _result(state, run_dir, finished=all(stage in state.done for stage in trainer.stages))


def _result(state: ResumeState, run_dir: Path, **flags: bool) -> TrainResult:
    best, last = run_dir / "best", run_dir / "last"
    return TrainResult(
        state=state,
        run_dir=run_dir,
        best=best if best.is_dir() else None,
        last=last if last.is_dir() else None,
        **flags,
    )


def _ignore(event: str, **details: Any) -> None:
    pass


def _check_new_run(settings: TrainConfig) -> None:
    """A new run needs its data and labels, and a run folder that is missing or empty."""
    if not settings.data or not settings.labels:
        raise UsageError("give --data and --labels (or set them in --config)")
    run_dir = Path(settings.out)
    if (run_dir / CONFIG_FILE).exists():
        raise MktTagError(
            f"{run_dir} already holds a run: continue it with --resume {run_dir}, "
            "or choose another --out"
        )
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise MktTagError(f"{run_dir} exists and is not an empty folder: choose another --out")


def _settings_to_run(settings: TrainConfig) -> TrainConfig:
    """``settings`` checked against the run folder: the same run continues, as it is; a new
    one gets absolute paths (so that it resumes from anywhere)."""
    settings.validate()
    if _same_run(Path(settings.out), settings):
        return settings
    _check_new_run(settings)
    return settings.with_absolute_paths()


def _same_run(run_dir: Path, settings: TrainConfig) -> bool:
    """Whether ``run_dir`` holds a run of ``settings`` (where it runs and when it stops aside)."""
    if not (run_dir / CONFIG_FILE).exists():
        return False
    try:
        saved = read_run(run_dir)
    except MktTagError:  # unreadable: not this run
        return False
    return _run_settings(saved) == _run_settings(settings)


def _run_settings(settings: TrainConfig) -> dict[str, Any]:
    """What makes a run itself: every setting but where it runs and when it stops."""
    changes = {name: getattr(TrainConfig(), name) for name in RESUME_SETTINGS}
    absolute = dataclasses.replace(settings.with_absolute_paths(), out="", **changes)
    return absolute.to_dict()


def _load_data(
    settings: TrainConfig, labels: Sequence[vocab.Entry]
) -> tuple[LabelledImages, LabelledImages]:
    """Training and validation images (keywords matched to the labels by name, alias or
    hierarchy); without ``val``, a seeded share of the data."""
    train_set = datasets.load(
        settings.data,
        labels,
        settings.images_root,
        settings.separator,
        keep_unlabelled=False,
        strict=settings.strict,
    )
    if not settings.val:
        return datasets.split(train_set, settings.val_fraction, settings.seed)
    val_set = datasets.load(
        settings.val, labels, settings.images_root, settings.separator, strict=settings.strict
    )
    return train_set, val_set
