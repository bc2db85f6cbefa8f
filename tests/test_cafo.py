"""CaFo (methods/cafo.py) against a direct transcription of the authors' utils.py / main.py
(github.com/OpenGVLab/CaFo@a805a2a, lines cited), its DINO checkpoint loading, and a run end to end on a CoOp-layout
EuroSAT fixture with a tiny random open_clip (tests/tiny.py OPENCLIP_TINY) and a small random timm ResNet as DINO."""
from __future__ import annotations

import json
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from test_tip_adapter import cls_acc, eurosat, tiny_clip  # noqa: F401 (fixtures)

import petlbench
from petlbench.data import DataError
from petlbench.errors import ConfigError
from petlbench.methods import cafo
from petlbench.run import execute, resolve
from petlbench.store import ResultStore

from tiny import has_open_clip


def authors_logits_fuse(zero_logtis, logits, normalize='mean'):
    """utils.py logits_fuse, as written (raise of a string aside)."""
    softmax_fun = nn.Softmax(dim=1)
    if normalize == 'softmax':
        zero_logtis = softmax_fun(zero_logtis)
    elif normalize == 'linear':
        zero_logtis /= torch.norm(zero_logtis, p=2, dim=1, keepdim=True)
    elif normalize == 'mean':
        logits_std = torch.std(zero_logtis, dim=1, keepdim=True)
        logits_mean = torch.mean(zero_logtis, dim=1, keepdim=True)
        zero_logtis = (zero_logtis - logits_mean) / logits_std
    similarity_matrix = []
    normalize_logits = []
    for logit in logits:
        if normalize == 'softmax':
            current_normalize_logits = softmax_fun(logit)
        elif normalize == 'linear':
            current_normalize_logits = logit / torch.norm(logit, p=2, dim=1, keepdim=True)
        elif normalize == 'mean':
            logits_std = torch.std(logit, dim=1, keepdim=True)
            logits_mean = torch.mean(logit, dim=1, keepdim=True)
            current_normalize_logits = (logit - logits_mean) / logits_std
        current_similarity = current_normalize_logits * zero_logtis
        current_similarity = torch.sum(current_similarity, dim=1, keepdim=True)
        similarity_matrix.append(current_similarity)
        normalize_logits.append(current_normalize_logits)
    similarity_matrix = torch.stack(similarity_matrix, dim=-2)
    similarity_matrix = softmax_fun(similarity_matrix)
    normalize_logits = torch.stack(normalize_logits, dim=-2)
    result_logits = torch.sum(normalize_logits * similarity_matrix, dim=1)
    return result_logits


def authors_search_ensemble_hp(cfg, clip_cache_keys, clip_cache_values, clip_features, dino_cache_keys,
                               dino_cache_values, dino_features, labels, clip_weights):
    """utils.py search_ensemble_hp (no adapters: main.py:141's call), printing and best.txt removed."""
    beta_list = [i * (cfg['search_scale'][0] - 0.1) / cfg['search_step'][0] + 0.1 for i in range(cfg['search_step'][0])]  # noqa: E501
    alpha_list = [i * (cfg['search_scale'][1] - 0.1) / cfg['search_step'][1] + 0.1 for i in range(cfg['search_step'][1])]  # noqa: E501
    best_acc = 0
    best_beta, best_alpha = 0, 0
    for beta in beta_list:
        for alpha in alpha_list:
            clip_affinity = clip_features @ clip_cache_keys
            dino_affinity = (dino_features @ dino_cache_keys).to(dino_cache_values)
            clip_cache_logits = ((-1) * (beta - beta * clip_affinity)).exp() @ clip_cache_values
            dino_cache_logits = ((-1) * (beta - beta * dino_affinity)).exp() @ dino_cache_values
            clip_logits = 100. * clip_features @ clip_weights
            cache_logits = authors_logits_fuse(clip_logits, [clip_cache_logits, dino_cache_logits])
            tip_logits = clip_logits + cache_logits * alpha
            acc = cls_acc(tip_logits, labels)
            if acc > best_acc:
                best_acc, best_beta, best_alpha = acc, beta, alpha
    return best_beta, best_alpha


def _unit(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)


@pytest.mark.parametrize("how", ["mean", "softmax", "linear"])
def test_fuse_is_logits_fuse(how):
    zero, a, b = (torch.randn(7, 5, generator=torch.Generator().manual_seed(s), dtype=torch.float64)
                  for s in (1, 2, 3))
    ours = cafo.fuse(zero, [a, b], how)
    assert torch.allclose(ours, authors_logits_fuse(zero.clone(), [a, b], how), atol=1e-12)
    plain = 0.5 * (cafo._normalize(a, how) + cafo._normalize(b, how))
    assert not torch.allclose(ours, plain)  # per-image weights, not the plain mean of the normalised caches


