"""A tagging run over files: what to skip, where results go, how a killed run resumes.

A run is planned first, without the model: the inputs are found (a run whose every input
is missing stops here), sidecars that two images would share are refused, temporary files
left by killed runs are removed, the results file is opened (and locked: one run at a time
writes it) and the images already done are set aside. Only then, and only when some image
needs it, does the caller load a model:

    with plan(job) as work:
        tagger = Tagger.load(model) if work.todo else None
        labels = tagger.embed_labels(vocabulary) if tagger else None
        for item in run(work, tagger, labels):
            ...

``run`` takes a local ``Tagger`` and its labels, or anything else that tags files (a
:class:`FileTagger`, such as ``ray_engine.RayEngine``, which needs no model on this machine).
Inputs may be URIs of images in a bucket ("s3://bucket/photos", ``remote.py``), which the
Ray engine reads; their tags go to the results file only (``remote.check_uris``).

Every output is written atomically, so a run killed at any moment (Ctrl-C, kill -9) leaves
each sidecar either untouched or complete, and the combined results file either absent or
complete; its journal lets the next run resume where the last one stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

from mkt_tag import hub, identity, published
from mkt_tag.config import check_streams
from mkt_tag.errors import ImageLoadError, InputFileError, MktTagError, OutputError, UsageError
from mkt_tag.files import remove_stale_temporaries
from mkt_tag.records import CURRENT, NEW, STALE, RunIdentity, vocabulary_fingerprint
from mkt_tag.remote import (
    LOCAL_ENGINE_URI,
    ImagePath,
    RemoteImage,
    check_uris,
    parse_input,
    scan_inputs,
)
from mkt_tag.results import ResultsFile, TagResult
from mkt_tag.shards import Shard
from mkt_tag.sidecar_paths import SIDECAR_FORMATS
from mkt_tag.tagging.outputs import Outputs, shared_sidecars
from mkt_tag.tagging.selection import Selection
from mkt_tag.vocab import Entry

if TYPE_CHECKING:  # torch: imported by whoever loads a model, not by planning
    from mkt_tag.embedded import EmbedChange
    from mkt_tag.tagging.label_embeddings import LabelSet
    from mkt_tag.tagging.tagger import Tagger

EXISTING_MODES = ("skip", "overwrite", "append")


class FileTagger(Protocol):
    """What tags a run's images: one TagResult or ImageLoadError per path, in any order."""

    def tag_files(
        self, paths: Sequence[ImagePath], selection: Selection, batch_size: int
    ) -> Iterator[TagResult | ImageLoadError]: ...


@dataclass
class LocalTagger:
    """A :class:`FileTagger` of a ``Tagger`` in this process, with the labels it embedded."""

    tagger: Tagger
    labels: LabelSet
    workers: int | None = None  # decoding processes (None: automatic)
    parallel: int | None = None  # batches the model runs at once (None: automatic)

    def tag_files(
        self, paths: Sequence[ImagePath], selection: Selection, batch_size: int
    ) -> Iterator[TagResult | ImageLoadError]:
        local = [path for path in paths if isinstance(path, Path)]
        if len(local) < len(paths):
            uri = next(path for path in paths if isinstance(path, RemoteImage))
            raise UsageError(f"{uri}: {LOCAL_ENGINE_URI}")
        return self.tagger.tag_files(
            local, self.labels, selection, batch_size, self.workers, self.parallel
        )


@dataclass
class TagJob:
    """What a ``mkt-tag tag`` run does (the CLI's options, minus the model)."""

    inputs: Sequence[Path | str | RemoteImage]  # files, folders, URIs ("s3://bucket/photos")
    selection: Selection  # which labels become tags
    recursive: bool = False  # descend into sub-folders
    output: Path | None = None  # combined results file (.csv, .json, .jsonl)
    sidecar: str | None = None  # per-image sidecar format: json, txt or xmp
    sidecar_naming: str = "full"  # "full": photo.jpg.xmp, "stem": photo.xmp
    # outputs already there: skip (those current for ``run``), overwrite (re-tag the images
    # given and replace mkt-tag's tags and rows; other rows stay), or append (re-tag, and
    # keep mkt-tag's earlier tags in sidecars as well)
    existing: str = "skip"
    # what the tags depend on (``run_identity``), or a function giving it, called only when
    # needed (outputs to judge, tags to record); None: no output counts as current
    run: RunIdentity | Callable[[], RunIdentity] | None = None
    tag_root: str = ""  # hierarchical keywords under this root ("auto": auto|dog)
    embed: bool = False  # also write the keywords into the image files (exiftool)
    dry_run: bool = False  # with ``embed`` alone: write nothing, list what would change
    batch_size: int = 16  # images per forward pass
    workers: int | None = None  # decoding processes (None: automatic)
    parallel: int | None = None  # batches the model runs at once (None: automatic)
    # tag only this shard of the images found, into its own results file (shards.py)
    shard: Shard | None = None

    @property
    def results_path(self) -> Path | None:
        """The results file the run writes: ``output``, or its shard's (tags.shard-2-of-8.csv)."""
        if self.output is None or self.shard is None:
            return self.output
        return self.shard.output(self.output)


