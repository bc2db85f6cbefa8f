"""Google's JAX/Flax .npz checkpoints (ViT-B_16.npz as RepAdapter, VPT, NOAH and FacT used it; AugReg) load
through timm's own converter, tensor for tensor, with a fresh head; bad files fail in one line naming the file;
cached hub weights load with no network request."""
from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import timm
import torch

import petlbench
from petlbench.backbones import create_backbone
from petlbench.errors import PETLBenchError
from petlbench.weights import resolve_weights

from tiny import TINY

BACKBONE = "vit_tiny_patch16_224"
NPZ_CLASSES = 21843  # Google's IN-21k head


def to_google_npz(model: torch.nn.Module, path, pre_logits: bool = True) -> None:
    """Write a timm ViT in the layout of Google's original ViT release (vit_jax: ViT-B_16.npz, AugReg), the exact
    inverse of timm's vision_transformer._load_weights (non-big_vision branch; its _n2p transposes undone)."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    heads = model.blocks[0].attn.num_heads
    d = model.embed_dim
    w = {
        "embedding/kernel": sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0),  # OIHW -> HWIO
        "embedding/bias": sd["patch_embed.proj.bias"],
        "cls": sd["cls_token"],  # (1, 1, D)
        "Transformer/posembed_input/pos_embedding": sd["pos_embed"],  # (1, N + 1, D)
        "Transformer/encoder_norm/scale": sd["norm.weight"],
        "Transformer/encoder_norm/bias": sd["norm.bias"],
        "head/kernel": sd["head.weight"].T,  # (D, classes)
        "head/bias": sd["head.bias"],
    }
    if pre_logits:  # the representation layer of the original IN-21k files; timm ignores it
        w["pre_logits/kernel"] = np.random.randn(d, d).astype(np.float32)
        w["pre_logits/bias"] = np.zeros(d, np.float32)
    for i in range(len(model.blocks)):
        b, p = f"blocks.{i}.", f"Transformer/encoderblock_{i}/"
        mha = p + "MultiHeadDotProductAttention_1/"
        qkv_w, qkv_b = sd[b + "attn.qkv.weight"], sd[b + "attn.qkv.bias"]
        for j, n in enumerate(("query", "key", "value")):
            w[f"{mha}{n}/kernel"] = qkv_w[j * d:(j + 1) * d].T.reshape(d, heads, d // heads)  # (D, heads, hd)
            w[f"{mha}{n}/bias"] = qkv_b[j * d:(j + 1) * d].reshape(heads, d // heads)
        w[mha + "out/kernel"] = sd[b + "attn.proj.weight"].reshape(d, heads, d // heads).transpose(1, 2, 0)
        w[mha + "out/bias"] = sd[b + "attn.proj.bias"]
        w[p + "LayerNorm_0/scale"], w[p + "LayerNorm_0/bias"] = sd[b + "norm1.weight"], sd[b + "norm1.bias"]
        w[p + "LayerNorm_2/scale"], w[p + "LayerNorm_2/bias"] = sd[b + "norm2.weight"], sd[b + "norm2.bias"]
        for r in range(2):
            w[f"{p}MlpBlock_3/Dense_{r}/kernel"] = sd[f"{b}mlp.fc{r + 1}.weight"].T  # (in, out)
            w[f"{p}MlpBlock_3/Dense_{r}/bias"] = sd[f"{b}mlp.fc{r + 1}.bias"]
    np.savez(path, **w)


@pytest.fixture(scope="module")
def google_npz(tmp_path_factory):
    """(path, the random timm ViT it was written from): a tiny ViT-B_16.npz look-alike with a 21843-class head."""
    torch.manual_seed(123)
    src = timm.create_model(BACKBONE, pretrained=False, num_classes=NPZ_CLASSES, **TINY)
    with torch.no_grad():  # random non-zero everything (timm zero-inits biases): a swapped tensor shows
        for p in src.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    path = tmp_path_factory.mktemp("npz") / "ViT-B_16.npz"
    to_google_npz(src, path)
    return str(path), src


def backbone_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The backbone tensors under timm's plain names (a method's wrapper holds the layer as `.base`), no head."""
    out = {k.replace(".base.", "."): v for k, v in model.state_dict().items()}
    return {k: v for k, v in out.items() if not k.startswith("head.")}


@pytest.mark.parametrize("method", ["full", "repadapter"])
def test_npz_loads_like_timms_own_loader_and_round_trips(google_npz, method):
    path, src = google_npz
    torch.manual_seed(0)
    model = petlbench.create_model(BACKBONE, method, num_classes=5, pretrained=path, **TINY)
    torch.manual_seed(0)
    fresh = timm.create_model(BACKBONE, pretrained=False, num_classes=5, **TINY)
    ref = timm.create_model(BACKBONE, pretrained=False, num_classes=5, **TINY)
    timm.models.vision_transformer._load_weights(ref, path)  # timm's own converter, called directly

    got, want, orig = backbone_state(model), backbone_state(ref), backbone_state(src)
    assert set(want) <= set(got) and set(want) == set(orig)
    for k in want:
        assert torch.equal(got[k], want[k]), k
        assert torch.equal(got[k], orig[k]), k  # the inverse mapping in to_google_npz is exact
    # (b) the head: 5 classes against the file's 21843, so the model's own fresh init, untouched by the file
    head = model.get_classifier()
    assert head.weight.shape == (5, TINY["embed_dim"])
    assert torch.equal(head.weight, fresh.head.weight) and torch.equal(head.bias, fresh.head.bias)
    assert model.pretrained_cfg["file"] == path


