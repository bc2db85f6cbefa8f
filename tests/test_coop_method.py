"""CoOp (methods/coop.py) against a transcription of CoOp's own code (KaiyangZhou/CoOp trainers/coop.py) on the
same open_clip weights: logits, the prompt assembly against the tokenizer, what trains, one optimizer step, the
eval cache, and the text tower kept by `create_model` (backbones.CLIPTextTower). A tiny random open_clip ViT
(tests/tiny.py OPENCLIP_TINY, text width 32)."""
from __future__ import annotations

import copy
import functools
import logging

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import petlbench
import petlbench.backbones as backbones
from petlbench.errors import ConfigError

from tiny import OPENCLIP_TINY, has_open_clip

pytestmark = [pytest.mark.clip, pytest.mark.skipif(not has_open_clip(), reason="needs open_clip_torch")]
NAMES = ["golden_retriever", "cat", "fire truck", "st. bernard", "crane (bird)"]
WIDTH = OPENCLIP_TINY["text_cfg"]["width"]


@pytest.fixture(autouse=True)
def tiny_clip(monkeypatch):
    """Every open_clip backbone built in these tests is the tiny one."""
    monkeypatch.setattr(backbones, "create_openclip", functools.partial(backbones.create_openclip, **OPENCLIP_TINY))


def build(seed: int = 0, names=NAMES, **cfg):
    torch.manual_seed(seed)
    return petlbench.create_model("openclip:ViT-B-16", method="coop", num_classes=len(names), method_cfg=cfg,
                                  zero_shot_classnames=list(names))


def open_clip_model(seed: int = 0):
    """The open_clip CLIP that `build(seed)` was made from (the same draws from the same seed)."""
    import open_clip

    torch.manual_seed(seed)
    return open_clip.create_model("ViT-B-16", pretrained=None, **OPENCLIP_TINY)


def tokenizer():
    import open_clip

    return open_clip.get_tokenizer("ViT-B-16")


# --- CoOp's code, transcribed onto open_clip's CLIP (clip.tokenize -> open_clip's tokenizer, _tokenizer.encode ->
# its encode; open_clip >= 3 runs the text transformer batch-first, so CoOp's two permutes, coop.py:48,50, go) ----
class TextEncoder(nn.Module):
    def __init__(self, clip_model):
        super().__init__()
        self.transformer = clip_model.transformer  # coop.py:40
        self.positional_embedding = clip_model.positional_embedding  # coop.py:41
        self.ln_final = clip_model.ln_final  # coop.py:42
        self.text_projection = clip_model.text_projection  # coop.py:43
        self.attn_mask = clip_model.attn_mask  # (OpenAI's CLIP builds it into its blocks; open_clip passes it)
        self.dtype = clip_model.positional_embedding.dtype  # coop.py:44

    def forward(self, prompts, tokenized_prompts):
        x = prompts + self.positional_embedding.type(self.dtype)  # coop.py:47
        x = self.transformer(x, attn_mask=self.attn_mask)  # coop.py:49
        x = self.ln_final(x).type(self.dtype)  # coop.py:51
        return x[torch.arange(x.shape[0]), tokenized_prompts.argmax(dim=-1)] @ self.text_projection  # coop.py:55


