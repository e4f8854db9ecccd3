"""Merging results files: the shards of a run (or any results files) into one.

``merge(output, parts)`` reads each part (``.csv``, ``.json`` or ``.jsonl``, mixed as they
come), keeps one row per image (``results.image_key``) and writes ``output`` atomically in
the order a single run writes its results file, so that merging the N shards of a run
gives the very bytes one run over every image gives. What could make the merge differ
from that run is reported, never dropped silently:

- a missing shard: parts named ``tags.shard-I-of-N.csv`` say how many shards there are,
  so a shard not given is named (and said to be unfinished when its journal is there);
- a part whose run was interrupted (its journal ``PART.partial.jsonl`` is beside it);
- missing images, against ``expect`` (the inputs given to ``tag``);
- duplicates, an image in two parts: identical rows (the same tags, scores and run) are
  harmless; rows that differ are conflicts, and the later part's row is kept, as a later
  result wins in a results file;
- parts of different runs (another model, vocabulary or selection): refused unless
  ``force``.

The csv module (through ``results.read_results``), not pandas: a merge has to rebuild each
row's tags to write any format exactly as a run does, and the rest is one dict by image.
bench/scaling.py measures both readers on 1,000,000 rows (docs/scaling.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mkt_tag.errors import InputFileError, OutputError
from mkt_tag.remote import ImagePath, parse_input, scan_inputs
from mkt_tag.results import (
    RESULTS_SUFFIXES,
    SCORE_DECIMALS,
    TagResult,
    read_results,
    write_results,
)
from mkt_tag.shards import Shard, image_keys, shard_of_name


@dataclass
class Duplicate:
    """An image with rows in two parts (or twice in one)."""

    path: ImagePath  # the image, as the kept row spells it
    first: Path  # the part whose row is dropped
    kept: Path  # the later part, whose row is kept
    identical: bool  # the same tags, scores and run: nothing is lost


@dataclass
class MissingPart:
    """A shard's results file that was not given."""

    path: Path  # where its shard run writes it
    unfinished: bool  # its journal is there: the shard's run was interrupted
    exists: bool  # the file is there, only not given


@dataclass
class MergeReport:
    """What a merge read and wrote, and everything that may be missing or doubled."""

    output: Path
    rows: int = 0  # rows written
    read: int = 0  # rows read from every part
    runs: dict[str, int] = field(default_factory=dict)  # rows by run fingerprint ("" unknown)
    duplicates: list[Duplicate] = field(default_factory=list)
    missing_parts: list[MissingPart] = field(default_factory=list)
    interrupted: list[Path] = field(default_factory=list)  # parts with a journal beside them
    missing: list[ImagePath] = field(default_factory=list)  # expected images without a row
    unexpected: list[ImagePath] = field(default_factory=list)  # rows of images not expected

    @property
    def conflicts(self) -> list[Duplicate]:
        """Duplicates whose rows differ: one of them was dropped."""
        return [duplicate for duplicate in self.duplicates if not duplicate.identical]

    @property
    def complete(self) -> bool:
        """Nothing is missing and nothing was dropped: the output is what one run writes."""
        return not (self.missing_parts or self.interrupted or self.missing or self.conflicts)


