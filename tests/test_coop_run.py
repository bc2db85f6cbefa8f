"""`petlbench run --task coop/<dataset> --method coop` end to end: a CoOp-layout EuroSAT fixture, CoOp's recipe
(its k-shot split, SGD with Dassl's schedule, crop + flip, the last epoch tested once), a tiny random open_clip
(tests/tiny.py OPENCLIP_TINY): the context is all that trains, the record says so, and the table has its row."""
from __future__ import annotations

import functools

import pytest
import torch

import petlbench.backbones as backbones
from petlbench.run import execute, resolve
from petlbench.store import ResultStore

from tiny import OPENCLIP_TINY, has_open_clip

pytestmark = [pytest.mark.clip, pytest.mark.skipif(not has_open_clip(), reason="needs open_clip_torch")]


def test_coop_trains_its_context_under_coops_recipe(tmp_path, monkeypatch):
    from PIL import Image
    from test_coop_data import write_json_dataset

    monkeypatch.setattr(backbones, "create_openclip", functools.partial(backbones.create_openclip, **OPENCLIP_TINY))
    src = str(tmp_path / "_image.jpg")
    Image.new("RGB", (40, 30), (120, 40, 90)).save(src)
    write_json_dataset(str(tmp_path), "eurosat", src)
    over = {"weights": "none", "img_size": 32, "epochs": 3, "batch_size": 4, "n_ctx": 4, "device": "cpu",
            "num_workers": 0, "train_split": "train_shot2_seed1"}
    spec = resolve("coop/eurosat", "coop", over)
    p = spec.protocol
    assert (p.recipe, p.optimizer, p.schedule, p.augment, p.selection, p.head_init) == (
        "coop", "sgd", "dassl_cosine", "crop_flip", "final", "zeroshot")
    store = ResultStore(str(tmp_path / "store"))
    rec = execute(spec, str(tmp_path), store, str(tmp_path / "runs"))
    assert rec["status"] == "ok" and rec["metrics"]["split"] == "test"
    assert [h["epoch"] for h in rec["history"] if "test" in h] == [3]  # tested once, after the last epoch
    import glob
    import json

    (log,) = glob.glob(str(tmp_path / "runs" / "coop" / "*.log.jsonl"))
    with open(log, encoding="utf-8") as f:
        lrs = [round(json.loads(line)["lr"], 8) for line in f]
    assert lrs == [1e-5, 0.002, 0.0015]  # Dassl's constant warm-up epoch, then cosine(T_max=3) from 0.002
    width = OPENCLIP_TINY["text_cfg"]["width"]
    assert rec["params"]["paper"] == 4 * width  # the context: n_ctx x the text width
    from petlbench.checkpoint import read_tuned

    _, tensors = read_tuned(str(tmp_path / "runs" / rec["tuned_file"]))
    assert list(tensors) == ["head.ctx"] and tensors["head.ctx"].shape == (4, width)
    assert not torch.all(tensors["head.ctx"] == 0)
    from petlbench.tables import run_frame

    frame = run_frame(store.records())
    assert list(frame["variant"])[0].startswith("CoOp") and list(frame["shots"]) == [2]
