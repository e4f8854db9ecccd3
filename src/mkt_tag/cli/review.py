"""`mkt-tag review`: check tags in the browser; decisions saved as training data."""

from __future__ import annotations

import webbrowser
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from mkt_tag.cli._app import Naming, Sidecar, app, err, fail, out, warn
from mkt_tag.errors import EXIT_PARTIAL, EXIT_USAGE, MktTagError

if TYPE_CHECKING:
    from mkt_tag.review import Review
    from mkt_tag.review.thumbnails import Thumbnails


@app.command()
def review(
    results: Path = typer.Argument(
        ...,
        metavar="RESULTS",
        help="Results file of `mkt-tag tag` (.csv, .json, .jsonl), or a folder whose XMP/JSON "
        "sidecars hold its tags.",
    ),
    labels: Path = typer.Option(
        ..., "--labels", "-l", help="Vocabulary: the labels a tag can be corrected to."
    ),
    port: int = typer.Option(0, "--port", min=0, max=65535, help="Port [default: a free one]."),
    host: str = typer.Option(
        "127.0.0.1",
        "--host",
        help="Address to listen on; anything but 127.0.0.1 lets other machines try the token.",
    ),
    no_browser: bool = typer.Option(False, "--no-browser", help="Only print the URL."),
    corrections: Path | None = typer.Option(
        None,
        "--corrections",
        help="Corrections file (.jsonl) [default: RESULTS.corrections.jsonl beside RESULTS; "
        "in a folder, mkt-tag.corrections.jsonl].",
    ),
    apply: bool = typer.Option(
        False, "--apply", help="Write the corrected tags to sidecars, then exit (no page)."
    ),
    sidecar: Sidecar = typer.Option(
        Sidecar.xmp, "--sidecar", help="With --apply: the sidecar format to write."
    ),
    sidecar_naming: Naming = typer.Option(
        Naming.full, "--sidecar-naming", help="full: photo.jpg.xmp; stem: photo.xmp."
    ),
    export: Path | None = typer.Option(
        None,
        "--export",
        help="Write a static, read-only gallery (one .html file, thumbnails inside), then exit.",
    ),
    cache_dir: Path | None = typer.Option(
        None,
        "--cache-dir",
        help="Where thumbnails are kept [default: $MKT_TAG_CACHE or the user cache folder].",
    ),
) -> None:
    """Review tags in the browser: accept, reject, add; every decision saved at once.

    Serves a local page over a results file (or a folder of sidecars) and prints its URL,
    which holds a random token every request needs. Decisions go to a corrections file
    beside the results, rewritten atomically on each one, in the format `train --data`
    and `eval --data` read: accepted and added labels are positives, rejected ones
    negatives, the rest unknown until a photo is marked reviewed. Keys: see docs/review.md
    (or press ? on the page). Ctrl-C stops the server; nothing is lost.

    Example:

        mkt-tag review tags.csv --labels labels.txt

        mkt-tag train --data tags.corrections.jsonl --labels labels.txt --out runs/mine
    """
    from mkt_tag.hub import cache_dir as default_cache
    from mkt_tag.review import open_review
    from mkt_tag.review.thumbnails import Thumbnails, default_workers

    if export is not None and export.suffix.lower() not in (".html", ".htm"):
        raise fail(f"{export}: the gallery is an .html file", EXIT_USAGE)
    try:
        session = open_review(results, labels, corrections, on_warning=warn)
    except MktTagError as error:
        raise fail(str(error)) from None
    paths = [photo.filename for photo in session.photos]
    thumbnails = Thumbnails(paths, default_cache(cache_dir), workers=default_workers())
    try:
        if apply or export is not None:
            _apply_and_export(session, thumbnails, apply, sidecar, sidecar_naming, export)
            return
        _serve(session, thumbnails, host, port, no_browser)
    finally:
        thumbnails.close()


def _apply_and_export(
    session: Review,
    thumbnails: Thumbnails,
    apply: bool,
    sidecar: Sidecar,
    naming: Naming,
    export: Path | None,
) -> None:
    from mkt_tag.review.apply import apply_corrections
    from mkt_tag.review.export import export_gallery

    failures: list[str] = []
    if apply:
        applied = apply_corrections(
            session,
            sidecar.value,
            naming.value,
            on_written=lambda path, tags: print(f"{path}\t{', '.join(tags)}", flush=True),
        )
        failures = applied.failures
        for line in failures:
            err.print(f"failed: {line}")
        err.print(
            f"wrote the corrected tags of {len(applied.written)} photos to {sidecar.value} "
            f"sidecars, failed {len(failures)}"
        )
    if export is not None:
        try:
            shown = export_gallery(session, thumbnails, export)
        except MktTagError as error:
            raise fail(str(error)) from None
        err.print(f"gallery of {shown} photos: {export}")
    if failures:
        raise typer.Exit(EXIT_PARTIAL)


def _serve(session: Review, thumbnails: Thumbnails, host: str, port: int, no_browser: bool) -> None:
    from mkt_tag.review.server import ReviewServer

    try:
        server = ReviewServer(session, thumbnails, host, port)
    except MktTagError as error:
        raise fail(str(error)) from None
    if host not in ("127.0.0.1", "localhost", "::1"):
        warn(f"listening on {host}: other machines that can reach it may try the token")
    thumbnails.prefetch()
    summary = session.summary()
    err.print(
        f"{summary['photos']:,} photos, {summary['reviewed']:,} reviewed; decisions go to "
        f"{summary['corrections']}"
    )
    out.print(server.url)
    if not no_browser:
        webbrowser.open(server.url)
    err.print("Ctrl-C stops the server (every decision is already saved)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        err.print("stopped")
    finally:
        server.server_close()
