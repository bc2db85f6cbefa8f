"""Tuned tensors <-> safetensors files. Only what trained is stored (method parameters and head), with the
backbone, method and config as metadata so a file cannot be loaded into the wrong model silently.

Two more checks, both recorded at save time and checked at load time (files written before they existed load
without them): `sha256`, a digest of the stored tensors (name, dtype, shape, bytes), so a damaged payload (a
flipped bit loads silently as, say, -5.2e36) is an error naming the file; and `frozen_sha256`, a digest of the
frozen backbone parameters the tensors were tuned on, so a file tuned on pretrained weights does not load into a
randomly initialised (or otherwise different) backbone."""
from __future__ import annotations

import hashlib
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


def _update(h, name: str, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{name}\0{str(t.dtype).removeprefix('torch.')}\0{tuple(t.shape)}\0".encode())
    if t.numel():
        h.update(t.reshape(-1).view(torch.uint8).numpy())


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the tensors in name order: name, dtype, shape and bytes of each."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        _update(h, name, tensors[name])
    return h.hexdigest()


def frozen_digest(model: nn.Module) -> str:
    """sha256 over the frozen parameters of `model` (the backbone weights the method trains on), in name order.
    Buffers are left out: BatchNorm statistics change in training."""
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        if not p.requires_grad:
            _update(h, name, p)
    return h.hexdigest()


def save_tuned(model: nn.Module, path: str) -> None:
    """Write the trainable tensors of a petlbench model to `path` (safetensors, no pickle), atomically, with the
    model's identity, a digest of the tensors and one of the frozen backbone weights (module docstring)."""
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
        "sha256": tensors_digest(tensors),
        "frozen_sha256": frozen_digest(model),
    }
    atomic_write_bytes(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def read_tuned(path: str) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, tensors) of a tuned file; CheckpointError naming the file if it is not one, or if its tensors
    do not match the digest recorded when it was written."""
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
    if "sha256" in meta and tensors_digest(tensors) != meta["sha256"]:
        raise CheckpointError(f"{path}: the stored tensors do not match the checksum recorded when the file was "
                              "written (sha256); the file is damaged: copy it again or retrain")
    return meta, tensors


def load_tuned(model: nn.Module, path: str) -> nn.Module:
    """Load a file written by `save_tuned` into `model`, which must have the same backbone, method, config and
    classes, and the same frozen backbone weights. Every stored tensor must match a trainable parameter by name
    and shape, and vice versa."""
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
    for name, t in tensors.items():
        if params[name].shape != t.shape:
            raise CheckpointError(f"{path}: {name} has shape {tuple(t.shape)}, model {tuple(params[name].shape)}")
    if "frozen_sha256" in meta and frozen_digest(model) != meta["frozen_sha256"]:
        raise CheckpointError(f"{path}: tuned on other backbone weights than this model's frozen ones "
                              "(pretrained vs random initialisation, or another checkpoint); build the model with "
                              "the weights it was tuned on")
    with torch.no_grad():
        for name, t in tensors.items():
            params[name].copy_(t)
    return model
