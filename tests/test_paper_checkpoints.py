"""Importing the paper's checkpoints: equivalence with the reference's forward pass, and errors.

The reference computation is written here from MKT_NOTES / the reference code, with plain torch
ops on the reference's own state dicts (OpenAI CLIP names) in float64: nothing of mkt-tag's
model, prompts or open_clip is used for it (only the BPE tokenizer, shared by both).
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from mkt_tag import checkpoints
from mkt_tag import paper_checkpoints as reference
from mkt_tag.cli import app
from mkt_tag.config import IMAGENET_MEAN, IMAGENET_STD
from mkt_tag.errors import EXIT_ERROR, EXIT_USAGE, CheckpointError, ModelError, OutputError
from mkt_tag.prompts import PromptContext
from tests.conftest import make_photo

# A tiny CLIP with OpenAI's layout: 64 px images in 8 px patches (64 patches, so top-16 selects),
# QuickGELU like OpenAI's weights, the real BPE vocabulary and 77-token context.
ARCH = {
    "embed_dim": 32,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
VISION_HEADS = 2  # width / head_width
TEXT_HEADS = 2
TOP_K = 16
SOT, EOT = 49406, 49407
TEMPLATE_IDS = [SOT, 997, 533, 320, 530, 518, 3562, EOT]  # "there is a" ... "in the scene"
# Label words include template words ("the", "a", "scene"): the reference takes label rows
# from CLIP's own table even where the template's tuned rows have the same token.
LABELS = ["dog", "traffic light", "sunset over the sea", "a scene", "t-shirt"]
TOLERANCE = 1e-5
MLP_KEYS = ["projection.fc1.weight", "projection.fc1.bias", "projection.fc2.weight"]
MLP_KEYS += ["projection.fc2.bias"]

runner = CliRunner()


# ---------------------------------------------------------------- reference-layout weights


def _blocks(prefix: str, width: int, layers: int, randn) -> dict[str, torch.Tensor]:
    state = {}
    for i in range(layers):
        name = f"{prefix}transformer.resblocks.{i}"
        state |= {
            f"{name}.ln_1.weight": 1 + randn(width, std=0.1),
            f"{name}.ln_1.bias": randn(width, std=0.1),
            f"{name}.attn.in_proj_weight": randn(3 * width, width, std=width**-0.5),
            f"{name}.attn.in_proj_bias": randn(3 * width, std=0.05),
            f"{name}.attn.out_proj.weight": randn(width, width, std=width**-0.5),
            f"{name}.attn.out_proj.bias": randn(width, std=0.05),
            f"{name}.ln_2.weight": 1 + randn(width, std=0.1),
            f"{name}.ln_2.bias": randn(width, std=0.1),
            f"{name}.mlp.c_fc.weight": randn(4 * width, width, std=width**-0.5),
            f"{name}.mlp.c_fc.bias": randn(4 * width, std=0.05),
            f"{name}.mlp.c_proj.weight": randn(width, 4 * width, std=(4 * width) ** -0.5),
            f"{name}.mlp.c_proj.bias": randn(width, std=0.05),
        }
    return state


def openai_clip_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A CLIP state dict in OpenAI's names, fp16-representable like OpenAI's released weights."""
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape: int, std: float) -> torch.Tensor:
        return (torch.randn(shape, generator=generator) * std).half().float()

    vision, text, embed = ARCH["vision_cfg"], ARCH["text_cfg"], ARCH["embed_dim"]
    width, patch = vision["width"], vision["patch_size"]
    positions = (vision["image_size"] // patch) ** 2 + 1
    text_width = text["width"]
    return {
        "visual.class_embedding": randn(width, std=width**-0.5),
        "visual.positional_embedding": randn(positions, width, std=width**-0.5),
        "visual.proj": randn(width, embed, std=0.5 * width**-0.5),
        "visual.conv1.weight": randn(width, 3, patch, patch, std=(3 * patch * patch) ** -0.5),
        "visual.ln_pre.weight": 1 + randn(width, std=0.1),
        "visual.ln_pre.bias": randn(width, std=0.1),
        **_blocks("visual.", width, vision["layers"], randn),
        "visual.ln_post.weight": 1 + randn(width, std=0.1),
        "visual.ln_post.bias": randn(width, std=0.1),
        "token_embedding.weight": randn(text["vocab_size"], text_width, std=0.1),
        "positional_embedding": randn(text["context_length"], text_width, std=0.1),
        **_blocks("", text_width, text["layers"], randn),
        "ln_final.weight": 1 + randn(text_width, std=0.1),
        "ln_final.bias": randn(text_width, std=0.1),
        "text_projection": randn(text_width, embed, std=0.5 * text_width**-0.5),
        "logit_scale": torch.tensor(math.log(1 / 0.07)),
    }


def write_backbone(folder: Path, clip_state: dict[str, torch.Tensor], arch: dict) -> str:
    """open_clip's local-dir layout; open_clip keeps OpenAI's names, so the state goes as is."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in clip_state.items()},
        str(folder / "open_clip_model.safetensors"),
    )
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": arch}))
    return f"local-dir:{folder}"


def stage1_state(clip_state: dict[str, torch.Tensor], seed: int = 1) -> dict[str, torch.Tensor]:
    """``CLIPVIT.state_dict()`` after stage 1: the last block, ln_post and proj trained."""
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = OrderedDict()
    for key, value in clip_state.items():
        if key.startswith("visual."):
            name = key[len("visual.") :]
            if name.startswith(("transformer.resblocks.1.", "ln_post.", "proj")):
                value = value + torch.randn(value.shape, generator=generator) * 0.05
            state["projection_dist" if name == "proj" else name] = value.clone()
    width, embed = ARCH["vision_cfg"]["width"], 48  # the unused MLP: 768 -> 512 -> 512 really
    state["projection.fc1.weight"] = torch.randn(embed, width, generator=generator)
    state["projection.fc1.bias"] = torch.randn(embed, generator=generator)
    state["projection.fc2.weight"] = torch.randn(embed, embed, generator=generator)
    state["projection.fc2.bias"] = torch.randn(embed, generator=generator)
    return state


def stage2_state(clip_state: dict[str, torch.Tensor], seed: int = 2) -> dict[str, torch.Tensor]:
    """A DDP ``PromptLearner`` state dict after stage 2: template rows tuned, the whole table
    shrunk by AdamW's weight decay, the rest of the text tower frozen."""
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = OrderedDict()
    for key, value in clip_state.items():
        if key.startswith("visual.") or key == "logit_scale":
            continue
        if key == "token_embedding.weight":
            tuned = value * 0.97
            tuned[TEMPLATE_IDS] = (
                value[TEMPLATE_IDS]
                + torch.randn(len(TEMPLATE_IDS), value.shape[1], generator=generator) * 0.1
            )
            value = tuned
        state[f"module.{key}"] = value.clone()
    return state


def save(state: dict[str, torch.Tensor], path: Path) -> Path:
    torch.save(OrderedDict(state), path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The backbone, both reference files, and the checkpoint imported from them."""
    root = tmp_path_factory.mktemp("reference")
    clip_state = openai_clip_state()
    backbone = write_backbone(root / "backbone", clip_state, ARCH)
    stage1 = stage1_state(clip_state)
    stage2 = stage2_state(clip_state)
    paths = SimpleNamespace(
        stage1=save(stage1, root / "stage1.pth"), stage2=save(stage2, root / "stage2.pth")
    )
    imported = reference.import_reference(
        paths.stage1, root / "ckpt", paths.stage2, backbone=backbone, cache_dir=root / "cache"
    )
    return SimpleNamespace(
        root=root,
        backbone=backbone,
        clip_state=clip_state,
        stage1=stage1,
        stage2=stage2,
        paths=paths,
        report=imported,
        checkpoint=root / "ckpt",
        cache=root / "cache",
    )


# ---------------------------------------------------- the reference forward pass, from the notes


def _layer_norm(x: torch.Tensor, sd: dict, name: str) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-5) * sd[f"{name}.weight"] + sd[f"{name}.bias"]


def _attention(x: torch.Tensor, sd: dict, name: str, heads: int, mask=None) -> torch.Tensor:
    batch, length, width = x.shape
    q, k, v = (x @ sd[f"{name}.in_proj_weight"].T + sd[f"{name}.in_proj_bias"]).split(width, -1)

    def by_head(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(batch, length, heads, width // heads).transpose(1, 2)

    weights = by_head(q) @ by_head(k).transpose(-1, -2) / math.sqrt(width // heads)
    if mask is not None:
        weights = weights + mask
    mixed = (weights.softmax(-1) @ by_head(v)).transpose(1, 2).reshape(batch, length, width)
    return mixed @ sd[f"{name}.out_proj.weight"].T + sd[f"{name}.out_proj.bias"]


def _transformer(x: torch.Tensor, sd: dict, heads: int, mask=None) -> torch.Tensor:
    layers = len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")})
    for i in range(layers):
        name = f"transformer.resblocks.{i}"
        x = x + _attention(_layer_norm(x, sd, f"{name}.ln_1"), sd, f"{name}.attn", heads, mask)
        hidden = _layer_norm(x, sd, f"{name}.ln_2") @ sd[f"{name}.mlp.c_fc.weight"].T
        hidden = hidden + sd[f"{name}.mlp.c_fc.bias"]
        hidden = hidden * torch.sigmoid(1.702 * hidden)  # QuickGELU
        x = x + hidden @ sd[f"{name}.mlp.c_proj.weight"].T + sd[f"{name}.mlp.c_proj.bias"]
    return x


def reference_image_features(stage1: dict, images: torch.Tensor):
    """CLIPVIT.encode_img: all tokens to ln_post, then @ projection_dist (global, patches)."""
    sd = {k: v.double() for k, v in stage1.items()}
    patch = sd["conv1.weight"].shape[-1]
    x = torch.nn.functional.conv2d(images.double(), sd["conv1.weight"], stride=patch)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = sd["class_embedding"].expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + sd["positional_embedding"]
    x = _transformer(_layer_norm(x, sd, "ln_pre"), sd, VISION_HEADS)
    x = _layer_norm(x, sd, "ln_post")
    return x[:, 0] @ sd["projection_dist"], x[:, 1:] @ sd["projection_dist"]


def reference_label_embeddings(stage2: dict, clip_table: torch.Tensor, labels) -> torch.Tensor:
    """PromptLearner as the reference evaluates it: the full 77-token prompt, label words from
    CLIP's own table (init_label_emb runs before stage 2 is loaded), the rest from stage 2's."""
    from open_clip.tokenizer import SimpleTokenizer

    tokenizer = SimpleTokenizer()
    sd = {k.removeprefix("module."): v.double() for k, v in stage2.items()}
    context = sd["positional_embedding"].shape[0]
    mask = torch.full((context, context), float("-inf"), dtype=torch.float64).triu(1)
    out = []
    for label in labels:
        ids = [SOT, *tokenizer.encode(f"There is a {label} in the scene"), EOT]
        tokens = torch.tensor(ids + [0] * (context - len(ids)))
        x = sd["token_embedding.weight"][tokens].clone()
        n_words = len(tokenizer.encode(label))
        x[4 : 4 + n_words] = clip_table.double()[tokens[4 : 4 + n_words]]
        x = _transformer((x + sd["positional_embedding"])[None], sd, TEXT_HEADS, mask)
        x = _layer_norm(x[0], sd, "ln_final")
        out.append(x[tokens.argmax()] @ sd["text_projection"])
    return torch.stack(out)


def reference_scores(global_: torch.Tensor, patches: torch.Tensor, labels: torch.Tensor):
    """(s_g, s_l, fused) as in the notes: top-k patch mean, L2 across labels, average."""
    s_g = global_ @ labels.T
    s_l = (patches @ labels.T).topk(TOP_K, dim=1).values.mean(dim=1)
    fused = (s_l / s_l.norm(dim=-1, keepdim=True) + s_g / s_g.norm(dim=-1, keepdim=True)) / 2
    return s_g, s_l, fused


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a.double() - b.double()).abs().max().item()


# ------------------------------------------------------------------------------- equivalence


def test_scores_match_the_reference_forward_pass(files):
    model = checkpoints.load(files.checkpoint, files.cache)
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        embeddings = model.encode_labels(LABELS)
        scores = model.score(model.encode_images(images), embeddings)
        fused = model(images, embeddings)

    expected_embeddings = reference_label_embeddings(
        files.stage2, files.clip_state["token_embedding.weight"], LABELS
    )
    global_, patches = reference_image_features(files.stage1, images)
    s_g, s_l, expected_fused = reference_scores(global_, patches, expected_embeddings)
    assert expected_embeddings.abs().max() > 0.5 and s_g.abs().max() > 0.5  # not vanishing
    assert _max_diff(embeddings, expected_embeddings) <= TOLERANCE
    assert _max_diff(scores.global_, s_g) <= TOLERANCE
    assert _max_diff(scores.local, s_l) <= TOLERANCE
    assert _max_diff(scores.fused, expected_fused) <= TOLERANCE
    assert _max_diff(fused, expected_fused) <= TOLERANCE
    # The top-k selection matters: averaging every patch would give other local scores.
    assert _max_diff(scores.local, (patches @ expected_embeddings.T).mean(dim=1)) > 0.1


def test_tagger_matches_the_reference_eval_transform(files):
    """Photo to fused scores, preprocessing included, against torchvision's eval transform."""
    from torchvision import transforms

    from mkt_tag.images import prepare
    from mkt_tag.tagging.tagger import Tagger

    photo = Image.fromarray(np.random.default_rng(3).integers(0, 256, (90, 120, 3), dtype=np.uint8))
    resize_crop = transforms.Compose(
        [
            transforms.Resize(73, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(64),
        ]
    )
    to_input = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )
    tagger = Tagger.load(files.checkpoint, device="cpu", precision="fp32", cache_dir=files.cache)
    assert np.array_equal(prepare(photo, tagger.preprocess), np.asarray(resize_crop(photo)))
    scores = tagger.scores([photo], LABELS)
    embeddings = reference_label_embeddings(
        files.stage2, files.clip_state["token_embedding.weight"], LABELS
    )
    features = reference_image_features(files.stage1, to_input(resize_crop(photo))[None])
    expected = reference_scores(*features, embeddings)[2]
    # Tagger rounds image features to float16 before scoring (cached and fresh features then
    # give the same scores): ~1e-4 here. The model itself matches to 1e-5 (see above); CLIP's
    # mean/std instead of ImageNet's would be ~2e-2 off.
    assert _max_diff(torch.from_numpy(scores), expected) <= 5e-4


def test_checkpoint_holds_the_reference_settings_and_only_what_changed(files):
    from safetensors.torch import load_file

    config = json.loads((files.checkpoint / "mkt_config.json").read_text())
    assert config["backbone"] == files.backbone
    assert config["weights"] == "delta" and config["prompt_context"] is True
    assert config["top_k"] == 16 and config["template"] == "There is a {label} in the scene"
    assert config["arch"]["quick_gelu"] is True
    assert config["preprocess"] == {
        "image_size": 64,
        "resize": 73,  # 64 / 0.875, as the reference's 224 -> 256
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "interpolation": "bicubic",
    }
    stored = set(load_file(str(files.checkpoint / "model.safetensors")))
    trained = {k for k in files.clip_state if k.startswith("visual.transformer.resblocks.1.")}
    trained |= {"visual.ln_post.weight", "visual.ln_post.bias", "visual.proj"}
    assert stored == {f"clip.{k}" for k in trained} | {"prompt.prefix", "prompt.suffix"}
    assert sorted(stored) == files.report.stored
    notes = "\n".join(files.report.notes)
    assert "projection.fc1.weight" in notes and "weight decay" in notes and "resize 73" in notes
    assert "image tower: 15 of 32 tensors differ" in notes and "resblocks.1.*" in notes


def test_reference_preprocess_for_the_real_model():
    pre = reference.reference_preprocess(224)
    assert (pre.image_size, pre.resize, pre.interpolation) == (224, 256, "bicubic")
    assert (pre.mean, pre.std) == (IMAGENET_MEAN, IMAGENET_STD)


def test_template_token_ids(files):
    model = checkpoints.load(files.backbone)
    assert reference.template_token_ids(model) == (TEMPLATE_IDS[:4], TEMPLATE_IDS[4:])


def test_untuned_stage2_gives_the_template_context(files):
    untuned = stage2_state(files.clip_state)
    untuned["module.token_embedding.weight"] = files.clip_state["token_embedding.weight"]
    conversion = reference.convert(files.stage1, untuned, files.backbone, files.cache)
    model = conversion.model
    default = PromptContext.from_template(model.clip, model.tokenizer, model.config.template)
    assert torch.equal(model.prompt.prefix, default.prefix)
    assert torch.equal(model.prompt.suffix, default.suffix)
    assert not any("weight decay" in note for note in conversion.notes)
    assert getattr(model, "fingerprint", "") == ""  # not the plain backbone's any more


def test_stage1_only_uses_the_plain_template(files, tmp_path):
    report = reference.import_reference(
        files.paths.stage1, tmp_path / "s1", backbone=files.backbone, cache_dir=files.cache
    )
    assert report.config.prompt_context is False
    assert not any(name.startswith("prompt.") for name in report.stored)
    assert any("no stage 2" in note for note in report.notes)
    model = checkpoints.load(tmp_path / "s1", files.cache)
    frozen_text = {k: v for k, v in files.clip_state.items() if not k.startswith("visual.")}
    expected = reference_label_embeddings(
        frozen_text, files.clip_state["token_embedding.weight"], LABELS
    )
    with torch.no_grad():
        assert _max_diff(model.encode_labels(LABELS), expected) <= TOLERANCE


def test_stage2_without_ddp_prefix_is_accepted(files):
    bare = {k.removeprefix("module."): v for k, v in files.stage2.items()}
    with_prefix = reference.convert(files.stage1, files.stage2, files.backbone, files.cache)
    without = reference.convert(files.stage1, bare, files.backbone, files.cache)
    assert torch.equal(with_prefix.model.prompt.prefix, without.model.prompt.prefix)
    assert torch.equal(with_prefix.model.prompt.suffix, without.model.prompt.suffix)
    mixed = dict(bare)
    mixed["module.ln_final.bias"] = mixed.pop("ln_final.bias")
    with pytest.raises(CheckpointError, match="mixes tensor names with and without"):
        reference.convert(files.stage1, mixed, files.backbone, files.cache)


def test_a_changed_text_tower_is_imported_with_a_note(files):
    changed = dict(files.stage2)
    changed["module.ln_final.weight"] = changed["module.ln_final.weight"] * 1.5
    conversion = reference.convert(files.stage1, changed, files.backbone, files.cache)
    assert "clip.ln_final.weight" in conversion.stored
    assert any("text tower differs" in note for note in conversion.notes)
    expected = reference_label_embeddings(
        changed, files.clip_state["token_embedding.weight"], LABELS
    )
    with torch.no_grad():
        assert _max_diff(conversion.model.encode_labels(LABELS), expected) <= TOLERANCE


# ------------------------------------------------------------------------------------ errors


class Payload:
    """Unpickling this would run code: it must never happen."""

    ran = False

    def __setstate__(self, state: dict) -> None:
        Payload.ran = True


def test_unsafe_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(2), "payload": Payload()}, path)
    with pytest.raises(CheckpointError, match=r"refused: .*Payload.*arbitrary code") as error:
        reference.read_state_dict(path, "stage-1")
    assert "\n" not in str(error.value)
    assert Payload.ran is False


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a readable PyTorch checkpoint"),
        (b"definitely not a checkpoint" * 10, "not a readable PyTorch checkpoint"),
    ],
)
def test_damaged_files(tmp_path, content, message):
    path = tmp_path / "damaged.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        reference.read_state_dict(path)


