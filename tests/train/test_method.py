"""MKT's parts, each checked on its own (MKT_NOTES, He et al. 2023): what each stage trains,
the layer-wise learning rates, weight decay, the teacher, distillation, the ranking loss, the
learning-rate schedule, and which modules run in training mode."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from mkt_tag import checkpoints, vocab
from mkt_tag import datasets as data
from mkt_tag.datasets import LabelledImages
from mkt_tag.train.distributed import Distributed
from mkt_tag.train.labels import LabelTexts, plain_entries
from mkt_tag.train.losses import distillation_loss, global_mean, ranking_loss
from mkt_tag.train.settings import TrainConfig
from mkt_tag.train.stages import Stage1Net, Stage2Net, Teacher, stage1_parameter_groups
from mkt_tag.train.trainer import Trainer
from tests.conftest import TINY_CONFIG
from tests.train.conftest import small_run

TOP = "clip.visual.transformer.resblocks.1."  # the tiny backbone's last of 2 blocks
HEAD = {"clip.visual.ln_post.weight", "clip.visual.ln_post.bias", "clip.visual.proj"}


@pytest.fixture(scope="module")
def sets(photo_set) -> tuple[LabelledImages, LabelledImages]:
    labels = vocab.read_labels(photo_set["labels"]).labels
    return data.load(photo_set["train"], labels, keep_unlabelled=False), data.load(
        photo_set["val"], labels
    )


def make_trainer(photo_set, sets, out: Path, **changes: Any) -> Trainer:
    config = TrainConfig(**small_run(photo_set, out, **changes))  # type: ignore[arg-type]
    return Trainer(config, *sets)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: t.detach().clone() for name, t in module.state_dict().items()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> set[str]:
    after = module.state_dict()
    return {name for name, t in before.items() if not torch.equal(t, after[name])}


def backbone(tmp_path: Path, **vision: Any) -> Path:
    """The tiny backbone's config with other vision settings (more layers, patch dropout)."""
    arch = json.loads(TINY_CONFIG.read_text())
    arch["vision_cfg"].update(vision)
    path = tmp_path / "backbone.json"
    path.write_text(json.dumps(arch))
    return path


# --- what each stage trains ---------------------------------------------------------------


def test_stage_1_trains_the_top_blocks_ln_post_and_proj_only(photo_set, sets, tmp_path):
    trainer = make_trainer(
        photo_set, sets, tmp_path / "run", stage="1", trainable_blocks=1, lr=1e-2, max_steps=2
    )
    before = snapshot(trainer.model)
    expected = {name for name in before if name.startswith(TOP)} | HEAD
    assert len(expected) > len(HEAD)
    trainer.run()
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable == expected
    assert changed(before, trainer.model) == expected


def test_stage_2_trains_the_context_vectors_only(photo_set, sets, tmp_path):
    trainer = make_trainer(photo_set, sets, tmp_path / "run", stage="2", max_steps=2)
    before = snapshot(trainer.model)
    trainer.run()
    context = {"prompt.prefix", "prompt.suffix"}
    assert {n for n, p in trainer.model.named_parameters() if p.requires_grad} == context
    assert changed(before, trainer.model) == context


# --- learning rates and weight decay --------------------------------------------------------


def test_layer_wise_lr_factors_are_065_to_the_depth(tmp_path):
    """Block i of L trains with lr * 0.65 ** (L - i); ln_post and proj with lr itself."""
    model = checkpoints.load(str(backbone(tmp_path, layers=4)))
    config = TrainConfig(trainable_blocks=3)
    assert config.layer_decay == 0.65  # the paper's
    names = {id(p): n for n, p in model.named_parameters()}
    scales: dict[str, float] = {}
    for group in stage1_parameter_groups(model, config):
        for parameter in group["params"]:
            scales[names[id(parameter)]] = group["lr_scale"]
    blocks = {
        n.split(".")[4]: s for n, s in scales.items() if n.startswith("clip.visual.transformer.")
    }
    assert set(blocks) == {"1", "2", "3"}  # block 0 is frozen
    for block in ("1", "2", "3"):
        depth = 4 - int(block)
        assert {s for n, s in scales.items() if f".resblocks.{block}." in n} == {0.65**depth}
    assert [0.65 ** (4 - int(b)) for b in "321"] == pytest.approx([0.65, 0.4225, 0.274625])
    assert {scales[name] for name in HEAD} == {1.0}


