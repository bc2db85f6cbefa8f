"""petlbench's `noah` (supernet, sub-networks, evolutionary search) equals NOAH's code (github ZhangYuanhan-AI/NOAH).

The references below are minimal transcriptions of NOAH's code, with file:line of its commit e9c55f3:
  V = model/supernet_vision_transformer_timm.py (Attention, Block, VisionTransformer with their super modules)
  A = model/module/adapter_super.py (QuickGELU, AdapterSuper)
  E = evolution.py (decode_cand_tuple, EvolutionSearcher)
A tiny timm ViT supernet is built through petlbench, its weights are copied into the reference (strictly: every
reference tensor is assigned), and outputs are compared in float64 for the same sub-network, in eval mode and in
train mode (dropout and drop path on, both models seeded alike). The search is compared candidate by candidate
under the same seed, with a fake evaluator.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from test_noah_variants import NoahMlp, QuickGELU, _max_diff, _seeded  # the transcription pieces both share
from timm.layers import DropPath

import petlbench
from petlbench.errors import ConfigError
from petlbench.methods import noah
from petlbench.methods.noah import Evolution, EvolutionSettings, NOAHConfig, arch_params, format_arch, set_arch

from tiny import images, randomize_trainable

DIM, HEADS, DEPTH, SUPER = 32, 2, 4, 8
TINY_VIT = dict(img_size=32, patch_size=8, depth=DEPTH, embed_dim=DIM, num_heads=HEADS)
CFG = dict(super_prompt=SUPER, super_lora=SUPER, super_adapter=SUPER, prompt_dims="2,4,8", lora_dims="2,4,8",
           adapter_dims="2,4,8", prompt_depths="1,3,4", lora_depths="1,3,4", adapter_depths="1,3,4")
# sub-networks: per-layer prompt counts that differ, zeros inside (earlier prompts carried on), none at all
ARCHS = [
    {"prompt": [8, 2, 4, 8], "lora": [2, 8, 4, 8], "adapter": [4, 2, 8, 8]},
    {"prompt": [4, 0, 2, 8], "lora": [0, 4, 0, 2], "adapter": [8, 0, 0, 4]},
    {"prompt": [0, 3, 0, 5], "lora": [8, 0, 0, 0], "adapter": [0, 0, 0, 2]},
    {"prompt": [2, 4, 0, 0], "lora": [4, 4, 0, 0], "adapter": [2, 2, 2, 0]},
    {"prompt": [0, 0, 0, 0], "lora": [0, 0, 0, 0], "adapter": [0, 0, 0, 0]},
]


# --- NOAH, transcribed -----------------------------------------------------------------------------------------
class NoahAttention(nn.Module):
    """V:206-297 with prefix tuning off (PREFIX_DIM: 0, supernet-B_prompt.yaml:7; V:257-263, V:283-286 skipped).
    attn_drop / proj_drop are Dropout(0) in NOAH's runs (--drop 0.0, supernet_train_prompt.py:57): left out."""

    def __init__(self, dim, num_heads, lora_dim, drop_rate_lora):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5  # V:211-212
        self.qkv = nn.Linear(dim, dim * 3, bias=True)  # V:214; qkv_bias=True: V:380
        self.proj = nn.Linear(dim, dim)  # V:217
        self.LoRA_a = nn.Linear(dim, lora_dim, bias=False)  # V:225
        self.LoRA_b = nn.Linear(lora_dim, dim * 3, bias=False)  # V:227
        self.LoRA_drop = nn.Dropout(p=drop_rate_lora)  # V:242

    def set_sample_config(self, sample_LoRA_dim):  # V:248-255
        self.sample_LoRA_dim = sample_LoRA_dim
        self.LoRA_identity = sample_LoRA_dim == 0
        if not self.LoRA_identity:
            self.LoRA_a_weight = self.LoRA_a.weight[:sample_LoRA_dim, :]
            self.LoRA_b_weight = self.LoRA_b.weight[:, :sample_LoRA_dim]

    def calc_sampled_param_num(self):  # V:266-270
        return 0 if self.sample_LoRA_dim == 0 else self.LoRA_a_weight.numel() + self.LoRA_b_weight.numel()

    def forward(self, x):  # V:272-297
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)  # V:275
        q, k, v = qkv.unbind(0)
        if not self.LoRA_identity:  # V:277-281
            qkv_delta = F.linear(self.LoRA_drop(x), self.LoRA_a_weight)
            qkv_delta = F.linear(qkv_delta, self.LoRA_b_weight).reshape(
                B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
            q_delta, k_delta, v_delta = qkv_delta.unbind(0)
            q, k, v = q + q_delta, k + k_delta, v + v_delta
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)  # V:290-291
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))  # V:294-295


