"""ADE20K through mmsegmentation: the dataset checks, the PETLViT backbone in mmseg's registry, the shipped configs,
training through `petlbench run` (mmengine's Runner) on a generated ADE20K-layout dataset, merged vs unmerged
mIoU, and mmseg's IoU metric on known predictions. CPU only; about a minute."""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch
from PIL import Image

import petlbench

import seg_tiny

pytestmark = pytest.mark.segmentation
pytest.importorskip("mmseg")

from mmengine.config import Config  # noqa: E402
from mmengine.runner import Runner  # noqa: E402
from mmseg.utils import register_all_modules  # noqa: E402

from petlbench.data import DataError  # noqa: E402
from petlbench.errors import ConfigError, MergeError  # noqa: E402
from petlbench.method import METHODS, Wrapper  # noqa: E402
from petlbench.run import execute, resolve  # noqa: E402
from petlbench.store import ResultStore  # noqa: E402
from petlbench.task import TASKS  # noqa: E402
from petlbench.tasks.segmentation import check_split, config_path  # noqa: E402
from petlbench.tasks.segmentation.backbone import PETLViT, merged_segmentor  # noqa: E402
from petlbench.tasks.segmentation.runner import build_config, load_seg_tuned, param_counts, tuned_tensors  # noqa: E402

register_all_modules()
from mmseg.registry import MODELS  # noqa: E402


