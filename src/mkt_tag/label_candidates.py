"""A vocabulary's entries as scoring candidates, the same for tagging, evaluation and training.

Each entry is one candidate whose embedding is the mean of its phrasings' (``Entry.texts``:
its prompts, or the label itself, a hierarchical label by its last level); each alias is one
more candidate of its entry. Scores are computed per candidate, and a label's score is the
best of its candidates'.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mkt_tag.vocab import Entry


@dataclass
class Candidates:
    """The candidates of a vocabulary: the first one per entry, then one per alias."""

    texts: list[list[str]]  # each candidate's phrasings, averaged into its embedding
    owner: list[int]  # the entry each candidate scores for


def candidates(entries: Sequence[Entry]) -> Candidates:
    """Each entry's own candidate (its phrasings), then each alias as a candidate of its own."""
    texts = [entry.texts for entry in entries]
    owner = list(range(len(entries)))
    for index, entry in enumerate(entries):
        texts += [[alias] for alias in entry.aliases]
        owner += [index] * len(entry.aliases)
    return Candidates(texts, owner)