class PromptLearner(nn.Module):
    def __init__(self, classnames, clip_model, n_ctx, ctx_init, csc, position):
        super().__init__()
        tok = tokenizer()
        n_cls = len(classnames)  # coop.py:63
        dtype = clip_model.positional_embedding.dtype  # coop.py:66
        ctx_dim = clip_model.ln_final.weight.shape[0]  # coop.py:67
        if ctx_init:  # coop.py:72
            ctx_init = ctx_init.replace("_", " ")  # coop.py:74
            n_ctx = len(ctx_init.split(" "))  # coop.py:75
            prompt = tok(ctx_init)  # coop.py:76
            with torch.no_grad():
                embedding = clip_model.token_embedding(prompt).type(dtype)  # coop.py:78
            ctx_vectors = embedding[0, 1: 1 + n_ctx, :]  # coop.py:79
            prompt_prefix = ctx_init  # coop.py:80
        else:
            if csc:  # coop.py:84
                ctx_vectors = torch.empty(n_cls, n_ctx, ctx_dim, dtype=dtype)  # coop.py:86
            else:
                ctx_vectors = torch.empty(n_ctx, ctx_dim, dtype=dtype)  # coop.py:89
            nn.init.normal_(ctx_vectors, std=0.02)  # coop.py:90
            prompt_prefix = " ".join(["X"] * n_ctx)  # coop.py:91
        self.ctx = nn.Parameter(ctx_vectors)  # coop.py:96
        classnames = [name.replace("_", " ") for name in classnames]  # coop.py:98
        name_lens = [len(tok.encode(name)) for name in classnames]  # coop.py:99
        prompts = [prompt_prefix + " " + name + "." for name in classnames]  # coop.py:100
        tokenized_prompts = torch.cat([tok(p) for p in prompts])  # coop.py:102
        with torch.no_grad():
            embedding = clip_model.token_embedding(tokenized_prompts).type(dtype)  # coop.py:104
        self.register_buffer("token_prefix", embedding[:, :1, :])  # coop.py:109
        self.register_buffer("token_suffix", embedding[:, 1 + n_ctx:, :])  # coop.py:110
        self.n_cls, self.n_ctx = n_cls, n_ctx  # coop.py:112-113
        self.tokenized_prompts = tokenized_prompts  # coop.py:114
        self.name_lens = name_lens  # coop.py:115
        self.class_token_position = position  # coop.py:116

    def forward(self):
        ctx = self.ctx  # coop.py:119
        if ctx.dim() == 2:  # coop.py:120
            ctx = ctx.unsqueeze(0).expand(self.n_cls, -1, -1)  # coop.py:121
        prefix, suffix = self.token_prefix, self.token_suffix  # coop.py:123-124
        if self.class_token_position == "end":  # coop.py:126
            return torch.cat([prefix, ctx, suffix], dim=1)  # coop.py:127-134
        half_n_ctx = self.n_ctx // 2  # coop.py:137
        prompts = []
        for i in range(self.n_cls):  # coop.py:139, 161
            name_len = self.name_lens[i]  # coop.py:140
            prefix_i = prefix[i: i + 1, :, :]  # coop.py:141
            class_i = suffix[i: i + 1, :name_len, :]  # coop.py:142
            suffix_i = suffix[i: i + 1, name_len:, :]  # coop.py:143
            if self.class_token_position == "middle":  # coop.py:136
                ctx_i_half1 = ctx[i: i + 1, :half_n_ctx, :]  # coop.py:144
                ctx_i_half2 = ctx[i: i + 1, half_n_ctx:, :]  # coop.py:145
                prompt = torch.cat([prefix_i, ctx_i_half1, class_i, ctx_i_half2, suffix_i], dim=1)  # coop.py:146-155
            else:  # "front", coop.py:159
                ctx_i = ctx[i: i + 1, :, :]  # coop.py:166
                prompt = torch.cat([prefix_i, class_i, ctx_i, suffix_i], dim=1)  # coop.py:167-175
            prompts.append(prompt)
        return torch.cat(prompts, dim=0)  # coop.py:157, 177


class CustomCLIP(nn.Module):
    def __init__(self, classnames, clip_model, **cfg):
        super().__init__()
        self.prompt_learner = PromptLearner(classnames, clip_model, **cfg)  # coop.py:188
        self.tokenized_prompts = self.prompt_learner.tokenized_prompts  # coop.py:189
        self.image_encoder = clip_model.visual  # coop.py:190
        self.text_encoder = TextEncoder(clip_model)  # coop.py:191
        self.logit_scale = clip_model.logit_scale  # coop.py:192

    def forward(self, image):
        image_features = self.image_encoder(image)  # coop.py:196
        prompts = self.prompt_learner()  # coop.py:198
        text_features = self.text_encoder(prompts, self.tokenized_prompts)  # coop.py:200
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)  # coop.py:202
        text_features = text_features / text_features.norm(dim=-1, keepdim=True)  # coop.py:203
        logit_scale = self.logit_scale.exp()  # coop.py:205
        return logit_scale * image_features @ text_features.t()  # coop.py:206


CONFIGS = [dict(position=pos, csc=csc, ctx_init=init, n_ctx=5)
           for pos in ("end", "middle", "front") for csc in (False, True) for init in ("", "a photo of a")
           if not (csc and init)]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c['position']}-csc{c['csc']}-init{bool(c['ctx_init'])}")
def test_logits_are_coops(cfg):
    model = build(seed=3, **cfg).double().eval()
    with torch.no_grad():
        model.head.ctx.add_(torch.randn_like(model.head.ctx) * 0.5)  # randomised: not the words' embedding
    clip = open_clip_model(seed=3).double().eval()
    torch.manual_seed(7)
    ref = CustomCLIP(NAMES, clip, **cfg).double().eval()
    assert ref.prompt_learner.ctx.shape == model.head.ctx.shape
    with torch.no_grad():
        ref.prompt_learner.ctx.copy_(model.head.ctx)
        x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
        want, got = ref(x), model(x)
        assert torch.allclose(model.head.prompts(), ref.prompt_learner(), rtol=0, atol=0)
    assert want.shape == (4, len(NAMES))
    assert torch.allclose(got, want, rtol=1e-10, atol=1e-10), (got - want).abs().max()