@pytest.fixture(scope="module")
def ade(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg")
    seg_tiny.make_ade(str(root / "data"))
    return root


def tiny_spec(ade, method="repadapter", base="setr_pup_vit-l16_ade20k_512", **over):
    cfg = seg_tiny.tiny_config(str(ade / f"tiny_{base}.py"), base)
    task = "seg/ade20k" if base.startswith("setr") else "seg/ade20k-upernet"
    return resolve(task, method, {**seg_tiny.TINY_OVERRIDES, "seg_config": cfg, **over})


def runner_for(spec, ade, work):
    cfg = build_config(spec, str(ade / "data" / "ADEChallengeData2016"), str(work), workers=0)
    return Runner.from_cfg(cfg)


# --- data ----------------------------------------------------------------------------------------------------
def test_splits_list_pairs_and_pass_checks(ade, tmp_path):
    task = TASKS.get("seg/ade20k")
    train = task.samples(str(ade / "data"), "training")
    assert len(train) == 8 and all(s.annotation.endswith(".png") and os.path.isfile(s.annotation) for s in train)
    check_split(train, cache_dir=str(tmp_path))
    assert len(os.listdir(tmp_path)) == 1  # the clean check is cached


def _copy_data(ade, tmp_path):
    import shutil

    shutil.copytree(ade / "data", tmp_path / "data")
    return tmp_path / "data" / "ADEChallengeData2016"


def test_missing_annotation_names_the_image(ade, tmp_path):
    base = _copy_data(ade, tmp_path)
    victim = sorted((base / "annotations" / "training").iterdir())[2]
    victim.unlink()
    with pytest.raises(DataError, match=rf"has no annotation .*{victim.name}"):
        TASKS.get("seg/ade20k").samples(str(tmp_path / "data"), "training")


@pytest.mark.parametrize("problem", ["size", "labels", "rgb"])
def test_bad_annotation_names_the_file(ade, tmp_path, problem):
    base = _copy_data(ade, tmp_path)
    victim = sorted((base / "annotations" / "validation").iterdir())[1]
    ann = np.asarray(Image.open(victim))
    if problem == "size":
        Image.fromarray(ann[:40]).save(victim)
        expect = r"is 64x40 but image .*\.jpg is 64x64"
    elif problem == "labels":
        bad = ann.copy()
        bad[0, 0], bad[0, 1] = 151, 200
        Image.fromarray(bad).save(victim)
        expect = r"label values \[151, 200\] outside 0\.\.150"
    else:
        Image.fromarray(np.stack([ann] * 3, -1)).save(victim)
        expect = r"mode RGB \(3 channels\)"
    samples = TASKS.get("seg/ade20k").samples(str(tmp_path / "data"), "validation")
    with pytest.raises(DataError, match=rf"1 of 4 .*{victim.name}.*" if problem == "rgb" else expect) as e:
        check_split(samples)
    assert str(victim) in str(e.value)


def test_check_cache_is_invalidated_by_a_changed_file(ade, tmp_path):
    base = _copy_data(ade, tmp_path)
    samples = TASKS.get("seg/ade20k").samples(str(tmp_path / "data"), "validation")
    check_split(samples, cache_dir=str(tmp_path / "cache"))
    victim = base / "annotations" / "validation" / os.path.basename(samples[0].annotation)
    ann = np.asarray(Image.open(victim)).copy()
    ann[0, 0] = 180
    Image.fromarray(ann).save(victim)
    os.utime(victim, ns=(1, 1))  # a new modification time even on a coarse clock
    with pytest.raises(DataError, match="180"):
        check_split(samples, cache_dir=str(tmp_path / "cache"))


def test_absent_dataset_and_config_are_clear_errors(ade, tmp_path):
    with pytest.raises(DataError, match="ADE20K not found under data root"):
        TASKS.get("seg/ade20k").samples(str(tmp_path), "training")
    with pytest.raises(DataError, match="not a shipped config .*setr_pup_vit-l16_ade20k_512"):
        config_path("setr_typo")


# --- backbone ------------------------------------------------------------------------------------------------
def _vit(method="full", **kw):
    return MODELS.build(dict(type="PETLViT", backbone="vit_tiny_patch16_224", method=method, img_size=64,
                             out_indices=(0, 1, 3), backbone_kwargs=seg_tiny.TINY_VIT, **kw))


@pytest.mark.parametrize("method,cfg", [("repadapter", {}), ("vpt", {"deep": True, "tokens": 5}), ("lora", {})])
def test_backbone_gives_multilevel_maps_of_any_size(method, cfg):
    vit = _vit(method, method_cfg=cfg).eval()
    assert isinstance(vit, PETLViT) and vit.model.petl.method == method
    feats = vit(torch.randn(2, 3, 64, 64))
    assert [f.shape for f in feats] == [torch.Size([2, 64, 8, 8])] * 3
    odd = vit(torch.randn(1, 3, 60, 90))  # padded to 64 x 96: 8 x 12 patches
    assert [f.shape for f in odd] == [torch.Size([1, 64, 8, 12])] * 3
    # the maps are the blocks' patch tokens: block 3's output, read directly, is the last level
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = vit.model.forward_features(x) if method != "vpt" else None
        last = vit(x)[-1]
    if ref is not None:  # forward_features ends with the final norm; undo nothing, compare before it
        tokens = vit.model.norm(last.flatten(2).transpose(1, 2))
        assert torch.allclose(tokens, ref[:, vit.model.num_prefix_tokens:], atol=1e-5)


def test_backbone_errors_are_clear():
    with pytest.raises(ConfigError, match=r"out_indices \(0, 9\) outside the 4 blocks"):
        MODELS.build(dict(type="PETLViT", backbone="vit_tiny_patch16_224", img_size=64, out_indices=(0, 9),
                          backbone_kwargs=seg_tiny.TINY_VIT))
    with pytest.raises(ConfigError, match="PETLViT takes timm.s plain ViTs"):
        MODELS.build(dict(type="PETLViT", backbone="convnext_tiny", out_indices=(0,),
                          backbone_kwargs=dict(dims=(16, 32, 32, 32), depths=(1, 1, 1, 1))))
    with pytest.raises(ConfigError, match="not init_cfg"):
        MODELS.build(dict(type="PETLViT", backbone="vit_tiny_patch16_224", backbone_kwargs=seg_tiny.TINY_VIT,
                          init_cfg=dict(type="Pretrained", checkpoint="x.pth")))


# --- configs -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task", ["seg/ade20k", "seg/ade20k-upernet"])
def test_shipped_configs_agree_with_the_task_protocol(task):
    p = TASKS.get(task).protocol
    cfg = Config.fromfile(config_path(p.seg_config))
    bb = cfg.model.backbone
    assert (bb.type, bb.backbone, bb.weights, bb.img_size, bb.drop_path_rate) == (
        "PETLViT", p.backbone, p.weights, p.img_size, p.drop_path)
    assert tuple(cfg.crop_size) == (p.img_size, p.img_size)
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type.lower(), opt.lr, opt.weight_decay) == (p.optimizer, p.lr, p.weight_decay)
    assert (cfg.train_cfg.max_iters, cfg.train_cfg.val_interval) == (p.max_iters, p.eval_every)
    assert cfg.global_batch_size == p.batch_size == 8 * cfg.train_dataloader.batch_size
    heads = [cfg.model.decode_head] + (cfg.model.auxiliary_head if isinstance(cfg.model.auxiliary_head, list)
                                       else [cfg.model.auxiliary_head])
    assert all(h.num_classes == 150 for h in heads)
    depth = 24 if "vit_large" in p.backbone else 12
    assert max(bb.out_indices) == depth - 1
    assert cfg.param_scheduler[-1].end == p.max_iters
    # RepAdapter's published segmentation setting trains the backbone biases
    assert resolve(task, "repadapter").method.cfg.train_bias is True


