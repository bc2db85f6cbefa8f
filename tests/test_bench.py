"""The efficiency table on a tiny ViT: every row present, counts equal the API's, merged rows cost what the
plain backbone costs, and the files are written."""
from __future__ import annotations

import json
import os

import pandas as pd
import pytest
import torch

import petlbench
from petlbench.measure import count_flops, efficiency_table, peak_memory_bytes, time_interleaved
from petlbench.report import write_efficiency

from tiny import BACKBONE, VIT_VARIANTS


@pytest.fixture(scope="module")
def table():
    kwargs = {k: v for k, v in VIT_VARIANTS["vit_cls"].items() if k != "img_size"}
    return efficiency_table(BACKBONE, batch_sizes=(1, 2), img_size=32, min_time=0.05, min_repeats=3,
                            num_classes=10, **kwargs)


def test_rows_and_counts(table):
    mergeable_with_modules = {"lora", "repadapter", "ssf", "fact_tt", "fact_tk", "kadaptation", "peft"}
    vit = [m for m in petlbench.list_methods() if "vit" in petlbench.get_method(m).families]
    assert "conv_adapter" not in vit  # a method without the family's sites is not measured on it
    assert set(zip(table.method, table.form)) == {("plain", "plain")} | {
        (m, "unmerged") for m in vit} | {(m, "merged") for m in mergeable_with_modules & set(vit)}
    for r in table.itertuples():
        if r.form == "plain":
            continue
        model = petlbench.create_model(BACKBONE, method=r.method, num_classes=10, **VIT_VARIANTS["vit_cls"])
        assert r.params_trainable == petlbench.count_trainable(model, include_head=False)
        assert r.params_paper == petlbench.count_paper(model)


def test_merged_costs_what_plain_costs(table):
    plain = table[table.form == "plain"].iloc[0]
    merged = table[table.form == "merged"]
    assert (merged.gflops == plain.gflops).all()
    assert (merged.params_total == plain.params_total).all()
    vpt = table[(table.method == "vpt")].iloc[0]
    assert vpt.gflops > plain.gflops  # prompts lengthen the sequence
    for col in ("latency_ms_bs1", "latency_ratio_bs2", "peak_mem_mb_bs2", "peak_mem_ratio_bs2"):
        assert table[col].notna().all() and (table[col] > 0).all()
    assert plain.latency_ratio_bs1 == 1.0


def test_flops_count_attention():
    import timm

    m = timm.create_model("vit_base_patch16_224", num_classes=1000).eval()
    flops = count_flops(m, torch.randn(1, 3, 224, 224))
    assert abs(flops / 2e9 - 17.56) < 0.05  # the papers' 17.6 GMACs for ViT-B/16 at 224
    assert m.blocks[0].attn.fused_attn  # restored


def test_peak_memory_grows_with_batch():
    import timm

    m = timm.create_model(BACKBONE, num_classes=10, **VIT_VARIANTS["vit_cls"]).eval()
    params = sum(p.numel() * 4 for p in m.parameters())
    small, big = (peak_memory_bytes(m, torch.randn(b, 3, 32, 32)) for b in (1, 64))
    assert params < small < big


def test_interleaved_ratio_of_same_model_is_near_one():
    lin = torch.nn.Linear(256, 256)
    res = time_interleaved({"a": lin, "b": lin}, torch.randn(64, 256), reference="a", min_time=0.05)
    assert res["a"]["ratio"] == 1.0 and 0.5 < res["b"]["ratio"] < 2.0 and res["a"]["rounds"] >= 3


def test_write_files(table, tmp_path):
    meta = {"backbone": BACKBONE, "img_size": 32, "environment": {"device": "cpu", "dtype": "fp32", "torch": "x",
            "timm": "y", "threads": 1}, "command": "petlbench bench", "date": "today"}
    paths = write_efficiency(table, meta, str(tmp_path), "t")
    back = pd.read_csv(paths["csv"])
    assert list(back.columns) == list(table.columns) and len(back) == len(table)
    md = open(paths["md"]).read()
    assert "| repadapter (merged) |" in md and "Latency bs2 x plain" in md and "Paper conv." in md
    assert "\\toprule" in open(os.path.join(str(tmp_path), "t.tex")).read()
    assert json.load(open(paths["json"]))["backbone"] == BACKBONE


def test_train_throughput_and_vtab_estimate():
    from petlbench.measure import time_estimate, train_throughput
    from petlbench.tasks.vtab import estimate_sizes

    df = train_throughput(BACKBONE, ["linear", "repadapter"], batch_size=4, img_size=32, steps=1,
                          **{k: v for k, v in VIT_VARIANTS["vit_cls"].items() if k != "img_size"})
    assert list(df.method) == ["full", "linear", "repadapter"]
    assert df.loc[df.method == "full", "speedup_vs_full"].item() == 1.0 and (df.images_per_s > 0).all()
    est = time_estimate(estimate_sizes(), "repadapter", batch_size=2, eval_batch_size=2, steps=1,
                        backbone="vit_tiny_patch16_224")
    assert len(est["per_dataset"]) == 19 and sum(d["test_images"] for d in est["per_dataset"]) == 387_904
    assert est["total_minutes"] == pytest.approx(sum(est["totals_s"].values()) / 60)
    cifar = est["per_dataset"][0]
    assert cifar["train_s"] == pytest.approx(100 * 500 * est["train_step_s"])  # 100 epochs x ceil(1000/2) steps
