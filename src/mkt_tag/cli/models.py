"""`mkt-tag models`: list known models and whether they are cached; download them."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from mkt_tag import hub, published
from mkt_tag.cli._app import (
    CacheDirOption,
    app,
    err,
    out,
)
from mkt_tag.errors import EXIT_ERROR, EXIT_PARTIAL, MktTagError
from mkt_tag.files import tree_size

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
    table = Table(
        "model", "cached", "size", "description", title=f"cache: {root}", title_justify="left"
    )
    for name, model in published.PUBLISHED.items():
        installed = published.is_installed(name, root)
        size = _size(published.folder(name, root)) if installed else f"~{model.size_mb} MB"
        table.add_row(name, "yes" if installed else "no", size, model.description)
    for name, description in hub.KNOWN_BACKBONES.items():
        table.add_row(name, "yes" if hub.is_cached(name, root) else "no", "", description)
    out.print(table)


def _size(folder: Path) -> str:
    """What a folder's files take, "352 MB"."""
    return f"{tree_size(folder) / 1e6:,.0f} MB"


@models_app.command("download")
def models_download(
    names: list[str] = typer.Argument(
        ..., help="Model ids, e.g. mkt-nus-wide (the paper's model) or ViT-B-16:openai."
    ),
    cache_dir: CacheDirOption = None,
) -> None:
    """Download models into the cache so that tagging works offline.

    mkt-nus-wide, the MKT paper's model, comes from its authors' Google Drive: two
    checkpoint files and NUS-WIDE's label lists, imported as `mkt-tag import-reference`
    does (every tensor checked) into the cache, with its 1,006 labels bundled.

    Example:

        mkt-tag models download mkt-nus-wide
    """
    failed = 0
    root = hub.cache_dir(cache_dir)
    for name in names:
        try:
            if name in published.PUBLISHED:
                out.print(f"{name}: {published.install(name, root)}")
                continue
            backbone = hub.download(name, root)
            out.print(f"{name}: {backbone.weights}")
        except MktTagError as error:
            failed += 1
            err.print(Text(f"error: {error}", style="red"))
    if failed:
        raise typer.Exit(EXIT_ERROR if failed == len(names) else EXIT_PARTIAL)
