"""NOAH's three stages as runs of the store (petlbench/nas.py): supernet, evolutionary search, retrain. End to end
on a mini task and on generated VTAB-1k-format data (NOAH's layout and recipes, a small ViT), stage by stage,
resumed after kill -9, and in the tables. The modules and the evolution themselves are checked against NOAH's
code in tests/test_noah.py."""
from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image

from petlbench.errors import ConfigError
from petlbench.run import execute, resolve
from petlbench.store import ResultStore
from petlbench.tasks.mini import generate

# A small supernet for the 6-block mini ViT, and a short search (NOAH's settings are the defaults; tests shrink them)
SMALL = {"super_prompt": 8, "super_lora": 8, "super_adapter": 8, "prompt_dims": "2,4,8", "lora_dims": "2,4,8",
         "adapter_dims": "2,4,8", "prompt_depths": "2,4,6", "lora_depths": "2,4,6", "adapter_depths": "2,4,6"}
SEARCH = {"search.max_epochs": 2, "search.population_num": 8, "search.select_num": 3, "search.mutation_num": 3,
          "search.crossover_num": 3, "search.param_limit": 0.02}
QUICK = {"epochs": 2, "eval_every": 1, "warmup_epochs": 0, "device": "cpu", "num_workers": 0}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return generate(str(tmp_path_factory.mktemp("mini")))


