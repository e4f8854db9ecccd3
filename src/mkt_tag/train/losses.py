"""MKT's training losses, returned as (sum, count) so that data-parallel runs can divide by
the count over all processes and match a single-process run exactly.
"""

from __future__ import annotations

import torch

from mkt_tag.train.distributed import Distributed, sum_all


def ranking_loss(scores: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """BiAM's pairwise ranking loss, summed over images: (sum, number of images counted).

    Per image, over every (positive p, negative n) label pair: ``max(0, 1 + s_n - s_p)``, summed
    and divided by the number of violating pairs. Labels with target 0 are ignored; images
    without a positive label (or without a negative) are not counted. (The reference also
    drops label columns that are 0 for the whole batch; pairs never involve 0 labels, so that
    changes nothing and is not done here.)
    """
    # Zero times the scores keeps the loss in the graph when no image counts, so that every
    # process of a data-parallel run still runs backward (and exchanges gradients).
    total = (scores * 0).sum()
    counted = 0
    for row, target in zip(scores, targets, strict=True):
        positives = row[target > 0]
        negatives = row[target < 0]
        if positives.numel() == 0:
            continue
        counted += 1  # an image with positives but no negative counts, with loss 0
        margins = (1 + negatives[None, :] - positives[:, None]).clamp(min=0)
        violating = (margins > 0).sum().clamp(min=1)
        total = total + margins.sum() / violating
    return total, torch.tensor(counted, device=scores.device)


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """L1 between student and frozen-teacher global embeddings: (sum, number of elements).

    Rows where ``valid`` is False (images that failed to load) do not count.
    """
    difference = (student - teacher).abs()
    if valid is None:
        return difference.sum(), torch.tensor(student.numel(), device=student.device)
    mask = valid.to(student.device)
    return difference[mask].sum(), mask.sum() * student.shape[-1]


def global_mean(
    parts: dict[str, tuple[torch.Tensor, torch.Tensor]], group: Distributed
) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss to back-propagate, and each part's mean over the global batch (for logs).

    Each part's sum is divided by its count summed over every process: the mean over the
    global batch, whatever each process holds. DDP averages gradients over processes, so the
    local loss is multiplied by the number of processes.
    """
    local = torch.stack([torch.stack([s.detach().float(), c.float()]) for s, c in parts.values()])
    totals = sum_all(local, group)
    counts = totals[:, 1].clamp(min=1)
    loss = torch.stack([s / counts[i] for i, (s, _) in enumerate(parts.values())]).sum()
    means = {name: float(totals[i, 0] / counts[i]) for i, name in enumerate(parts)}
    return loss * group.world, means
