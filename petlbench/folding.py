"""Merging is linear algebra, written once.

Every mergeable method reduces its extra computation to one of three exact identities on a layer
f(x) = W x + b (Linear), or its per-output-channel relatives (1x1/kxk Conv2d, LayerNorm affine):

  fold_input_affine   f(M x + c)       = (W M) x + (W c + b)                 RepAdapter (x' = x + s B A x + ...)
  fold_output_affine  s * f(x) + t     = (diag(s) W) x + (s * b + t)         SSF after Linear / Conv2d / LayerNorm
  add_weight_delta    f(x) + D x + e   = (W + D) x + (b + e)                 LoRA (D = alpha/r * B A, e = 0)

The wrapper forms in `method.py` (InputAffine, OutputAffine, WeightDelta) call these; a method never does.
Each returns a new layer of the same type as the input (so a merged model is a plain backbone). The
arithmetic runs in float64 and is cast back to the layer's dtype, so merging adds no rounding of its own
beyond that final cast.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
from torch import Tensor

from .errors import MergeError


def _new_like(layer: nn.Module, weight: Tensor, bias: Tensor | None) -> nn.Module:
    out = copy.deepcopy(layer)
    ref = layer.weight
    out.weight = nn.Parameter(weight.to(ref.dtype), requires_grad=ref.requires_grad)
    if bias is not None:
        out.bias = nn.Parameter(bias.to(ref.dtype), requires_grad=ref.requires_grad)
    return out


def _f64(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.detach().to(torch.float64)


def _is_pointwise(layer: nn.Module) -> bool:
    return isinstance(layer, nn.Conv2d) and layer.kernel_size == (1, 1) and layer.groups == 1


def _is_depthwise(layer: nn.Module) -> bool:
    return isinstance(layer, nn.Conv2d) and layer.groups == layer.in_channels == layer.out_channels


def _mha_as_linear(mha: nn.MultiheadAttention) -> nn.Linear:
    """The fused input projection of an nn.MultiheadAttention as a Linear (3d x d), sharing its tensors."""
    if not mha._qkv_same_embed_dim or mha.in_proj_weight is None:
        raise MergeError("only a MultiheadAttention with one fused in_proj_weight (q, k, v of equal size) folds")
    lin = nn.Linear(mha.embed_dim, 3 * mha.embed_dim, bias=mha.in_proj_bias is not None)
    lin.weight, lin.bias = mha.in_proj_weight, mha.in_proj_bias
    return lin


def _mha_with(mha: nn.MultiheadAttention, folded: nn.Linear) -> nn.MultiheadAttention:
    out = copy.deepcopy(mha)
    ref = mha.in_proj_weight
    out.in_proj_weight = nn.Parameter(folded.weight.detach().to(ref.dtype), requires_grad=ref.requires_grad)
    if folded.bias is not None:
        out.in_proj_bias = nn.Parameter(folded.bias.detach().to(ref.dtype), requires_grad=ref.requires_grad)
    return out


def fold_input_affine(layer: nn.Module, matrix: Tensor | None = None, shift: Tensor | None = None) -> nn.Module:
    """A layer g of the same type with g(x) == layer(matrix @ x + shift), the map acting on channels.
    `matrix` is (in, in), `shift` is (in,).

    nn.Linear and 1x1 nn.Conv2d (a Linear on channels): any affine map. A depthwise nn.Conv2d: a diagonal
    matrix only, no shift: a channel-mixing map would make it a dense conv, and a shift does not commute with
    the conv's zero padding (border pixels would see `shift` where the original sees 0)."""
    if isinstance(layer, nn.MultiheadAttention):  # self-attention: the same map on q, k and v inputs
        return _mha_with(layer, fold_input_affine(_mha_as_linear(layer), matrix, shift))
    if _is_depthwise(layer):
        return _fold_scale_into_depthwise(layer, matrix, shift)
    if _is_pointwise(layer):
        out_ch = layer.weight.shape[0]
        lin = nn.Linear(layer.in_channels, out_ch, bias=layer.bias is not None)
        lin.weight, lin.bias = nn.Parameter(layer.weight.detach().view(out_ch, -1)), layer.bias
        folded = fold_input_affine(lin, matrix, shift)
        return _new_like(layer, _f64(folded.weight).view_as(layer.weight), _f64(folded.bias))
    if not isinstance(layer, nn.Linear):
        raise MergeError(f"fold_input_affine needs an nn.Linear, a 1x1 or a depthwise nn.Conv2d, got "
                         f"{type(layer).__name__}")
    W, b = _f64(layer.weight), _f64(layer.bias)
    if matrix is not None:
        if matrix.shape != (W.shape[1], W.shape[1]):
            raise MergeError(f"input map of shape {tuple(matrix.shape)} does not fit a Linear with in={W.shape[1]}")
        W_new = W @ _f64(matrix)
    else:
        W_new = W
    b_new = b
    if shift is not None:
        extra = W @ _f64(shift)
        if b is None and bool(extra.abs().max() > 0):
            # The merged layer needs a bias the backbone does not have; it stays exact but gains a parameter.
            b_new = extra
        elif b is not None:
            b_new = b + extra
    return _new_like(layer, W_new, b_new)  # type: ignore[return-value]