def test_logits_and_search_are_main_pys():
    f, g, W = _unit(30, 8, 1), _unit(30, 6, 2), _unit(4, 8, 3)
    Kc, Kd, labels = _unit(12, 8, 4), _unit(12, 6, 5), torch.arange(12) % 4
    V = F.one_hot(labels, 4).double()
    y = torch.randint(0, 4, (30,), generator=torch.Generator().manual_seed(6))
    alpha, beta = 1.3, 2.0
    # main.py:80-87 with the adapters' weight = cache_keys.t() (main.py:36-39): adapter(f) = f @ cache_keys
    clip_cache = ((-1) * (beta - beta * (f @ Kc.t()))).exp() @ V
    dino_cache = ((-1) * (beta - beta * (g @ Kd.t()))).exp() @ V
    zero = 100. * f @ W.t()
    expected = zero + authors_logits_fuse(zero.clone(), [clip_cache, dino_cache]) * alpha
    assert torch.allclose(cafo.cafo_logits(f, g, W, Kc, Kd, V, alpha, beta), expected, atol=1e-10)
    cfg = {"search_scale": (7.0, 3.0), "search_step": (12, 6)}
    beta_s, alpha_s, acc = cafo.search_hp(f, g, y, W, Kc, Kd, V, cfg["search_scale"], cfg["search_step"])
    assert (beta_s, alpha_s) == authors_search_ensemble_hp(cfg, Kc.t(), V, f, Kd.t(), V, g, y, W.t())
    assert acc == cls_acc(cafo.cafo_logits(f, g, W, Kc, Kd, V, alpha_s, beta_s), y)


def test_authors_settings_per_dataset_and_shots():
    cfg = cafo.CaFoConfig()
    # configs/eurosat/2shot.yaml: init_alpha 1.5 (:21), dalle_shots 8 (:33), augment_epoch 10 (:36), train 100 (:37)
    s = cafo.settings(cfg, "eurosat", "train_shot2_seed3")
    assert (s["init_alpha"], s["generated_shots"], s["augment_epoch"], s["train_epoch"], s["shots"]) == (
        1.5, 8, 10, 100, 2)
    # configs/food101/1shot.yaml:17 search_scale [20, 10]; 16shot.yaml:17 [10, 10]
    assert (cafo.settings(cfg, "food101", "train_shot1_seed1")["search_scale_beta"],
            cafo.settings(cfg, "food101", "train_shot16_seed1")["search_scale_beta"]) == (20.0, 10.0)
    # configs/cars/4shot.yaml: train_epoch 400; imagenet: augment_epoch 1
    assert cafo.settings(cfg, "stanford_cars", "train_shot4_seed1")["train_epoch"] == 400
    assert cafo.settings(cfg, "imagenet", "train")["augment_epoch"] == 1  # a split without shots: the 16-shot config
    assert cafo.settings(cafo.CaFoConfig(init_alpha=9.0), "dtd", "train_shot1_seed1")["init_alpha"] == 9.0
    assert set(cafo.AUTHORS) == {(d, k) for d in cafo._DIRS for k in (1, 2, 4, 8, 16)}


def test_dino_checkpoint_loads_as_dinos_utils(tmp_path):
    import timm

    src = timm.create_model("resnet10t", pretrained=False, num_classes=0)
    wrapped = {"teacher": {f"module.backbone.{k}": v for k, v in src.state_dict().items()}, "student": {}}
    path = str(tmp_path / "dino_resnet10t.pth")
    torch.save(wrapped, path)
    dino = cafo.load_dino("resnet10t", path, "teacher")
    assert all(torch.equal(dino.state_dict()[k], v) for k, v in src.state_dict().items())
    torch.save({"teacher": dict(list(src.state_dict().items())[:3])}, path)
    with pytest.raises(DataError, match="missing"):
        cafo.load_dino("resnet10t", path, "teacher")
    torch.save({"teacher": {"conv1.0.weight": torch.zeros(1)}}, path)
    with pytest.raises(DataError, match="not a DINO resnet10t checkpoint.*size mismatch"):
        cafo.load_dino("resnet10t", path, "teacher")
    with pytest.raises(ConfigError, match="dino_weights is required for a run"):
        cafo.run_cafo(resolve("coop/eurosat", "cafo", {"dino": "resnet10t"}), str(tmp_path), None, str(tmp_path))
    with pytest.raises(ConfigError, match="does not exist"):
        cafo.load_dino("resnet10t", str(tmp_path / "nope.pth"), "teacher")


