"""PEFT's tuners as a petlbench method: "PEFT: State-of-the-art Parameter-Efficient Fine-Tuning methods",
Mangrulkar et al., 2022 (github.com/huggingface/peft). Any tuner PEFT injects into a plain torch model (LoRA, LoHa,
LoKr, OFT, BOFT, IA3, ...) runs on a timm backbone under petlbench's recipes, store and tables.

Options: `tuner`, PEFT's type name in any case ("lora", "loha", "ia3", ...), and `config`, the fields of that tuner's
PEFT config as a JSON object (or a mapping, from a sweep file), e.g. '{"r": 8, "target_modules": ["qkv"]}'. Without
`target_modules` the target is the family's fused qkv projection (the "attn_in" site of ViT and Swin, given to PEFT
as its regular expression: PEFT fullmatches a string target against module names, peft 0.21.2
src/peft/utils/other.py:1516-1521). PEFT's own defaults fill every other field: LoRA r=8, lora_alpha=8 (scale 1),
init_lora_weights=True, B zero (src/peft/tuners/lora/config.py:632, :652, :680). Parameters on ViT-B/16 with the
defaults: 12 * 8 * (768 + 3 * 768) = 294,912, the count of `lora` with fused=True. PEFT is an optional dependency
(the `peft` extra): without it the method supports no backbone, and the core's error says to install it.

How it attaches: PEFT's `inject_adapter_in_model` (src/peft/mapping.py:47-103) replaces each targeted module with
the tuner's layer, which holds the module as its `base_layer`; petlbench then wraps each such layer in a `PEFTLayer`
(a `method.Wrapper`), so the core's merge finds it. PEFT's copy of its config on the model (`model.peft_config`,
src/peft/tuners/tuners_utils.py:348-349) is dropped: the options are in `model.petl.method_cfg`.

What trains: what PEFT leaves trainable at injection (src/peft/tuners/tuners_utils.py:506-543: the tuner layers'
adapter tensors, and biases under the config's `bias`), recorded on each `PEFTLayer`, and the head (the core's).
`modules_to_save` is refused: PEFT would put a copy of the head beside it, which the core already trains.

Merging goes through PEFT, layer by layer as its `merge_and_unload` does (src/peft/tuners/tuners_utils.py:705-714:
`merge()`, then `get_base_layer()`). A tuner whose layers all leave PEFT's `merge` stub (BaseTunerLayer.merge,
tuners_utils.py:1963-1964) does not merge.
"""
from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from petlbench.errors import ConfigError, MergeError
from petlbench.method import PETLMethod, Wrapper, own_biases, register_method
from petlbench.registry import did_you_mean
from petlbench.sites import FAMILY_SITES, replace_module

# timm backbones (open_clip's towers are not): PEFT's target_modules name their modules
TIMM_FAMILIES = ("vit", "swin", "convnext", "resnet")
# families whose "attn_in" site is a fused qkv nn.Linear: the default target
QKV_FAMILIES = tuple(f for f in TIMM_FAMILIES if FAMILY_SITES[f].get("attn_in") is not None
                     and FAMILY_SITES[f]["attn_in"].types == (nn.Linear,))
NOT_INSTALLED = "(none: PEFT is not installed; pip install 'petlbench[peft]')"
# PEFT fields petlbench sets itself
REFUSED = {"peft_type": "the option `tuner` gives it",
           "modules_to_save": "the head trains as for every method; PEFT's copy of it would hide it from timm"}


def have_peft() -> bool:
    return importlib.util.find_spec("peft") is not None


# tuners `inject_adapter_in_model` takes that would not run as their authors': AdaLoRA's rank budget is reallocated by
# `update_and_allocate`, called from the training loop after every backward (src/peft/tuners/adalora/model.py:328-332),
# and its orthogonality term is added to the loss by its model's forward (:229-256); ShadowPEFT is refused by
# `inject_adapter_in_model` itself (src/peft/mapping.py:78-83)
EXCLUDED = {"adalora": "its rank budget is reallocated from the training loop (update_and_allocate), which "
                       "petlbench's engine does not call",
            "shadow": "PEFT's inject_adapter_in_model does not support it"}


def injectable_tuners() -> dict[str, Any]:
    """tuner name -> PEFT's tuner model class, for every tuner `inject_adapter_in_model` accepts: one with a layer
    class and no state shared across layers (src/peft/mapping.py:85-96), less `EXCLUDED`."""
    from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING

    return {str(t.value).lower(): cls for t, cls in PEFT_TYPE_TO_TUNER_MAPPING.items()
            if getattr(cls, "tuner_layer_cls", None) is not None and not cls.uses_shared_state
            and str(t.value).lower() not in EXCLUDED}


def peft_config_class(tuner: str):
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
    from peft.utils import PeftType

    return PEFT_TYPE_TO_CONFIG_MAPPING[PeftType(tuner.upper())]


