"""The plug-in API: subclass `PETLMethod`, register it, and every tool in the suite can use it.

A method says *where* it attaches (site kinds, see `sites.py`), *what* it puts there (`wrap`), and, when it
is mergeable, how each wrapper folds back into a plain layer (`Wrapper.merged`, via `folding.py`).
Freezing, the classification head, counting, saving and merging the whole model are done by the core
(`petlbench.api`), the same way for every method.

Minimal example (a method that scales the MLP output; see README "Adding a method"):

    @register_method("mlp_scale")
    class MLPScale(PETLMethod):
        sites = ("mlp_out",)
        def wrap(self, site):
            return ScaleWrapper(site.module)      # a Wrapper subclass with its own nn.Parameter
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator

import torch.nn as nn

from .config import EmptyConfig
from .registry import Registry, load_plugins
from .sites import Site, find_sites, replace_module

log = logging.getLogger(__name__)


class Wrapper(nn.Module):
    """A module that wraps one backbone layer (`self.base`) and owns the method's parameters for that site.

    Parameters outside `base` are the method's; they are what trains. A mergeable wrapper implements
    `merged()`, returning a plain layer of `base`'s type that computes the same function in eval mode.
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


def own_biases(model: nn.Module) -> Iterator[nn.Parameter]:
    """Every module's own `bias` parameter (Linear, conv, LayerNorm, ...), found structurally, not by name
    substring: what BitFit trains, and RepAdapter with train_bias."""
    for mod in model.modules():
        bias = mod._parameters.get("bias")
        if bias is not None:
            yield bias


@dataclass
class PETLInfo:
    """What was built: stored on the model as `model.petl`, and in every tuned-weights file."""

    backbone: str
    method: str
    method_cfg: dict[str, Any]
    family: str
    num_classes: int
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)


class PETLMethod:
    """Base class of every method. Subclass, set the class attributes, implement `wrap`, register.

    Class attributes:
      name          set by `@register_method(name)`.
      config_cls    a dataclass of the method's options with the published defaults.
      sites         site kinds (see `sites.FAMILY_SITES`) whose modules `wrap` replaces; or override
                    `target_sites()` when they depend on the config. A kind with no match is an error.
      optional_sites  site kinds wrapped where present (e.g. a final norm some backbones replace).
      mergeable     True when `merge()` turns a tuned model into a plain backbone with equal outputs.
      families      backbone families the method supports; others are a clear error.
      paper         citation shown in tables and `petlbench methods`.
    """

    name: ClassVar[str] = ""
    config_cls: ClassVar[type] = EmptyConfig
    sites: ClassVar[tuple[str, ...]] = ()
    optional_sites: ClassVar[tuple[str, ...]] = ()
    mergeable: ClassVar[bool] = True
    families: ClassVar[tuple[str, ...]] = ("vit",)
    paper: ClassVar[str] = ""

    def __init__(self, cfg: Any = None):
        self.cfg = cfg if cfg is not None else self.config_cls()

    # --- what a subclass provides -------------------------------------------------------------------------
    def target_sites(self) -> tuple[str, ...]:
        """Site kinds to wrap; defaults to the class attribute `sites`."""
        return self.sites

    def wrap(self, site: Site) -> nn.Module:
        """The module that replaces `site.module` (usually a `Wrapper` around it)."""
        raise NotImplementedError

    def mark_trainable(self, model: nn.Module) -> None:
        """Set requires_grad on the method's parameters (all else is already frozen). Default: the own
        parameters of every `Wrapper` in the model (structural: no name substrings)."""
        for mod in model.modules():
            if isinstance(mod, Wrapper):
                for _, p in mod.own_parameters():
                    p.requires_grad_(True)

    def merge_blocker(self, family: str) -> str | None:
        """Why this configuration cannot merge on `family` (None: it can, when `mergeable`). For methods
        that merge on some backbones or options only, e.g. RepAdapter's dense adapter in front of ConvNeXt's
        depthwise conv."""
        return None

    def paper_count(self, model: nn.Module, trainable: int) -> int:
        """Trainable parameters (head excluded) under the method's paper's convention; default: all of them."""
        return trainable

    # --- what the core calls ------------------------------------------------------------------------------
    def apply(self, model: nn.Module, family: str) -> nn.Module:
        """Wrap every target site of `model` in place; returns `model`."""
        kinds = [(k, True) for k in self.target_sites()] + [(k, False) for k in self.optional_sites]
        for kind, required in kinds:
            for site in find_sites(model, family, kind, required=required):
                replace_module(model, site.name, self.wrap(site))
        return model

    @classmethod
    def describe(cls) -> dict[str, Any]:
        defaults = dataclasses.asdict(cls.config_cls())
        return {"name": cls.name, "mergeable": cls.mergeable, "families": list(cls.families),
                "defaults": defaults, "paper": cls.paper}


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
