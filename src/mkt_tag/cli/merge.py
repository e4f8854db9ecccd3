"""`mkt-tag merge`: the results files of a sharded run (or any results files) into one."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import typer
from rich.text import Text

from mkt_tag.cli._app import RecursiveOption, app, err, fail, warn
from mkt_tag.errors import EXIT_PARTIAL, MktTagError

SHOWN = 10  # of each kind of problem, without --verbose


@app.command()
def merge(
    output: Path = typer.Argument(
        ..., metavar="OUT", help="Merged results file: .csv, .json or .jsonl."
    ),
    parts: list[Path] = typer.Argument(
        ..., metavar="PART", help="Results files to merge, in any of the three formats."
    ),
    expect: list[Path] | None = typer.Option(
        None,
        "--expect",
        metavar="PATH",
        help="Images the parts should hold: the PATHs given to `tag` (repeat the option); "
        "each image without a row is named.",
    ),
    recursive: RecursiveOption = False,
    force: bool = typer.Option(
        False,
        "--force",
        help="Merge rows of different runs (another model, vocabulary or selection); "
        "refused otherwise.",
    ),
    verbose: bool = typer.Option(
        False,
        "--verbose",
        "-v",
        help=f"Name every missing, duplicate and unexpected image (else the first {SHOWN}).",
    ),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="No summary; problems are still listed."
    ),
) -> None:
    """Merge results files, such as the shards of `mkt-tag tag --shard`, into one.

    One row per image, in the order a single run writes: merging every shard of a run gives
    the file one run over all the images gives. Shards not given (from their names,
    tags.shard-I-of-N.csv), parts whose run was interrupted, images of --expect without a
    row and images whose rows differ between parts (the later part's row is kept) are
    named, and the exit code is 3. Identical rows in two parts are kept once. OUT is
    written atomically, and may be one of the parts.

    Example:

        mkt-tag merge tags.csv tags.shard-*-of-8.csv --expect ~/Photos -r
    """
    from mkt_tag.merge import merge as merge_parts

    try:
        report = merge_parts(output, parts, expect, recursive, force)
    except MktTagError as error:
        raise fail(str(error)) from None
    limit = None if verbose else SHOWN
    for part in report.missing_parts:
        why = (
            "its run was interrupted: run that shard again"
            if part.unfinished
            else "it is there: add it to the parts"
            if part.exists
            else "run that shard"
        )
        _problem(f"missing part: {part.path} ({why})")
    for path in report.interrupted:
        _problem(f"interrupted: {path}: a run writing it did not finish; run it again")
    _listed("missing", [str(path) for path in report.missing], limit)
    conflicts = [
        f"{d.path}: rows differ in {d.first} and {d.kept}; kept {d.kept}'s"
        for d in report.conflicts
    ]
    _listed("duplicate", conflicts, limit)
    identical = [d for d in report.duplicates if d.identical]
    if identical:
        warn(f"{len(identical)} images have the same row in two parts (written once)")
    if report.unexpected:
        warn(f"{len(report.unexpected)} rows are of images not in --expect (kept)")
        if verbose:
            for image in report.unexpected:
                err.print(f"unexpected: {image}")
    if len(report.runs) > 1:
        warn(f"rows of {len(report.runs)} different runs merged (--force)")
    if not quiet or not report.complete:
        missing = len(report.missing_parts) + len(report.interrupted) + len(report.missing)
        err.print(
            f"{report.rows} images from {len(parts)} parts ({report.read} rows) into {output}; "
            f"{missing} missing, {len(report.conflicts)} conflicting"
        )
    if not report.complete:
        raise typer.Exit(EXIT_PARTIAL)


def _problem(line: str) -> None:
    err.print(Text(line, style="yellow"))


def _listed(kind: str, lines: Sequence[str], limit: int | None) -> None:
    for line in lines[:limit]:
        _problem(f"{kind}: {line}")
    if limit is not None and len(lines) > limit:
        _problem(f"... and {len(lines) - limit} more {kind} (--verbose names them all)")
