"""Errors a user can cause.

Everything raised from this family is printed by the CLI as one line on stderr (no
traceback) followed by a non-zero exit code. Anything else reaching the CLI is a bug.
"""

from __future__ import annotations

import re
from pathlib import Path

# Exit codes of the command-line tool (documented in docs/cli.md).
EXIT_OK = 0
EXIT_ERROR = 1  # nothing useful was done: bad label file, missing model, ...
EXIT_USAGE = 2  # bad command line (Click's own code for usage errors)
EXIT_PARTIAL = 3  # the run finished but some inputs failed (listed in the summary)
EXIT_INTERRUPTED = 130  # Ctrl-C; finished work is kept and the next run resumes

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")


class MktTagError(Exception):
    """Base class: a problem the user can fix. ``str(error)`` is the one line shown."""


class UsageError(MktTagError):
    """Options or settings that cannot go together (the command line exits with EXIT_USAGE)."""


class InputFileError(MktTagError):
    """A file the user gave (image, label file, data file) cannot be used."""

    def __init__(self, path: Path | str, reason: str) -> None:
        # A URI ("s3://bucket/a.jpg", ``remote.RemoteImage``) stays the text it is: a Path
        # would fold its "//".
        self.path: Path | str = path if isinstance(path, str) and _URI.match(path) else Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class ImageLoadError(InputFileError):
    """An image cannot be read: missing, unreadable, truncated, not an image, too large."""


class LabelFileError(InputFileError):
    """A vocabulary / label file is missing, empty or malformed."""


class ModelError(MktTagError):
    """A model id cannot be resolved, is unsupported, or its files are broken."""


class ModelNotCachedError(ModelError):
    """Weights are not in the cache and cannot be downloaded (offline or no network)."""


class CheckpointError(ModelError):
    """An mkt-tag checkpoint directory is missing files, malformed, or unsafe to load."""


class OutputError(MktTagError):
    """An output file cannot be written or an existing one cannot be merged."""
