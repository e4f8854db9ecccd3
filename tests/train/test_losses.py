"""MKT's losses as (sum, count), by hand, and their mean over the global batch."""

from __future__ import annotations

import pytest
import torch

from mkt_tag.train.distributed import Distributed
from mkt_tag.train.losses import distillation_loss, global_mean, ranking_loss


def test_ranking_loss_by_hand():
    scores = torch.tensor(
        [
            [0.9, 0.1, 0.5, 0.0],  # pos 0 (vs 1: 0.2, vs 2: 0.6), label 3 unknown
            [0.0, 0.3, 0.2, 0.9],  # no positive: not counted
            [0.5, 0.5, 0.5, 0.5],  # pos 1, negatives 0, 2: margins 1 each -> mean 1
        ],
        requires_grad=True,
    )
    targets = torch.tensor([[1, -1, -1, 0], [-1, -1, -1, -1], [-1, 1, -1, 0]])
    total, count = ranking_loss(scores, targets)
    assert int(count) == 2
    assert float(total.detach()) == pytest.approx((0.2 + 0.6) / 2 + 1.0)
    total.backward()
    assert scores.grad is not None and float(scores.grad[1].abs().sum()) == 0
    assert float(scores.grad[0, 3]) == 0  # unknown labels take no part


def test_ranking_loss_without_any_positive_still_has_a_graph():
    scores = torch.zeros(2, 3, requires_grad=True)
    total, count = ranking_loss(scores, -torch.ones(2, 3))
    assert float(total.detach()) == 0 and int(count) == 0
    total.backward()  # every process of a DDP run must be able to run backward


def test_distillation_leaves_out_failed_images():
    student, teacher = torch.ones(3, 4), torch.zeros(3, 4)
    assert [int(v) for v in distillation_loss(student, teacher)] == [12, 12]
    total, count = distillation_loss(student, teacher, torch.tensor([True, False, True]))
    assert (float(total), int(count)) == (8.0, 8)


def test_global_mean_alone():
    parts = {
        "rank": (torch.tensor(3.0, requires_grad=True), torch.tensor(2)),
        "distill": (torch.tensor(1.0), torch.tensor(0)),  # nothing counted: divided by 1
    }
    loss, means = global_mean(parts, Distributed())
    assert float(loss.detach()) == pytest.approx(2.5) and means == {"rank": 1.5, "distill": 1.0}