@dataclass
class TagPlan:
    """A planned run: what needs the model, and what was found before any work.

    Holds the results file open (and locked against other runs) until the run ends or
    :meth:`close` is called; use it as a context manager.
    """

    job: TagJob
    images: list[ImagePath]  # every image found, sorted
    todo: list[ImagePath]  # the images that need the model
    failures: list[MktTagError]  # found while planning: missing inputs, shared sidecars
    states: dict[str, int] = field(default_factory=dict)  # images found NEW, STALE, CURRENT
    unreadable: list[ImagePath] = field(default_factory=list)  # photo formats not read yet
    removed: list[Path] = field(default_factory=list)  # temporaries of killed runs
    outputs: Outputs = field(default_factory=Outputs)  # open for this run
    total: int = 0  # images found in the inputs, before taking the shard

    @property
    def results(self) -> ResultsFile | None:
        """The combined output, open (and locked) for this run."""
        return self.outputs.results

    @property
    def shard_share(self) -> str:
        """What the shard took, and where its results go: "125 of 1000 images, results in
        tags.shard-2-of-8.csv"."""
        into = f", results in {self.job.results_path}" if self.job.results_path else ""
        return f"{len(self.images)} of {self.total} images{into}"

    @property
    def skipped(self) -> int:
        """Images whose outputs are current (in the results file and their sidecar, from
        this model, vocabulary and selection)."""
        return self.states.get(CURRENT, 0) if self.job.existing == "skip" else 0

    def close(self) -> None:
        """Let other runs open the results file (a run still unfinished stays resumable);
        stop exiftool."""
        self.outputs.close()

    def __enter__(self) -> TagPlan:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@dataclass
class JobReport:
    """What a run did; ``failures`` name each file that could not be tagged and why."""

    found: int = 0
    tagged: int = 0
    skipped: int = 0
    states: dict[str, int] = field(default_factory=dict)  # images found NEW, STALE, CURRENT
    failures: list[MktTagError] = field(default_factory=list)
    unreadable: list[ImagePath] = field(default_factory=list)  # photo formats not read yet
    removed: list[Path] = field(default_factory=list)  # temporaries of killed runs
    warnings: list[str] = field(default_factory=list)  # e.g. keywords left out of IPTC
    changes: list[EmbedChange] = field(default_factory=list)  # a dry run's, per file


def run_identity(
    model: str | Path,
    vocabulary: Sequence[str | Entry],
    selection: Selection,
    cache_dir: Path | None = None,
    download: bool = True,
    streams: str | None = None,
) -> RunIdentity:
    """What the tags of a run with ``model`` (an id or checkpoint folder), ``vocabulary``
    and ``selection`` depend on, found without loading the model (its files are found, and
    downloaded when needed and allowed). ``streams`` overrides the model's scores
    (``ModelConfig.streams``).

    Raises:
        ModelError: the model cannot be found (see ``identity.resolve``).
    """
    root = hub.cache_dir(cache_dir)
    found = identity.resolve(published.locate(model, root, download), root, download)
    if streams is not None:
        found.config.streams = check_streams(streams)
    entries = [entry if isinstance(entry, Entry) else Entry(entry) for entry in vocabulary]
    return RunIdentity(
        str(model), found.scores, vocabulary_fingerprint(entries), selection.describe()
    )


def plan(job: TagJob, on_wait: Callable[[Path], None] | None = None) -> TagPlan:
    """Find the inputs of ``job`` and what needs the model, without loading one.

    ``on_wait(output)`` is called when another run is writing the results file; this
    one then waits for it to finish, and plans from what it wrote.

    Raises:
        InputFileError: every input is missing (nothing could be done).
        OutputError: the results file cannot be read or written.
        UsageError: what cannot be done with URIs (``remote.check_uris``).
        MktTagError: an unknown mode for existing outputs.
    """
    if job.existing not in EXISTING_MODES:
        raise MktTagError(f"unknown mode for existing outputs {job.existing!r}")
    if job.sidecar is not None and job.sidecar not in SIDECAR_FORMATS:
        raise MktTagError(f"unknown sidecar format {job.sidecar!r}")
    if job.dry_run and (not job.embed or job.sidecar is not None or job.output is not None):
        raise MktTagError("a dry run previews --embed alone: leave out --sidecar and --output")
    inputs = [parse_input(given) for given in job.inputs]
    check_uris(inputs, job.output, job.sidecar, job.embed)
    found = scan_inputs(inputs, job.recursive)
    if job.inputs and len(found.missing) == len(job.inputs):
        raise _nothing_found(found.errors)
    failures: list[MktTagError] = list(found.errors)
    images, unreadable = found.images, found.unreadable
    if job.shard is not None:
        images, unreadable = job.shard.select(images), job.shard.select(unreadable)
    # Only ours, only of processes that are gone: see files.remove_stale_temporaries.
    folders = {image.parent for image in images if isinstance(image, Path)}
    if job.results_path is not None:
        folders.add(job.results_path.parent)
    removed = [path for folder in sorted(folders) for path in remove_stale_temporaries(folder)]
    outputs = _open_outputs(job, on_wait)
    try:
        # Collisions over every image found: two photos sharing a sidecar may fall in two
        # shards, whose runs would each write it.
        shared = shared_sidecars(found.images, job.sidecar, job.sidecar_naming)
        chosen = set(images) if job.shard is not None else shared.keys()
        refused: dict[ImagePath, OutputError] = {
            **{image: error for image, error in shared.items() if image in chosen},
            **outputs.refusals(images),
        }
        failures += refused.values()
        states = outputs.states([image for image in images if image not in refused])
    except BaseException:
        outputs.close()
        raise
    todo = [image for image, state in states.items() if state != CURRENT or job.existing != "skip"]
    counts = {state: sum(s == state for s in states.values()) for state in (NEW, STALE, CURRENT)}
    return TagPlan(
        job, images, todo, failures, counts, unreadable, removed, outputs, len(found.images)
    )


