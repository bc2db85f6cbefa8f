"""What FacT-TT and FacT-TK (methods/fact_tt.py, fact_tk.py) share: factors shared by every weight of the ViT,
the weight-delta wrapper, and the method base that builds both.

Every wrapped weight W (qkv, proj, fc1, fc2 of each block; d = embed dim, m = mlp hidden / d) gets

    W' = W + s * dW,   dW = blocks of V S_i U        (U: r x d, V: d x r, shared by all weights of all blocks)

with S its small (r x r per block) core: `chunk_input=False` (qkv: 3 blocks, proj: 1, fc1: m) stacks the blocks
on the output rows, S of shape (k r, r); fc2 (`chunk_input=True`) lays m blocks along its input columns, S of
shape (r, m r). This is the authors' tensorisation (FacT/fact_tt.py:60-100): fc1's output and fc2's input are
read as m slices of width d. Dropout acts on S U x, as theirs does (`self.dp` between the core and FacTv).

The factors live in one `FacTFactors` module, registered inside the first wrapper (blocks.0.attn.qkv.factors)
and held unregistered by the others: each tensor is one parameter under one name (trainable set, saving), and
merging, which replaces every wrapper by a plain layer, leaves no FacT module behind in the plain backbone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch import Tensor

from petlbench.config import not_positive, not_probability
from petlbench.errors import ConfigError
from petlbench.method import PETLMethod, WeightDelta
from petlbench.sites import find_sites, replace_module

# The site kinds FacT tensorises, in block order, and the name the authors use for each weight.
KINDS = {"attn_in": "qkv", "attn_out": "proj", "mlp_in": "fc1", "mlp_out": "fc2"}


@dataclass
class FacTConfig:
    """FacT-TT's and FacT-TK's options: both scripts set the same defaults."""

    # FacT/fact_tt.py:103 and fact_tk.py:107 set_FacT(model, dim=8, s=1); per VTAB task: configs/{tt,tk}/<task>.yaml:3
    rank: int = 8
    scale: float = 1.0  # the same lines' s=1; per VTAB task: configs/{tt,tk}/<task>.yaml:4
    dropout: float = 0.1  # FacT/fact_tt.py:114,124 and fact_tk.py:120,130 _.dp = nn.Dropout(0.1)

    def validate(self) -> str | None:
        return not_positive(rank=self.rank) or not_probability(dropout=self.dropout)


class FacTFactors(nn.Module):
    """U (`u`, r x d) and V (`v`, d x r), shared by every weight: FacTu / FacTv (FacT/fact_tt.py:105-107). U as
    an nn.Linear(d, r) initialises its weight, V zeros, so dW = 0 at the start."""

    def __init__(self, dim: int, rank: int):
        super().__init__()
        self.u = nn.Parameter(torch.empty(rank, dim))
        nn.init.kaiming_uniform_(self.u, a=math.sqrt(5))  # nn.Linear's default weight init
        self.v = nn.Parameter(torch.zeros(dim, rank))


class FacTLinear(WeightDelta):
    """A Linear plus s * dW, dW built from the shared factors and this weight's core `core_matrix()`. The owner
    (the first wrapper) registers the factors; the others keep a plain reference."""

    def __init__(self, base: nn.Module, factors: FacTFactors, chunks: int, chunk_input: bool, scale: float,
                 dropout: float, owner: bool):
        super().__init__(base)
        if owner:
            self.factors = factors
        else:
            self._shared = (factors,)  # a tuple, so nn.Module does not register it a second time
        self.chunks, self.chunk_input, self.scale = chunks, chunk_input, scale
        self.drop = nn.Dropout(dropout)

    @property
    def shared(self) -> FacTFactors:
        return self.factors if "factors" in self._modules else self._shared[0]

    def core_matrix(self, dtype: torch.dtype | None = None) -> Tensor:
        """S: (chunks * r, r), or (r, chunks * r) when `chunk_input`."""
        raise NotImplementedError

    def weight_delta(self, dtype: torch.dtype | None = None) -> Tensor:
        f = self.shared
        dtype = dtype or f.u.dtype
        u, v, s = f.u.to(dtype), f.v.to(dtype), self.core_matrix(dtype)
        r, m = u.shape[0], self.chunks
        if self.chunk_input:  # block i = V S[:, i r:(i+1) r] U acts on input slice i
            blocks = v @ s.view(r, m, r).transpose(0, 1) @ u  # (m, d_out, d)
            return self.scale * blocks.transpose(0, 1).reshape(v.shape[0], m * u.shape[1])
        blocks = v @ s.view(m, r, r) @ u  # block i = V S[i r:(i+1) r] U gives output slice i
        return self.scale * blocks.reshape(m * v.shape[0], u.shape[1])

    def delta_output(self, x: Tensor) -> Tensor:
        """s * dW x through the rank-r path, dropout on S U x (the authors' order), never forming dW."""
        f = self.shared
        s = self.core_matrix()
        if self.chunk_input:
            h = (x.unflatten(-1, (self.chunks, -1)) @ f.u.t()).flatten(-2)  # U on each input slice
            return self.scale * (self.drop(h @ s.t()) @ f.v.t())
        z = self.drop((x @ f.u.t()) @ s.t())
        return self.scale * (z.unflatten(-1, (self.chunks, -1)) @ f.v.t()).flatten(-2)


class FacTMethod(PETLMethod):
    """Base of FacT-TT and FacT-TK: wraps qkv, proj, fc1, fc2 of every block around one shared `FacTFactors`.
    A subclass gives `make_factors` and `make_wrapper`."""

    sites = tuple(KINDS)
    # one U (r x d) serves every weight of every block, so the backbone needs one width throughout: a ViT
    # (Swin's stages change width; ConvNeXt and open_clip lack the qkv / proj Linears)
    only_families = ("vit",)

    def make_factors(self, dim: int, layers: int, mlp_ratio: int) -> FacTFactors:
        raise NotImplementedError

    def make_wrapper(self, base: nn.Module, factors: FacTFactors, weight: str, first: int, chunks: int,
                     chunk_input: bool, owner: bool) -> FacTLinear:
        """The wrapper of `base` (`weight` "qkv", "proj", "fc1" or "fc2"), whose d x d slices are `first` ...
        `first + chunks - 1` of the tensorised stack."""
        raise NotImplementedError

    def apply(self, model: nn.Module, family: str) -> nn.Module:
        found = {kind: find_sites(model, family, kind) for kind in self.sites}
        layers = len(found["attn_in"])
        if any(len(v) != layers for v in found.values()):
            raise ConfigError(f"{self.name}: needs qkv, proj, fc1 and fc2 in every block, found "
                              f"{ {KINDS[k]: len(v) for k, v in found.items()} }")
        d = found["attn_in"][0].module.in_features
        hidden = found["mlp_in"][0].module.out_features
        if hidden % d:
            raise ConfigError(f"{self.name}: the MLP width {hidden} is not a multiple of the embed dim {d}")
        m = hidden // d
        want = {"qkv": (d, 3 * d), "proj": (d, d), "fc1": (d, m * d), "fc2": (m * d, d)}
        for kind, sites in found.items():
            for site in sites:
                shape = (site.module.in_features, site.module.out_features)
                if shape != want[KINDS[kind]]:
                    raise ConfigError(f"{self.name}: {site.name} is {shape[0]} -> {shape[1]}, expected "
                                      f"{want[KINDS[kind]][0]} -> {want[KINDS[kind]][1]} (one width throughout)")
        factors = self.make_factors(d, layers, m)
        # the stack of d x d slices, block by block: q, k, v, proj, fc1's m, fc2's m (the authors' FacTp
        # columns, FacT/fact_tk.py:123-132)
        chunks = {"qkv": (3, False), "proj": (1, False), "fc1": (m, False), "fc2": (m, True)}
        offset = {"qkv": 0, "proj": 3, "fc1": 4, "fc2": 4 + m}
        for layer in range(layers):
            for kind in self.sites:
                site, weight = found[kind][layer], KINDS[kind]
                first = layer * (4 + 2 * m) + offset[weight]
                wrapper = self.make_wrapper(site.module, factors, weight, first, *chunks[weight],
                                            owner=layer == 0 and kind == self.sites[0])
                replace_module(model, site.name, wrapper)
        return model
