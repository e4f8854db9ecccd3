"""`mkt-tag cache`: what the cache folder holds, and clearing it."""

from __future__ import annotations

import typer
from rich.table import Table

from mkt_tag import hub
from mkt_tag.cli._app import CacheDirOption, app, err, out, warn

cache_app = typer.Typer(
    help="Show or clear the cache: models, label embeddings, image features.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(cache_app, name="cache")


def _human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


@cache_app.command("info")
def info(cache_dir: CacheDirOption = None) -> None:
    """Show what the cache holds and how much disk each part takes.

    Example:

        mkt-tag cache info
    """
    from mkt_tag.tagging.caches import cache_parts

    root = hub.cache_dir(cache_dir)
    parts, warnings = cache_parts(root)
    table = Table("part", "entries", "disk", "notes", title=f"cache: {root}", title_justify="left")
    for part in parts:
        notes = ", ".join(part.models)
        if part.name == "image features":
            notes = f"{_human(part.bytes_per_entry)} per image, {len(part.models)} model(s)"
        table.add_row(part.name, str(part.entries), _human(part.size_bytes), notes)
    for line in warnings:
        warn(line)
    out.print(table)


@cache_app.command("clear")
def clear(
    features: bool = typer.Option(False, "--features", help="The image features."),
    labels: bool = typer.Option(False, "--labels", help="The label embeddings."),
    models: bool = typer.Option(False, "--models", help="Also the downloaded models."),
    cache_dir: CacheDirOption = None,
) -> None:
    """Delete cached image features and label embeddings (both unless one is named), and the
    downloaded models with --models.

    Example:

        mkt-tag cache clear --features
    """
    from mkt_tag.tagging.caches import clear_cache

    cleared = clear_cache(hub.cache_dir(cache_dir), features, labels, models)
    err.print(f"cleared {', '.join(cleared.parts)}: {_human(cleared.freed_bytes)} freed")