class NoahAdapterSuper(nn.Module):
    """A:12-80 (its xavier / normal init, A:38-45, is overwritten by the copied weights)."""

    def __init__(self, embed_dims, reduction_dims, drop_rate_adapter):
        super().__init__()
        self.dropout = nn.Dropout(p=drop_rate_adapter)  # A:28
        self.ln1 = nn.Linear(embed_dims, reduction_dims)  # A:32
        self.activate = QuickGELU()  # A:33
        self.ln2 = nn.Linear(reduction_dims, embed_dims)  # A:34

    def set_sample_config(self, sample_embed_dim):  # A:48-59
        self.sample_embed_dim = sample_embed_dim
        self.identity = sample_embed_dim == 0
        if not self.identity:
            self.sampled_weight_0 = self.ln1.weight[:sample_embed_dim, :]
            self.sampled_bias_0 = self.ln1.bias[:sample_embed_dim]
            self.sampled_weight_1 = self.ln2.weight[:, :sample_embed_dim]
            self.sampled_bias_1 = self.ln2.bias

    def forward(self, x):  # A:62-74
        if self.identity:
            return x
        out = F.linear(x, self.sampled_weight_0, self.sampled_bias_0)
        out = self.dropout(self.activate(out))
        return x + F.linear(out, self.sampled_weight_1, self.sampled_bias_1)

    def calc_sampled_param_num(self):  # A:76-80
        if self.identity:
            return 0
        return (self.sampled_weight_0.numel() + self.sampled_bias_0.numel() + self.sampled_weight_1.numel()
                + self.sampled_bias_1.numel())


class NoahBlock(nn.Module):
    """V:300-366. One DropPath serves both branches (V:308), each call drawing its own mask (the installed timm's
    DropPath, so that both models draw the same masks under one seed; see test_noah_variants.py)."""

    def __init__(self, dim, num_heads, drop_path, prompt_dim, lora_dim, adapter_dim, drop_rates):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)  # V:305, norm_layer V:407
        self.attn = NoahAttention(dim, num_heads, lora_dim, drop_rates["lora"])  # V:306
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()  # V:308
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)  # V:309
        self.mlp = NoahMlp(dim, 4 * dim)  # V:310-311
        self.super_visual_prompt_dim = prompt_dim  # V:314
        self.visual_prompt_token = nn.Parameter(torch.zeros(1, prompt_dim, dim))  # V:317
        self.drop_prompt = nn.Dropout(p=drop_rates["prompt"])  # V:321
        self.adapter = NoahAdapterSuper(dim, adapter_dim, drop_rates["adapter"])  # V:323-327

    def set_sample_config(self, sample_LoRA_dim, sample_adapter_dim, sample_last_prompt_tuning_dim,
                          sample_prompt_tuning_dim):  # V:332-344
        self.attn.set_sample_config(sample_LoRA_dim)
        self.sample_visual_prompt_dim = sample_prompt_tuning_dim  # V:339-341 (super_visual_prompt_dim > 0)
        self.sample_last_prompt_tuning_dim = sample_last_prompt_tuning_dim
        self.adapter.set_sample_config(sample_adapter_dim)

    def calc_sampled_param_num(self):  # V:346-351
        if self.sample_visual_prompt_dim != 0:
            return self.visual_prompt_token[:, :self.sample_visual_prompt_dim, :].numel()
        return 0

    def forward(self, x):  # V:354-366
        B = x.shape[0]
        if self.sample_visual_prompt_dim != 0:
            visual_prompt_tokens = self.visual_prompt_token[:, :self.sample_visual_prompt_dim, :].expand(B, -1, -1)
            visual_prompt_tokens = self.drop_prompt(visual_prompt_tokens)
            if self.sample_last_prompt_tuning_dim == 0:
                x = torch.cat((x, visual_prompt_tokens), dim=1)
            else:
                x = torch.cat((x[:, :-self.sample_last_prompt_tuning_dim, :], visual_prompt_tokens), dim=1)
        x = x + self.drop_path(self.attn(self.norm1(x)))  # V:364
        x = x + self.adapter(self.drop_path(self.mlp(self.norm2(x))))  # V:365
        return x


