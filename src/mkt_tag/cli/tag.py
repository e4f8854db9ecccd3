"""`mkt-tag tag`: tag files and folders, write results and sidecars, resume killed runs."""

from __future__ import annotations

import os
import time
from collections import Counter
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    Engine,
    EngineOption,
    Naming,
    ParallelOption,
    PrecisionOption,
    RayAddressOption,
    RecursiveOption,
    Sidecar,
    StreamsOption,
    WorkersOption,
    app,
    err,
    fail,
    warn,
)
from mkt_tag.config import DEFAULT_BACKBONE
from mkt_tag.devices import Device, Precision
from mkt_tag.errors import EXIT_INTERRUPTED, EXIT_PARTIAL, EXIT_USAGE, MktTagError, UsageError
from mkt_tag.records import RunIdentity
from mkt_tag.results import TagResult

if TYPE_CHECKING:
    from mkt_tag.keywords import Fields
    from mkt_tag.tagging.job import FileTagger, JobReport, TagPlan


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
    labels: Path | None = typer.Option(
        None,
        "--labels",
        "-l",
        help="Vocabulary: .txt (one label per line), .tsv or .csv [default: the labels the "
        "model bundles, e.g. mkt-nus-wide's 1,006].",
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
    streams: StreamsOption = None,
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Combined results file: .csv, .json or .jsonl."
    ),
    sidecar: Sidecar | None = typer.Option(None, "--sidecar", help="Write a sidecar per image."),
    sidecar_naming: Naming = typer.Option(
        Naming.full, "--sidecar-naming", help="full: photo.jpg.xmp; stem: photo.xmp."
    ),
    recursive: RecursiveOption = False,
    shard: str | None = typer.Option(
        None,
        "--shard",
        metavar="I/N",
        help="Tag the I-th of N shards of the images (from 1); -o tags.csv writes "
        "tags.shard-I-of-N.csv (`mkt-tag merge` joins them) [default: from torchrun's RANK and "
        "WORLD_SIZE, or a Slurm array's SLURM_ARRAY_TASK_ID and _COUNT; none: every image].",
    ),
    skip_existing: bool = typer.Option(
        False,
        "--skip-existing",
        help="Skip images whose tags are current: same model, vocabulary and selection "
        "(the default).",
    ),
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="Re-tag every image, replacing mkt-tag's earlier tags (never anyone else's).",
    ),
    append: bool = typer.Option(
        False,
        "--append",
        help="Re-tag every image, keeping mkt-tag's earlier tags in sidecars as well.",
    ),
    embed: bool = typer.Option(
        False,
        "--embed",
        help="Also write the keywords into the image files (JPEG, TIFF, HEIC, DNG, PNG, WebP; "
        "needs exiftool): for Lightroom, phones and Apple Photos. Camera raw files keep "
        "theirs in the sidecar.",
    ),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        "-n",
        help="With --embed (and no --sidecar or --output): tag, write nothing, and list the "
        "keywords each file would gain and lose.",
    ),
    tag_root: str = typer.Option(
        "",
        "--tag-root",
        help="Put mkt-tag's keywords under this root in the hierarchical XMP fields (auto: "
        "auto|dog, auto/dog); flat keywords stay plain (dog).",
    ),
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
    engine: EngineOption = Engine.local,
    ray_address: RayAddressOption = None,
    force_thresholds: bool = typer.Option(
        False,
        "--force-thresholds",
        help="Use a --thresholds file calibrated for another model (refused otherwise).",
    ),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="No progress bar and no summary; failures are still listed."
    ),
    verbose: bool = typer.Option(
        False,
        "--verbose",
        "-v",
        help="Also list each file skipped because mkt-tag cannot read its format yet (JPEG XL, "
        "camera raw without the raw extra, ...), and each temporary file of a killed run that "
        "was removed.",
    ),
) -> None:
    """Tag images with the labels in a label file.

    Without --output or --sidecar, tags are printed as "path<TAB>tag (score), ...".
    An image is skipped when its tags are current: its row in the results file (however its
    path is spelled) and its sidecar were written with this model, vocabulary and selection.
    Otherwise it is new or stale and is tagged; the model is only loaded when some image
    needs it. In XMP and JSON sidecars only mkt-tag's own tags are ever replaced: keywords
    a person or another program wrote stay as they are. Paths in the results file are
    absolute. Folders are scanned for the formats mkt-tag reads; photos in formats it
    cannot read (JPEG XL, ...) are counted in the summary.

    Example:

        mkt-tag tag ~/Photos -r --labels my_labels.txt --sidecar xmp
    """
    # Planning imports neither torch nor the model: a run with nothing to do ends at once.
    from mkt_tag import hub, published, shards, vocab
    from mkt_tag.tagging import job as tagjob
    from mkt_tag.tagging.ray_engine import RayEngine, check_job  # Ray: only to tag images
    from mkt_tag.tagging.selection import check_thresholds_model, selection_for

    if sum([skip_existing, overwrite, append]) > 1:
        raise fail("choose one of --skip-existing, --overwrite and --append", EXIT_USAGE)
    if output is not None and output.suffix.lower() not in (".csv", ".json", ".jsonl"):
        raise fail(f"--output {output}: use a .csv, .json or .jsonl file name", EXIT_USAGE)
    existing = "overwrite" if overwrite else "append" if append else "skip"
    chosen_streams = None if streams is None else streams.value
    if ray_address is not None and engine is not Engine.ray:
        raise fail("--ray-address: only with --engine ray", EXIT_USAGE)
    try:
        chosen_shard, shard_source = shards.resolve(shard, os.environ)
        if engine is Engine.ray:  # what it cannot do, and a missing Ray, before any work
            check_job(paths, workers, parallel, feature_cache)
        labels = labels or published.bundled_labels(model, hub.cache_dir(cache_dir))
        vocabulary = vocab.read_labels(labels)
        for warning in vocabulary.warnings:
            warn(warning)
        selection, notes = selection_for(vocabulary, top_k, threshold, thresholds)
        for note in notes:
            warn(note)

        def run() -> RunIdentity:  # outputs say which run made them; found when needed
            return tagjob.run_identity(
                model, vocabulary.entries, selection, cache_dir, streams=chosen_streams
            )

        job = tagjob.TagJob(
            inputs=paths,
            selection=selection,
            recursive=recursive,
            output=output,
            sidecar=sidecar.value if sidecar else None,
            sidecar_naming=sidecar_naming.value,
            existing=existing,
            run=run,
            tag_root=tag_root.strip(),
            embed=embed,
            dry_run=dry_run,
            batch_size=batch_size,
            workers=workers,
            parallel=parallel,
            shard=chosen_shard,
        )
        with tagjob.plan(job, on_wait=_waiting) as planned:
            for failure in planned.failures:
                err.print(Text(f"failed: {failure}", style="yellow"))
            if chosen_shard is not None and not quiet:  # "shard 2/8 (RANK=1, ...): 125 of 1000"
                err.print(f"shard {chosen_shard} ({shard_source}): {planned.shard_share}")
            if verbose:
                _list_skipped(planned)
            files: FileTagger | None = None  # what tags the images: a model here, or Ray
            if planned.todo:  # a model (and torch) only for images that need it
                spinner = err.is_terminal and not quiet and engine is Engine.local
                with err.status("loading model", spinner="dots") if spinner else nullcontext():
                    where: dict[str, Any] = {"device": device.value, "cache_dir": cache_dir}
                    where.update(precision=precision.value, streams=chosen_streams)
                    if engine is Engine.ray:  # Ray's actors load it; here only its files
                        fingerprint = run().model_fingerprint  # a missing model fails now
                        files = RayEngine(model, vocabulary.entries, address=ray_address, **where)
                    else:
                        from mkt_tag.tagging.tagger import Tagger

                        tagger = Tagger.load(model, feature_cache=feature_cache, **where)
                        tagger.report_cache_warnings(warn)
                        fingerprint = tagger.scores_fingerprint
                    if thresholds is not None:
                        for note in check_thresholds_model(
                            thresholds, model, fingerprint, force_thresholds
                        ):
                            warn(note)
                    if engine is Engine.local:
                        labelset = tagger.embed_labels(vocabulary.entries, source=str(labels))
                        files = tagjob.LocalTagger(tagger, labelset, workers, parallel)
            report = _run_job(planned, files, quiet, verbose, not (output or sidecar or embed))
    except UsageError as error:  # options that cannot go together (shards, engine)
        raise fail(str(error), EXIT_USAGE) from None
    except MktTagError as error:
        raise fail(str(error)) from None
    except KeyboardInterrupt:
        report = None
    if report is None:
        err.print(Text(INTERRUPTED, style="yellow"))
        raise typer.Exit(EXIT_INTERRUPTED)
    if report.failures:
        raise typer.Exit(EXIT_PARTIAL)


