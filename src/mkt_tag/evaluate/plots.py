"""The PNG report of an evaluation: per-label AP, and precision-recall curves.

matplotlib is imported inside the function (it is slow to import) and drawn with its Agg
canvas directly, without pyplot: no display, no global backend state.
"""

from __future__ import annotations

import io
import itertools
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from mkt_tag.evaluate.metrics import precision_recall_curve
from mkt_tag.evaluate.report import EvalReport
from mkt_tag.evaluate.scores import ScoreSet
from mkt_tag.files import atomic_write_bytes

SEEN_COLOUR = "#1f77b4"  # matplotlib's blue
UNSEEN_COLOUR = "#ff7f0e"  # and orange: distinct for the common colour blindnesses
MAX_TICK_LABELS = 40  # more label names under the AP bars would be unreadable
NAME_LENGTH = 28
CURVE_COLOURS = ("#2ca02c", "#d62728", "#9467bd")  # not the seen / unseen colours


def _name(label: str) -> str:
    """A label as plot text: shortened, and ``$`` escaped (it would start mathtext)."""
    short = label if len(label) <= NAME_LENGTH else label[: NAME_LENGTH - 1] + "…"
    return short.replace("$", r"\$")


def _tail(text: str, length: int = 40) -> str:
    """The end of a long model id or path, where its name is."""
    short = text if len(text) <= length else "…" + text[-(length - 1) :]
    return short.replace("$", r"\$")


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def _percent(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def write_report_png(
    path: str | Path, report: EvalReport, scores: ScoreSet, n_curves: int = 3
) -> None:
    """Draw ``report`` into a PNG: AP of every label sorted (seen and unseen in two colours,
    with each group's mAP), and the precision-recall curves of the ``n_curves`` best and
    worst labels (by AP; labels without a positive have no AP and are left out).

    Raises:
        OutputError: the file cannot be written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 8.5), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(2, 2, height_ratios=(1.1, 1))
    _ap_bars(figure.add_subplot(grid[0, :]), report)
    ranked = [int(i) for i in np.argsort(-np.nan_to_num(report.ap, nan=-1.0), kind="stable")]
    ranked = [i for i in ranked if not math.isnan(report.ap[i])]
    # with few labels, split them between the panels rather than draw one twice
    best = ranked[: min(n_curves, math.ceil(len(ranked) / 2))]
    worst = ranked[len(best) :][::-1][:n_curves]
    columns = _own_row_scores(report, scores, best + worst)
    _curves(figure.add_subplot(grid[1, 0]), report, columns, scores, best, "best labels")
    _curves(figure.add_subplot(grid[1, 1]), report, columns, scores, worst, "worst labels")
    summary = ", ".join(
        f"{row.name} mAP {_percent(row.map)}"
        + (f" (ref. {_percent(row.map_reference)})" if row.map_reference is not None else "")
        for row in report.rows
    )
    model = f"{_tail(report.model)}, " if report.model else ""
    figure.suptitle(f"mkt-tag eval: {model}{report.images:,} images; {summary}", fontsize=11)
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # a label in a script the font lacks: drawn as boxes
        warnings.filterwarnings("ignore", message=r"Glyph .* missing", category=UserWarning)
        figure.savefig(buffer, format="png")
    atomic_write_bytes(Path(path), buffer.getvalue())


def _ap_bars(axes: Any, report: EvalReport) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    present = np.flatnonzero(~np.isnan(report.ap))
    order = present[np.argsort(-report.ap[present], kind="stable")]
    values, unseen = report.ap[order], report.unseen[order]
    few = order.size <= MAX_TICK_LABELS
    if few:
        colours = [UNSEEN_COLOUR if u else SEEN_COLOUR for u in unseen]
        axes.bar(np.arange(order.size), values, width=0.8, color=colours, linewidth=0)
    else:  # bars that touch, drawn as two filled outlines: thousands of bars draw slowly
        edges = np.arange(order.size + 1) - 0.5
        for colour, mine in ((SEEN_COLOUR, ~unseen), (UNSEEN_COLOUR, unseen)):
            axes.stairs(np.where(mine, values, 0.0), edges, fill=True, color=colour, linewidth=0)
    handles: list[Any] = []  # legend entries: patches (bars) and lines (mAP)
    for kind, row_name, colour in (
        ("seen", "seen", SEEN_COLOUR),
        ("unseen", "ZSL", UNSEEN_COLOUR),
    ):
        style: Any = "--" if kind == "seen" else ":"  # (matplotlib types want a Literal)
        count = int((report.unseen[present] == (kind == "unseen")).sum())
        if not count:
            continue
        handles.append(Patch(color=colour, label=f"{kind}: {_plural(count, 'label')}"))
        row = report.row(row_name)
        if row is not None and not math.isnan(row.map):
            axes.axhline(row.map, color=colour, linestyle=style, linewidth=1.2, zorder=3)
            handles.append(
                Line2D(
                    [], [], color=colour, linestyle=style, label=f"{kind}: mAP {_percent(row.map)}"
                )
            )
    axes.legend(handles=handles, loc="upper right", fontsize=9)
    missing = len(report.labels) - present.size
    note = f"; {missing} without a positive, not shown" if missing else ""
    axes.set_title(f"AP per label, sorted ({_plural(present.size, 'label')}{note})", fontsize=10)
    axes.set_ylabel("average precision")
    axes.set_ylim(0, 1.02)
    axes.set_xlim(-0.5, max(order.size, 1) - 0.5)
    if few and order.size:
        axes.set_xticks(np.arange(order.size))
        axes.set_xticklabels(
            [_name(report.labels[i]) for i in order], rotation=60, ha="right", fontsize=8
        )
    else:
        axes.set_xlabel("labels, best AP first")
        axes.set_xticks([])


def _own_row_scores(
    report: EvalReport, scores: ScoreSet, labels: list[int]
) -> dict[int, NDArray[Any]]:
    """Each label's scores in its own row (unseen among the unseen, seen among the seen), as
    its AP in ``report.ap`` was measured: one fusion per row for all its labels."""
    found: dict[int, NDArray[Any]] = {}
    for unseen in (True, False):
        mine = [i for i in labels if bool(report.unseen[i]) == unseen]
        if not mine:
            continue
        row = np.flatnonzero(report.unseen == unseen)
        keep = np.searchsorted(row, mine)
        matrix = scores.row_scores(row, keep)
        found.update({index: matrix[:, j] for j, index in enumerate(mine)})
    return found


def _curves(
    axes: Any,
    report: EvalReport,
    columns: dict[int, NDArray[Any]],
    scores: ScoreSet,
    labels: list[int],
    what: str,
) -> None:
    for index, colour in zip(labels, itertools.cycle(CURVE_COLOURS)):
        curve = precision_recall_curve(columns[index], scores.targets[:, index])
        kind = "unseen" if report.unseen[index] else "seen"
        axes.plot(
            np.concatenate([[0.0], curve.recall]),
            np.concatenate([curve.precision[:1], curve.precision]),
            drawstyle="steps-pre",  # precision of each recall step: the area is AP
            linestyle="--" if report.unseen[index] else "-",
            linewidth=1.6,
            color=colour,
            label=f"{_name(report.labels[index])} (AP {_percent(report.ap[index])}, {kind})",
        )
    axes.set_title(f"precision-recall, {what}", fontsize=10)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_xlim(0, 1.0)
    axes.set_ylim(0, 1.05)
    axes.grid(alpha=0.3)
    if labels:
        axes.legend(loc="lower left", fontsize=8)
    else:
        axes.text(0.5, 0.5, "no other label with a positive", ha="center", transform=axes.transAxes)
