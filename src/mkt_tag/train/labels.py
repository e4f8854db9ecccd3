"""The label text training embeds: the same as `tag` and `eval` embed from a vocabulary.

The candidates are ``label_candidates.candidates``: one per entry (its phrasings averaged),
one more per alias. Scores are computed (and fused, each stream normalised across the
candidates) per candidate, and a label's score is the best of its candidates'. Training
the ranking loss on these label scores trains what tagging and evaluation then measure
(``tagging.label_embeddings`` does the same in numpy, without gradients).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mkt_tag.label_candidates import candidates
from mkt_tag.vocab import Entry


class LabelTexts:
    """A vocabulary's texts (each once), its candidates and the label each one scores for."""

    def __init__(self, entries: Sequence[Entry]) -> None:
        self.labels = [entry.label for entry in entries]
        found = candidates(entries)
        groups, owners = found.texts, found.owner
        self.texts = list(dict.fromkeys(text for group in groups for text in group))
        position = {text: i for i, text in enumerate(self.texts)}
        # One row per (candidate, text): the candidate's embedding is its texts' mean.
        self.member_text = torch.tensor([position[t] for g in groups for t in g])
        self.member_candidate = torch.tensor([c for c, g in enumerate(groups) for _ in g])
        self.group_sizes = torch.tensor([len(g) for g in groups])
        self.owner = torch.tensor(owners)
        # One text per candidate, none shared (a .txt vocabulary): texts are candidates.
        self.plain = groups == [[text] for text in self.texts]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def candidates(self) -> int:
        return len(self.owner)

    def embeddings(self, text_embeddings: torch.Tensor) -> torch.Tensor:
        """Candidate embeddings (candidates x D) from the embeddings of ``texts`` (in order)."""
        if self.plain:
            return text_embeddings
        device = text_embeddings.device
        members = text_embeddings[self.member_text.to(device)]
        total = members.new_zeros((self.candidates, members.shape[1]))
        total = total.index_add(0, self.member_candidate.to(device), members)
        return total / self.group_sizes.to(device=device, dtype=total.dtype)[:, None]

    def label_scores(self, candidate_scores: torch.Tensor) -> torch.Tensor:
        """Per-label scores (N x labels): the best of each label's candidates' scores."""
        labels = len(self.labels)
        if self.candidates == labels:
            return candidate_scores
        own, aliases = candidate_scores[:, :labels], candidate_scores[:, labels:]
        index = self.owner[labels:].to(aliases.device).expand(len(aliases), -1)
        return own.scatter_reduce(1, index, aliases, reduce="amax", include_self=True)


def plain_entries(labels: Sequence[str]) -> list[Entry]:
    """Entries of bare label names, as ``tag`` makes them for a list of names."""
    return [Entry(label) for label in labels]
