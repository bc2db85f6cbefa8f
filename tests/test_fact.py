"""FacT-TT and FacT-TK against the authors' computation (JieShibo/PETL-ViT@026e4f1, FacT/fact_tt.py and
FacT/fact_tk.py), their parameter counts against the paper, and their defaults against the authors' code."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import petlbench
from petlbench.method import METHODS, Wrapper
from petlbench.recipe import RECIPES

from tiny import build, images, randomize_trainable


# --- the authors' computation, written from their code, on a timm >= 1.0 ViT's frozen layers ---------------
def _attn(attn, x, fact, s):
    """fact_forward_attn (fact_tt.py:60-83 / fact_tk.py:59-85): `fact` gives the per-block q/k/v/proj maps of
    FacTu(x), the dropout in between is off (eval)."""
    B, N, C = x.shape
    qkv = attn.qkv.base(x)
    u = fact["u"]
    qkv = qkv + torch.cat([fact["v"](fact["q"](u(x))), fact["v"](fact["k"](u(x))), fact["v"](fact["vv"](u(x)))],
                          dim=2) * s  # :64-68
    qkv = qkv.reshape(B, N, 3, attn.num_heads, C // attn.num_heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    a = ((q @ k.transpose(-2, -1)) * attn.scale).softmax(dim=-1)
    x = (a @ v).transpose(1, 2).reshape(B, N, C)
    return attn.proj.base(x) + fact["v"](fact["proj"](u(x))) * s  # :80-81


def _mlp(mlp, x, fact, s, dim):
    """fact_forward_mlp (fact_tt.py:86-100 / fact_tk.py:88-104)."""
    B, N, C = x.shape
    h = mlp.fc1.base(x) + fact["v"](fact["fc1"](fact["u"](x)).reshape(B, N, 4, dim)).reshape(B, N, 4 * C) * s
    x = mlp.act(h)
    h = mlp.fc2.base(x)
    x = x.reshape(B, N, 4, C)
    return h + fact["v"](fact["fc2"](fact["u"](x).reshape(B, N, 4 * dim))) * s  # :95-98


def _forward(model, per_block, s, dim, x):
    """The ViT's forward (eval: no drop path) with the authors' attention and MLP in every block."""
    x = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x))))
    for i, blk in enumerate(model.blocks):
        x = x + blk.ls1(_attn(blk.attn, blk.norm1(x), per_block(i), s))
        x = x + blk.ls2(_mlp(blk.mlp, blk.norm2(x), per_block(i), s, dim))
    return model.forward_head(model.norm(x))


def _lin(w):
    return lambda t: F.linear(t, w)  # an nn.Linear(bias=False) with weight w


def tt_reference(model, s):
    """set_FacT (fact_tt.py:103-128): FacTu/FacTv on the ViT, q/k/v/proj/fc1/fc2_FacTs per block, nn.Linear
    weights; ours: factors.u / .v, and each wrapper's stacked cores (qkv: q, k, v rows)."""
    f = model.blocks[0].attn.qkv.factors
    r = f.u.shape[0]

    def per_block(i):
        b = model.blocks[i]
        qkv = b.attn.qkv.core
        return {"u": _lin(f.u), "v": _lin(f.v), "q": _lin(qkv[:r]), "k": _lin(qkv[r:2 * r]),
                "vv": _lin(qkv[2 * r:]), "proj": _lin(b.attn.proj.core), "fc1": _lin(b.mlp.fc1.core),
                "fc2": _lin(b.mlp.fc2.core)}
    return lambda x: _forward(model, per_block, s, r, x)


def tk_reference(model, s):
    """set_FacT (fact_tk.py:107-136): FacTc (r, r, r), FacTp (r, 144); block i's attention at idx 12 i, its
    MLP at 12 i + 4 (vit.idx += 4, += 8); the cores as fact_tk.py:61-62 and :90-92 build them."""
    f = model.blocks[0].attn.qkv.factors
    r = f.u.shape[0]

    def per_block(i):
        c = f.core @ f.p[:, 12 * i:12 * i + 4]  # :61
        m = f.core @ f.p[:, 12 * i + 4:12 * i + 12]  # :90
        fc1, fc2 = m[:, :, :4].reshape(r, r * 4), m[:, :, 4:].reshape(r, r * 4)  # :91-92
        return {"u": _lin(f.u), "v": _lin(f.v), "q": lambda t: t @ c[:, :, 0], "k": lambda t: t @ c[:, :, 1],
                "vv": lambda t: t @ c[:, :, 2], "proj": lambda t: t @ c[:, :, 3],  # :66-68, :83
                "fc1": lambda t: t @ fc1, "fc2": lambda t: t @ fc2.t()}  # :94, :101-102
    return lambda x: _forward(model, per_block, s, r, x)


REFERENCES = {"fact_tt": tt_reference, "fact_tk": tk_reference}


