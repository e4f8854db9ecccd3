"""The epoch order of every process, and batches that keep failed images as ignored rows."""

from __future__ import annotations

import math

import pytest
import torch

from mkt_tag.errors import MktTagError
from mkt_tag.train.data import EpochSampler, collate


def batches(sampler: EpochSampler) -> list[list[int]]:
    order = list(sampler)
    size = sampler.batch_size
    return [order[i : i + size] for i in range(0, len(order), size)]


@pytest.mark.parametrize("size", [16, 17, 24])
def test_processes_together_take_the_single_process_batches(size):
    single = EpochSampler(size, seed=3, batch_size=8)
    single.set_epoch(2)
    ranks = [EpochSampler(size, seed=3, batch_size=8, rank=r, world=2) for r in range(2)]
    for sampler in ranks:
        sampler.set_epoch(2)
    assert all(s.batch_size == 4 for s in ranks)
    assert single.batches_per_epoch() == ranks[0].batches_per_epoch() == math.ceil(size / 8)
    for step, expected in enumerate(batches(single)):
        together = sorted(batches(ranks[0])[step] + batches(ranks[1])[step])
        if size % 2 == 0:
            assert together == sorted(expected)
        else:  # padded by repeating the epoch's first index, only so that shares are equal
            assert set(together) >= set(expected) and len(together) == len(expected) + (
                step == len(batches(single)) - 1
            )


def test_epochs_differ_and_repeat_with_the_seed():
    sampler = EpochSampler(20, seed=1, batch_size=4)
    sampler.set_epoch(0)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first and sorted(sampler) == list(range(20))
    again = EpochSampler(20, seed=1, batch_size=4)
    again.set_epoch(0)
    assert list(again) == first
    assert list(EpochSampler(20, seed=2, batch_size=4)) != first


def test_resuming_mid_epoch_skips_the_batches_done():
    sampler = EpochSampler(10, seed=0, batch_size=4)
    sampler.set_epoch(1)
    whole = list(sampler)
    sampler.set_epoch(1, start_batch=2)
    assert list(sampler) == whole[8:] and len(sampler) == 2


def test_global_batch_must_split_evenly():
    with pytest.raises(MktTagError, match="batch size 6 cannot be split evenly over 4"):
        EpochSampler(10, seed=0, batch_size=6, world=4)


def test_collate_keeps_failed_rows_as_ignored_blanks():
    good = torch.full((3, 2, 2), 7, dtype=torch.uint8)
    blank = torch.zeros((3, 2, 2), dtype=torch.uint8)
    target = torch.tensor([1, -1], dtype=torch.int8)
    batch = collate([(4, good, target, ""), (9, blank, target, "truncated")])
    assert batch["index"].tolist() == [4, 9] and batch["failed"] == [(9, "truncated")]
    assert batch["valid"].tolist() == [True, False]
    assert batch["targets"].tolist() == [[1, -1], [0, 0]]
    assert batch["images"].shape == (2, 3, 2, 2)
