"""`mkt-tag vocab`: check, edit, show, compare and pre-embed vocabulary files."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from mkt_tag.cli._app import (
    MODEL_HELP,
    CacheDirOption,
    DeviceOption,
    PrecisionOption,
    app,
    err,
    fail,
    out,
    warn,
)
from mkt_tag.config import DEFAULT_BACKBONE, DEFAULT_TEMPLATE
from mkt_tag.devices import Device, Precision
from mkt_tag.errors import EXIT_ERROR, MktTagError

vocab_app = typer.Typer(
    help="Check, edit, show, compare and pre-embed vocabulary files.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(vocab_app, name="vocab")


@vocab_app.command("check")
def check(
    file: Path = typer.Argument(..., help="Vocabulary file (.txt, .tsv, .csv)."),
    template: str = typer.Option(DEFAULT_TEMPLATE, "--template", help="Prompt template."),
    context_length: int = typer.Option(77, "--context-length", help="Text context in tokens."),
) -> None:
    """Find duplicates, empty labels, labels too long for the text context, odd characters.

    Exit code 0: clean; 1: problems found (each printed on one line).

    Example:

        mkt-tag vocab check my_labels.txt
    """
    from mkt_tag import vocab

    try:
        problems = vocab.check_file(file, template, context_length)
        count = len(vocab.read_entries(file))
    except MktTagError as error:
        raise fail(str(error)) from None
    for problem in problems:
        out.print(problem)
    if problems:
        err.print(f"{len(problems)} problem(s) in {file}")
        raise typer.Exit(EXIT_ERROR)
    err.print(f"{file}: clean ({count} labels)")


@vocab_app.command("add")
def add(
    file: Path = typer.Argument(..., help="Vocabulary file; created if missing."),
    labels: list[str] = typer.Argument(..., help="Labels to add."),
) -> None:
    """Add labels at the end (already present ones are skipped). Comments and order stay.

    Example:

        mkt-tag vocab add my_labels.txt "golden retriever" kayak
    """
    from mkt_tag import vocab

    try:
        added, skipped = vocab.add(file, labels)
    except MktTagError as error:
        raise fail(str(error)) from None
    for label in skipped:
        warn(f"{file}: {label!r} is already there (or empty), skipped")
    err.print(f"{file}: added {len(added)}")


@vocab_app.command("remove")
def remove(
    file: Path = typer.Argument(..., help="Vocabulary file."),
    labels: list[str] = typer.Argument(..., help="Labels to remove (any case or spacing)."),
) -> None:
    """Remove labels. Comments and the order of the others stay.

    Example:

        mkt-tag vocab remove my_labels.txt kayak
    """
    from mkt_tag import vocab

    try:
        removed, missing = vocab.remove(file, labels)
    except MktTagError as error:
        raise fail(str(error)) from None
    for label in missing:
        warn(f"{file}: {label!r} not found")
    err.print(f"{file}: removed {len(removed)}")
    if missing and not removed:
        raise typer.Exit(EXIT_ERROR)


@vocab_app.command("show")
def show(file: Path = typer.Argument(..., help="Vocabulary file.")) -> None:
    """Show a vocabulary as a table (label, prompts, threshold, aliases).

    Example:

        mkt-tag vocab show my_labels.tsv
    """
    from mkt_tag import vocab

    try:
        vocabulary = vocab.read_labels(file)
    except MktTagError as error:
        raise fail(str(error)) from None
    for line in vocabulary.warnings:
        warn(line)
    table = Table(
        "line",
        "label",
        "prompts",
        "threshold",
        "aliases",
        title=f"{file}: {len(vocabulary.entries)} labels",
        title_justify="left",
    )
    for entry in vocabulary.entries:
        table.add_row(
            str(entry.line),
            entry.label,
            " | ".join(entry.prompts),
            "" if entry.threshold is None else f"{entry.threshold:g}",
            " | ".join(entry.aliases),
        )
    out.print(table)


@vocab_app.command("diff")
def diff(
    old: Path = typer.Argument(..., help="Old vocabulary."),
    new: Path = typer.Argument(..., help="New vocabulary."),
) -> None:
    """What changed between two vocabularies: + added, - removed, ~ changed.

    Example:

        mkt-tag vocab diff labels_v1.txt labels_v2.txt
    """
    from mkt_tag import vocab

    try:
        changes = vocab.diff(old, new)
    except MktTagError as error:
        raise fail(str(error)) from None
    for sign, labels in (("+", changes.added), ("-", changes.removed), ("~", changes.changed)):
        for label in labels:
            out.print(f"{sign} {label}")
    err.print(
        f"{len(changes.added)} added, {len(changes.removed)} removed, "
        f"{len(changes.changed)} changed"
    )


@vocab_app.command("embed")
def embed(
    file: Path = typer.Argument(..., help="Vocabulary file."),
    model: str = typer.Option(DEFAULT_BACKBONE, "--model", "-m", help=MODEL_HELP),
    device: DeviceOption = Device.auto,
    precision: PrecisionOption = Precision.auto,
    cache_dir: CacheDirOption = None,
) -> None:
    """Pre-compute the label embeddings of a vocabulary into the cache.

    Later `mkt-tag tag` runs with the same model and precision encode only new labels.

    Example:

        mkt-tag vocab embed my_labels.txt --model runs/mine/best
    """
    from mkt_tag import vocab
    from mkt_tag.tagging.tagger import Tagger

    try:
        vocabulary = vocab.read_labels(file)
        tagger = Tagger.load(
            model, device=device.value, precision=precision.value, cache_dir=cache_dir
        )
        labelset = tagger.embed_labels(vocabulary.entries, source=str(file))
    except MktTagError as error:
        raise fail(str(error)) from None
    for line in vocabulary.warnings + (tagger.label_cache.warnings if tagger.label_cache else []):
        warn(line)
    err.print(
        f"{file}: {len(labelset.labels)} labels; encoded {labelset.encoded} text(s), "
        f"the rest came from the cache (model {model}, {str(tagger.dtype)[6:]})"
    )
    if tagger.label_cache is None:
        warn(f"{model}: no cache for this model (its weights have no fingerprint)")