class NoahViT(nn.Module):
    """V:369-661: class token, no distillation token, no pre-logits (V:438), IS_not_position_VPT False (the
    default of supernet_train_prompt.py:217 and evolution.py:521)."""

    def __init__(self, drop_rates, drop_path_rate=0.):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, DIM, kernel_size=8, stride=8)  # timm 0.5.4 PatchEmbed (V:410-411)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, DIM))  # V:414
        self.pos_embed = nn.Parameter(torch.zeros(1, 16 + 1, DIM))  # V:416
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, DEPTH)]  # V:422
        self.blocks = nn.Sequential(*[NoahBlock(DIM, HEADS, dpr[i], SUPER, SUPER, SUPER, drop_rates)
                                      for i in range(DEPTH)])  # V:423-427
        self.norm = nn.LayerNorm(DIM, eps=1e-6)  # V:428
        self.head = nn.Linear(DIM, 5)  # V:441
        self.visual_prompt_token = nn.Parameter(torch.zeros(1, SUPER, DIM))  # V:450
        self.visual_prompt_token_pos_embed = nn.Parameter(torch.zeros(1, SUPER, DIM))  # V:453
        self.drop_prompt = nn.Dropout(p=drop_rates["prompt"])  # V:456

    def set_sample_config(self, config):  # V:586-607
        self.sample_prompt_tuning_dim = config["visual_prompt_dim"]
        for i, block in enumerate(self.blocks):
            block.set_sample_config(
                sample_prompt_tuning_dim=self.sample_prompt_tuning_dim[i], sample_LoRA_dim=config["lora_dim"][i],
                sample_last_prompt_tuning_dim=self.sample_prompt_tuning_dim[i - 1] if i > 0
                else self.sample_prompt_tuning_dim[0],  # V:605
                sample_adapter_dim=config["adapter_dim"][i])

    def get_sampled_params_numel(self, config):  # V:609-623
        self.set_sample_config(config)
        numels = [m.calc_sampled_param_num() for _, m in self.named_modules() if hasattr(m, "calc_sampled_param_num")]
        if self.sample_prompt_tuning_dim[0] == 0:
            sample_prompt_tuning_param = 0
        else:  # V:618-619
            sample_prompt_tuning_param = (self.visual_prompt_token[:, :self.sample_prompt_tuning_dim[0], :].numel()
                                          + self.visual_prompt_token_pos_embed.numel())
        return sum(numels) + sample_prompt_tuning_param

    def forward(self, x):  # V:625-661
        B = x.shape[0]
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat((self.cls_token.expand(B, -1, -1), x), dim=1)  # V:628-630
        x = x + self.pos_embed  # V:633 (pos_drop: --drop 0.0)
        if self.sample_prompt_tuning_dim[0] != 0:  # V:635-640
            visual_prompt_tokens = self.visual_prompt_token[:, :self.sample_prompt_tuning_dim[0], :].expand(B, -1, -1)
            visual_prompt_tokens = visual_prompt_tokens + self.visual_prompt_token_pos_embed[
                :, :self.sample_prompt_tuning_dim[0], :]
            visual_prompt_tokens = self.drop_prompt(visual_prompt_tokens)
            x = torch.cat((x, visual_prompt_tokens), dim=1)
        x = self.norm(self.blocks(x))  # V:642-643
        return self.head(x[:, 0])  # V:646, V:660


def noah_config(arch):
    """NOAH's config dict (set_sample_config, V:589-598) for one of our archs; prefix tuning off."""
    return {"visual_prompt_dim": arch["prompt"], "lora_dim": arch["lora"], "adapter_dim": arch["adapter"],
            "prefix_dim": [0] * DEPTH}


# petlbench (timm) parameter name -> NOAH reference name, for the wrapped tiny ViT
_RENAMES = [(".base.", "."), ("patch_embed.proj.", "patch_embed."), ("attn.qkv.lora_A", "attn.LoRA_a.weight"),
            ("attn.qkv.lora_B", "attn.LoRA_b.weight"), ("drop_path2.down.", "adapter.ln1."),
            ("drop_path2.up.", "adapter.ln2."), (".prompts", ".visual_prompt_token")]


def noah_copy(model, drop_rates=None, drop_path_rate=0.) -> NoahViT:
    """The NOAH reference holding exactly `model`'s tensors (load_state_dict strict: nothing left out). The ViT's
    own first-layer prompts and their position embedding, which petlbench does not build, get random values."""
    ref = NoahViT(drop_rates or {"lora": 0., "prompt": 0., "adapter": 0.}, drop_path_rate)
    state = {}
    for name, p in model.named_parameters():
        for old, new in _RENAMES:
            name = name.replace(old, new)
        state[name] = p.detach().clone()
    state["visual_prompt_token"] = torch.randn(1, SUPER, DIM, dtype=state["pos_embed"].dtype)
    state["visual_prompt_token_pos_embed"] = torch.randn(1, SUPER, DIM, dtype=state["pos_embed"].dtype)
    ref.load_state_dict(state, strict=True)
    return ref


def build(cfg=None, **kw):
    return petlbench.create_model("vit_tiny_patch16_224", method="noah", num_classes=5, pretrained=False,
                                  method_cfg=dict(CFG, **(cfg or {})), **TINY_VIT, **kw)


