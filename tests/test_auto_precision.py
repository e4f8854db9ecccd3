"""`--precision auto` picks by evidence (issue 19): int8 on CPUs without native bf16 where
ONNX Runtime is installed, the faster of bf16 and int8 (measured once) where both exist,
fp32 only without ONNX Runtime; the run says which."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from typer.testing import CliRunner

from mkt_tag import auto_precision, checkpoints, onnx_tower
from mkt_tag.cli import app
from mkt_tag.errors import ModelError
from mkt_tag.onnx_tower import OnnxTower
from mkt_tag.tagging.tagger import Tagger
from tests.conftest import INT8_AVAILABLE

runner = CliRunner()
CPU = torch.device("cpu")


@pytest.fixture
def with_onnx(monkeypatch: pytest.MonkeyPatch) -> None:
    """ONNX Runtime as installed (the suite pretends it is not: conftest.auto_without_int8)."""
    monkeypatch.setattr(auto_precision, "int8_available", INT8_AVAILABLE)


def native_bf16(monkeypatch: pytest.MonkeyPatch, has: bool) -> None:
    monkeypatch.setattr(auto_precision, "cpu_has_bf16", lambda: has)


def test_an_asked_for_precision_is_kept(tiny_id, with_onnx):
    model = checkpoints.load(tiny_id)
    for precision in ("fp32", "bf16", "int8"):
        choice = auto_precision.choose(precision, CPU, model, None)
        assert (choice.value, choice.reason) == (precision, "asked for")


def test_without_bf16_auto_is_int8(tiny_id, with_onnx, monkeypatch, tmp_path):
    native_bf16(monkeypatch, False)
    tagger = Tagger.load(tiny_id, device="cpu", cache_dir=tmp_path)
    assert tagger.precision.value == "int8" and isinstance(tagger.image_tower, OnnxTower)
    assert tagger.precision.reason == "auto: this CPU has no native bf16"
    assert tagger.dtype == torch.float32  # the torch side: text tower and scoring


def test_without_onnx_runtime_auto_is_fp32_or_bf16(tiny_id, monkeypatch, tmp_path):
    monkeypatch.setattr(auto_precision, "int8_available", INT8_AVAILABLE)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # cannot be imported
    native_bf16(monkeypatch, False)
    tagger = Tagger.load(tiny_id, device="cpu", cache_dir=tmp_path)
    assert tagger.precision.value == "fp32" and tagger.dtype == torch.float32
    assert "pip install 'mkt-tag[onnx]'" in tagger.precision.reason
    native_bf16(monkeypatch, True)
    tagger = Tagger.load(tiny_id, device="cpu", cache_dir=tmp_path)
    assert tagger.precision.value == "bf16" and tagger.dtype == torch.bfloat16
    assert not (tmp_path / "onnx").exists()  # nothing measured, nothing exported


@pytest.mark.parametrize(("int8_speed", "chosen"), [(30.0, "int8"), (10.0, "bf16")])
def test_with_bf16_the_faster_is_measured_once(
    tiny_id, with_onnx, monkeypatch, tmp_path, int8_speed, chosen
):
    native_bf16(monkeypatch, True)
    measured: list[str] = []

    def speed(tower, model):
        kind = "int8" if isinstance(tower, OnnxTower) else "bf16"
        measured.append(kind)
        return int8_speed if kind == "int8" else 20.0

    monkeypatch.setattr(auto_precision, "_speed", speed)
    first = Tagger.load(tiny_id, device="cpu", cache_dir=tmp_path)
    assert first.precision.value == chosen and sorted(measured) == ["bf16", "int8"]
    assert "measured" in first.precision.reason
    assert first.dtype == (torch.float32 if chosen == "int8" else torch.bfloat16)
    speeds = json.loads((tmp_path / "onnx" / auto_precision.SPEEDS_FILE).read_text())
    assert list(speeds.values()) == [{"bf16": 20.0, "int8": int8_speed}]
    again = Tagger.load(tiny_id, device="cpu", cache_dir=tmp_path)
    assert again.precision == first.precision and len(measured) == 2  # from the cache
    torch.set_num_threads(1)  # speeds on one thread say nothing of two: measured again
    try:
        Tagger.load(tiny_id, device="cpu", cache_dir=tmp_path)
    finally:
        torch.set_num_threads(2)
    assert len(measured) == 4
    assert len(json.loads((tmp_path / "onnx" / auto_precision.SPEEDS_FILE).read_text())) == 2


def test_a_damaged_speeds_file_is_measured_again(tiny_id, with_onnx, tmp_path):
    model = checkpoints.load(tiny_id)
    path = tmp_path / "onnx" / auto_precision.SPEEDS_FILE
    path.parent.mkdir()
    path.write_text("{not json")
    speeds = auto_precision.measured_speeds(model, tmp_path)  # the real measurement
    assert speeds["bf16"] > 0 and speeds["int8"] > 0
    assert list(json.loads(path.read_text()).values()) == [speeds]
    assert auto_precision.measured_speeds(model, tmp_path) == speeds


def test_an_int8_model_that_cannot_be_made(tiny_id, with_onnx, monkeypatch, tmp_path):
    native_bf16(monkeypatch, False)

    def broken(*_):
        raise ModelError("cannot make the int8 image model: RuntimeError: unsupported")

    monkeypatch.setattr(onnx_tower, "_build", broken)
    tagger = Tagger.load(tiny_id, device="cpu", cache_dir=tmp_path)  # auto: falls back
    assert tagger.precision.value == "fp32" and tagger.dtype == torch.float32
    assert "int8 failed (cannot make the int8 image model" in tagger.precision.reason
    with pytest.raises(ModelError, match="cannot make the int8"):  # asked for: an error
        Tagger.load(tiny_id, device="cpu", precision="int8", cache_dir=tmp_path)
    native_bf16(monkeypatch, True)  # measuring needs the int8 model: bf16 then
    tagger = Tagger.load(tiny_id, device="cpu", cache_dir=tmp_path)
    assert tagger.precision.value == "bf16" and "cannot make" in tagger.precision.reason


def test_gpus_keep_their_path(tiny_id, with_onnx, monkeypatch):
    model = checkpoints.load(tiny_id)
    cuda = torch.device("cuda")
    for has, expected in ((True, "bf16"), (False, "fp16")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda has=has: has)
        assert auto_precision.choose("auto", cuda, model, None).value == expected
    assert auto_precision.choose("auto", torch.device("mps"), model, None).value == "fp32"


def test_eval_says_which_precision_ran(tiny_id, with_onnx, monkeypatch, tmp_path):
    from tests.cli.test_eval import write_dataset

    native_bf16(monkeypatch, False)
    data = write_dataset(tmp_path / "eval")
    out = tmp_path / "report"
    args = ["eval", "--data", str(data), "--labels", str(tmp_path / "eval" / "labels.txt")]
    done = runner.invoke(app, [*args, "-m", tiny_id, "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert "images in int8 (auto: this CPU has no native bf16)" in done.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["precision"] == "int8 (auto: this CPU has no native bf16)"
    done = runner.invoke(app, [*args, "-m", tiny_id, "--precision", "fp32"])
    assert "images in fp32 (asked for)" in done.stderr


def test_tag_says_which_precision_ran(photos, label_file, tiny_id, with_onnx, monkeypatch):
    native_bf16(monkeypatch, False)
    args = ["tag", str(photos), "-r", "-l", str(label_file), "-m", tiny_id]
    done = runner.invoke(app, [*args, "--verbose"])
    assert done.exit_code == 0, done.output
    assert "model on cpu in int8 (auto: this CPU has no native bf16)" in done.stderr
    assert done.stderr.splitlines()[-1].endswith("img/s in int8")  # the summary
    done = runner.invoke(app, [*args, "--precision", "fp32"])
    assert done.stderr.splitlines()[-1].endswith("img/s in fp32")
    assert "model on cpu" not in done.stderr  # without --verbose


def test_the_reason_is_printed_whole(photos, label_file, tiny_id, monkeypatch, tmp_path):
    """Brackets in a reason ("mkt-tag[onnx]") are text, not console markup to strip."""
    from tests.cli.test_eval import write_dataset

    monkeypatch.setattr(auto_precision, "int8_available", INT8_AVAILABLE)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    native_bf16(monkeypatch, False)
    done = runner.invoke(app, ["tag", str(photos), "-l", str(label_file), "-m", tiny_id, "-v"])
    assert "int8 needs ONNX Runtime: pip install 'mkt-tag[onnx]')" in done.stderr
    data = write_dataset(tmp_path / "eval")
    labels = str(tmp_path / "eval" / "labels.txt")
    done = runner.invoke(app, ["eval", "--data", str(data), "--labels", labels, "-m", tiny_id])
    assert "pip install 'mkt-tag[onnx]')" in done.stderr
