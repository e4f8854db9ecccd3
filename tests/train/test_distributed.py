"""Where a process stands in a torchrun job; outside one, nothing happens."""

from __future__ import annotations

import pytest
import torch

from mkt_tag.train import distributed
from mkt_tag.train.distributed import Distributed


@pytest.fixture
def no_torchrun(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_alone_this_is_the_main_process(no_torchrun):
    assert distributed.place() == Distributed() and distributed.is_main_process()
    no_torchrun.setenv("RANK", "0")
    no_torchrun.setenv("WORLD_SIZE", "1")
    assert distributed.is_main_process()


def test_under_torchrun_rank_0_is_the_main_process(no_torchrun):
    no_torchrun.setenv("WORLD_SIZE", "2")
    no_torchrun.setenv("RANK", "1")
    no_torchrun.setenv("LOCAL_RANK", "1")
    assert distributed.place() == Distributed(rank=1, world=2, local_rank=1)
    assert not distributed.is_main_process()
    no_torchrun.setenv("RANK", "0")
    assert distributed.is_main_process() and distributed.place().active


def test_outside_torchrun_setup_joins_nothing(no_torchrun):
    group = distributed.setup(torch.device("cpu"))
    assert group == Distributed() and not group.active and group.main
    value = torch.tensor([1.0, 2.0])
    assert distributed.sum_all(value, group) is value
    distributed.barrier(group)
    distributed.teardown(group)
