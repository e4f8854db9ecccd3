"""One writer at a time per output file: an operating-system lock in a file beside it.

The lock is the operating system's (``filelock``): it goes when its process ends, even by
``kill -9``, so a killed run never leaves its output locked. ``results.ResultsFile`` holds
one from opening its output until it is finished or closed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from filelock import BaseFileLock, FileLock, Timeout

from mkt_tag.errors import OutputError
from mkt_tag.files import write_error


def hold_lock(
    output: Path, lock_path: Path, on_wait: Callable[[Path], None] | None
) -> BaseFileLock:
    """Hold the lock of ``output``, waiting while another run holds it.

    Raises:
        OutputError: the output's folder cannot be created, or the lock file in it, or
            this process already holds the lock (a second ResultsFile).
    """
    # Not thread-local: a run may be opened in one thread and finished in another.
    lock = FileLock(lock_path, thread_local=False)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)  # as checkpoints.save does
        try:
            lock.acquire(timeout=0)
        except Timeout:
            if on_wait is not None:
                on_wait(output)
            lock.acquire()
    except RuntimeError:  # filelock refuses to wait for a lock its own thread holds
        raise OutputError(f"{output}: already open in this process") from None
    except OSError as error:
        raise write_error(output, error) from None
    return lock
