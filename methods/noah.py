"""NOAH, Neural prOmpt seArcH: Zhang et al. 2022 (arXiv:2206.04673). Deep visual prompts, LoRA and an Adapter in
every block of a timm ViT; a supernet over their sizes, an evolutionary search for a sub-network, a retrain of it.

Per block i and sub-network (p_i prompts, r_i LoRA rank, h_i adapter width; 0 = none), as NOAH's code at commit
e9c55f3, V = model/supernet_vision_transformer_timm.py, A = model/module/adapter_super.py:
  LoRA     qkv(x) + B[:, :r] A[:r] drop(x): one A (r x d), B (3d x r), no scaling (V:254-255, V:277-281)
  adapter  x + ada(drop_path(mlp(norm2(x)))), ada(z) = z + up[:, :h](drop(QuickGELU(down[:h] z))) (V:365, A:55-74)
  prompts  p_i tokens replace the previous block's p_{i-1} prompts; after a block without prompts they are added
           to the earlier ones, which a block without prompts passes on (V:356-363, V:605).
NOAH appends prompts after the patch tokens and keeps them to the end; here they sit after the class / register
tokens (as VPT's, where the segmentation backbone expects them) and the last block drops them. Attention and the
per-token layers do not see token order, so outputs are NOAH's (float64, up to rounding); in training the LoRA and
adapter dropout masks fall on other token positions (the same distribution). NOAH's ViT also draws first-layer
prompts with a position embedding (V:450-454, V:635-640) that block 0 always replaces (V:605 gives it its own
count as the previous one): they never reach the output and are not built; `arch_params` counts them as NOAH does.

Supernet (`arch=""`): modules at the super sizes; a sub-network of size k uses the first k rows / columns / tokens
(V:254-255, A:55-59, V:357). In training every forward draws a sub-network from NOAH's `sample_configs`
distribution (supernet_engine_prompt.py:19-26) with torch's global CPU generator, where NOAH uses python `random`
seeded with the epoch (:61): petlbench restores torch's RNG on resume, so a resumed run draws the same sequence.
Depth choices above the model's depth are clamped to it. In eval mode it runs the largest sub-network (max size,
max depth); NOAH evaluates its supernet on one randomly drawn sub-network (:148-151). `set_arch` fixes one.
Retrain (`arch` set): modules at exactly the chosen sizes, none where 0. NOAH retrains its supernet class with the
sub-network set (supernet_train_prompt.py:387-389); the unused slices never reach the output, so the function is the
same and the count is the sub-network's own. Init as NOAH's ViT init leaves it (V:531, V:686-688): Linear weights
trunc_normal(0.02), biases 0; prompts xavier-uniform at the super size (V:317-319): U(+-sqrt(6 / ((P + 1) d))).
Search: `Evolution` (NOAH's evolution.py EvolutionSearcher), resumable. Not mergeable: prompts lengthen the sequence.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import QuickGELU, trunc_normal_

from petlbench.config import not_positive, not_probability
from petlbench.errors import ConfigError
from petlbench.method import PETLMethod, Wrapper, register_method
from petlbench.nas import Supernet
from petlbench.sites import find_sites, replace_module

KINDS = ("prompt", "lora", "adapter")
_NOAH = {"prompt": "visual_prompt", "lora": "lora", "adapter": "adapter"}  # its choices keys: {_NOAH[k]}_dim / _depth
_PREFIX = 12  # NOAH's candidate tuples end with 12 prefix-tuning sizes, always 0 (evolution.py:156, :238)
Arch = dict[str, list[int]]


@dataclass
class NOAHConfig:
    # "": the supernet; else a sub-network "prompt=5,10,...;lora=...;adapter=...", one size per block (0: none)
    arch: str = ""
    # SUPERNET of experiments/NOAH/supernet/supernet-B_prompt.yaml:4-6, the file NOAH's supernet and search scripts use
    super_prompt: int = 100
    super_lora: int = 100
    super_adapter: int = 100
    # SEARCH_SPACE of the same file: sizes :10-24, depths :29-43. (The VTAB-1k sub-networks NOAH published,
    # experiments/NOAH/subnet/VTAB/*.yaml, have sizes 1, 5, 10: supernet-B_prompt_VTAB.yaml:10-21.)
    prompt_dims: str = "5,10,50,100"
    lora_dims: str = "5,10,50,100"
    adapter_dims: str = "5,10,50,100"
    prompt_depths: str = "3,6,9,12"
    lora_depths: str = "3,6,9,12"
    adapter_depths: str = "3,6,9,12"
    # supernet_train_prompt.py:207-209 (--drop_rate_LoRA, --drop_rate_prompt, --drop_rate_adapter)
    lora_dropout: float = 0.1
    prompt_dropout: float = 0.1
    adapter_dropout: float = 0.1

    def validate(self) -> str | None:
        problem = not_positive(super_prompt=self.super_prompt, super_lora=self.super_lora,
                               super_adapter=self.super_adapter) or not_probability(
            lora_dropout=self.lora_dropout, prompt_dropout=self.prompt_dropout, adapter_dropout=self.adapter_dropout)
        if problem:
            return problem
        try:
            for k in KINDS:
                dims = _ints(getattr(self, f"{k}_dims"), f"{k}_dims")
                _ints(getattr(self, f"{k}_depths"), f"{k}_depths")
                if max(dims) > _supers(self)[k]:
                    return f"{k}_dims {max(dims)} is above super_{k}={_supers(self)[k]}"
            if self.arch:
                parse_arch(self.arch, None, _supers(self))
        except ConfigError as e:
            return str(e)
        return None


def _ints(text: str, name: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise ConfigError(f"{name}={text!r} must be positive integers separated by commas")
    return values


def _supers(cfg: NOAHConfig) -> dict[str, int]:
    return {"prompt": cfg.super_prompt, "lora": cfg.super_lora, "adapter": cfg.super_adapter}


def _check_arch(arch: Mapping[str, list[int]], depth: int | None, limits: Mapping[str, int] | None) -> None:
    if set(arch) != set(KINDS):
        raise ConfigError(f"arch must give exactly {', '.join(KINDS)}; got {', '.join(arch) or 'nothing'}")
    for k in KINDS:
        v = arch[k]
        if depth is not None and len(v) != depth:
            raise ConfigError(f"arch: {k} has {len(v)} sizes, the model has {depth} blocks")
        if any(not isinstance(x, int) or x < 0 for x in v):
            raise ConfigError(f"arch: {k} sizes must be integers >= 0, got {v}")
        if limits is not None and v and max(v) > limits[k]:
            raise ConfigError(f"arch: {k} size {max(v)} is above the supernet's super_{k}={limits[k]}")


def parse_arch(text: str, depth: int | None, limits: Mapping[str, int] | None = None) -> Arch:
    """ "prompt=5,10,...;lora=...;adapter=..." -> {"prompt": [5, 10, ...], ...}, one size per block (0: none).
    ConfigError naming `arch` for an unknown or repeated key, a missing one, a count other than `depth` (None: not
    checked), a negative size or one above `limits` (the super sizes)."""
    arch: Arch = {}
    for part in text.split(";"):
        key, sep, values = (s.strip() for s in part.partition("="))
        if not sep or key not in KINDS or key in arch:
            raise ConfigError(f"arch: {part.strip()!r} is not one of {', '.join(f'{k}=N,N,...' for k in KINDS)} "
                              f"(each once, separated by ';')")
        try:
            arch[key] = [int(v) for v in values.split(",")]
        except ValueError:
            raise ConfigError(f"arch: {key}={values!r} is not a comma-separated list of integers") from None
    _check_arch(arch, depth, limits)
    return arch


def format_arch(arch: Mapping[str, list[int]]) -> str:
    """The text form `parse_arch` reads (round-trip exact)."""
    return ";".join(f"{k}={','.join(str(int(v)) for v in arch[k])}" for k in KINDS)


def search_space(cfg: NOAHConfig, depth: int) -> dict[str, Any]:
    """NOAH's `choices` (evolution.py:618-631) for a model of `depth` blocks; depth choices clamped to `depth`."""
    out: dict[str, Any] = {"depth": depth, "super_prompt_tuning_dim": cfg.super_prompt,
                           "super_LoRA_dim": cfg.super_lora, "super_adapter_dim": cfg.super_adapter,
                           "super_prefix_dim": 0, "prefix_dim": [0], "prefix_depth": [0]}
    for k in KINDS:
        out[f"{_NOAH[k]}_dim"] = _ints(getattr(cfg, f"{k}_dims"), f"{k}_dims")
        out[f"{_NOAH[k]}_depth"] = [min(n, depth) for n in _ints(getattr(cfg, f"{k}_depths"), f"{k}_depths")]
    return out


