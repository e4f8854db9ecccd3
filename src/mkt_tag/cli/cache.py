"""`mkt-tag cache`: what the cache folder holds, and clearing it."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from mkt_tag import hub
from mkt_tag.cli._app import (
    CacheDirOption,
    app,
    err,
    out,
)

cache_app = typer.Typer(
    help="Show or clear the cache: models, label embeddings, image features.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(cache_app, name="cache")


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


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
    from mkt_tag.tagging.caches import FEATURES_FILE, LABELS_FILE, FeatureCache, LabelCache

    root = hub.cache_dir(cache_dir)
    table = Table("part", "entries", "disk", "notes", title=f"cache: {root}", title_justify="left")
    models = hub.hub_cache(root)
    downloaded = [p for p in models.glob("models--*")] if models.is_dir() else []
    table.add_row(
        "models",
        str(len(downloaded)),
        _human(_size(models) if models.is_dir() else 0),
        ", ".join(p.name[8:].replace("--", "/") for p in downloaded),
    )
    if (root / LABELS_FILE).exists():
        labels = LabelCache(root / LABELS_FILE)
        table.add_row("label embeddings", str(labels.count()), _human(labels.size_bytes()), "")
        labels.close()
    if (root / FEATURES_FILE).exists():
        features = FeatureCache(root / FEATURES_FILE)
        stats = features.stats()
        per_image = stats["data_bytes"] / stats["images"] if stats["images"] else 0
        table.add_row(
            "image features",
            str(stats["images"]),
            _human(features.size_bytes()),
            f"{_human(per_image)} per image, {len(stats['models'])} model(s)",
        )
        for line in features.warnings:
            err.print(f"warning: {line}")
        features.close()
    out.print(table)


@cache_app.command("clear")
def clear(
    features: bool = typer.Option(False, "--features", help="Only the image features."),
    labels: bool = typer.Option(False, "--labels", help="Only the label embeddings."),
    models: bool = typer.Option(False, "--models", help="Also the downloaded models."),
    cache_dir: CacheDirOption = None,
) -> None:
    """Delete cached label embeddings and image features (and models with --models).

    Example:

        mkt-tag cache clear --features
    """
    import shutil

    from mkt_tag.tagging.caches import FEATURES_FILE, LABELS_FILE

    root = hub.cache_dir(cache_dir)
    names = (
        [FEATURES_FILE] if features else [LABELS_FILE] if labels else [FEATURES_FILE, LABELS_FILE]
    )
    freed = 0
    for name in names:
        for path in root.glob(name + "*"):
            freed += path.stat().st_size
            path.unlink()
    if models and hub.hub_cache(root).is_dir():
        freed += _size(hub.hub_cache(root))
        shutil.rmtree(hub.hub_cache(root))
    err.print(f"cleared {', '.join(names + (['models'] if models else []))}: {_human(freed)} freed")