VIT_METHODS = [m for m in petlbench.list_methods() if "vit" in METHODS.get(m).families
               and not METHODS.get(m).feeds_head]  # those need the backbone's own linear head: refused here
HEAD_METHODS = [m for m in petlbench.list_methods() if METHODS.get(m).feeds_head]


@pytest.mark.parametrize("base", ["setr_pup_vit-l16_ade20k_512", "upernet_vit-b16_ade20k_512"])
@pytest.mark.parametrize("method", VIT_METHODS)
def test_trainable_is_method_plus_heads(ade, tmp_path, base, method):
    """After mmengine builds the segmentor and initialises it, the backbone trains exactly what the method trains
    on a plain petlbench model (RepAdapter here: adapters + every backbone bias), every head and neck tensor
    trains, nothing else does."""
    spec = tiny_spec(ade, method, base)
    runner = runner_for(spec, ade, tmp_path)
    runner.model.init_weights()
    seg = runner.model
    back = {n[len("backbone.model."):] for n, p in seg.named_parameters()
            if n.startswith("backbone.") and p.requires_grad}
    rest = [(n, p.requires_grad) for n, p in seg.named_parameters() if not n.startswith("backbone.")]
    assert rest and all(flag for _, flag in rest)
    alone = petlbench.create_model("vit_tiny_patch16_224", method=method, num_classes=0, img_size=64,
                                   method_cfg=dataclasses.asdict(spec.method.cfg), **seg_tiny.TINY_VIT)
    assert back == {n for n, p in alone.named_parameters() if p.requires_grad}
    if method == "repadapter":
        biases = {n for n, _ in seg.backbone.model.named_parameters() if n.endswith("bias")}
        assert biases <= back  # train_bias=True, the task's default for RepAdapter
        assert not any(n.endswith("base.weight") for n in back)
    elif method == "linear":
        assert back == set()
    elif method != "full":
        total = sum(1 for _ in seg.backbone.model.parameters())
        assert 0 < len(back) < total


# --- training through `petlbench run` --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(ade):
    spec = tiny_spec(ade, "repadapter", lr=0.01)
    store = ResultStore(str(ade / "store"))
    rec = execute(spec, str(ade / "data"), store, str(ade / "out"))
    return spec, store, rec


def test_training_lowers_the_loss_and_writes_a_record(ade, trained):
    spec, store, rec = trained
    losses = [x["loss"] for x in rec["losses"]]
    assert len(losses) >= 10 and np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    assert rec["status"] == "ok" and rec["metric"] == "mIoU" and rec["benchmark"] == "seg"
    m = rec["metrics"]
    assert m["iter"] == 30 and m["split"] == "validation" and 0 <= m["mIoU"] <= 100 and 0 <= m["aAcc"] <= 100
    assert [h["iter"] for h in rec["history"]] == [15, 30]
    assert m["mIoU"] > 50  # three flat colours: learnt well above chance (1/3 of pixels right)
    assert rec["params"]["trainable"] > rec["params"]["paper"] > 0 and rec["params"]["head"] > 0
    assert store.get("seg", spec.config_hash)["value"] == rec["value"]
    work = ade / "out" / "seg" / f"ade20k_repadapter_{spec.config_hash}"
    assert not list(work.glob("iter_*.pth"))  # the full checkpoints go once the record is written
    # a second run is found in the store, not trained again
    assert execute(spec, str(ade / "data"), store, str(ade / "out"))["started"] == rec["started"]


def test_tuned_file_restores_the_trained_segmentor(ade, trained, tmp_path):
    spec, _, rec = trained
    fresh = runner_for(spec, ade, tmp_path).model
    path = ade / "out" / rec["tuned_file"]
    before = {k: v.clone() for k, v in tuned_tensors(fresh).items()}
    load_seg_tuned(fresh, str(path))
    after = tuned_tensors(fresh)
    changed = [k for k in after if not torch.equal(before[k], after[k])]
    assert changed and any("adapter" in k or "up_weight" in k for k in changed)