@pytest.mark.parametrize("method", sorted(REFERENCES))
@pytest.mark.parametrize("variant", ["vit_cls", "vit_reg_ls"])
def test_equals_the_authors_computation_unmerged_and_merged(method, variant):
    torch.manual_seed(0)
    s = 3.0
    model = build(method, variant, method_cfg={"rank": 4, "scale": s}).eval()
    randomize_trainable(model, std=0.2)  # V starts at zero: without this the update is exactly nothing
    x = images()
    with torch.no_grad():
        ref = REFERENCES[method](model, s)(x)
        ours = model(x)
        plain_out = petlbench.merge(model).eval()(x)
        without = copy.deepcopy(model)
        without.blocks[0].attn.qkv.factors.v.zero_()  # V = 0: no update anywhere
        delta = (ref - without(x)).abs().max()
    assert delta > 1e-2  # the update changes the output: the comparisons below are not vacuous
    assert torch.allclose(ours, ref, atol=1e-5, rtol=1e-5), (ours - ref).abs().max()
    assert torch.allclose(plain_out, ref, atol=1e-4, rtol=1e-4), (plain_out - ref).abs().max()


@pytest.mark.parametrize("method", sorted(REFERENCES))
def test_factors_are_one_set_shared_by_every_wrapper(method):
    model = build(method)
    owner = model.blocks[0].attn.qkv.factors
    wrappers = [m for m in model.modules() if isinstance(m, Wrapper)]
    assert len(wrappers) == 4 * len(model.blocks)
    assert all(w.shared is owner for w in wrappers)
    names = [n for n, _ in model.named_parameters(remove_duplicate=False) if ".factors." in n]
    assert names and all(n.startswith("blocks.0.attn.qkv.factors.") for n in names)


@pytest.mark.parametrize("method", sorted(REFERENCES))
def test_dropout_acts_on_the_update_in_training(method):
    torch.manual_seed(0)
    model = build(method, method_cfg={"dropout": 0.5}).train()
    randomize_trainable(model, std=0.2)
    x = images()
    with torch.no_grad():
        assert not torch.equal(model(x), model(x))  # (drop path is 0 in the tiny model: only FacT's dropout)
        model.eval()
        assert torch.equal(model(x), model(x))


@pytest.mark.parametrize("method", sorted(REFERENCES))
def test_bad_options_are_config_errors(method):
    with pytest.raises(petlbench.ConfigError, match="rank must be positive"):
        build(method, method_cfg={"rank": 0})
    with pytest.raises(petlbench.ConfigError, match="dropout"):
        build(method, method_cfg={"dropout": 1.0})


def test_published_defaults():
    tt, tk = METHODS.get("fact_tt").config_cls(), METHODS.get("fact_tk").config_cls()
    # fact_tt.py:103 / fact_tk.py:107 def set_FacT(model, dim=8, s=1)
    assert (tt.rank, tt.scale) == (8, 1.0) and (tk.rank, tk.scale) == (8, 1.0)
    assert tt.dropout == 0.1 and tk.dropout == 0.1  # fact_tt.py:114,124 / fact_tk.py:120,130 nn.Dropout(0.1)
    r = RECIPES.get("fact-vtab")
    # configs/tt/clevr_dist.yaml:3-4 rank: 4, scale: 10.0
    assert r.method_values("fact_tt", "vtab/clevr_dist") == {"dropout": 0.1, "rank": 4, "scale": 10.0}
    assert r.method_values("fact_tt", "vtab/dtd")["scale"] == 0.01  # configs/tt/dtd.yaml:4 scale: 0.01
    assert r.method_values("fact_tt", "vtab/svhn")["rank"] == 16  # configs/tt/svhn.yaml:3 rank: 16
    # configs/tk/cifar.yaml:3-4 rank: 32, scale: 0.1
    assert r.method_values("fact_tk", "vtab/cifar") == {"dropout": 0.1, "rank": 32, "scale": 0.1}


# ViT-B/16 counts: TT 1536 r + 144 r^2, TK 1536 r + r^3 + 144 r (methods/fact_tt.py, fact_tk.py docstrings);
# TT at r 4 is the abstract's "8K" tiny version (FacT-TT_4).
VIT_B = {("fact_tt", 4): 8_448, ("fact_tt", 8): 21_504, ("fact_tt", 16): 61_440,
         ("fact_tk", 16): 30_976, ("fact_tk", 32): 86_528}
# The paper's Params (M) of FacT-TT_<=16 and FacT-TK_<=32 (VTAB-1k table; tasks/reference/
# vtab1k_vitb16_published.csv:11 prints FacT-TK's as 0.07) is the mean over the 19 datasets, each with its own
# rank (the recipe's per-task values, from FacT/configs/{tt,tk}/*.yaml).
PAPER_M = {"fact_tt": 0.040, "fact_tk": 0.069}


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(PAPER_M))
def test_vit_base_counts_and_the_papers_mean(method):
    counts = {}
    for (m, rank), want in VIT_B.items():
        if m != method:
            continue
        model = petlbench.create_model("vit_base_patch16_224", method=m, num_classes=100,
                                       method_cfg={"rank": rank})
        counts[rank] = petlbench.count_trainable(model, include_head=False)
        assert counts[rank] == want
        assert petlbench.count_paper(model) == want  # the paper counts every factor, as we do
        assert petlbench.count_trainable(model) == want + 768 * 100 + 100
    r = RECIPES.get("fact-vtab")
    tasks = [t for t in r.per_task if f"{method}.rank" in r.per_task[t]]
    assert len(tasks) == 19
    mean = sum(counts[r.method_values(method, t)["rank"]] for t in tasks) / len(tasks)
    assert round(mean / 1e6, 3) == PAPER_M[method]
