"""What mkt-tag records beside the tags it writes: which run made them, and which entries
are its own.

A photo's tags are *current* when its record names the same run as the one now asked for:
the same model (by the fingerprint of its weights and configuration), the same vocabulary
(labels, phrasings, aliases) and the same selection (top-K, thresholds), under the same tag
root. A photo without a record is not done, whatever keywords it holds: they are someone
else's. The record also lists each keyword entry mkt-tag added (``keywords.Ownership``), so
that re-tagging and ``untag`` touch those and nothing else, and the labels a person rejected
in a review (``mkt-tag review --apply``), which no later run writes into the photo again.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass, field

from mkt_tag._version import __version__
from mkt_tag.files import digest
from mkt_tag.keywords import Ownership
from mkt_tag.results import Tag
from mkt_tag.vocab import Entry

RECORD_NAMESPACE = "http://ns.mkt-tag.org/xmp/1.0/"  # an identifier, never fetched
RECORD_PREFIX = "mkttag"
NEW, STALE, CURRENT = "new", "stale", "current"  # what a run finds in an image's outputs


def vocabulary_fingerprint(entries: Sequence[Entry]) -> str:
    """What the scores of a vocabulary depend on: its labels, phrasings and aliases, in
    order (thresholds belong to the selection)."""
    return digest("vocabulary", [[e.label, e.texts, e.aliases] for e in entries])


@dataclass(frozen=True)
class RunIdentity:
    """What a run's tags depend on."""

    model: str  # the model as the user named it (shown, not compared)
    model_fingerprint: str  # ``identity.ModelIdentity.scores``: weights and configuration
    vocabulary: str  # ``vocabulary_fingerprint``
    selection: str  # ``Selection.describe()``: top-K and thresholds, in words

    @property
    def fingerprint(self) -> str:
        return digest("run", self.model_fingerprint or self.model, self.vocabulary, self.selection)


ANONYMOUS_RUN = RunIdentity("", "", "", "")  # tags written, or judged, without a known run


@dataclass
class Record:
    """mkt-tag's record in one photo's metadata."""

    run: str  # ``RunIdentity.fingerprint`` of the run that wrote the tags
    model: str = ""
    model_fingerprint: str = ""
    vocabulary: str = ""
    selection: str = ""
    tag_root: str = ""  # the root of the hierarchical entries ("" none)
    date: str = ""  # when, ISO 8601 in UTC
    version: str = __version__  # of mkt-tag
    tags: list[Tag] = field(default_factory=list)  # the tags, with their scores
    owned: Ownership = field(default_factory=Ownership)  # the keyword entries mkt-tag wrote
    rejected: list[str] = field(default_factory=list)  # labels a person said are wrong here

    @classmethod
    def of(
        cls,
        run: RunIdentity,
        tags: Sequence[Tag],
        owned: Ownership,
        tag_root: str = "",
        rejected: Sequence[str] = (),
    ) -> Record:
        """A record of ``tags`` written now by ``run``; ``rejected``: the labels it must
        never write (a person said they are wrong)."""
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        return cls(
            run.fingerprint,
            run.model,
            run.model_fingerprint,
            run.vocabulary,
            run.selection,
            tag_root,
            now.replace("+00:00", "Z"),
            tags=list(tags),
            owned=owned,
            rejected=list(rejected),
        )

    def is_current(self, run: RunIdentity, tag_root: str = "") -> bool:
        """Whether ``run`` would write the tags this record describes."""
        return self.run == run.fingerprint and self.tag_root == tag_root

    def kept_with(self, tags: Sequence[Tag]) -> list[Tag]:
        """``tags``, then this record's tags of other labels (``--append``)."""
        new = {tag.label for tag in tags}
        return [*tags, *(tag for tag in self.tags if tag.label not in new)]


def state(record: Record | None, run: RunIdentity, tag_root: str = "") -> str:
    """What ``record`` says of an output: NEW without one, CURRENT when ``run`` wrote it
    under ``tag_root``, else STALE."""
    if record is None:
        return NEW
    return CURRENT if record.is_current(run, tag_root) else STALE


def label_key(label: str) -> str:
    """What makes two spellings the same label: case and spacing do not count."""
    return " ".join(label.split()).casefold()


def rejections(
    previous: Record | None, rejected: Sequence[str], theirs: Sequence[str]
) -> list[str]:
    """The labels a new record must keep out: those ``previous`` kept out and the newly
    ``rejected``, less those a person now says are right (``theirs``)."""
    right = {label_key(label) for label in theirs}
    known = [*(previous.rejected if previous is not None else []), *rejected]
    found: dict[str, str] = {}
    for label in known:
        if label_key(label) not in right:
            found.setdefault(label_key(label), label)
    return list(found.values())


def allowed(tags: Sequence[Tag], kept_out: Sequence[str]) -> list[Tag]:
    """``tags`` less those of the labels in ``kept_out``."""
    out = {label_key(label) for label in kept_out}
    return [tag for tag in tags if label_key(tag.label) not in out]


@dataclass(frozen=True)
class Decided:
    """A person's decisions about one photo's labels (``mkt-tag review --apply``)."""

    theirs: Sequence[str] = ()  # accepted or added: the person's keywords from now on
    rejected: Sequence[str] = ()  # wrong: kept out, besides those the record keeps out

    def ours(
        self, tags: Sequence[Tag], previous: Record | None, keep: bool = False
    ) -> tuple[list[Tag], list[str]]:
        """The tags mkt-tag writes as its own (``previous``'s too with ``keep``), less the
        labels kept out and those now the person's; and the labels the new record keeps
        out."""
        kept_out = rejections(previous, self.rejected, self.theirs)
        if keep and previous is not None:
            tags = previous.kept_with(tags)
        return allowed(tags, [*kept_out, *self.theirs]), kept_out


def labels_by_score(tags: Sequence[Tag]) -> list[str]:
    """The labels of ``tags``, best first: the order mkt-tag adds keywords in."""
    return [tag.label for tag in sorted(tags, key=lambda tag: -tag.score)]
