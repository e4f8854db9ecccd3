from __future__ import annotations

import open_clip
import pytest
import torch

from mkt_tag import checkpoints
from mkt_tag.errors import LabelFileError, ModelError
from mkt_tag.model import ImageFeatures, build_clip, fuse, local_scores, mkt_scores
from tests.conftest import DATA, TINY_CONFIG, fill_deterministic


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return checkpoints.load(str(TINY_CONFIG))


def test_fusion_matches_hand_computation():
    global_scores = torch.tensor([[3.0, 4.0]])
    local = torch.tensor([[1.0, 0.0]])
    # ||(3,4)|| = 5 -> (0.6, 0.8); ||(1,0)|| = 1 -> (1, 0); mean -> (0.8, 0.4)
    assert torch.allclose(fuse(global_scores, local), torch.tensor([[0.8, 0.4]]))


def test_one_stream_alone_is_its_normalised_scores():
    global_scores = torch.tensor([[3.0, 4.0]])
    local = torch.tensor([[1.0, 0.0]])
    assert torch.allclose(fuse(global_scores, local, "global"), torch.tensor([[0.6, 0.8]]))
    assert torch.allclose(fuse(global_scores, local, "local"), torch.tensor([[1.0, 0.0]]))
    with pytest.raises(ValueError, match="streams"):
        fuse(global_scores, local, "neither")


def test_local_stream_is_mean_of_top_k_patch_scores():
    patches = torch.tensor([[[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [0.0, 5.0]]])  # 1 x 4 x 2
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # label 0 reads dim 0, label 1 dim 1
    # label 0 patch scores 1,2,3,0 -> top-2 mean 2.5; label 1: 0,0,0,5 -> top-2 mean 2.5
    assert torch.allclose(local_scores(patches, labels, 2), torch.tensor([[2.5, 2.5]]))
    assert torch.allclose(local_scores(patches, labels, 1), torch.tensor([[3.0, 5.0]]))
    # k larger than the patch count averages all patches
    assert torch.allclose(local_scores(patches, labels, 99), torch.tensor([[1.5, 1.25]]))


def test_local_stream_blocks_give_same_result(monkeypatch):
    torch.manual_seed(1)
    patches, labels = torch.randn(3, 10, 8), torch.randn(50, 8)
    whole = local_scores(patches, labels, 4)
    monkeypatch.setattr("mkt_tag.model._SCORE_BLOCK", 30 * 7)  # blocks of 7 labels
    assert torch.allclose(local_scores(patches, labels, 4), whole)


def test_mkt_scores_combine_streams():
    torch.manual_seed(2)
    feats = ImageFeatures(torch.randn(2, 8), torch.randn(2, 5, 8))
    labels = torch.randn(4, 8)
    scores = mkt_scores(feats, labels, top_k=3)
    assert torch.allclose(scores.global_, feats.global_ @ labels.T)
    expected_local = (feats.patches @ labels.T).topk(3, dim=1).values.mean(1)
    assert torch.allclose(scores.local, expected_local)
    g = scores.global_ / scores.global_.norm(dim=1, keepdim=True)
    lo = expected_local / expected_local.norm(dim=1, keepdim=True)
    assert torch.allclose(scores.fused, (g + lo) / 2)


def test_image_features_match_open_clip(tiny):
    images = torch.randn(2, 3, 32, 32)
    features = tiny.encode_images(images)
    assert features.patches.shape == (2, 16, 32)
    with torch.no_grad():
        reference = tiny.clip.encode_image(images)
    assert torch.allclose(features.global_, reference, atol=1e-5)


def test_fast_text_path_equals_encode_text(tiny):
    labels = ["cat", "a small dog on a skateboard", "x", "traffic light", "über-café"]
    tokenizer = open_clip.tokenizer.SimpleTokenizer()
    with torch.no_grad():
        fast = tiny.encode_labels(labels, batch_size=2)
        reference = tiny.clip.encode_text(
            tokenizer([f"There is a {lab} in the scene" for lab in labels])
        )
    relative = (fast - reference).norm(dim=1) / reference.norm(dim=1)
    assert relative.max() < 1e-4


def test_custom_template(tiny):
    other = checkpoints.load(str(TINY_CONFIG))
    other.load_state_dict(tiny.state_dict(), strict=False)
    from mkt_tag.prompts import PromptContext

    other.prompt = PromptContext.from_template(other.clip, other.tokenizer, "a photo of {label}.")
    tokenizer = open_clip.tokenizer.SimpleTokenizer()
    with torch.no_grad():
        ref = other.clip.encode_text(tokenizer(["a photo of cat."]))
        assert torch.allclose(other.encode_labels(["cat"]), ref, atol=1e-5)


def test_label_too_long_is_a_clear_error(tiny):
    with pytest.raises(LabelFileError, match="too long for the text context"):
        tiny.encode_labels(["word " * 80], source="my.txt")


def test_unsupported_backbones_are_rejected():
    arch = {"embed_dim": 32, "vision_cfg": {"timm_model_name": "resnet18"}, "text_cfg": {}}
    with pytest.raises(ModelError, match="unsupported backbone"):
        build_clip(arch)


def regression_scores() -> torch.Tensor:
    model = checkpoints.load(str(TINY_CONFIG))
    model.config.streams = "both"  # MKT's fused scores (a plain backbone's default is global)
    fill_deterministic(model, seed=0)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(123))
    with torch.no_grad():
        return model(images, model.encode_labels(["cat", "dog", "red car"]))


def test_regression_scores_are_stable():
    """A seeded forward pass against stored numbers catches silent numeric drift."""
    scores = regression_scores()
    stored = DATA / "regression_scores.pt"
    if not stored.exists():  # written once, committed; never regenerated by CI
        pytest.fail(f"{stored} missing: generate it with tests/data/make_regression.py")
    expected = torch.load(stored, weights_only=True)
    assert torch.allclose(scores, expected, atol=1e-5)


@pytest.mark.parametrize("name", ["tiny", "ViT-B-16", "ViT-L-14-336", "ViT-bigG-14"])
def test_parameter_estimate_matches_open_clip(name):
    """The limit on an architecture's size uses an estimate: it must be open_clip's count."""
    import json

    from mkt_tag.config import estimate_parameters

    arch = (
        json.loads(TINY_CONFIG.read_text()) if name == "tiny" else open_clip.get_model_config(name)
    )
    with torch.device("meta"):  # no memory: only the shapes
        clip = open_clip.CLIP(**arch)
    assert estimate_parameters(arch) == sum(p.numel() for p in clip.parameters())


def test_config_interpolations_are_the_images_ones():
    from mkt_tag.config import INTERPOLATIONS
    from mkt_tag.images import INTERPOLATIONS as RESAMPLING

    assert set(INTERPOLATIONS) == set(RESAMPLING)
