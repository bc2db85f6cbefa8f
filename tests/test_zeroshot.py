"""Zero-shot CLIP (methods/zeroshot.py): a run that trains nothing, its test top-1 equal to CLIP's zero-shot
prediction computed directly with open_clip, its prompt template sets, and its record. A tiny random open_clip
ViT (tests/tiny.py OPENCLIP_TINY) on a mini task with class names."""
from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

import petlbench.backbones as backbones
from petlbench.errors import ConfigError
from petlbench.run import build_model, execute, resolve
from petlbench.store import ResultStore
from petlbench.task import TASKS
from petlbench.tasks.mini import generate

from tiny import OPENCLIP_TINY, has_open_clip

pytestmark = [pytest.mark.clip, pytest.mark.skipif(not has_open_clip(), reason="needs open_clip_torch")]
RUN = {"backbone": "openclip:ViT-B-16", "weights": "none", "drop_path": 0.0, "device": "cpu", "num_workers": 0}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return generate(str(tmp_path_factory.mktemp("mini")))


@pytest.fixture(autouse=True)
def tiny_clip(monkeypatch):
    """Every open_clip backbone built in these tests is the tiny one."""
    monkeypatch.setattr(backbones, "create_openclip", functools.partial(backbones.create_openclip, **OPENCLIP_TINY))


def test_zero_shot_run_is_clips_prediction_and_trains_nothing(root, tmp_path):
    import open_clip

    from petlbench.decode import decode_all

    spec = resolve("mini/digits", "zeroshot", RUN)
    assert spec.protocol.head_init == "zeroshot" and spec.sources["head_init"] == "method zeroshot"
    store = ResultStore(str(tmp_path / "store"))
    rec = execute(spec, root, store, str(tmp_path / "runs"))
    assert rec["status"] == "ok" and rec["history"] == [] and rec["params"]["trainable"] == 0
    assert rec["metrics"]["split"] == "test" and set(rec["data"]["splits"]) == {"test"}
    # CLIP's zero-shot prediction, directly: the same random weights (the run seeds before building), the same
    # decoded test images, CLIP's mean / std, "a photo of a {}." per class name
    torch.manual_seed(spec.protocol.seed)
    clip = open_clip.create_model("ViT-B-16", pretrained=None, **OPENCLIP_TINY).eval()
    task = TASKS.get("mini/digits")
    data = decode_all(task.samples(root, "test"), 32, "bicubic")
    mean = torch.tensor(backbones.OPENAI_CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(backbones.OPENAI_CLIP_STD).view(1, 3, 1, 1)
    x = (data.images.float() / 255 - mean) / std
    tok = open_clip.get_tokenizer("ViT-B-16")
    with torch.no_grad():
        text = F.normalize(clip.encode_text(tok([f"a photo of a {n}." for n in task.classnames])), dim=-1)
        pred = (F.normalize(clip.encode_image(x), dim=-1) @ text.t()).argmax(1)
    want = 100.0 * (pred == data.labels).float().mean().item()
    assert rec["value"] == pytest.approx(want, abs=1e-6)
    assert execute(spec, root, store, str(tmp_path / "runs")) == rec  # from the store, not evaluated again


def test_template_sets_of_the_task(root, monkeypatch):
    import open_clip

    task = TASKS.get("mini/digits")
    templates = ("a photo of a {}.", "a blurry drawing of the {}.")
    monkeypatch.setattr(task, "templates", {"two": templates})
    spec = resolve("mini/digits", "zeroshot", {**RUN, "head_templates": "two"})
    torch.manual_seed(spec.protocol.seed)
    clip = open_clip.create_model("ViT-B-16", pretrained=None, **OPENCLIP_TINY).eval()
    torch.manual_seed(spec.protocol.seed)
    model = build_model(spec, root)
    want = backbones.zero_shot_weights(clip, open_clip.get_tokenizer("ViT-B-16"), task.classnames, templates)
    assert torch.allclose(model.head.weight, want, atol=1e-5)
    single = backbones.zero_shot_weights(clip, open_clip.get_tokenizer("ViT-B-16"), task.classnames,
                                         templates[:1])
    assert not torch.allclose(want, single, atol=1e-3)  # the ensemble is not the first template alone
    with pytest.raises(ConfigError, match="head_templates='three': task 'mini/digits' has the template sets two"):
        build_model(resolve("mini/digits", "zeroshot", {**RUN, "head_templates": "three"}), root)


def test_class_names_from_the_data(root, monkeypatch):
    """A task whose class names come with its data (a split file names them) gives them through classnames_fn."""
    task = TASKS.get("mini/clevr_count")
    assert task.classnames == ()
    with pytest.raises(ConfigError, match="has no class names"):
        build_model(resolve("mini/clevr_count", "zeroshot", RUN), root)
    seen = []

    def from_data(t, data_root):
        seen.append(data_root)
        return tuple(f"{k} objects" for k in range(1, 7))

    monkeypatch.setattr(task, "classnames_fn", from_data)
    model = build_model(resolve("mini/clevr_count", "zeroshot", RUN), root)
    assert seen == [root] and model.head.weight.shape[0] == 6


def test_zero_shot_is_for_clip_backbones_only(root):
    with pytest.raises(ConfigError, match="head_init=zeroshot needs an open_clip backbone"):
        build_model(resolve("mini/digits", "zeroshot", {"device": "cpu"}), root)


def test_zero_shot_on_a_coop_task_uses_the_datasets_prompt(tmp_path):
    """coop/eurosat in CoOp's layout: the recipe's zero-shot row uses CoOp's EuroSAT prompt (trainers/zsclip.py:
    42-43), class names as CoOp writes them ('_' -> ' '), and the run evaluates CoOp's test split once."""
    import open_clip
    from PIL import Image
    from test_coop_data import write_json_dataset

    src = str(tmp_path / "_image.jpg")
    Image.new("RGB", (8, 8), (120, 40, 90)).save(src)
    write_json_dataset(str(tmp_path), "eurosat", src)
    spec = resolve("coop/eurosat", "zeroshot", {**RUN, "img_size": 32})
    task = spec.task
    assert spec.protocol.head_templates == "coop" and task.templates["coop"] == ("a centered satellite photo of {}.",)
    torch.manual_seed(spec.protocol.seed)
    clip = open_clip.create_model("ViT-B-16", pretrained=None, **OPENCLIP_TINY).eval()
    torch.manual_seed(spec.protocol.seed)
    model = build_model(spec, str(tmp_path))
    names = task.class_names(str(tmp_path))
    assert "Annual Crop Land" in names and all("_" not in n for n in names)
    want = backbones.zero_shot_weights(clip, open_clip.get_tokenizer("ViT-B-16"), names,
                                       ("a centered satellite photo of {}.",))
    assert torch.allclose(model.head.weight, want, atol=1e-5)
    rec = execute(spec, str(tmp_path), ResultStore(str(tmp_path / "store")), str(tmp_path / "runs"))
    assert rec["status"] == "ok" and set(rec["data"]["splits"]) == {"test"} and rec["protocol"]["recipe"] == "coop"
