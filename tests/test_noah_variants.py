"""petlbench's `lora` and `adapter` with NOAH's options equal NOAH's modules (github ZhangYuanhan-AI/NOAH).

The reference below is a minimal transcription of NOAH's code, with file:line of its commit e9c55f3:
  V = model/supernet_vision_transformer_timm.py (Attention, Block, VisionTransformer, _init_vit_weights)
  A = model/module/adapter_super.py (QuickGELU, AdapterSuper)
A tiny timm ViT is built through petlbench, its weights are copied into the reference (strictly: every reference
tensor is assigned), and outputs are compared, in float64 (timm's fused attention and NOAH's explicit softmax then
agree to ~1e-15; in float32 to ~1e-6), in eval mode and in train mode (dropout and drop path on, both models seeded
alike: they draw their masks in the same order with the same shapes).
"""
from __future__ import annotations

import collections
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, trunc_normal_

import petlbench
from petlbench.errors import ConfigError, PETLBenchError

from tiny import OTHER_VARIANTS, has_open_clip, images, plain, randomize_trainable

# What makes petlbench equal NOAH's baselines (r = 8 / bottleneck 8: NOAH experiments/LoRA/ViT-B_prompt_lora_8.yaml:5,
# experiments/Adapter/ViT-B_prompt_adapter_8.yaml:6; dropout 0.1: supernet_train_prompt.py:207, :209 defaults).
NOAH_LORA = dict(rank=8, alpha=8.0, targets="qkv", fused=True, init="trunc_normal", dropout=0.1)
NOAH_ADAPTER = dict(dim=8, style="sequential", scale=1.0, act="quickgelu", dropout=0.1, init="trunc_normal",
                    placement="after_drop_path")
DIM, HEADS, DEPTH = 64, 2, 2
TINY_VIT = dict(img_size=32, patch_size=8, depth=DEPTH, embed_dim=DIM, num_heads=HEADS)


# --- NOAH, transcribed -----------------------------------------------------------------------------------------
class NoahAttention(nn.Module):
    """V:206-297 with prefix tuning off (prefix_dim=0: the `prefix_identity` branch, V:257-260, is skipped).
    attn_drop / proj_drop are Dropout(0) in NOAH's runs (--drop 0.0, supernet_train_prompt.py:57): left out."""

    def __init__(self, dim, num_heads, lora_dim, drop_rate_lora):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5  # V:211-212
        self.qkv = nn.Linear(dim, dim * 3, bias=True)  # V:214; qkv_bias=True: V:380
        self.proj = nn.Linear(dim, dim)  # V:217
        self.lora_identity = lora_dim == 0  # V:250-252
        if lora_dim > 0:
            self.LoRA_a = nn.Linear(dim, lora_dim, bias=False)  # V:225
            nn.init.kaiming_uniform_(self.LoRA_a.weight, a=math.sqrt(5))  # V:226 (redrawn by V:531)
            self.LoRA_b = nn.Linear(lora_dim, dim * 3, bias=False)  # V:227
            nn.init.zeros_(self.LoRA_b.weight)  # V:228 (redrawn by V:531)
        self.LoRA_drop = nn.Dropout(p=drop_rate_lora)  # V:242

    def forward(self, x):  # V:272-297
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)  # V:275
        q, k, v = qkv.unbind(0)  # V:276
        if not self.lora_identity:  # V:277-281: one update of all of q, k, v; no alpha / r
            qkv_delta = F.linear(self.LoRA_drop(x), self.LoRA_a.weight)
            qkv_delta = F.linear(qkv_delta, self.LoRA_b.weight).reshape(
                B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
            q_delta, k_delta, v_delta = qkv_delta.unbind(0)
            q, k, v = q + q_delta, k + k_delta, v + v_delta
        attn = (q @ k.transpose(-2, -1)) * self.scale  # V:290
        attn = attn.softmax(dim=-1)  # V:291
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)  # V:294
        return self.proj(x)  # V:295


class QuickGELU(nn.Module):
    def forward(self, x):  # A:8-10
        return x * torch.sigmoid(1.702 * x)


