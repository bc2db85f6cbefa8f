"""petlbench's `adaptformer` equals AdaptFormer's own computation (ShoufaChen/AdaptFormer@6967d67).

The reference is a transcription of the authors' Block.forward and Adapter.forward
(C = models/custom_modules.py, A = models/adapter.py) with the options main_image.py:186-191 passes
(ffn_option="parallel", ffn_adapter_layernorm_option="none", ffn_adapter_init_option="lora",
ffn_adapter_scalar="0.1"). It runs on a tiny timm ViT built through petlbench, with the frozen layers taken
from that model and the bottleneck copied into separate nn.Linear layers, so only the placement and the math of
the branch are compared. The parameter counts on full-size ViT-B/16 are in tests/test_full_size.py.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

import petlbench
from petlbench.method import METHODS
from petlbench.methods.adaptformer import AdaptFormerConfig, AdaptMLPBranch, NormInputTap

from tiny import NUM_CLASSES, build, images, plain, randomize_trainable


def authors_adapter(down: nn.Linear, up: nn.Linear, x: torch.Tensor, scale: float, p: float, training: bool):
    # A:52-53 no norm with layernorm option "none"; A:55-58 down, ReLU, dropout, up; A:60 up * scale;
    # A:65-68 add_residual=False returns up alone
    h = nn.functional.dropout(torch.relu(down(x)), p=p, training=training)
    return up(h) * scale


def authors_block(blk, down, up, x, scale, p, training):
    # C:77 x = x + drop_path(attn(norm1(x))) (timm's ls1 is Identity on the authors' ViT, kept for LayerScale)
    x = x + blk.drop_path1(blk.ls1(blk.attn(blk.norm1(x))))
    # C:78-79 the parallel branch reads x, the stream before norm2
    adapt_x = authors_adapter(down, up, x, scale, p, training)
    residual = x
    # C:82-83 x = drop_path(mlp(norm2(x))); norm2 and drop_path2 are the wrapped timm layers
    y = blk.drop_path2.base(blk.ls2(blk.mlp(blk.norm2.base(x))))
    # C:88-89 x = x + adapt_x (outside drop path), C:93 x = residual + x
    return residual + (y + adapt_x)


def authors_model(model, x, scale, p, training):
    branches = []
    for blk in model.blocks:
        a = blk.drop_path2
        down, up = nn.Linear(a.down.in_features, a.down.out_features), nn.Linear(a.up.in_features, a.up.out_features)
        with torch.no_grad():
            for mine, theirs in ((a.down, down), (a.up, up)):
                theirs.weight.copy_(mine.weight)
                theirs.bias.copy_(mine.bias)
        branches.append((down, up))
    h = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x))))
    for blk, (down, up) in zip(model.blocks, branches):
        h = authors_block(blk, down, up, h, scale, p, training)
    return model.forward_head(model.norm(h))


@pytest.mark.parametrize("variant", ["vit_cls", "vit_gap", "vit_reg_ls"])
def test_equals_authors_computation_eval(variant):
    model = build("adaptformer", variant).eval()
    randomize_trainable(model, std=0.2)  # up starts at zero: a zero branch would compare nothing
    x = images()
    with torch.no_grad():
        ours, theirs = model(x), authors_model(model, x, 0.1, 0.1, training=False)
        assert not torch.allclose(ours, plain_forward(model, x), atol=1e-4)  # the branch does something
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def plain_forward(model, x):
    """The same frozen model without the branches (the taps pass through, the drop paths run alone)."""
    h = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x))))
    for blk in model.blocks:
        h = h + blk.drop_path1(blk.ls1(blk.attn(blk.norm1(h))))
        h = h + blk.drop_path2.base(blk.ls2(blk.mlp(blk.norm2.base(h))))
    return model.forward_head(model.norm(h))


def test_branch_escapes_stochastic_depth():
    # Train mode with drop_path_rate=1: the last block's attention and MLP branches are dropped entirely (timm's
    # drop_path with keep_prob 0 returns zeros), the parallel branch is not (C:83 drops only the MLP output).
    # dropout 0 keeps the comparison deterministic.
    model = petlbench.create_model("vit_tiny_patch16_224", method="adaptformer", num_classes=NUM_CLASSES,
                                   pretrained=False, method_cfg={"dropout": 0.0}, img_size=32, patch_size=8,
                                   depth=2, embed_dim=64, num_heads=2, drop_path_rate=1.0).train()
    assert model.blocks[1].drop_path2.base.drop_prob == 1.0
    randomize_trainable(model, std=0.2)
    x = images()
    ours, theirs = model(x), authors_model(model, x, 0.1, 0.0, training=True)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    # and the branch did reach the output through the dropped block
    with torch.no_grad():
        for blk in model.blocks:
            blk.drop_path2.up.weight.zero_()
    assert not torch.allclose(model(x), ours, atol=1e-4)


def test_published_defaults_are_the_authors():
    cfg = AdaptFormerConfig()
    assert cfg.dim == 64  # main_image.py:114 --ffn_num default 64
    assert cfg.scale == 0.1  # main_image.py:190 ffn_adapter_scalar="0.1"
    assert cfg.dropout == 0.1  # custom_modules.py:70 Adapter(..., dropout=0.1)
    cls = METHODS.get("adaptformer")
    assert cls.display_name == "AdaptFormer" and not cls.mergeable
    assert cls.variant_key({}) == "adaptformer"  # the VTAB published row's key
    # A:41-48 init "lora": down kaiming_uniform(a=sqrt(5)) (non-zero, within 1/sqrt(d)), up and biases zero;
    # A:37 ReLU
    model = build("adaptformer", "vit_cls").eval()
    branch = model.blocks[0].drop_path2
    assert isinstance(branch, AdaptMLPBranch) and isinstance(model.blocks[0].norm2, NormInputTap)
    assert isinstance(branch.act, nn.ReLU) and branch.scale == 0.1 and branch.drop.p == 0.1
    assert branch.down.weight.abs().min() > 0 and branch.down.weight.abs().max() <= 64 ** -0.5
    assert branch.down.out_features == 64
    for t in (branch.up.weight, branch.up.bias, branch.down.bias):
        assert torch.count_nonzero(t) == 0
    # so the untrained model is the plain backbone
    reference = plain("vit_cls").eval()
    reference.load_state_dict({k.replace("norm2.base.", "norm2.").replace("drop_path2.base.", "drop_path2."): v
                               for k, v in model.state_dict().items()
                               if ".drop_path2.down." not in k and ".drop_path2.up." not in k})
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))


def test_copies_keep_their_own_taps():
    model = build("adaptformer", "vit_cls").eval()
    randomize_trainable(model, std=0.2)
    twin = copy.deepcopy(model)
    for blk_a, blk_b in zip(model.blocks, twin.blocks):
        assert blk_b.drop_path2.tap is blk_b.norm2 and blk_a.drop_path2.tap is blk_a.norm2
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(twin(x), model(x))
    # each norm2 appears once in the state dict (the tap is no submodule of the branch)
    assert sum(k.endswith("norm2.base.weight") for k in model.state_dict()) == len(model.blocks)


def test_misuse_is_an_error():
    tap = NormInputTap(nn.LayerNorm(8))
    with pytest.raises(RuntimeError, match="without norm2 first"):
        AdaptMLPBranch(nn.Identity(), tap, 8, AdaptFormerConfig(dim=2))(torch.randn(1, 8))
    for bad in ({"dim": 0}, {"dropout": 1.0}):
        with pytest.raises(petlbench.ConfigError, match="dim|dropout"):
            build("adaptformer", "vit_cls", method_cfg=bad)
    with pytest.raises(petlbench.ConfigError, match="does not support convnext"):
        build("adaptformer", "convnext")
