"""The whole pipeline learns: the synthetic world, a tiny pretrained CLIP, `train` and `eval`.

A reduced version of ``bench/synthetic/experiment.py`` (about a minute on 2 cores): eight
concepts (six seen), a CLIP pretrained contrastively for 500 steps, one short `mkt-tag train`
of both stages and two `mkt-tag eval` runs, all through the CLI. Training must lower its loss
and rank seen labels on held-out images better than the untrained backbone and far better than
chance.

Margins, measured with pretraining and training seeds 0-2 (seed 0 is the test's): held-out
seen mAP rose by 0.038-0.046 over the untrained backbone (scored with MKT's two streams,
``--streams both``, as the trained model is) and reached 0.39-0.44 against a
chance level of 0.20; the last epoch's ranking loss was 18-21% below the first's. The test
asks for half of the smallest gain, a 10% lower loss and 0.15 above chance. Gains are
small because the tiny backbone's features limit any classifier here (docs/benchmarks.md).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mkt_tag.cli import app

sys.path.insert(0, str(Path(__file__).parents[1] / "bench" / "synthetic"))

import pretrain
import world

# A minute of pretraining and training (`pytest -m "not slow"` skips it).
pytestmark = pytest.mark.slow

SPEC = world.Spec(
    seen=("circle", "square", "stripes", "checkerboard", "cross", "triangle"),
    unseen=("ring", "dots"),
    max_objects=2,
)
SIZES = {"train": 800, "val": 160, "test": 200}
ARCH = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "patch_size": 8, "layers": 3, "width": 32, "head_width": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
SEED = 0  # pretraining and training; margins checked with seeds 1-3 too (docs/benchmarks.md)
PRETRAIN = pretrain.PretrainConfig(images=3000, steps=500, batch_size=64, warmup=30, seed=SEED)


def seen_map(folder: Path) -> float:
    rows = json.loads((folder / "metrics.json").read_text())["rows"]
    return float(rows["seen"]["map"])


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("synthetic")
    files = world.write_world(root / "world", SIZES, SPEC)
    backbone = pretrain.pretrain(root / "backbone", PRETRAIN, ARCH, quiet=True, spec=SPEC)
    return {**files, "backbone": backbone, "root": root}


def test_training_learns_seen_labels(synthetic: dict[str, Path]) -> None:
    runner = CliRunner()
    root = synthetic["root"]
    backbone = f"local-dir:{synthetic['backbone']}"
    common = ["--device", "cpu", "--workers", "0"]
    trained = runner.invoke(
        app,
        [
            "train",
            "--data", str(synthetic["train"]),
            "--labels", str(synthetic["seen"]),
            "--val", str(synthetic["val"]),
            "--model", backbone,
            "--out", str(root / "run"),
            "--epochs", "10",
            "--warmup-epochs", "1",
            "--batch-size", "16",
            "--lr", "2e-3",
            "--trainable-blocks", "3",
            "--layer-decay", "1",
            "--no-augment",
            "--prompt-epochs", "2",
            "--seed", str(SEED),
            *common,
        ],
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    results = {}
    evaluations = (
        ("untrained", backbone, ["--streams", "both"]),
        ("trained", str(root / "run" / "best"), []),
    )
    for name, model, streams in evaluations:
        evaluated = runner.invoke(
            app,
            [
                "eval",
                "--data", str(synthetic["test"]),
                "--labels", str(synthetic["all"]),
                "--unseen", str(synthetic["unseen"]),
                "--model", model,
                "--out", str(root / name),
                "--precision", "fp32",
                *streams,
                *common,
            ],
        )  # fmt: skip
        assert evaluated.exit_code == 0, evaluated.output
        results[name] = seen_map(root / name)
    # Chance: a random ranking's AP is about the share of positives (2 objects at most of 8).
    rows = (synthetic["test"]).read_text().splitlines()[1:]
    seen = set(SPEC.seen)
    positives = sum(len([x for x in r.split(",")[1].split("|") if x in seen]) for r in rows)
    chance = positives / (len(rows) * len(SPEC.seen))
    assert results["trained"] > chance + 0.15, (results, chance)
    assert results["trained"] > results["untrained"] + 0.02, (results, chance)
    with (root / "run" / "metrics.csv").open(encoding="utf-8") as handle:
        losses = [float(r["rank_loss"]) for r in csv.DictReader(handle) if r["stage"] == "1"]
    assert losses[-1] < 0.9 * losses[0], losses


@pytest.mark.parametrize("name", sorted(world.WORLDS))
def test_worlds_draw_what_their_layout_says(name: str) -> None:
    spec = world.WORLDS[name]
    layout = spec.layout
    drawn = list(world.samples(world.SPLIT_SEEDS["test"], 60, spec))
    assert all(s.image.shape == (layout.size, layout.size, 3) for s in drawn)
    counts = {len(s.things) for s in drawn}
    assert counts <= set(layout.counts) and max(counts) == min(spec.max_objects, max(layout.counts))
    low, high = layout.object_sizes
    for sample in drawn:
        for thing in sample.things:
            x0, y0, x1, y1 = thing.box
            assert low <= x1 - x0 < high and x0 > 0 and x1 < layout.size and 0 < y0 < y1
    again = next(world.samples(world.SPLIT_SEEDS["test"], 1, spec))
    assert (again.image == drawn[0].image).all() and again.captions == drawn[0].captions
