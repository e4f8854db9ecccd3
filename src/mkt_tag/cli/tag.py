"""`mkt-tag tag`: tag files and folders, write results and sidecars, resume killed runs."""

from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
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
from mkt_tag.cli._tag_run import list_skipped, run_job
from mkt_tag.config import DEFAULT_BACKBONE
from mkt_tag.devices import Device, Precision
from mkt_tag.errors import EXIT_INTERRUPTED, EXIT_PARTIAL, EXIT_USAGE, MktTagError, UsageError
from mkt_tag.records import RunIdentity

if TYPE_CHECKING:
    from mkt_tag.tagging.job import FileTagger


@app.command()
def tag(
    paths: list[str] = typer.Argument(
        ...,
        metavar="PATH",
        help="Image files and/or folders to tag; with --engine ray also s3:// and gs:// URIs "
        "(an object, or a prefix listed as a folder).",
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
    cannot read (JPEG XL, ...) are counted in the summary. Images in a bucket are tagged
    from their URIs with --engine ray, into a results file (--output; no sidecars).

    Examples:

        mkt-tag tag ~/Photos -r --labels my_labels.txt --sidecar xmp

        mkt-tag tag s3://my-bucket/photos/ -r -o tags.csv --engine ray
    """
    # Planning imports neither torch nor the model: a run with nothing to do ends at once.
    from mkt_tag import hub, published, remote, shards, vocab
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
        inputs = [remote.parse_input(path) for path in paths]  # URIs stay URIs
        chosen_sidecar = sidecar.value if sidecar else None
        remote.check_uris(inputs, output, chosen_sidecar, embed, engine.value)
        if engine is Engine.ray:  # what it cannot do, and a missing Ray, before any work
            check_job(workers, parallel, feature_cache)
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
            inputs=inputs,
            selection=selection,
            recursive=recursive,
            output=output,
            sidecar=chosen_sidecar,
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
                list_skipped(planned)
            files: FileTagger | None = None  # what tags the images: a model here, or Ray
            ran_in = ""  # the precision of a model here
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
                        ran_in = f" in {tagger.precision.value}"  # for the summary
                        if verbose:  # "model on cpu in int8 (auto: this CPU has no ...)"
                            err.print(f"model on {tagger.device.type} in {tagger.precision}")
                    if thresholds is not None:
                        for note in check_thresholds_model(
                            thresholds, model, fingerprint, force_thresholds
                        ):
                            warn(note)
                    if engine is Engine.local:
                        labelset = tagger.embed_labels(vocabulary.entries, source=str(labels))
                        files = tagjob.LocalTagger(tagger, labelset, workers, parallel)
            to_stdout = not (output or sidecar or embed)
            report = run_job(planned, files, quiet, verbose, to_stdout, ran_in)
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
