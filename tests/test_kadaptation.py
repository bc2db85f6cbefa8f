"""KAdaptation against the authors' computation (eric-ai-lab/PEViT @ be6fb43,
vision_benchmark/evaluation/model.py, cited as model.py:line), its parameter count and its published defaults."""
from __future__ import annotations

import copy
import math

import pytest
import torch

import petlbench
from petlbench.methods.kadaptation import KAdaptationConfig, KronQKV

from tiny import build, randomize_trainable


def kron_batched(a, b):
    """Their kronecker_product_einsum_batched (model.py:406-417): (m, a, c), (m, k, p) -> (m, a*k, c*p)."""
    return torch.einsum("bac,bkp->bakcp", a, b).reshape(a.shape[0], a.shape[1] * b.shape[1], a.shape[2] * b.shape[2])


def authors_attention(x, w_in, b_in, w_out, b_out, heads, rule_l, rule_r, fast_l, fast_r, b, scale=160.0):
    """Their MultiheadAttention forward for self-attention, x (B, N, C) batch-first; rule_* / fast_* stacked
    (q, v). Two departures, both where theirs is not the paper's update (see methods/kadaptation.py): the update
    is split into heads like q itself (model.py:729) instead of their bare `.reshape` (:796-797), and the v
    update uses v's fast matrices where :580 reads `Wq`."""
    x = x.transpose(0, 1)  # their Transformer runs (N, B, C) (model.py:1042)
    n_tok, bsz, c = x.shape
    hd = c // heads
    q, k, v = (x @ w_in.T + b_in).chunk(3, dim=-1)  # _in_projection_packed (model.py:675)
    q, k, v = (t.contiguous().view(n_tok, bsz * heads, hd).transpose(0, 1) for t in (q, k, v))  # :729-740
    q = q / math.sqrt(hd)  # :786-787, before the update is added
    w_q, w_v = torch.bmm(fast_l[0], fast_r[0]), torch.bmm(fast_l[1], fast_r[1])  # :567-568
    rule1, rule2 = torch.bmm(rule_l[0], rule_r[0]), torch.bmm(rule_l[1], rule_r[1])  # :574, :579
    h_q, h_v = kron_batched(rule1, w_q).sum(0), kron_batched(rule2, w_v).sum(0)  # :575, :580
    d_q, d_v = (x @ h * scale + b for h in (h_q, h_v))  # adapter_forward (:584); kdropout is off in eval
    d_q, d_v = (t.contiguous().view(n_tok, bsz * heads, hd).transpose(0, 1) for t in (d_q, d_v))
    q, v = q + d_q, v + d_v  # :798-799
    out = torch.bmm(torch.softmax(torch.bmm(q, k.transpose(-2, -1)), dim=-1), v)  # :806-812
    out = out.transpose(0, 1).contiguous().view(n_tok * bsz, c) @ w_out.T + b_out  # :815-816
    return out.view(n_tok, bsz, c).transpose(0, 1)


def _reference_of(attn, wrapper: KronQKV, x):
    slow = wrapper._slow()
    return authors_attention(x, wrapper.base.weight, wrapper.base.bias, attn.proj.weight, attn.proj.bias,
                             attn.num_heads, slow.left, slow.right, wrapper.fast_left, wrapper.fast_right, wrapper.b)


@pytest.mark.parametrize("merged", [False, True])
def test_equals_authors_attention_on_identical_weights(merged):
    torch.manual_seed(0)
    # float64: with s = 160 the attention logits are large, and float32 rounding would hide a real mismatch
    model = build("kadaptation", "vit_cls").eval().double()
    randomize_trainable(model, std=0.2)  # u, v, the slow factors and b all non-zero
    x = torch.randn(3, 17, 64, dtype=torch.float64)
    for blk in model.blocks:
        wrapper = blk.attn.qkv
        assert isinstance(wrapper, KronQKV)
        attn = copy.deepcopy(blk.attn)
        if merged:
            attn.qkv = wrapper.merged()
            assert type(attn.qkv) is torch.nn.Linear
        with torch.no_grad():
            ours, ref = attn(x), _reference_of(blk.attn, wrapper, x)
            plain = copy.deepcopy(attn)
            plain.qkv = wrapper.base
        assert (ref - plain(x)).abs().max() > 1e-2  # the update does change the output
        torch.testing.assert_close(ours, ref, atol=1e-10, rtol=1e-10)