INTERRUPTED = "interrupted: finished images are saved; run the same command again to resume"


def _waiting(output: Path) -> None:
    message = f"waiting: another mkt-tag run is writing {output}; this one goes on when it"
    err.print(Text(message + " is done (Ctrl-C to stop)", style="yellow"))


def _list_skipped(planned: TagPlan) -> None:
    for path in planned.unreadable:
        err.print(f"skipped, mkt-tag cannot read {path.suffix.lower()} files yet: {path}")
    for path in planned.removed:
        err.print(f"removed a temporary file left by a killed run: {path}")


def _change_line(added: Fields, removed: Fields) -> str:
    """ "+dog +animal|dog -cat": the entries each keyword field would gain and lose."""
    gained = dict.fromkeys(entry for entries in added.values() for entry in entries)
    lost = dict.fromkeys(entry for entries in removed.values() for entry in entries)
    return " ".join([*(f"+{e}" for e in gained), *(f"-{e}" for e in lost)]) or "no change"


def _states(states: dict[str, int]) -> str:
    """ " (2 new, 1 stale, 3 current)": what the run found in the outputs already there."""
    if not states or states.get("new", 0) == sum(states.values()):
        return ""
    return " (" + ", ".join(f"{n} {state}" for state, n in states.items()) + ")"