class NoahAdapter(nn.Module):
    """A:12-74 at its full width (set_sample_config with the super dim, A:48-59)."""

    def __init__(self, embed_dims, reduction_dims, drop_rate_adapter):
        super().__init__()
        self.dropout = nn.Dropout(p=drop_rate_adapter)  # A:28
        self.identity = reduction_dims == 0  # A:49-52
        if reduction_dims > 0:
            self.ln1 = nn.Linear(embed_dims, reduction_dims)  # A:32
            self.activate = QuickGELU()  # A:33
            self.ln2 = nn.Linear(reduction_dims, embed_dims)  # A:34

    def forward(self, x):  # A:62-74
        if self.identity:
            return x
        out = F.linear(x, self.ln1.weight, self.ln1.bias)  # A:68
        out = self.activate(out)  # A:69
        out = self.dropout(out)  # A:70
        out = F.linear(out, self.ln2.weight, self.ln2.bias)  # A:71
        return x + out  # A:72-74


class NoahMlp(nn.Module):
    """timm 0.5.4's Mlp (NOAH's requirements.txt pins timm==0.5.4; V:311): fc1, GELU, fc2 (its Dropouts are 0)."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class NoahBlock(nn.Module):
    """V:300-366 with visual prompts off (V:356-363 skipped). One DropPath module serves both branches (V:308),
    each call drawing its own mask. NOAH's timm 0.5.4 draws that mask as floor(keep + rand) where the installed
    timm uses bernoulli_(keep): the same distribution, other draws; the installed one is used so that both models
    see the same masks under one seed."""

    def __init__(self, dim, num_heads, drop_path, lora_dim, adapter_dim, drop_rate_lora, drop_rate_adapter):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)  # V:305, norm_layer V:407
        self.attn = NoahAttention(dim, num_heads, lora_dim, drop_rate_lora)  # V:306
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()  # V:308
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)  # V:309
        self.mlp = NoahMlp(dim, 4 * dim)  # V:310-311
        self.adapter = NoahAdapter(dim, adapter_dim, drop_rate_adapter)  # V:323-327

    def forward(self, x):
        x = x + self.drop_path(self.attn(self.norm1(x)))  # V:364
        x = x + self.adapter(self.drop_path(self.mlp(self.norm2(x))))  # V:365: the adapter outside drop path
        return x


class NoahViT(nn.Module):
    """V:369-661: class token, no distillation token, no pre-logits (V:438); forward_features V:625-648."""

    def __init__(self, lora_dim=0, adapter_dim=0, drop_rate_lora=0., drop_rate_adapter=0., drop_path_rate=0.):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, DIM, kernel_size=8, stride=8)  # timm 0.5.4 PatchEmbed (V:410-411)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, DIM))  # V:414
        self.pos_embed = nn.Parameter(torch.zeros(1, 16 + 1, DIM))  # V:416
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, DEPTH)]  # V:422
        self.blocks = nn.Sequential(*[NoahBlock(DIM, HEADS, dpr[i], lora_dim, adapter_dim, drop_rate_lora,
                                                drop_rate_adapter) for i in range(DEPTH)])  # V:423-427
        self.norm = nn.LayerNorm(DIM, eps=1e-6)  # V:428
        self.head = nn.Linear(DIM, 5)  # V:441

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)  # V:628-630
        x = x + self.pos_embed  # V:633 (pos_drop: --drop 0.0)
        x = self.norm(self.blocks(x))  # V:642-643
        return self.head(x[:, 0])  # V:646, V:660


def _init_vit_weights(module):
    """V:664-696 as `self.apply(_init_vit_weights)` (V:531) calls it: no name, so no head / pre_logits case."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=.02)  # V:686
        if module.bias is not None:
            nn.init.zeros_(module.bias)  # V:687-688
    elif isinstance(module, nn.LayerNorm):
        nn.init.zeros_(module.bias)
        nn.init.ones_(module.weight)


