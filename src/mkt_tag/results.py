"""Tagging results: ``Tag`` and ``TagResult``, the combined results file, resumable runs.

Results files are ``.csv``, ``.json`` or ``.jsonl``, written atomically (``files.py``). The
combined file of a run is built through a journal, which makes interrupted runs resumable.
Per-image sidecars are in ``sidecars.py``.

Reading uses the csv and json modules, not pandas: what costs is making Python objects of
each row (a path, a list of ``Tag``), whichever parser splits the file. Measured on a CSV of
100,000 rows of 5 tags (CPU seconds on the shared 2-core machine): the csv module 3.8 s;
pandas 0.4 (import) + 0.2 (``read_csv``) + 3.2 (columns to rows) = 3.7 s: no gain.
:func:`read_rows` (the review's checked fallback) skips the ``Path`` and ``TagResult`` of each row.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import BaseFileLock

from mkt_tag.errors import InputFileError, OutputError
from mkt_tag.files import atomic_write_text, write_error
from mkt_tag.locks import hold_lock
from mkt_tag.remote import ImagePath, RemoteImage, absolute, image_ref

RESULTS_SUFFIXES = (".csv", ".json", ".jsonl")
SCORE_DECIMALS = 4  # more digits are noise for a confidence, and make files twice as long
LABEL_SEPARATOR = "|"  # between labels (and between scores) in a CSV cell
CSV_HEADER = ["path", "tags", "scores", "run"]


class MalformedFileError(ValueError):
    """An existing file we were asked to read or merge into has unexpected content."""


@dataclass(frozen=True)
class Tag:
    """One label assigned to an image, with the model's confidence (0..1)."""

    label: str
    score: float


@dataclass
class TagResult:
    """All tags of one image, highest score first."""

    path: ImagePath  # a local path, or a URI (``remote.RemoteImage``)
    tags: list[Tag] = field(default_factory=list)
    run: str = ""  # ``records.RunIdentity.fingerprint`` of the run that tagged it ("" unknown)

    def __post_init__(self) -> None:
        self.path = image_ref(self.path)  # "s3://..." as a RemoteImage, else a Path
        # Ties are broken by label so equal scores give the same file on every run.
        self.tags = sorted(self.tags, key=lambda tag: (-tag.score, tag.label))


def _to_record(result: TagResult) -> dict[str, Any]:
    # Sorting on the rounded score makes the bytes depend only on what is written, so a
    # result read back from a file serialises exactly as the original did.
    rounded = [(tag.label, round(tag.score, SCORE_DECIMALS)) for tag in result.tags]
    rounded.sort(key=lambda item: (-item[1], item[0]))
    tags = [{"label": label, "score": score} for label, score in rounded]
    record: dict[str, Any] = {"path": str(result.path), "tags": tags}
    if result.run:
        record["run"] = result.run
    return record


Row = tuple[str, list[Tag], str]  # a result as written: path, tags best first, run


def _row_of_record(record: Any) -> Row:
    if not (
        isinstance(record, dict)
        and isinstance(record.get("path"), str)
        and isinstance(record.get("tags"), list)
    ):
        raise MalformedFileError('expected objects like {"path": ..., "tags": [...]}')
    tags = []
    for item in record["tags"]:
        if (  # the form mkt-tag writes, checked inline: faster than label_and_score
            type(item) is dict
            and type(label := item.get("label")) is str
            and type(score := item.get("score")) in (float, int)
        ):
            tags.append(_tag(label, score))  # type: ignore[arg-type]  # checked
            continue
        label, score = label_and_score(item)
        if score is None:
            raise MalformedFileError(f"tag {label!r} has no score")
        tags.append(_tag(label, score))
    run = record.get("run", "")
    if not isinstance(run, str):
        raise MalformedFileError(f"run {run!r} is not a fingerprint")
    tags.sort(key=_tag_order)
    return record["path"], tags, run


def _tag(label: str, score: float) -> Tag:
    """``Tag(label, score)``, bypassing the frozen ``__init__`` (slow for 500,000 tags)."""
    tag = object.__new__(Tag)
    tag.__dict__.update(label=label, score=score)
    return tag


def _tag_order(tag: Tag) -> tuple[float, str]:
    return -tag.score, tag.label  # TagResult's order


def label_and_score(item: Any) -> tuple[str, float | None]:
    """Accept {"label": ..., "score": ...}, a score-less {"label": ...} or a bare string."""
    if isinstance(item, str):
        return item, None
    if isinstance(item, dict) and isinstance(item.get("label"), str):
        score = item.get("score")
        if score is None or (isinstance(score, int | float) and not isinstance(score, bool)):
            return item["label"], score
    raise MalformedFileError(f'expected tags like {{"label": ..., "score": ...}}, got {item!r}')


