"""Swin and ConvNeXt: parameter counts derived by hand from the tiny architectures in tiny.py, the ConvNeXt
merge rules (what folds into a depthwise conv and what does not), and family errors."""
from __future__ import annotations

import pytest
import torch

import petlbench
from petlbench.folding import fold_input_affine
from petlbench.errors import MergeError

from tiny import build, images, plain, randomize_trainable

# RepAdapter (h=8, g=2) in front of a layer of input width d: A d*8 + 8, B d*8/2 + d  ->  13d + 8.
# tiny Swin: stage widths 32, 64, one block each; tiny ConvNeXt: widths 16, 32, 32, 32, one block each.
EXPECTED = {
    ("repadapter", "swin", None): 2 * (13 * 32 + 8) + 2 * (13 * 64 + 8),              # qkv and fc1 per block
    ("lora", "swin", None): 2 * 8 * 2 * 32 + 2 * 8 * 2 * 64,                          # q and v: A r x d, B d x r
    ("ssf", "swin", None): 2 * 11 * (32 + 64) + 2 * 32 + 2 * 64,                      # (3d+d+4d+d+2d) per block,
    #                                                                                   patch conv, final norm
    ("adapter", "swin", None): sum(2 * d * 8 + 8 + d for d in (32, 64)),
    ("repadapter", "convnext", None): sum(2 * (13 * d + 8) for d in (16, 32, 32, 32)),  # conv_dw and fc1
    ("repadapter", "convnext", "channel"): sum(13 * d + 8 + d for d in (16, 32, 32, 32)),  # fc1 + a per-channel
    ("ssf", "convnext", None): sum(2 * (d + 4 * d + d + d) for d in (16, 32, 32, 32)) + 2 * 16 + 2 * 32,
    #                              conv_dw, fc1, fc2, norm per block; stem conv; head norm
    ("bitfit", "convnext", None): None,  # every bias: checked against the model below
}


@pytest.mark.parametrize("method,variant,dw", [(m, f, dw) for m, f, dw in EXPECTED] +
                         [("repadapter", "convnext_convmlp", None), ("ssf", "convnext_convmlp", None)])
def test_counts(method, variant, dw):
    cfg = {"dw_adapter": dw} if dw else None
    model = build(method, variant, cfg)
    n = petlbench.count_trainable(model, include_head=False)
    want = EXPECTED.get((method, variant.replace("_convmlp", ""), dw))
    if want is None:  # bitfit: all biases of the backbone (the head's excluded)
        want = sum(p.numel() for name, p in plain(variant).named_parameters()
                   if name.endswith("bias") and not name.startswith("head.fc"))
    assert n == want


@pytest.mark.parametrize("variant", ["convnext", "convnext_convmlp"])
@pytest.mark.parametrize("cfg", [{"dw_adapter": "channel"}, {"where": "mlp"}])
def test_convnext_repadapter_variants_that_merge(variant, cfg):
    model = build("repadapter", variant, cfg).eval()
    randomize_trainable(model, std=0.2)
    merged = petlbench.merge(model).eval()
    x = images()
    with torch.no_grad():
        assert (merged(x) - model(x)).abs().max().item() <= 1e-4
    twin = plain(variant)
    twin.load_state_dict(merged.state_dict(), strict=True)  # a plain ConvNeXt: depthwise conv stays depthwise


def test_convnext_published_repadapter_does_not_merge_and_says_why():
    with pytest.raises(MergeError, match="dw_adapter=channel"):
        petlbench.merge(build("repadapter", "convnext"))


def test_depthwise_fold_rules():
    conv = torch.nn.Conv2d(4, 4, 3, padding=1, groups=4)
    x = torch.randn(2, 4, 6, 6)
    m = torch.diag(torch.tensor([0.5, 2.0, -1.0, 3.0]))
    folded = fold_input_affine(conv, m)
    assert torch.allclose(folded(x), conv(torch.einsum("ij,bjhw->bihw", m, x)), atol=1e-6)
    with pytest.raises(MergeError, match="channel-mixing"):
        fold_input_affine(conv, m + 0.1)
    with pytest.raises(MergeError, match="zero-padded"):
        fold_input_affine(conv, None, torch.ones(4))
    point = torch.nn.Conv2d(4, 5, 1)
    dense, shift = torch.randn(4, 4), torch.randn(4)
    folded = fold_input_affine(point, dense, shift)
    want = point(torch.einsum("ij,bjhw->bihw", dense, x) + shift.view(1, 4, 1, 1))
    assert isinstance(folded, torch.nn.Conv2d) and torch.allclose(folded(x), want, atol=1e-5)


@pytest.mark.parametrize("method,variant", [("vpt", "swin"), ("vpt", "convnext"), ("lora", "convnext")])
def test_unsupported_pairs_name_the_family(method, variant):
    with pytest.raises(petlbench.PETLBenchError, match=f"does not support {variant} backbones.*supports: vit"):
        build(method, variant)