def test_not_a_state_dict(tmp_path):
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="expected a state_dict"):
        reference.read_state_dict(tmp_path / "list.pth")
    torch.save({"epoch": 3, "conv1.weight": torch.zeros(1)}, tmp_path / "mixed.pth")
    with pytest.raises(CheckpointError, match="epoch: not tensors"):
        reference.read_state_dict(tmp_path / "mixed.pth")
    with pytest.raises(CheckpointError, match="file not found"):
        reference.read_state_dict(tmp_path / "missing.pth")


def _broken(stage1: dict, change) -> dict:
    state = dict(stage1)
    change(state)
    return state


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.pop("ln_post.bias"), "missing ln_post.bias"),
        (lambda s: s.pop("projection_dist"), "missing projection_dist"),
        (lambda s: s.update(extra=torch.zeros(1)), "unexpected extra"),
        (lambda s: s.update(proj=s.pop("projection_dist")), "missing projection_dist"),
        (
            lambda s: s.update(projection_dist=torch.zeros(64, 16)),
            r"projection_dist has shape \(64, 16\), expected \(64, 32\)",
        ),
        (
            lambda s: s.update({"transformer.resblocks.2.ln_1.weight": torch.zeros(64)}),
            "unexpected transformer.resblocks.2.ln_1.weight",
        ),
        (
            lambda s: s.update({"ln_pre.weight": torch.ones(64, dtype=torch.long)}),
            "ln_pre.weight is torch.int64, expected floating point",
        ),
        (
            lambda s: s.update({"ln_pre.weight": torch.full((64,), float("nan"))}),
            "ln_pre.weight contains NaN",
        ),
    ],
)
def test_stage1_layout_is_checked(files, change, message):
    with pytest.raises(CheckpointError, match=message):
        reference.convert(_broken(files.stage1, change), None, files.backbone, files.cache)


