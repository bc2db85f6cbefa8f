"""Conv-Adapter against the authors' computation (Hhhhhhao/Conv-Adapter @ 97e1fc8), written here from their code
with file:line quotes, on identical weights; exact counts on full-size ResNet-50 and ConvNeXt-B; the defaults."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

import petlbench
from petlbench.errors import MergeError
from petlbench.method import METHODS

from tiny import build, images, randomize_trainable


def authors_adapter(x, a):
    """models/tuning_modules/conv_adapter.py:117-125: out = conv2(act(conv1(x))) * se, conv1 grouped with
    groups = width (:104), conv2 1x1 (:109), se a (1, C, 1, 1) parameter (:113). `a` is our ConvAdapterBranch,
    read only for its tensors and conv geometry."""
    d = a.dw
    out = F.conv2d(x, d.weight, d.bias, d.stride, d.padding, d.dilation, groups=d.groups)
    out = F.relu(out) if isinstance(a.act, torch.nn.ReLU) else F.gelu(out)
    return F.conv2d(out, a.up.weight, a.up.bias) * a.scale


def authors_bottleneck(blk, x, adapter):
    """models/backbones/resnet.py:155-182 (Bottleneck.forward), on the timm block's frozen layers."""
    out = blk.act1(blk.bn1(blk.conv1(x)))              # :160-162
    out_adapt = authors_adapter(out, adapter)           # :164-165, from conv2's input
    out = F.relu(blk.bn2(blk.conv2.base(out)))          # :166-168
    out = out + out_adapt                               # :169-170, after the ReLU
    out = blk.bn3(blk.conv3.base(out))                  # :172-173
    identity = blk.downsample(x) if blk.downsample is not None else x  # :175-176
    return F.relu(out + identity)                       # :180-181