def _by_stage(store_root: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in ResultStore(store_root).records():
        out.setdefault(r.get("stage") or "result", []).append(r)
    return out


def test_three_stages_on_a_mini_task(root, tmp_path):
    store, out = ResultStore(str(tmp_path / "store")), str(tmp_path / "runs")
    spec = resolve("mini/digits", "noah", {**SMALL, **SEARCH, **QUICK})
    final = execute(spec, root, store, out)
    stages = _by_stage(store.root)
    assert sorted(stages) == ["pipeline", "result", "search", "supernet"]
    sup, found, (ret,) = stages["supernet"][0], stages["search"][0], stages["result"]
    assert final == ret
    # supernet: the supernet configuration, trained on the clean split, scored on val, no test read
    assert sup["method_cfg"]["arch"] == "" and sup["protocol"]["selection"] == "trial"
    assert set(sup["data"]["splits"]) == {"train", "val"}
    # search: on val, with the supernet's weights; the best sub-network within the limit
    arch = found["nas"]["arch"]
    assert found["metrics"]["split"] == "val" and found["nas"]["settings"]["supernet"] == sup["config_hash"]
    assert found["nas"]["params"] <= 0.02e6 and len(found["nas"]["history"]) == 2
    # retrain: exactly the found sub-network, from the pretrained backbone, its own parameter count
    assert ret["method_cfg"]["arch"] == arch and ret["protocol"]["selection"] == "reproduction"
    assert ret["nas"] == {"supernet": sup["config_hash"], "search": found["config_hash"], "arch": arch,
                          "val_top1": found["value"], "params": found["nas"]["params"],
                          "settings": found["nas"]["settings"]}
    assert ret["params"]["trainable"] < sup["params"]["trainable"]
    from petlbench.methods.noah import parse_arch

    sizes = parse_arch(arch, 6)
    d = 96  # the mini ViT's width
    lora = sum(2 * r * d + r * 2 * d for r in sizes["lora"])  # A (r x d) + B (3d x r)
    adapter = sum(2 * h * d + h + d for h in sizes["adapter"] if h)  # down (h x d + h) + up (d x h + d)
    prompts = sum(p * d for p in sizes["prompt"])
    assert ret["params"]["trainable"] == lora + adapter + prompts
    # the entry configuration points at the result: a second run trains nothing and returns it
    pointer = stages["pipeline"][0]
    assert pointer["config_hash"] == spec.config_hash and pointer["final_hash"] == ret["config_hash"]
    mtimes = {p: os.path.getmtime(p) for p in glob.glob(os.path.join(store.root, "mini", "*.json"))}
    assert execute(spec, root, store, out) == ret
    assert mtimes == {p: os.path.getmtime(p) for p in glob.glob(os.path.join(store.root, "mini", "*.json"))}
    # the table has one row: NOAH (its sub-network is the dataset's, not part of the label); stages are not rows
    from petlbench.tables import run_frame

    frame = run_frame(store.records())
    assert len(frame) == 1 and frame.iloc[0]["variant"].startswith("NOAH")
    assert "arch=" not in frame.iloc[0]["variant"]


def test_each_stage_alone_then_the_rest_from_the_store(root, tmp_path):
    store, out = ResultStore(str(tmp_path / "store")), str(tmp_path / "runs")
    over = {**SMALL, **SEARCH, **QUICK}
    sup = execute(resolve("mini/dsprites_ori", "noah", {**over, "stage": "supernet"}), root, store, out)
    assert sup["stage"] == "supernet" and sorted(_by_stage(store.root)) == ["supernet"]
    found = execute(resolve("mini/dsprites_ori", "noah", {**over, "stage": "search"}), root, store, out)
    assert found["stage"] == "search" and sorted(_by_stage(store.root)) == ["search", "supernet"]
    sup_file = os.path.join(store.root, "mini", f"{sup['config_hash']}.json")
    before = os.path.getmtime(sup_file)
    final = execute(resolve("mini/dsprites_ori", "noah", over), root, store, out)
    assert final["nas"]["search"] == found["config_hash"] and os.path.getmtime(sup_file) == before
    # another parameter limit is another search (and another entry), on the same supernet
    other = execute(resolve("mini/dsprites_ori", "noah", {**over, "search.param_limit": 0.005}), root, store, out)
    assert other["nas"]["supernet"] == sup["config_hash"] and other["nas"]["search"] != found["config_hash"]
    assert other["nas"]["params"] <= 0.005e6


def test_pipeline_options_are_errors_elsewhere_and_named():
    with pytest.raises(ConfigError, match="only for methods searched with a supernet"):
        resolve("mini/digits", "lora", {"search.param_limit": 0.5})
    spec = resolve("mini/digits", "noah", {"stage": "retrian"})
    with pytest.raises(ConfigError, match="stage='retrian': one of supernet, search, retrain"):
        execute(spec, "/nonexistent", ResultStore("/tmp/unused-store"), "/tmp/unused-out")
    spec = resolve("mini/digits", "noah", {"search.populaton_num": 3})  # checked before the supernet trains
    with pytest.raises(ConfigError, match="search.populaton_num=...: unknown search option; .*population_num"):
        execute(spec, "/nonexistent", ResultStore("/tmp/unused-store"), "/tmp/unused-out")
    with pytest.raises(ConfigError, match="search.normalize='lab'"):
        execute(resolve("mini/digits", "noah", {"search.normalize": "lab"}), "/nonexistent",
                ResultStore("/tmp/unused-store"), "/tmp/unused-out")


def test_search_resumes_after_kill_9(root, tmp_path):
    """Killed while evolving (after its first epoch's state is saved), the search resumes from that state and
    ends where an uninterrupted search ends."""
    over = {**SMALL, **QUICK, **SEARCH, "search.max_epochs": 4}
    args = [f"{k}={v}" for k, v in over.items()]
    store, out = str(tmp_path / "store"), str(tmp_path / "runs")
    cmd = [sys.executable, "-m", "petlbench.cli", "run", "--task", "mini/clevr_count", "--method", "noah",
           "--data-root", root, "--store", store, "--out", out, "--quiet", "stage=search", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    deadline = time.time() + 300
    states = os.path.join(out, "mini", "*_search_*.state.json")
    while time.time() < deadline and not glob.glob(states) and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    saved = glob.glob(states)
    assert saved, "the search was not killed mid-way"
    with open(saved[0], encoding="utf-8") as f:
        assert 1 <= json.load(f)["epoch"] < 4
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    resumed = _by_stage(store)["search"][0]
    assert not glob.glob(states)  # removed once the record is written
    # uninterrupted, in another store from the same supernet record and tuned file
    import shutil

    store2 = str(tmp_path / "store2")
    shutil.copytree(store, store2)
    os.unlink(os.path.join(store2, "mini", f"{resumed['config_hash']}.json"))
    again = subprocess.run([*cmd[:cmd.index("--store") + 1], store2, *cmd[cmd.index("--store") + 2:]],
                           capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    fresh = _by_stage(store2)["search"][0]
    assert fresh["nas"]["arch"] == resumed["nas"]["arch"] and fresh["nas"]["history"] == resumed["nas"]["history"]
    assert fresh["value"] == resumed["value"]


def _vtab_folder(root, name: str, classes: int) -> None:
    """A dataset folder in NOAH's / VPT's VTAB-1k layout (images/<split>/..., <split>.txt of "path label")."""
    folder = root / name
    for split, n in {"train800": 16, "val200": 8, "train800val200": 24, "test": 8}.items():
        (folder / "images" / split).mkdir(parents=True, exist_ok=True)
        lines = []
        for i in range(n):
            rel = f"images/{split}/{i:06d}.jpg"
            Image.new("RGB", (40, 36), ((i * 37) % 256, (i * 91) % 256, 60)).save(folder / rel)
            lines.append(f"{rel} {i % classes}")
        (folder / f"{split}.txt").write_text("\n".join(lines) + "\n")


def test_three_stages_on_vtab_format_data_with_noahs_recipes(tmp_path):
    """vtab/eurosat through NOAH's recipes: noah-vtab-supernet (train800 -> val200), the search (val200, Inception
    normalisation, as NOAH's search script), noah-vtab retrain (train800val200 -> test). A small ViT, no
    weights, two epochs: the recipes' data, splits and settings, not their schedule."""
    _vtab_folder(tmp_path / "vtab", "eurosat", 10)
    over = {**SMALL, **SEARCH, **QUICK, "backbone": "petlbench_vit_mini", "weights": "none", "img_size": 32,
            "batch_size": 8}
    store, out = ResultStore(str(tmp_path / "store")), str(tmp_path / "runs")
    final = execute(resolve("vtab/eurosat", "noah", over), str(tmp_path / "vtab"), store, out)
    stages = _by_stage(store.root)
    sup, found = stages["supernet"][0], stages["search"][0]
    assert sup["protocol"]["recipe"] == "noah-vtab-supernet" and sup["protocol"]["lr"] == 5e-4
    assert set(sup["data"]["splits"]) == {"train800", "val200"}
    assert found["nas"]["settings"]["normalize"] == "inception" and found["nas"]["settings"]["split"] == "val200"
    assert found["nas"]["settings"]["settings"]["max_epochs"] == 2  # the override beats NOAH's 15
    assert final["protocol"]["recipe"] == "noah-vtab" and final["protocol"]["lr"] == 1e-3
    assert set(final["data"]["splits"]) == {"train800val200", "test"}
    assert final["method_cfg"]["prompt_dims"] == "2,4,8"  # (the override beats the VTAB space 1,5,10)
    assert final["variant"]["key"] == "noah"  # the published NOAH row's key: its delta row pairs with it


def test_noahs_released_subnetworks_as_a_recipe():
    """recipe=noah-vtab-subnet retrains the sub-network NOAH released for each dataset (its RETRAIN configs)."""
    spec = resolve("vtab/cifar", "noah", {"recipe": "noah-vtab-subnet"})
    assert spec.method.cfg.arch.startswith("prompt=10,5,10,1,5,1,10,1,10,5,1,10;lora=10,1,5,5,1,10,1,1,1,10,1,1")
    assert spec.method.runner(spec.protocol) is None  # a fixed sub-network is a plain run
    assert resolve("vtab/cifar", "noah", {}).method.runner(resolve("vtab/cifar", "noah", {}).protocol) is not None


def test_ddp_finds_unused_parameters_only_for_a_supernet():
    """A supernet step leaves the sizes it did not draw unused: DDP must be told (NOAH: find_unused_parameters)."""
    import petlbench
    from petlbench.distributed import samples_subnetworks

    kw = dict(num_classes=3, pretrained=False)
    assert samples_subnetworks(petlbench.create_model("petlbench_vit_mini", method="noah", method_cfg=SMALL, **kw))
    fixed = {**SMALL, "arch": "prompt=2,0,0,0,0,0;lora=2,2,0,0,0,0;adapter=0,0,0,0,0,8"}
    assert not samples_subnetworks(petlbench.create_model("petlbench_vit_mini", method="noah", method_cfg=fixed, **kw))
    assert not samples_subnetworks(petlbench.create_model("petlbench_vit_mini", method="lora", **kw))