def test_unused_mlp_is_optional(files):
    without = {k: v for k, v in files.stage1.items() if not k.startswith("projection.")}
    conversion = reference.convert(without, None, files.backbone, files.cache)
    assert not any("dropped" in note for note in conversion.notes)


def test_stage2_layout_is_checked(files):
    missing = {k: v for k, v in files.stage2.items() if k != "module.ln_final.bias"}
    with pytest.raises(CheckpointError, match=r"stage-2 checkpoint .*: missing ln_final\.bias"):
        reference.convert(files.stage1, missing, files.backbone, files.cache)
    wrong = dict(files.stage2)
    wrong["module.token_embedding.weight"] = torch.zeros(49408, 16)
    with pytest.raises(CheckpointError, match=r"token_embedding.weight has shape \(49408, 16\)"):
        reference.convert(files.stage1, wrong, files.backbone, files.cache)
    extra = dict(files.stage2) | {"module.logit_scale": torch.zeros(())}
    with pytest.raises(CheckpointError, match="unexpected logit_scale"):
        reference.convert(files.stage1, extra, files.backbone, files.cache)


def test_swapped_files_are_named(files):
    with pytest.raises(CheckpointError, match=r"stage-2 .* not stage 1: swap"):
        reference.convert(files.stage2, None, files.backbone, files.cache)
    with pytest.raises(CheckpointError, match=r"stage-1 .* not stage 2: swap"):
        reference.convert(files.stage1, files.stage1, files.backbone, files.cache)


