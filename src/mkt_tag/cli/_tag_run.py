"""What a `mkt-tag tag` run shows while it runs and when it ends: the progress bar, each
failure as it happens, tags on stdout, the summary line."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from mkt_tag.cli._app import err, warn
from mkt_tag.errors import MktTagError
from mkt_tag.remote import ImagePath
from mkt_tag.results import TagResult

if TYPE_CHECKING:
    from mkt_tag.keywords import Fields
    from mkt_tag.tagging.job import FileTagger, JobReport, TagPlan


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} img/s" if speed else "-- img/s", style="cyan")


def _progress(quiet: bool) -> Progress:
    return Progress(
        TextColumn("tagging"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=err,
        disable=quiet or not err.is_terminal,
        transient=False,
    )


def _print_result(result: TagResult) -> None:
    tags = ", ".join(f"{t.label} ({t.score:.3f})" for t in result.tags)
    # Plain print: a pipe-friendly line (Rich would expand the tab and wrap).
    print(f"{result.path}\t{tags}", flush=True)


def list_skipped(planned: TagPlan) -> None:
    for path in planned.unreadable:
        err.print(f"skipped, mkt-tag cannot read {path.suffix.lower()} files yet: {path}")
    for path in planned.removed:
        err.print(f"removed a temporary file left by a killed run: {path}")


def _change_line(added: Fields, removed: Fields) -> str:
    """ "+dog +animal|dog -cat": the entries each keyword field would gain and lose."""
    gained = dict.fromkeys(entry for entries in added.values() for entry in entries)
    lost = dict.fromkeys(entry for entries in removed.values() for entry in entries)
    return " ".join([*(f"+{e}" for e in gained), *(f"-{e}" for e in lost)]) or "no change"


def _states(states: dict[str, int]) -> str:
    """ " (2 new, 1 stale, 3 current)": what the run found in the outputs already there."""
    if not states or states.get("new", 0) == sum(states.values()):
        return ""
    return " (" + ", ".join(f"{n} {state}" for state, n in states.items()) + ")"


def _unreadable_summary(unreadable: list[ImagePath]) -> str:
    """ "skipped 3 .jxl, 2 .cr2 files mkt-tag cannot read yet", most frequent first."""
    counts = Counter(path.suffix.lower() for path in unreadable)
    by_count = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    kinds = ", ".join(f"{n} {suffix}" for suffix, n in by_count)
    return f"skipped {kinds} files mkt-tag cannot read yet"


def run_job(
    planned: TagPlan,
    files: FileTagger | None,
    quiet: bool,
    verbose: bool,
    to_stdout: bool,
    ran_in: str = "",
) -> JobReport | None:
    """Drive a planned job with a progress bar; the report, or None when interrupted.
    ``ran_in`` ends the summary line: " in int8", the precision of a model run here."""
    from mkt_tag.tagging import job as tagjob

    started = time.perf_counter()
    with _progress(quiet) as progress:
        task = progress.add_task("tagging", total=None)
        events = tagjob.run(planned, files, on_start=lambda n: progress.update(task, total=n))
        try:
            while True:
                item = next(events)
                if isinstance(item, MktTagError):
                    err.print(Text(f"failed: {item}", style="yellow"))
                else:
                    if to_stdout:
                        _print_result(item)
                    progress.advance(task)
        except StopIteration as stop:
            report = stop.value
        except KeyboardInterrupt:
            events.close()
            return None
    elapsed = time.perf_counter() - started
    rate = report.tagged / elapsed if elapsed > 0 else 0.0
    if not quiet or report.failures:
        failed = f"failed {len(report.failures)} (listed above)" if report.failures else "failed 0"
        err.print(
            f"{report.found} images{_states(report.states)}: tagged {report.tagged}, "
            f"skipped {report.skipped} current, {failed}; {elapsed:.1f} s, {rate:.1f} img/s{ran_in}"
        )
    for warning in report.warnings:
        warn(warning)
    for change in report.changes:  # a dry run's
        print(f"{change.path}\t{_change_line(change.added, change.removed)}", flush=True)
    if report.removed and not quiet:
        err.print(f"removed {len(report.removed)} temporary files left by killed runs")
    if report.unreadable:  # even with --quiet: no photo is left out without a word
        hint = "" if verbose else " (--verbose lists them)"
        err.print(Text(_unreadable_summary(report.unreadable) + hint, style="yellow"))
        from mkt_tag.camera_raw import install_hint  # here: numpy and Pillow load with it

        if install := install_hint(Path(path.name) for path in report.unreadable):
            err.print(Text(install, style="yellow"))
    return report
