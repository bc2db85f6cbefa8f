"""Tuned tensors <-> safetensors files. Only what trained is stored (method parameters and head), with the
backbone, method and config as metadata so a file cannot be loaded into the wrong model silently."""
from __future__ import annotations

import json
import os

import torch
import torch.nn as nn

from .atomic import atomic_write_bytes
from .errors import CheckpointError
from .method import PETLInfo

FORMAT = "petlbench.tuned/1"


def tuned_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """name -> tensor of every trainable parameter (method parameters and head)."""
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def save_tuned(model: nn.Module, path: str) -> None:
    """Write the trainable tensors of a petlbench model to `path` (safetensors, no pickle), atomically."""
    from safetensors.torch import save_file

    info = getattr(model, "petl", None)
    if not isinstance(info, PETLInfo):
        raise CheckpointError("save_tuned needs a model built by petlbench.create_model")
    tensors = {k: v.contiguous().cpu() for k, v in tuned_state(model).items()}
    meta = {
        "format": FORMAT,
        "backbone": info.backbone,
        "backbone_kwargs": json.dumps(info.backbone_kwargs, sort_keys=True),
        "method": info.method,
        "method_cfg": json.dumps(info.method_cfg, sort_keys=True),
        "num_classes": str(info.num_classes),
    }
    atomic_write_bytes(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def read_tuned(path: str) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, tensors) of a tuned file; CheckpointError naming the file if it is not one."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such file")
    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a petlbench tuned-weights file (format {meta.get('format')!r})")
    return meta, tensors


def load_tuned(model: nn.Module, path: str) -> nn.Module:
    """Load a file written by `save_tuned` into `model`, which must have the same backbone, method, config and
    classes. Every stored tensor must match a trainable parameter by name and shape, and vice versa."""
    info = getattr(model, "petl", None)
    if not isinstance(info, PETLInfo):
        raise CheckpointError("load_tuned needs a model built by petlbench.create_model")
    meta, tensors = read_tuned(path)
    expected = {
        "backbone": info.backbone,
        "backbone_kwargs": json.dumps(info.backbone_kwargs, sort_keys=True),
        "method": info.method,
        "method_cfg": json.dumps(info.method_cfg, sort_keys=True),
        "num_classes": str(info.num_classes),
    }
    for key, want in expected.items():
        if meta.get(key) != want:
            raise CheckpointError(f"{path}: made for {key} {meta.get(key)!r}, but the model has {want!r}")
    params = dict(model.named_parameters())
    trainable = {n for n, p in params.items() if p.requires_grad}
    if set(tensors) != trainable:
        extra, missing = sorted(set(tensors) - trainable), sorted(trainable - set(tensors))
        raise CheckpointError(f"{path}: tensors do not match the model (unexpected {extra[:3]}, missing {missing[:3]})")
    with torch.no_grad():
        for name, t in tensors.items():
            if params[name].shape != t.shape:
                raise CheckpointError(f"{path}: {name} has shape {tuple(t.shape)}, model {tuple(params[name].shape)}")
            params[name].copy_(t)
    return model