# --- the supernet equals NOAH's for each sub-network -----------------------------------------------------------
def test_supernet_equals_noah_eval():
    model = build().eval()
    randomize_trainable(model, std=0.2)  # modules large enough to matter (also randomises the zero head)
    ref = noah_copy(model).eval()
    model, ref, x = model.double(), ref.double(), images(4).double()
    outputs = []
    with torch.no_grad():
        for arch in ARCHS + [noah.largest_arch(NOAHConfig(**CFG), DEPTH)]:
            set_arch(model, arch)
            ref.set_sample_config(noah_config(arch))
            y = model(x)
            assert _max_diff(y, ref(x)) < 1e-10, arch
            outputs.append(y)
        ref.visual_prompt_token.add_(1.0)  # NOAH's first-layer prompts: replaced by block 0's, they change nothing
        ref.visual_prompt_token_pos_embed.add_(1.0)
        ref.set_sample_config(noah_config(ARCHS[0]))
        assert _max_diff(ref(x), outputs[0]) < 1e-10
        set_arch(model, None)  # eval with no sub-network set: the largest
        assert _max_diff(model(x), outputs[-1]) == 0
    assert outputs[0].abs().max() > 0.1
    for y in outputs[:-2]:  # each sub-network is another function, and none is the plain backbone's
        assert _max_diff(y, outputs[-2]) > 1e-2


def test_supernet_equals_noah_train_dropout_and_drop_path():
    """Both seeded alike draw the same prompt-dropout and drop-path masks. The LoRA and adapter dropouts act on
    every token: they match where no prompts move the token positions (the last two sub-networks here)."""
    rates = {"lora": 0.2, "prompt": 0.3, "adapter": 0.2}
    for archs, lora_adapter in ((ARCHS[:3], 0.0), ([ARCHS[2] | {"prompt": [0] * DEPTH}, ARCHS[4]], 0.2)):
        cfg = dict(lora_dropout=lora_adapter, adapter_dropout=lora_adapter, prompt_dropout=rates["prompt"])
        model = build(cfg, drop_path_rate=0.5).train()
        randomize_trainable(model, std=0.2)
        ref = noah_copy(model, dict(rates, lora=lora_adapter, adapter=lora_adapter), drop_path_rate=0.5).train()
        ref.drop_prompt.p = 0.0  # NOAH's first-layer prompts are replaced by block 0's: their dropout only draws
        model, ref, x = model.double(), ref.double(), images(8).double()
        for arch in archs:
            set_arch(model, arch)
            ref.set_sample_config(noah_config(arch))
            y = _seeded(model, x, 123)
            assert _max_diff(y, _seeded(ref, x, 123)) < 1e-10, arch
            assert _max_diff(y, _seeded(model, x, 124)) > 1e-3  # the masks matter: another seed, other outputs


# --- a retrained sub-network is the supernet's slice -----------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS[:4])
def test_retrained_subnet_equals_supernet_slice(arch):
    supernet = build(drop_path_rate=0.3)
    randomize_trainable(supernet, std=0.2)
    sub = build({"arch": format_arch(arch)}, drop_path_rate=0.3)
    source = {n.replace(".base.", "."): p for n, p in supernet.named_parameters()}
    with torch.no_grad():
        for name, p in sub.named_parameters():  # every tensor of the sub-network: the first rows / columns
            p.copy_(source[name.replace(".base.", ".")][tuple(slice(0, n) for n in p.shape)])
    supernet, sub, x = supernet.double(), sub.double(), images(4).double()
    set_arch(supernet, arch)
    for mode in (False, True):
        supernet.train(mode), sub.train(mode)
        assert _max_diff(_seeded(sub, x, 5), _seeded(supernet, x, 5)) < 1e-10
    for i, blk in enumerate(sub.blocks):  # a block with 0 gets no module
        assert (blk.prompts is None) == (arch["prompt"][i] == 0)
        assert isinstance(blk.base.attn.qkv, noah.SuperLoRA) == (arch["lora"][i] > 0)
        assert isinstance(blk.base.drop_path2, noah.SuperAdapter) == (arch["adapter"][i] > 0)
    # NOAH's count adds its first-layer prompts and their full position embedding, which petlbench does not build
    dead = (arch["prompt"][0] + SUPER) * DIM if arch["prompt"][0] else 0
    assert petlbench.count_trainable(sub, include_head=False) == arch_params(supernet, arch) - dead
    assert arch_params(sub, arch) == arch_params(supernet, arch)


def test_init_is_noahs():
    """Linear weights trunc_normal(0.02), biases 0 (V:531, V:686-688 redraw A:38-45 and V:226-228); prompts
    xavier-uniform on (1, P, d) (V:317-319): U(+-sqrt(6 / ((P + 1) d))), P the super size also when retrained."""
    kw = dict(TINY_VIT, embed_dim=192, num_heads=3)
    for cfg in ({}, {"arch": "prompt=10,0,5,1;lora=10,5,0,0;adapter=50,50,1,0"}):
        model = petlbench.create_model("vit_tiny_patch16_224", method="noah", num_classes=5, method_cfg=cfg, **kw)
        own = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("head")]
        weights = torch.cat([p.detach().flatten() for p in own if p.dim() == 2])
        assert (weights != 0).all() and 0.018 < weights.std().item() < 0.022
        assert all((p == 0).all() for p in own if p.dim() == 1)
        prompts = torch.cat([b.prompts.detach().flatten() for b in model.blocks if b.prompts is not None])
        bound = (6 / (101 * 192)) ** 0.5
        assert prompts.abs().max() <= bound and prompts.abs().max() > 0.95 * bound