def _largest(choices: Mapping[str, Any]) -> Arch:
    d = choices["depth"]
    return {k: [max(choices[f"{_NOAH[k]}_dim"])] * (n := max(choices[f"{_NOAH[k]}_depth"])) + [0] * (d - n)
            for k in KINDS}


def largest_arch(cfg: NOAHConfig, depth: int) -> Arch:
    """The largest sub-network of the search space (max size, max depth): what a supernet runs in eval mode."""
    return _largest(search_space(cfg, depth))


def sample_arch(choices: Mapping[str, Any]) -> Arch:
    """NOAH's `sample_configs` (supernet_engine_prompt.py:19-26): per kind a depth uniform over its choices, then a
    size uniform over its choices for each of the first `depth` blocks, 0 after; drawn with torch's CPU generator."""
    depths = [choices[f"{_NOAH[k]}_depth"][int(torch.randint(len(choices[f"{_NOAH[k]}_depth"]), (1,)))] for k in KINDS]
    out = {}
    for k, n in zip(KINDS, depths):
        dims = choices[f"{_NOAH[k]}_dim"]
        out[k] = [dims[i] for i in torch.randint(len(dims), (n,)).tolist()] + [0] * (choices["depth"] - n)
    return out


class _Active:
    """The sub-network a model runs, shared by its NOAH wrappers (a plain object: no tensors, nothing saved)."""

    def __init__(self, cfg: NOAHConfig, depth: int, width: int, fixed: Arch | None):
        self.cfg, self.depth, self.width, self.supernet = cfg, depth, width, fixed is None
        self.choices = search_space(cfg, depth)
        self.fixed = fixed
        self.set(fixed or _largest(self.choices))

    def set(self, arch: Arch) -> None:
        self.arch, p = arch, arch["prompt"]
        self.before, e = [], 0  # prompt tokens entering each block (V:356-363)
        for i, n in enumerate(p):
            self.before.append(e)
            if n:  # replaces the previous block's prompts (none before block 0)
                e += n - (p[i - 1] if i else 0)
        self.extra = e

    def begin(self, training: bool) -> None:  # block 0, once per forward
        self.set(self.fixed or (sample_arch(self.choices) if training else _largest(self.choices)))


