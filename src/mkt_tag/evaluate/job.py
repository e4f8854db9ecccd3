"""An evaluation from start to end: what ``mkt-tag eval`` does, as one Python call.

- ``evaluate_model``: read the labels and the labelled data, score the images with a model
  (``scores.score_images``), optionally keep the scores (``--save-scores``);
- ``evaluate_saved_scores``: read such a scores file instead, checked against the label file;

then both compute the metric rows (``report.evaluate``), calibrate per-label thresholds when
asked (a held-out check first, then thresholds chosen on every image, ``calibration.py``),
and write ``metrics.json``, ``per_label.csv`` and ``report.png`` to an output folder.

Nothing is printed: warnings go to ``on_warning`` as they arise (and into the result),
scoring progress to ``on_progress``. torch is imported only when a model is run.
"""

from __future__ import annotations

import errno
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from mkt_tag import datasets, published, vocab
from mkt_tag.config import DEFAULT_BACKBONE, check_streams
from mkt_tag.errors import ImageLoadError, LabelFileError, OutputError
from mkt_tag.evaluate import calibration, plots
from mkt_tag.evaluate.report import DEFAULT_KS, EvalReport, evaluate, write_metrics, write_per_label
from mkt_tag.evaluate.scores import ScoreSet, load_scores, save_scores, score_images
from mkt_tag.files import write_error

if TYPE_CHECKING:
    from mkt_tag.evaluate.calibration import Calibration, HeldOutCheck, ThresholdsWritten

METRICS_FILE = "metrics.json"
PER_LABEL_FILE = "per_label.csv"
REPORT_FILE = "report.png"
OUTPUT_FILES = (METRICS_FILE, PER_LABEL_FILE, REPORT_FILE)  # what ``EvalSettings.out`` gets

Warn = Callable[[str], None]


@dataclass
class EvalSettings:
    """What an evaluation computes and writes besides the metric rows (``mkt-tag eval``'s
    options, for a model run and for saved scores alike)."""

    ks: Sequence[int] = DEFAULT_KS  # top-K for P/R/F1 (repeats are dropped)
    reference_map: bool = False  # also the reference code's mAP (labels without positives: 0)
    out: str | Path | None = None  # folder for metrics.json, per_label.csv and report.png
    calibrate: str | Path | None = None  # thresholds file to write (for `tag --thresholds`)
    target_precision: float | None = None  # calibrate to reach this precision; None: best F1
    min_positives: int = calibration.MIN_POSITIVES  # fewer positives: the global threshold
    calibrate_fraction: float = 0.5  # images held out to check calibration (0: no check)

    def __post_init__(self) -> None:
        if any(int(k) < 1 for k in self.ks):
            raise ValueError(f"every K must be at least 1, got {list(self.ks)}")
        if self.target_precision is not None:
            if self.calibrate is None:
                raise ValueError("target_precision needs a calibrate file")
            if not 0 < self.target_precision <= 1:
                raise ValueError(
                    f"target_precision must lie in (0, 1], not {self.target_precision}"
                )
        if self.min_positives < 1:
            raise ValueError(f"min_positives must be at least 1, not {self.min_positives}")
        if not 0 <= self.calibrate_fraction < 1:
            raise ValueError(
                f"calibrate_fraction must lie in [0, 1), not {self.calibrate_fraction}"
            )


@dataclass
class ScoringSettings:
    """How the model runs over the data (``evaluate_model`` only)."""

    images: str | Path | None = None  # folder image paths are relative to; None: the data's
    separator: str = "|"  # between labels in a cell of the data file
    streams: str | None = None  # "both", "global" or "local" (ablations); None: the model's
    batch_size: int = 16  # images per forward pass
    workers: int | None = None  # decoding processes (None: automatic, 0: in the batch's thread)
    parallel: int | None = None  # batches the model works on at once (None: automatic)
    device: str = "auto"  # cpu, cuda, mps; auto: the best there is
    precision: str = "auto"  # fp32, bf16, fp16, int8; auto: see ``auto_precision``
    cache_dir: str | Path | None = None  # model cache; None: $MKT_TAG_CACHE or the user's
    save_scores: str | Path | None = None  # keep the score matrix (.npz) for a later re-run

    def __post_init__(self) -> None:
        if self.streams is not None:
            check_streams(self.streams)


@dataclass
class CalibrationResult:
    """What calibration did: the held-out check, then thresholds chosen on every image."""

    path: Path  # the thresholds file written, for `mkt-tag tag --thresholds`
    chosen: Calibration  # per-label thresholds, with P/R/F1 on the images they were chosen on
    written: ThresholdsWritten  # how the file's labels are served: calibrated, fallback, ...
    check: HeldOutCheck | None  # chosen on part of the images, measured on the rest
    check_skipped: str = ""  # why there is no check though one was asked (too few images)


