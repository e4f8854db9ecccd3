"""`mkt-tag untag`: remove mkt-tag's tags from sidecars, keeping everyone else's."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.text import Text

from mkt_tag.cli._app import RecursiveOption, app, err, fail
from mkt_tag.errors import EXIT_PARTIAL, MktTagError


@app.command()
def untag(
    paths: list[Path] = typer.Argument(
        ..., metavar="PATH", help="Image files and/or folders whose tags to remove."
    ),
    recursive: RecursiveOption = False,
    embed: bool = typer.Option(
        False,
        "--embed",
        help="Also remove the keywords mkt-tag wrote into the image files (tag --embed).",
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", "-n", help="Only list what would be removed; change nothing."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No summary; failures are listed."),
) -> None:
    """Remove mkt-tag's tags from sidecars (and with --embed from the image files).

    Sidecars: XMP and JSON.

    Only what mkt-tag wrote goes: its keywords, its record, and its copies of a person's
    keywords in fields that hold nothing else. Keywords a person or another program wrote,
    and every other field (ratings, edit history, ...), stay as they are. A sidecar left
    empty is deleted. Prints "sidecar<TAB>removed tags" per sidecar changed. TXT sidecars
    do not say whose their labels are and are left alone.

    Example:

        mkt-tag untag ~/Photos -r --dry-run
    """
    from mkt_tag.sidecars import Removed
    from mkt_tag.tagging.untag import UntagJob
    from mkt_tag.tagging.untag import untag as run_untag

    events = run_untag(UntagJob(paths, recursive, embed=embed, dry_run=dry_run))
    try:
        while True:
            item = next(events)
            if isinstance(item, MktTagError):
                err.print(Text(f"failed: {item}", style="yellow"))
                continue
            gone = ""
            if isinstance(item, Removed) and item.deleted:
                gone = "; nothing else was in it: " + ("would be " if dry_run else "") + "deleted"
            print(f"{item.path}\t{', '.join(item.labels)}{gone}", flush=True)
    except StopIteration as stop:
        report = stop.value
    except MktTagError as error:
        raise fail(str(error)) from None
    if not quiet or report.failures:
        verb = "would remove" if dry_run else "removed"
        deleted = f" ({report.deleted} left empty and deleted)" if report.deleted else ""
        failed = f"failed {len(report.failures)} (listed above)" if report.failures else "failed 0"
        where = "sidecars and files" if embed else "sidecars"
        err.print(
            f"{report.found} images: {verb} mkt-tag's tags from {report.changed} "
            f"{where}{deleted}, {failed}"
        )
    if report.failures:
        raise typer.Exit(EXIT_PARTIAL)
