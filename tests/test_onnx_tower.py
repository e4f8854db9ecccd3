"""`--precision int8`: the image tower in ONNX Runtime with int8 weights (issue 19, part 1)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mkt_tag import checkpoints, onnx_tower
from mkt_tag.cli import app
from mkt_tag.devices import pick_dtype
from mkt_tag.errors import EXIT_ERROR, MktTagError
from mkt_tag.tagging.tagger import Tagger
from tests.conftest import TINY_CONFIG

runner = CliRunner()


def test_the_fp32_export_computes_what_torch_computes(tiny_id, tmp_path):
    import onnxruntime

    model = checkpoints.load(tiny_id).float().eval()
    path = tmp_path / "tower.onnx"
    onnx_tower.export(model, path)
    size = model.config.preprocess.image_size
    pixels = torch.randn(5, 3, size, size, generator=torch.Generator().manual_seed(0))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    tokens = session.run(None, {"pixels": pixels.numpy()})[0]  # 5 images: any batch size
    with torch.no_grad():
        features = model.encode_images(pixels)
    expected = torch.cat([features.global_[:, None], features.patches], dim=1).numpy()
    assert tokens.shape == expected.shape
    assert np.abs(tokens - expected).max() <= 1e-4


def test_int8_tags_and_evaluates_through_the_cli(photos, label_file, tiny_id, tmp_path):
    from tests.cli.test_eval import row_names, write_dataset

    results = tmp_path / "results.csv"
    tag = ["tag", str(photos), "-r", "-l", str(label_file), "-m", tiny_id, "-o", str(results)]
    done = runner.invoke(app, [*tag, "--precision", "int8"])
    assert done.exit_code == 0, done.output
    assert "tagged 6" in done.stderr and len(results.read_text().splitlines()) == 7
    data = write_dataset(tmp_path / "eval")
    evaluate = ["eval", "--data", str(data), "--labels", str(tmp_path / "eval" / "labels.txt")]
    done = runner.invoke(app, [*evaluate, "-m", tiny_id, "--precision", "int8"])
    assert done.exit_code == 0, done.output
    assert row_names(done.stdout) == ["GZSL", "seen"]


def test_the_int8_model_is_made_once_per_model(tiny_id, tmp_path, monkeypatch):
    built = []
    real_build = onnx_tower._build
    monkeypatch.setattr(onnx_tower, "_build", lambda *a: built.append(a) or real_build(*a))
    first = Tagger.load(tiny_id, device="cpu", precision="int8", cache_dir=tmp_path)
    again = Tagger.load(tiny_id, device="cpu", precision="int8", cache_dir=tmp_path)
    assert len(built) == 1 and first.image_tower.path == again.image_tower.path
    other = Tagger.load(str(TINY_CONFIG), device="cpu", precision="int8", cache_dir=tmp_path)
    assert len(built) == 2 and other.image_tower.path != first.image_tower.path
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == sorted(
        p.name for p in (first.image_tower.path, other.image_tower.path)
    )  # nothing else: the export's scratch folder is gone
    labels = first.embed_labels(["dog", "cat"])
    scores = first.score_arrays([np.zeros((32, 32, 3), np.uint8)], labels)
    assert scores.shape == (1, 2) and np.isfinite(scores).all()


def test_without_onnx_runtime_it_is_one_line(photos, label_file, tiny_id, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails
    done = runner.invoke(
        app, ["tag", str(photos), "-l", str(label_file), "-m", tiny_id, "--precision", "int8"]
    )
    assert done.exit_code == EXIT_ERROR and "Traceback" not in done.output
    assert done.stderr.strip() == f"error: {onnx_tower.ONNX_MISSING}"


def test_int8_is_for_cpus():
    assert pick_dtype("int8", torch.device("cpu")) == torch.float32  # torch's side: fp32
    with pytest.raises(MktTagError, match="int8 runs on the CPU"):
        pick_dtype("int8", torch.device("cuda"))


def test_a_call_runs_on_the_threads_torch_would_use(tiny_id, tmp_path):
    from mkt_tag.tagging.batches import torch_threads

    tagger = Tagger.load(tiny_id, device="cpu", precision="int8", cache_dir=tmp_path)
    labels = tagger.embed_labels(["dog", "cat"])
    pixels = [np.zeros((32, 32, 3), np.uint8)]
    for threads in (1, 2):
        with torch_threads(threads):
            tagger.score_arrays(pixels, labels)
    sessions = tagger.image_tower._sessions
    assert sorted(sessions) == [1, 2]
    assert [s.get_session_options().intra_op_num_threads for s in sessions.values()] == [1, 2]