def _fold_scale_into_depthwise(layer: nn.Conv2d, matrix: Tensor | None, shift: Tensor | None) -> nn.Conv2d:
    if matrix is not None:
        m = _f64(matrix)
        if bool((m - torch.diag(torch.diagonal(m))).abs().max() > 0):
            raise MergeError("a channel-mixing map in front of a depthwise conv does not fold into a depthwise "
                             "conv (it would become a dense kxk conv); only a per-channel scale does")
    if shift is not None and bool(_f64(shift).abs().max() > 0):
        raise MergeError("a shift in front of a zero-padded depthwise conv does not fold exactly (border pixels)")
    W = _f64(layer.weight)
    if matrix is not None:
        W = W * torch.diagonal(_f64(matrix)).view(-1, 1, 1, 1)
    return _new_like(layer, W, _f64(layer.bias))  # type: ignore[return-value]


def fold_output_affine(layer: nn.Module, scale: Tensor | None = None, shift: Tensor | None = None) -> nn.Module:
    """A layer g of the same type with g(x) == scale * layer(x) + shift, per output channel.

    Supports nn.Linear, nn.Conv1d/2d/3d (channel dim 1), nn.LayerNorm with an elementwise affine, and the
    fused q/k/v input projection of nn.MultiheadAttention (3 * embed_dim channels).
    """
    if isinstance(layer, nn.MultiheadAttention):
        return _mha_with(layer, fold_output_affine(_mha_as_linear(layer), scale, shift))
    if isinstance(layer, nn.LayerNorm):
        if not layer.elementwise_affine:
            raise MergeError("cannot fold into a LayerNorm without elementwise affine")
        W = _f64(layer.weight)
        b = _f64(layer.bias) if layer.bias is not None else torch.zeros_like(W)
    elif isinstance(layer, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        W = _f64(layer.weight)
        b = (_f64(layer.bias) if layer.bias is not None else
             torch.zeros(W.shape[0], dtype=torch.float64, device=W.device))
    else:
        raise MergeError(f"fold_output_affine does not support {type(layer).__name__}")
    s = _f64(scale) if scale is not None else torch.ones_like(b)
    t = _f64(shift) if shift is not None else torch.zeros_like(b)
    if s.shape != b.shape or t.shape != b.shape:
        raise MergeError(f"scale/shift of shape {tuple(s.shape)}/{tuple(t.shape)} do not fit {tuple(b.shape)} channels")
    view = (-1,) + (1,) * (W.dim() - 1)
    W_new = W * s.view(view)
    b_new = s * b + t
    if getattr(layer, "bias", None) is None and not bool(b_new.abs().max() > 0):
        b_new = None
    return _new_like(layer, W_new, b_new)


def add_weight_delta(layer: nn.Module, delta: Tensor, bias_delta: Tensor | None = None) -> nn.Module:
    """A Linear g with g(x) == layer(x) + delta @ x + bias_delta. `delta` has the weight's shape (out, in),
    `bias_delta` (out,); for an nn.MultiheadAttention, those of its fused in_proj (3d, d) and (3d,)."""
    if isinstance(layer, nn.MultiheadAttention):
        return _mha_with(layer, add_weight_delta(_mha_as_linear(layer), delta, bias_delta))
    if not isinstance(layer, nn.Linear):
        raise MergeError(f"add_weight_delta needs an nn.Linear, got {type(layer).__name__}")
    if delta.shape != layer.weight.shape:
        raise MergeError(f"weight delta of shape {tuple(delta.shape)} does not fit {tuple(layer.weight.shape)}")
    bias = layer.bias.detach() if layer.bias is not None else None
    if bias_delta is not None:
        if bias_delta.shape != (layer.out_features,):
            raise MergeError(f"bias delta of shape {tuple(bias_delta.shape)} does not fit {layer.out_features} "
                             f"outputs")
        bias = _f64(bias_delta) if bias is None else _f64(bias) + _f64(bias_delta)
    return _new_like(layer, _f64(layer.weight) + _f64(delta), bias)  # type: ignore[return-value]
