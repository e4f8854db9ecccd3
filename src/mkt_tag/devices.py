"""Where the model runs and in which precision: the ``--device`` and ``--precision`` choices.

The choice lists are plain tuples and torch is imported inside the functions, so that the CLI
can offer the choices without importing torch.
"""

from __future__ import annotations

import functools
import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from mkt_tag.errors import MktTagError

if TYPE_CHECKING:
    import torch


class Device(str, Enum):
    """Where the model runs; ``auto``: cuda, else mps, else cpu."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class Precision(str, Enum):
    """The model's number format; ``auto``: chosen for the hardware (``auto_precision``);
    ``int8``: the image tower in ONNX Runtime with int8 weights, on CPUs (``onnx_tower``)."""

    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"
    int8 = "int8"


DEVICES = tuple(choice.value for choice in Device)
PRECISIONS = tuple(choice.value for choice in Precision)


@functools.cache
def cpu_has_bf16() -> bool:
    """Native bf16 matrix instructions (AVX512-BF16 or AMX): a bf16 model is ~2x faster there."""
    if sys.platform != "linux":
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_device(name: str = "auto") -> torch.device:
    """The torch device for a ``--device`` choice (auto: cuda, else mps, else cpu)."""
    import torch

    if name not in DEVICES:
        raise MktTagError(f"unknown device {name!r} (choose from {', '.join(DEVICES)})")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise MktTagError("--device cuda: no CUDA GPU is available to PyTorch")
    if name == "mps" and not torch.backends.mps.is_available():
        raise MktTagError("--device mps: Apple's Metal backend is not available")
    return torch.device(name)


def pick_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The torch dtype of a precision. ``auto`` here: bf16 on GPUs that have it (else fp16)
    and on CPUs with native bf16; else fp32 (the choice without int8: ``Tagger`` asks
    ``auto_precision.choose``, which may pick int8)."""
    import torch

    if precision not in PRECISIONS:
        raise MktTagError(f"unknown precision {precision!r} (choose from {', '.join(PRECISIONS)})")
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if device.type == "cpu" and cpu_has_bf16() else torch.float32
    if precision == "int8":  # the torch side (text tower, scoring) of the int8 path
        if device.type != "cpu":
            raise MktTagError(
                f"--precision int8 runs on the CPU (ONNX Runtime), not on {device.type}: "
                "use auto, bf16 or fp16 there"
            )
        return torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
