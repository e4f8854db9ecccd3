"""The ``mkt-tag`` command line: one module per command, all on one Typer app.

Exit codes: 0 success, 1 error (nothing done), 2 usage error, 3 some inputs failed,
130 interrupted (finished work is kept; the same command resumes).
"""

from __future__ import annotations

import sys

from mkt_tag.cli import (  # noqa: F401 - importing registers the commands
    cache,
    eval,
    merge,
    models,
    reference,
    review,
    tag,
    train,
    untag,
    vocab,
)
from mkt_tag.cli._app import app, err
from mkt_tag.errors import EXIT_INTERRUPTED


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(EXIT_INTERRUPTED)


__all__ = ["app", "main"]