def test_no_weight_decay_on_1d_tensors_and_biases(photo_set, sets, tmp_path):
    trainer = make_trainer(photo_set, sets, tmp_path / "run", stage="all", weight_decay=0.1)
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    decay = {}
    for group in trainer._stage1_plan().optimizer.param_groups:
        for parameter in group["params"]:
            decay[names[id(parameter)]] = (parameter.ndim, group["weight_decay"])
    blocks = {n for n in names.values() if n.startswith("clip.visual.transformer.resblocks.")}
    assert set(decay) == blocks | HEAD  # trainable_blocks 2: both blocks of the tiny backbone
    for name, (ndim, weight_decay) in decay.items():
        expected = 0.0 if ndim < 2 or name.endswith(".bias") else 0.1
        assert weight_decay == expected, name
    assert decay["clip.visual.proj"][1] == 0.1
    assert decay["clip.visual.ln_post.weight"][1] == 0.0
    assert decay[TOP + "attn.in_proj_bias"][1] == 0.0 and decay[TOP + "mlp.c_fc.weight"][1] == 0.1
    (group,) = trainer._stage2_plan().optimizer.param_groups  # the context vectors (2-D)
    assert [names[id(p)] for p in group["params"]] == ["prompt.prefix", "prompt.suffix"]
    assert group["weight_decay"] == 0.1


# --- the teacher and distillation ---------------------------------------------------------


def test_the_teacher_is_frozen_and_equal_to_the_starting_weights(photo_set, sets, tmp_path):
    run = tmp_path / "run"
    trainer = make_trainer(photo_set, sets, run, stage="1", trainable_blocks=1, max_steps=2)
    start = snapshot(trainer.model)
    assert trainer.teacher is not None
    modes: list[bool] = []
    trainer.teacher.register_forward_pre_hook(lambda module, _: modes.append(module.training))
    trainer.run()
    assert modes and not any(modes)  # eval mode in every step
    teacher = trainer.teacher
    assert not any(p.requires_grad for p in teacher.parameters())

    def starting(module_prefix: str, module: torch.nn.Module) -> None:
        for name, tensor in module.state_dict().items():
            assert torch.equal(tensor, start[module_prefix + name]), module_prefix + name

    starting(TOP, teacher.blocks[0])
    starting("clip.visual.ln_post.", teacher.ln_post)
    assert torch.equal(teacher.proj, start["clip.visual.proj"])
    assert not torch.equal(trainer.model.visual.proj, start["clip.visual.proj"])  # trained

    resumed = make_trainer(photo_set, sets, run, stage="1", trainable_blocks=1)
    assert resumed.teacher is not None  # built from the starting weights, not the resumed ones
    assert torch.equal(resumed.model.visual.proj, trainer.model.visual.proj)
    assert torch.equal(resumed.teacher.proj, start["clip.visual.proj"])
    starting(TOP, resumed.teacher.blocks[0])


def test_the_distillation_target_is_the_starting_models_embedding():
    model = checkpoints.load(str(TINY_CONFIG))
    torch.manual_seed(0)
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        target = model.encode_images(images).global_
        net = Stage1Net(model, Teacher(model.visual, 1), LabelTexts(plain_entries(["a", "b"])))
        model.visual.proj.mul_(2)  # the student moved away: its embedding is twice the target
        scores, student, teacher = net(images, torch.randn(2, 32))
    assert scores.shape == (3, 2)
    torch.testing.assert_close(teacher, target, rtol=0, atol=1e-6)
    torch.testing.assert_close(student, 2 * target, rtol=0, atol=1e-6)
    total, count = distillation_loss(student, teacher)
    assert int(count) == 3 * 32
    assert float(total / count) == pytest.approx(float(target.abs().mean()), rel=1e-5)


