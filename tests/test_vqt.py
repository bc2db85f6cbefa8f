"""VQT against the authors' computation (andytu28/VQT@9bca87e, src/models/vit_backbones/h2t_vit.py, cited as
"h2t_vit.py:line"), its frozen path, its parameter count and its published defaults."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

import petlbench
from petlbench.backbones import head_parameters
from petlbench.method import METHODS

from tiny import build, images, plain, randomize_trainable


def _authors_block(blk, hs, T):
    """Head2ToeBlock.forward (h2t_vit.py:201-211) with Head2ToeAttention (:95-117): q from every row of hs, k and v
    from the rows after the T queries only; no LayerScale (their block has none)."""
    attn = blk.attn
    H = attn.num_heads
    hd = hs.shape[-1] // H
    wq, wk, wv = attn.qkv.weight.chunk(3)  # timm's fused qkv is [query; key; value] (vision_transformer load)
    bq, bk, bv = attn.qkv.bias.chunk(3)

    def heads(t):  # transpose_for_scores, :90-93
        return t.view(*t.shape[:-1], H, hd).permute(0, 2, 1, 3)

    h = hs
    y = blk.norm1(hs)  # attention_norm, :203
    kv = y[:, T:, :]  # :96 kv_hidden_states = hidden_states[:, query_prompt_len:, :]
    q, k, v = heads(F.linear(y, wq, bq)), heads(F.linear(kv, wk, bk)), heads(F.linear(kv, wv, bv))
    probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1)  # :105-107
    ctx = (probs @ v).permute(0, 2, 1, 3).reshape(hs.shape[0], hs.shape[1], H * hd)  # :111-114
    x = attn.proj(ctx) + h  # :115, :205
    return blk.mlp(blk.norm2(x)) + x  # :207-210


def authors_logits(twin, queries, combine_params, combine, normalize, head_w, head_b, x):
    """Head2ToeEncoder.forward (h2t_vit.py:283-304) and Head2ToeVisionTransformer.forward (:354-388, concat
    branch) on the plain timm ViT `twin`; queries: (L, T, d) as the authors hold them (:265-266)."""
    T = queries.shape[1]
    B = x.shape[0]
    hs = twin._pos_embed(twin.patch_embed(x))  # Embeddings.forward, :176-189: [cls; patches] + pos
    outs = []
    for li, blk in enumerate(twin.blocks):
        hs = torch.cat([queries[li].expand(B, -1, -1), hs], dim=1)  # :290-292 (dropout off in eval)
        hs = _authors_block(blk, hs, T)
        outs.append(hs[:, :T, :])  # :300
        hs = hs[:, T:, :]  # :301
    encoded = twin.norm(hs)  # :303 encoder_norm
    feats = [encoded[:, 0]]  # :372
    for li, q in enumerate(outs):
        if combine == "mean":  # :374-375 POOLING_FEATS
            feats.append(q.mean(dim=1))
        elif combine == "weighted_sum":  # :376-378
            feats.append(torch.sum(combine_params[li].expand(B, -1).unsqueeze(-1) * q, dim=1))
        else:
            feats.append(q.reshape(B, -1))  # :380 q.view(B, -1)
    if normalize:
        feats = [F.normalize(f) for f in feats]  # :381-382
    return F.linear(torch.cat(feats, dim=1), head_w, head_b)  # :383-386, then H2TViT's MLP head (MLP_NUM 0)


def _blocks(model):
    return [m for m in model.modules() if type(m).__name__ == "QueryBlock"]


@pytest.mark.parametrize("cfg", [{}, {"tokens": 3}, {"tokens": 3, "combine": "mean"},
                                 {"tokens": 3, "combine": "weighted_sum"}, {"tokens": 2, "normalize": False}])
def test_equals_authors_computation(cfg):
    torch.manual_seed(0)
    model = build("vqt", "vit_cls", method_cfg=cfg).eval()
    randomize_trainable(model, std=0.3)  # queries, weights of a weighted sum, head: all away from their init
    twin = plain("vit_cls").eval()
    twin.load_state_dict({k.replace(".base.", "."): v for k, v in model.state_dict().items()
                          if "queries" not in k and "combine" not in k and not k.startswith("head.")}, strict=False)
    blocks = _blocks(model)
    queries = torch.cat([b.queries for b in blocks])  # (L, T, d)
    combine = torch.stack([b.combine for b in blocks]) if blocks[0].combine is not None else None
    opts = dataclasses.asdict(petlbench.method_of(model).cfg)
    x = images()
    with torch.no_grad():
        ours = model(x)
        ref = authors_logits(twin, queries, combine, opts["combine"], opts["normalize"], model.head.weight,
                             model.head.bias, x)
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max().item() < 1e-5
    with torch.no_grad():  # the queries matter: other queries, other logits
        blocks[-1].queries.add_(1.0)
        assert (model(x) - ours).abs().max().item() > 1e-4


@pytest.mark.parametrize("variant", ["vit_cls", "vit_gap", "vit_reg_ls"])
def test_backbone_tokens_unchanged(variant):
    """The queries read the tokens and are never read by them: timm's own features, LayerScale included."""
    torch.manual_seed(0)
    model = build("vqt", variant).eval()
    randomize_trainable(model, std=0.3)
    twin = plain(variant).eval()
    twin.load_state_dict({k.replace(".base.", "."): v for k, v in model.state_dict().items()
                          if "queries" not in k and not k.startswith("head.")}, strict=False)
    x = images()
    with torch.no_grad():
        assert (model.forward_features(x) - twin.forward_features(x)).abs().max().item() < 1e-5


