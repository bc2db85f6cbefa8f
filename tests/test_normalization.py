"""input_normalization: the mean/std a backbone's weights were trained with, as their config says (open_clip's
pretrained config for CLIP tags, timm's pretrained_cfg for timm names), and the CLIP classifier carrying it."""
from __future__ import annotations

import pytest
import torch

import petlbench
from petlbench.backbones import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, create_backbone, input_normalization

from tiny import OPENCLIP_TINY, TINY, has_open_clip

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
needs_clip = pytest.mark.skipif(not has_open_clip(), reason="open_clip_torch not installed")


@pytest.mark.parametrize("name,want", [
    ("vit_base_patch16_224.orig_in21k", HALF),  # timm's cfg; RepAdapter/NOAH used ImageNet's for these weights
    ("vit_base_patch16_224.augreg_in21k", HALF),
    ("vit_base_patch16_224.mae", IMAGENET),
    ("convnext_tiny", IMAGENET),
    ("petlbench_vit_mini", IMAGENET),
])
def test_timm_names_report_timms_config(name, want):
    assert input_normalization(name, True) == want


def test_timm_model_reports_its_own_pretrained_cfg():
    model = petlbench.create_model("vit_tiny_patch16_224.augreg_in21k", "repadapter", num_classes=3, **TINY)
    assert input_normalization("vit_tiny_patch16_224.augreg_in21k", False, model) == HALF
    model.pretrained_cfg = dict(model.pretrained_cfg, mean=(0.1, 0.2, 0.3), std=(1.0, 1.0, 1.0))
    assert input_normalization("vit_tiny_patch16_224", False, model) == ((0.1, 0.2, 0.3), (1.0, 1.0, 1.0))
    assert input_normalization("convnext_tiny", False, create_backbone(
        "convnext_tiny", 3, False, dims=(16, 32, 32, 32), depths=(1, 1, 1, 1))) == IMAGENET


def test_unknown_timm_name_is_the_usual_error():
    with pytest.raises(petlbench.UnknownNameError, match="unknown backbone"):
        input_normalization("vit_nope", True)


@pytest.mark.clip
@needs_clip
def test_openclip_tags_report_open_clips_pretrained_cfg(tmp_path):
    assert input_normalization("openclip:ViT-B-16", "openai") == (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
    assert input_normalization("openclip:ViT-L-14", "laion2b_s32b_b82k") == HALF  # its own cfg: 0.5
    assert input_normalization("openclip:ViT-B-16", False) == (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
    f = tmp_path / "clip.pt"
    f.write_bytes(b"")
    assert input_normalization("openclip:ViT-L-14", str(f)) == (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)  # a file


@pytest.mark.clip
@needs_clip
def test_clip_classifier_says_what_it_expects(tmp_path):
    import open_clip

    model = petlbench.create_model("openclip:ViT-B-16", "linear", num_classes=3, pretrained=False, **OPENCLIP_TINY)
    assert (model.image_mean, model.image_std) == (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
    assert input_normalization("openclip:ViT-B-16", False, model) == (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
    # the model's own statistics win over the tag's config (e.g. a fine-tune that set other ones)
    model.image_mean, model.image_std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    assert input_normalization("openclip:ViT-B-16", "openai", model) == HALF
    # a checkpoint file: open_clip's defaults, read from the built model
    clip = open_clip.create_model("ViT-B-16", pretrained=None, **OPENCLIP_TINY)
    torch.save(clip.state_dict(), tmp_path / "clip.pt")
    model = petlbench.create_model("openclip:ViT-B-16", "linear", num_classes=3, pretrained=str(tmp_path / "clip.pt"),
                                   **OPENCLIP_TINY)
    assert torch.equal(model.visual.conv1.weight, clip.visual.conv1.weight)
    assert (model.image_mean, model.image_std) == (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
    assert petlbench.merge(petlbench.create_model("openclip:ViT-B-16", "repadapter", num_classes=3,
                                                  **OPENCLIP_TINY)).image_mean == OPENAI_CLIP_MEAN
