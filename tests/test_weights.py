"""Weights: hub tags fail at once offline with the fix; local files and the shipped file resolve."""
from __future__ import annotations

import time

import pytest

from petlbench.errors import PETLBenchError
from petlbench.weights import resolve_weights


def test_offline_uncached_hub_tag_fails_fast_with_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"), raising=False)
    import timm  # noqa: F401  (before the clock: the bound is on the hub check, not on importing timm)

    t0 = time.perf_counter()
    with pytest.raises(PETLBenchError, match=r"not in the local cache .* timm.create_model\('vit_base_patch16_224"
                                             r"\.orig_in21k', pretrained=True\).* weights=/path/to/checkpoint"):
        resolve_weights("vit_base_patch16_224", "vit_base_patch16_224.orig_in21k")
    assert time.perf_counter() - t0 < 5


def test_files_and_none(tmp_path):
    assert resolve_weights("vit_tiny_patch16_224", "none") == ("vit_tiny_patch16_224", False)
    f = tmp_path / "ViT-B_16.npz"
    f.write_bytes(b"x")
    assert resolve_weights("vit_base_patch16_224", str(f)) == ("vit_base_patch16_224", str(f))
    with pytest.raises(PETLBenchError, match="no such file"):
        resolve_weights("vit_base_patch16_224", str(tmp_path / "missing.npz"))
    with pytest.raises(PETLBenchError, match="shipped file .* is missing"):
        resolve_weights("petlbench_vit_mini", "petlbench:nothing")
    with pytest.raises(PETLBenchError, match="unknown backbone 'vit_nope"):
        resolve_weights("vit_base_patch16_224", "vit_nope.tag")
