"""The offline mini-benchmark: deterministic generated data in the VTAB list format, the shipped backbone,
and the driver end to end (quick mode, one task)."""
from __future__ import annotations

import hashlib
import os

import pytest
import torch
from safetensors.torch import load_file, safe_open

import petlbench
from petlbench.task import TASKS
from petlbench.tasks import mini
from petlbench.weights import WEIGHTS_DIR, resolve_weights


def _digest(root: str) -> str:
    h = hashlib.sha256()
    for name in sorted(mini.DATASETS):
        for split in mini.SPLITS:
            h.update(open(os.path.join(root, name, f"{split}.txt"), "rb").read())
        h.update(open(os.path.join(root, name, "images", "000000.png"), "rb").read())
    return h.hexdigest()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return mini.generate(str(tmp_path_factory.mktemp("mini")))


def test_generation_is_deterministic_and_in_vtab_format(root, tmp_path):
    assert _digest(root) == _digest(mini.generate(str(tmp_path)))
    for name, classes in mini.DATASETS.items():
        task = TASKS.get(f"mini/{name}")
        train, test = task.samples(root, "trainval"), task.samples(root, "test")
        assert len(train) == mini.N_TRAIN + mini.N_VAL
        assert len(test) == (1797 - 500 if name == "digits" else mini.N_TEST)
        labels = {s.label for s in train}
        assert labels == set(range(classes)), name  # every class present


def test_shipped_backbone_loads_strictly():
    path = os.path.join(WEIGHTS_DIR, "vit_mini_procedural.safetensors")
    assert os.path.getsize(path) < 5 * 2**20
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    assert meta["script"] == "scripts/pretrain_mini.py" and float(meta["upstream_heldout_top1"]) > 50
    name, pretrained = resolve_weights("petlbench_vit_mini", "petlbench:vit_mini_procedural")
    model = petlbench.create_model(name, method="linear", num_classes=6, pretrained=pretrained)
    state = load_file(path)
    own = model.state_dict()
    assert set(state) == set(own) - {"head.weight", "head.bias"}
    assert all(torch.equal(own[k], v) for k, v in state.items())


def test_quick_driver_writes_table_and_plot(root, tmp_path, monkeypatch):
    from petlbench.store import ResultStore
    from petlbench.tasks import mini as driver

    full_plan = driver.mini_plan
    monkeypatch.setattr(driver, "mini_plan", lambda quick: [
        (t, m, o) for t, m, o in full_plan(quick) if t == "mini/clevr_count" and m in ("linear", "repadapter")])
    full_searches = driver.mini_searches
    monkeypatch.setattr(driver, "mini_searches", lambda quick: [
        (t, m, o) for t, m, o in full_searches(quick) if t == "mini/clevr_count" and m == "linear"])
    paths, failed = driver.run_mini(ResultStore(str(tmp_path / "s")), str(tmp_path / "o"), str(tmp_path / "r"),
                                    quick=True, data_root=root)
    assert not failed
    md = open(str(tmp_path / "r" / "mini" / "mini.md")).read()
    # quick runs differ from the protocol: their rows say how, and never mix with full-protocol rows
    quick = "epochs=2, eval_every=1, warmup_epochs=0"
    assert f"| RepAdapter [{quick}] |" in md and f"| RepAdapter [{quick}, random init] |" in md
    assert f"| Linear probing [{quick}] |" in md
    assert f"| Linear probing [tuned lr, weight_decay, {quick}] |" in md  # the search's final run
    assert "grid lr=0.002|0.02 weight_decay=0|0.01" in md
    assert os.path.getsize(str(tmp_path / "r" / "mini" / "mini_accuracy_vs_params.png")) > 10_000
    assert any(p.endswith("mini.tex") for p in paths)


def test_plan_runs_every_method_the_tiny_vit_supports_but_peft():
    import petlbench
    from petlbench.tasks import mini as driver

    planned = {m for _, m, _ in driver.mini_plan()}
    vit = {m for m in petlbench.list_methods() if "vit" in petlbench.get_method(m).families}
    # a ConvNet-only method would only fail here; peft's default is PEFT's LoRA, which the lora rows measure
    assert planned == vit - {"peft"} and "conv_adapter" not in planned and "peft" in vit
    noah = [o for t, m, o in driver.mini_plan() if m == "noah"]
    assert len(noah) == 4 and all(o.get("weights") != "none" and o["search.max_epochs"] == 5 for o in noah)
    assert {(t, m) for t, m, _ in driver.mini_searches()} == {(t, m) for t in {t for t, _, _ in driver.mini_plan()}
                                                            for m in ("bitfit", "linear")}



@pytest.mark.parametrize("jobs", [1, 2])
def test_runs_side_by_side_compute_on_one_thread_each_and_keep_their_order(jobs):
    threads, seen = torch.get_num_threads(), []
    calls = [(torch.get_num_threads, ()), (int, ("x",)), (torch.get_num_threads, ())]  # picklable, for a worker
    out = mini._side_by_side(calls, jobs, "runs", lambda *a: seen.append(a))
    assert out == [1, ("failed", "ValueError: invalid literal for int() with base 10: 'x'"), 1]
    assert seen[0] == ("runs", 0, 3) and seen[-1] == ("runs", 3, 3)
    assert torch.get_num_threads() == threads  # this process's own setting is given back
