"""`mkt-tag import-reference`: turn the MKT paper's released checkpoints into an mkt-tag one."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import typer
from rich.text import Text

from mkt_tag.cli._app import CACHE_HELP, app, err, fail, out, warn
from mkt_tag.errors import MktTagError
from mkt_tag.identity import LABELS_FILE


@app.command("import-reference")
def import_reference(
    stage1: Path = typer.Option(
        ..., "--stage1", help="The paper's stage-1 checkpoint (image side), a .pth file."
    ),
    stage2: Path | None = typer.Option(
        None,
        "--stage2",
        help="The paper's stage-2 checkpoint (prompt tuning) [default: none, plain template].",
    ),
    output: Path = typer.Option(
        ..., "--out", "-o", help="Checkpoint folder to write (an existing checkpoint is replaced)."
    ),
    labels: Path | None = typer.Option(
        None, "--labels", "-l", help="Label file to bundle in the checkpoint as labels.txt."
    ),
    backbone: str = typer.Option(
        "ViT-B-16:openai",
        "--backbone",
        help="The CLIP the checkpoints were trained from (a local copy: local-dir:PATH).",
    ),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help=CACHE_HELP),
) -> None:
    """Import the MKT paper's released NUS-WIDE checkpoints as an mkt-tag checkpoint.

    Download the two files from the links in the README of the reference code
    (github.com/sunanhe/MKT). They are read without unpickling anything, every tensor is
    checked, and the checkpoint records the reference's preprocessing, so that it scores as
    the paper's model does. The backbone (ViT-B-16:openai) is downloaded if not cached.

    Example:

    \b
        mkt-tag import-reference --stage1 first_stage.pth --stage2 second_stage.pth \\
            --out mkt-nus-wide --labels nus_wide_1006.txt
    """
    from mkt_tag import paper_checkpoints as reference

    try:
        with (
            err.status("importing (loading the backbone)", spinner="dots")
            if err.is_terminal
            else nullcontext()
        ):
            report = reference.import_reference(
                stage1,
                output,
                stage2=stage2,
                labels=labels,
                backbone=backbone,
                cache_dir=cache_dir,
            )
    except MktTagError as error:
        raise fail(str(error)) from None
    for warning in report.warnings:
        warn(warning)
    for note in report.notes:
        err.print(Text(f"note: {note}", style="dim"))
    bundled = f", {report.labels} labels in {LABELS_FILE}" if report.labels else ""
    out.print(f"wrote {report.folder} ({len(report.stored)} tensors{bundled})")
    labels_hint = report.folder / LABELS_FILE if report.labels else "LABELS.txt"
    out.print(f"use it: mkt-tag tag PHOTOS --model {report.folder} --labels {labels_hint}")