def test_gelu_backbone_is_refused(files, tmp_path):
    gelu = write_backbone(tmp_path / "gelu", files.clip_state, ARCH | {"quick_gelu": False})
    with pytest.raises(ModelError, match="need QuickGELU"):
        reference.convert(files.stage1, None, gelu, files.cache)


def test_existing_folder_that_is_not_a_checkpoint_is_left_alone(files, tmp_path):
    precious = tmp_path / "photos"
    make_photo(precious / "a.jpg")
    with pytest.raises(OutputError, match="not an mkt-tag checkpoint"):
        reference.import_reference(files.paths.stage1, precious, backbone=files.backbone)
    assert [p.name for p in precious.iterdir()] == ["a.jpg"]


# ------------------------------------------------------------------------------------- CLI


def _import(*args: str | Path):
    return runner.invoke(app, ["import-reference", *map(str, args)])


def test_cli_import_then_tag(files, tmp_path, label_file):
    out = tmp_path / "mkt-nus"
    result = _import(
        "--stage1",
        files.paths.stage1,
        "--stage2",
        files.paths.stage2,
        "--out",
        out,
        "--labels",
        label_file,
        "--backbone",
        files.backbone,
    )
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.stdout and "5 labels in labels.txt" in result.stdout
    assert "note: dropped projection.fc1.weight" in result.stderr
    assert (out / "labels.txt").read_bytes() == label_file.read_bytes()
    photo = make_photo(tmp_path / "photo.png", size=(80, 70))
    tagged = runner.invoke(
        app, ["tag", str(photo), "--model", str(out), "--labels", str(out / "labels.txt")]
    )
    assert tagged.exit_code == 0, tagged.output
    assert tagged.stdout.startswith(f"{photo}\t") and "traffic light" in tagged.stdout


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda f, t: ["--stage1", t / "nope.pth"], "nope.pth: file not found"),
        (lambda f, t: ["--stage1", f.paths.stage2], "swap the two files"),
        (lambda f, t: ["--stage1", f.paths.stage1, "--labels", t / "no.txt"], "no.txt: file"),
        (lambda f, t: ["--stage1", f.paths.stage1, "--stage2", t / "evil.pth"], "refused"),
        (lambda f, t: ["--stage1", f.paths.stage1, "--out", t], "not an mkt-tag checkpoint"),
    ],
)
def test_cli_errors_are_one_line(files, tmp_path, make_args, message):
    torch.save({"payload": Payload()}, tmp_path / "evil.pth")
    args = make_args(files, tmp_path)
    if "--out" not in args:
        args += ["--out", tmp_path / "out"]
    result = _import(*args, "--backbone", files.backbone)
    assert result.exit_code == EXIT_ERROR, result.output
    assert message in result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


def test_cli_usage_errors(tmp_path):
    result = _import("--out", tmp_path / "out")
    assert result.exit_code == EXIT_USAGE and "--stage1" in result.output
    help_text = _import("--help")
    assert help_text.exit_code == 0 and "Example" in help_text.stdout


def test_cli_backbone_not_cached(files, tmp_path):
    # The default backbone, ViT-B-16:openai, is not in the test's empty cache and the hub is off.
    result = _import("--stage1", files.paths.stage1, "--out", tmp_path / "out")
    assert result.exit_code == EXIT_ERROR
    assert "not in the cache" in result.stderr and "mkt-tag models download" in result.stderr
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()
