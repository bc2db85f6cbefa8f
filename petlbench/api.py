"""The public API: build, count, merge. Re-exported from `petlbench`."""
from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch.nn as nn

from .backbones import OPENCLIP, create_backbone, head_parameters
from .config import build_config, config_to_dict
from .errors import ConfigError, MergeError, PETLBenchError
from .method import METHODS, PETLInfo, PETLMethod, Wrapper
from .sites import FAMILY_SITES, detect_family, replace_module


def list_methods() -> list[str]:
    """Names of all registered methods, sorted."""
    return METHODS.names()


def get_method(name: str, method_cfg: Mapping[str, Any] | None = None) -> PETLMethod:
    """An instance of method `name` with its config checked (unknown key, wrong type: ConfigError)."""
    cls = METHODS.get(name)
    cfg = build_config(cls.config_cls, method_cfg, where=f"method {name!r} config")
    return cls(cfg)


def create_model(
    backbone: str,
    method: str = "full",
    num_classes: int = 1000,
    pretrained: bool | str = False,
    method_cfg: Mapping[str, Any] | None = None,
    **backbone_kwargs: Any,
) -> nn.Module:
    """A timm backbone with `method` applied: the method's sites wrapped, everything frozen except the method's
    `trainable_parameters` and the new `num_classes` head; ConfigError for a family the method does not support.
    The result is the timm model itself (same class, same `forward`), carrying a `PETLInfo` as `model.petl`. An
    open_clip backbone keeps its text tower (`model.text`) for a method with `needs_text`."""
    m = get_method(method, method_cfg)  # fail on a bad method or config before building a large model
    # (the text tower follows from the method, so it is not one of the backbone kwargs a tuned file records)
    text = {"keep_text": True} if m.needs_text and backbone.startswith(OPENCLIP) else {}
    model = create_backbone(backbone, num_classes=num_classes, pretrained=pretrained, **{**backbone_kwargs, **text})
    return apply_method(model, m, backbone=backbone, num_classes=num_classes, backbone_kwargs=backbone_kwargs)


def apply_method(model: nn.Module, method: PETLMethod, backbone: str, num_classes: int,
                 backbone_kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    """Apply an instantiated method to an existing backbone in place (see `create_model`)."""
    if getattr(model, "petl", None) is not None:
        raise ConfigError(f"this model already has method {model.petl.method!r} applied")
    family = detect_family(model)
    supported = method.supported_families()
    if family not in supported:
        raise ConfigError(f"method {_label(method)} does not support {family} backbones ({backbone}): "
                          f"{_why_unsupported(method, family)}; it supports: {', '.join(supported) or 'none'}")
    method.apply(model, family)
    # Freezing happens here, for every method alike: exactly what the method names, and the head, trains.
    trainable, named = method.trainable_parameters(model), dict(model.named_parameters(remove_duplicate=False))
    unknown = sorted(trainable - named.keys())
    if unknown:
        raise PETLBenchError(f"method {method.name!r} names parameters the model does not have: "
                             f"{', '.join(unknown[:3])}")
    train = {id(named[n]) for n in trainable} | {id(p) for p in head_parameters(model)}
    for p in model.parameters():
        p.requires_grad_(id(p) in train)
    model.petl = PETLInfo(backbone=backbone, method=method.name, method_cfg=config_to_dict(method.cfg),
                          family=family, num_classes=num_classes, backbone_kwargs=dict(backbone_kwargs or {}))
    return model


def _label(method: PETLMethod) -> str:
    """'name' and the options that differ from the defaults: what selected the sites."""
    defaults = config_to_dict(method.config_cls())
    diff = [f"{k}={v!r}" for k, v in config_to_dict(method.cfg).items() if defaults.get(k) != v]
    return f"{method.name!r}" + (f" ({', '.join(diff)})" if diff else "")


def _why_unsupported(method: PETLMethod, family: str) -> str:
    missing = [k for k in method.target_sites() if k not in method.optional_sites and k not in FAMILY_SITES[family]]
    if missing:
        return f"{family} backbones have no site {', '.join(map(repr, missing))}"
    return f"the method is limited to {', '.join(method.only_families or ())}"


def _info(model: nn.Module) -> PETLInfo:
    info = getattr(model, "petl", None)
    if not isinstance(info, PETLInfo):
        raise ConfigError("this model was not built by petlbench.create_model (no `model.petl`)")
    return info


def method_of(model: nn.Module) -> PETLMethod:
    """The method instance a model was built with."""
    info = _info(model)
    return get_method(info.method, info.method_cfg)


def count_trainable(model: nn.Module, include_head: bool = True) -> int:
    """Exact number of trainable parameters (requires_grad), optionally without the classification head."""
    head = {id(p) for p in head_parameters(model)} if not include_head else set()
    return sum(p.numel() for p in model.parameters() if p.requires_grad and id(p) not in head)


def count_paper(model: nn.Module) -> int:
    """Trainable parameters, head excluded, under the convention of the method's paper (e.g. RepAdapter's
    0.22M counts adapter weights, not biases). Equal to `count_trainable(..., include_head=False)` unless
    the method says otherwise."""
    return method_of(model).paper_count(model, count_trainable(model, include_head=False))


def merge(model: nn.Module) -> nn.Module:
    """A plain backbone (no wrappers, same module types as `timm.create_model`) computing the same function
    as `model` in eval mode. `model` is left untouched. MergeError, saying why, where the method's
    `merge_blocker` for this family says it does not merge."""
    info = _info(model)
    blocker = method_of(model).merge_blocker(info.family)
    if blocker:
        raise MergeError(f"method {info.method!r} on this {info.family} backbone does not merge: {blocker}")
    plain = copy.deepcopy(model)
    # Outermost first (named_modules yields parents before children); re-scan after each replacement so a
    # wrapper nested in a merged one is never visited through a stale path.
    while True:
        found = next(((n, m) for n, m in plain.named_modules() if isinstance(m, Wrapper)), None)
        if found is None:
            break
        replace_module(plain, found[0], found[1].merged())
    del plain.petl
    plain.requires_grad_(True)
    return plain