def _active(model: nn.Module) -> _Active:
    active = next((m.active for m in model.modules() if isinstance(m, NOAHBlock)), None)
    if active is None:
        raise ConfigError("not a NOAH model (build it with petlbench.create_model(..., method='noah'))")
    return active


def set_arch(model: nn.Module, arch: Mapping[str, list[int]] | None) -> None:
    """Fix the sub-network a NOAH supernet runs (None: draw one per forward in training, the largest in eval)."""
    a = _active(model)
    if not a.supernet:
        raise ConfigError("set_arch needs a supernet (arch=''); this model is the retrained sub-network "
                          f"{format_arch(a.arch)}")
    if arch is not None:
        arch = {k: list(v) for k, v in arch.items()}
        _check_arch(arch, a.depth, _supers(a.cfg))
    a.fixed = arch
    a.set(arch or _largest(a.choices))


def arch_params(model: nn.Module, arch: Mapping[str, list[int]]) -> int:
    """NOAH's `get_sampled_params_numel` (V:609-623) for `arch` on this model: per block its prompts (V:346-351),
    LoRA A and B (V:266-270), adapter down weight + bias and up weight + its full bias (A:76-80); when block 0 has
    prompts, also the ViT's first-layer prompts and their position embedding at its full super size (V:615-621),
    which never reach the output. No head (the search limit counts without it)."""
    a = _active(model)
    _check_arch(arch, a.depth, None)
    d, p = a.width, arch["prompt"]
    n = sum(p) * d + sum(4 * d * r for r in arch["lora"]) + sum(2 * d * h + h + d for h in arch["adapter"] if h)
    return n + ((p[0] + a.cfg.super_prompt) * d if p[0] else 0)


