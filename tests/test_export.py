"""`petlbench export`: a run's merged model as a timm checkpoint folder that timm loads with the tuned outputs, a
loader note for a configuration that does not merge, LoRA-family tuned tensors as a PEFT adapter that PEFT loads
onto the timm model with the tuned outputs, and the hub push refused without a token before anything is done."""
from __future__ import annotations

import json
import os
import re

import pytest
import torch
from safetensors.torch import load_file, save_file

import petlbench
from petlbench import export
from petlbench.cli import main

from records import record, write
from tiny import NUM_CLASSES, VARIANTS, images, plain, randomize_trainable


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (a - b).abs().max().item() <= 1e-4 * max(1.0, b.abs().max().item())


@pytest.fixture(scope="module")
def mini_run(tmp_path_factory):
    """A finished LoRA run of mini/dsprites_loc as `run.execute` leaves it (its tuned file under out/<benchmark>/,
    its record in the store), with random tuned tensors instead of trained ones: the export reads nothing else."""
    from petlbench.run import build_model, resolve, run_name

    base = tmp_path_factory.mktemp("run")
    spec = resolve("mini/dsprites_loc", "lora", {})
    torch.manual_seed(0)
    model = build_model(spec).eval()
    randomize_trainable(model)
    tuned = os.path.join(base, "out", spec.task.benchmark, run_name(spec) + ".safetensors")
    os.makedirs(os.path.dirname(tuned))
    petlbench.save_tuned(model, tuned)
    rec = record("mini/dsprites_loc", "lora", 61.5)
    assert rec["config_hash"] == spec.config_hash
    rec["tuned_file"] = os.path.relpath(tuned, os.path.join(base, "out"))
    path = write(str(base / "store"), rec)
    return {"model": model, "record": rec, "record_path": path, "tuned": tuned, "store": str(base / "store"),
            "out": str(base / "out")}