@dataclass
class PEFTOptions:
    tuner: str = "lora"  # PEFT's type name (PeftType), any case
    config: str | dict = "{}"  # the tuner config's fields: a JSON object (a mapping is kept as its JSON)

    def __post_init__(self) -> None:
        # one spelling per configuration, so equal configurations share a record hash
        try:
            fields = json.loads(self.config) if isinstance(self.config, str) else self.config
        except json.JSONDecodeError:
            return  # validate() says what is wrong
        if isinstance(fields, dict):
            self.config = json.dumps(fields, sort_keys=True)
        self.tuner = self.tuner.lower()

    def fields(self) -> dict[str, Any]:
        return json.loads(self.config)

    def validate(self) -> str | None:
        try:
            fields = self.fields()
        except json.JSONDecodeError as e:
            return f"config={self.config!r} is not JSON ({e.msg}); e.g. config='{{\"r\": 8}}'"
        if not isinstance(fields, dict):
            return f"config={self.config!r} must be a JSON object of the PEFT config's fields"
        for key, why in REFUSED.items():
            if key in fields:
                return f"config: {key!r} is not accepted ({why})"
        if not have_peft():  # the method then supports no backbone (see PEFT.only_families)
            return None
        tuners = injectable_tuners()
        if self.tuner in EXCLUDED:
            return f"tuner={self.tuner!r} is not run here: {EXCLUDED[self.tuner]}"
        if self.tuner not in tuners:
            return (f"tuner={self.tuner!r} is not a PEFT tuner that can be injected into a model; known: "
                    f"{', '.join(sorted(tuners))}{did_you_mean(self.tuner, tuners)}")
        cls = peft_config_class(self.tuner)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(fields) - known)
        if unknown:
            return (f"config: {cls.__name__} has no field {unknown[0]!r}{did_you_mean(unknown[0], known)}; see "
                    f"python -c \"import peft; help(peft.{cls.__name__})\"")
        return None


class PEFTLayer(Wrapper):
    """One PEFT tuner layer (`base`; the backbone's module is its `base_layer`). `trains`: the names, within it,
    of the tensors PEFT left trainable when it injected the layer."""

    def __init__(self, layer: nn.Module):
        super().__init__(layer)
        self.trains = tuple(n for n, p in layer.named_parameters() if p.requires_grad)

    def forward(self, *args, **kwargs):
        return self.base(*args, **kwargs)

    def merged(self) -> nn.Module:
        from peft.tuners.tuners_utils import BaseTunerLayer

        layer = self.base
        if type(layer).merge is BaseTunerLayer.merge:
            raise MergeError(f"PEFT's {type(layer).__name__} layer does not merge")
        with torch.no_grad():
            layer.merge()
        return layer.get_base_layer()


@register_method("peft")
class PEFT(PETLMethod):
    config_cls = PEFTOptions
    paper = "Mangrulkar et al. 2022, github.com/huggingface/peft"
    display_name = "PEFT"

    @property
    def only_families(self) -> tuple[str, ...]:  # type: ignore[override]
        # (its entries are named in the core's "not supported" error, hence the hint when PEFT is missing)
        if not have_peft():
            return (NOT_INSTALLED,)
        return TIMM_FAMILIES if "target_modules" in self.cfg.fields() else QKV_FAMILIES

    def peft_config(self, family: str):
        """The PEFT config object of this configuration on a `family` backbone."""
        cls, fields = peft_config_class(self.cfg.tuner), self.cfg.fields()
        if "target_modules" in cls.__dataclass_fields__:
            fields.setdefault("target_modules", FAMILY_SITES[family]["attn_in"].pattern)
        try:
            return cls(**fields)
        except (TypeError, ValueError) as e:  # PEFT's own checks of its fields
            raise ConfigError(f"method 'peft': config for tuner {self.cfg.tuner!r}: {e}") from None

    def apply(self, model: nn.Module, family: str) -> nn.Module:
        from peft import inject_adapter_in_model
        from peft.tuners.tuners_utils import BaseTunerLayer

        config = self.peft_config(family)
        try:
            inject_adapter_in_model(config, model)
        except ValueError as e:  # no module matches target_modules, a module type the tuner has no layer for
            raise ConfigError(f"method 'peft' ({self.cfg.tuner}): {str(e).strip().splitlines()[0]}") from None
        del model.peft_config
        for name in [n for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)]:
            replace_module(model, name, PEFTLayer(model.get_submodule(name)))
        return model

    def trainable_parameters(self, model: nn.Module) -> set[str]:
        names = {f"{n}.base.{p}" for n, m in model.named_modules() if isinstance(m, PEFTLayer) for p in m.trains}
        if self.cfg.fields().get("bias") == "all":  # PEFT's bias="all": every bias (tuners_utils.py:530-533)
            names |= own_biases(model)
        return names

    def merge_blocker(self, family: str) -> str | None:
        blocked = super().merge_blocker(family)
        if blocked or not have_peft() or self.cfg.tuner not in injectable_tuners():
            return blocked
        from peft.tuners.tuners_utils import BaseTunerLayer

        layer_cls = injectable_tuners()[self.cfg.tuner].tuner_layer_cls
        layers = [c for c in _subclasses(layer_cls) if issubclass(c, nn.Module)]
        if all(c.merge is BaseTunerLayer.merge for c in layers):
            return f"PEFT's {self.cfg.tuner} layers do not merge ({layer_cls.__name__} has no merge)"
        return None


def _subclasses(cls: type) -> list[type]:
    out = [cls]
    for sub in cls.__subclasses__():
        out += _subclasses(sub)
    return out
