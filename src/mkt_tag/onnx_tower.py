"""The image tower on ONNX Runtime with int8 weights: ``--precision int8`` on CPUs.

Most CPUs have no native bf16, and there torch runs ViT-B/16 in fp32. ONNX Runtime with
int8 weights (dynamic quantization: weights stored as int8, activations quantized on the fly
per batch) runs it about 2.5 times faster (issue 19's measurements). Only the image tower
goes through it, exported up to ``ln_post`` and ``proj`` with every token (MKT's local
stream needs the patch tokens); label embeddings and scoring stay in torch fp32.

The quantized model is made once per model (export, then quantization: seconds for a tiny
tower, a minute or so for ViT-B/16) and kept in the cache, ``CACHE/onnx/KEY.int8.onnx``,
keyed by the weights' fingerprint, the input size and the exporter's settings; a model whose
weights are unknown (no fingerprint) is exported into a temporary folder for each load.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import torch

from mkt_tag.errors import ModelError
from mkt_tag.files import digest
from mkt_tag.model import MKT, ImageFeatures

ONNX_MISSING = "--precision int8 needs ONNX Runtime: pip install 'mkt-tag[onnx]'"
OPSET = 17
FOLDER = "onnx"  # in the cache
# onnxruntime.quantization.quantize_dynamic's settings (weight_type as QuantType's name)
QUANTIZATION: dict[str, Any] = {"weight_type": "QInt8", "per_channel": False}


def check_installed() -> None:
    """Raise ``ModelError(ONNX_MISSING)`` unless onnxruntime and onnx can be imported."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ModelError(ONNX_MISSING) from None


class OnnxTower:
    """The quantized image tower in ONNX Runtime: normalised pixels (N x 3 x H x W, float32)
    in, ``ImageFeatures`` out. Safe to call from several threads.

    A call runs on as many threads as torch would use in the calling thread
    (``torch.get_num_threads()``: a batch's share when batches run side by side,
    ``batches.run_batches``); ONNX Runtime fixes a session's threads when it is made, so
    there is one session per thread count used.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sessions: dict[int, Any] = {}
        self._lock = threading.Lock()

    def session(self, threads: int) -> Any:
        """The ONNX Runtime session that runs on ``threads`` threads, made on first use."""
        import onnxruntime

        with self._lock:
            if threads not in self._sessions:
                options = onnxruntime.SessionOptions()
                options.intra_op_num_threads = threads
                options.inter_op_num_threads = 1
                self._sessions[threads] = onnxruntime.InferenceSession(
                    str(self.path), options, providers=["CPUExecutionProvider"]
                )
            return self._sessions[threads]

    def __call__(self, pixels: torch.Tensor) -> ImageFeatures:
        session = self.session(max(1, torch.get_num_threads()))
        tokens = torch.from_numpy(session.run(None, {"pixels": pixels.float().cpu().numpy()})[0])
        return ImageFeatures(tokens[:, 0], tokens[:, 1:])


def cache_key(model: MKT) -> str:
    """What the quantized tower depends on: the weights, the input size, the export and
    quantization settings ("" for weights without a fingerprint: nothing is cached)."""
    if not model.fingerprint:
        return ""
    size = model.config.preprocess.image_size
    return digest(model.fingerprint, "onnx-int8", OPSET, size, QUANTIZATION)


def load(model: MKT, cache: Path | None) -> OnnxTower:
    """The quantized tower of ``model``: from the cache, or made now and stored there.

    Raises:
        ModelError: ONNX Runtime is missing, or the export or quantization failed.
    """
    check_installed()
    key = cache_key(model)
    if cache is not None and key:
        path = cache / FOLDER / f"{key}.int8.onnx"
        if path.is_file():
            return OnnxTower(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-") as folder:
            os.replace(_build(model, Path(folder)), path)  # whole or not at all
        return OnnxTower(path)
    scratch = Path(tempfile.mkdtemp(prefix="mkt-tag-onnx-"))  # unknown weights: not cached
    return OnnxTower(_build(model, scratch))


def _build(model: MKT, work: Path) -> Path:
    """Export the image tower (fp32, every token) and quantize its weights to int8."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    exported, quantized = work / "tower.onnx", work / "tower.int8.onnx"
    try:
        export(model, exported)
        with _quiet_root_logger():  # "Please consider to run pre-processing ..."
            settings = {**QUANTIZATION, "weight_type": QuantType[QUANTIZATION["weight_type"]]}
            quantize_dynamic(str(exported), str(quantized), **settings)
    except Exception as error:  # the exporter and quantizer raise many kinds
        said = str(error).strip().splitlines()[-1:] or [""]  # the exporter's last line
        message = f"cannot make the int8 image model: {type(error).__name__}: {said[0]}"
        raise ModelError(message) from None
    finally:
        exported.unlink(missing_ok=True)
    return quantized


def export(model: MKT, path: Path) -> None:
    """The image tower as an fp32 ONNX model: ``pixels`` (N x 3 x H x W) to ``tokens``
    (N x (1 + patches) x D, the global token first), any N."""
    size = model.config.preprocess.image_size
    tower = _Tower(model).float().eval()
    # Not under no_grad: there nn.MultiheadAttention takes a fused kernel ONNX lacks.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on traced control flow
        torch.onnx.export(
            tower,
            (torch.zeros(2, 3, size, size),),
            str(path),
            input_names=["pixels"],
            output_names=["tokens"],
            dynamic_axes={"pixels": {0: "batch"}, "tokens": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )


class _Tower(torch.nn.Module):
    """``MKT.encode_images`` as one module with one output: global token, then patches."""

    def __init__(self, model: MKT) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        features = self.model.encode_images(pixels)
        return torch.cat([features.global_[:, None], features.patches], dim=1)


@contextlib.contextmanager
def _quiet_root_logger() -> Any:
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