class SuperLoRA(Wrapper):
    """The fused qkv Linear plus B[:, :r] A[:r] drop(x), r the active rank (0: the Linear alone)."""

    def __init__(self, base: nn.Linear, rank: int, dropout: float, active: _Active, index: int):
        super().__init__(base)
        if base.out_features != 3 * base.in_features:
            raise ConfigError(f"noah: expects a fused qkv Linear (out = 3 * in), got {base.out_features} x "
                              f"{base.in_features}")
        self.lora_A = nn.Parameter(trunc_normal_(torch.empty(rank, base.in_features), std=0.02))
        self.lora_B = nn.Parameter(trunc_normal_(torch.empty(base.out_features, rank), std=0.02))
        self.drop, self.active, self.index = nn.Dropout(dropout), active, index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, r = self.base(x), self.active.arch["lora"][self.index]
        return y + F.linear(F.linear(self.drop(x), self.lora_A[:r]), self.lora_B[:, :r]) if r else y


class SuperAdapter(Wrapper):
    """The MLP branch's drop path followed by NOAH's adapter at the active width (0: the drop path alone)."""

    def __init__(self, base: nn.Module, d: int, width: int, dropout: float, active: _Active, index: int):
        super().__init__(base)
        self.down, self.up = nn.Linear(d, width), nn.Linear(width, d)
        for lin in (self.down, self.up):
            trunc_normal_(lin.weight, std=0.02)
            nn.init.zeros_(lin.bias)
        self.act, self.drop, self.active, self.index = QuickGELU(), nn.Dropout(dropout), active, index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, h = self.base(x), self.active.arch["adapter"][self.index]
        if not h:
            return x
        out = self.drop(self.act(F.linear(x, self.down.weight[:h], self.down.bias[:h])))
        return x + F.linear(out, self.up.weight[:, :h], self.up.bias)


class NOAHBlock(Wrapper):
    """A block with NOAH's prompts of the active count in front of it; block 0 picks the sub-network of the
    forward, the last block drops the prompts."""

    def __init__(self, base: nn.Module, tokens: int, bound: float, dropout: float, prefix: int, active: _Active,
                 index: int, last: bool):
        super().__init__(base)
        self.prompts = nn.Parameter(torch.empty(1, tokens, active.width).uniform_(-bound, bound)) if tokens else None
        self.dropout, self.prefix, self.active, self.index, self.last = dropout, prefix, active, index, last

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if kwargs.get("attn_mask") is not None:
            raise NotImplementedError("NOAH does not support attention masks (prompts change the sequence length)")
        a, i, n = self.active, self.index, self.prefix
        if i == 0:
            a.begin(self.training)
        p = a.arch["prompt"][i]
        if p:
            e = a.before[i]
            keep = e - (a.arch["prompt"][i - 1] if i else 0)
            # V:357-359: a mask per sample. Functional: a module called on a parameter's view taken under no_grad
            # trips torch's module tracker (FlopCounterMode)
            prompts = F.dropout(self.prompts[:, :p].expand(x.shape[0], -1, -1), self.dropout, self.training)
            prompts = prompts.to(x.dtype)
            x = torch.cat([x[:, :n + keep], prompts, x[:, n + e:]], dim=1)
        x = self.base(x, *args, **kwargs)
        if self.last and a.extra:
            x = torch.cat([x[:, :n], x[:, n + a.extra:]], dim=1)
        return x


