"""A tagging run over files: what to skip, where results go, how a killed run resumes.

Every output is written atomically, so a run killed at any moment (Ctrl-C, kill -9) leaves
each sidecar either untouched or complete, and the combined results file either absent or
complete; its journal lets the next run resume where the last one stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mkt_tag.errors import ImageLoadError, MktTagError
from mkt_tag.images import find_images
from mkt_tag.results import ResultsFile, TagResult
from mkt_tag.sidecars import sidecar_path, write_sidecar
from mkt_tag.tagging.label_embeddings import LabelSet
from mkt_tag.tagging.selection import Selection
from mkt_tag.tagging.tagger import Tagger

EXISTING_MODES = ("skip", "overwrite", "append")


@dataclass
class TagJob:
    """What a ``mkt-tag tag`` run does (the CLI's options, minus the model)."""

    inputs: Sequence[Path]  # files and folders to tag
    selection: Selection  # which labels become tags
    recursive: bool = False  # descend into sub-folders
    output: Path | None = None  # combined results file (.csv, .json, .jsonl)
    sidecar: str | None = None  # per-image sidecar format: json, txt or xmp
    sidecar_naming: str = "full"  # "full": photo.jpg.xmp, "stem": photo.xmp
    existing: str = "skip"  # outputs already there: skip, overwrite, or append (merge tags)
    batch_size: int = 16  # images per forward pass
    workers: int | None = None  # decoding processes (None: automatic)
    parallel: int | None = None  # batches the model runs at once (None: automatic)


@dataclass
class JobReport:
    """What a run did; ``failures`` name each file that could not be tagged and why."""

    found: int = 0
    tagged: int = 0
    skipped: int = 0
    failures: list[MktTagError] = field(default_factory=list)


def _plan(job: TagJob, images: list[Path], done: set[str]) -> list[Path]:
    """Images that still need the model: missing from the results file or their sidecar."""
    if job.existing != "skip" or (job.output is None and job.sidecar is None):
        return images
    todo = []
    for image in images:
        needs_row = job.output is not None and str(image) not in done
        needs_sidecar = (
            job.sidecar is not None
            and not sidecar_path(image, job.sidecar, job.sidecar_naming).exists()
        )
        if needs_row or needs_sidecar:
            todo.append(image)
    return todo


def run(
    job: TagJob,
    tagger: Tagger,
    labels: LabelSet,
    on_start: Callable[[int], None] | None = None,
) -> Generator[TagResult | MktTagError, None, JobReport]:
    """Run ``job``, yielding each image's result or error as it finishes.

    ``on_start(n)`` is told how many images need the model, before the first one runs. The
    generator's ``JobReport`` is available as its return value (``StopIteration.value``).
    """
    if job.existing not in EXISTING_MODES:
        raise MktTagError(f"unknown mode for existing outputs {job.existing!r}")
    images, missing = find_images(job.inputs, job.recursive)
    report = JobReport(found=len(images), failures=list(missing))
    yield from missing
    results = ResultsFile(job.output, overwrite=job.existing == "overwrite") if job.output else None
    done = set(results.done()) if results else set()
    todo = _plan(job, images, done)
    report.skipped = len(images) - len(todo)
    if on_start:
        on_start(len(todo))
    pending: list[TagResult] = []
    for item in tagger.tag_files(
        todo, labels, job.selection, job.batch_size, job.workers, job.parallel
    ):
        if isinstance(item, ImageLoadError):
            report.failures.append(item)
            yield item
            continue
        try:
            if job.sidecar:
                write_sidecar(
                    item.path,
                    item.tags,
                    job.sidecar,
                    job.sidecar_naming,
                    merge=job.existing == "append",
                )
        except MktTagError as error:
            report.failures.append(error)
            yield error
            continue
        report.tagged += 1
        pending.append(item)
        if results and len(pending) >= job.batch_size:
            # One journal write (and fsync) per batch: a killed run re-tags at most one batch.
            results.add(pending)
            pending = []
        yield item
    if results:
        results.add(pending)
        results.finish()
    return report
