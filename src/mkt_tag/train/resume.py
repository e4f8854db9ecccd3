"""A run folder's resume point and its per-epoch metrics.

``state/`` holds where the run is (``state.json``), the trainable tensors
(``trainable.safetensors``) and the optimiser's state (``optimizer.pt``, tensors only); it is
replaced as a whole, atomically, so a kill at any moment leaves the previous resume point.
``metrics.csv`` gets one row per finished epoch; resuming drops rows written after the resume
point (an epoch that finished but whose resume point was not saved yet is run again).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mkt_tag.errors import CheckpointError
from mkt_tag.files import atomic_directory, atomic_write_text

STATE_DIR = "state"
METRICS_FILE = "metrics.csv"
METRIC_COLUMNS = [
    "stage",
    "epoch",
    "loss",
    "rank_loss",
    "distill_loss",
    "lr",
    "images_per_s",
    "val_map",
    "best",
]


@dataclass
class ResumeState:
    """Where a run is; saved with the trainable weights and the optimiser's state."""

    stage: int = 1  # stage in progress (or the last one finished)
    epoch: int = 0  # epochs of that stage finished
    batch: int = 0  # batches of the epoch in progress already done
    step: int = 0  # optimiser steps taken in this stage
    total_steps: int = 0  # optimiser steps taken in the run, all stages (for max_steps)
    best_map: float = -1.0  # best validation mAP so far (either stage)
    best: str = ""  # "stage S epoch E" of the best checkpoint
    done: list[int] = field(default_factory=list)  # finished stages
    loss_sums: dict[str, float] = field(default_factory=dict)  # epoch in progress, per part
    images: int = 0  # images of the epoch in progress (all processes)
    seconds: float = 0.0  # training time of the epoch in progress

    def next_stage(self, stage: int) -> ResumeState:
        """The state at the start of ``stage``: best and finished stages carried over."""
        return ResumeState(
            stage=stage,
            total_steps=self.total_steps,
            best_map=self.best_map,
            best=self.best,
            done=self.done,
        )

    def start_epoch(self) -> None:
        self.batch, self.loss_sums, self.images, self.seconds = 0, {}, 0, 0.0


def load(run_dir: Path) -> tuple[ResumeState, dict[str, torch.Tensor]] | None:
    """The saved resume point of a run, or None when it has none yet.

    Raises:
        CheckpointError: the resume point is unreadable.
    """
    from safetensors.torch import load_file

    recover(Path(run_dir))
    folder = Path(run_dir) / STATE_DIR
    if not (folder / "state.json").is_file():
        return None
    try:
        state = ResumeState(**json.loads((folder / "state.json").read_text(encoding="utf-8")))
        tensors = load_file(str(folder / "trainable.safetensors"))
    except Exception as error:  # JSON, unknown fields, safetensors' own error type
        raise CheckpointError(f"{folder}: cannot resume from it ({error})") from None
    return state, tensors


def read_state(run_dir: Path) -> ResumeState | None:
    """Where a run stands (``state/state.json`` alone), or None when it has no resume point or
    it cannot be read here (the trainer then recovers it, or says what is wrong)."""
    try:
        text = (Path(run_dir) / STATE_DIR / "state.json").read_text(encoding="utf-8")
        return ResumeState(**json.loads(text))
    except (OSError, ValueError, TypeError):
        return None


def recover(run_dir: Path) -> None:
    """Undo what a kill left of a folder swap: put back a folder caught between the two
    renames, and delete half-written staging folders (``.best.x1y2z3``)."""
    for name in (STATE_DIR, "best", "last"):
        folder, old = run_dir / name, run_dir / f".{name}.old"
        if not folder.exists() and old.is_dir():
            old.rename(folder)
        for staging in run_dir.glob(f".{name}.*"):
            if staging.is_dir():
                shutil.rmtree(staging, ignore_errors=True)


def save(
    run_dir: Path,
    state: ResumeState,
    tensors: dict[str, torch.Tensor],
    optimizer: dict[str, Any] | None,
) -> None:
    """Write a resume point atomically (the whole ``state/`` folder at once)."""
    from safetensors.torch import save_file

    with atomic_directory(Path(run_dir) / STATE_DIR) as folder:
        save_file(
            {name: t.detach().cpu().contiguous() for name, t in tensors.items()},
            str(folder / "trainable.safetensors"),
        )
        if optimizer is not None:
            torch.save(optimizer, folder / "optimizer.pt")
        (folder / "state.json").write_text(
            json.dumps(dataclasses.asdict(state), indent=2) + "\n", encoding="utf-8"
        )


def load_optimizer(run_dir: Path, device: torch.device) -> dict[str, Any] | None:
    """The optimiser (and gradient scaler) state of the resume point, if it has one."""
    path = Path(run_dir) / STATE_DIR / "optimizer.pt"
    if not path.is_file():
        return None
    try:
        # weights_only: never unpickle arbitrary objects, even from our own run folder
        return dict(torch.load(path, map_location=device, weights_only=True))
    except Exception as error:
        raise CheckpointError(f"{path}: cannot resume from it ({error})") from None


def append_metrics(run_dir: Path, row: dict[str, Any]) -> None:
    path = Path(run_dir) / METRICS_FILE
    new = not path.exists()
    with path.open("a", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=METRIC_COLUMNS, restval="")
        if new:
            writer.writeheader()
        writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})


def trim_metrics(run_dir: Path, state: ResumeState) -> None:
    """Drop the rows of epochs after the resume point (they will be run again)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))

    def kept(row: dict[str, str]) -> bool:
        stage, epoch = int(row["stage"]), int(row["epoch"])
        return stage < state.stage or (stage == state.stage and epoch <= state.epoch)

    if all(kept(row) for row in rows):
        return
    lines = [",".join(METRIC_COLUMNS)]
    lines += [",".join(row.get(c, "") for c in METRIC_COLUMNS) for row in rows if kept(row)]
    atomic_write_text(path, "\n".join(lines) + "\n")