def _results_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in RESULTS_SUFFIXES:
        accepted = ", ".join(RESULTS_SUFFIXES)
        raise OutputError(f"{path}: unknown results format {suffix!r} (use {accepted})")
    return suffix


def write_results(path: Path, results: list[TagResult]) -> None:
    """Atomically write ``results``, in the given order, as ``.csv``, ``.json`` or ``.jsonl``
    (chosen by the extension of ``path``)."""
    path = Path(path)
    suffix = _results_suffix(path)
    records = [_to_record(result) for result in results]
    if suffix == ".json":
        text = json.dumps(records, ensure_ascii=False, indent=2) + "\n"
    elif suffix == ".jsonl":
        text = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    else:
        _check_csv_labels(path, results)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(CSV_HEADER)
        for record in records:
            labels = LABEL_SEPARATOR.join(tag["label"] for tag in record["tags"])
            scores = LABEL_SEPARATOR.join(
                f"{tag['score']:.{SCORE_DECIMALS}f}" for tag in record["tags"]
            )
            writer.writerow([record["path"], labels, scores, record.get("run", "")])
        text = buffer.getvalue()
    atomic_write_text(path, text)


def _check_csv_labels(path: Path, results: list[TagResult]) -> None:
    labels = (tag.label for result in results for tag in result.tags)
    if (bad := next((label for label in labels if LABEL_SEPARATOR in label), None)) is not None:
        raise OutputError(
            f"{path}: label {bad!r} contains {LABEL_SEPARATOR!r}, which separates labels in "
            "CSV output; write .json or .jsonl instead"
        )


def read_results(path: Path) -> list[TagResult]:
    """Read a results file written by :func:`write_results`.

    Raises:
        InputFileError: the file is missing, unreadable or not in the expected layout.
    """
    return [TagResult(image_ref(path), tags, run) for path, tags, run in read_rows(path)]


def read_rows(path: Path) -> list[Row]:
    """:func:`read_results` as rows (path as written, tags best first, run): half the time."""
    suffix = _results_suffix(path := Path(path))
    try:
        text = path.read_text(encoding="utf-8")
        if suffix == ".json":
            records = json.loads(text)
            if not isinstance(records, list):
                raise MalformedFileError("expected a JSON array")
            return [_row_of_record(record) for record in records]
        if suffix == ".jsonl":
            return [_row_of_record(json.loads(ln)) for ln in text.splitlines() if ln.strip()]
        return _rows_from_csv(text)
    except OSError as error:
        raise InputFileError(path, (error.strerror or str(error)).lower()) from None
    except (ValueError, UnicodeDecodeError) as error:  # includes JSON and MalformedFileError
        raise InputFileError(path, f"malformed results file ({error})") from None


def _rows_from_csv(text: str) -> list[Row]:
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header not in (CSV_HEADER, CSV_HEADER[:3]):  # files of mkt-tag 0.2 have no run
        raise MalformedFileError(f"expected the header {','.join(CSV_HEADER)}")
    results = []
    for row in reader:
        if len(row) != len(header):
            raise MalformedFileError(f"expected {len(header)} columns, got {row!r}")
        labels = row[1].split(LABEL_SEPARATOR) if row[1] else []
        scores = [float(score) for score in row[2].split(LABEL_SEPARATOR)] if row[2] else []
        if len(labels) != len(scores):
            raise MalformedFileError(f"{len(labels)} tags but {len(scores)} scores in {row!r}")
        tags = [_tag(label, score) for label, score in zip(labels, scores, strict=True)]
        tags.sort(key=_tag_order)
        results.append((row[0], tags, row[3] if len(row) > 3 else ""))
    return results


def image_key(path: ImagePath) -> str:
    """Which image ``path`` names, however it is spelled: its resolved absolute path
    (photos/a.jpg, ./photos/a.jpg, /home/me/photos/a.jpg and a symlink to it are one); a
    URI's own text ("s3://bucket/a.jpg"), the same on every machine."""
    if isinstance(path, RemoteImage):
        return path.uri
    try:
        return str(Path(path).resolve())
    except (OSError, RuntimeError):  # a symlink loop: fall back to the spelling
        return os.path.abspath(path)


