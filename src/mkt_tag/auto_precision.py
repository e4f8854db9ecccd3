"""``--precision auto``: which number format a model runs in here, and why.

On GPUs: bf16 where the GPU has it, else fp16. On Apple's GPUs: fp32. On CPUs, by evidence:

- ONNX Runtime installed (the ``onnx`` extra) and no native bf16: int8 (the image tower in
  ONNX Runtime with int8 weights, ``onnx_tower``), 1.8-2.3 times torch fp32's speed on CPUs
  without bf16 (docs/benchmarks.md#int8-on-cpus);
- ONNX Runtime installed and native bf16 (AVX512-BF16, AMX): whichever of bf16 and int8 runs
  this model's image tower faster on this CPU, measured once (a few batches of each) and kept
  in the cache, ``CACHE/onnx/speeds.json``, keyed by the weights, the CPU and the threads;
- no ONNX Runtime: bf16 where the CPU has it natively, else fp32.

An int8 model that cannot be made (an architecture the exporter does not handle) makes
``auto`` fall back to what it would pick without ONNX Runtime, saying so in the reason.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mkt_tag.devices import cpu_has_bf16, pick_dtype
from mkt_tag.errors import ModelError
from mkt_tag.files import atomic_write_text, digest

if TYPE_CHECKING:
    import torch

    from mkt_tag.model import MKT
    from mkt_tag.onnx_tower import OnnxTower

SPEEDS_FILE = "speeds.json"  # in the cache's onnx folder: bf16 and int8 img/s measured here
MEASURE_BATCH = 8  # images per timed batch
MEASURE_ROUNDS = 3  # timed batches of each format (after one to warm up); the fastest counts


@dataclass(frozen=True)
class Choice:
    """The precision a model runs in, and why (for ``--verbose`` and run summaries)."""

    value: str  # fp32, bf16, fp16 or int8
    reason: str  # "asked for", "auto: this CPU has no native bf16", ...

    def __str__(self) -> str:
        return f"{self.value} ({self.reason})"


def int8_available() -> bool:
    """ONNX Runtime and onnx can be imported (found, not imported: that takes a second)."""
    try:
        return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))
    except ValueError:  # sys.modules[name] is None: a module without a spec
        return False


def choose(precision: str, device: torch.device, model: MKT, cache: Path | None) -> Choice:
    """The precision ``precision`` (a ``--precision`` value) means for ``model`` on ``device``.

    Only ``auto`` on a CPU with native bf16 and ONNX Runtime measures anything (the int8
    model is made then, as ``--precision int8`` would, and kept in ``cache``).
    """
    import torch

    if precision != "auto":
        pick_dtype(precision, device)  # an unknown precision, int8 off the CPU: refused
        return Choice(precision, "asked for")
    if device.type != "cpu":  # GPUs keep their path: ``devices.pick_dtype``'s auto
        dtype = pick_dtype("auto", device)
        return Choice({torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32"), "auto")
    bf16 = cpu_has_bf16()
    if not int8_available():
        if bf16:
            return Choice("bf16", "auto: native bf16 on this CPU")
        return Choice(
            "fp32",
            "auto: this CPU has no native bf16, and int8 needs ONNX Runtime: "
            "pip install 'mkt-tag[onnx]'",
        )
    if not bf16:
        return Choice("int8", "auto: this CPU has no native bf16")
    try:
        speeds = measured_speeds(model, cache)
    except ModelError as error:
        return Choice("bf16", f"auto: native bf16 on this CPU; {error}")
    ratio = speeds["int8"] / speeds["bf16"]
    if ratio > 1:
        return Choice("int8", f"auto: {ratio:.2f}x the speed of bf16 on this CPU, measured")
    return Choice("bf16", f"auto: {1 / ratio:.2f}x the speed of int8 on this CPU, measured")


def prepare(
    precision: str, device: torch.device, model: MKT, cache: Path | None
) -> tuple[Choice, OnnxTower | None]:
    """``choose``, and the int8 image tower where int8 is chosen (from the cache, or made).

    An int8 model that ``auto`` chose but cannot be made gives fp32 (int8 is chosen over
    bf16 only by measurement, which makes the int8 model first).

    Raises:
        ModelError: ``int8`` asked for, and ONNX Runtime missing or the model not made.
    """
    from mkt_tag import onnx_tower

    choice = choose(precision, device, model, cache)
    if choice.value != "int8":
        return choice, None
    try:
        return choice, onnx_tower.load(model, cache)
    except ModelError as error:
        if precision != "auto":
            raise
        return Choice("fp32", f"auto: int8 failed ({error}); fp32 instead"), None


def measured_speeds(model: MKT, cache: Path | None) -> dict[str, float]:
    """Images per second of ``model``'s image tower in bf16 (torch) and int8 (ONNX Runtime) on
    this CPU with torch's threads: from the cache, or measured now and stored there.

    Raises:
        ModelError: the int8 model cannot be made.
    """
    import torch

    from mkt_tag import onnx_tower

    tower = onnx_tower.cache_key(model)
    key = digest(tower, _cpu_name(), torch.get_num_threads()) if tower else ""
    path = None if cache is None else cache / onnx_tower.FOLDER / SPEEDS_FILE
    known = _read(path)
    if key and key in known:
        return known[key]
    int8 = onnx_tower.load(model, cache)
    speeds = {"bf16": _speed(_bf16_tower(model), model), "int8": _speed(int8, model)}
    if key and path is not None:
        known[key] = speeds
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(known, indent=1, sort_keys=True) + "\n")
        except OSError:
            pass  # measured again next time: slower, not wrong
    return speeds


def _bf16_tower(model: MKT) -> Callable[[torch.Tensor], object]:
    """A bf16 copy of the image tower, taking fp32 pixels (the model stays as it is)."""
    import torch

    from mkt_tag.model import visual_blocks, visual_head, visual_tokens

    visual = copy.deepcopy(model.visual).to(torch.bfloat16).eval()

    def tower(pixels: torch.Tensor) -> object:
        tokens = visual_tokens(visual, pixels.to(torch.bfloat16))
        return visual_head(visual, visual_blocks(visual, tokens))

    return tower


def _speed(tower: Callable[[torch.Tensor], object], model: MKT) -> float:
    """Images per second of ``tower`` on a batch of random pixels: the fastest of a few runs."""
    import torch

    size = model.config.preprocess.image_size
    pixels = torch.randn(MEASURE_BATCH, 3, size, size, generator=torch.Generator().manual_seed(0))
    best = float("inf")
    with torch.inference_mode():
        for round_ in range(MEASURE_ROUNDS + 1):
            started = time.perf_counter()
            tower(pixels)
            if round_:  # the first warms caches and allocators up
                best = min(best, time.perf_counter() - started)
    return MEASURE_BATCH / max(best, 1e-9)


def _cpu_name() -> str:
    """The CPU's model name (speeds measured on one CPU say nothing of another)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _read(path: Path | None) -> dict[str, dict[str, float]]:
    """The speeds file's entries; {} when it is missing or damaged (measured again)."""
    if path is None:
        return {}
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(known, dict):
        return {}
    return {
        key: value
        for key, value in known.items()
        if isinstance(value, dict) and all(_positive(value.get(name)) for name in ("bf16", "int8"))
    }


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0