def test_distillation_loss_by_hand_and_its_weight():
    student = torch.tensor([[1.0, -2.0], [0.5, 4.0]])
    teacher = torch.tensor([[0.0, 1.0], [0.5, 2.0]])
    assert [float(v) for v in distillation_loss(student, teacher)] == [6.0, 4.0]  # |1|+|-3|+|2|
    total, count = distillation_loss(student, teacher, torch.tensor([True, False]))
    assert (float(total), int(count)) == (4.0, 2)
    parts = {
        "rank": (torch.tensor(3.0), torch.tensor(2)),
        "distill": (0.5 * torch.tensor(6.0), torch.tensor(4)),  # distill_weight 0.5
    }
    loss, means = global_mean(parts, Distributed())
    assert float(loss) == 1.5 + 0.75 and means == {"rank": 1.5, "distill": 0.75}


def test_the_distill_weight_scales_the_distillation_loss(photo_set, sets, tmp_path):
    parts = []
    for weight in (1.0, 0.25):
        trainer = make_trainer(
            photo_set, sets, tmp_path / f"w{weight}", stage="1", distill_weight=weight
        )
        plan = trainer._stage1_plan()
        batch = plan.dataset.collate([plan.dataset[i] for i in range(3)])
        with torch.no_grad():
            trainer.model.visual.proj.mul_(1.5)  # the student away from the teacher
            parts.append(plan.losses(batch))
    assert float(parts[0]["distill"][0]) > 0
    assert float(parts[1]["distill"][0]) == pytest.approx(0.25 * float(parts[0]["distill"][0]))
    assert torch.equal(parts[0]["rank"][0], parts[1]["rank"][0])


# --- the ranking loss ---------------------------------------------------------------------


def ranking_by_loops(scores: list[list[float]], targets: list[list[int]]) -> tuple[float, int]:
    """BiAM's ranking loss as MKT_NOTES state it, one pair at a time."""
    total, counted = 0.0, 0
    for row, target in zip(scores, targets, strict=True):
        positives = [s for s, t in zip(row, target, strict=True) if t == 1]
        negatives = [s for s, t in zip(row, target, strict=True) if t == -1]
        if not positives:
            continue  # an image without a positive is dropped
        counted += 1
        margins = [max(0.0, 1 + n - p) for p in positives for n in negatives]
        violating = sum(1 for m in margins if m > 0)
        total += sum(margins) / violating if violating else 0.0
    return total, counted


@pytest.mark.parametrize("seed", range(5))
def test_ranking_loss_against_a_double_loop(seed):
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randn(7, 6, generator=generator, dtype=torch.float64) * 0.7
    targets = torch.randint(-1, 2, (7, 6), generator=generator)
    targets[0] = -1  # no positive
    targets[1] = torch.tensor([1, 0, 1, 0, 0, 0])  # no negative
    targets[2] = torch.tensor([1, -1, 0, 0, 0, 0])
    targets[3:, 0] = 1  # every other row has a positive
    scores[2, :2] = torch.tensor([5.0, 0.0])  # no violating pair
    total, count = ranking_loss(scores, targets)
    expected, counted = ranking_by_loops(scores.tolist(), targets.tolist())
    assert int(count) == counted == 6
    assert float(total) == pytest.approx(expected, abs=1e-12)
    torch.autograd.gradcheck(lambda s: ranking_loss(s, targets)[0], scores.clone().requires_grad_())


# --- the learning-rate schedule ------------------------------------------------------------


