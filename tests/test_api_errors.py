"""Bad input gets one clear error naming the bad value and the accepted ones."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import petlbench
from petlbench.config import parse_overrides

from tiny import BACKBONE, VIT_VARIANTS, build, has_open_clip


def test_list_methods_contract():
    assert {"adapter", "bitfit", "full", "linear", "lora", "repadapter", "ssf", "vpt"} <= set(petlbench.list_methods())
    assert petlbench.list_methods() == sorted(petlbench.list_methods())


def test_unknown_method_suggests():
    with pytest.raises(petlbench.UnknownNameError, match=r"unknown method 'repadaptr'.*did you mean 'repadapter'"):
        petlbench.create_model(BACKBONE, method="repadaptr")


def test_unknown_backbone_suggests():
    with pytest.raises(petlbench.UnknownNameError,
                       match=r"unknown backbone 'vit_base_patch16_22'.*vit_base_patch16_224"):
        petlbench.create_model("vit_base_patch16_22", method="lora")


@pytest.mark.parametrize("cfg,pattern", [
    ({"rnk": 4}, r"unknown key 'rnk'; accepted keys: rank, alpha, targets, dropout, fused, init; did you mean 'rank'"),
    ({"rank": "8"}, r"rank='8' has the wrong type \(str\); expected int"),
    ({"rank": True}, r"rank=True has the wrong type"),
    ({"rank": 0}, r"rank must be positive"),
    ({"targets": "qx"}, r"targets must be letters of 'qkv'"),
])
def test_bad_lora_config(cfg, pattern):
    with pytest.raises(petlbench.ConfigError, match=pattern):
        petlbench.create_model(BACKBONE, method="lora", method_cfg=cfg)


def test_literal_and_divisibility_checks():
    with pytest.raises(petlbench.ConfigError, match=r"where='mlpp' is not one of 'both', 'attn', 'mlp'"):
        petlbench.get_method("repadapter", {"where": "mlpp"})
    with pytest.raises(petlbench.ConfigError, match=r"dim \(8\) must be divisible by groups \(3\)"):
        petlbench.get_method("repadapter", {"groups": 3})
    with pytest.raises(petlbench.ConfigError, match=r"accepted keys: none"):
        petlbench.get_method("bitfit", {"lr": 1})
    assert petlbench.get_method("repadapter", {"scale": 5}).cfg.scale == 5.0  # int accepted for float


def test_family_mismatch_is_clear():
    with pytest.raises(petlbench.ConfigError, match=r"belongs to no known family; known: vit"):
        petlbench.create_model("mobilenetv3_small_050", method="lora", num_classes=3)
    with pytest.raises(petlbench.ConfigError, match=r"lora.*resnet"):  # a known family without the method's sites
        petlbench.create_model("resnet18", method="lora", num_classes=3)


def test_method_and_model_mistakes_are_config_errors():
    with pytest.raises(petlbench.ConfigError, match=r"input width 64 is not divisible by groups=3"):
        build("repadapter", method_cfg={"dim": 6, "groups": 3})  # a valid config, but not for a width-64 model
    model = build("lora")
    with pytest.raises(petlbench.ConfigError, match=r"already has method 'lora' applied"):
        petlbench.apply_method(model, petlbench.get_method("ssf"), backbone=BACKBONE, num_classes=5)
    with pytest.raises(petlbench.ConfigError, match=r"not built by petlbench.create_model"):
        petlbench.merge(torch.nn.Linear(2, 2))


@pytest.mark.skipif(not has_open_clip(), reason="open_clip_torch not installed")
def test_lora_dropout_on_multihead_attention_is_a_config_error():
    with pytest.raises(petlbench.ConfigError, match=r"lora: dropout must be 0 on nn.MultiheadAttention"):
        build("lora", "openclip", {"dropout": 0.1})


def test_repadapter_where_places():
    for where, kinds in [("attn", {"qkv"}), ("mlp", {"fc1"}), ("both", {"qkv", "fc1"})]:
        model = build("repadapter", method_cfg={"where": where})
        wrapped = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, petlbench.Wrapper)}
        assert wrapped == kinds


def test_overrides_parse():
    assert parse_overrides(["dim=8", "scale=0.5", "deep=false", "where=attn", "x=null"]) == {
        "dim": 8, "scale": 0.5, "deep": False, "where": "attn", "x": None}
    with pytest.raises(petlbench.ConfigError, match="'dim' is not of the form key=value"):
        parse_overrides(["dim"])


def test_checkpoint_refuses_other_model(tmp_path):
    lora = build("lora")
    path = str(tmp_path / "lora.safetensors")
    petlbench.save_tuned(lora, path)
    with pytest.raises(petlbench.CheckpointError, match=r"lora.safetensors: made for method 'lora'"):
        petlbench.load_tuned(build("repadapter"), path)
    with pytest.raises(petlbench.CheckpointError, match=r"made for backbone_kwargs"):
        petlbench.load_tuned(build("lora", "vit_gap"), path)
    with pytest.raises(petlbench.CheckpointError, match=r"made for method_cfg"):
        petlbench.load_tuned(build("lora", method_cfg={"rank": 4}), path)
    other = petlbench.create_model("vit_small_patch16_224", method="lora", num_classes=5, **VIT_VARIANTS["vit_cls"])
    with pytest.raises(petlbench.CheckpointError, match=r"made for backbone 'vit_tiny_patch16_224'"):
        petlbench.load_tuned(other, path)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(petlbench.CheckpointError, match="junk.safetensors: not a readable safetensors file"):
        petlbench.load_tuned(lora, str(junk))
    with pytest.raises(petlbench.CheckpointError, match="no such file"):
        petlbench.load_tuned(lora, str(tmp_path / "missing.safetensors"))


def test_checkpoint_has_no_pickle(tmp_path):
    path = tmp_path / "t.safetensors"
    petlbench.save_tuned(build("repadapter"), str(path))
    head = path.read_bytes()[:8]
    header_len = int.from_bytes(head, "little")
    assert path.read_bytes()[8:9] == b"{" and header_len < path.stat().st_size  # safetensors JSON header
    assert b"\x80\x04" not in path.read_bytes()[:2]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "petlbench.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args,message", [
    (["bench", "--methods", "lorra"], "unknown method 'lorra'"),
    (["bench", "--backbone", "vit_bas"], "unknown backbone 'vit_bas'"),
    (["bench", "--methods", "lora", "--cfg", "lora.rnk=4"], "unknown key 'rnk'"),
    (["bench", "--methods", "lora", "--cfg", "vpt.tokens=4"], "method 'vpt' is not in this run"),
    (["bench", "--methods", "lora", "--cfg", "rank=4"], "expected METHOD.KEY=VALUE"),
    (["bench", "--device", "cuda:7", "--methods", "lora"], "--device cuda:7"),
])
def test_cli_user_errors_are_one_line(args, message):
    if "cuda:7" in args:
        import torch

        if torch.cuda.is_available():
            pytest.skip("a CUDA device exists here")
    r = _cli(*args)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("petlbench: error: ") and message in lines[0], r.stderr


def test_overrides_may_follow_options_and_unknown_options_still_fail(capsys):
    from petlbench.cli import main

    # argparse alone takes one run of positionals: `weight_decay=0.3` after `--dry-run` was "unrecognized"
    assert main(["run", "--task", "mini/digits", "--method", "bitfit", "lr=0.1", "--dry-run", "weight_decay=0.3"]) == 0
    rows = {ln.split()[0]: ln.split() for ln in capsys.readouterr().out.splitlines() if ln.strip()}
    assert rows["lr"][1:] == ["0.1", "override"] and rows["weight_decay"][1:] == ["0.3", "override"]
    with pytest.raises(SystemExit) as e:
        main(["run", "--task", "mini/digits", "--method", "bitfit", "lr=0.1", "--dry-run", "--bogus"])
    assert e.value.code == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err
