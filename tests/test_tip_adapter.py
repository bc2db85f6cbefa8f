"""Tip-Adapter and Tip-Adapter-F (methods/tip_adapter.py, tip_adapter_f.py, _tip.py) against a direct
transcription of the authors' main.py / utils.py (github.com/gaopengcuhk/Tip-Adapter@d0e2d6f, lines cited), and
both runs end to end on a CoOp-layout EuroSAT fixture with a tiny random open_clip (tests/tiny.py OPENCLIP_TINY)."""
from __future__ import annotations

import functools
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import petlbench
import petlbench.backbones as backbones
from petlbench.methods import _tip
from petlbench.run import execute, resolve
from petlbench.store import ResultStore

from tiny import OPENCLIP_TINY, has_open_clip


def _features(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g), dim=-1)


def cls_acc(output, target, topk=1):  # utils.py:10-15
    pred = output.topk(topk, 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    acc = float(correct[: topk].reshape(-1).float().sum(0, keepdim=True).cpu().numpy()[0])  # ([0]: NumPy 2)
    return 100 * acc / target.shape[0]


def authors_tip_logits(features, cache_keys, cache_values, clip_weights, alpha, beta):
    """main.py:32, 39-42, with cache_keys (D, N) as utils.py:61 lays them out and clip_weights (D, C), utils.py:34."""
    clip_logits = 100. * features @ clip_weights  # main.py:32
    affinity = features @ cache_keys  # main.py:39
    cache_logits = ((-1) * (beta - beta * affinity)).exp() @ cache_values  # main.py:40
    return clip_logits + cache_logits * alpha, cache_logits  # main.py:42


def authors_search_hp(cfg, cache_keys, cache_values, features, labels, clip_weights):
    """utils.py:99-129 search_hp (adapter=None), printing removed."""
    beta_list = [i * (cfg['search_scale'][0] - 0.1) / cfg['search_step'][0] + 0.1 for i in range(cfg['search_step'][0])]  # noqa: E501 utils.py:103
    alpha_list = [i * (cfg['search_scale'][1] - 0.1) / cfg['search_step'][1] + 0.1 for i in range(cfg['search_step'][1])]  # noqa: E501 utils.py:104
    best_acc = 0  # utils.py:106
    best_beta, best_alpha = 0, 0  # utils.py:107
    for beta in beta_list:  # utils.py:109
        for alpha in alpha_list:  # utils.py:110
            affinity = features @ cache_keys  # utils.py:114
            cache_logits = ((-1) * (beta - beta * affinity)).exp() @ cache_values  # utils.py:116
            clip_logits = 100. * features @ clip_weights  # utils.py:117
            tip_logits = clip_logits + cache_logits * alpha  # utils.py:118
            acc = cls_acc(tip_logits, labels)  # utils.py:119
            if acc > best_acc:  # utils.py:121-125
                best_acc, best_beta, best_alpha = acc, beta, alpha
    return best_beta, best_alpha


def test_cache_and_tip_logits_are_main_pys():
    C, D, N = 5, 16, 15
    f, keys, W = _features(7, D, 1), _features(N, D, 2), _features(C, D, 3)
    labels = torch.arange(N) % C
    values = F.one_hot(labels).float()  # utils.py:62 (fp16 there)
    want, want_cache = authors_tip_logits(f, keys.t(), values, W.t(), alpha=1.7, beta=5.5)
    assert torch.allclose(_tip.cache_logits(f @ keys.t(), values, 5.5), want_cache, atol=1e-5)
    assert torch.allclose(_tip.tip_logits(f, W, keys, values, 1.7, 5.5), want, atol=1e-4)
    head = _tip.TipAdapterHead(W, alpha=1.7, beta=5.5)
    head.set_cache(keys, labels)
    assert torch.allclose(head(f), want, atol=1e-4)


def test_cache_keys_are_build_cache_models():
    """utils.py:44-61: raw features of each augmented pass, averaged over passes, then normalised."""
    torch.manual_seed(0)
    visual = nn.Linear(12, 8)
    model = nn.Module()
    model.visual = visual

    class Passes:  # a fresh augmentation each pass over the same labels
        def __init__(self):
            self.g = torch.Generator().manual_seed(3)

        def __iter__(self):
            for b in range(2):
                yield torch.randn(4, 12, generator=self.g), torch.tensor([0, 1, 2, 0]) + b

    keys, labels = _tip.build_cache(model, Passes(), 3, torch.device("cpu"), None, "off")
    ref, g = [], torch.Generator().manual_seed(3)
    with torch.no_grad():
        for _ in range(3):  # utils.py:46
            train_features = [visual(torch.randn(4, 12, generator=g)) for _ in range(2)]  # utils.py:50-53
            ref.append(torch.cat(train_features, dim=0).unsqueeze(0))  # utils.py:57
    cache_keys = torch.cat(ref, dim=0).mean(dim=0)  # utils.py:59
    cache_keys /= cache_keys.norm(dim=-1, keepdim=True)  # utils.py:60
    assert torch.allclose(keys, cache_keys, atol=1e-6)  # (ours unpermuted: utils.py:61 stores the transpose)
    assert labels.tolist() == [0, 1, 2, 0, 1, 2, 3, 1]


@pytest.mark.parametrize("scale,steps", [((7, 3), (40, 10)), ((12, 10), (25, 20))])
def test_search_is_the_authors_argmax(scale, steps):
    C, D = 4, 8
    f, keys, W = _features(30, D, 4), _features(12, D, 5), _features(C, D, 6)
    labels = torch.arange(30) % C
    values = F.one_hot(torch.arange(12) % C, C).float()
    want = authors_search_hp({"search_scale": scale, "search_step": steps}, keys.t(), values, f, labels, W.t())
    beta, alpha, acc = _tip.search_hp(f, labels, W, keys, values, scale, steps)
    assert (beta, alpha) == want  # same grid floats, same first-strictly-better tie-breaking
    assert acc == cls_acc(_tip.tip_logits(f, W, keys, values, alpha, beta), labels)
    assert _tip.grid(scale[0], steps[0])[:2] == [0.1, (scale[0] - 0.1) / steps[0] + 0.1]


def test_authors_settings_per_dataset():
    s = _tip.settings(_tip.TipConfig(), "eurosat")  # configs/eurosat.yaml:17-21, 30-31
    assert (s["init_beta"], s["init_alpha"], s["search_scale_beta"], s["search_scale_alpha"], s["search_step_beta"],
            s["search_step_alpha"], s["augment_epoch"], s["train_epoch"]) == (1.0, 2.0, 12.0, 10.0, 200, 20, 10, 100)
    assert _tip.settings(_tip.TipConfig(init_alpha=0.5), "oxford_flowers")["init_alpha"] == 0.5
    assert _tip.settings(_tip.TipConfig(), "oxford_flowers")["search_scale_beta"] == 50.0  # oxford_flowers.yaml:17


# --- through the API and the runs ----------------------------------------------------------------------------------
@pytest.fixture
def tiny_clip(monkeypatch):
    monkeypatch.setattr(backbones, "create_openclip", functools.partial(backbones.create_openclip, **OPENCLIP_TINY))


@pytest.fixture
def eurosat(tmp_path):
    """CoOp's EuroSAT layout (tests/test_coop_data.py), each image its own random colour field."""
    from PIL import Image
    from test_coop_data import write_json_dataset

    src = str(tmp_path / "_image.jpg")
    Image.new("RGB", (40, 30), (120, 40, 90)).save(src)
    write_json_dataset(str(tmp_path), "eurosat", src)
    g = torch.Generator().manual_seed(0)
    for folder, _, files in os.walk(str(tmp_path / "eurosat")):
        for name in files:
            if name.endswith(".jpg"):
                path = os.path.join(folder, name)
                os.remove(path)  # (hard links of one file)
                pix = (torch.rand(30, 40, 3, generator=g) * 255).to(torch.uint8).numpy()
                Image.fromarray(pix).save(path)
    return str(tmp_path)


RUN = {"weights": "none", "img_size": 32, "device": "cpu", "num_workers": 0, "train_split": "train_shot2_seed1",
       "augment_epoch": 2, "search_step_beta": 6, "search_step_alpha": 5}


@pytest.mark.clip
@pytest.mark.skipif(not has_open_clip(), reason="needs open_clip_torch")
@pytest.mark.parametrize("method", ["tip_adapter", "tip_adapter_f"])
@pytest.mark.usefixtures("tiny_clip")
def test_api_model_predicts_as_zero_shot_until_a_cache_is_set(method):
    model = petlbench.create_model("openclip:ViT-B-16", method=method, num_classes=5, pretrained=False).eval()
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"head.keys"}
    f = F.normalize(torch.randn(3, model.head.clip_weights.shape[1]), dim=-1)
    diff = model.head(f) - 100.0 * f @ model.head.clip_weights.t()
    assert torch.allclose(diff, diff[:, :1].expand_as(diff), atol=1e-5)  # the same shift on every class
    with pytest.raises(petlbench.MergeError, match="not mergeable"):
        petlbench.merge(model)


