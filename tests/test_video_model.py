"""The VideoMAE-layout video ViT: every method on a tiny one (forward, trainable set, save/load, merge exactness and
plainness), ViT-B parameter counts with the published video RepAdapter (hidden 2), VideoMAE checkpoint key
mapping, multi-view test averaging, and a short training run that lowers the loss. Also: every backbone petlbench
defines registers with timm from its own module, as timm's model files do."""
from __future__ import annotations

import collections
import dataclasses
import os
import sys

import pytest
import timm
import torch
from timm.models import get_pretrained_cfg, model_entrypoint

import petlbench
from petlbench.backbones import create_backbone, head_parameters
from petlbench.method import METHODS

from tiny import randomize_trainable

NAME = "videomae_vit_base_patch16_224"
TINY = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, num_frames=4)
VIT_METHODS = [m for m in petlbench.list_methods() if "vit" in METHODS.get(m).families
               and not METHODS.get(m).feeds_head]  # those need the backbone's own linear head: refused here
HEAD_METHODS = [m for m in petlbench.list_methods() if METHODS.get(m).feeds_head]
# timm entry points whose code lies in the petlbench package, whatever module they claim (`__module__`)
PETLBENCH_DIR = os.path.dirname(os.path.abspath(petlbench.__file__))
OWN_MODELS = sorted(n for n in timm.list_models() if os.path.abspath(
    model_entrypoint(n).__code__.co_filename).startswith(PETLBENCH_DIR + os.sep))


def test_own_models_are_listed():
    assert {"petlbench_vit_mini", NAME} <= set(OWN_MODELS)


@pytest.mark.parametrize("name", OWN_MODELS)
def test_own_model_registers_from_its_own_module(name):
    """timm reads `default_cfgs` of the module an entry point claims: that module must be the file defining it."""
    fn = model_entrypoint(name)
    module = sys.modules[fn.__module__]
    assert fn.__module__.startswith("petlbench.models."), fn.__module__
    assert os.path.samefile(fn.__code__.co_filename, module.__file__), (fn.__module__, fn.__code__.co_filename)
    assert name in module.default_cfgs
    cfg = get_pretrained_cfg(name)
    assert cfg == dataclasses.replace(module.default_cfgs[name].default, architecture=name, tag=cfg.tag)


def test_default_cfgs_hold_only_their_own_modules_models():
    holders = {n: m for n, m in sys.modules.items() if n.split(".")[0] == "petlbench" and hasattr(m, "default_cfgs")}
    assert {model_entrypoint(n).__module__ for n in OWN_MODELS} <= set(holders)
    for module_name, module in holders.items():
        assert set(module.default_cfgs) == {n for n in OWN_MODELS if model_entrypoint(n).__module__ == module_name}


def clips(n: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, TINY["num_frames"], 32, 32)


def build(method: str, **cfg):
    return petlbench.create_model(NAME, method=method, num_classes=5, method_cfg=cfg or None, **TINY)


@pytest.mark.parametrize("method", VIT_METHODS)
def test_every_method_runs_saves_and_loads(method, tmp_path):
    torch.manual_seed(0)
    model = build(method).eval()
    randomize_trainable(model)
    x = clips()
    out = model(x)
    assert out.shape == (3, 5) and torch.isfinite(out).all()
    head = {id(p) for p in head_parameters(model)}
    assert head and head <= {id(p) for p in model.parameters() if p.requires_grad}
    path = str(tmp_path / "t.safetensors")
    petlbench.save_tuned(model, path)
    torch.manual_seed(0)
    fresh = build(method).eval()
    petlbench.load_tuned(fresh, path)
    assert torch.equal(fresh(x), out)


@pytest.mark.parametrize("method", [m for m in VIT_METHODS if METHODS.get(m).mergeable])
def test_merge_is_exact_and_plain(method):
    model = build(method).eval()
    randomize_trainable(model)
    merged = petlbench.merge(model).eval()
    x = clips()
    with torch.no_grad():
        assert (merged(x) - model(x)).abs().max().item() <= 1e-4
    plain = create_backbone(NAME, 5, False, **TINY)
    assert collections.Counter(map(type, merged.modules())) == collections.Counter(map(type, plain.modules()))
    plain.load_state_dict(merged.state_dict(), strict=True)


@pytest.mark.slow
def test_vit_b_video_counts():
    def count(method, **cfg):
        model = petlbench.create_model(NAME, method=method, num_classes=174, method_cfg=cfg or None)
        return petlbench.count_trainable(model, include_head=False), petlbench.count_paper(model)

    # RepAdapter for video, hidden 2 (as published): 24 adapters x (768*2 + 2 + 768*2/2 + 768); weights only
    # 24 x (768*2 + 768) = 55,296
    assert count("repadapter", dim=2) == (73_776, 55_296)
    assert count("lora") == (294_912, 294_912)  # the same blocks as the image ViT-B: the same counts
    assert count("ssf")[0] == 205_824 and count("bitfit")[0] == 102_912