@register_method("noah")
class NOAH(PETLMethod):
    config_cls = NOAHConfig
    sites = ("block", "attn_in", "mlp_drop_path")
    # prompts are tokens of timm's flat ViT sequence; apply reads its prefix count and width
    only_families = ("vit",)
    mergeable = False  # prompts lengthen the sequence
    paper = "Zhang et al. 2022, arXiv:2206.04673"
    display_name = "NOAH"

    def apply(self, model: nn.Module, family: str) -> nn.Module:
        c, blocks = self.cfg, find_sites(model, family, "block")
        d = getattr(model, "embed_dim", None) or blocks[0].module.norm1.normalized_shape[-1]
        fixed = parse_arch(c.arch, len(blocks), _supers(c)) if c.arch else None
        active = _Active(c, len(blocks), d, fixed)
        size = fixed or {k: [n] * len(blocks) for k, n in _supers(c).items()}  # the supernet: super sizes
        index = {s.name: i for i, s in enumerate(blocks)}
        for site in find_sites(model, family, "attn_in"):  # blocks.N.attn.qkv
            i = index[site.name.rsplit(".", 2)[0]]
            if size["lora"][i]:
                replace_module(model, site.name, SuperLoRA(site.module, size["lora"][i], c.lora_dropout, active, i))
        for site in find_sites(model, family, "mlp_drop_path"):  # blocks.N.drop_path2
            i = index[site.name.rsplit(".", 1)[0]]
            if size["adapter"][i]:
                replace_module(model, site.name, SuperAdapter(site.module, d, size["adapter"][i], c.adapter_dropout,
                                                              active, i))
        bound = math.sqrt(6.0 / ((c.super_prompt + 1) * d))  # xavier_uniform_ on (1, P, d) (V:317-319)
        prefix = int(getattr(model, "num_prefix_tokens", 1))
        for i, site in enumerate(blocks):
            replace_module(model, site.name, NOAHBlock(site.module, size["prompt"][i], bound, c.prompt_dropout, prefix,
                                                       active, i, last=i == len(blocks) - 1))
        return model


# --- search ---------------------------------------------------------------------------------------------------
@dataclass
class EvolutionSettings:
    """evolution.py's argparse defaults; NOAH's search scripts pass --max-epochs=15 and the parameter limit as their
    argument $1 (configs/NOAH/VTAB/search/slurm_search_vtab.sh:11, :33; few-shot/search/...:11, :34)."""

    max_epochs: int = 20  # evolution.py:336
    select_num: int = 10  # :337
    population_num: int = 50  # :338
    m_prob: float = 0.2  # :339
    s_prob: float = 0.4  # :340
    crossover_num: int = 25  # :341
    mutation_num: int = 25  # :343
    param_limit: float = 0.64  # :344, millions of parameters (`arch_params`)
    min_param_limit: float = 0.0  # :345


