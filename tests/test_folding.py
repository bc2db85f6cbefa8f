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
