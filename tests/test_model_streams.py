"""Which scores a model uses: a plain backbone its class token, a model trained with MKT the
streams it was trained with, and `--streams` overrides either (issue 15, item 6)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from mkt_tag import checkpoints, identity
from mkt_tag.cli import app
from mkt_tag.config import TRAINED_STREAMS, UNTRAINED_STREAMS, ModelConfig
from mkt_tag.model import mkt_scores
from mkt_tag.tagging.tagger import Tagger
from mkt_tag.train.settings import TrainConfig
from mkt_tag.train.stages import load_model

runner = CliRunner()


def _scores(model, streams=None):
    torch.manual_seed(3)
    pixels = torch.randn(4, 3, *[model.config.preprocess.image_size] * 2)
    with torch.no_grad():
        features = model.encode_images(pixels)
        labels = model.encode_labels(["dog", "cat", "tree", "car"]).float()
    return features, labels, model.score(features, labels)


def test_a_plain_backbone_scores_with_its_class_token(tiny_id):
    assert UNTRAINED_STREAMS == "global" and TRAINED_STREAMS == "both"
    assert identity.resolve(tiny_id).config.streams == UNTRAINED_STREAMS
    model = checkpoints.load(tiny_id)
    assert model.config.streams == UNTRAINED_STREAMS
    features, labels, scores = _scores(model)
    assert torch.allclose(scores.fused, F.normalize(scores.global_, dim=-1))
    both = mkt_scores(features, labels, model.config.top_k, "both").fused
    assert not torch.allclose(scores.fused, both)  # the choice changes the scores


def test_the_choice_is_part_of_the_fingerprint(tiny_id):
    plain = identity.resolve(tiny_id)
    fused = identity.resolve(tiny_id)
    fused.config.streams = "both"
    assert plain.scores != fused.scores


def test_tagger_streams_override(tiny_id):
    default = Tagger.load(tiny_id, device="cpu", precision="fp32")
    both = Tagger.load(tiny_id, device="cpu", precision="fp32", streams="both")
    assert default.model.config.streams == "global" and both.model.config.streams == "both"
    assert default.scores_fingerprint != both.scores_fingerprint
    with pytest.raises(ValueError, match="streams must be one of both, global, local"):
        Tagger.load(tiny_id, device="cpu", precision="fp32", streams="neither")


def test_training_from_a_backbone_fuses_both_streams(tiny_id, tmp_path):
    assert load_model(TrainConfig(model=tiny_id)).config.streams == "both"
    assert load_model(TrainConfig(model=tiny_id, streams="local")).config.streams == "local"
    # A checkpoint keeps what it was trained with, unless the run says otherwise.
    model = checkpoints.load(tiny_id)
    model.config.streams = "local"
    checkpoints.save(model, tmp_path / "ckpt")
    assert load_model(TrainConfig(model=str(tmp_path / "ckpt"))).config.streams == "local"
    assert checkpoints.load(tmp_path / "ckpt").config.streams == "local"
    ablation = TrainConfig(model=str(tmp_path / "ckpt"), streams="global")
    assert load_model(ablation).config.streams == "global"


def test_an_older_checkpoint_without_the_key_fuses_both():
    assert ModelConfig.from_dict({"backbone": "ViT-B-16:openai"}).streams == "both"


def test_tag_streams_option_makes_earlier_tags_stale(tiny_id, photos, label_file):
    def tag(*extra):
        return runner.invoke(
            app,
            ["tag", str(photos), "-l", str(label_file), "-m", tiny_id, "--sidecar", "json", *extra],
        )

    first = tag()
    assert first.exit_code == 0, first.output
    sidecar = photos / "a.jpg.json"
    before = json.loads(sidecar.read_text())
    again = tag()
    assert "(0 new, 0 stale, 5 current)" in again.stderr
    changed = tag("--streams", "both")
    assert changed.exit_code == 0, changed.output
    assert "(0 new, 5 stale, 0 current)" in changed.stderr
    after = json.loads(sidecar.read_text())
    assert after != before
    assert "(0 new, 0 stale, 5 current)" in tag("--streams", "both").stderr
    assert "(0 new, 5 stale, 0 current)" in tag("--streams", "global").stderr


def test_eval_reports_the_streams_it_used(tiny_id, tmp_path, photos):
    table = tmp_path / "data.csv"
    names = sorted(p.name for p in photos.iterdir() if p.is_file())
    rows = [f"{photos / name},{'cat' if i % 2 else 'dog'}" for i, name in enumerate(names)]
    table.write_text("path,labels\n" + "\n".join(rows) + "\n")
    labels = tmp_path / "labels.txt"
    labels.write_text("dog\ncat\ntree\n")
    maps = {}
    for streams in (None, "global", "both"):
        out = tmp_path / f"eval-{streams}"
        extra = [] if streams is None else ["--streams", streams]
        args = ["eval", "--data", str(table), "--labels", str(labels), "-m", tiny_id]
        result = runner.invoke(app, [*args, "--out", str(out), *extra])
        assert result.exit_code == 0, result.output
        maps[streams] = json.loads((out / "metrics.json").read_text())["rows"]["GZSL"]
    assert maps[None] == maps["global"]
    assert maps[None] != maps["both"]