def authors_convnext_block(blk, x):
    """models/backbones/convnext.py:55-72 (Block.forward): the adapter beside the depthwise conv."""
    x_adapt = authors_adapter(x, blk.conv_dw.adapter)  # :58-59
    h = blk.conv_dw.base(x) + x_adapt                   # :60-62
    if blk.use_conv_mlp:  # timm's 1x1-conv MLP on NCHW (the authors' ConvNeXt has the Linear form only)
        h = blk.mlp(blk.norm(h))
    else:
        h = blk.mlp(blk.norm(h.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)  # :63-67
    h = h * blk.gamma.view(1, -1, 1, 1)                 # :68-69
    return x + h                                        # :71


def test_resnet_bottleneck_equals_authors():
    model = build("conv_adapter", "resnet").eval()
    randomize_trainable(model, std=0.2)  # scale and convs off their init, so every tensor shows
    x = images()
    with torch.no_grad():
        want = model.maxpool(model.act1(model.bn1(model.conv1(x))))
        for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
            for blk in stage:
                want = authors_bottleneck(blk, want, blk.conv2.adapter)
        want = model.fc(want.mean((2, 3)))
        got = model(x)
    assert torch.allclose(got, want, atol=1e-5)
    with torch.no_grad():  # the adapter changes the output (the check above could not pass with it ignored)
        for blk in (b for s in (model.layer1, model.layer2, model.layer3, model.layer4) for b in s):
            blk.conv2.adapter.scale.zero_()
        assert (model(x) - got).abs().max() > 1e-3


@pytest.mark.parametrize("variant", ["convnext", "convnext_convmlp"])
def test_convnext_equals_authors(variant):
    model = build("conv_adapter", variant).eval()
    randomize_trainable(model, std=0.2)
    x = images()
    with torch.no_grad():
        want = model.stem(x)
        for i, stage in enumerate(model.stages):
            if i > 0:  # convnext.py:155-161: the adapter beside the downsample conv, from its LayerNorm's output
                h = stage.downsample[0](want)
                want = stage.downsample[1].base(h) + authors_adapter(h, stage.downsample[1].adapter)
            for blk in stage.blocks:
                want = authors_convnext_block(blk, want)
        want = model.head.fc(model.head.norm(want.mean((2, 3), keepdim=True)).flatten(1))
        assert torch.allclose(model(x), want, atol=1e-5)


def test_adapter_geometry_follows_the_authors():
    model = build("conv_adapter", "resnet")
    a = model.layer1[0].conv2.adapter  # resnet.py:143-150: width // 8 groups, 3x3, stride of conv2, ReLU
    w = model.layer1[0].conv2.base.in_channels
    assert (a.dw.in_channels, a.dw.out_channels, a.dw.groups, a.dw.kernel_size) == (w, w // 8, w // 8, (3, 3))
    assert a.dw.stride == (1, 1)
    assert model.layer2[0].conv2.adapter.dw.stride == model.layer2[0].conv2.base.stride == (2, 2)
    assert isinstance(a.act, torch.nn.ReLU)
    c = build("conv_adapter", "convnext")
    a = c.stages[1].blocks[0].conv_dw.adapter  # convnext.py:46-53: 7x7 padding 3, GELU
    assert (a.dw.kernel_size, a.dw.padding, a.dw.groups) == ((7, 7), (3, 3), 32 // 8)
    assert isinstance(a.act, torch.nn.GELU)
    d = c.stages[1].downsample[1].adapter  # convnext.py:116-123: kernel 2, stride 2, padding 0, dims[i] -> dims[i+1]
    assert (d.dw.kernel_size, d.dw.stride, d.dw.padding, d.up.out_channels) == ((2, 2), (2, 2), (0, 0), 32)


def test_basic_block_resnet_adds_after_the_second_conv():
    kw = dict(layers=(1, 1, 1, 1), channels=(16, 16, 16, 16), stem_width=8, zero_init_last=False)
    model = petlbench.create_model("resnet18", method="conv_adapter", num_classes=5, pretrained=False, **kw).eval()
    blk = model.layer1[0]
    with torch.no_grad():
        x = model.maxpool(model.act1(model.bn1(model.conv1(images()))))
        h = blk.act1(blk.bn1(blk.conv1(x)))
        assert torch.allclose(blk.conv2(h), blk.conv2.base(h) + authors_adapter(h, blk.conv2.adapter), atol=1e-6)
    assert model(images()).shape == (4, 5)


def _count(cin, cout, k, g=8):
    w = cin // g
    return k * k * g * w + w + w * cout + cout + cout  # dw conv (+bias), 1x1 conv (+bias), scale


@pytest.mark.slow
def test_resnet50_count():
    # Bottleneck 3x3 widths 64, 128, 256, 512 in 3, 4, 6, 3 blocks: 199,192 adapter parameters (0.78% of the
    # 25.56M of ResNet-50). The paper's abstract (arXiv:2208.07463v4) says "3.5% full fine-tuning parameters of
    # ResNet50"; its per-dataset gamma and the authors' configs/*.json (read by utils.py:550) are not published,
    # and the authors' count (main.py:335) also includes their head and the BatchNorm they add before pooling
    # (resnet.py:259, 4,096), so no exact match is possible at the code's default gamma = 8.
    want = sum(n * _count(w, w, 3) for w, n in ((64, 3), (128, 4), (256, 6), (512, 3)))
    assert want == 199_192
    model = petlbench.create_model("resnet50", method="conv_adapter", num_classes=100, pretrained=False)
    assert petlbench.count_trainable(model, include_head=False) == want
    assert petlbench.count_paper(model) == want
    assert petlbench.count_trainable(model) == want + 2048 * 100 + 100


@pytest.mark.slow
def test_convnext_base_count():
    dims, depths = (128, 256, 512, 1024), (3, 3, 27, 3)
    blocks = sum(n * (_count(d, d, 7) + 2 * d) for d, n in zip(dims, depths))  # adapter + block LayerNorm
    down = sum(_count(dims[i], dims[i + 1], 2) for i in range(3))
    want = blocks + down + 2 * 1024  # + the final norm
    model = petlbench.create_model("convnext_base", method="conv_adapter", num_classes=100, pretrained=False)
    assert petlbench.count_trainable(model, include_head=False) == want == 2_362_816


def test_published_defaults():
    cfg = dataclasses.asdict(METHODS.get("conv_adapter").config_cls())
    assert cfg["reduction"] == 8.0       # main.py:47 --adapt_size default 8
    assert cfg["scale_init"] == 1.0      # tuning_modules/conv_adapter.py:113 1.0 * torch.ones
    assert cfg["downsample"] is True     # convnext.py:113-123
    assert cfg["train_norms"] is True    # models/__init__.py:114-116 ('norm' in name trains)


def test_only_convnets_and_no_merge():
    assert set(METHODS.get("conv_adapter").families) == {"resnet", "convnext"}
    with pytest.raises(petlbench.PETLBenchError, match="does not support vit backbones"):
        build("conv_adapter", "vit_cls")
    with pytest.raises(MergeError):
        petlbench.merge(build("conv_adapter", "resnet"))
    with pytest.raises(petlbench.ConfigError, match="reduction"):
        build("conv_adapter", "resnet", {"reduction": 64})


def test_options():
    plain_norms = build("conv_adapter", "convnext", {"train_norms": False, "downsample": False})
    full = build("conv_adapter", "convnext")
    n, m = (petlbench.count_trainable(x, include_head=False) for x in (plain_norms, full))
    norms = 2 * sum((16, 32, 32, 32)) + 2 * 32
    down = sum(_count(c, d, 2) for c, d in ((16, 32), (32, 32), (32, 32)))
    assert m - n == norms + down
