"""The `peft` method: PEFT's tuners injected into a timm backbone, trained, counted and merged by petlbench's core."""
from __future__ import annotations

import pytest
import torch

import petlbench
from petlbench.backbones import head_parameters

from tiny import NUM_CLASSES, build, images, plain, randomize_trainable

peft = pytest.importorskip("peft")


def _trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def _head(model) -> set[str]:
    ids = {id(p) for p in head_parameters(model)}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_lora_through_peft_trains_its_adapters_and_the_head():
    torch.manual_seed(0)
    model = build("peft").train()
    adapters = _trainable(model) - _head(model)
    # PEFT's LoRA: A (r x in) and B (out x r) per targeted qkv, r from PEFT's own default
    r, (d, depth) = peft.LoraConfig().r, (64, 2)
    assert petlbench.count_trainable(model, include_head=False) == depth * r * (d + 3 * d)
    assert adapters and all(".lora_A." in n or ".lora_B." in n for n in adapters)
    assert {n.split(".lora_")[0] for n in adapters} == {f"blocks.{i}.attn.qkv.base" for i in range(depth)}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
    x, y = images(8), torch.arange(8) % NUM_CLASSES
    losses = []
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert changed == adapters | _head(model)  # B starts at zero: A moves once B has, within three steps
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)


def test_merge_goes_through_peft_and_equals_the_tuned_model():
    torch.manual_seed(0)
    model = build("peft").eval()
    randomize_trainable(model)
    merged = petlbench.merge(model).eval()
    x = images()
    with torch.no_grad():
        assert (merged(x) - model(x)).abs().max().item() <= 1e-5
    assert [type(m) for m in merged.modules()] == [type(m) for m in plain("vit_cls").modules()]
    # the merged qkv is W + (lora_alpha / r) B A (PEFT's LoRA), from the tuned model's own tensors
    layer = model.blocks[0].attn.qkv.base
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    want = layer.base_layer.weight + layer.scaling["default"] * b @ a
    torch.testing.assert_close(merged.blocks[0].attn.qkv.weight, want, rtol=0, atol=1e-6)


def test_peft_lora_is_petlbench_fused_lora():
    """The same A and B in PEFT's LoRA and in petlbench's `lora` (fused: one update of the whole qkv output)
    give the same model: the two implementations agree."""
    torch.manual_seed(0)
    ours = build("lora", method_cfg={"fused": True, "targets": "qkv"}).eval()
    torch.manual_seed(0)
    theirs = build("peft").eval()
    randomize_trainable(theirs)
    with torch.no_grad():
        for i in range(2):
            layer, mine = theirs.blocks[i].attn.qkv.base, ours.blocks[i].attn.qkv
            mine.lora_A[0].copy_(layer.lora_A["default"].weight)
            mine.lora_B[0].copy_(layer.lora_B["default"].weight)
        for name, p in theirs.get_classifier().named_parameters():
            ours.get_classifier().get_parameter(name).copy_(p)
        x = images()
        assert (ours(x) - theirs(x)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("tuner,config,marker", [
    ("ia3", {"target_modules": ["qkv", "fc2"], "feedforward_modules": ["fc2"]}, ".ia3_l."),
    ("LoHa", {"r": 4, "target_modules": ["qkv"]}, ".hada_"),
    ("lokr", {"r": 4, "target_modules": ["qkv"]}, ".lokr_"),
    ("oft", {"oft_block_size": 4, "target_modules": ["qkv"]}, ".oft_"),
    ("boft", {"boft_block_size": 4, "target_modules": ["qkv"]}, ".boft_"),  # (PEFT warns: no CUDA extension)
])
def test_other_tuners_build_train_and_merge(tuner, config, marker):
    torch.manual_seed(0)
    model = build("peft", method_cfg={"tuner": tuner, "config": config}).eval()
    adapters = _trainable(model) - _head(model)
    assert adapters and all(marker in n for n in adapters)
    randomize_trainable(model)
    x = images()
    with torch.no_grad():
        out = model(x)
        assert torch.isfinite(out).all()
        assert (petlbench.merge(model).eval()(x) - out).abs().max().item() <= 1e-4


def test_bad_options_name_the_option():
    with pytest.raises(petlbench.ConfigError, match=r"tuner='loar' is not a PEFT tuner.*did you mean 'lora'"):
        petlbench.get_method("peft", {"tuner": "loar"})
    with pytest.raises(petlbench.ConfigError, match=r"config: LoraConfig has no field 'rr'.*did you mean 'r'"):
        petlbench.get_method("peft", {"config": {"rr": 8}})
    with pytest.raises(petlbench.ConfigError, match=r"config='\{r: 8\}' is not JSON"):
        petlbench.get_method("peft", {"config": "{r: 8}"})
    with pytest.raises(petlbench.ConfigError, match=r"'modules_to_save' is not accepted"):
        petlbench.get_method("peft", {"config": {"modules_to_save": ["head"]}})
    with pytest.raises(petlbench.ConfigError, match=r"method 'peft' \(lora\): Target modules \{'nowhere'\}"):
        build("peft", method_cfg={"config": {"target_modules": ["nowhere"]}})


def test_one_configuration_one_spelling():
    a = petlbench.get_method("peft", {"tuner": "LoRA", "config": '{"target_modules": ["qkv"], "r": 4}'}).cfg
    b = petlbench.get_method("peft", {"tuner": "lora", "config": {"r": 4, "target_modules": ["qkv"]}}).cfg
    assert a == b


def test_explicit_targets_reach_the_convnets():
    method = petlbench.get_method("peft", {"config": {"target_modules": ["fc1"]}})
    assert {"convnext", "resnet"} <= set(method.families) and "convnext" not in petlbench.get_method("peft").families
    model = build("peft", "convnext", method_cfg={"config": {"target_modules": ["fc1"]}}).eval()
    randomize_trainable(model)
    x = images()
    with torch.no_grad():
        assert (petlbench.merge(model).eval()(x) - model(x)).abs().max().item() <= 1e-4