# --- NOAH's parameter count ------------------------------------------------------------------------------------
def test_arch_params_is_noahs_get_sampled_params_numel():
    model = build()
    ref = noah_copy(model)
    for arch in ARCHS + [noah.largest_arch(NOAHConfig(**CFG), DEPTH)]:
        assert arch_params(model, arch) == ref.get_sampled_params_numel(noah_config(arch)), arch
    # by hand: block prompts 2 d, NOAH's first-layer ones (2 + P) d, LoRA 4 * 4 d, adapter 2 * 2 d + 2 + d; no head
    arch = {"prompt": [2, 0, 0, 0], "lora": [0, 4, 0, 0], "adapter": [0, 0, 2, 0]}
    assert arch_params(model, arch) == (2 + 2 + SUPER) * DIM + 16 * DIM + 4 * DIM + 2 + DIM


# --- sampling in training --------------------------------------------------------------------------------------
def test_training_draws_noahs_distribution_from_torch_rng():
    model = build({"lora_dropout": 0.0, "adapter_dropout": 0.0, "prompt_dropout": 0.0}).train()
    x = images(1)

    def draws(seed, n=30):
        torch.manual_seed(seed)
        out = []
        with torch.no_grad():
            for _ in range(n):
                model(x)
                out.append({k: list(v) for k, v in model.blocks[0].active.arch.items()})
        return out

    first = draws(0)
    assert first == draws(0) and first != draws(1)
    assert len({format_arch(a) for a in first}) > 20  # a fresh sub-network per forward
    for arch in first:
        for k in noah.KINDS:
            depth = sum(1 for v in arch[k] if v)
            assert depth in (1, 3, 4) and all(v in (2, 4, 8) for v in arch[k][:depth]) and arch[k][depth:] == [0] * (
                DEPTH - depth)
    choices = noah.search_space(NOAHConfig(**CFG), DEPTH)
    torch.manual_seed(0)
    many = [noah.sample_arch(choices) for _ in range(3000)]
    for k in noah.KINDS:  # depth uniform over its choices, then each size uniform over its choices
        depths = [sum(1 for v in a[k] if v) for a in many]
        assert all(abs(depths.count(d) / len(many) - 1 / 3) < 0.04 for d in (1, 3, 4))
        firsts = [a[k][0] for a in many]
        assert all(abs(firsts.count(v) / len(many) - 1 / 3) < 0.04 for v in (2, 4, 8))
    fixed = ARCHS[1]
    set_arch(model, fixed)  # fixed: no draws in training
    assert draws(0, 3) == [fixed] * 3
    set_arch(model, None)
    assert draws(0) == first
    model.eval()
    model(x)
    assert model.blocks[0].active.arch == noah.largest_arch(NOAHConfig(**CFG), DEPTH)


def test_depth_choices_above_the_model_depth_are_clamped():
    choices = noah.search_space(NOAHConfig(), 2)
    assert choices["visual_prompt_depth"] == [2, 2, 2, 2] and choices["depth"] == 2
    assert noah.largest_arch(NOAHConfig(), 2) == {"prompt": [100, 100], "lora": [100, 100], "adapter": [100, 100]}


# --- the search equals NOAH's EvolutionSearcher ----------------------------------------------------------------
def decode_cand_tuple(cand_tuple):  # E:25-27
    depth = cand_tuple[0]
    return (depth, list(cand_tuple[1:depth + 1]), list(cand_tuple[depth + 1:2 * depth + 1]),
            list(cand_tuple[2 * depth + 1:3 * depth + 1]), list(cand_tuple[3 * depth + 1:]))