def _unreadable_summary(unreadable: list[Path]) -> str:
    """ "skipped 3 .jxl, 2 .cr2 files mkt-tag cannot read yet", most frequent first."""
    counts = Counter(path.suffix.lower() for path in unreadable)
    by_count = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    kinds = ", ".join(f"{n} {suffix}" for suffix, n in by_count)
    return f"skipped {kinds} files mkt-tag cannot read yet"


def _run_job(
    planned: TagPlan,
    files: FileTagger | None,
    quiet: bool,
    verbose: bool,
    to_stdout: bool,
) -> JobReport | None:
    """Drive a planned job with a progress bar; the report, or None when interrupted."""
    from mkt_tag.tagging import job as tagjob

    started = time.perf_counter()
    with _progress(quiet) as progress:
        task = progress.add_task("tagging", total=None)
        events = tagjob.run(planned, files, on_start=lambda n: progress.update(task, total=n))
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
            return None
    elapsed = time.perf_counter() - started
    rate = report.tagged / elapsed if elapsed > 0 else 0.0
    if not quiet or report.failures:
        failed = f"failed {len(report.failures)} (listed above)" if report.failures else "failed 0"
        err.print(
            f"{report.found} images{_states(report.states)}: tagged {report.tagged}, "
            f"skipped {report.skipped} current, {failed}; {elapsed:.1f} s, {rate:.1f} img/s"
        )
    for warning in report.warnings:
        warn(warning)
    for change in report.changes:  # a dry run's
        print(f"{change.path}\t{_change_line(change.added, change.removed)}", flush=True)
    if report.removed and not quiet:
        err.print(f"removed {len(report.removed)} temporary files left by killed runs")
    if report.unreadable:  # even with --quiet: no photo is left out without a word
        hint = "" if verbose else " (--verbose lists them)"
        err.print(Text(_unreadable_summary(report.unreadable) + hint, style="yellow"))
        from mkt_tag.camera_raw import install_hint  # here: numpy and Pillow load with it

        if install := install_hint(report.unreadable):
            err.print(Text(install, style="yellow"))
    return report
