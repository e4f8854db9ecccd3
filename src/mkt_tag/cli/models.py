"""`mkt-tag models`: list known models and whether they are cached; download them."""

from __future__ import annotations

import typer
from rich.table import Table
from rich.text import Text

from mkt_tag import hub
from mkt_tag.cli._app import (
    CacheDirOption,
    app,
    err,
    out,
)
from mkt_tag.errors import EXIT_ERROR, EXIT_PARTIAL, MktTagError

models_app = typer.Typer(
    help="List known models and whether each is cached (no command), or download them.",
    invoke_without_command=True,
    rich_markup_mode=None,
)
app.add_typer(models_app, name="models")


@models_app.callback()
def models_list(
    ctx: typer.Context,
    cache_dir: CacheDirOption = None,
) -> None:
    """List known model names and whether each is in the cache.

    Any open_clip ViT "ARCH:TAG" pair, "hf-hub:ORG/REPO", "local-dir:PATH" and mkt-tag checkpoint
    folders work too.
    """
    if ctx.invoked_subcommand is not None:
        return
    root = hub.cache_dir(cache_dir)
    table = Table("model", "cached", "description", title=f"cache: {root}", title_justify="left")
    for name, description in hub.KNOWN_BACKBONES.items():
        table.add_row(name, "yes" if hub.is_cached(name, root) else "no", description)
    out.print(table)


@models_app.command("download")
def models_download(
    names: list[str] = typer.Argument(..., help="Model ids, e.g. ViT-B-16:openai."),
    cache_dir: CacheDirOption = None,
) -> None:
    """Download models into the cache so that tagging works offline.

    Example:

        mkt-tag models download ViT-B-16:openai
    """
    failed = 0
    for name in names:
        try:
            backbone = hub.download(name, hub.cache_dir(cache_dir))
            out.print(f"{name}: {backbone.weights}")
        except MktTagError as error:
            failed += 1
            err.print(Text(f"error: {error}", style="red"))
    if failed:
        raise typer.Exit(EXIT_ERROR if failed == len(names) else EXIT_PARTIAL)