def test_npz_through_resolve_weights(google_npz, tmp_path):
    path, src = google_npz
    link = tmp_path / "x.npz"
    link.write_bytes(open(path, "rb").read())
    name, pretrained = resolve_weights(BACKBONE, str(link))
    assert (name, pretrained) == (BACKBONE, str(link))
    model = create_backbone(name, 7, pretrained, **TINY)
    got, orig = backbone_state(model), backbone_state(src)
    assert all(torch.equal(got[k], orig[k]) for k in orig)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)


def test_native_files_still_load_and_a_registry_custom_load_does_not_misroute_them(tmp_path):
    """A .safetensors / .pth under a tag whose registry cfg says custom_load=True (its .npz URL) still goes to
    the state-dict loader (timm < 1.0.31 kept custom_load under a `file` overlay)."""
    from safetensors.torch import save_file

    torch.manual_seed(1)
    src = timm.create_model(BACKBONE, pretrained=False, num_classes=9, **TINY)
    sd = {k: v.contiguous() for k, v in src.state_dict().items()}
    save_file(sd, str(tmp_path / "w.safetensors"))
    torch.save(sd, tmp_path / "w.pth")
    tag = BACKBONE + ".augreg_in21k"
    assert timm.models.get_pretrained_cfg(tag).custom_load
    for f in ("w.safetensors", "w.pth"):
        for name in (BACKBONE, tag):
            model = create_backbone(name, 9, str(tmp_path / f), **TINY)
            assert all(torch.equal(model.state_dict()[k], v) for k, v in sd.items() if not k.startswith("head.")), \
                (f, name)


def _one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


def test_missing_npz_names_the_path(tmp_path):
    missing = str(tmp_path / "ViT-B_16.npz")
    with pytest.raises(PETLBenchError) as e:
        petlbench.create_model(BACKBONE, "repadapter", num_classes=5, pretrained=missing, **TINY)
    assert missing in _one_line(e)
    with pytest.raises(PETLBenchError) as e:
        resolve_weights(BACKBONE, missing)
    assert missing in _one_line(e)


@pytest.mark.parametrize("content", ["random", "truncated", "npy"])
def test_corrupt_npz_is_one_line_naming_the_file(google_npz, tmp_path, content):
    bad = tmp_path / "ViT-B_16.npz"
    if content == "random":
        bad.write_bytes(np.random.default_rng(0).bytes(4096))
    elif content == "truncated":  # an interrupted download: the zip directory at the end is missing
        bad.write_bytes(open(google_npz[0], "rb").read()[:100_000])
    else:
        with open(bad, "wb") as f:
            np.save(f, np.zeros(3))
    def through_resolve():  # resolve_weights only checks the file is there; building reads it
        name, pretrained = resolve_weights(BACKBONE, str(bad))
        return create_backbone(name, 5, pretrained, **TINY)

    for build in (through_resolve,
                  lambda: petlbench.create_model(BACKBONE, "full", num_classes=5, pretrained=str(bad), **TINY)):
        with pytest.raises(PETLBenchError) as e:
            build()
        assert str(bad) in _one_line(e)


def test_npz_that_does_not_fit_is_one_line(google_npz, tmp_path):
    path, _ = google_npz
    other = tmp_path / "other.npz"
    np.savez(other, **{"params/foo": np.zeros(3)})  # not a ViT layout
    cases = [(path, dict(TINY, depth=3), "encoderblock_2"),  # more blocks than the file has
             (path, dict(TINY, embed_dim=32), "size"),  # another width
             (str(other), TINY, "layout|embedding/kernel")]  # timm >= 1.0.31 / older
    for f, kwargs, where in cases:
        with pytest.raises(PETLBenchError, match=where) as e:
            create_backbone(BACKBONE, 5, f, **kwargs)
        assert str(f) in _one_line(e)
    with pytest.raises(PETLBenchError, match="cannot read .*load_pretrained") as e:  # no .npz converter in timm
        create_backbone("convnext_tiny", 5, path, dims=(16, 32, 32, 32), depths=(1, 1, 1, 1))
    assert path in _one_line(e)


# --- offline hub: cached weights load with no request -----------------------------------------------------------
TAG = BACKBONE + ".augreg_in21k"  # hub-hosted (timm/vit_tiny_patch16_224.augreg_in21k), cfg custom_load=True


