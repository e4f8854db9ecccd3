"""Where a process stands in a torchrun job (outside one, nothing happens), and collectives
that run on the training device."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch.overrides import TorchFunctionMode

from mkt_tag import datasets, vocab
from mkt_tag.train import TrainConfig, distributed
from mkt_tag.train.distributed import Distributed
from mkt_tag.train.trainer import Trainer
from tests.train.conftest import small_run


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


# --- every collective on the training device ----------------------------------------------

COLLECTIVES = (
    "all_reduce",
    "broadcast",
    "all_gather",
    "all_gather_into_tensor",
    "reduce",
    "reduce_scatter",
    "reduce_scatter_tensor",
    "gather",
    "scatter",
    "all_to_all",
    "all_to_all_single",
    "barrier",
)


def on_device(tensor: torch.Tensor) -> bool:
    return bool(getattr(tensor, "_on_device", False))


def tensors_in(value: object) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in tensors_in(item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in tensors_in(item)]
    return []


class SecondDevice(TorchFunctionMode):
    """A training device other than the host, on a machine that has only a CPU.

    Every tensor is marked with where a GPU run would hold it: the model's parameters and
    buffers, and whatever is made with ``device=`` or moved with ``.to(device)``/``.cuda()``,
    are on the device; tensors made without a device (``torch.tensor(3.0)``, ``from_numpy``,
    a DataLoader's batch) or moved by ``.cpu()`` are on the host; any other operation's result
    is on the device when one of its tensor inputs is (as CUDA operations are).
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        where = self._target(func, args, kwargs)
        if args and result is args[0] and where is not True:
            return result  # in place, or nothing moved: it stays where it is
        if where is None:
            where = any(on_device(t) for t in tensors_in((args, kwargs)))
        for tensor in tensors_in(result):
            tensor._on_device = where  # type: ignore[attr-defined]
        return result

    @staticmethod
    def _target(func: object, args: tuple, kwargs: dict) -> bool | None:
        """True: made on or moved to the device; False: on the host; None: follows inputs."""
        if func is torch.Tensor.cpu:
            return False
        if func is torch.Tensor.cuda:
            return True
        device = kwargs.get("device")
        if func is torch.Tensor.to:
            for arg in args[1:]:
                if isinstance(arg, torch.Tensor):
                    return on_device(arg)
                if isinstance(arg, (torch.device, str)):
                    device = arg
        if device is not None:
            return True  # the training device (the CPU here, a GPU in a GPU run)
        if not tensors_in((args, kwargs)) and func is not torch.Tensor.to:
            return False  # a factory without a device
        return None


@pytest.fixture
def torchrun_alone(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The environment `torchrun --nproc_per_node 1` gives its one process."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    environment = {"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0", "MASTER_PORT": str(port)}
    environment.update(MASTER_ADDR="127.0.0.1", TORCHELASTIC_RUN_ID="test")
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


def test_every_collective_gets_tensors_on_the_training_device(
    photo_set, tmp_path, monkeypatch, torchrun_alone
):
    """NCCL reduces only GPU tensors: a collective handed a host tensor fails on GPUs. Here the
    device is simulated (SecondDevice) and the process group is a real one-process gloo group,
    as torchrun with one process makes; both stages, with validation, run under the check."""
    labels = vocab.read_labels(photo_set["labels"]).labels
    train_set = datasets.load(photo_set["train"], labels, keep_unlabelled=False)
    val_set = datasets.load(photo_set["val"], labels)
    settings = small_run(photo_set, tmp_path / "run", epochs=1, prompt_epochs=1)
    trainer = Trainer(TrainConfig(**settings), train_set, val_set)  # type: ignore[arg-type]
    assert trainer.group.joined and trainer.group.world == 1
    model_device = next(trainer.model.parameters()).device
    assert trainer.group.device == model_device
    assert trainer.teacher is not None
    for module in (trainer.model, trainer.teacher):
        for tensor in [*module.parameters(), *module.buffers()]:
            tensor._on_device = True  # type: ignore[attr-defined]
    seen: list[str] = []

    def checked(name: str, collective: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            seen.append(name)
            for tensor in tensors_in((args, kwargs)):
                assert tensor.device == model_device, f"{name} got a tensor on {tensor.device}"
                assert on_device(tensor), f"{name} got a host tensor: {tensor!r}"
            if name == "barrier":
                expected = [model_device.index or 0] if model_device.type == "cuda" else None
                assert kwargs.get("device_ids") == expected
            return collective(*args, **kwargs)

        return call

    for name in COLLECTIVES:
        monkeypatch.setattr(dist, name, checked(name, getattr(dist, name)))
    with SecondDevice():
        state = trainer.run()
    assert state.done == [1, 2]
    assert {"all_reduce", "barrier"} <= set(seen)
    assert not dist.is_initialized()  # the trainer left the group it joined
