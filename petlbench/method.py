"""The plug-in API: subclass `PETLMethod`, register it, and every tool in the suite can use it.

A method says *where* it attaches (site kinds, see `sites.py`), *what* it puts there (`wrap`), and *what
trains* (`trainable_parameters`). Its wrappers say their *form*, and the form base here does the rest for every
module type the sites hold (nn.Linear, 1x1 and depthwise nn.Conv2d, LayerNorm, nn.MultiheadAttention):

  InputResidual   base(x + f(x)), f linear in x        (RepAdapter)  merged: folding.fold_input_affine
  InputScale      base(a * x + b), per input channel   (RepAdapter's per-channel variant)
  OutputAffine    s * base(x) + t, per output channel  (SSF)         merged: folding.fold_output_affine
  WeightDelta     base with W + dW (and b + db)        (LoRA)        merged: folding.add_weight_delta

A method file writes the math only (its f, (a, b), (s, t) or dW); the base writes `forward` and `merged()`.
Freezing, the classification head, counting, saving and merging the whole model are done by the core
(`petlbench.api`), the same way for every method: it freezes everything, then trains exactly the
`trainable_parameters` the method names, and the head.

The backbone families a method supports follow from its sites: a family supports it when it has every required
site kind (`sites.FAMILY_SITES`). Whether a configuration merges on a family is one query, `merge_blocker`.

Minimal example (a method that scales the MLP output; see README "Adding a method"):

    class Scale(OutputAffine):
        def __init__(self, base):
            super().__init__(base)
            self.gamma = nn.Parameter(torch.ones(self.widths[""]))
        def output_affine(self, proj):
            return self.gamma, None

    @register_method("mlp_scale")
    class MLPScale(PETLMethod):
        sites = ("mlp_out",)
        def wrap(self, site):
            return Scale(site.module)
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn as nn
from torch import Tensor

from .config import EmptyConfig
from .errors import ConfigError
from .folding import add_weight_delta, fold_input_affine, fold_output_affine
from .registry import Registry, load_plugins
from .sites import FAMILY_SITES, Site, channels_first, find_sites, replace_module

log = logging.getLogger(__name__)


class Wrapper(nn.Module):
    """A module that wraps one backbone layer (`self.base`) and owns the method's parameters for that site.

    Parameters outside `base` are the method's. A mergeable wrapper implements `merged()`, returning a plain
    layer of `base`'s type that computes the same function in eval mode (the form bases below do).
    """

    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base

    def own_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """(name, parameter) of this wrapper's own parameters, `base` excluded."""
        for name, p in self.named_parameters():
            if not name.startswith("base."):
                yield name, p

    def merged(self) -> nn.Module:
        raise NotImplementedError(f"{type(self).__name__} cannot be merged")


# --- module-type plumbing, written once ------------------------------------------------------------------------
def input_width(layer: nn.Module) -> int:
    """Channels of `layer`'s input: Linear in_features, conv in_channels, nn.MultiheadAttention embed_dim."""
    if isinstance(layer, nn.MultiheadAttention):
        return layer.embed_dim
    if isinstance(layer, nn.Linear):
        return layer.in_features
    if isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return layer.in_channels
    raise ConfigError(f"no input width for a {type(layer).__name__} (expected Linear, conv or MultiheadAttention)")


def output_widths(layer: nn.Module) -> dict[str, int]:
    """Output channels per projection of `layer`: {"": n} for a Linear, conv or LayerNorm; for an
    nn.MultiheadAttention, which reads its projections' tensors instead of calling them, its fused q/k/v
    "in_proj" (3 * embed_dim) and its "out_proj" (embed_dim)."""
    if isinstance(layer, nn.MultiheadAttention):
        return {"in_proj": 3 * layer.embed_dim, "out_proj": layer.embed_dim}
    if isinstance(layer, nn.Linear):
        return {"": layer.out_features}
    if isinstance(layer, nn.LayerNorm):
        return {"": layer.normalized_shape[-1]}
    if isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return {"": layer.out_channels}
    raise ConfigError(f"no output channels for a {type(layer).__name__} (expected Linear, conv, LayerNorm or "
                      f"MultiheadAttention)")


