"""`mkt-tag eval`: the paper's metrics on a labelled set, reports, threshold calibration."""

from __future__ import annotations

import math
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.text import Text

from mkt_tag.cli._app import (
    MODEL_HELP,
    BatchSizeOption,
    CacheDirOption,
    DeviceOption,
    ParallelOption,
    PrecisionOption,
    WorkersOption,
    app,
    err,
    fail,
    out,
    warn,
)
from mkt_tag.cli._eval_tables import print_check, print_table
from mkt_tag.config import DEFAULT_BACKBONE, Streams
from mkt_tag.devices import Device, Precision
from mkt_tag.errors import EXIT_PARTIAL, EXIT_USAGE, LabelFileError, MktTagError

if TYPE_CHECKING:
    from mkt_tag.evaluate.calibration import HeldOutCheck
    from mkt_tag.evaluate.report import EvalReport
    from mkt_tag.evaluate.scores import ScoreSet

METRICS_FILE = "metrics.json"
PER_LABEL_FILE = "per_label.csv"
REPORT_FILE = "report.png"


@app.command("eval")
def evaluate(
    data: Path | None = typer.Option(
        None,
        "--data",
        "-d",
        help="Labelled images: .csv/.tsv/.jsonl or a folder with sidecars (formats as `train`).",
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
    streams: Streams | None = typer.Option(
        None,
        "--streams",
        help="Scores evaluated: both (MKT) or one stream alone (ablations) [the model's].",
    ),
    batch_size: BatchSizeOption = 16,
    workers: WorkersOption = None,
    parallel: ParallelOption = None,
    device: DeviceOption = Device.auto,
    precision: PrecisionOption = Precision.auto,
    cache_dir: CacheDirOption = None,
) -> None:
    """Measure a model on labelled images: mAP and P/R/F1 at top-K, as in the MKT paper.

    Prints one table with a row per group of labels: ZSL (the --unseen labels), GZSL (all
    labels) and seen (the others); a group without labels has no row. --out writes
    metrics.json, per_label.csv (AP and positives per label) and report.png. Any model
    `tag` accepts works: a run's best/ folder, an imported checkpoint, or a plain backbone
    (the zero-shot baseline). --calibrate writes per-label thresholds for `tag
    --thresholds`, and reports on held-out images what they change. See docs/evaluation.md.

    Example:

    \b
        mkt-tag eval --data test.csv --labels all.txt --unseen unseen.txt \\
            --model runs/mine/best --out eval/ --calibrate thresholds.tsv
    """
    from mkt_tag.evaluate import report as report_module
    from mkt_tag.evaluate import scores as evaluation

    ks = list(dict.fromkeys(k or report_module.DEFAULT_KS))
    _check_options(
        data, labels, scores_file, save_scores, calibrate, target_precision, calibrate_fraction
    )
    failures = 0
    try:
        if scores_file is not None:
            if model is not None:
                warn(f"--model {model} is not used: the scores come from {scores_file}")
            if streams is not None:
                warn(f"--streams is not used: the scores come from {scores_file}")
            scores = _saved_scores(scores_file, labels, unseen)
        else:
            assert data is not None and labels is not None  # _check_options
            scores, failures = _run_model(
                data,
                labels,
                unseen,
                model or DEFAULT_BACKBONE,
                None if streams is None else streams.value,
                images,
                separator,
                batch_size,
                workers,
                parallel,
                device.value,
                precision.value,
                cache_dir,
            )
            if save_scores is not None:
                evaluation.save_scores(save_scores, scores)
                out.print(f"wrote {save_scores} (scores of {len(scores)} images)")
        report = report_module.evaluate(scores, ks, reference=reference_map)
        report.source = str(scores_file if scores_file is not None else data)
        report.failed_images = failures
        print_table(report)
        check = None
        if calibrate is not None:
            check = _calibrate(
                scores, calibrate, target_precision, min_positives, calibrate_fraction, ks
            )
            if check is not None:
                report.extra["calibration_check"] = check.to_json()
        if out_dir is not None:
            _write_outputs(out_dir, report, scores)
    except MktTagError as error:
        raise fail(str(error)) from None
    if failures:
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


def _unseen_mask(vocabulary_labels: list[str], unseen: Path | None, where: str) -> list[bool]:
    """Which labels are unseen; every label of the --unseen file must be among them."""
    from mkt_tag import vocab

    if unseen is None:
        return [False] * len(vocabulary_labels)
    wanted = vocab.read_labels(unseen)
    for line in wanted.warnings:
        warn(line)
    known = {vocab.normalise(label) for label in vocabulary_labels}
    strangers = [label for label in wanted.labels if vocab.normalise(label) not in known]
    if strangers:
        shown = ", ".join(repr(label) for label in strangers[:3])
        raise LabelFileError(
            unseen, f"{len(strangers)} label(s) not in {where}, e.g. {shown}: add them there"
        )
    chosen = {vocab.normalise(label) for label in wanted.labels}
    return [vocab.normalise(label) in chosen for label in vocabulary_labels]


def _saved_scores(path: Path, labels: Path | None, unseen: Path | None) -> ScoreSet:
    """A scores file, checked against --labels and with --unseen applied when given."""
    import numpy as np

    from mkt_tag import vocab
    from mkt_tag.evaluate import scores as evaluation

    scores = evaluation.load_scores(path)
    if labels is not None:
        expected = vocab.read_labels(labels).labels
        if len(expected) != len(scores.labels):
            raise LabelFileError(
                labels,
                f"{len(expected)} labels, but {path} has scores for {len(scores.labels)}: "
                "give the label file the scores were made with",
            )
        for number, (mine, theirs) in enumerate(zip(expected, scores.labels, strict=True), 1):
            if vocab.normalise(mine) != vocab.normalise(theirs):
                raise LabelFileError(
                    labels,
                    f"label {number} is {mine!r}, but in {path} it is {theirs!r}: "
                    "give the label file the scores were made with",
                )
    if unseen is not None:
        scores.unseen = np.array(_unseen_mask(scores.labels, unseen, str(path)))
    return scores


def _run_model(
    data: Path,
    labels: Path,
    unseen: Path | None,
    model: str,
    streams: str | None,
    images: Path | None,
    separator: str,
    batch_size: int,
    workers: int | None,
    parallel: int | None,
    device: str,
    precision: str,
    cache_dir: Path | None,
) -> tuple[ScoreSet, int]:
    """Score the data with the model: (scores of the readable images, how many failed)."""
    import numpy as np

    from mkt_tag import datasets, vocab
    from mkt_tag.evaluate import scores as evaluation
    from mkt_tag.tagging.tagger import Tagger

    vocabulary = vocab.read_labels(labels)
    for line in vocabulary.warnings:
        warn(line)
    mask = np.array(_unseen_mask(vocabulary.labels, unseen, str(labels)))
    dataset = datasets.load(data, vocabulary.labels, images, separator)
    for line in dataset.problems.lines():
        warn(f"{data}: {line}")
    with err.status("loading model", spinner="dots") if err.is_terminal else nullcontext():
        tagger = Tagger.load(model, device=device, precision=precision, cache_dir=cache_dir)
        if streams is not None:
            tagger.model.config.streams = streams
        labelset = tagger.embed_labels(vocabulary.entries, source=str(labels))
    for line in tagger.label_cache.warnings if tagger.label_cache else []:
        warn(line)
    progress = Progress(
        TextColumn("scoring"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=not err.is_terminal,
    )
    with progress:
        task = progress.add_task("scoring", total=len(dataset))
        scores, failures = evaluation.score_images(
            tagger,
            dataset,
            labelset,
            unseen=mask,
            batch_size=batch_size,
            workers=workers,
            on_progress=lambda n: progress.advance(task, n),
            model=model,
            parallel=parallel,
        )
    for failure in failures:
        err.print(Text(f"failed: {failure}", style="yellow"))
    failed = f", {len(failures)} could not be read (listed above, left out)" if failures else ""
    err.print(f"scored {len(scores)} images{failed}")
    return scores, len(failures)


def _calibrate(
    scores: ScoreSet,
    path: Path,
    target_precision: float | None,
    min_positives: int,
    fraction: float,
    ks: list[int],
) -> HeldOutCheck | None:
    """Report thresholds chosen on part of the images on the rest, then write thresholds
    chosen on all of them."""
    from mkt_tag import thresholds
    from mkt_tag.evaluate import calibration

    check = None
    if fraction > 0:
        try:
            check = calibration.check_calibration(
                scores, fraction, target_precision, min_positives, ks
            )
        except ValueError as error:
            warn(f"no held-out report: {error}")
    if check is not None:
        print_check(check)
    chosen = calibration.calibrate_thresholds(
        scores.scores,
        scores.targets,
        target_precision=target_precision,
        min_positives=min_positives,
    )
    rule = (
        "maximise F1"
        if target_precision is None
        else f"reach precision {target_precision} (most recall)"
    )
    comment = (
        f"per-label thresholds from mkt-tag eval: {rule}, on {len(scores)} images\n"
        f"model: {scores.model or 'unknown'}\n"
        f"labels with < {min_positives} positives: the best global threshold"
    )
    written = calibration.write_calibration(path, scores.labels, chosen, comment)
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
    out.print(f"wrote {path}, {len(scores.labels)} labels: {', '.join(parts)}{never}")
    out.print(f"use it: mkt-tag tag PHOTOS --labels LABELS --thresholds {path}")
    return check


def _write_outputs(folder: Path, report: EvalReport, scores: ScoreSet) -> None:
    from mkt_tag.errors import OutputError
    from mkt_tag.evaluate import plots
    from mkt_tag.evaluate import report as report_module

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"{folder}: cannot create the folder ({error.strerror})") from None
    report_module.write_metrics(folder / METRICS_FILE, report)
    report_module.write_per_label(folder / PER_LABEL_FILE, report)
    plots.write_report_png(folder / REPORT_FILE, report, scores)
    out.print(f"wrote {folder}: {METRICS_FILE}, {PER_LABEL_FILE}, {REPORT_FILE}")