def merge(
    output: Path,
    parts: Sequence[Path],
    expect: Sequence[Path | str] | None = None,
    recursive: bool = False,
    force: bool = False,
) -> MergeReport:
    """Merge the results files ``parts`` into ``output`` (written atomically; any results
    format in and out). ``expect`` (files, folders and URIs, descended into when
    ``recursive``, as given to ``tag``) are the images the parts should hold.

    Raises:
        InputFileError: a part cannot be read, an expected input is missing, or the parts
            hold rows of different runs (without ``force``).
        OutputError: ``output`` is not a results file name, or cannot be written.
    """
    output = Path(output)
    if output.suffix.lower() not in RESULTS_SUFFIXES:
        raise OutputError(f"{output}: use a .csv, .json or .jsonl file name")
    if not parts:
        raise OutputError(f"{output}: no parts to merge")
    report = MergeReport(output)
    expected = _expected(expect, recursive) if expect is not None else None
    merged: dict[str, tuple[TagResult, Path]] = {}
    first_part_of_run: dict[str, Path] = {}
    for part in map(Path, parts):
        results = read_results(part)
        report.read += len(results)
        for result, key in zip(results, image_keys([r.path for r in results]), strict=True):
            report.runs[result.run] = report.runs.get(result.run, 0) + 1
            first_part_of_run.setdefault(result.run, part)
            earlier = merged.get(key)
            if earlier is not None:
                identical = _written(earlier[0]) == _written(result)
                report.duplicates.append(Duplicate(result.path, earlier[1], part, identical))
            merged[key] = (result, part)
        if len(first_part_of_run) > 1 and not force:
            raise _different_runs(first_part_of_run)
        if _journal(part).exists():
            report.interrupted.append(part)
    report.missing_parts = _missing_parts(parts)
    if expected is not None:
        report.missing = [path for key, path in expected.items() if key not in merged]
        report.unexpected = [
            result.path for key, (result, _) in merged.items() if key not in expected
        ]
    # The order ResultsFile.finish writes: by path as written, then by image.
    rows = sorted(merged.items(), key=lambda item: (str(item[1][0].path), item[0]))
    write_results(output, [result for _, (result, _) in rows])
    report.rows = len(rows)
    return report


def _written(result: TagResult) -> tuple[object, ...]:
    """What a results file holds of a row but its path: tags, scores as written, run."""
    tags = [(tag.label, round(tag.score, SCORE_DECIMALS)) for tag in result.tags]
    return tuple(sorted(tags, key=lambda item: (-item[1], item[0]))), result.run


def _different_runs(first_part_of_run: dict[str, Path]) -> InputFileError:
    (run_a, part_a), (run_b, part_b) = list(first_part_of_run.items())[:2]
    if part_a == part_b:
        rows = f"its rows are from runs {_short(run_a)} and {_short(run_b)}"
    else:
        rows = f"its rows are from run {_short(run_b)}, those of {part_a} from {_short(run_a)}"
    return InputFileError(
        part_b,
        f"{rows}: tags of another model, vocabulary or selection; merge them anyway with --force",
    )


def _short(run: str) -> str:
    return run[:12] if run else "(unknown)"


def _journal(path: Path) -> Path:
    """The journal a run writing ``path`` keeps until it finishes (results.ResultsFile)."""
    return path.with_name(path.name + ".partial.jsonl")


def _expected(inputs: Sequence[Path | str], recursive: bool) -> dict[str, ImagePath]:
    found = scan_inputs([parse_input(given) for given in inputs], recursive)
    if found.errors:
        raise found.errors[0]
    return dict(zip(image_keys(found.images), found.images, strict=True))


def _missing_parts(parts: Sequence[Path]) -> list[MissingPart]:
    """The shards not given of each sharded output the parts name (tags.shard-I-of-N.*)."""
    given: dict[tuple[Path, int], set[int]] = {}
    outputs: dict[tuple[Path, int], Path] = {}
    for part in parts:
        named = shard_of_name(Path(part))
        if named is None:
            continue
        base, shard = named
        group = (base.with_suffix(""), shard.count)  # any format: shards may differ
        given.setdefault(group, set()).add(shard.index)
        outputs.setdefault(group, base)
    missing = []
    for group, indexes in given.items():
        for index in range(1, group[1] + 1):
            if index in indexes:
                continue
            path = Shard(index, group[1]).output(outputs[group])
            alike = [path.with_suffix(suffix) for suffix in RESULTS_SUFFIXES]
            unfinished = any(_journal(other).exists() for other in alike)
            exists = [other for other in alike if other.exists()]
            missing.append(MissingPart(exists[0] if exists else path, unfinished, bool(exists)))
    return missing
