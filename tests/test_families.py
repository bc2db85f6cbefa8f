"""Swin and ConvNeXt: parameter counts derived by hand from the tiny architectures in tiny.py, the ConvNeXt
merge rules (what folds into a depthwise conv and what does not), families derived from the sites a method needs,
and family errors."""
from __future__ import annotations

import pytest
import torch

import petlbench
from petlbench.errors import MergeError
from petlbench.folding import fold_input_affine

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


def test_families_follow_from_the_sites_a_method_needs():
    from petlbench.method import PETLMethod
    from petlbench.sites import FAMILY_SITES

    class NeedsAttnOut(PETLMethod):  # not registered: the derivation alone
        sites = ("attn_out", "mlp_in")

    have = [f for f, table in FAMILY_SITES.items() if "attn_out" in table]
    assert have and len(have) < len(FAMILY_SITES)  # some families lack it, so the test can tell
    assert NeedsAttnOut.families == tuple(have)

    class Optional(NeedsAttnOut):
        optional_sites = ("attn_out",)  # wrapped where present: no longer limits the families

    assert Optional.families == tuple(f for f, t in FAMILY_SITES.items() if "mlp_in" in t)

    class Limited(Optional):
        only_families = (have[-1],)

    assert Limited.families == (have[-1],)
    with pytest.raises(petlbench.ConfigError, match=r"convnext backbones have no site 'mlp_drop_path'"):
        build("adapter", "convnext", {"placement": "after_drop_path"})


# --- open_clip --------------------------------------------------------------------------------------------------
from tiny import OPENCLIP_TINY, has_open_clip  # noqa: E402

needs_clip = pytest.mark.skipif(not has_open_clip(), reason="open_clip_torch not installed")


@pytest.mark.clip
@needs_clip
@pytest.mark.parametrize("method,want", [
    ("repadapter", 2 * 2 * (13 * 64 + 8)),             # tiny CLIP: 2 blocks of width 64; in_proj and c_fc
    ("lora", 2 * 2 * 2 * 8 * 64),                      # q and v thirds of in_proj_weight, rank 8
    ("ssf", 2 * 2 * (3 * 64 + 64 + 4 * 64 + 64 + 2 * 64) + 2 * 64),  # in_proj, out_proj, c_fc, c_proj, ln_1/2;
    #                                                                  ln_post (conv1 has no bias: no site)
    ("adapter", 2 * (2 * 64 * 8 + 8 + 64)),
])
def test_openclip_counts(method, want):
    assert petlbench.count_trainable(build(method, "openclip"), include_head=False) == want


@pytest.mark.clip
@needs_clip
def test_openclip_zero_shot_head_is_clips_zero_shot_classifier():
    import open_clip
    import torch.nn.functional as F

    names = ["cat", "dog", "car", "tree", "boat"]
    torch.manual_seed(0)
    clip = open_clip.create_model("ViT-B-16", pretrained=None, **OPENCLIP_TINY).eval()
    torch.manual_seed(0)
    model = petlbench.create_model("openclip:ViT-B-16", method="linear", num_classes=5, pretrained=False,
                                   zero_shot_classnames=names, **OPENCLIP_TINY).eval()
    x = images()
    tok = open_clip.get_tokenizer("ViT-B-16")
    with torch.no_grad():
        text = F.normalize(clip.encode_text(tok([f"a photo of a {n}." for n in names])), dim=-1)
        want = clip.logit_scale.exp() * F.normalize(clip.encode_image(x), dim=-1) @ text.t()
        assert torch.allclose(model(x), want, atol=1e-4)
    assert not any(n.startswith("transformer.") or "token_embedding" in n for n, _ in model.named_parameters())


@pytest.mark.clip
@needs_clip
@pytest.mark.parametrize("kwargs,message", [
    ({"backbone": "openclip:ViT-B-61"}, "did you mean 'ViT-B-16'"),
    ({"pretrained": "opnai"}, "unknown pretrained tag 'opnai'"),
    ({"pretrained": True}, "name the weights, e.g. weights=openai"),
    ({"drop_path_rate": 0.1}, "no drop path"),
])
def test_openclip_errors(kwargs, message):
    args = {"backbone": "openclip:ViT-B-16", "pretrained": False, **kwargs}
    with pytest.raises(petlbench.PETLBenchError, match=message):
        petlbench.create_model(args.pop("backbone"), method="linear", num_classes=3, **args, **OPENCLIP_TINY)


def test_zero_shot_head_option_is_checked():
    from petlbench.errors import ConfigError
    from petlbench.run import build_model, resolve

    with pytest.raises(ConfigError, match="needs an open_clip backbone"):
        build_model(resolve("mini/digits", "linear", {"head_init": "zeroshot"}))
    with pytest.raises(ConfigError, match="has no class names"):
        build_model(resolve("mini/clevr_count", "linear", {"head_init": "zeroshot", "backbone": "openclip:ViT-B-16",
                                                           "weights": "none", "drop_path": 0.0}))


OLD_HASH = "5ac48f2999de087c"  # mini/digits + repadapter, written before head_init and dw_adapter existed


# The mini-benchmark's hashes as the code before recipes, numerics and the NOAH method options computed them.
OLD_MINI_HASHES = {"lora": "84a1e3e2877304fd", "adapter": "90912ef78c01592e", "vpt": "b3ef8273c2f88f9c",
                   "ssf": "6120a566c75d2765", "bitfit": "260b8f476a6bbfcb", "full": "370c066b1fa5921f",
                   "linear": "f1ffc11ea5ddc0c0"}


@pytest.mark.parametrize("method", sorted(OLD_MINI_HASHES))
def test_recipes_and_new_method_options_keep_old_mini_hashes(method):
    """A task without a recipe (the mini-benchmark), default method options and eager fp32: the record a store
    already holds is still found."""
    from petlbench.run import resolve

    assert resolve("mini/digits", method, {"device": "cpu"}).config_hash == OLD_MINI_HASHES[method]
    if method == "lora":
        assert resolve("mini/digits", "lora", {"fused": True, "targets": "qkv"}).config_hash != OLD_MINI_HASHES["lora"]
    if method == "adapter":
        assert resolve("mini/digits", "adapter", {"init": "trunc_normal"}).config_hash != OLD_MINI_HASHES["adapter"]


def test_new_options_keep_old_config_hashes():
    """Fields added to the protocol (head_init) and to RepAdapter (dw_adapter) are hashed only when set, so the
    records written before them are still found (this hash is the one the committed mini store has)."""
    from petlbench.run import resolve

    assert resolve("mini/digits", "repadapter").config_hash == OLD_HASH
    assert resolve("mini/digits", "repadapter", {"dw_adapter": "channel"}).config_hash != OLD_HASH
    assert resolve("mini/digits", "repadapter", {"head_init": "zeroshot"}).config_hash != OLD_HASH


def test_efficiency_variants_skip_merges_a_family_blocks():
    from petlbench.measure import build_variants

    from tiny import VARIANTS

    backbone, kwargs = VARIANTS["convnext"]
    rows = build_variants(backbone, ["repadapter", "ssf"], num_classes=5, **kwargs)
    assert [(r.method, r.form) for r in rows] == [("plain", "plain"), ("repadapter", "unmerged"),
                                                  ("ssf", "unmerged"), ("ssf", "merged")]
    assert any("dw_adapter=channel" in n for n in rows[1].notes)
    rows = build_variants(backbone, ["repadapter"], {"repadapter": {"dw_adapter": "channel"}}, num_classes=5, **kwargs)
    assert [(r.method, r.form) for r in rows][-1] == ("repadapter", "merged")
