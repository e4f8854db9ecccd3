"""``mkt-tag review --apply``: a review's corrected tags into the photos' sidecars.

The corrected tags of a photo are the model's tags nobody rejected and the labels a person
added. They are written as ``mkt-tag tag`` writes tags (``sidecars.write_sidecar``): they
replace mkt-tag's own entries and record, and what a person or another program wrote stays,
so a rejected tag goes from mkt-tag's entries only, and ``mkt-tag untag`` takes the
corrected tags out again. A sidecar that holds the record of a tagging run keeps that run's
identity, so ``mkt-tag tag`` with the same model, vocabulary and selection finds the photo
current and leaves the corrections be. Only photos with a decision are written.
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
    """Write the corrected tags of every photo with a decision to its ``fmt`` sidecar
    (``xmp``, ``json`` or ``txt``). A photo that fails is reported and the rest written."""
    applied = Applied()
    for photo in review.photos:
        decisions = review.decisions.get(photo.id)
        if decisions is None:
            continue
        tags = corrected_tags(photo, decisions)
        try:
            run, root = _run_of(sidecar_path(photo.path, fmt, naming), fmt)
            path = write_sidecar(photo.path, tags, fmt, naming, run=run, tag_root=root)
        except MktTagError as error:
            applied.failures.append(str(error))
            continue
        labels = [tag.label for tag in tags]
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