def test_frozen_backbone_stays_pretrained_through_the_runner(ade, tmp_path):
    """Weights from a local checkpoint survive mmengine's init_weights, and frozen tensors never change."""
    import timm

    vit = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=64, **seg_tiny.TINY_VIT)
    ckpt = tmp_path / "vit.pth"
    torch.save(vit.state_dict(), ckpt)
    spec = tiny_spec(ade, "repadapter", weights=str(ckpt), max_iters=3, eval_every=3)
    runner = runner_for(spec, ade, tmp_path / "work")
    runner.train()
    model = runner.model.backbone.model
    named = dict(model.named_parameters())
    for name, ref in vit.state_dict().items():
        key = name.replace("attn.qkv.", "attn.qkv.base.").replace("mlp.fc1.", "mlp.fc1.base.")
        p = named[key]
        if p.requires_grad:
            assert name.endswith("bias")
        else:
            assert torch.equal(p.detach(), ref), name


def test_unused_protocol_field_is_an_error(ade):
    # the segmentation protocol has no epochs at all (iterations: max_iters): an unknown key, before any run
    with pytest.raises(ConfigError, match=r"override epochs=\.\.\.: unknown key; accepted: .*max_iters"):
        tiny_spec(ade, "lora", epochs=5)
    # a shared field the mmengine config does not take from the protocol is refused by the runner
    spec = tiny_spec(ade, "lora", test_split="training")
    with pytest.raises(ConfigError, match=r"test_split='training' not used by segmentation runs"):
        execute(spec, str(ade / "data"), ResultStore(str(ade / "store_x")), str(ade / "out_x"))


def test_non_finite_loss_is_recorded_as_failed(ade, tmp_path):
    from petlbench.engine import NonFiniteLoss

    spec = tiny_spec(ade, "bitfit", lr=1e30, max_iters=6, eval_every=6)
    store = ResultStore(str(tmp_path / "store"))
    with pytest.raises(NonFiniteLoss, match="iteration"):
        execute(spec, str(ade / "data"), store, str(tmp_path / "out"))
    rec = store.get("seg", spec.config_hash)
    assert rec["status"] == "failed" and "NonFiniteLoss" in rec["reason"]


# --- merging ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", VIT_METHODS)
def test_merged_backbone_gives_the_same_miou(ade, tmp_path, method):
    """Every mergeable method: the merged segmentor (a plain timm ViT under the same heads) gives the same logits
    and the same mIoU on the same images; the others refuse to merge."""
    spec = tiny_spec(ade, method)
    runner = runner_for(spec, ade, tmp_path)
    runner.model.init_weights()
    if not METHODS.get(method).mergeable:
        with pytest.raises(MergeError, match="not mergeable"):
            merged_segmentor(runner.model)
        return
    torch.manual_seed(1)
    with torch.no_grad():  # random method tensors (a zero-initialised B would make merging trivially exact)
        for p in runner.model.backbone.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    unmerged = runner.model
    merged = merged_segmentor(unmerged)
    assert not any(isinstance(m, Wrapper) for m in merged.backbone.model.modules())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a = unmerged.eval()(x, mode="tensor")
        b = merged.eval()(x, mode="tensor")
    assert torch.allclose(a, b, atol=1e-4)
    first = runner.val()
    runner.model = merged
    second = runner.val()
    assert first["mIoU"] == second["mIoU"] and first["aAcc"] == second["aAcc"]


# --- metric ----------------------------------------------------------------------------------------------------
def test_iou_metric_on_known_predictions():
    """mmseg's IoUMetric on a 2x3 map: class 0 I=1 U=3, class 1 I=2 U=3, class 2 I=1 U=1, one pixel ignored."""
    from mmengine.structures import PixelData
    from mmseg.evaluation import IoUMetric
    from mmseg.structures import SegDataSample

    gt = torch.tensor([[0, 0, 1], [1, 2, 255]])
    pred = torch.tensor([[0, 1, 1], [1, 2, 0]])
    gt[0, 1] = 0
    pred[1, 0] = 0
    # gt   = [[0, 0, 1], [1, 2, 255]]   pred = [[0, 1, 1], [0, 2, 0]]
    # class 0: I = 1 (0,0); U = gt{(0,0),(0,1)} + pred{(0,0),(1,0)} = 3 ((1,2) is ignored)
    # class 1: I = 1 (0,2); U = gt{(0,2),(1,0)} + pred{(0,1),(0,2)} = 3
    # class 2: I = 1; U = 1.   mIoU = (1/3 + 1/3 + 1) / 3; aAcc = 3 correct of 5 labelled
    sample = SegDataSample()
    sample.pred_sem_seg = PixelData(data=pred[None])
    sample.gt_sem_seg = PixelData(data=gt[None])
    metric = IoUMetric(iou_metrics=["mIoU"])
    metric.dataset_meta = dict(classes=("a", "b", "c"))
    metric.process([], [sample.to_dict()])
    res = metric.compute_metrics(metric.results)
    assert res["mIoU"] == pytest.approx(100 * (1 / 3 + 1 / 3 + 1) / 3, abs=0.01)
    assert res["aAcc"] == pytest.approx(100 * 3 / 5, abs=0.01)