def test_slow_matrices_are_shared_and_named_once():
    model = build("kadaptation", "vit_cls")
    w0, w1 = (blk.attn.qkv for blk in model.blocks)
    assert w0._slow() is w1._slow()
    names = [n for n, p in model.named_parameters(remove_duplicate=False) if p is w0._slow().left]
    assert names == ["blocks.0.attn.qkv.slow.left"]
    own = build("kadaptation", "vit_cls", method_cfg={"shared_slow": False})
    assert own.blocks[0].attn.qkv._slow() is not own.blocks[1].attn.qkv._slow()
    # slow factors per block: 4 n^2 r_slow more for the second block
    assert petlbench.count_trainable(own, False) - petlbench.count_trainable(model, False) == 4 * 32 * 32


def test_authors_zero_init_never_trains_the_kronecker_term():
    """Why the default init differs: with u = v = 0 (model.py:536-539) no Kronecker factor gets a gradient."""
    for init, moves in (("zeros", False), ("glorot", True)):
        torch.manual_seed(0)
        model = build("kadaptation", "vit_cls", method_cfg={"init": init}).train()
        model(torch.randn(4, 3, 32, 32)).square().mean().backward()
        w = model.blocks[0].attn.qkv
        grads = [w.fast_left.grad, w.fast_right.grad, w.slow.left.grad, w.slow.right.grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads) == moves, init
        assert w.weight_delta().abs().max() == 0  # both start with no update
        assert w.b.grad.abs().sum() > 0


def test_dropout_acts_on_the_update_in_training_only():
    x = torch.randn(2, 3, 32, 32)
    for p in (0.0, 0.5):
        torch.manual_seed(0)
        model = build("kadaptation", "vit_cls", method_cfg={"dropout": p})
        randomize_trainable(model, std=0.2)
        with torch.no_grad():
            gap = (model.train()(x) - model.eval()(x)).abs().max().item()
        assert (gap > 1e-3) if p else (gap < 1e-6), (p, gap)


def test_width_not_divisible_by_n_is_a_config_error():
    with pytest.raises(petlbench.ConfigError, match="n=48 must divide the width 64"):
        build("kadaptation", "vit_cls", method_cfg={"n": 48})


def test_vit_base_count_in_both_conventions():
    """ViT-B/16: 12 * (4 * 768 + 768) + 4 * 32^2 = 50,176. The authors' README (be6fb43 README.md:84, :89) gives
    79,699 trainable for KAdaptation and 29,523 for linear probing, averaged over ELEVATER's 20 datasets on CLIP
    ViT-B/32 (width 768, 12 blocks: the same adapter size as ViT-B/16); their count includes the head, which is
    all of linear probing's, so the adapter is the difference. Ours excludes the head; the paper convention is
    the same count (their v fast factors, unused by their forward, are counted there and used here)."""
    model = petlbench.create_model("vit_base_patch16_224", method="kadaptation", num_classes=100)
    assert petlbench.count_trainable(model, include_head=False) == 12 * (4 * 768 + 768) + 4 * 32 * 32 == 50_176
    assert petlbench.count_paper(model) == 79_699 - 29_523


def test_defaults_are_the_authors():
    c = KAdaptationConfig()
    assert c.n == 32  # phm_dim = 32 (model.py:485, :984)
    assert c.fast_rank == 1  # self.phm_rank = 1 (model.py:489)
    assert c.slow_rank == 1  # phm_rule*_left (32, 32, 1), phm_rule*_right (32, 1, 32) (model.py:987-999)
    assert c.scale == 128 / 4 * 5  # lora_attn_alpha / lora_attn_dim * 5 (model.py:477-479, :564)
    assert c.dropout == 0.5  # self.kdropout = nn.Dropout(0.5) (model.py:516)
    assert c.shared_slow and c.bias and c.q_head_scale  # model.py:1002-1009, :514, :786-798
    assert c.init == "glorot"  # the one departure: theirs is "zeros" (model.py:536-539; see the test above)
