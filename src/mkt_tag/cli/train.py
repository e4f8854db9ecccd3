"""`mkt-tag train`: both MKT stages on a labelled dataset, resumable, torchrun-ready."""

from __future__ import annotations

import math
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from mkt_tag.cli._app import app, err, fail, out, warn
from mkt_tag.config import Streams
from mkt_tag.devices import Device
from mkt_tag.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE, MktTagError

if TYPE_CHECKING:
    from mkt_tag.train import TrainResult


class Stage(str, Enum):
    one = "1"
    two = "2"
    all = "all"


class _Display:
    """Turns training events into warnings, progress bars and an epoch table (main process
    only)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[loss]}"),
            TimeRemainingColumn(),
            console=err,
            disable=not (enabled and err.is_terminal),
        )
        self.task: Any = None
        columns = ("stage", "epoch", "loss", "rank", "distill", "lr", "img/s", "val mAP")
        self.table = Table(*columns, title="epochs", title_justify="left")
        self.bad_images: set[str] = set()

    def __call__(self, event: str, **info: Any) -> None:
        if not self.enabled:
            return
        if event == "warning":
            warn(info["message"])
        elif event == "data_loaded":
            err.print(
                f"training on {info['train']} images, validating on {info['val']}, "
                f"{info['labels']} labels; run folder {info['run_dir']}"
            )
        elif event == "epoch_start":
            self.task = self.progress.add_task(
                f"stage {info['stage']} epoch {info['epoch'] + 1}",
                total=info["batches"],
                completed=info["done"],
                loss="",
            )
        elif event == "step" and self.task is not None:
            loss = "  ".join(f"{k} {v:.4f}" for k, v in info["loss"].items())
            self.progress.update(self.task, completed=info["batch"], loss=loss)
        elif event == "features_start":
            self.task = self.progress.add_task(
                f"features ({info['name']})", total=info["images"], loss=""
            )
        elif event == "features_step" and self.task is not None:
            self.progress.advance(self.task, info["images"])
        elif event == "bad_images":
            for path, reason in zip(info["paths"], info["reasons"], strict=True):
                if path not in self.bad_images:  # once per file, not once per epoch
                    self.bad_images.add(path)
                    warn(f"{path}: {reason}, skipped")
        elif event == "epoch_end":
            self._epoch_end(info)
        elif event == "stopped":
            err.print(f"stopped after step {info['step']} (--max-steps); continue with --resume")

    def _epoch_end(self, info: dict[str, Any]) -> None:
        val_map = "n/a" if math.isnan(info["val_map"]) else f"{info['val_map']:.4f}"
        self.table.add_row(
            str(info["stage"]),
            str(info["epoch"]),
            f"{info['loss']:.4f}",
            f"{info.get('rank_loss', float('nan')):.4f}",
            f"{info['distill_loss']:.4f}" if "distill_loss" in info else "-",
            f"{info['lr']:.2e}",
            f"{info['images_per_s']:.1f}",
            val_map + (" *" if info["best"] else ""),
        )
        if not err.is_terminal:
            err.print(
                f"stage {info['stage']} epoch {info['epoch']}: loss {info['loss']:.4f}, "
                f"val mAP {val_map}{' (best)' if info['best'] else ''}"
            )


@app.command()
def train(
    data: Path | None = typer.Option(
        None,
        "--data",
        "-d",
        help="Training data: .csv/.tsv/.jsonl, or a photo folder (its keywords: XMP, IPTC, "
        "sidecars).",
    ),
    labels: Path | None = typer.Option(
        None, "--labels", "-l", help="Seen vocabulary (label file)."
    ),
    out_dir: Path | None = typer.Option(
        None, "--out", "-o", help="Run folder (must not hold a run) [runs/mkt]."
    ),
    model: str | None = typer.Option(
        None,
        "--model",
        "-m",
        help="Backbone id or checkpoint folder to start from (see `mkt-tag models`) "
        "[ViT-B-16:openai].",
    ),
    val: Path | None = typer.Option(None, "--val", help="Validation data [hold out 10%]."),
    val_fraction: float | None = typer.Option(
        None, "--val-fraction", help="Share held out for validation without --val [0.1]."
    ),
    images: Path | None = typer.Option(
        None, "--images", help="Folder image paths are relative to [the data file's]."
    ),
    separator: str | None = typer.Option(None, "--separator", help="Between labels in a cell [|]."),
    strict: bool | None = typer.Option(
        None, "--strict/--lenient", help="Bad rows and unknown labels fail the run [lenient]."
    ),
    stage: Stage | None = typer.Option(None, "--stage", help="Stages to train [all]."),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="Settings file (TOML; flags win)."
    ),
    resume: Path | None = typer.Option(
        None, "--resume", help="Continue this run folder with its saved settings."
    ),
    epochs: int | None = typer.Option(None, "--epochs", help="Stage 1 epochs [20]."),
    warmup_epochs: int | None = typer.Option(
        None,
        "--warmup-epochs",
        help="Stage 1 warm-up epochs [2; 1 with --epochs 2, 0 with --epochs 1].",
    ),
    batch_size: int | None = typer.Option(
        None,
        "--batch-size",
        "-b",
        help="Stage 1 images per step, all processes together [64] (stage 2: --prompt-batch-size).",
    ),
    lr: float | None = typer.Option(None, "--lr", help="Stage 1 learning rate [1e-3]."),
    min_lr: float | None = typer.Option(None, "--min-lr", help="Stage 1 final lr [1e-6]."),
    weight_decay: float | None = typer.Option(
        None, "--weight-decay", help="AdamW weight decay, both stages [0.05]."
    ),
    trainable_blocks: int | None = typer.Option(
        None, "--trainable-blocks", help="Top ViT blocks trained in stage 1 [2]."
    ),
    layer_decay: float | None = typer.Option(
        None, "--layer-decay", help="Stage 1 lr factor per block down from the top [0.65]."
    ),
    distill_weight: float | None = typer.Option(
        None, "--distill-weight", help="Distillation loss weight; 0 turns it off [1]."
    ),
    augment: bool | None = typer.Option(
        None, "--augment/--no-augment", help="Stage 1 augmentation [augment]."
    ),
    prompt_epochs: int | None = typer.Option(None, "--prompt-epochs", help="Stage 2 epochs [4]."),
    prompt_lr: float | None = typer.Option(None, "--prompt-lr", help="Stage 2 lr [1e-3]."),
    prompt_min_lr: float | None = typer.Option(
        None, "--prompt-min-lr", help="Stage 2 final lr [1e-8]."
    ),
    prompt_batch_size: int | None = typer.Option(
        None, "--prompt-batch-size", help="Stage 2 images per step, all processes [64]."
    ),
    template: str | None = typer.Option(
        None, "--template", help='Label prompt ["There is a {label} in the scene"].'
    ),
    top_k: int | None = typer.Option(None, "--top-k", help="Patches per label, local stream [16]."),
    streams: Streams | None = typer.Option(
        None,
        "--streams",
        help="Scores trained: both (MKT) or one stream alone (ablations) [a checkpoint's; "
        "both from a plain backbone].",
    ),
    seed: int | None = typer.Option(None, "--seed", help="Random seed [42]."),
    grad_accum: int | None = typer.Option(None, "--grad-accum", help="Micro-batches per step [1]."),
    amp: bool | None = typer.Option(None, "--amp/--no-amp", help="Mixed precision on GPUs [no]."),
    save_every: int | None = typer.Option(
        None, "--save-every", help="Steps between resume points [0: end of each epoch]."
    ),
    max_steps: int | None = typer.Option(
        None, "--max-steps", help="Stop once the run has taken N steps (resumable)."
    ),
    device: Device | None = typer.Option(None, "--device", help="Where to train [auto]."),
    workers: int | None = typer.Option(
        None, "--workers", help="Decoding processes [cores - 1, at most 8]."
    ),
) -> None:
    """Train MKT on your labelled images: stage 1 (vision side), then prompt tuning.

    Every setting has the MKT paper's default; set others in a TOML file (--config) or with
    flags (flags win). The run folder gets best/ and last/ checkpoints for `mkt-tag tag -m`,
    metrics.csv, and resume points: after a crash, `mkt-tag train --resume RUN` continues.
    For several GPUs or CPUs: `torchrun --nproc_per_node N -m mkt_tag train ...`.
    Settings and files: docs/training.md, docs/datasets.md.

    Example:

        mkt-tag train --data train.csv --labels seen.txt --out runs/mine --epochs 5
    """
    values = dict(locals())
    names = {"out_dir": "out", "images": "images_root"}
    flags = {
        names.get(key, key): value.value if isinstance(value, Enum) else value
        for key, value in values.items()
        if value is not None and key not in ("config", "resume")
    }
    flags = {k: str(v) if isinstance(v, Path) else v for k, v in flags.items()}

    from mkt_tag import train as training
    from mkt_tag.train.distributed import is_main_process

    try:
        settings = training.resolve_settings(flags, config, resume)
    except training.UsageError as error:
        raise fail(str(error), EXIT_USAGE) from None
    except training.SettingsError as error:
        code = EXIT_USAGE if str(error.path) == training.COMMAND_LINE else EXIT_ERROR
        raise fail(str(error), code) from None
    except MktTagError as error:
        raise fail(str(error)) from None
    display = _Display(is_main_process())
    try:
        with display.progress:
            result = training.train(settings, display)
    except MktTagError as error:
        raise fail(str(error)) from None
    except KeyboardInterrupt:
        message = f"interrupted: continue with `mkt-tag train --resume {settings.out}`"
        err.print(Text(message, style="yellow"))
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if display.enabled:
        _summary(display, result)


def _summary(display: _Display, result: TrainResult) -> None:
    if result.already_finished:
        err.print(f"nothing left to do: {result.run_dir} has finished its stages")
    else:
        out.print(display.table)
    state = result.state
    if state.best:
        quality = "n/a" if state.best_map < 0 else f"{state.best_map:.4f}"
        out.print(f"best: {result.run_dir / 'best'} ({state.best}, val mAP {quality})")
    if result.best is not None:
        out.print(f"tag with it: mkt-tag tag PHOTOS --labels LABELS --model {result.best}")