def test_videomae_checkpoint_key_mapping(tmp_path):
    torch.manual_seed(1)
    src = create_backbone(NAME, 5, False, **TINY)
    sd = {}
    for k, v in src.state_dict().items():
        if k.startswith(("head.", "fc_norm.")):
            continue
        m = k.split(".")
        if k.endswith("attn.qkv.bias"):  # VideoMAE stores q and v biases, no k bias
            d = v.shape[0] // 3
            sd[f"encoder.{k[:-len('qkv.bias')]}q_bias"] = v[:d]
            sd[f"encoder.{k[:-len('qkv.bias')]}v_bias"] = v[2 * d:]
            continue
        sd["encoder." + k] = v
        assert m
    sd["encoder.norm.weight"] = torch.ones(64)
    sd["decoder.blocks.0.mlp.fc1.weight"] = torch.zeros(1)
    sd["mask_token"] = torch.zeros(1, 1, 64)
    path = str(tmp_path / "videomae.pth")
    torch.save({"model": sd}, path)
    with torch.no_grad():  # the source's k bias must be 0 for the round trip to be exact
        for blk in src.blocks:
            blk.attn.qkv.bias[64:128] = 0
    model = petlbench.create_model(NAME, method="linear", num_classes=5, pretrained=path, **TINY)
    for k, v in src.state_dict().items():
        if not k.startswith(("head.", "fc_norm.")):
            assert torch.equal(model.state_dict()[k], v), k
    torch.save({"model": {"encoder.blocks.0.attn.qkv.weight": torch.zeros(3)}}, path)
    with pytest.raises(petlbench.PETLBenchError, match="videomae.pth: does not fit"):
        petlbench.create_model(NAME, method="linear", num_classes=5, pretrained=path, **TINY)


def test_multi_view_evaluation_averages_softmax_over_views():
    from petlbench.engine import EvalSet, evaluate

    class ViewScore(torch.nn.Module):
        """Logits from the clip's mean: a view decides its own class."""

        def forward(self, x):
            return torch.stack([x.mean(dim=(1, 2, 3, 4)), torch.zeros(len(x))], 1) * 50

    # one video, 3 views: logits (50, 0) for one, (-5, 0) for two. Mean softmax: class 1 (0.66); a mean of logits
    # would say class 0 ((50 - 5 - 5) / 3 > 0): the test tells the two rules apart.
    x = torch.zeros(1, 3, 3, 2, 4, 4)
    x[0, 0] += 1.0
    x[0, 1] -= 0.1
    x[0, 2] -= 0.1
    res = evaluate(ViewScore(), EvalSet("test", [(x, torch.tensor([1]))]), torch.device("cpu"), normalize=False)
    assert res == {"top1": 100.0, "n": 1}


def test_a_short_training_run_lowers_the_loss():
    from petlbench.engine import Execution, TensorBatches, train

    torch.manual_seed(0)
    model = build("repadapter", dim=2)
    labels = torch.arange(16) % 5
    videos = (torch.rand(16, 3, 4, 32, 32) * 60).to(torch.uint8)
    videos[torch.arange(16), labels % 3, :, :16] = 255  # a learnable cue: a bright channel per class
    res = train(model, TensorBatches(videos, labels, 8, shuffle=True), [], epochs=6, lr=0.1, weight_decay=0.0,
                optimizer="sgd", execution=Execution(device="cpu"), eval_every=1)
    assert res.history[-1]["loss"] < res.history[0]["loss"]


@pytest.mark.video
def test_hmdb51_run_end_to_end(tmp_path):
    """`petlbench run --task video/hmdb51` on generated videos in the official layout: decord in the loader,
    the VideoMAE backbone with RepAdapter (hidden 2, the task default), multi-view test, one record."""
    from petlbench.run import execute, resolve
    from petlbench.store import ResultStore

    from test_video_data import make_hmdb_official

    make_hmdb_official(tmp_path)
    spec = resolve("video/hmdb51", "repadapter", {"img_size": 32, "num_frames": 4, "epochs": 2, "eval_every": 1,
                                                  "warmup_epochs": 0, "batch_size": 16, "test_clips": 2,
                                                  "test_crops": 3, "lr": 0.01, "device": "cpu", "num_workers": 0})
    rec = execute(spec, str(tmp_path), ResultStore(str(tmp_path / "store")), str(tmp_path / "out"))
    assert rec["status"] == "ok" and rec["method_cfg"]["dim"] == 2 and rec["metrics"]["split"] == "test_split1"
    assert len(rec["history"]) == 2 and 0.0 <= rec["value"] <= 100.0
    assert rec["params"]["trainable"] == 12 * 2 * (768 * 2 + 2 + 768 + 768)  # ViT-B, RepAdapter hidden 2


@pytest.mark.video
def test_missing_video_fails_naming_the_list_line_or_is_skipped_and_recorded(tmp_path):
    import os

    from petlbench.data import DataError
    from petlbench.run import execute, resolve
    from petlbench.store import ResultStore

    from test_video_data import make_hmdb_official

    root = make_hmdb_official(tmp_path)
    gone = os.path.join(root, "catch", "catch_2.avi")  # split 1: video 2 of each class is a training video
    os.unlink(gone)
    over = {"img_size": 32, "num_frames": 4, "epochs": 1, "warmup_epochs": 0, "batch_size": 16, "test_clips": 1,
            "test_crops": 1, "device": "cpu", "num_workers": 0}
    with pytest.raises(DataError, match=r"catch_2\.avi \(.*catch_test_split1\.txt:3\): file does not exist"):
        execute(resolve("video/hmdb51", "linear", over), str(tmp_path), ResultStore(str(tmp_path / "s")),
                str(tmp_path / "o"))
    rec = execute(resolve("video/hmdb51", "linear", {**over, "on_bad_image": "skip"}), str(tmp_path),
                  ResultStore(str(tmp_path / "s")), str(tmp_path / "o"))
    assert rec["status"] == "ok" and rec["skipped_images"]["train"] == 1 and gone in rec["skipped_images"]["paths"]


@pytest.mark.parametrize("method", HEAD_METHODS)
def test_a_method_feeding_the_head_refuses_the_video_head(method):
    """The video ViT's head is BatchNorm + Linear: a method that changes the head's input is refused, clearly."""
    with pytest.raises(petlbench.ConfigError, match=method):
        build(method)