def _fake_hub_file(cache, repo: str, filename: str, write) -> None:
    """huggingface_hub's cache layout: models--org--name/{refs/main, snapshots/<commit>/<file>}."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    root = cache / ("models--" + repo.replace("/", "--"))
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    (root / "snapshots" / commit).mkdir(parents=True, exist_ok=True)
    write(str(root / "snapshots" / commit / filename))


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """An empty HF cache under tmp_path, HF_HUB_OFFLINE unset, and every socket connection or DNS lookup
    recorded and refused. Yields (cache dir, attempts)."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[:2])
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", lambda self, *a: refuse(*a))
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    yield cache, attempts


def test_cached_hub_weights_load_with_no_network_request(no_network):
    from huggingface_hub import constants
    from safetensors.torch import save_file

    cache, attempts = no_network
    torch.manual_seed(2)
    src = timm.create_model(BACKBONE, pretrained=False, num_classes=NPZ_CLASSES, **TINY)
    sd = {k: v.contiguous() for k, v in src.state_dict().items()}
    _fake_hub_file(cache, "timm/" + TAG, "model.safetensors", lambda f: save_file(sd, f))

    assert resolve_weights(BACKBONE, TAG) == (TAG, True)
    model = petlbench.create_model(TAG, "repadapter", num_classes=5, pretrained=True, **TINY)
    assert attempts == []
    got = backbone_state(model)
    assert all(torch.equal(got[k], v) for k, v in sd.items() if not k.startswith("head."))
    assert model.get_classifier().weight.shape[0] == 5  # 5 != the tag's 21843: a fresh head
    # nothing global was switched on for later loads
    assert constants.HF_HUB_OFFLINE is False and "HF_HUB_OFFLINE" not in os.environ


def test_uncached_hub_tag_still_fails_at_once(no_network):
    with pytest.raises(PETLBenchError, match="not in the local cache"):
        resolve_weights(BACKBONE, TAG)


@pytest.mark.clip
@pytest.mark.filterwarnings("error:QuickGELU mismatch")
def test_cached_openclip_tag_loads_offline_and_restores(no_network):
    open_clip = pytest.importorskip("open_clip")
    from huggingface_hub import constants
    from safetensors.torch import save_file

    from tiny import OPENCLIP_TINY

    cache, attempts = no_network
    cfg = open_clip.get_pretrained_cfg("ViT-B-16", "openai")
    repo = cfg["hf_hub"].rstrip("/")
    torch.manual_seed(3)
    clip = open_clip.create_model("ViT-B-16", pretrained=None, **OPENCLIP_TINY)
    sd = {k: v.contiguous() for k, v in clip.state_dict().items()}
    _fake_hub_file(cache, repo, "open_clip_model.safetensors", lambda f: save_file(sd, f))
    model = petlbench.create_model("openclip:ViT-B-16", "linear", num_classes=3, pretrained="openai",
                                   **OPENCLIP_TINY)
    assert attempts == []
    assert torch.equal(model.visual.conv1.weight, sd["visual.conv1.weight"])
    # the tag's QuickGELU (OpenAI's activation), though the "ViT-B-16" config says GELU
    assert type(model.visual.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
    assert constants.HF_HUB_OFFLINE is False and "HF_HUB_OFFLINE" not in os.environ


def test_npz_from_the_command_line_trains_as_the_same_weights_in_safetensors(tmp_path, capsys):
    """`petlbench run ... weights=FILE.npz`: the shipped mini backbone written as a Google .npz gives the same run,
    to the last digit, as the same weights from their .safetensors file (the route RepAdapter / NOAH users take
    with ViT-B_16.npz)."""
    import json

    from petlbench.cli import main
    from petlbench.tasks.mini import generate

    src = petlbench.create_model("petlbench_vit_mini", "full", num_classes=10, pretrained=resolve_weights(
        "petlbench_vit_mini", "petlbench:vit_mini_procedural")[1])
    npz = tmp_path / "mini.npz"
    to_google_npz(src, npz, pre_logits=False)
    root = generate(str(tmp_path / "data"))
    values = []
    for weights in (str(npz), "petlbench:vit_mini_procedural"):
        store = tmp_path / f"store-{len(values)}"
        assert main(["run", "--task", "mini/digits", "--method", "linear", "--data-root", root, "--store", str(store),
                     "--out", str(tmp_path / "out"), "--quiet", f"weights={weights}", "epochs=1", "warmup_epochs=0",
                     "eval_every=1", "device=cpu", "num_workers=0"]) == 0
        (rec,) = [json.load(open(os.path.join(d, f))) for d, _, fs in os.walk(store) for f in fs]
        values.append((rec["value"], rec["final_loss"]))
    assert values[0] == values[1]
    assert "mini/digits linear: top-1" in capsys.readouterr().out


class _NotATensor:
    pass


def test_a_pickle_torch_refuses_is_one_line_naming_the_file(tmp_path):
    """torch.load(weights_only=True) refuses a checkpoint holding other objects: one line naming the file and the
    fix, not torch's 50-line UnpicklingError chain."""
    path = tmp_path / "objects.pth"
    torch.save({"model": _NotATensor()}, path)
    with pytest.raises(PETLBenchError) as e:
        petlbench.create_model(BACKBONE, "linear", num_classes=3, pretrained=str(path), **TINY)
    assert str(path) in str(e.value) and "\n" not in str(e.value) and "state_dict" in str(e.value)
