"""One matrix: every registered method x every tiny backbone variant of the families it supports, through the
same checks. What to expect comes from what each method declares: its families (from its sites), what it trains
(`trainable_parameters`) and whether it merges (`merge_blocker`); no method is named here."""
from __future__ import annotations

import collections
import dataclasses
import typing

import pytest
import torch

import petlbench
from petlbench.backbones import head_parameters
from petlbench.method import METHODS, Wrapper

from tiny import FAMILY, NUM_CLASSES, VARIANTS, build, images, plain, randomize_trainable

MATRIX = [(m, v) for m in petlbench.list_methods() for v in VARIANTS if FAMILY[v] in METHODS.get(m).families]
UNSUPPORTED = sorted({(m, FAMILY[v]) for m in petlbench.list_methods() for v in VARIANTS
                      if FAMILY[v] not in METHODS.get(m).families})
MERGES = [(m, v) for m, v in MATRIX if petlbench.get_method(m).merge_blocker(FAMILY[v]) is None]
DOES_NOT_MERGE = [(m, v) for m, v in MATRIX if (m, v) not in MERGES]


def _should_train(model) -> set[str]:
    """What the method says trains, and the head (the core always trains it)."""
    head = {id(p) for p in head_parameters(model)}
    return petlbench.method_of(model).trainable_parameters(model) | {
        n for n, p in model.named_parameters() if id(p) in head}


@pytest.mark.parametrize("method,variant", MATRIX)
def test_forward_shape_and_finite(method, variant):
    model = build(method, variant).eval()
    out = model(images())
    assert out.shape == (4, NUM_CLASSES)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("method,variant", MATRIX)
def test_trainable_is_what_the_method_says_plus_head(method, variant):
    model = build(method, variant)
    named = dict(model.named_parameters())
    says = petlbench.method_of(model).trainable_parameters(model)
    assert says <= set(named)
    added = {f"{n}.{p}" for n, m in model.named_modules() if isinstance(m, Wrapper) for p, _ in m.own_parameters()}
    assert added <= says  # every parameter a method adds trains (none is dead weight)
    assert {n for n, p in named.items() if p.requires_grad} == _should_train(model)
    head = sum(p.numel() for p in head_parameters(model))
    assert head > 0
    assert petlbench.count_trainable(model) == sum(named[n].numel() for n in _should_train(model))
    assert petlbench.count_trainable(model, include_head=False) == petlbench.count_trainable(model) - head


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
    train = _should_train(model)
    no_grad = sorted(n for n, p in model.named_parameters()
                     if n in train and (p.grad is None or p.grad.abs().sum() == 0))
    assert no_grad == [], f"trainable tensors without gradient: {no_grad[:5]}"
    opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert changed == train, f"changed but frozen: {sorted(changed - train)[:5]}; trainable but unchanged: " \
                             f"{sorted(train - changed)[:5]}"


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


@pytest.mark.parametrize("method,variant", MERGES)
def test_merge_is_exact_and_plain(method, variant):
    model = build(method, variant).eval()
    randomize_trainable(model)
    merged = petlbench.merge(model).eval()
    x = images()
    with torch.no_grad():
        diff = (merged(x) - model(x)).abs().max().item()
    assert diff <= 1e-4
    twin = plain(variant)
    types = collections.Counter
    assert types(type(m) for m in merged.modules()) == types(type(m) for m in twin.modules())
    assert sum(p.numel() for p in merged.parameters()) == sum(p.numel() for p in twin.parameters())
    twin.load_state_dict(merged.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(twin.eval()(x), merged(x))
    assert isinstance(model.petl, petlbench.PETLInfo)  # merge leaves the tuned model as it was


@pytest.mark.parametrize("method,variant", DOES_NOT_MERGE)
def test_merge_refusal_says_why(method, variant):
    family = FAMILY[variant]
    why = petlbench.get_method(method).merge_blocker(family)
    with pytest.raises(petlbench.MergeError, match=f"'{method}' on this {family} backbone does not merge") as err:
        petlbench.merge(build(method, variant))
    assert why in str(err.value)


@pytest.mark.parametrize("method", petlbench.list_methods())
def test_describe_answers_what_the_matrix_finds(method):
    d = METHODS.get(method).describe()
    assert d["families"] == list(METHODS.get(method).families)
    for m, v in MATRIX:
        if m == method:
            assert (FAMILY[v] in d["merges_on"]) == ((m, v) in MERGES)
    assert d["mergeable"] == bool(d["merges_on"])


@pytest.mark.parametrize("method,family", UNSUPPORTED)
def test_unsupported_backbone_is_a_clear_error(method, family):
    variant = next(v for v in VARIANTS if FAMILY[v] == family)
    with pytest.raises(petlbench.ConfigError, match=f"does not support {family} backbones .*: .*; it supports: "):
        build(method, variant)


@pytest.mark.parametrize("method", petlbench.list_methods())
def test_variant_keys_and_names(method):
    cls = METHODS.get(method)
    defaults = dataclasses.asdict(cls.config_cls())
    key = cls.variant_key({})
    assert isinstance(key, str) and key and cls.variant_name(key)
    assert cls.variant_key(defaults) == key  # a missing option means its default
    hints = typing.get_type_hints(cls.config_cls)
    for option in cls.key_options:  # each selects a published variant: some other value gives another key
        values = (True, False) if hints[option] is bool else typing.get_args(hints[option])
        keys = {v: cls.variant_key({**defaults, option: v}) for v in values}
        assert len(set(keys.values())) > 1, f"{option} selects no variant: {keys}"
        names = {cls.variant_name(k) for k in keys.values()}
        assert len(names) == len(set(keys.values())) and all(names), f"{option}: names {names} for keys {keys}"