class NoahSearcher:
    """E:29-329 without the model and the data: get_sampled_params_numel (E:100) and evaluate(...)['acc1']
    (E:114) are `count` and `evaluate`; prints and checkpoint files left out. python's global `random`, as NOAH."""

    def __init__(self, args, choices, evaluate, count):
        self.max_epochs, self.select_num, self.population_num = args.max_epochs, args.select_num, args.population_num
        self.m_prob, self.s_prob = args.m_prob, args.s_prob  # E:39, E:47
        self.crossover_num, self.mutation_num = args.crossover_num, args.mutation_num
        self.parameters_limits, self.min_parameters_limits = args.param_limits, args.min_param_limits  # E:42-43
        self.memory, self.vis_dict, self.epoch = [], {}, 0
        self.keep_top_k = {self.select_num: [], 50: []}  # E:50
        self.candidates, self.top_accuracies, self.offspring = [], [], []
        self.choices, self.evaluate, self.count = choices, evaluate, count

    def is_legal(self, cand):  # E:84-122
        if cand not in self.vis_dict:
            self.vis_dict[cand] = {}
        info = self.vis_dict[cand]
        if 'visited' in info:
            return False
        depth, visual_prompt_dim, lora_dim, adapter_dim, prefix_dim = decode_cand_tuple(cand)
        sampled_config = {'visual_prompt_dim': visual_prompt_dim, 'lora_dim': lora_dim, 'adapter_dim': adapter_dim,
                          'prefix_dim': prefix_dim}
        info['params'] = self.count(sampled_config) / 10. ** 6
        if info['params'] > self.parameters_limits:
            return False
        if info['params'] < self.min_parameters_limits:
            return False
        info['acc'] = self.evaluate(sampled_config)
        info['visited'] = True
        return True

    def update_top_k(self, candidates, *, k, key, reverse=True):  # E:124-130
        t = self.keep_top_k[k]
        t += candidates
        t.sort(key=key, reverse=reverse)
        self.keep_top_k[k] = t[:k]

    def stack_random_cand(self, random_func, *, batchsize=10):  # E:132-140
        while True:
            cands = [random_func() for _ in range(batchsize)]
            for cand in cands:
                if cand not in self.vis_dict:
                    self.vis_dict[cand] = {}
            for cand in cands:
                yield cand

    def get_random_cand(self):  # E:142-158
        cand_tuple = []
        depth = self.choices['depth']
        visual_prompt_depth = random.choice(self.choices['visual_prompt_depth'])
        lora_depth = random.choice(self.choices['lora_depth'])
        adapter_depth = random.choice(self.choices['adapter_depth'])
        cand_tuple.append(depth)
        cand_tuple += ([random.choice(self.choices['visual_prompt_dim']) for _ in range(visual_prompt_depth)]
                       + [0] * (depth - visual_prompt_depth))
        cand_tuple += [random.choice(self.choices['lora_dim']) for _ in range(lora_depth)] + [0] * (depth - lora_depth)
        cand_tuple += ([random.choice(self.choices['adapter_dim']) for _ in range(adapter_depth)]
                       + [0] * (depth - adapter_depth))
        cand_tuple += [0] * 12
        return tuple(cand_tuple)

    def get_random(self, num):  # E:160-169
        cand_iter = self.stack_random_cand(self.get_random_cand)
        while len(self.candidates) < num:
            cand = next(cand_iter)
            if not self.is_legal(cand):
                continue
            self.candidates.append(cand)

    def get_mutation(self, k, mutation_num, m_prob, s_prob):  # E:171-252
        res, max_iters = [], mutation_num * 10

        def mutate(dims, depth, key):  # E:181-198, repeated as E:201-217 and E:220-236 for LoRA and adapter
            random_s = random.random()
            if random_s < m_prob:
                random_s = random.random()
                cur_depth = depth
                for idx, i in enumerate(dims):
                    if i == 0:
                        cur_depth = idx
                        break
                if random_s < s_prob:
                    new_depth = random.choice(self.choices[key + '_depth'])
                else:
                    new_depth = cur_depth
                if new_depth > cur_depth:
                    dims = (dims[:cur_depth] + [random.choice(self.choices[key + '_dim'])
                                                for _ in range(new_depth - cur_depth)] + [0] * (depth - new_depth))
                else:
                    dims = dims[:new_depth] + [0] * (depth - new_depth)
            return dims

        def random_func():
            cand = list(random.choice(self.keep_top_k[k]))
            depth, visual_prompt_dim, lora_dim, adapter_dim, prefix_dim = decode_cand_tuple(cand)
            visual_prompt_dim = mutate(visual_prompt_dim, depth, 'visual_prompt')
            lora_dim = mutate(lora_dim, depth, 'lora')
            adapter_dim = mutate(adapter_dim, depth, 'adapter')
            return tuple([depth] + visual_prompt_dim + lora_dim + adapter_dim + [0] * 12)  # E:238-240

        cand_iter = self.stack_random_cand(random_func)
        while len(res) < mutation_num and max_iters > 0:
            max_iters -= 1
            cand = next(cand_iter)
            if not self.is_legal(cand):
                continue
            res.append(cand)
        return res

    def get_crossover(self, k, crossover_num):  # E:254-282
        res, max_iters = [], 10 * crossover_num

        def random_func():
            p1 = decode_cand_tuple(list(random.choice(self.keep_top_k[k])))
            p2 = decode_cand_tuple(list(random.choice(self.keep_top_k[k])))
            final = sum(list(random.choice([i, j]) for i, j in zip(p1[1:], p2[1:])), [])
            return tuple([p1[0]] + final)

        cand_iter = self.stack_random_cand(random_func)
        while len(res) < crossover_num and max_iters > 0:
            max_iters -= 1
            cand = next(cand_iter)
            if not self.is_legal(cand):
                continue
            res.append(cand)
        return res

    def search(self):  # E:284-329
        self.get_random(self.population_num)
        while self.epoch < self.max_epochs:
            self.memory.append([])
            for cand in self.candidates:
                self.memory[-1].append(cand)
            self.update_top_k(self.candidates, k=self.select_num, key=lambda x: self.vis_dict[x]['acc'])
            self.update_top_k(self.candidates, k=50, key=lambda x: self.vis_dict[x]['acc'])
            self.top_accuracies.append([self.vis_dict[cand]['acc'] for cand in self.keep_top_k[50]])
            mutation = self.get_mutation(self.select_num, self.mutation_num, self.m_prob, self.s_prob)
            crossover = self.get_crossover(self.select_num, self.crossover_num)
            self.offspring.append((len(mutation), len(crossover)))  # the test's, not NOAH's
            self.candidates = mutation + crossover
            self.get_random(self.population_num)
            self.epoch += 1


