"""One matrix: every registered method x every tiny ViT variant, through the same checks."""
from __future__ import annotations

import collections

import pytest
import torch

import petlbench
from petlbench.backbones import head_parameters
from petlbench.method import METHODS, Wrapper

from tiny import FAMILY, NUM_CLASSES, VARIANTS, build, images, plain, randomize_trainable

# Skips come from what each method declares (its families, mergeable, merge_blocker), not from lists here.
MATRIX = [(m, v) for m in petlbench.list_methods() for v in VARIANTS if FAMILY[v] in METHODS.get(m).families]
UNSUPPORTED = sorted({(m, FAMILY[v]) for m in petlbench.list_methods() for v in VARIANTS
                      if FAMILY[v] not in METHODS.get(m).families})
MERGEABLE = [(m, v) for m, v in MATRIX if METHODS.get(m).mergeable and not petlbench.get_method(m).merge_blocker(FAMILY[v])]
BLOCKED = [(m, v) for m, v in MATRIX if METHODS.get(m).mergeable and petlbench.get_method(m).merge_blocker(FAMILY[v])]
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
    twin = plain(variant)
    assert collections.Counter(type(m) for m in merged.modules()) == collections.Counter(type(m) for m in twin.modules())
    assert sum(p.numel() for p in merged.parameters()) == sum(p.numel() for p in twin.parameters())
    twin.load_state_dict(merged.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(twin.eval()(x), merged(x))
    assert isinstance(model.petl, petlbench.PETLInfo)  # merge leaves the tuned model as it was


@pytest.mark.parametrize("method", NOT_MERGEABLE)
def test_merge_refuses_non_mergeable(method):
    with pytest.raises(petlbench.MergeError, match=method):
        petlbench.merge(build(method))


@pytest.mark.parametrize("method,family", UNSUPPORTED)
def test_unsupported_backbone_is_a_clear_error(method, family):
    variant = next(v for v in VARIANTS if FAMILY[v] == family)
    with pytest.raises(petlbench.PETLBenchError, match=f"does not support {family} backbones"):
        build(method, variant)


@pytest.mark.parametrize("method,variant", BLOCKED)
def test_merge_blocked_configuration_says_why(method, variant):
    with pytest.raises(petlbench.MergeError, match="does not merge"):
        petlbench.merge(build(method, variant))
