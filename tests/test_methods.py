"""One matrix: every registered method x every tiny ViT variant, through the same checks."""
from __future__ import annotations

import collections

import pytest
import timm
import torch

import petlbench
from petlbench.backbones import head_parameters
from petlbench.method import METHODS, Wrapper

from tiny import BACKBONE, NUM_CLASSES, VIT_VARIANTS, build, images, randomize_trainable

MATRIX = [(m, v) for m in petlbench.list_methods() for v in VIT_VARIANTS]
MERGEABLE = [(m, v) for m, v in MATRIX if METHODS.get(m).mergeable]
NOT_MERGEABLE = sorted({m for m, _ in MATRIX if not METHODS.get(m).mergeable})


def _method_owned(model) -> set[int]:
    """ids of parameters the method may train, derived structurally from what the method did."""
    name = model.petl.method
    if name == "full":
        return {id(p) for p in model.parameters()}
    if name == "bitfit":
        return {id(m.bias) for m in model.modules() if isinstance(getattr(m, "bias", None), torch.nn.Parameter)}
    return {id(p) for m in model.modules() if isinstance(m, Wrapper) for _, p in m.own_parameters()}


@pytest.mark.parametrize("method,variant", MATRIX)
def test_forward_shape_and_finite(method, variant):
    model = build(method, variant).eval()
    out = model(images())
    assert out.shape == (4, NUM_CLASSES)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("method,variant", MATRIX)
def test_trainable_is_method_plus_head(method, variant):
    model = build(method, variant)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    head = {id(p) for p in head_parameters(model)}
    assert head and head <= trainable
    assert trainable == _method_owned(model) | head
    assert petlbench.count_trainable(model) == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert petlbench.count_trainable(model, include_head=False) == petlbench.count_trainable(model) - sum(
        p.numel() for p in head_parameters(model))


@pytest.mark.parametrize("method,variant", MATRIX)
def test_no_forward_is_monkey_patched(method, variant):
    model = build(method, variant)
    patched = [n for n, m in model.named_modules() if "forward" in vars(m)]
    assert patched == []


@pytest.mark.parametrize("method,variant", MATRIX)
def test_frozen_means_frozen(method, variant):
    model = build(method, variant).train()
    randomize_trainable(model)  # so that no trainable tensor sits behind a zero-initialised one
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    loss = torch.nn.functional.cross_entropy(model(images(8)), torch.arange(8) % NUM_CLASSES)
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert no_grad == [], f"trainable tensors without gradient: {no_grad[:5]}"
    opt.step()
    for n, p in model.named_parameters():
        changed = not torch.equal(before[n], p.detach())
        assert changed == p.requires_grad, f"{n}: requires_grad={p.requires_grad} but changed={changed}"


@pytest.mark.parametrize("method,variant", MATRIX)
def test_save_load_roundtrip(method, variant, tmp_path):
    # Only tuned tensors are stored: the frozen backbone must be the same (pretrained) weights, hence the seed.
    torch.manual_seed(1)
    model = build(method, variant).eval()
    randomize_trainable(model)
    path = str(tmp_path / "tuned.safetensors")
    petlbench.save_tuned(model, path)
    from safetensors.torch import load_file

    stored = load_file(path)
    assert set(stored) == {n for n, p in model.named_parameters() if p.requires_grad}
    torch.manual_seed(1)
    fresh = build(method, variant).eval()
    x = images()
    assert not torch.equal(fresh(x), model(x))
    petlbench.load_tuned(fresh, path)
    assert torch.equal(fresh(x), model(x))
    for n, p in fresh.named_parameters():
        if p.requires_grad:
            assert torch.equal(p, dict(model.named_parameters())[n])


@pytest.mark.parametrize("method,variant", MERGEABLE)
def test_merge_is_exact_and_plain(method, variant):
    model = build(method, variant).eval()
    randomize_trainable(model)
    merged = petlbench.merge(model).eval()
    x = images()
    with torch.no_grad():
        diff = (merged(x) - model(x)).abs().max().item()
    assert diff <= 1e-4
    plain = timm.create_model(BACKBONE, pretrained=False, num_classes=NUM_CLASSES, **VIT_VARIANTS[variant])
    assert collections.Counter(type(m) for m in merged.modules()) == collections.Counter(type(m) for m in plain.modules())
    assert sum(p.numel() for p in merged.parameters()) == sum(p.numel() for p in plain.parameters())
    plain.load_state_dict(merged.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(plain.eval()(x), merged(x))
    assert isinstance(model.petl, petlbench.PETLInfo)  # merge leaves the tuned model as it was


@pytest.mark.parametrize("method", NOT_MERGEABLE)
def test_merge_refuses_non_mergeable(method):
    with pytest.raises(petlbench.MergeError, match=method):
        petlbench.merge(build(method))