def test_merged_folder_loads_in_timm_with_the_tuned_outputs(mini_run, tmp_path, capsys):
    import timm

    run, out = mini_run, str(tmp_path / "merged")
    assert main(["export", run["record_path"], "--merged", out, "--store", run["store"], "--out", run["out"]]) == 0
    assert "timm checkpoint" in capsys.readouterr().out
    assert sorted(os.listdir(out)) == ["README.md", "config.json", "model.safetensors"]
    reloaded = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    x = images()
    with torch.no_grad():
        assert _close(reloaded(x), run["model"](x))
    # the plain architecture: timm's own keys, no method tensors
    assert set(load_file(os.path.join(out, "model.safetensors"))) == set(petlbench.merge(run["model"]).state_dict())
    assert not any("lora" in k for k in load_file(os.path.join(out, "model.safetensors")))
    with open(os.path.join(out, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    p = run["record"]["protocol"]
    from petlbench.batches import IMAGENET_MEAN

    assert cfg["architecture"] == p["backbone"] and p["normalize"] == "imagenet"
    assert cfg["pretrained_cfg"]["mean"] == list(IMAGENET_MEAN)  # the run's normalisation, not the weights' config
    assert cfg["pretrained_cfg"]["input_size"] == [3, p["img_size"], p["img_size"]]
    assert cfg["pretrained_cfg"]["crop_mode"] == "squash"
    with open(os.path.join(out, "README.md"), encoding="utf-8") as f:
        card = f.read()
    for fact in (p["backbone"], "LoRA", p["recipe"] or "the task's protocol", "mini/dsprites_loc", "61.50%",
                 run["record"]["config_hash"], "library_name: timm"):
        assert fact in card, fact


def test_a_run_is_found_by_its_tuned_file_record_or_hash(mini_run):
    kw = {"store": mini_run["store"], "out": mini_run["out"]}
    found = [export.find_source(r, **kw) for r in (mini_run["tuned"], mini_run["record_path"],
                                                   mini_run["record"]["config_hash"])]
    assert {os.path.abspath(s.tuned) for s in found} == {os.path.abspath(mini_run["tuned"])}
    assert all(s.record["config_hash"] == mini_run["record"]["config_hash"] for s in found)
    with pytest.raises(export.ExportError, match="no record with config hash 0123456789abcdef"):
        export.find_source("0123456789abcdef", **kw)


@pytest.fixture
def tuned_file(tmp_path):
    """(tuned model, its tuned file, the weights file it was tuned on) of a tiny backbone; no record."""

    def make(method: str, variant: str = "vit_cls", cfg=None):
        torch.manual_seed(0)
        weights = str(tmp_path / f"weights_{variant}.safetensors")
        save_file(plain(variant).state_dict(), weights)
        backbone, kwargs = VARIANTS[variant]
        model = petlbench.create_model(backbone, method=method, num_classes=NUM_CLASSES, pretrained=weights,
                                       method_cfg=cfg, **kwargs).eval()
        randomize_trainable(model)
        path = str(tmp_path / f"{method}_{variant}.safetensors")
        petlbench.save_tuned(model, path)
        return model, path, weights

    return make


def test_unmergeable_method_exports_its_tuned_file_and_a_loader_note_that_works(tuned_file, tmp_path, monkeypatch):
    model, path, weights = tuned_file("vpt")
    out = tmp_path / "vpt"
    e = export.export_merged(export.find_source(path, store=str(tmp_path / "store"), weights=weights), str(out))
    assert e.kind == "tuned" and "not mergeable" in e.reason
    assert sorted(os.listdir(out)) == ["README.md", os.path.basename(path)]
    note = (out / "README.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(.*?)```", note, re.S).group(1)
    assert "petlbench.load_tuned" in code
    monkeypatch.chdir(out)
    scope: dict = {}
    exec(code, scope)  # the note's own instructions
    x = images()
    with torch.no_grad():
        assert torch.equal(scope["model"](x), model(x))


PEFT_CASES = [
    ("lora", "vit_cls", None),  # split q and v: one PEFT LoRA of rank 16 on qkv, B block-diagonal
    ("lora", "vit_reg_ls", {"targets": "k", "rank": 4, "alpha": 2.0}),
    ("lora", "swin", {"fused": True, "targets": "qkv"}),
    ("peft", "vit_cls", {"tuner": "loha", "config": {"r": 4, "target_modules": ["qkv", "fc1"]}}),
]


@pytest.mark.parametrize("method,variant,cfg", PEFT_CASES)
def test_peft_adapter_loads_onto_the_timm_model_with_the_tuned_outputs(tuned_file, tmp_path, method, variant, cfg):
    import timm
    from peft import PeftModel

    model, path, weights = tuned_file(method, variant, cfg)
    out = str(tmp_path / "adapter")
    assert main(["export", path, "--peft", out, "--store", str(tmp_path / "store"), "--weights", weights]) == 0
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(os.listdir(out))
    backbone, kwargs = VARIANTS[variant]
    base = timm.create_model(backbone, num_classes=NUM_CLASSES, pretrained=True,
                             pretrained_cfg_overlay=dict(file=weights), **kwargs)
    loaded = PeftModel.from_pretrained(base, out).eval()
    scope: dict = {}
    exec(re.search(r"```python\n(.*?)```", open(os.path.join(out, "README.md"), encoding="utf-8").read(), re.S)
         .group(1), scope)  # the README's own instructions
    x = images()
    with torch.no_grad():
        assert _close(loaded(x), model(x))
        assert torch.equal(scope["model"](x), loaded(x))
    with open(os.path.join(out, "adapter_config.json"), encoding="utf-8") as f:
        cfg_json = json.load(f)
    assert cfg_json["modules_to_save"] == ["head.fc" if variant == "swin" else "head"]
    if method == "lora":
        c = model.petl.method_cfg
        k = 1 if c["fused"] else len(c["targets"])
        assert (cfg_json["r"], cfg_json["lora_alpha"] / cfg_json["r"]) == (k * c["rank"], c["alpha"] / c["rank"])
        assert cfg_json["fan_in_fan_out"] is False and all(t.endswith("attn.qkv") for t in cfg_json["target_modules"])


def test_peft_export_refuses_a_method_without_a_peft_form(tuned_file, tmp_path):
    _, path, weights = tuned_file("ssf")
    with pytest.raises(export.ExportError, match=r"method 'ssf' has no PEFT form .*lora, peft"):
        export.export_peft(export.find_source(path, store=str(tmp_path)), str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()


def test_merged_export_needs_the_weights_and_a_free_folder(tuned_file, tmp_path):
    _, path, weights = tuned_file("lora")
    with pytest.raises(export.ExportError, match=r"weights it was tuned on are unknown: give them \(--weights"):
        export.export_merged(export.find_source(path, store=str(tmp_path / "store")), str(tmp_path / "a"))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "keep.txt").write_text("x")
    with pytest.raises(export.ExportError, match="exists and is not an empty folder"):
        export.export_merged(export.find_source(path, store=str(tmp_path), weights=weights), str(tmp_path / "b"))
    assert os.listdir(tmp_path / "b") == ["keep.txt"] and not [n for n in os.listdir(tmp_path) if n.startswith(".tmp")]


def test_hub_without_a_token_is_one_line_and_does_nothing(mini_run, tmp_path, monkeypatch, capsys):
    import huggingface_hub
    import timm.models._hub as timm_hub

    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))

    def forbidden(*a, **k):
        raise AssertionError("nothing may be read, built or pushed without a token")

    monkeypatch.setattr(export, "find_source", forbidden)
    monkeypatch.setattr(timm_hub, "HfApi", forbidden)
    monkeypatch.setattr(huggingface_hub, "HfApi", forbidden)
    rc = main(["export", mini_run["record_path"], "--hub", "someone/model", "--merged", str(tmp_path / "m")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "HF_TOKEN" in err and "nothing was pushed" in err
    assert not (tmp_path / "m").exists()