# petlbench (timm) parameter name -> NOAH reference name, for the wrapped tiny ViT
_RENAMES = [("patch_embed.proj.", "patch_embed."), ("attn.qkv.base.", "attn.qkv."),
            ("attn.qkv.lora_A.0", "attn.LoRA_a.weight"), ("attn.qkv.lora_B.0", "attn.LoRA_b.weight"),
            ("drop_path2.down.", "adapter.ln1."), ("drop_path2.up.", "adapter.ln2."),  # placement after_drop_path
            ("mlp.base.", "mlp."), ("mlp.down.", "adapter.ln1."), ("mlp.up.", "adapter.ln2.")]  # placement mlp


def noah_copy(model, **kwargs) -> NoahViT:
    """The NOAH reference holding exactly `model`'s tensors (load_state_dict strict: nothing left out)."""
    ref = NoahViT(**kwargs)
    state = {}
    for name, p in model.named_parameters():
        for old, new in _RENAMES:
            name = name.replace(old, new)
        state[name] = p.detach().clone()
    ref.load_state_dict(state, strict=True)
    return ref


def build(cfg, method, **kw):
    return petlbench.create_model("vit_tiny_patch16_224", method=method, num_classes=5, pretrained=False,
                                  method_cfg=cfg, **TINY_VIT, **kw)