def test_frozen_path_builds_no_graph():
    model = build("vqt", "vit_cls").train()
    x = images()
    assert not model.forward_features(x).requires_grad  # the tokens: computed under no_grad
    logits = model(x)
    assert logits.requires_grad
    logits.sum().backward()
    for b in _blocks(model):
        assert b.queries.grad is not None and b.queries.grad.abs().sum() > 0
        assert all(p.grad is None for p in b.base.parameters())


def test_head_alone_is_refused():
    model = build("vqt", "vit_cls").eval()
    with pytest.raises(RuntimeError, match="query features of this batch"):
        model.forward_head(torch.randn(4, 5, 64))


def test_other_block_layout_is_a_config_error():
    from timm.models.vision_transformer import ResPostBlock

    from tiny import TINY
    with pytest.raises(petlbench.ConfigError, match="needs timm's ViT Block"):
        petlbench.create_model("vit_tiny_patch16_224", method="vqt", num_classes=5, block_fn=ResPostBlock, **TINY)


@pytest.mark.slow
@pytest.mark.parametrize("cfg,queries", [({}, 9_216),  # 12 blocks * 1 token * 768, the docstring's number
                                         ({"tokens": 20}, 12 * 20 * 768),
                                         ({"tokens": 20, "combine": "weighted_sum"}, 12 * 20 * 768 + 12 * 20)])
def test_vit_base_counts(cfg, queries):
    """Ours: the L * T * d query tokens (+ L * T weights of a weighted sum), head excluded; the paper describes
    VQT's parameters as the query tokens and the linear head on d + L*T*d features (h2t: build_h2t_model.py:53-54
    'sup_vitb16_imagenet1k': 768 + 768*12*num_q). The paper's printed count is not reproduced here (not found)."""
    model = petlbench.create_model("vit_base_patch16_224", method="vqt", num_classes=100, method_cfg=cfg)
    assert petlbench.count_trainable(model, include_head=False) == queries
    assert petlbench.count_paper(model) == queries
    opts = petlbench.method_of(model).cfg
    feats = 768 + 768 * 12 * (opts.tokens if opts.combine == "concat" else 1)  # build_h2t_model.py:51-54
    assert sum(p.numel() for p in head_parameters(model)) == feats * 100 + 100


def test_published_defaults_are_the_authors():
    cfg = METHODS.get("vqt").config_cls()
    assert cfg.tokens == 1  # run_demo_exp.sh:7-29 Q_LEN 1 (12 of the 19 tasks); README.md:42
    assert cfg.dropout == 0.1  # scripts/VQT/run_vqt_vtab.sh:24 MODEL.H2T.DROPOUT "0.1"
    assert cfg.combine == "concat"  # src/configs/config.py:87-88 POOLING_FEATS / WEIGHTED_SUM_FEATS False
    assert cfg.normalize is True  # src/configs/config.py:86 NORMALIZE_FEATS = True


def test_initialisation_is_the_authors():
    model = build("vqt", "vit_cls")
    bound = math.sqrt(6.0 / (3 * 8 * 8 + 64))  # h2t_vit.py:268 with the tiny ViT's patch 8 and width 64
    q = torch.cat([b.queries for b in _blocks(model)])
    assert q.abs().max() <= bound and q.abs().max() > 0.5 * bound
    # src/models/mlp.py:54-57 special_bias: -log((1 - 0.01) / 0.01)
    assert torch.allclose(model.head.bias, torch.full_like(model.head.bias, -math.log(99)))


def test_training_memory_is_below_lora():
    """The paper's point (its Fig. 1): no graph through the backbone, so a training step needs less memory than
    LoRA's, which back-propagates through every block; more than a linear probe's (the queries' own path)."""
    from petlbench.measure import train_peak_memory_bytes

    peak = {m: train_peak_memory_bytes(build(m, "vit_cls"), 32, 32, torch.device("cpu"))
            for m in ("linear", "vqt", "lora")}
    assert peak["linear"] < peak["vqt"] < peak["lora"]