# --- CLI and tables ----------------------------------------------------------------------------------------------
def test_cli_run_and_segmentation_table(ade, trained, tmp_path, capsys):
    from petlbench.cli import main

    spec, store, rec = trained
    cfg = seg_tiny.tiny_config(str(ade / "tiny_setr_pup_vit-l16_ade20k_512.py"))
    over = [f"{k}={v}" for k, v in {**seg_tiny.TINY_OVERRIDES, "seg_config": cfg, "lr": 0.01}.items()]
    assert main(["run", "--task", "seg/ade20k", "--method", "repadapter", "--data-root", str(ade / "data"),
                 "--store", store.root, "--out", str(ade / "out"), "--quiet", *over]) == 0
    line = capsys.readouterr().out
    assert f"mIoU {rec['value']:.2f}%" in line and "iteration 30" in line
    assert main(["table", "--store", store.root, "--results", str(tmp_path)]) == 0
    md = (tmp_path / "seg" / "seg.md").read_text()
    assert "ADE20K" in md and f"{rec['value']:.1f}" in md and "RepAdapter" in md and "SETR-PUP, ViT-L/16" in md
    ours = next(line for line in md.splitlines() if line.startswith("| RepAdapter"))
    assert ours.split("|")[3].strip().strip("*") == f"{rec['value']:.1f}"  # under the SETR column
    assert "V-PETL Bench setting, Swin-L" in md  # published rows in a column of their own
    assert main(["plot", "--store", store.root, "--results", str(tmp_path)]) == 0
    assert (tmp_path / "seg" / "seg_ade20k_miou_vs_params.png").stat().st_size > 0


# --- full size -------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_full_size_configs_build_with_the_published_counts(tmp_path):
    """The shipped configs at full size (random weights): RepAdapter on ViT-L/16 trains 589,824 adapter weights
    (the paper's convention) + 49,536 adapter biases + 272,384 backbone biases; UperNet ViT-B runs a 512x512 image."""
    counts = {}
    for task in ("seg/ade20k", "seg/ade20k-upernet"):
        spec = resolve(task, "repadapter", {"weights": "none", "num_workers": 0})
        cfg = build_config(spec, str(tmp_path), str(tmp_path / "w"), workers=0)
        seg = MODELS.build(cfg.model)
        counts[task] = (seg, param_counts(seg))
    _, large = counts["seg/ade20k"]
    d, blocks, adapters = 1024, 24, 48
    weights = adapters * (d * 8 + d * 8 // 2)
    adapter_biases = adapters * (8 + d)
    backbone_biases = blocks * (3 * d + d + 4 * d + d + d + d) + d + d  # qkv proj fc1 fc2 norm1 norm2; patch; norm
    assert large["paper"] == weights == 589_824
    assert large["trainable"] == weights + adapter_biases + backbone_biases == 911_744
    assert large["backbone_total"] > 300_000_000
    seg, base = counts["seg/ade20k-upernet"]
    assert base["paper"] == 24 * (768 * 8 + 768 * 4)
    with torch.no_grad():
        out = seg.eval()(torch.randn(1, 3, 512, 512), mode="tensor")
    assert out.shape == (1, 150, 128, 128)  # UperNet predicts at 1/4 resolution, upsampled in predict()


@pytest.mark.parametrize("method", HEAD_METHODS)
def test_a_method_feeding_the_head_refuses_a_segmentation_trunk(ade, tmp_path, method):
    """The segmentor's backbone has no classification head: a method that feeds one is refused, clearly."""
    with pytest.raises(ConfigError, match=method):
        runner_for(tiny_spec(ade, method), ade, tmp_path)
