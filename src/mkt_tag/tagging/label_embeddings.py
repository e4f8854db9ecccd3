"""A vocabulary turned into label embeddings: phrasings averaged, aliases, cached.

Each entry gets one candidate embedding, the mean of its phrasings' embeddings; each alias
is one more candidate owned by the entry. Scores are computed per candidate, and an entry's
score is the best of its candidates', so "sofa" with alias "couch" is found by either word.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mkt_tag.label_candidates import candidates as vocab_candidates
from mkt_tag.model import MKT
from mkt_tag.tagging.caches import LabelCache
from mkt_tag.vocab import Entry


@dataclass
class LabelSet:
    """Labels (unique output names) and their candidates' embeddings (float32, on device)."""

    labels: list[str]
    embeddings: torch.Tensor  # candidates x D; the first len(labels) are the labels' own
    owner: np.ndarray  # candidate -> label index
    encoded: int = 0  # texts that had to go through the text tower (the rest were cached)

    def label_scores(self, candidate_scores: np.ndarray) -> np.ndarray:
        """Per-label scores (N x L): the best of each label's candidates."""
        scores = np.array(candidate_scores[:, : len(self.labels)], copy=True)
        for candidate in range(len(self.labels), len(self.owner)):
            label = self.owner[candidate]
            np.maximum(scores[:, label], candidate_scores[:, candidate], out=scores[:, label])
        return scores


def as_entries(labels: Sequence[str | Entry]) -> list[Entry]:
    return [label if isinstance(label, Entry) else Entry(label) for label in labels]


@torch.inference_mode()
def embed(
    model: MKT,
    labels: Sequence[str | Entry],
    cache: LabelCache | None = None,
    cache_key: str = "",
    source: str = "labels",
) -> LabelSet:
    """Embed a vocabulary; texts already in ``cache`` under ``cache_key`` are not re-encoded."""
    entries = as_entries(labels)
    found = vocab_candidates(entries)
    candidates, owner = found.texts, found.owner
    texts = list(dict.fromkeys(text for group in candidates for text in group))
    vectors = cache.get(cache_key, texts) if cache is not None and cache_key else {}
    missing = [text for text in texts if text not in vectors]
    if missing:
        encoded = model.encode_labels(missing, source=source).float().cpu().numpy()
        fresh = dict(zip(missing, encoded, strict=True))
        if cache is not None and cache_key:
            cache.put(cache_key, fresh)
        vectors.update(fresh)
    matrix = np.stack([np.mean([vectors[t] for t in group], axis=0) for group in candidates])
    device = next(model.parameters()).device
    return LabelSet(
        labels=[entry.label for entry in entries],
        embeddings=torch.from_numpy(matrix.astype(np.float32)).to(device),
        owner=np.asarray(owner, dtype=np.int64),
        encoded=len(missing),
    )