def test_ctx_init_is_the_words_embedding():
    model = build(seed=1, ctx_init="a_photo_of_a")
    with torch.no_grad():
        words = open_clip_model(seed=1).token_embedding(tokenizer()(["a photo of a"]))[0, 1:5]  # coop.py:74-79
    assert torch.equal(model.head.ctx, words) and model.head.n_ctx == 4


@pytest.mark.parametrize("csc", [False, True])
def test_random_context_is_drawn_as_coop_draws_it(csc):
    model = build(seed=5, n_ctx=6, csc=csc)
    open_clip_model(seed=5)  # the backbone's draws, then CLIPClassifier's nn.Linear head (overwritten: zero-shot)
    nn.Linear(OPENCLIP_TINY["embed_dim"], len(NAMES))
    want = torch.empty((len(NAMES), 6, WIDTH) if csc else (6, WIDTH))  # coop.py:86, 89
    nn.init.normal_(want, std=0.02)  # coop.py:90
    assert torch.equal(model.head.ctx, want)


@pytest.mark.parametrize("ctx_init", ["", "a photo of a"])
def test_prompt_assembly_against_the_tokenizer(ctx_init):
    n = 4 if ctx_init else 7
    model = build(n_ctx=7, ctx_init=ctx_init)
    head, tok, emb = model.head, tokenizer(), model.text.token_embedding
    lead = ctx_init or " ".join(["X"] * n)
    tokens = tok([f"{lead} {name.replace('_', ' ')}." for name in NAMES])
    assert torch.equal(head.tokenized_prompts, tokens)
    for i, name in enumerate(NAMES):
        name_ids = tok.encode(name.replace("_", " "))
        ids = [tok.sot_token_id] + tok.encode(lead) + name_ids + tok.encode(".") + [tok.eot_token_id]
        if name == "crane (bird)":  # ")." is one BPE token: the prompt's name ends in it (CoOp's tokens too)
            ids = [tok.sot_token_id] + tok.encode(f"{lead} {name}.") + [tok.eot_token_id]
        assert tokens[i, :len(ids)].tolist() == ids and not tokens[i, len(ids):].any()
        assert len(tok.encode(lead)) == n and head.name_lens[i] == len(name_ids)
    with torch.no_grad():
        e = emb(tokens)
        assert torch.equal(head.token_prefix, e[:, :1])  # SOS
        assert torch.equal(head.token_suffix, e[:, 1 + n:])  # name, '.', EOT, padding
        p = head.prompts()
        ctx = head.ctx.expand(len(NAMES), -1, -1)
        assert torch.equal(p[:, :1], e[:, :1]) and torch.equal(p[:, 1:1 + n], ctx) and torch.equal(p[:, 1 + n:],
                                                                                                   e[:, 1 + n:])
    assert head.state_dict().keys() == {"ctx"}  # the buffers follow from the class names: not saved


