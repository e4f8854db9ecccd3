"""`mkt-tag tag`: tag files and folders, write results and sidecars, resume killed runs."""

from __future__ import annotations

import time
from contextlib import nullcontext
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
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
    WorkersOption,
    app,
    err,
    fail,
    warn,
)
from mkt_tag.config import DEFAULT_BACKBONE
from mkt_tag.devices import Device, Precision
from mkt_tag.errors import EXIT_INTERRUPTED, EXIT_PARTIAL, EXIT_USAGE, MktTagError
from mkt_tag.results import TagResult

if TYPE_CHECKING:
    from mkt_tag.tagging.job import JobReport, TagJob
    from mkt_tag.tagging.label_embeddings import LabelSet
    from mkt_tag.tagging.tagger import Tagger


class Sidecar(str, Enum):
    json = "json"
    txt = "txt"
    xmp = "xmp"


class Naming(str, Enum):
    full = "full"
    stem = "stem"


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} img/s" if speed else "-- img/s", style="cyan")


def _progress(quiet: bool) -> Progress:
    return Progress(
        TextColumn("tagging"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=err,
        disable=quiet or not err.is_terminal,
        transient=False,
    )


def _print_result(result: TagResult) -> None:
    tags = ", ".join(f"{t.label} ({t.score:.3f})" for t in result.tags)
    # Plain print: a pipe-friendly line (Rich would expand the tab and wrap).
    print(f"{result.path}\t{tags}", flush=True)


@app.command()
def tag(
    paths: list[Path] = typer.Argument(
        ..., metavar="PATH", help="Image files and/or folders to tag."
    ),
    labels: Path = typer.Option(
        ..., "--labels", "-l", help="Vocabulary: .txt (one label per line), .tsv or .csv."
    ),
    model: str = typer.Option(
        DEFAULT_BACKBONE,
        "--model",
        "-m",
        help=MODEL_HELP,
    ),
    top_k: int | None = typer.Option(
        None,
        "--top-k",
        "-k",
        min=1,
        help="At most K tags per image [default: 5 without a threshold].",
    ),
    threshold: float | None = typer.Option(
        None, "--threshold", "-t", help="Only tags scoring at least T."
    ),
    thresholds: Path | None = typer.Option(
        None, "--thresholds", help="Per-label thresholds: label<TAB>threshold lines."
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Combined results file: .csv, .json or .jsonl."
    ),
    sidecar: Sidecar | None = typer.Option(None, "--sidecar", help="Write a sidecar per image."),
    sidecar_naming: Naming = typer.Option(
        Naming.full, "--sidecar-naming", help="full: photo.jpg.xmp; stem: photo.xmp."
    ),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Descend into sub-folders."),
    skip_existing: bool = typer.Option(
        False, "--skip-existing", help="Skip images already tagged (the default)."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Re-tag and replace existing outputs."
    ),
    append: bool = typer.Option(False, "--append", help="Re-tag and merge into existing sidecars."),
    batch_size: BatchSizeOption = 16,
    workers: WorkersOption = None,
    parallel: ParallelOption = None,
    device: DeviceOption = Device.auto,
    precision: PrecisionOption = Precision.auto,
    feature_cache: bool = typer.Option(
        False,
        "--feature-cache/--no-feature-cache",
        help="Keep image features (~200 KB per image for ViT-B/16) so re-tagging with an "
        "edited vocabulary skips the image model.",
    ),
    cache_dir: CacheDirOption = None,
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="No progress bar and no summary; failures are still listed."
    ),
) -> None:
    """Tag images with the labels in a label file.

    Without --output or --sidecar, tags are printed as "path<TAB>tag (score), ...".

    Example:

        mkt-tag tag ~/Photos -r --labels my_labels.txt --sidecar xmp
    """
    from mkt_tag import vocab
    from mkt_tag.tagging import job as tagjob
    from mkt_tag.tagging.selection import selection_for
    from mkt_tag.tagging.tagger import Tagger

    if sum([skip_existing, overwrite, append]) > 1:
        raise fail("choose one of --skip-existing, --overwrite and --append", EXIT_USAGE)
    if output is not None and output.suffix.lower() not in (".csv", ".json", ".jsonl"):
        raise fail(f"--output {output}: use a .csv, .json or .jsonl file name", EXIT_USAGE)
    existing = "overwrite" if overwrite else "append" if append else "skip"
    try:
        vocabulary = vocab.read_labels(labels)
        for warning in vocabulary.warnings:
            warn(warning)
        selection, notes = selection_for(vocabulary, top_k, threshold, thresholds)
        for note in notes:
            warn(note)
        with (
            err.status("loading model", spinner="dots")
            if err.is_terminal and not quiet
            else nullcontext()
        ):
            tagger = Tagger.load(
                model,
                device=device.value,
                precision=precision.value,
                cache_dir=cache_dir,
                feature_cache=feature_cache,
            )
            labelset = tagger.embed_labels(vocabulary.entries, source=str(labels))
        for cache in (tagger.label_cache, tagger.feature_cache):
            for line in cache.warnings if cache else []:
                warn(line)
        job = tagjob.TagJob(
            inputs=paths,
            selection=selection,
            recursive=recursive,
            output=output,
            sidecar=sidecar.value if sidecar else None,
            sidecar_naming=sidecar_naming.value,
            existing=existing,
            batch_size=batch_size,
            workers=workers,
            parallel=parallel,
        )
        report = _run_job(job, tagger, labelset, quiet, to_stdout=output is None and not sidecar)
    except MktTagError as error:
        raise fail(str(error)) from None
    if report is None:
        raise typer.Exit(EXIT_INTERRUPTED)
    if report.failures:
        raise typer.Exit(EXIT_PARTIAL)


def _run_job(
    job: TagJob, tagger: Tagger, labelset: LabelSet, quiet: bool, to_stdout: bool
) -> JobReport | None:
    """Drive a tag job with a progress bar; the report, or None when interrupted."""
    from mkt_tag.tagging import job as tagjob

    started = time.perf_counter()
    with _progress(quiet) as progress:
        task = progress.add_task("tagging", total=None)
        events = tagjob.run(
            job, tagger, labelset, on_start=lambda n: progress.update(task, total=n)
        )
        try:
            while True:
                item = next(events)
                if isinstance(item, MktTagError):
                    err.print(Text(f"failed: {item}", style="yellow"))
                else:
                    if to_stdout:
                        _print_result(item)
                    progress.advance(task)
        except StopIteration as stop:
            report = stop.value
        except KeyboardInterrupt:
            events.close()
            err.print(
                Text(
                    "interrupted: finished images are saved; run the same command again to resume",
                    style="yellow",
                )
            )
            return None
    elapsed = time.perf_counter() - started
    rate = report.tagged / elapsed if elapsed > 0 else 0.0
    if not quiet or report.failures:
        failed = f"failed {len(report.failures)} (listed above)" if report.failures else "failed 0"
        err.print(
            f"{report.found} images: tagged {report.tagged}, skipped {report.skipped} "
            f"already done, {failed}; {elapsed:.1f} s, {rate:.1f} img/s"
        )
    return report