def _open_outputs(job: TagJob, on_wait: Callable[[Path], None] | None) -> Outputs:
    """The run's outputs, opened: the results file locked, exiftool started (so a missing
    one is said before any work)."""
    outputs = Outputs(
        sidecar=job.sidecar,
        sidecar_naming=job.sidecar_naming,
        run=job.run,
        tag_root=job.tag_root,
        keep=job.existing == "append",
        dry_run=job.dry_run,
    )
    if job.embed:
        from mkt_tag.embedded import EmbeddedMetadata

        outputs.embedded = EmbeddedMetadata().__enter__()
    if job.results_path is not None:
        try:
            outputs.results = ResultsFile(job.results_path, on_wait=on_wait)
        except BaseException:
            outputs.close()
            raise
    return outputs


def _nothing_found(errors: list[ImageLoadError]) -> MktTagError:
    if len(errors) == 1:
        return errors[0]
    return InputFileError(errors[0].path, "; ".join([errors[0].reason, *map(str, errors[1:])]))


def run(
    work: TagJob | TagPlan,
    tagger: Tagger | FileTagger | None,
    labels: LabelSet | None = None,
    on_start: Callable[[int], None] | None = None,
) -> Generator[TagResult | MktTagError, None, JobReport]:
    """Run a planned job (or plan ``work`` first), yielding each image's result or error
    as it finishes. The generator's ``JobReport`` is its return value
    (``StopIteration.value``).

    Given a :class:`TagJob`, the errors found while planning it are yielded first; given a
    :class:`TagPlan`, they are in ``plan.failures`` (and in the report) and not yielded
    again. ``tagger`` is a ``Tagger`` with the ``labels`` it embedded, or a
    :class:`FileTagger` (an engine, no labels); both may be None when the plan has nothing
    to tag.
    ``on_start(n)`` is told how many images need the model, before the first one runs.
    The results file is written at the end, and the plan closed, however the run ends.
    """
    if isinstance(work, TagJob):
        with plan(work) as planned:
            yield from planned.failures
            return (yield from run(planned, tagger, labels, on_start))
    job = work.job
    report = JobReport(
        found=len(work.images),
        skipped=work.skipped,
        states=dict(work.states),
        failures=list(work.failures),
        unreadable=list(work.unreadable),
        removed=list(work.removed),
    )
    try:
        if on_start:
            on_start(len(work.todo))
        if work.todo:
            files = _file_tagger(job, tagger, labels)
            yield from _tag(job, work.todo, files, work.outputs, report)
        if work.results is not None:
            work.results.finish()
        report.changes = work.outputs.changes
    finally:
        work.close()
    return report


def _file_tagger(
    job: TagJob, tagger: Tagger | FileTagger | None, labels: LabelSet | None
) -> FileTagger:
    """What tags the plan's images: a ``Tagger`` with its labels, or an engine as given."""
    if labels is not None and tagger is not None:
        return LocalTagger(cast("Tagger", tagger), labels, job.workers, job.parallel)
    if tagger is None or hasattr(tagger, "embed_labels"):  # a Tagger needs its labels
        raise ValueError("the plan has images to tag: give a tagger and labels, or an engine")
    return tagger


def _tag(
    job: TagJob,
    todo: list[ImagePath],
    files: FileTagger,
    outputs: Outputs,
    report: JobReport,
) -> Generator[TagResult | MktTagError, None, None]:
    results = outputs.results
    pending: list[TagResult] = []
    for item in files.tag_files(todo, job.selection, job.batch_size):
        if isinstance(item, ImageLoadError):
            report.failures.append(item)
            yield item
            continue
        try:
            report.warnings += outputs.write(item)
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