RUN = {"weights": "none", "img_size": 32, "device": "cpu", "num_workers": 0, "train_split": "train_shot2_seed1",
       "augment_epoch": 1, "search_step_beta": 4, "search_step_alpha": 3, "dino": "resnet10t",
       "dino_weights": "random", "train_epoch": 2}


@pytest.mark.clip
@pytest.mark.skipif(not has_open_clip(), reason="needs open_clip_torch")
@pytest.mark.usefixtures("tiny_clip")
def test_api_model_predicts_as_zero_shot_until_a_cache_is_set():
    model = petlbench.create_model("openclip:ViT-B-16", method="cafo", num_classes=5, pretrained=False,
                                   method_cfg={"dino": "resnet10t", "dino_weights": "random"}).eval()
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"head.clip_keys", "head.dino_keys"}
    x = torch.randn(2, 3, 32, 32)
    f = F.normalize(model.visual.clip(x), dim=-1)
    diff = model(x) - 100.0 * f @ model.head.clip_weights.t()
    assert torch.allclose(diff, diff[:, :1].expand_as(diff), atol=1e-4)  # the same shift on every class
    with pytest.raises(petlbench.MergeError, match="not mergeable"):
        petlbench.merge(model)


@pytest.mark.clip
@pytest.mark.skipif(not has_open_clip(), reason="needs open_clip_torch")
@pytest.mark.usefixtures("tiny_clip")
@pytest.mark.parametrize("selection", ["final", "reproduction"])
def test_run_trains_both_key_sets_and_searches_on_the_untrained_ones(eurosat, tmp_path, selection):  # noqa: F811
    spec = resolve("coop/eurosat", "cafo", {**RUN, "selection": selection})
    rec = execute(spec, eurosat, ResultStore(str(tmp_path / "store")), str(tmp_path / "runs"))
    m = rec["metrics"]
    assert rec["status"] == "ok" and [h["epoch"] for h in rec["history"]] == [1, 2]
    assert m["cache_entries"] == 20 and m["generated_images"] == 0
    assert rec["params"]["trainable"] == 20 * 32 + 20 * 512  # CLIP keys (embed 32) + DINO keys (resnet10t: 512)
    assert m["beta"] in cafo.grid(12.0, 4) and m["alpha"] in cafo.grid(10.0, 3)  # configs/eurosat/*: [12, 10]
    assert m["init_alpha"] == 1.5 and m["dino_weights"] == "random"  # configs/eurosat/2shot.yaml:21
    if selection == "final":
        assert m["epoch"] == 2 and rec["value"] == m["cafo_top1"]
    else:
        assert rec["value"] == max(m["cafo_top1"], m["best_select_top1"]) and m["select_split"] == "test"


@pytest.mark.clip
@pytest.mark.skipif(not has_open_clip(), reason="needs open_clip_torch")
@pytest.mark.usefixtures("tiny_clip")
def test_generated_images_and_gpt_prompts(eurosat, tmp_path):  # noqa: F811
    from test_coop_data import JSON_LAYOUT

    folder, images, _ = JSON_LAYOUT["eurosat"]
    root = os.path.join(eurosat, folder, images)
    firsts: dict[int, str] = {}
    for dirpath, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            if name.endswith(".jpg"):
                firsts.setdefault(len(firsts), os.path.relpath(os.path.join(dirpath, name), root))
    listing = tmp_path / "generated.txt"
    listing.write_text("".join(f"{firsts[i % len(firsts)]} {i}\n" for i in range(10)) * 2)
    from petlbench.task import TASKS

    classes = TASKS.get("coop/eurosat").class_names(eurosat)
    prompts = tmp_path / "gpt.json"
    prompts.write_text(json.dumps({c.replace("_", " "): [f"a photo of {c}.", f"{c}, seen from above."]
                                   for c in classes}))
    over = {**RUN, "generated": str(listing), "generated_root": root, "generated_shots": 1,
            "gpt_prompts": str(prompts), "train_epoch": 1}
    rec = execute(resolve("coop/eurosat", "cafo", over), eurosat, ResultStore(str(tmp_path / "s")),
                  str(tmp_path / "r"))
    m = rec["metrics"]
    assert m["generated_images"] == 10 and m["cache_entries"] == 30 and m["classifier"] == "gpt_prompts"
    prompts.write_text(json.dumps({classes[0]: ["x"]}))
    with pytest.raises(DataError, match="no prompts for class"):
        execute(resolve("coop/eurosat", "cafo", {**over, "train_epoch": 0}), eurosat,
                ResultStore(str(tmp_path / "s2")), str(tmp_path / "r2"))