@dataclass
class EvalResult:
    """Everything an evaluation produced."""

    report: EvalReport  # every metric (``report.row("ZSL").map``); metrics.json's content
    scores: ScoreSet  # the scores evaluated: those of the images that could be read
    failures: list[ImageLoadError]  # images of the data that could not be read (left out)
    calibration: CalibrationResult | None  # None: no thresholds were asked for
    files: list[Path]  # every file written, in order
    warnings: list[str]  # problems that did not stop the run, as given to ``on_warning``


def evaluate_model(
    data: str | Path,
    labels: str | Path,
    unseen: str | Path | None = None,
    model: str | Path = DEFAULT_BACKBONE,
    settings: EvalSettings | None = None,
    scoring: ScoringSettings | None = None,
    *,
    on_progress: Callable[[int, int], None] | None = None,
    on_warning: Warn | None = None,
) -> EvalResult:
    """Measure ``model`` on labelled images: mAP and P/R/F1 at top-K, as in the MKT paper.

    Args:
        data: labelled images: .csv/.tsv/.jsonl, or a photo library (``library_labels.py``).
        labels: every label to evaluate (a label file); the data's columns.
        unseen: a label file naming the labels of ``labels`` the model never trained on (the
            ZSL row); None: no ZSL row.
        model: a checkpoint folder or backbone id, as ``Tagger.load`` takes.
        settings: K, calibration and output files; ``scoring``: how the model runs.
        on_progress: ``on_progress(done, total)``: images scored (or failed) so far; first
            called with 0 once the model is loaded.
        on_warning: each warning as it arises (also kept in ``EvalResult.warnings``).

    Raises:
        MktTagError: a file cannot be read or written, the model cannot be loaded, an
            ``unseen`` label is not in ``labels`` (``LabelFileError``), no image can be read.

    Example:
        >>> result = evaluate_model("test.csv", "all.txt", "unseen.txt", "runs/mine/best")
        >>> result.report.row("ZSL").map
    """
    settings = settings or EvalSettings()
    scoring = scoring or ScoringSettings()
    _check_outputs(settings, scoring.save_scores)
    warnings, warn = _collector(on_warning)
    vocabulary = vocab.read_labels(labels)
    for line in vocabulary.warnings:
        warn(line)
    mask = _unseen_mask(vocabulary.labels, unseen, str(labels), warn)
    dataset = datasets.load(data, vocabulary.entries, scoring.images, scoring.separator)
    for line in dataset.problems.lines():
        warn(f"{data}: {line}")
    from mkt_tag.tagging.tagger import Tagger  # torch: only once the inputs are known good

    tagger = Tagger.load(
        model, device=scoring.device, precision=scoring.precision, cache_dir=scoring.cache_dir
    )
    if scoring.streams is not None:
        tagger.model.config.streams = scoring.streams
    if unseen is None:  # the model may say which labels it was trained on
        mask = np.array(published.untrained(vocabulary.labels, model, scoring.cache_dir, warn))
    tagger.report_cache_warnings(warn)
    labelset = tagger.embed_labels(vocabulary.entries, source=str(labels))
    done, total = 0, len(dataset)
    if on_progress is not None:
        on_progress(done, total)

    def advance(images: int) -> None:
        nonlocal done
        done += images
        if on_progress is not None:
            on_progress(done, total)

    scores, failures = score_images(
        tagger,
        dataset,
        labelset,
        unseen=mask,
        batch_size=scoring.batch_size,
        workers=scoring.workers,
        on_progress=advance,
        model=str(model),
        parallel=scoring.parallel,
    )
    files = []
    if scoring.save_scores is not None:
        save_scores(scoring.save_scores, scores)
        files.append(Path(scoring.save_scores))
    # after --streams: thresholds fit the scores of this configuration only
    fingerprint = tagger.scores_fingerprint
    how = str(tagger.precision)
    return _finish(scores, str(data), failures, settings, files, warnings, fingerprint, how)


def evaluate_saved_scores(
    scores: str | Path,
    labels: str | Path | None = None,
    unseen: str | Path | None = None,
    settings: EvalSettings | None = None,
    *,
    on_warning: Warn | None = None,
) -> EvalResult:
    """Evaluate a scores file (``ScoringSettings.save_scores``, ``mkt-tag eval
    --save-scores``) without a model: the same metrics, calibration and files.

    Args:
        scores: the ``.npz`` file; it holds the labels, the targets and the unseen labels.
        labels: when given, a label file that must list the file's labels in the same order
            (case and spacing aside).
        unseen: a label file redefining the unseen labels; None: those saved in the file.
        settings, on_warning: as for ``evaluate_model``.

    Raises:
        MktTagError: the file is missing or not a scores file; ``labels`` does not match it
            or an ``unseen`` label is not among its labels (``LabelFileError``); an output
            cannot be written.
    """
    settings = settings or EvalSettings()
    _check_outputs(settings, None)
    warnings, warn = _collector(on_warning)
    saved = load_scores(scores)
    if labels is not None:
        _check_labels(saved, Path(scores), labels)
    if unseen is not None:
        saved.unseen = _unseen_mask(saved.labels, unseen, str(scores), warn)
    if saved.stream_scores is None and 0 < saved.unseen.sum() < len(saved.labels):
        warn(_fused_only_note(Path(scores), saved))
    return _finish(saved, str(scores), [], settings, [], warnings)