def _per_channel(v: Tensor, like: Tensor, channels_first_: bool) -> Tensor:
    return v.view((1, -1) + (1,) * (like.dim() - 2)) if channels_first_ else v


class InputAffine(Wrapper):
    """`base(T(x))`, T an affine map on the channels of `base`'s input that folds into its input side
    (`merged()`: `folding.fold_input_affine`). On nn.MultiheadAttention T is applied to query, key and value
    (self-attention passes one tensor three times: it is mapped once). Subclass InputResidual or InputScale."""

    def __init__(self, base: nn.Module):
        super().__init__(base)
        self.channels_first = channels_first(base)  # convs take NCHW: the map acts on dim 1
        self.width = input_width(base)

    def input_map(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def input_affine(self) -> tuple[Tensor | None, Tensor | None]:
        """(M, c), float64, with T(x) == M x + c in eval mode."""
        raise NotImplementedError

    def forward(self, x: Tensor, *rest, **kwargs) -> Tensor:
        mapped = self.input_map(x)
        rest = tuple(mapped if r is x else self.input_map(r) if isinstance(r, Tensor) else r for r in rest)
        return self.base(mapped, *rest, **kwargs)

    def merged(self) -> nn.Module:
        with torch.no_grad():
            return fold_input_affine(self.base, *self.input_affine())


class InputResidual(InputAffine):
    """T(x) = x + f(x), f linear in x (dropout aside). A subclass gives `residual(x)`, f on channels-last x (the
    base moves conv channels last and back), and `residual_affine()`: (F, c) in float64, f(x) = F x + c."""

    def residual(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def residual_affine(self) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

    def input_map(self, x: Tensor) -> Tensor:
        if self.channels_first:
            x = x.movedim(1, -1)
        out = x + self.residual(x)
        return out.movedim(-1, 1) if self.channels_first else out

    def input_affine(self) -> tuple[Tensor, Tensor | None]:
        F, c = self.residual_affine()
        return torch.eye(F.shape[0], dtype=F.dtype, device=F.device) + F, c


class InputScale(InputAffine):
    """T(x) = a * x + b per input channel. A subclass gives `input_scale_shift(dtype)`: (a, b), either None,
    computed in `dtype` (None: the parameters' own). Folds into a depthwise conv when b is None."""

    def input_scale_shift(self, dtype: torch.dtype | None = None) -> tuple[Tensor | None, Tensor | None]:
        raise NotImplementedError

    def input_map(self, x: Tensor) -> Tensor:
        a, b = self.input_scale_shift()
        if a is not None:
            x = x * _per_channel(a, x, self.channels_first)
        return x if b is None else x + _per_channel(b, x, self.channels_first)

    def input_affine(self) -> tuple[Tensor | None, Tensor | None]:
        a, b = self.input_scale_shift(torch.float64)
        return (None if a is None else torch.diag(a)), b


class OutputAffine(Wrapper):
    """`scale * base(x) + shift` per output channel of each projection in `self.widths` (`output_widths`): a
    Linear, conv or LayerNorm has one (""); an nn.MultiheadAttention has "in_proj" and "out_proj", applied to
    their tensors for the call (`torch.func.functional_call`), which is what `merged()` folds in. A subclass
    gives `output_affine(proj)`: (scale, shift), either None."""

    def __init__(self, base: nn.Module):
        super().__init__(base)
        self.widths = output_widths(base)
        self.channel_dim = 1 if channels_first(base) else -1  # convs and LayerNorm2d: NCHW

    def output_affine(self, proj: str) -> tuple[Tensor | None, Tensor | None]:
        raise NotImplementedError

    def forward(self, x: Tensor, *rest, **kwargs):
        if isinstance(self.base, nn.MultiheadAttention):
            m, params = self.base, {}
            for proj, (w_name, w), (b_name, b) in (
                    ("in_proj", ("in_proj_weight", m.in_proj_weight), ("in_proj_bias", m.in_proj_bias)),
                    ("out_proj", ("out_proj.weight", m.out_proj.weight), ("out_proj.bias", m.out_proj.bias))):
                s, t = self.output_affine(proj)
                if s is not None:
                    params[w_name] = w * s[:, None]
                    b = None if b is None else b * s
                if t is not None:
                    b = t if b is None else b + t
                if b is not None and (s is not None or t is not None):
                    params[b_name] = b
            return torch.func.functional_call(m, params, (x, *rest), kwargs)
        y = self.base(x, *rest, **kwargs)
        s, t = self.output_affine("")
        first = self.channel_dim == 1
        if s is not None:
            y = y * _per_channel(s, y, first)
        return y if t is None else y + _per_channel(t, y, first)

    def merged(self) -> nn.Module:
        with torch.no_grad():
            if not isinstance(self.base, nn.MultiheadAttention):
                return fold_output_affine(self.base, *self.output_affine(""))
            out = fold_output_affine(self.base, *self.output_affine("in_proj"))
            out.out_proj = fold_output_affine(out.out_proj, *self.output_affine("out_proj"))
            return out


class WeightDelta(Wrapper):
    """`base` with weight W + dW and bias b + db: an nn.Linear, or an nn.MultiheadAttention's fused in_proj
    (dW of shape (3d, d); the module is called with the updated tensors). A subclass gives
    `weight_delta(dtype)` (and `bias_delta(dtype)`, default none), and may give `delta_output(x)`: the term
    added to a Linear's output in training (e.g. a low-rank path with dropout); default x dW^T + db."""

    def __init__(self, base: nn.Module):
        super().__init__(base)
        if not isinstance(base, (nn.Linear, nn.MultiheadAttention)):
            raise ConfigError(f"a weight delta needs an nn.Linear or nn.MultiheadAttention, got {type(base).__name__}")

    def weight_delta(self, dtype: torch.dtype | None = None) -> Tensor:
        raise NotImplementedError

    def bias_delta(self, dtype: torch.dtype | None = None) -> Tensor | None:
        return None

    def delta_output(self, x: Tensor) -> Tensor:
        return nn.functional.linear(x, self.weight_delta(), self.bias_delta())

    def forward(self, x: Tensor, *rest, **kwargs) -> Tensor:
        if isinstance(self.base, nn.MultiheadAttention):
            m, db = self.base, self.bias_delta()
            params = {"in_proj_weight": m.in_proj_weight + self.weight_delta()}
            if db is not None:
                params["in_proj_bias"] = db if m.in_proj_bias is None else m.in_proj_bias + db
            return torch.func.functional_call(m, params, (x, *rest), kwargs)
        return self.base(x) + self.delta_output(x)

    def merged(self) -> nn.Module:
        with torch.no_grad():
            return add_weight_delta(self.base, self.weight_delta(torch.float64), self.bias_delta(torch.float64))


def own_biases(model: nn.Module) -> set[str]:
    """Names of every module's own `bias` parameter (Linear, conv, LayerNorm, ...), found structurally, not by
    name substring: what BitFit trains, and RepAdapter with train_bias."""
    return {f"{name}.bias" if name else "bias" for name, mod in model.named_modules()
            if mod._parameters.get("bias") is not None}


def wrapper_parameters(model: nn.Module) -> set[str]:
    """Names of the own parameters of every `Wrapper` in `model` (what the method added)."""
    return {f"{name}.{p}" for name, mod in model.named_modules() if isinstance(mod, Wrapper)
            for p, _ in mod.own_parameters()}


@dataclass
class PETLInfo:
    """What was built: stored on the model as `model.petl`, and in every tuned-weights file."""

    backbone: str
    method: str
    method_cfg: dict[str, Any]
    family: str
    num_classes: int
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)


class _SupportedFamilies:
    """`method.families` (or `cls.families`, for the default configuration): see `supported_families`."""

    def __get__(self, obj: PETLMethod | None, owner: type[PETLMethod]) -> tuple[str, ...]:
        return (obj if obj is not None else owner()).supported_families()


class PETLMethod:
    """Base class of every method. Subclass, set the class attributes, implement `wrap`, register.

    Class attributes:
      name          set by `@register_method(name)`.
      config_cls    a dataclass of the method's options with the published defaults.
      sites         site kinds (see `sites.FAMILY_SITES`) whose modules `wrap` replaces, in this order (the
                    order parameters are drawn in); or override `target_sites()` when they depend on the
                    config. A family lacking a required one does not support the method; a family that has it
                    but no module matching it is an error.
      optional_sites  kinds wrapped only where the family has them and a module matches: those of `sites` a
                    family may lack, and any others (wrapped after `sites`).
      only_families   None, or the families the method is limited to beyond what its sites allow (say why).
      mergeable     False for a method whose added computation no plain layer computes (see `merge_blocker`).
      feeds_head    True for a method that changes what the classification head reads (VQT's query features):
                    it needs the backbone's own linear head, so a head-less trunk (segmentation) or another head
                    (the video ViT's BatchNorm + Linear) refuses it with a ConfigError.
      paper         citation shown in tables and `petlbench methods`.
      display_name  the name papers print ("RepAdapter"); "" means the registered name.
      variants      published variants a configuration can be: {key: ({option: value, ...}, printed name)},
                    e.g. VPT's {"vpt_deep": ({"deep": True}, "VPT-Deep"), ...}; the first whose options a
                    configuration has is its table key (`variant_key`), else the registered name.
      key_options   the options that select a variant (derived from `variants`).
    """

    name: ClassVar[str] = ""
    config_cls: ClassVar[type] = EmptyConfig
    sites: ClassVar[tuple[str, ...]] = ()
    optional_sites: ClassVar[tuple[str, ...]] = ()
    only_families: ClassVar[tuple[str, ...] | None] = None
    mergeable: ClassVar[bool] = True
    feeds_head: ClassVar[bool] = False
    needs_text: ClassVar[bool] = False  # open_clip backbones are built with their text tower kept (model.text: CoOp)
    paper: ClassVar[str] = ""
    display_name: ClassVar[str] = ""
    variants: ClassVar[dict[str, tuple[dict[str, Any], str]]] = {}
    key_options: ClassVar[tuple[str, ...]] = ()
    # A method whose sub-network is searched with a weight-sharing supernet (NOAH) gives its hooks here, a
    # `petlbench.nas.Supernet`: its supernet configuration (option `arch` == "") then runs nas.run_pipeline.
    supernet: ClassVar[Any] = None
    # Options a search chooses per dataset (NOAH's `arch`): not part of a table row's label.
    searched_options: ClassVar[tuple[str, ...]] = ()
    # Protocol fields the method itself sets, over the task's and the recipe's, under the user's overrides
    # (zero-shot CLIP: head_init=zeroshot).
    protocol: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.key_options = tuple(sorted({k for opts, _ in cls.variants.values() for k in opts}))
    families = _SupportedFamilies()

    def __init__(self, cfg: Any = None):
        self.cfg = cfg if cfg is not None else self.config_cls()

    # --- what a subclass provides -------------------------------------------------------------------------
    def target_sites(self) -> tuple[str, ...]:
        """Site kinds to wrap, in order; defaults to the class attribute `sites`."""
        return self.sites

    def wrap(self, site: Site) -> nn.Module:
        """The module that replaces `site.module` (usually a `Wrapper` around it)."""
        raise NotImplementedError

    def trainable_parameters(self, model: nn.Module) -> set[str]:
        """Names (as in `model.named_parameters()`) of the parameters this method trains, on a model it was
        applied to; the core trains these and the head, and freezes the rest. Default: the own parameters of
        every `Wrapper` (structural: no name substrings)."""
        return wrapper_parameters(model)

    def merge_blocker(self, family: str) -> str | None:
        """The one answer to "does this configuration merge on `family`": None when `petlbench.merge` turns a
        tuned model into a plain backbone with equal outputs, else why not. Override (calling super) for a
        method that merges on some backbones or options only."""
        if not self.mergeable:
            merging = [n for n in METHODS.names() if METHODS.get(n).mergeable]
            return f"it is not mergeable (mergeable methods: {', '.join(merging)})"
        return None

    def runner(self, protocol: Any):
        """A procedure of the method's own that runs this configuration instead of the training engine, with
        `run.execute`'s signature, or None. The base gives a supernet method's supernet configuration the
        three-stage search (nas.run_pipeline), except under selection=trial: that trains the supernet itself."""
        sup = self.supernet
        if sup is not None and getattr(self.cfg, sup.arch_option) == "" and protocol.selection != "trial":
            from .nas import run_pipeline

            return run_pipeline
        return None

    def paper_count(self, model: nn.Module, trainable: int) -> int:
        """Trainable parameters (head excluded) under the method's paper's convention; default: all of them."""
        return trainable

    @classmethod
    def variant_key(cls, cfg: dict) -> str:
        """The published-table key of configuration `cfg` (missing options take their defaults): the first of
        `variants` whose options it has, else the registered name."""
        defaults = dataclasses.asdict(cls.config_cls())
        for key, (opts, _) in cls.variants.items():
            if all(cfg.get(k, defaults.get(k)) == v for k, v in opts.items()):
                return key
        return cls.name

    @classmethod
    def variant_name(cls, key: str) -> str:
        """The printed name of published-table key `key`: its variant's, else `display_name`, else the name."""
        return cls.variants[key][1] if key in cls.variants else (cls.display_name or cls.name)

    # --- what the core calls ------------------------------------------------------------------------------
    def supported_families(self) -> tuple[str, ...]:
        """Families that have every site kind this configuration needs, within `only_families`."""
        need = set(self.target_sites()) - set(self.optional_sites)
        return tuple(f for f, table in FAMILY_SITES.items()
                     if need <= table.keys() and (self.only_families is None or f in self.only_families))

    def apply(self, model: nn.Module, family: str) -> nn.Module:
        """Wrap every target site of `model` in place; returns `model`."""
        kinds = self.target_sites() + tuple(k for k in self.optional_sites if k not in self.target_sites())
        for kind in kinds:
            for site in find_sites(model, family, kind, required=kind not in self.optional_sites):
                replace_module(model, site.name, self.wrap(site))
        return model

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """Name, families, which of them the default configuration merges on, defaults and paper."""
        method = cls()
        families = method.supported_families()
        merges_on = [f for f in families if method.merge_blocker(f) is None]
        return {"name": cls.name, "mergeable": bool(merges_on), "merges_on": merges_on, "families": list(families),
                "defaults": dataclasses.asdict(method.cfg), "paper": cls.paper}


# Every module in petlbench.methods (the repository's methods/ folder), then plug-ins declared under the
# `petlbench.methods` entry-point group: dropping a file into methods/ is enough to add a method.
METHODS: Registry[type[PETLMethod]] = Registry("method", loader=load_plugins("petlbench.methods", "petlbench.methods"))


def register_method(name: str):
    """Class decorator: `@register_method("repadapter")` on a PETLMethod subclass."""

    def deco(cls: type[PETLMethod]) -> type[PETLMethod]:
        if not (isinstance(cls, type) and issubclass(cls, PETLMethod)):
            raise TypeError(f"@register_method({name!r}) must decorate a PETLMethod subclass, got {cls!r}")
        return METHODS.register(name)(cls)

    return deco