def test_learning_rate_at_warm_up_peak_and_end(photo_set, sets, tmp_path):
    """8 images, batch 4: 2 steps an epoch; 3 epochs with 1 of warm-up: 6 steps, 2 warming."""
    trainer = make_trainer(
        photo_set, sets, tmp_path / "run", epochs=3, warmup_epochs=1, lr=0.1, min_lr=0.001
    )
    schedule = trainer._stage1_plan().schedule
    rates = [schedule(step) for step in range(7)]
    assert rates[:2] == [0.05, 0.1]  # linear warm-up to the peak at its end
    assert rates[2] == pytest.approx(0.1) and max(rates) == pytest.approx(0.1)  # cosine from it
    assert all(a > b for a, b in itertools.pairwise(rates[2:]))
    assert rates[4] == pytest.approx(0.001 + 0.099 * 0.5)  # half-way down the cosine
    assert rates[5] == pytest.approx(0.001 + 0.099 * 0.5 * (1 + math.cos(math.pi * 3 / 4)))
    assert rates[6] == pytest.approx(0.001)  # the end of the run: min_lr
    prompt = trainer._stage2_plan().schedule  # no warm-up: from prompt_lr to prompt_min_lr
    assert prompt(0) == pytest.approx(1e-3) and prompt(4) == pytest.approx(1e-8)


def test_a_one_epoch_run_has_no_warm_up_by_default(photo_set, sets, tmp_path):
    trainer = make_trainer(photo_set, sets, tmp_path / "run", epochs=1, warmup_epochs=None)
    schedule = trainer._stage1_plan().schedule
    assert schedule(0) == pytest.approx(1e-3) and schedule(2) == pytest.approx(1e-6)


# --- training mode --------------------------------------------------------------------------


def record_modes(net: torch.nn.Module, modules: dict[str, torch.nn.Module]) -> dict[str, set]:
    """Each module's ``training`` flag whenever it runs inside ``net``'s forward."""
    seen: dict[str, set] = {name: set() for name in modules}
    inside = []
    net.register_forward_pre_hook(lambda *_: inside.append(1))
    net.register_forward_hook(lambda *_: inside.clear())  # returns None: output unchanged
    for name, module in modules.items():

        def hook(module: torch.nn.Module, _: Any, name: str = name) -> None:
            if inside:
                seen[name].add(module.training)

        module.register_forward_pre_hook(hook)
    return seen


def test_training_steps_train_what_they_train_in_training_mode(photo_set, sets, tmp_path):
    """Stage 1: the top block and ln_post in training mode; the frozen block, the teacher
    (and in stage 2 the text tower) in eval mode, also after a validation."""
    trainer = make_trainer(
        photo_set, sets, tmp_path / "run", trainable_blocks=1, epochs=2, prompt_epochs=1
    )
    visual, text = trainer.model.visual, trainer.model.clip.transformer
    assert trainer.teacher is not None
    modules = {
        "top": visual.transformer.resblocks[1],
        "ln_post": visual.ln_post,
        "frozen": visual.transformer.resblocks[0],
        "teacher": trainer.teacher.blocks[0],
        "text": text.resblocks[0],
    }
    seen: dict[type, dict[str, set]] = {}

    def watch(net_class: type) -> Any:
        original = net_class.__init__

        def watched(self: torch.nn.Module, *args: Any) -> None:
            original(self, *args)
            seen[net_class] = record_modes(self, modules)

        return watched

    with pytest.MonkeyPatch.context() as patch:
        for net_class in (Stage1Net, Stage2Net):
            patch.setattr(net_class, "__init__", watch(net_class))
        trainer.run()
    assert seen[Stage1Net] == {
        "top": {True},
        "ln_post": {True},
        "frozen": {False},
        "teacher": {False},
        "text": set(),  # label embeddings are fixed in stage 1
    }
    assert seen[Stage2Net]["text"] == {False}


def test_patch_dropout_stays_off_in_stage_1(photo_set, sets, tmp_path):
    """Patch dropout would thin the tokens student and teacher share (changing the teacher's
    target): every step sees all 16 patches of the tiny backbone, as validation does."""
    model = backbone(tmp_path, patch_dropout=0.5)
    trainer = make_trainer(photo_set, sets, tmp_path / "run", model=str(model), stage="1")
    tokens: set[int] = set()
    visual = trainer.model.visual
    assert visual.patch_dropout.prob == 0.5
    visual.ln_post.register_forward_pre_hook(lambda _, x: tokens.add(x[0].shape[1]))
    trainer.run()
    assert tokens == {17}