# --- the steps ------------------------------------------------------------------------------


def _fused_only_note(path: Path, saved: ScoreSet) -> str:
    """What a scores file without stream scores cannot give: the rows' own fusion."""
    when = ", written before mkt-tag 0.3" if saved.format == 1 else ""
    return (
        f"{path} holds fused scores only, no per-stream scores (format {saved.format}{when}): "
        f"its ZSL and seen rows rank scores fused over all {len(saved.labels)} labels, not "
        "over each row's labels alone as the paper's protocol does; score the images again "
        "(--data, --save-scores) for those rows"
    )


def _check_outputs(settings: EvalSettings, save_scores: str | Path | None) -> None:
    """Fail now, not after every image is scored: each output's folder can be made and
    written in (the ``out`` folder itself, the folders of the other files).

    Raises:
        OutputError: one of them cannot.
    """
    places = [(Path(settings.out), Path(settings.out))] if settings.out is not None else []
    places += [
        (Path(file), Path(file).parent)
        for file in (settings.calibrate, save_scores)
        if file is not None
    ]
    for target, folder in places:
        try:
            if folder.exists() and not folder.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, f"{folder} is not a folder")
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as error:
            raise write_error(target, error) from None


def _collector(on_warning: Warn | None) -> tuple[list[str], Warn]:
    """A list that keeps every warning, and the function that adds one (and passes it on)."""
    warnings: list[str] = []

    def warn(line: str) -> None:
        warnings.append(line)
        if on_warning is not None:
            on_warning(line)

    return warnings, warn


def _unseen_mask(
    vocabulary_labels: list[str], unseen: str | Path | None, where: str, warn: Warn
) -> NDArray[np.bool_]:
    """Which labels are unseen; every label of the ``unseen`` file must be among them."""
    if unseen is None:
        return np.zeros(len(vocabulary_labels), dtype=bool)
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
    return np.array([vocab.normalise(label) in chosen for label in vocabulary_labels], dtype=bool)


def _check_labels(scores: ScoreSet, path: Path, labels: str | Path) -> None:
    """The label file must list the scores' labels, in their order (case and spacing aside)."""
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


def _finish(
    scores: ScoreSet,
    source: str,
    failures: list[ImageLoadError],
    settings: EvalSettings,
    files: list[Path],
    warnings: list[str],
    fingerprint: str = "",
    precision: str = "",
) -> EvalResult:
    """The metric rows, then calibration and the output folder when asked; ``fingerprint``
    (``Tagger.scores_fingerprint``, "" for saved scores) goes into the thresholds file,
    ``precision`` (what the model ran in, and why; "" for saved scores) into the report."""
    ks = list(dict.fromkeys(int(k) for k in settings.ks))
    report = evaluate(scores, ks, reference=settings.reference_map)
    report.source = source
    if precision:
        report.extra["precision"] = precision
    report.failed_images = len(failures)
    calibrated = None
    if settings.calibrate is not None:
        calibrated = _calibrate(scores, Path(settings.calibrate), settings, ks, fingerprint)
        files.append(calibrated.path)
        if calibrated.check is not None:
            report.extra["calibration_check"] = calibrated.check.to_json()
    if settings.out is not None:
        files += _write_outputs(Path(settings.out), report, scores)
    return EvalResult(report, scores, failures, calibrated, files, warnings)


def _calibrate(
    scores: ScoreSet, path: Path, settings: EvalSettings, ks: list[int], fingerprint: str
) -> CalibrationResult:
    """Report thresholds chosen on part of the images on the rest, then write thresholds
    chosen on all of them."""
    target, min_positives = settings.target_precision, settings.min_positives
    check, skipped = None, ""
    if settings.calibrate_fraction > 0:
        try:
            check = calibration.check_calibration(
                scores, settings.calibrate_fraction, target, min_positives, ks
            )
        except ValueError as error:  # too few images to split
            skipped = str(error)
    chosen = calibration.calibrate_thresholds(
        scores.scores, scores.targets, target_precision=target, min_positives=min_positives
    )
    rule = "maximise F1" if target is None else f"reach precision {target} (most recall)"
    comment = (
        f"per-label thresholds from mkt-tag eval: {rule}, on {len(scores)} images\n"
        f"labels with < {min_positives} positives: the best global threshold"
    )
    written = calibration.write_calibration(
        path, scores.labels, chosen, comment, scores.model, fingerprint
    )
    return CalibrationResult(path, chosen, written, check, skipped)


def _write_outputs(folder: Path, report: EvalReport, scores: ScoreSet) -> list[Path]:
    """metrics.json, per_label.csv and report.png in ``folder`` (made when missing)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"{folder}: cannot create the folder ({error.strerror})") from None
    write_metrics(folder / METRICS_FILE, report)
    write_per_label(folder / PER_LABEL_FILE, report)
    plots.write_report_png(folder / REPORT_FILE, report, scores)
    return [folder / name for name in OUTPUT_FILES]