def fake_acc(prompt, lora, adapter):
    """A deterministic 'val top-1' in [0, 100) from the sub-network alone."""
    h = hashlib.sha256(repr((tuple(prompt), tuple(lora), tuple(adapter))).encode()).hexdigest()
    return int(h[:12], 16) / 16 ** 12 * 100


def fake_count(prompt, lora, adapter):
    return 1000 * sum(prompt) + 800 * sum(lora) + 600 * sum(adapter)


SEARCH = EvolutionSettings(max_epochs=5, select_num=6, population_num=20, m_prob=0.5, s_prob=0.7, crossover_num=8,
                           mutation_num=8, param_limit=0.05, min_param_limit=0.01)


def noah_search(seed, settings=SEARCH):
    args = SimpleNamespace(**{k: v for k, v in vars(settings).items() if "limit" not in k},
                           param_limits=settings.param_limit, min_param_limits=settings.min_param_limit)
    ref = NoahSearcher(args, noah.search_space(NOAHConfig(**CFG), DEPTH),
                       lambda c: fake_acc(c["visual_prompt_dim"], c["lora_dim"], c["adapter_dim"]),
                       lambda c: fake_count(c["visual_prompt_dim"], c["lora_dim"], c["adapter_dim"]))
    random.seed(seed)
    ref.search()
    return ref


def our_search(seed, settings=SEARCH, state=None, on_epoch=None, rng=None):
    evo = Evolution(noah.search_space(NOAHConfig(**CFG), DEPTH), settings, rng or random.Random(seed), state=state)
    calls = []

    def evaluate(arch):
        calls.append(format_arch(arch))
        return fake_acc(arch["prompt"], arch["lora"], arch["adapter"])

    return evo.run(evaluate, lambda a: fake_count(a["prompt"], a["lora"], a["adapter"]), on_epoch), calls


@pytest.mark.parametrize("seed", [0, 3])
def test_evolution_equals_noahs_searcher(seed):
    ref = noah_search(seed)
    ours, _ = our_search(seed)
    tuples = lambda xs: [tuple(x) for x in xs]  # noqa: E731
    assert [tuples(gen) for gen in ours["memory"]] == ref.memory  # the same candidates, epoch by epoch
    assert {int(k): tuples(v) for k, v in ours["keep_top_k"].items()} == ref.keep_top_k
    assert ours["history"] == ref.top_accuracies and tuples(ours["candidates"]) == ref.candidates
    assert ours["epoch"] == ref.epoch == SEARCH.max_epochs
    visited = {format_arch(dict(zip(noah.KINDS, decode_cand_tuple(c)[1:4]))) for c, v in ref.vis_dict.items()
               if "visited" in v}
    assert {k for k, v in ours["vis_dict"].items() if v.get("visited")} == visited
    assert len(ours["vis_dict"]) == len(ref.vis_dict)
    best = ref.keep_top_k[SEARCH.select_num][0]
    assert ours["best"] == dict(zip(noah.KINDS, decode_cand_tuple(best)[1:4]))
    assert ours["best_acc"] == ref.vis_dict[best]["acc"] and ours["best_params"] == int(
        ref.vis_dict[best]["params"] * 10 ** 6 + 0.5)
    assert ours["best_acc"] == max(max(h) for h in ours["history"])
    assert SEARCH.min_param_limit <= ours["best_params"] / 1e6 <= SEARCH.param_limit
    # mutation and crossover took part, and the limits rejected some
    assert all(m > 0 and c > 0 for m, c in ref.offspring)
    assert any("visited" not in v and "params" in v for v in ref.vis_dict.values())


