"""The merge algebra on its own: each identity against the layer it replaces, on random values."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from petlbench.errors import MergeError
from petlbench.folding import add_weight_delta, fold_input_affine, fold_output_affine


def test_fold_input_affine_linear():
    lin = nn.Linear(6, 4)
    M, c = torch.randn(6, 6), torch.randn(6)
    x = torch.randn(3, 6)
    g = fold_input_affine(lin, M, c)
    assert type(g) is nn.Linear
    torch.testing.assert_close(g(x), lin(x @ M.T + c), atol=1e-5, rtol=1e-5)


def test_fold_input_affine_without_bias_adds_one():
    lin = nn.Linear(6, 4, bias=False)
    c = torch.randn(6)
    g = fold_input_affine(lin, None, c)
    x = torch.randn(3, 6)
    torch.testing.assert_close(g(x), lin(x + c), atol=1e-5, rtol=1e-5)
    assert fold_input_affine(lin, torch.eye(6), None).bias is None


@pytest.mark.parametrize("layer,x", [
    (nn.Linear(5, 7), torch.randn(2, 3, 5)),
    (nn.Conv2d(3, 7, 3, padding=1), torch.randn(2, 3, 8, 8)),
    (nn.LayerNorm(7), torch.randn(2, 3, 7)),
])
def test_fold_output_affine(layer, x):
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn_like(p))
    s, t = torch.randn(7), torch.randn(7)
    g = fold_output_affine(layer, s, t)
    assert type(g) is type(layer)
    shape = (1, -1, 1, 1) if isinstance(layer, nn.Conv2d) else (-1,)
    torch.testing.assert_close(g(x), layer(x) * s.view(shape) + t.view(shape), atol=1e-5, rtol=1e-5)


def test_add_weight_delta():
    lin = nn.Linear(5, 9)
    D = torch.randn(9, 5)
    x = torch.randn(4, 5)
    torch.testing.assert_close(add_weight_delta(lin, D)(x), lin(x) + x @ D.T, atol=1e-5, rtol=1e-5)


def test_shape_errors_are_clear():
    with pytest.raises(MergeError, match="does not fit"):
        fold_input_affine(nn.Linear(6, 4), torch.eye(5))
    with pytest.raises(MergeError, match="does not fit"):
        add_weight_delta(nn.Linear(6, 4), torch.zeros(6, 4))
    with pytest.raises(MergeError, match="does not support"):
        fold_output_affine(nn.GELU(), torch.ones(3))


def test_fold_keeps_dtype():
    lin = nn.Linear(4, 4).to(torch.bfloat16)
    assert fold_input_affine(lin, torch.eye(4), torch.zeros(4)).weight.dtype == torch.bfloat16


# --- the wrapper forms (method.py): forward is the form's formula on every layer type, merged() equals it --------
import copy  # noqa: E402

from petlbench.errors import ConfigError  # noqa: E402
from petlbench.method import InputResidual, InputScale, OutputAffine, WeightDelta  # noqa: E402


def _randomized(layer: nn.Module) -> nn.Module:
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return layer.eval()


class _Residual(InputResidual):
    def __init__(self, base):
        super().__init__(base)
        self.F, self.c = nn.Parameter(torch.randn(self.width, self.width) * 0.3), nn.Parameter(torch.randn(self.width))

    def residual(self, x):
        return x @ self.F.t() + self.c

    def residual_affine(self):
        return self.F.double(), self.c.double()


class _Scale(InputScale):
    def __init__(self, base, shift=True):
        super().__init__(base)
        self.a, self.b = nn.Parameter(torch.randn(self.width)), nn.Parameter(torch.randn(self.width)) if shift else None

    def input_scale_shift(self, dtype=None):
        return self.a.to(dtype or self.a.dtype), None if self.b is None else self.b.to(dtype or self.b.dtype)


class _Output(OutputAffine):
    def __init__(self, base):
        super().__init__(base)
        self.s = nn.ParameterDict({k or "_": nn.Parameter(torch.randn(c)) for k, c in self.widths.items()})
        self.t = nn.ParameterDict({k or "_": nn.Parameter(torch.randn(c)) for k, c in self.widths.items()})

    def output_affine(self, proj):
        return self.s[proj or "_"], self.t[proj or "_"]


class _Delta(WeightDelta):
    def __init__(self, base):
        super().__init__(base)
        w = base.in_proj_weight if isinstance(base, nn.MultiheadAttention) else base.weight
        self.dW, self.db = nn.Parameter(torch.randn_like(w) * 0.3), nn.Parameter(torch.randn(w.shape[0]))

    def weight_delta(self, dtype=None):
        return self.dW.to(dtype or self.dW.dtype)

    def bias_delta(self, dtype=None):
        return self.db.to(dtype or self.db.dtype)


def _mha() -> nn.MultiheadAttention:
    return _randomized(nn.MultiheadAttention(6, 2, batch_first=True))


def _call(m, x):
    return m(x, x, x, need_weights=False)[0] if isinstance(m, nn.MultiheadAttention) or isinstance(
        getattr(m, "base", None), nn.MultiheadAttention) else m(x)


def _channels(x, f):  # f on the channel dim (1 for NCHW images, last otherwise)
    return f(x.movedim(1, -1)).movedim(-1, 1) if x.dim() == 4 else f(x)


def _check_merged(wrapper, x):
    merged = wrapper.merged()
    assert type(merged) is type(wrapper.base)
    with torch.no_grad():
        torch.testing.assert_close(_call(merged, x), _call(wrapper, x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("layer,x", [
    (lambda: nn.Linear(6, 4), torch.randn(2, 3, 6)),
    (lambda: nn.Conv2d(6, 5, 1), torch.randn(2, 6, 4, 4)),
    (_mha, torch.randn(2, 3, 6)),
])
def test_input_residual(layer, x):
    base = _randomized(layer())
    w = _Residual(base).eval()
    with torch.no_grad():
        t = _channels(x, lambda v: v + v @ w.F.t() + w.c)
        torch.testing.assert_close(_call(w, x), _call(base, t))
    _check_merged(w, x)


def test_input_residual_before_a_depthwise_conv_does_not_merge():
    w = _Residual(_randomized(nn.Conv2d(4, 4, 3, padding=1, groups=4)))
    assert torch.isfinite(w(torch.randn(2, 4, 5, 5))).all()
    with pytest.raises(MergeError, match="channel-mixing"):
        w.merged()


@pytest.mark.parametrize("layer,x,shift", [
    (lambda: nn.Linear(6, 4), torch.randn(2, 3, 6), True),
    (lambda: nn.Conv2d(6, 5, 1), torch.randn(2, 6, 4, 4), True),
    (lambda: nn.Conv2d(6, 6, 3, padding=1, groups=6), torch.randn(2, 6, 5, 5), False),
])
def test_input_scale(layer, x, shift):
    base = _randomized(layer())
    w = _Scale(base, shift).eval()
    with torch.no_grad():
        t = _channels(x, lambda v: v * w.a + (w.b if shift else 0))
        torch.testing.assert_close(w(x), base(t))
    _check_merged(w, x)
    if not shift:
        with pytest.raises(MergeError, match="zero-padded"):
            _Scale(base, True).merged()


@pytest.mark.parametrize("layer,x", [
    (lambda: nn.Linear(6, 4), torch.randn(2, 3, 6)),
    (lambda: nn.Conv2d(6, 5, 3, padding=1), torch.randn(2, 6, 4, 4)),
    (lambda: nn.Conv2d(6, 6, 3, padding=1, groups=6), torch.randn(2, 6, 4, 4)),
    (lambda: nn.LayerNorm(6), torch.randn(2, 3, 6)),
])
def test_output_affine(layer, x):
    base = _randomized(layer())
    w = _Output(base).eval()
    with torch.no_grad():
        torch.testing.assert_close(w(x), _channels(base(x), lambda y: y * w.s["_"] + w.t["_"]))
    _check_merged(w, x)


def test_output_affine_on_multihead_attention_scales_both_projections():
    base, x = _mha(), torch.randn(2, 3, 6)
    w = _Output(base).eval()
    ref = copy.deepcopy(base)
    with torch.no_grad():
        s, t, s_o, t_o = w.s["in_proj"], w.t["in_proj"], w.s["out_proj"], w.t["out_proj"]
        ref.in_proj_weight.mul_(s[:, None])
        ref.in_proj_bias.mul_(s).add_(t)
        ref.out_proj.weight.mul_(s_o[:, None])
        ref.out_proj.bias.mul_(s_o).add_(t_o)
        torch.testing.assert_close(_call(w, x), _call(ref, x))
        assert (_call(w, x) - _call(base, x)).abs().max() > 1e-2
    _check_merged(w, x)


@pytest.mark.parametrize("layer", [lambda: nn.Linear(6, 4), _mha])
def test_weight_delta(layer):
    base, x = _randomized(layer()), torch.randn(2, 3, 6)
    w = _Delta(base).eval()
    ref = copy.deepcopy(base)
    with torch.no_grad():
        if isinstance(base, nn.MultiheadAttention):
            ref.in_proj_weight.add_(w.dW)
            ref.in_proj_bias.add_(w.db)
        else:
            ref.weight.add_(w.dW)
            ref.bias.add_(w.db)
        torch.testing.assert_close(_call(w, x), _call(ref, x))
    _check_merged(w, x)


def test_forms_refuse_layers_they_do_not_know():
    with pytest.raises(ConfigError, match="weight delta needs"):
        _Delta(nn.Conv2d(3, 3, 1))
    with pytest.raises(ConfigError, match="no output channels for a GELU"):
        _Output(nn.GELU())
    with pytest.raises(ConfigError, match="no input width for a LayerNorm"):
        _Residual(nn.LayerNorm(4))


def test_add_weight_delta_with_bias_delta():
    lin = nn.Linear(5, 3, bias=False)
    D, e, x = torch.randn(3, 5), torch.randn(3), torch.randn(4, 5)
    g = add_weight_delta(lin, D, e)
    torch.testing.assert_close(g(x), lin(x) + x @ D.T + e, atol=1e-5, rtol=1e-5)
    with pytest.raises(MergeError, match="bias delta of shape"):
        add_weight_delta(lin, D, torch.zeros(4))
