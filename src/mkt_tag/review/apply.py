"""``mkt-tag review --apply``: a review's decisions into the photos' sidecars.

A person's decisions belong to the person (``sidecars.write_sidecar`` with ``theirs`` and
``rejected``):

- the tags they accepted and the labels they added become their keywords: no longer among
  mkt-tag's entries, so neither ``mkt-tag untag`` nor any later ``mkt-tag tag`` (re-tag,
  ``--overwrite``, ``--append``, another model or vocabulary) removes them;
- the tags they rejected go from mkt-tag's entries and are listed in mkt-tag's record
  (``mkttag:Rejected``, ``"rejected"`` in JSON), and no later ``tag`` run writes them into
  that photo again; a keyword of the person's with the same name stays;
- the model's tags they did not decide stay mkt-tag's, as ``tag`` wrote them.

A sidecar that holds the record of a tagging run keeps that run's identity, so ``tag`` with
the same model, vocabulary and selection finds the photo current and leaves it be. A TXT
sidecar has no record: it gets the corrected labels, and nothing remembers the rejections.
Only photos with a decision are written.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mkt_tag.errors import MktTagError
from mkt_tag.records import ANONYMOUS_RUN, RunIdentity
from mkt_tag.results import Tag
from mkt_tag.review.corrections import Decisions
from mkt_tag.review.photos import Photo
from mkt_tag.review.session import Review
from mkt_tag.sidecar_paths import sidecar_path
from mkt_tag.sidecars import write_sidecar
from mkt_tag.xmp import XmpDocument

ADDED_SCORE = 1.0  # a label a person added: as sure as can be


@dataclass
class Applied:
    """What ``apply_corrections`` did."""

    written: list[tuple[Path, list[str]]] = field(default_factory=list)  # sidecar, its tags
    failures: list[str] = field(default_factory=list)  # one line each, naming the file


def corrected_tags(photo: Photo, decisions: Decisions) -> list[Tag]:
    """The model's tags nobody rejected, then the labels a person added."""
    kept = [tag for tag in photo.tags if decisions.verdicts.get(tag.label, True)]
    own = {tag.label for tag in photo.tags}
    added = [Tag(label, ADDED_SCORE) for label in decisions.positives() if label not in own]
    return kept + added


def apply_corrections(
    review: Review,
    fmt: str = "xmp",
    naming: str = "full",
    on_written: Callable[[Path, list[str]], None] | None = None,
) -> Applied:
    """Write the decisions about every photo with one to its ``fmt`` sidecar (``xmp``,
    ``json`` or ``txt``): accepted and added labels as the person's keywords, rejected ones
    out of mkt-tag's and kept out from then on (see the module's docstring). A photo that
    fails is reported and the rest written."""
    applied = Applied()
    for photo in review.photos:
        decisions = review.decisions.get(photo.id)
        if decisions is None:
            continue
        undecided = [tag for tag in photo.tags if tag.label not in decisions.verdicts]
        try:
            run, root = _run_of(sidecar_path(photo.path, fmt, naming), fmt)
            path = write_sidecar(
                photo.path,
                undecided,
                fmt,
                naming,
                run=run,
                tag_root=root,
                theirs=decisions.positives(),
                rejected=decisions.negatives(),
            )
        except MktTagError as error:
            applied.failures.append(str(error))
            continue
        labels = [tag.label for tag in corrected_tags(photo, decisions)]
        applied.written.append((path, labels))
        if on_written is not None:
            on_written(path, labels)
    return applied


def _run_of(sidecar: Path, fmt: str) -> tuple[RunIdentity, str]:
    """The run (and tag root) named by the record in ``sidecar``; anonymous without one.
    A sidecar that cannot be parsed is left for ``write_sidecar`` to report."""
    try:
        data = sidecar.read_bytes()
    except OSError:
        return ANONYMOUS_RUN, ""
    fields: dict[str, str] = {}
    try:
        if fmt == "xmp":
            record = XmpDocument(data).record
            if record is not None:
                fields = {
                    "model": record.model,
                    "model_fingerprint": record.model_fingerprint,
                    "vocabulary": record.vocabulary,
                    "selection": record.selection,
                    "tag_root": record.tag_root,
                }
        elif fmt == "json":
            document = json.loads(data)
            found = document.get("mkt-tag") if isinstance(document, dict) else None
            if isinstance(found, dict):
                fields = {name: value for name, value in found.items() if isinstance(value, str)}
    except ValueError:  # malformed: write_sidecar says so
        return ANONYMOUS_RUN, ""
    if not fields:
        return ANONYMOUS_RUN, ""
    run = RunIdentity(
        fields.get("model", ""),
        fields.get("model_fingerprint", ""),
        fields.get("vocabulary", ""),
        fields.get("selection", ""),
    )
    return run, fields.get("tag_root", "")