class Evolution:
    """NOAH's EvolutionSearcher (evolution.py:29-329) without the model: `evaluate(arch)` gives the val top-1 and
    `count(arch)` the parameter count of a sub-network. The same draws from `rng` as NOAH's from python `random`:
    candidates are NOAH's tuples (depth, prompt, LoRA, adapter sizes, 12 prefix zeros), drawn in batches of 10; a
    mutation only re-draws a depth (with m_prob, then s_prob), extending with fresh sizes; crossover takes each
    kind from either parent. As NOAH, the last generation is evaluated but not ranked. `state` (from `on_epoch` or
    `run`) is JSON: passing it back continues the search exactly where it stopped."""

    def __init__(self, choices: Mapping[str, Any], settings: EvolutionSettings, rng, state: dict | None = None):
        self.choices, self.s, self.rng, self.depth = choices, settings, rng, choices["depth"]
        self.epoch, self.candidates, self.memory, self.history = 0, [], [], []
        self.vis: dict[tuple, dict] = {}
        self.top: dict[int, list] = {settings.select_num: [], 50: []}  # evolution.py:50
        if state:
            self.epoch, self.history = state["epoch"], [list(h) for h in state["history"]]
            self.candidates = [tuple(c) for c in state["candidates"]]
            self.memory = [[tuple(c) for c in gen] for gen in state["memory"]]
            self.top = {int(k): [tuple(c) for c in v] for k, v in state["keep_top_k"].items()}
            self.vis = {self._cand(parse_arch(t, self.depth)): dict(v) for t, v in state["vis_dict"].items()}
            version, internal, gauss = state["rng"]
            rng.setstate((version, tuple(internal), gauss))

    def _arch(self, cand: tuple) -> Arch:
        d = cand[0]
        return {k: list(cand[1 + j * d:1 + (j + 1) * d]) for j, k in enumerate(KINDS)}

    def _cand(self, arch: Arch) -> tuple:
        return (self.depth, *arch["prompt"], *arch["lora"], *arch["adapter"], *[0] * _PREFIX)

    def _legal(self, cand: tuple) -> bool:  # evolution.py:84-122
        info = self.vis.setdefault(cand, {})
        if "visited" in info:
            return False
        arch = self._arch(cand)
        info["numel"] = n = int(self._count(arch))
        info["params"] = n / 10. ** 6
        if info["params"] > self.s.param_limit or info["params"] < self.s.min_param_limit:
            return False
        info["acc"], info["visited"] = float(self._evaluate(arch)), True
        return True

    def _stream(self, draw: Callable[[], tuple]) -> Iterator[tuple]:  # stack_random_cand, evolution.py:132-140
        while True:
            cands = [draw() for _ in range(10)]
            for c in cands:
                self.vis.setdefault(c, {})
            yield from cands

    def _random_cand(self) -> tuple:  # evolution.py:142-158
        depths = [self.rng.choice(self.choices[f"{_NOAH[k]}_depth"]) for k in KINDS]
        return self._cand({k: [self.rng.choice(self.choices[f"{_NOAH[k]}_dim"]) for _ in range(n)]
                           + [0] * (self.depth - n) for k, n in zip(KINDS, depths)})

    def _mutant(self) -> tuple:  # evolution.py:178-240
        arch = self._arch(self.rng.choice(self.top[self.s.select_num]))
        for k in KINDS:
            if self.rng.random() < self.s.m_prob:
                redraw, v = self.rng.random() < self.s.s_prob, arch[k]
                cur = next((j for j, x in enumerate(v) if x == 0), self.depth)
                new = self.rng.choice(self.choices[f"{_NOAH[k]}_depth"]) if redraw else cur
                fresh = [self.rng.choice(self.choices[f"{_NOAH[k]}_dim"]) for _ in range(new - cur)]
                arch[k] = (v[:cur] + fresh if new > cur else v[:new]) + [0] * (self.depth - new)
        return self._cand(arch)

    def _child(self) -> tuple:  # evolution.py:261-270: each of the 4 parts (prefix included) from either parent
        c1, c2 = self.rng.choice(self.top[self.s.select_num]), self.rng.choice(self.top[self.s.select_num])
        d = c1[0]
        cut = [1 + j * d for j in range(4)] + [len(c1)]
        parts = [self.rng.choice([c1[a:b], c2[a:b]]) for a, b in zip(cut, cut[1:])]
        return (d, *sum(parts, ()))

    def _take(self, draw: Callable[[], tuple], out: list, num: int, tries: float) -> list[tuple]:
        """Legal candidates of `draw` appended to `out` until it has `num` or `tries` were drawn: get_random
        (evolution.py:160-169, no limit), get_mutation / get_crossover (:242-252, :272-282, 10 x num)."""
        stream = self._stream(draw)
        while len(out) < num and tries > 0:
            tries -= 1
            cand = next(stream)
            if self._legal(cand):
                out.append(cand)
        return out

    def state(self) -> dict[str, Any]:
        """Everything the search holds, JSON-serialisable, with `best` (arch), `best_acc`, `best_params` (count)
        and `history` (per epoch, the top-50 accuracies)."""
        top, rng = self.top[self.s.select_num], self.rng.getstate()
        best = top[0] if top else None
        return {"epoch": self.epoch, "candidates": [list(c) for c in self.candidates],
                "memory": [[list(c) for c in gen] for gen in self.memory],
                "keep_top_k": {str(k): [list(c) for c in v] for k, v in self.top.items()},
                "vis_dict": {format_arch(self._arch(c)): dict(v) for c, v in self.vis.items()},
                "history": [list(h) for h in self.history],
                "rng": [rng[0], list(rng[1]), rng[2]],
                "best": self._arch(best) if best else None, "best_acc": self.vis[best]["acc"] if best else None,
                "best_params": self.vis[best]["numel"] if best else None}

    def run(self, evaluate: Callable[[Arch], float], count: Callable[[Arch], int],
            on_epoch: Callable[[dict], None] | None = None) -> dict[str, Any]:
        """NOAH's `search()` (evolution.py:284-329) from the current epoch; `on_epoch(state)` after each epoch."""
        self._evaluate, self._count, s = evaluate, count, self.s
        acc = lambda c: self.vis[c]["acc"]  # noqa: E731
        self._take(self._random_cand, self.candidates, s.population_num, math.inf)
        while self.epoch < s.max_epochs:
            self.memory.append(list(self.candidates))
            for k in (s.select_num, 50):  # update_top_k, evolution.py:124-130
                self.top[k] = sorted(self.top[k] + self.candidates, key=acc, reverse=True)[:k]
            self.history.append([acc(c) for c in self.top[50]])
            mutation = self._take(self._mutant, [], s.mutation_num, 10 * s.mutation_num)
            crossover = self._take(self._child, [], s.crossover_num, 10 * s.crossover_num)
            self.candidates = self._take(self._random_cand, mutation + crossover, s.population_num, math.inf)
            self.epoch += 1
            if on_epoch is not None:
                on_epoch(self.state())
        return self.state()


# The three stages (petlbench/nas.py): supernet, this search, the retrain of its choice. NOAH's search scripts
# pass --max-epochs=15 (configs/NOAH/VTAB/search/slurm_search_vtab.sh:33, configs/NOAH/few-shot/search/
# slurm_search_few-shot.sh:34, configs/NOAH/domain-generalization/search/slurm_search_imagenet.sh:34) and, for
# VTAB-1k only, --inception: its candidates are scored with mean = std = 0.5
# while the supernet trained (and the retrain trains) with ImageNet's (lib/datasets.py:238-241).
NOAH.supernet = Supernet(set_arch=set_arch, arch_params=arch_params, search_space=search_space,
                         format_arch=format_arch, evolution=Evolution, settings=EvolutionSettings,
                         search_defaults={"vtab": {"max_epochs": 15, "normalize": "inception"},
                                          "fewshot": {"max_epochs": 15}, "domain": {"max_epochs": 15}})
NOAH.searched_options = ("arch",)  # each dataset's own found sub-network: a table cell's, not the row's label