@pytest.mark.clip
@pytest.mark.skipif(not has_open_clip(), reason="needs open_clip_torch")
@pytest.mark.usefixtures("tiny_clip")
def test_training_free_run_searches_alpha_beta_and_trains_nothing(eurosat, tmp_path):
    spec = resolve("coop/eurosat", "tip_adapter", RUN)
    assert (spec.protocol.head_init, spec.protocol.head_templates) == ("zeroshot", "tip_adapter")
    store = ResultStore(str(tmp_path / "store"))
    rec = execute(spec, eurosat, store, str(tmp_path / "runs"))
    m = rec["metrics"]
    assert rec["status"] == "ok" and rec["history"] == [] and rec["params"]["trainable"] == 0
    assert m["val_split"] == "val" and m["split"] == "test" and rec["value"] == m["tip_top1"]
    assert m["beta"] in _tip.grid(12.0, 6) and m["alpha"] in _tip.grid(10.0, 5)  # eurosat.yaml:17 scales
    assert (m["init_alpha"], m["init_beta"], m["augment_epoch"]) == (2.0, 1.0, 2)
    assert m["cache_entries"] == 20 and rec["params"]["paper"] == 20 * 32 + 20 * 10  # keys + values
    assert set(rec["data"]["splits"]) == {"train_shot2_seed1", "val", "test"}
    assert 0.0 <= m["zero_shot_top1"] <= 100.0 and 0.0 <= m["val_top1"] <= 100.0
    assert execute(spec, eurosat, store, str(tmp_path / "runs")) == rec  # from the store


