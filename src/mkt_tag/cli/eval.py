"""`mkt-tag eval`: the paper's metrics on a labelled set, reports, threshold calibration.

The work is ``mkt_tag.evaluate.job``'s; this command checks its options, shows progress and
prints the tables and lines of the result.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from mkt_tag.cli._app import (
    MODEL_HELP,
    BatchSizeOption,
    CacheDirOption,
    DeviceOption,
    ParallelOption,
    PrecisionOption,
    StreamsOption,
    WorkersOption,
    app,
    err,
    fail,
    out,
    warn,
)
from mkt_tag.cli._eval_tables import print_check, print_table
from mkt_tag.config import DEFAULT_BACKBONE
from mkt_tag.devices import Device, Precision
from mkt_tag.errors import EXIT_PARTIAL, EXIT_USAGE, MktTagError

if TYPE_CHECKING:
    from mkt_tag.evaluate.job import EvalResult


@app.command("eval")
def evaluate(
    data: Path | None = typer.Option(
        None,
        "--data",
        "-d",
        help="Labelled images: .csv/.tsv/.jsonl, or a photo folder (its keywords; formats as "
        "`train`).",
    ),
    labels: Path | None = typer.Option(
        None, "--labels", "-l", help="Every label to evaluate (label file); the data's columns."
    ),
    unseen: Path | None = typer.Option(
        None,
        "--unseen",
        help="The labels of --labels the model never trained on: the ZSL row [none].",
    ),
    model: str | None = typer.Option(
        None, "--model", "-m", help=MODEL_HELP + f" [{DEFAULT_BACKBONE}]"
    ),
    images: Path | None = typer.Option(
        None, "--images", help="Folder image paths are relative to [the data file's]."
    ),
    separator: str = typer.Option("|", "--separator", help="Between labels in a cell."),
    k: list[int] | None = typer.Option(
        None, "--k", min=1, help="Top-K for P/R/F1; repeat for several [3 and 5]."
    ),
    reference_map: bool = typer.Option(
        False,
        "--reference-map",
        help="Also the reference code's mAP (labels without positives count 0), to compare "
        "with published numbers.",
    ),
    out_dir: Path | None = typer.Option(
        None, "--out", "-o", help="Folder for metrics.json, per_label.csv and report.png."
    ),
    save_scores: Path | None = typer.Option(
        None, "--save-scores", help="Keep the score matrix (.npz) for --scores."
    ),
    scores_file: Path | None = typer.Option(
        None,
        "--scores",
        help="Evaluate saved scores (from --save-scores) instead of running a model; "
        "replaces --data.",
    ),
    calibrate: Path | None = typer.Option(
        None,
        "--calibrate",
        help="Write per-label thresholds chosen on this data (for `tag --thresholds`).",
    ),
    target_precision: float | None = typer.Option(
        None,
        "--target-precision",
        help="Calibrate for this precision (the most recall reaching it) [maximise F1].",
    ),
    min_positives: int = typer.Option(
        5,
        "--min-positives",
        min=1,
        help="Labels with fewer positives get the best global threshold.",
    ),
    calibrate_fraction: float = typer.Option(
        0.5,
        "--calibrate-fraction",
        help="Share of images held out to report what calibration changes (0: no report).",
    ),
    streams: StreamsOption = None,
    batch_size: BatchSizeOption = 16,
    workers: WorkersOption = None,
    parallel: ParallelOption = None,
    device: DeviceOption = Device.auto,
    precision: PrecisionOption = Precision.auto,
    cache_dir: CacheDirOption = None,
) -> None:
    """Measure a model on labelled images: mAP and P/R/F1 at top-K, as in the MKT paper.

    Prints one table with a row per group of labels: ZSL (the --unseen labels), GZSL (all
    labels) and seen (the others); a group without labels has no row. Each row is scored
    with its own labels alone competing, as in the paper (MKT's scores depend on the labels
    scored together); --calibrate uses all labels, as `tag` does. --out writes
    metrics.json, per_label.csv (AP and positives per label) and report.png. Any model
    `tag` accepts works: a run's best/ folder, an imported checkpoint, or a plain backbone
    (the zero-shot baseline). --calibrate writes per-label thresholds for `tag
    --thresholds`, and reports on held-out images what they change. See docs/evaluation.md.

    Example:

    \b
        mkt-tag eval --data test.csv --labels all.txt --unseen unseen.txt \\
            --model runs/mine/best --out eval/ --calibrate thresholds.tsv
    """
    from mkt_tag.evaluate import job
    from mkt_tag.evaluate.report import DEFAULT_KS

    _check_options(
        data, labels, scores_file, save_scores, calibrate, target_precision, calibrate_fraction
    )
    settings = job.EvalSettings(
        ks=list(dict.fromkeys(k or DEFAULT_KS)),
        reference_map=reference_map,
        out=out_dir,
        calibrate=calibrate,
        target_precision=target_precision,
        min_positives=min_positives,
        calibrate_fraction=calibrate_fraction,
    )
    try:
        if scores_file is not None:
            if model is not None:
                warn(f"--model {model} is not used: the scores come from {scores_file}")
            if streams is not None:
                warn(f"--streams is not used: the scores come from {scores_file}")
            result = job.evaluate_saved_scores(
                scores_file, labels, unseen, settings, on_warning=warn
            )
        else:
            assert data is not None and labels is not None  # _check_options
            scoring = job.ScoringSettings(
                images=images,
                separator=separator,
                streams=None if streams is None else streams.value,
                batch_size=batch_size,
                workers=workers,
                parallel=parallel,
                device=device.value,
                precision=precision.value,
                cache_dir=cache_dir,
                save_scores=save_scores,
            )
            with _scoring_display() as on_progress:
                result = job.evaluate_model(
                    data,
                    labels,
                    unseen,
                    model or DEFAULT_BACKBONE,
                    settings,
                    scoring,
                    on_progress=on_progress,
                    on_warning=warn,
                )
            _print_scored(result)
            if save_scores is not None:
                out.print(f"wrote {save_scores} (scores of {len(result.scores)} images)")
        print_table(result.report)
        if result.calibration is not None:
            used = (model or DEFAULT_BACKBONE) if scores_file is None else result.scores.model
            _print_calibration(result, target_precision, min_positives, used, labels)
        if out_dir is not None:
            out.print(f"wrote {out_dir}: {', '.join(job.OUTPUT_FILES)}")
    except MktTagError as error:
        raise fail(str(error)) from None
    if result.failures:
        raise typer.Exit(EXIT_PARTIAL)


def _check_options(
    data: Path | None,
    labels: Path | None,
    scores_file: Path | None,
    save_scores: Path | None,
    calibrate: Path | None,
    target_precision: float | None,
    calibrate_fraction: float,
) -> None:
    """Usage errors, before anything is loaded."""
    if scores_file is not None:
        if data is not None:
            raise fail(
                "--scores replaces --data: the scores file holds the targets it was made with",
                EXIT_USAGE,
            )
        if save_scores is not None:
            raise fail("--save-scores needs a model run; --scores reads saved ones", EXIT_USAGE)
    elif data is None or labels is None:
        raise fail("give --data and --labels (or --scores FILE.npz)", EXIT_USAGE)
    if calibrate is None and target_precision is not None:
        raise fail("--target-precision goes with --calibrate THRESHOLDS.tsv", EXIT_USAGE)
    if target_precision is not None and not 0 < target_precision <= 1:
        raise fail(f"--target-precision {target_precision}: give a number in (0, 1]", EXIT_USAGE)
    if not 0 <= calibrate_fraction < 1:
        raise fail(f"--calibrate-fraction {calibrate_fraction}: give a share in [0, 1)", EXIT_USAGE)


@contextmanager
def _scoring_display() -> Iterator[Callable[[int, int], None]]:
    """On a terminal, a "loading model" spinner until scoring starts, then a progress bar
    until it ends; yields the ``on_progress(done, total)`` that drives them."""
    status = err.status("loading model", spinner="dots") if err.is_terminal else None
    progress = Progress(
        TextColumn("scoring"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=not err.is_terminal,
    )
    task: TaskID | None = None

    def on_progress(done: int, total: int) -> None:
        nonlocal task
        if task is None:  # the model is loaded: from spinner to bar
            if status is not None:
                status.stop()
            progress.start()
            task = progress.add_task("scoring", total=total)
        progress.update(task, completed=done)
        if done >= total:  # the metrics and files that follow have no bar
            progress.stop()

    if status is not None:
        status.start()
    try:
        yield on_progress
    finally:
        if status is not None:
            status.stop()
        progress.stop()


def _print_scored(result: EvalResult) -> None:
    for failure in result.failures:
        err.print(Text(f"failed: {failure}", style="yellow"))
    failures = len(result.failures)
    failed = f", {failures} could not be read (listed above, left out)" if failures else ""
    precision = result.report.extra.get("precision")
    where = f" in {precision}" if precision else ""  # "in int8 (auto: ...)"
    err.print(f"scored {len(result.scores)} images{where}{failed}")


def _print_calibration(
    result: EvalResult,
    target_precision: float | None,
    min_positives: int,
    model: str,
    labels: Path | None,
) -> None:
    """The held-out check (or why there is none), what the thresholds file holds, and the
    `tag` command that uses it (with the model it was made for: ``tag`` checks it)."""
    from mkt_tag import thresholds

    calibrated = result.calibration
    assert calibrated is not None
    if calibrated.check_skipped:
        warn(f"no held-out report: {calibrated.check_skipped}")
    if calibrated.check is not None:
        print_check(calibrated.check)
    written = calibrated.written
    parts = [f"{written.calibrated} calibrated"]
    if written.unreachable:
        parts.append(f"{written.unreachable} cannot reach precision {target_precision}")
    if written.fallback:
        pooled = written.pooled_threshold
        level = f"{pooled:.4g}" if math.isfinite(pooled) else "none: no threshold serves"
        parts.append(
            f"{written.fallback} with < {min_positives} positives on the global threshold ({level})"
        )
    never = f"; {written.never} never predicted ({thresholds.NEVER!r})" if written.never else ""
    path, count = calibrated.path, len(result.scores.labels)
    out.print(f"wrote {path}, {count} labels: {', '.join(parts)}{never}")
    words = ["--labels", shlex.quote(str(labels)) if labels else "LABELS"]
    words += ["--model", shlex.quote(model) if model else "MODEL"]
    words += ["--thresholds", shlex.quote(str(path))]
    out.print(f"use it: mkt-tag tag PHOTOS {' '.join(words)}")
