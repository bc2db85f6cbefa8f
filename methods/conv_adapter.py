"""Conv-Adapter: "Conv-Adapter: Exploring Parameter Efficient Transfer Learning for ConvNets", Chen et al., 2022
(arXiv:2208.07463), in the "Convolution Parallel" placement of the authors' code (Hhhhhhao/Conv-Adapter):

    a(x) = alpha * W_up(act(W_dw(x)))     W_dw: k x k conv to C_in / gamma channels, one group per output channel
                                          (each sees gamma input channels); W_up: 1x1 conv; alpha per channel, 1
    ResNet Bottleneck:  conv3(relu(bn2(conv2(x))) + a(x))   the 3x3 stage and its parallel adapter, both from
                                                            conv2's input (models/backbones/resnet.py:164-170)
    ConvNeXt block:     conv_dw(x) + a(x)                   beside the depthwise 7x7 (convnext.py:58-62); and,
                                                            with `downsample`, beside each stage's 2x2 stride-2
                                                            conv, from its LayerNorm's output (convnext.py:157-161)

The adapter's kernel, stride and padding are those of the conv it runs beside; act is ReLU on ResNet, GELU on
ConvNeXt (resnet.py:150, convnext.py:53). Its weights start as the backbone's own init leaves them (the authors
build it inside the backbone before its init: resnet.py:238-243 Kaiming fan-out, convnext.py:141,148-152
trunc_normal 0.02), so the adapter is not zero at the start. A BasicBlock (resnet18/34) has no 1x1 conv after
its second 3x3: there the adapter is added to that conv's output (the authors' BasicBlock path, resnet.py:84-88,
reads a variable before it is set and never ran).
Not mergeable: the branch has a nonlinearity, and on ResNet it is added after the 3x3 stage's ReLU.
Parameters per adapted conv (C_in -> C_out, w = C_in // gamma): k*k*gamma*w + w + w*C_out + C_out + C_out.
ResNet-50, gamma=8: 199,192 (adapters only); ConvNeXt-B: see tests/test_conv_adapter.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
from timm.layers import trunc_normal_

from petlbench.errors import ConfigError
from petlbench.method import PETLMethod, Wrapper, register_method
from petlbench.sites import detect_family, find_sites, replace_module


@dataclass
class ConvAdapterConfig:
    reduction: float = 8.0  # gamma: main.py:47 (--adapt_size 8); width = C_in // gamma (resnet.py:146)
    # None: ReLU on ResNet (resnet.py:150), GELU on ConvNeXt (convnext.py:53)
    act: Literal["relu", "gelu"] | None = None
    scale_init: float = 1.0  # alpha: tuning_modules/conv_adapter.py:113 (1.0 * ones, trained)
    # None: each backbone's init (resnet.py:240 kaiming_normal fan_out relu; convnext.py:150 trunc_normal 0.02)
    init: Literal["kaiming", "trunc_normal"] | None = None
    downsample: bool = True  # ConvNeXt: adapters beside the 3 stage downsample convs too (convnext.py:113-123)
    # the block norms and the final norm train too on ConvNeXt: the authors' freeze rule keeps every parameter
    # with 'norm' in its name (models/__init__.py:114-116); timm's ResNet has none (their extra BatchNorm before
    # pooling, resnet.py:259, is no timm layer)
    train_norms: bool = True

    def validate(self) -> str | None:
        if self.reduction <= 0:
            return f"reduction must be positive, got {self.reduction}"
        return None


class ConvAdapterBranch(nn.Module):
    """alpha * up(act(dw(x))): dw a k x k conv from `cin` to `cin // reduction` channels in as many groups, up a
    1x1 conv to `cout`; k, stride, padding, dilation those of `beside`."""

    def __init__(self, beside: nn.Conv2d, cout: int, cfg: ConvAdapterConfig, act: str, init: str):
        super().__init__()
        width = int(beside.in_channels // cfg.reduction)
        if width < 1 or beside.in_channels % width:
            raise ConfigError(f"conv_adapter: reduction={cfg.reduction} leaves {width} groups for "
                              f"{beside.in_channels} channels (need a divisor of the width)")
        self.dw = nn.Conv2d(beside.in_channels, width, beside.kernel_size, beside.stride, beside.padding,
                            beside.dilation, groups=width)
        self.act = nn.ReLU() if act == "relu" else nn.GELU()
        self.up = nn.Conv2d(width, cout, 1)
        self.scale = nn.Parameter(torch.full((1, cout, 1, 1), cfg.scale_init))
        for conv in (self.dw, self.up):
            if init == "kaiming":
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            else:
                trunc_normal_(conv.weight, std=0.02)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.dw(x))) * self.scale


class ConvParallel(Wrapper):
    """base(x) + a(x): the adapter beside a conv, added to its output."""

    def __init__(self, base: nn.Conv2d, adapter: ConvAdapterBranch):
        super().__init__(base)
        self.adapter = adapter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.adapter(x)


class ConvAdapterTap(Wrapper):
    """A Bottleneck's 3x3 conv: runs `base` and computes the adapter from the same input, which the block's
    next conv (`ConvAdapterAdd`) adds to its input: the adapter spans the conv, its BN and its activation."""

    def __init__(self, base: nn.Conv2d, adapter: ConvAdapterBranch):
        super().__init__(base)
        self.adapter = adapter
        self.pending: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.pending = self.adapter(x)
        return self.base(x)

    def take(self) -> torch.Tensor:
        out, self.pending = self.pending, None
        if out is None:
            raise RuntimeError("conv_adapter: the block's 3x3 conv did not run before its last 1x1 conv")
        return out


class ConvAdapterAdd(Wrapper):
    """A Bottleneck's last 1x1 conv, fed its input plus the adapter output of the same block's `ConvAdapterTap`
    (under nn.DataParallel a replica would read the original tap and raise; DDP is what the suite uses)."""

    def __init__(self, base: nn.Conv2d, tap: ConvAdapterTap):
        super().__init__(base)
        self._tap = (tap,)  # a tuple: the tap is the block's own child, not registered twice

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x + self._tap[0].take())


@register_method("conv_adapter")
class ConvAdapter(PETLMethod):
    config_cls = ConvAdapterConfig
    sites = ("spatial_conv",)  # ResNet and ConvNeXt; a ViT has no spatial conv to run beside
    optional_sites = ("conv_out", "downsample")
    mergeable = False  # a nonlinear branch (and, on ResNet, added after the 3x3 stage's ReLU)
    paper = "Chen et al. 2022, arXiv:2208.07463"
    display_name = "Conv-Adapter"

    def _branch(self, beside: nn.Conv2d, cout: int, family: str) -> ConvAdapterBranch:
        act = self.cfg.act or ("relu" if family == "resnet" else "gelu")
        init = self.cfg.init or ("kaiming" if family == "resnet" else "trunc_normal")
        return ConvAdapterBranch(beside, cout, self.cfg, act, init)

    def _parallel(self, conv: nn.Conv2d, family: str) -> ConvParallel:
        return ConvParallel(conv, self._branch(conv, conv.out_channels, family))

    def apply(self, model: nn.Module, family: str) -> nn.Module:
        outs = {s.name.rpartition(".")[0]: s for s in find_sites(model, family, "conv_out", required=False)}
        for site in find_sites(model, family, "spatial_conv"):
            out = outs.get(site.name.rpartition(".")[0])
            if out is None:
                replace_module(model, site.name, self._parallel(site.module, family))
                continue
            tap = ConvAdapterTap(site.module, self._branch(site.module, out.module.in_channels, family))
            replace_module(model, site.name, tap)
            replace_module(model, out.name, ConvAdapterAdd(out.module, tap))
        if self.cfg.downsample:
            for site in find_sites(model, family, "downsample", required=False):
                replace_module(model, site.name, self._parallel(site.module, family))
        return model

    def trainable_parameters(self, model: nn.Module) -> set[str]:
        names = super().trainable_parameters(model)
        if self.cfg.train_norms:
            family = detect_family(model)
            for s in (s for kind in ("block_norm", "final_norm") for s in find_sites(model, family, kind, False)):
                names |= {f"{s.name}.{n}" for n, _ in s.module.named_parameters()}
        return names