def _seeded(model, x, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        return model(x)


def _max_diff(a, b):
    return (a - b).abs().max().item()


# --- LoRA -------------------------------------------------------------------------------------------------------
def test_noah_lora_equals_reference_eval():
    model = build(NOAH_LORA, "lora").eval()
    randomize_trainable(model, std=0.2)  # a branch large enough to matter (also randomises the zero head)
    ref = noah_copy(model, lora_dim=8, drop_rate_lora=0.1).eval()
    model, ref, x = model.double(), ref.double(), images(4).double()
    with torch.no_grad():
        y, y_ref = model(x), ref(x)
        for blk in ref.blocks:  # the same reference without LoRA: how much the update moves the output
            blk.attn.lora_identity = True
        y_plain = ref(x)
    assert y.abs().max() > 0.1
    assert _max_diff(y, y_ref) < 1e-10
    assert _max_diff(y, y_plain) > 1e-2  # so the agreement above is about the LoRA path


def test_fused_is_one_shared_A_and_differs_from_the_default_with_the_same_count():
    """Fused (NOAH) == split over q, k, v with one A shared by the three and B cut in thirds; petlbench's default
    (q and v split) has NOAH's count on ViT-B but is another function."""
    fused = build(NOAH_LORA, "lora").eval()
    randomize_trainable(fused, std=0.2)
    split = build({"targets": "qkv"}, "lora").eval()
    qv = build({}, "lora").eval()
    with torch.no_grad():
        for blk_f, blk_s, blk_qv in zip(fused.blocks, split.blocks, qv.blocks):
            f, s, v = blk_f.attn.qkv, blk_s.attn.qkv, blk_qv.attn.qkv
            for j in range(3):
                s.lora_A[j].copy_(f.lora_A[0])
                s.lora_B[j].copy_(f.lora_B[0][j * DIM:(j + 1) * DIM])
            for j, slot in enumerate((0, 2)):  # q and v: the same numbers, k left out
                v.lora_A[j].copy_(f.lora_A[0])
                v.lora_B[j].copy_(f.lora_B[0][slot * DIM:(slot + 1) * DIM])
        for m in (split, qv):  # the same backbone and head
            missing, unexpected = m.load_state_dict({k: p for k, p in fused.state_dict().items() if "lora" not in k},
                                                    strict=False)
            assert not unexpected and missing and all("lora_" in k for k in missing)
        x = images(2)
        y = fused(x)
        assert _max_diff(y, split(x)) < 1e-5
        assert _max_diff(y, qv(x)) > 1e-3


def test_noah_lora_equals_reference_train_dropout_and_drop_path():
    model = build(NOAH_LORA, "lora", drop_path_rate=0.5).train()
    randomize_trainable(model, std=0.2)
    ref = noah_copy(model, lora_dim=8, drop_rate_lora=0.1, drop_path_rate=0.5).train()
    assert isinstance(model.blocks[1].drop_path2, DropPath) and model.blocks[0].attn.qkv.drop.p == 0.1
    model, ref, x = model.double(), ref.double(), images(8).double()
    y = _seeded(model, x, 123)
    assert _max_diff(y, _seeded(ref, x, 123)) < 1e-10
    assert _max_diff(y, _seeded(model, x, 124)) > 1e-3  # the masks matter: another seed, other outputs
    assert _max_diff(y, model.eval()(x).detach()) > 1e-3


def test_noah_lora_init_is_trunc_normal_like_noahs_pipeline():
    """NOAH's kaiming / zeros init (V:226, V:228) is redrawn by the ViT's init (V:462 -> V:531 -> V:686)."""
    kw = dict(img_size=32, patch_size=8, depth=2, embed_dim=192, num_heads=3)
    model = petlbench.create_model("vit_tiny_patch16_224", method="lora", num_classes=5, method_cfg=NOAH_LORA, **kw)
    A = torch.cat([b.attn.qkv.lora_A[0].detach().flatten() for b in model.blocks])
    B = torch.cat([b.attn.qkv.lora_B[0].detach().flatten() for b in model.blocks])
    ref = NoahAttention(192, 3, 8, 0.1)
    ref.apply(_init_vit_weights)
    for t in (A, B, ref.LoRA_a.weight.detach().flatten(), ref.LoRA_b.weight.detach().flatten()):
        assert (t != 0).all()  # B is not zero at the start
        assert 0.018 < t.std().item() < 0.022
        assert abs(t.mean().item()) < 0.002
    default = petlbench.create_model("vit_tiny_patch16_224", method="lora", num_classes=5, **kw)
    assert all((b.attn.qkv.lora_B[i] == 0).all() for b in default.blocks for i in range(2))


@pytest.mark.parametrize("variant", ["vit", "swin"] + (["openclip"] if has_open_clip() else []))
def test_fused_lora_merges_exactly(variant):
    cfg = dict(NOAH_LORA, dropout=0.0)  # LoRA on nn.MultiheadAttention (open_clip) takes no dropout
    if variant == "vit":
        model, twin = build(cfg, "lora"), plain("vit_cls")
    else:
        backbone, kwargs = OTHER_VARIANTS[variant]
        model = petlbench.create_model(backbone, method="lora", num_classes=5, method_cfg=cfg, **kwargs)
        twin = plain(variant)
    model.eval()
    randomize_trainable(model, std=0.05)
    merged = petlbench.merge(model).eval()
    x = images(4)
    with torch.no_grad():
        y, y_merged = model(x), merged(x)
        assert _max_diff(y, y_merged) < 1e-5
        # the backbone without the update: far from both, so the agreement above is about the update
        twin.load_state_dict({k.replace(".base.", "."): v for k, v in model.state_dict().items() if "lora_" not in k},
                             strict=True)
        assert _max_diff(y, twin.eval()(x)) > 1e-3
        twin.load_state_dict(merged.state_dict(), strict=True)  # the merged model is a plain backbone again
        assert _max_diff(twin(x), y) < 1e-5
    types = collections.Counter(type(m) for m in merged.modules())
    assert types == collections.Counter(type(m) for m in twin.modules())


def test_fused_lora_wrapper_adds_one_update_to_all_of_qkv():
    backbone, kwargs = OTHER_VARIANTS["swin"]
    model = petlbench.create_model(backbone, method="lora", num_classes=5, method_cfg=NOAH_LORA, **kwargs).eval()
    w = model.layers[0].blocks[0].attn.qkv
    assert tuple(w.lora_A[0].shape) == (8, w.dim) and tuple(w.lora_B[0].shape) == (3 * w.dim, 8) and len(w.lora_A) == 1
    x = torch.randn(3, 5, w.dim)
    with torch.no_grad():
        expected = w.base(x) + x @ w.lora_A[0].t() @ w.lora_B[0].t()  # scale alpha / r = 1, as NOAH (V:278-281)
        assert _max_diff(w(x), expected) < 1e-6
        assert (x @ w.lora_A[0].t() @ w.lora_B[0].t())[..., w.dim:2 * w.dim].abs().max() > 0  # k is updated too


def test_lora_counts():
    r, d = 8, DIM
    model = build(NOAH_LORA, "lora")
    assert petlbench.count_trainable(model, include_head=False) == DEPTH * (d * r + r * 3 * d)
    assert petlbench.count_trainable(build({}, "lora"), include_head=False) == DEPTH * 2 * 2 * r * d
    assert 12 * (768 * 8 + 8 * 2304) == 294_912  # ViT-B/16: fused (NOAH) and q/v split agree


@pytest.mark.slow
@pytest.mark.parametrize("method,cfg,count", [("lora", NOAH_LORA, 294_912), ("adapter", NOAH_ADAPTER, 156_768)])
def test_noah_counts_vit_base(method, cfg, count):
    model = petlbench.create_model("vit_base_patch16_224", method=method, num_classes=100, method_cfg=cfg)
    assert petlbench.count_trainable(model, include_head=False) == count


def test_lora_config_checks():
    with pytest.raises(ConfigError, match="targets must be 'qkv'"):
        petlbench.get_method("lora", {"fused": True})  # targets default "qv"
    with pytest.raises(ConfigError, match="init"):
        petlbench.get_method("lora", {"init": "xavier"})


# --- Adapter ----------------------------------------------------------------------------------------------------
def test_noah_adapter_equals_reference_eval():
    model = build(NOAH_ADAPTER, "adapter").eval()
    randomize_trainable(model, std=0.3)
    ref = noah_copy(model, adapter_dim=8, drop_rate_adapter=0.1).eval()
    model, ref, x = model.double(), ref.double(), images(4).double()
    with torch.no_grad():
        y, y_ref = model(x), ref(x)
        for blk in ref.blocks:
            blk.adapter.identity = True
        y_plain = ref(x)
    assert y.abs().max() > 0.1
    assert _max_diff(y, y_ref) < 1e-10
    assert _max_diff(y, y_plain) > 1e-2


def test_noah_adapter_equals_reference_train_dropout_and_drop_path():
    model = build(NOAH_ADAPTER, "adapter", drop_path_rate=0.5).train()
    randomize_trainable(model, std=0.3)
    ref = noah_copy(model, adapter_dim=8, drop_rate_adapter=0.1, drop_path_rate=0.5).train()
    assert isinstance(model.blocks[1].drop_path2.base, DropPath) and model.blocks[1].drop_path2.drop.p == 0.1
    model, ref, x = model.double(), ref.double(), images(8).double()
    y = _seeded(model, x, 7)
    assert _max_diff(y, _seeded(ref, x, 7)) < 1e-10
    assert _max_diff(y, _seeded(model, x, 8)) > 1e-3


def test_adapter_placement_matters_only_under_drop_path():
    """petlbench's default placement (inside the MLP, so inside drop path) equals NOAH's in eval mode but not when
    drop path rescales the kept samples by 1/keep before (NOAH) or after (default) the nonlinear adapter."""
    cfg = dict(NOAH_ADAPTER, dropout=0.0)  # no dropout masks: both placements then draw the same drop-path masks
    noah = build(cfg, "adapter", drop_path_rate=0.5)
    randomize_trainable(noah, std=0.3)
    inside = build(dict(cfg, placement="mlp"), "adapter", drop_path_rate=0.5)
    ref = noah_copy(noah, adapter_dim=8, drop_path_rate=0.5)
    # the adapter: drop_path2.down -> mlp.down; the MLP: mlp.fc1 -> mlp.base.fc1
    rename = {".drop_path2.": ".mlp.", ".mlp.": ".mlp.base."}
    inside.load_state_dict({next((k.replace(a, b) for a, b in rename.items() if a in k), k): v
                            for k, v in noah.state_dict().items()}, strict=True)
    x = images(8)
    with torch.no_grad():
        for m in (noah, inside, ref):
            m.eval()
        assert _max_diff(noah(x), inside(x)) < 1e-5 and _max_diff(noah(x), ref(x)) < 1e-5
        for m in (noah, inside, ref):
            m.train()
        y_ref = _seeded(ref, x, 3)
        assert _max_diff(_seeded(noah, x, 3), y_ref) < 1e-5
        assert _max_diff(_seeded(inside, x, 3), y_ref) > 1e-3


def test_noah_adapter_init():
    kw = dict(img_size=32, patch_size=8, depth=2, embed_dim=192, num_heads=3)
    model = petlbench.create_model("vit_tiny_patch16_224", method="adapter", num_classes=5, method_cfg=NOAH_ADAPTER,
                                   **kw)
    adapters = [b.drop_path2 for b in model.blocks]
    ref = NoahAdapter(192, 8, 0.1)
    ref.apply(_init_vit_weights)  # A:38-45's xavier / normal(1e-6) redrawn by V:531
    downs = [torch.cat([a.down.weight.detach().flatten() for a in adapters]), ref.ln1.weight.detach().flatten()]
    ups = [torch.cat([a.up.weight.detach().flatten() for a in adapters]), ref.ln2.weight.detach().flatten()]
    for t in downs + ups:
        assert (t != 0).all()  # up is not zero at the start
        assert 0.017 < t.std().item() < 0.023
    for bias in [a.down.bias for a in adapters] + [a.up.bias for a in adapters] + [ref.ln1.bias, ref.ln2.bias]:
        assert (bias == 0).all()
    default = petlbench.create_model("vit_tiny_patch16_224", method="adapter", num_classes=5, **kw)
    assert all((b.mlp.up.weight == 0).all() for b in default.blocks)


def test_quickgelu():
    model = build(NOAH_ADAPTER, "adapter")
    act = model.blocks[0].drop_path2.act
    x = torch.linspace(-4, 4, 101)
    assert _max_diff(act(x), QuickGELU()(x)) < 1e-7 and _max_diff(act(x), F.gelu(x)) > 1e-3


def test_adapter_after_drop_path_on_swin_and_where_it_is_refused():
    backbone, kwargs = OTHER_VARIANTS["swin"]
    model = petlbench.create_model(backbone, method="adapter", num_classes=5, method_cfg=NOAH_ADAPTER, **kwargs).eval()
    wrapped = [n for n, m in model.named_modules() if n.endswith("drop_path2") and hasattr(m, "down")]
    assert len(wrapped) == sum(len(layer.blocks) for layer in model.layers) and len(wrapped) > 0
    assert torch.isfinite(model(images(2))).all()
    for variant in ["convnext"] + (["openclip"] if has_open_clip() else []):
        backbone, kwargs = OTHER_VARIANTS[variant]
        with pytest.raises(PETLBenchError, match="after_drop_path"):
            petlbench.create_model(backbone, method="adapter", num_classes=5, method_cfg=NOAH_ADAPTER, **kwargs)


def test_adapter_config_checks():
    with pytest.raises(ConfigError, match="sequential"):
        petlbench.get_method("adapter", {"placement": "after_drop_path", "style": "parallel"})


# --- defaults stay what they were -------------------------------------------------------------------------------
def test_defaults_unchanged():
    lora, adapter, vpt = (petlbench.get_method(m).cfg for m in ("lora", "adapter", "vpt"))
    assert vars(lora) == dict(rank=8, alpha=8.0, targets="qv", dropout=0.0, fused=False, init="lora")
    assert vars(adapter) == dict(dim=8, style="sequential", scale=None, act="relu", dropout=0.0, init="zero_up",
                                 placement="mlp")
    assert vpt.dropout == 0.1  # NOAH's --drop_rate_prompt=0.1 (VPT's own config default is 0.0)
    shapes = {n: tuple(p.shape) for n, p in build({}, "lora").named_parameters() if p.requires_grad}
    head = {"head.weight": (5, DIM), "head.bias": (5,)}
    assert shapes == {**{f"blocks.{i}.attn.qkv.lora_{m}.{j}": (8, DIM) if m == "A" else (DIM, 8)
                         for i in range(DEPTH) for m in "AB" for j in range(2)}, **head}
    shapes = {n: tuple(p.shape) for n, p in build({}, "adapter").named_parameters() if p.requires_grad}
    per_block = [("down.weight", (8, DIM)), ("down.bias", (8,)), ("up.weight", (DIM, 8)), ("up.bias", (DIM,))]
    assert shapes == {**{f"blocks.{i}.mlp.{k}": s for i in range(DEPTH) for k, s in per_block}, **head}
    a = build({}, "adapter").blocks[0].mlp
    assert isinstance(a.act, nn.ReLU) and a.scale == 1.0 and a.drop.p == 0.0