def test_evolution_resumes_exactly():
    full, calls_full = our_search(7)
    saved = []
    our_search(7, dataclasses.replace(SEARCH, max_epochs=2), on_epoch=lambda s: saved.append(json.dumps(s)))
    assert [json.loads(s)["epoch"] for s in saved] == [1, 2]
    resumed, calls_rest = our_search(7, state=json.loads(saved[-1]), rng=random.Random(12345))
    assert json.dumps(resumed) == json.dumps(full)
    _, calls_first = our_search(7, dataclasses.replace(SEARCH, max_epochs=2))
    assert calls_first + calls_rest == calls_full  # nothing evaluated twice, nothing skipped


def test_evolution_defaults_and_search_space_are_noahs():
    assert vars(EvolutionSettings()) == dict(max_epochs=20, select_num=10, population_num=50, m_prob=0.2, s_prob=0.4,
                                             crossover_num=25, mutation_num=25, param_limit=0.64, min_param_limit=0.0)
    # evolution.py:618-631 over experiments/NOAH/supernet/supernet-B_prompt.yaml
    assert noah.search_space(NOAHConfig(), 12) == {
        "depth": 12, "super_prompt_tuning_dim": 100, "super_LoRA_dim": 100, "super_adapter_dim": 100,
        "super_prefix_dim": 0, "visual_prompt_dim": [5, 10, 50, 100], "lora_dim": [5, 10, 50, 100],
        "adapter_dim": [5, 10, 50, 100], "prefix_dim": [0], "visual_prompt_depth": [3, 6, 9, 12],
        "lora_depth": [3, 6, 9, 12], "adapter_depth": [3, 6, 9, 12], "prefix_depth": [0]}
    cfg = petlbench.get_method("noah").cfg
    assert (cfg.lora_dropout, cfg.prompt_dropout, cfg.adapter_dropout, cfg.arch) == (0.1, 0.1, 0.1, "")


# --- the arch text --------------------------------------------------------------------------------------------
def test_arch_text_round_trip():
    for arch in ARCHS:
        assert noah.parse_arch(format_arch(arch), DEPTH) == arch
    assert format_arch(ARCHS[1]) == "prompt=4,0,2,8;lora=0,4,0,2;adapter=8,0,0,4"
    spaced = noah.parse_arch(" lora=1,2 ; prompt=0,3;adapter= 5,0", 2)
    assert spaced == {"prompt": [0, 3], "lora": [1, 2], "adapter": [5, 0]}


@pytest.mark.parametrize("text,why", [
    ("prompt=1,2,3,4;lora=1,2,3,4;adaptr=1,2,3,4", "is not one of"),
    ("prompt=1,2,3,4;lora=1,2,3,4", "exactly prompt, lora, adapter"),
    ("prompt=1,2,3,4;prompt=1,2,3,4;adapter=1,2,3,4", "is not one of"),
    ("prompt=1,-2,3,4;lora=1,2,3,4;adapter=1,2,3,4", ">= 0"),
    ("prompt=1,2,3,4;lora=1,2,x,4;adapter=1,2,3,4", "integers"),
    ("prompt=1,2,3,4;lora=1,2,3,9;adapter=1,2,3,4", "above the supernet's super_lora=8"),
    ("5,10,50", "is not one of"),
])
def test_bad_arch_is_a_config_error_naming_arch(text, why):
    with pytest.raises(ConfigError, match=f"arch.*{why}"):
        petlbench.get_method("noah", dict(CFG, arch=text))


def test_arch_of_the_wrong_length_and_bad_set_arch():
    with pytest.raises(ConfigError, match="arch: prompt has 3 sizes, the model has 4 blocks"):
        build({"arch": "prompt=1,2,3;lora=1,2,3;adapter=1,2,3"})
    model = build()
    with pytest.raises(ConfigError, match="arch: adapter size 16 is above"):
        set_arch(model, ARCHS[0] | {"adapter": [16, 0, 0, 0]})
    with pytest.raises(ConfigError, match="arch: lora has 2 sizes"):
        set_arch(model, ARCHS[0] | {"lora": [1, 2]})
    with pytest.raises(ConfigError, match="needs a supernet"):
        set_arch(build({"arch": format_arch(ARCHS[0])}), ARCHS[0])
    with pytest.raises(ConfigError, match="not a NOAH model"):
        set_arch(petlbench.create_model("vit_tiny_patch16_224", method="vpt", num_classes=5, **TINY_VIT), None)


@pytest.mark.parametrize("cfg,why", [({"prompt_dims": "0,5"}, "prompt_dims"), ({"lora_dims": "5,200"}, "super_lora"),
                                     ({"adapter_depths": "a"}, "adapter_depths"), ({"super_prompt": 0}, "super_prompt"),
                                     ({"lora_dropout": 1.0}, "lora_dropout")])
def test_bad_search_space_is_a_config_error(cfg, why):
    with pytest.raises(ConfigError, match=why):
        petlbench.get_method("noah", cfg)