@pytest.mark.clip
@pytest.mark.skipif(not has_open_clip(), reason="needs open_clip_torch")
@pytest.mark.usefixtures("tiny_clip")
def test_fine_tuning_trains_only_the_keys():
    from petlbench.methods.tip_adapter_f import train_keys

    torch.manual_seed(0)
    model = petlbench.create_model("openclip:ViT-B-16", method="tip_adapter_f", num_classes=5, pretrained=False)
    head = model.head
    head.set_cache(_features(10, head.clip_weights.shape[1], 7), torch.arange(10) % 5)
    before = {n: t.detach().clone() for n, t in [*model.named_parameters(), *model.named_buffers()]}
    batches = [(torch.randn(6, 3, 32, 32), torch.arange(6) % 5)]
    cfg = {"train_lr": 0.01, "train_epoch": 1, "init_alpha": 2.0, "init_beta": 1.0}
    history, best = train_keys(model, head, batches, None, cfg, torch.device("cpu"), None, "off")
    changed = {n for n, t in [*model.named_parameters(), *model.named_buffers()] if not torch.equal(before[n], t)}
    assert changed == {"head.keys"} and len(history) == 1 and best["best_epoch"] == 1
    assert history[0]["lr"] == pytest.approx(0.0)  # CosineAnnealingLR(T_max = epochs x batches) at its end


@pytest.mark.clip
@pytest.mark.skipif(not has_open_clip(), reason="needs open_clip_torch")
@pytest.mark.usefixtures("tiny_clip")
@pytest.mark.parametrize("selection", ["final", "reproduction"])
def test_fine_tuned_run_writes_its_record(eurosat, tmp_path, selection):
    spec = resolve("coop/eurosat", "tip_adapter_f", {**RUN, "train_epoch": 2, "selection": selection})
    rec = execute(spec, eurosat, ResultStore(str(tmp_path / "store")), str(tmp_path / "runs"))
    m = rec["metrics"]
    assert rec["status"] == "ok" and [h["epoch"] for h in rec["history"]] == [1, 2]
    assert rec["params"]["trainable"] == rec["params"]["paper"] == 20 * 32  # the keys
    if selection == "final":
        assert m["epoch"] == 2 and rec["value"] == m["tip_top1"] and "select_top1" not in rec["history"][0]
    else:  # best test epoch (main.py:121-124), the reported value main.py:141's max
        assert m["epoch"] in (1, 2) and rec["value"] == max(m["best_select_top1"], m["tip_top1"])
        assert m["select_split"] == "test" and "selected on test" in rec["selection"]
