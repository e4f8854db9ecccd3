"""The tables `mkt-tag eval` prints: the metric rows and the calibration check."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from mkt_tag.cli._app import err, out

if TYPE_CHECKING:
    from mkt_tag.evaluate.calibration import HeldOutCheck
    from mkt_tag.evaluate.metrics import PRF
    from mkt_tag.evaluate.report import EvalReport


def percent(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.2f}"


def print_table(report: EvalReport) -> None:
    unseen = int(report.unseen.sum())
    table = Table(
        title=f"{report.images} images, {len(report.labels)} labels ({unseen} unseen); in %",
        title_justify="left",
        box=box.SIMPLE_HEAVY,
    )
    table.add_column("row")
    table.add_column("labels", justify="right")
    table.add_column("mAP", justify="right")
    reference = any(row.map_reference is not None for row in report.rows)
    if reference:
        table.add_column("mAP (ref)", justify="right")
    for k in report.ks:
        for name in ("P", "R", "F1"):
            table.add_column(f"{name}@{k}", justify="right")
    for row in report.rows:
        cells = [row.name, str(row.labels), percent(row.map)]
        if reference:
            cells.append(percent(row.map_reference))
        for k in report.ks:
            prf = row.at_k[k]
            cells += [percent(prf.precision), percent(prf.recall), percent(prf.f1)]
        table.add_row(*cells)
    print_whole(table)
    empty = [row for row in report.rows if row.labels_with_positives < row.labels]
    for row in empty:
        missing = row.labels - row.labels_with_positives
        err.print(
            Text(f"note: {row.name}: {missing} label(s) without a positive image", style="dim")
        )


def print_check(check: HeldOutCheck) -> None:
    table = Table(
        title=f"calibration: chosen on {check.calibration_images} images, measured on "
        f"{check.held_out_images} others; micro, in %",
        title_justify="left",
        box=box.SIMPLE_HEAVY,
    )
    for name in ("tags chosen by", "P", "R", "F1", "tags"):
        table.add_column(name, justify="left" if name == "tags chosen by" else "right")

    def add(name: str, prf: PRF) -> None:
        table.add_row(
            name,
            percent(prf.precision),
            percent(prf.recall),
            percent(prf.f1),
            str(prf.predicted),
        )

    add("per-label thresholds", check.per_label)
    level = (
        f"{check.global_threshold:.4g}" if math.isfinite(check.global_threshold) else "none works"
    )
    add(f"one global threshold ({level})", check.global_)
    for k, prf in check.top_k.items():
        add(f"top-{k}", prf)
    print_whole(table)


def print_whole(table: Table) -> None:
    """A table at its full width, even in a narrow terminal or a pipe (shrunk to fit, Rich
    would cut the numbers: "100.…")."""
    needed = Measurement.get(out, out.options.update_width(10_000), table).maximum
    if needed <= out.width:
        out.print(table)
        return
    wide = Console(
        file=out.file,
        width=needed,
        highlight=False,
        soft_wrap=True,
        markup=False,
        color_system=out.color_system,  # type: ignore[arg-type]
        no_color=out.no_color,
    )
    wide.print(table)