class ResultsFile:
    """The combined results file of a run that can be killed at any moment and resumed.

    Results are appended to a journal (``<output>.partial.jsonl``, fsynced per call) and
    the output itself is only written, atomically and sorted by path, by :meth:`finish`.
    So the output is either absent/old or complete, and a resumed run ends with exactly
    the file an uninterrupted run would have written.

    Rows are identified by image (:func:`image_key`): one row per image, however the runs
    that tagged it spelled its path. They are written with absolute paths (the spelling of
    the run that tagged the image, made absolute against its working directory), or URIs
    (read back as ``remote.RemoteImage``). Rows of
    files written before this rule, with the path as given on a command line, are matched
    relative to the working directory and kept as written until their image is re-tagged.

    One run at a time writes the file: it is locked (``.<output>.lock`` beside it) from
    opening until :meth:`finish` or :meth:`close`. Another run opening it waits for the
    lock (after calling ``on_wait``), then reads what the first one wrote. The lock is the
    operating system's: it is released when its process ends, even by ``kill -9``.

    Example:
        with ResultsFile(Path("tags.csv")) as results:
            todo = [image for image in images if image_key(image) not in results.done()]
            for batch in tag_in_batches(todo):
                results.add(batch)
            results.finish()
    """

    def __init__(
        self,
        path: Path,
        overwrite: bool = False,
        on_wait: Callable[[Path], None] | None = None,
    ) -> None:
        """Open ``path`` for this run, waiting while another run has it open. Unless
        ``overwrite``, the results of an existing complete output are kept; a journal left
        by an interrupted run is always resumed.

        Raises:
            OutputError: unknown extension, an existing output/journal is unreadable, or
                the file's folder cannot be created or written.
        """
        self.path = Path(path)
        _results_suffix(self.path)
        self.journal_path = self.path.with_name(self.path.name + ".partial.jsonl")
        self.lock_path = self.path.with_name(f".{self.path.name}.lock")
        self._results: dict[str, TagResult] = {}
        self._lock: BaseFileLock | None = hold_lock(self.path, self.lock_path, on_wait)
        # Whether finish() must write the output: a run that added nothing leaves it as is.
        self._changed = overwrite or not self.path.exists()
        try:
            if not overwrite and self.path.exists():
                try:
                    previous = read_results(self.path)
                except InputFileError as error:
                    raise OutputError(
                        f"{error}; fix it, or delete it to start from scratch"
                    ) from None
                self._update(previous)
                # Rows of one image under two spellings (earlier versions): write one.
                self._changed = len(self._results) < len(previous)
            recovered = self._recover_journal()
            self._update(recovered)
            self._changed = self._changed or bool(recovered)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> ResultsFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Let other runs open the file. Results added and not finished stay in the journal,
        for the next run to resume."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _update(self, results: list[TagResult]) -> None:
        self._results.update((image_key(result.path), result) for result in results)

    def _recover_journal(self) -> list[TagResult]:
        try:
            data = self.journal_path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as error:
            raise write_error(self.journal_path, error) from None
        complete, _, torn = data.rpartition(b"\n")
        if torn:
            # The kill interrupted a write: drop the fragment, so the next record starts
            # on a line of its own instead of being glued to it.
            try:
                os.truncate(self.journal_path, len(data) - len(torn))
            except OSError as error:
                raise write_error(self.journal_path, error) from None
        recovered = []
        for number, line in enumerate(complete.split(b"\n"), start=1):
            if not line.strip():
                continue
            try:
                path, tags, run = _row_of_record(json.loads(line))
                recovered.append(TagResult(image_ref(path), tags, run))
            except ValueError as error:
                raise OutputError(
                    f"{self.journal_path}: line {number} is corrupt ({error}); delete the "
                    "file to redo the interrupted run's images"
                ) from None
        return recovered

    def done(self) -> dict[str, TagResult]:
        """The results recorded so far (previous output, journal, this run), by
        :func:`image_key`."""
        return dict(self._results)

    def add(self, results: list[TagResult]) -> None:
        """Record ``results`` durably in the journal (a later result for an image wins);
        their local paths are made absolute."""
        if not results:
            return
        results = [TagResult(absolute(r.path), r.tags, r.run) for r in results]
        if self.path.suffix.lower() == ".csv":  # fail now, not after hours of tagging
            _check_csv_labels(self.path, results)
        lines = "".join(
            json.dumps(_to_record(result), ensure_ascii=False) + "\n" for result in results
        )
        try:
            with self.journal_path.open("a", encoding="utf-8") as journal:
                journal.write(lines)
                journal.flush()
                os.fsync(journal.fileno())
        except OSError as error:
            raise write_error(self.journal_path, error) from None
        self._update(results)
        self._changed = True

    def finish(self) -> None:
        """Write the output atomically from every recorded result, sorted by path, delete
        the journal, and let other runs open the file. An output this run did not change
        is left as it is."""
        if self._lock is None:
            raise RuntimeError(f"{self.path}: finish() after close()")
        try:
            if self._changed:
                rows = sorted(self._results.items(), key=lambda item: (str(item[1].path), item[0]))
                write_results(self.path, [result for _, result in rows])
            self.journal_path.unlink(missing_ok=True)
        except OSError as error:
            raise write_error(self.journal_path, error) from None
        finally:
            self.close()
