"""CoOp (Context Optimization): Zhou et al. 2022, "Learning to Prompt for Vision-Language Models" (IJCV;
arXiv:2109.01134).

CLIP's zero-shot classifier with the words of its prompt learned: class i's prompt is the token embeddings
[SOS] [V]_1 ... [V]_M [CLASS_i] [.] [EOT] (class token at the end; or, `position`, in the middle of the context
or in front of it), sent through CLIP's frozen text tower; logits = exp(logit_scale) * normalize(image) @
normalize(text_i).T, i.e. CoOp's CustomCLIP (KaiyangZhou/CoOp trainers/coop.py:195-208). The context [V] is the
only parameter: one for all classes ("unified", M x width) or one per class (`csc`, n_cls x M x width).

`apply` replaces the classifier (`model.head`) with `PromptLearnerHead`, so the prompt learner is the head the
core trains. Counts: `count_trainable(model, include_head=False)` is 0 and the head count is the context, as for
linear probing; `paper_count` (the tables' parameter column, `params_paper`) is the context: M * 512 = 8,192 for
ViT-B/16 with the unified context (text width 512), n_cls * 8,192 with csc. The text tower (`model.text`, kept
by `create_model` because of `needs_text`) is frozen and counted in the backbone. Class names come from the task
(`protocol head_init=zeroshot` makes `run.build_model` pass them); a model built without them (the API's
`create_model` with no `zero_shot_classnames`) prompts with "class 0", "class 1", ... and logs a warning.

Schedule (CoOp's recipe, for `tasks/recipes`): SGD, lr 0.002, cosine over MAX_EPOCH epochs, one warm-up epoch at
a constant 1e-5, batch 32 (configs/trainers/CoOp/vit_b16.yaml:3,16-22; rn50.yaml the same), with Dassl's SGD
momentum 0.9, weight decay 5e-4, no Nesterov (Dassl.pytorch dassl/config/defaults.py:153-156, used by
dassl/optim/optimizer.py:105-113). Dassl's ConstantWarmupScheduler wraps torch's CosineAnnealingLR(T_max=
MAX_EPOCH) and is stepped once per epoch (trainers/coop.py:281-282; dassl/optim/lr_scheduler.py@c61a1b5:27-31,51-54,
128-141; WARMUP_RECOUNT=True, defaults.py:185): epoch 0 trains at 1e-5, epoch e >= 1 at
0.001 * (1 + cos(pi * (e - 1) / MAX_EPOCH)); MAX_EPOCH epochs in all (dassl/engine/trainer.py:242-252,320), the
last-epoch model is tested (TEST.FINAL_MODEL "last_step", defaults.py:216; trainer.py:402-412): petlbench's
`schedule=dassl_cosine`. Epochs by shots (COOP.md:17-43, shown with the rn50 configs; vit_b16 has the same three):
1 shot 50 (*_ep50.yaml:18), 2 and 4 shots 100 (*_ep100.yaml:18), 8 and 16 shots 200 (vit_b16.yaml:18); ImageNet
50 for every shot count (COOP.md:13). Inputs 224 bicubic, random resized crop + flip, CLIP's mean / std
(vit_b16.yaml:9-13); the train loader drops its last partial batch (dassl/data/data_manager.py:43). Seeds 1, 2, 3
(scripts/coop/main.sh:14). CoOp trains CLIP and the context in fp16 (TRAINER.COOP.PREC "fp16", train.py:94;
trainers/coop.py:229-231); petlbench keeps fp32 weights under the engine's AMP.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from petlbench.backbones import CLIPTextTower
from petlbench.errors import ConfigError
from petlbench.method import PETLMethod, register_method

log = logging.getLogger(__name__)


@dataclass
class CoOpConfig:
    # CoOp's defaults: train.py:91-95 (TRAINER.COOP.N_CTX 16, CSC False, CTX_INIT "", CLASS_TOKEN_POSITION "end")
    n_ctx: int = 16  # context tokens M; with ctx_init, M is its token count instead (trainers/coop.py:75)
    ctx_init: str = ""  # words initialising the context ("a photo of a": *_ctxv1.yaml:33); "" draws N(0, 0.02^2)
    csc: bool = False  # class-specific contexts (CoOp's "CSC"); False: one unified context
    position: Literal["end", "middle", "front"] = "end"  # where the class name goes (trainers/coop.py:126-177)

    def validate(self) -> str | None:
        if self.n_ctx < 1:
            return f"n_ctx must be positive, got {self.n_ctx}"
        if self.csc and self.ctx_init:
            return ("csc=True with ctx_init: CoOp's code then trains one unified context initialised from the words "
                    "(trainers/coop.py:72-80 does not read CSC); set ctx_init='' or csc=False")
        return None


def _autocast_key(device: torch.device):
    try:  # torch >= 2.4; without it the eval cache is off (`PromptLearnerHead._class_features`)
        return torch.is_autocast_enabled(device.type), torch.get_autocast_dtype(device.type)
    except (TypeError, AttributeError):
        return None


class PromptLearnerHead(nn.Module):
    """CoOp's PromptLearner and the classifier it makes (trainers/coop.py:60-208): `forward(f)`, f the normalised
    image embeddings, is exp(logit_scale) * f @ normalize(text features of the prompts).T.

    Its only parameter is the context `ctx`. The token embeddings of "X ... X <name>." (or of "<ctx_init> <name>.")
    are split as CoOp does into `token_prefix` (SOS) and `token_suffix` (name, '.', EOT, padding), buffers not
    saved (they follow from the frozen token embedding and the class names). The text tower is held without
    being a submodule, so the head's parameters are the context alone; it is the model's `text`, which `.to()`
    moves. Training recomputes the text features every forward; with autograd off in eval they are kept until a
    tensor they depend on changes (checked by version), which gives the same values."""

    def __init__(self, text: CLIPTextTower, tokenizer, classnames, n_ctx: int, ctx_init: str = "",
                 csc: bool = False, position: str = "end"):
        super().__init__()
        object.__setattr__(self, "_text", text)  # not registered: the core trains every head parameter
        emb = text.token_embedding
        device, dtype = emb.weight.device, emb.weight.dtype
        names = [n.replace("_", " ") for n in classnames]
        with torch.no_grad():
            if ctx_init:
                words = ctx_init.replace("_", " ")
                n_ctx = len(tokenizer.encode(words))  # CoOp counts words (one token each in its inits)
                ctx = emb(tokenizer([words]).to(device))[0, 1:1 + n_ctx].clone()
                lead = words
            else:
                shape = (len(names), n_ctx, emb.embedding_dim) if csc else (n_ctx, emb.embedding_dim)
                ctx = torch.empty(shape).normal_(std=0.02).to(device, dtype)
                lead = " ".join(["X"] * n_ctx)
            self.ctx = nn.Parameter(ctx)
            prompts = [f"{lead} {name}." for name in names]
            too_long = [p for p in prompts if len(tokenizer.encode(p)) + 2 > tokenizer.context_length]
            if too_long:
                raise ConfigError(f"coop: the prompt {too_long[0]!r} is longer than CLIP's "
                                  f"{tokenizer.context_length} tokens")
            tokens = tokenizer(prompts).to(device)
            embedded = emb(tokens)
        self.register_buffer("tokenized_prompts", tokens, persistent=False)
        self.register_buffer("token_prefix", embedded[:, :1], persistent=False)  # SOS
        self.register_buffer("token_suffix", embedded[:, 1 + n_ctx:], persistent=False)  # name, '.', EOT, padding
        self.n_cls, self.n_ctx, self.position = len(names), n_ctx, position
        self.name_lens = [len(tokenizer.encode(n)) for n in names]
        self.out_features = len(names)
        order = None if position == "end" else self._order(tokens.shape[1], device)
        self.register_buffer("order", order, persistent=False)
        self._cache: tuple | None = None

    def _order(self, length: int, device) -> torch.Tensor:
        """(n_cls, length, 1): per class, the positions of the "end" layout [SOS, ctx, name, rest] that make its
        "middle" [SOS, ctx[:M//2], name, ctx[M//2:], rest] or "front" [SOS, name, ctx, rest] prompt."""
        m, h, rows = self.n_ctx, self.n_ctx // 2, []
        for n in self.name_lens:
            ctx, name, rest = list(range(1, 1 + m)), list(range(1 + m, 1 + m + n)), list(range(1 + m + n, length))
            mid = ctx[:h] + name + ctx[h:] if self.position == "middle" else name + ctx
            rows.append([0] + mid + rest)
        return torch.tensor(rows, device=device)[..., None]

    def prompts(self) -> torch.Tensor:
        """(n_cls, context_length, width): the token embeddings of every class's prompt."""
        ctx = self.ctx if self.ctx.dim() == 3 else self.ctx.expand(self.n_cls, -1, -1)
        x = torch.cat([self.token_prefix, ctx.to(self.token_prefix.dtype), self.token_suffix], dim=1)
        return x if self.order is None else torch.take_along_dim(x, self.order, dim=1)

    def text_features(self) -> torch.Tensor:
        """(n_cls, embed_dim): CLIP's text embedding of each prompt (not normalised)."""
        return self._text(self.prompts(), self.tokenized_prompts)

    def _class_features(self) -> torch.Tensor:
        if self.training or torch.is_grad_enabled():
            self._cache = None
            return self.text_features()
        autocast = _autocast_key(self.ctx.device)
        if autocast is None:
            return self.text_features()
        tensors = [self.ctx, *self.buffers(), *self._text.parameters(), *self._text.buffers()]
        key = (autocast, tuple((t.data_ptr(), t._version) for t in tensors))
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self.text_features())
        return self._cache[1]

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        text = F.normalize(self._class_features(), dim=-1)
        return self._text.logit_scale.exp() * f @ text.t()


@register_method("coop")
class CoOp(PETLMethod):
    config_cls = CoOpConfig
    # the classifier is CLIP's text tower on learned prompts: only open_clip backbones have one
    only_families = ("openclip",)
    needs_text = True
    protocol = {"head_init": "zeroshot"}  # (so that `run.build_model` passes the task's class names)
    mergeable = False  # the classifier is computed by a transformer from the context
    paper = "Zhou et al. 2022, arXiv:2109.01134"
    display_name = "CoOp"

    def apply(self, model: nn.Module, family: str) -> nn.Module:
        text = getattr(model, "text", None)
        if not isinstance(text, CLIPTextTower):
            raise ConfigError("coop needs CLIP's text tower: build the model with petlbench.create_model (the "
                              "method's needs_text keeps it) or backbones.create_openclip(keep_text=True)")
        if not getattr(model, "normalize", True):
            raise ConfigError("coop: the model must normalise its image embeddings (CLIPClassifier normalize=True)")
        n_cls = model.get_classifier().out_features
        names = getattr(model, "classnames", None)
        if names is None:
            log.warning("coop: the model has no class names (zero_shot_classnames, or head_init=zeroshot in a run); "
                        "the prompts name the classes 'class 0' ... 'class %d'", n_cls - 1)
            names = [f"class {i}" for i in range(n_cls)]
        c = self.cfg
        model.head = PromptLearnerHead(text, model.tokenizer, names, c.n_ctx, c.ctx_init, c.csc, c.position)
        return model

    def trainable_parameters(self, model: nn.Module) -> set[str]:
        return {f"{name}.ctx" for name, m in model.named_modules() if isinstance(m, PromptLearnerHead)}

    def paper_count(self, model: nn.Module, trainable: int) -> int:
        """The context (the head is the prompt learner): n_ctx * width, times the classes with csc."""
        return sum(m.ctx.numel() for m in model.modules() if isinstance(m, PromptLearnerHead))