@pytest.mark.parametrize("position", ["middle", "front"])
def test_middle_and_front_layouts(position):
    n = 5
    head = build(n_ctx=n, position=position, csc=True).head
    with torch.no_grad():
        p, pre, suf, ctx = head.prompts(), head.token_prefix, head.token_suffix, head.ctx
    for i, L in enumerate(head.name_lens):
        name, rest = suf[i, :L], suf[i, L:]
        parts = [pre[i], ctx[i, :n // 2], name, ctx[i, n // 2:], rest] if position == "middle" else \
            [pre[i], name, ctx[i], rest]
        assert torch.equal(p[i], torch.cat(parts))


def test_only_the_context_trains_and_counts():
    for csc, want in ((False, 16 * WIDTH), (True, len(NAMES) * 16 * WIDTH)):
        model = build(csc=csc)
        assert {n for n, p in model.named_parameters() if p.requires_grad} == {"head.ctx"}
        assert petlbench.method_of(model).trainable_parameters(model) == {"head.ctx"}
        assert list(model.head.parameters()) == [model.head.ctx] and list(model.head.children()) == []
        assert petlbench.count_trainable(model) == want and petlbench.count_trainable(model, include_head=False) == 0
        assert petlbench.count_paper(model) == want  # the tables' column: 8,192 on ViT-B/16 (M=16, width 512)
        assert model.head._text is model.text and not any(p.requires_grad for p in model.text.parameters())
    text = sum(p.numel() for p in model.text.parameters())
    plain = petlbench.create_model("openclip:ViT-B-16", method="linear", num_classes=len(NAMES),
                                   zero_shot_classnames=NAMES)
    assert not hasattr(plain, "text") and not hasattr(plain, "tokenizer")  # only a needs_text method keeps it
    assert sum(p.numel() for p in model.parameters()) == (sum(p.numel() for p in plain.parameters()) + text
                                                          - sum(p.numel() for p in plain.head.parameters()) + want)
    assert model.petl.backbone_kwargs == {"zero_shot_classnames": NAMES}  # keep_text is the method's, not recorded


def test_one_step_changes_the_context_only_and_lowers_the_loss():
    model = build(seed=4).train()
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % len(NAMES)
    before = {**{n: p.detach().clone() for n, p in model.named_parameters()},
              **{n: b.clone() for n, b in model.named_buffers()}}
    # (a random tiny text tower is sharply curved in its context: CoOp's own lr 0.002 overshoots here)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    after = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    assert {n for n in before if not torch.equal(before[n], after[n])} == {"head.ctx"}
    with torch.no_grad():
        assert F.cross_entropy(model(x), y) < loss


def test_eval_cache_is_exact_and_follows_the_context():
    model = build(seed=6).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        first = model(x)
        assert model.head._cache is not None
        assert torch.equal(model(x), first)
        model.head.ctx.add_(torch.randn_like(model.head.ctx))  # a step or load_tuned: in place, the version moves
        moved = model(x)
        fresh = model.head._text.logit_scale.exp() * F.normalize(model.visual(x), dim=-1) @ F.normalize(
            model.head.text_features(), dim=-1).t()
    assert not torch.allclose(moved, first) and torch.equal(moved, fresh)
    model.train()
    with torch.no_grad():
        model(x)
    assert model.head._cache is None  # training never keeps it
    twin = copy.deepcopy(model).double()
    assert twin.head._text is twin.text and twin.head.token_prefix.dtype == torch.float64
    assert twin.text.token_embedding.weight.dtype == torch.float64


def test_text_tower_is_clips():
    model = build(seed=8).double().eval()
    clip = open_clip_model(seed=8).double().eval()
    tokens = tokenizer()(["a photo of a cat.", "a blurry photo of a fire truck."])
    with torch.no_grad():  # (two models with equal weights: CPU matmuls may round apart in float32)
        assert torch.allclose(model.text.encode_text(tokens), clip.encode_text(tokens), rtol=0, atol=1e-12)
    assert model.classnames == tuple(NAMES) and callable(model.tokenizer)


def test_config_errors_and_missing_class_names(caplog):
    with pytest.raises(ConfigError, match="csc=True with ctx_init"):
        build(csc=True, ctx_init="a photo of a")
    with pytest.raises(ConfigError, match="n_ctx must be positive"):
        build(n_ctx=0)
    with pytest.raises(ConfigError, match="position"):
        build(position="start")
    with pytest.raises(ConfigError, match="longer than CLIP's 77 tokens"):
        build(n_ctx=70, names=["a very long class name of many words indeed", "b"])
    with caplog.at_level(logging.WARNING, logger="petlbench.methods.coop"):
        model = petlbench.create_model("openclip:ViT-B-16", method="coop", num_classes=3)
    assert "no class names" in caplog.text
    assert model.head.tokenized_prompts.shape == (3, 77)
    with pytest.raises(ConfigError, match="does not support vit backbones"):
        petlbench.create_model("vit_tiny_patch16_224", method="coop", num_classes=3, img_size=32, depth=1)
    bare = backbones.create_openclip("ViT-B-16", 3)
    with pytest.raises(ConfigError, match="needs CLIP's text tower"):
        petlbench.apply_method(bare, petlbench.get_method("coop"), backbone="openclip:ViT-B-16", num_classes=3)


def test_a_run_gives_the_task_class_names(tmp_path):
    from petlbench.run import build_model, resolve
    from petlbench.task import TASKS
    from petlbench.tasks.mini import generate

    root = generate(str(tmp_path / "mini"))
    spec = resolve("mini/digits", "coop", {"backbone": "openclip:ViT-B-16", "weights": "none", "drop_path": 0.0,
                                          "device": "cpu"})
    assert spec.protocol.head_init == "zeroshot"
    model = build_model(spec, root)
    assert model.classnames == tuple(TASKS.get("mini/digits").classnames)
    assert model.head.n_cls == len(model.classnames)
