"""Backbone creation: timm names, and open_clip vision towers as "openclip:<arch>" (e.g. "openclip:ViT-B-16"),
with weights from a hub tag or a local file."""
from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn as nn

from .errors import PETLBenchError, UnknownNameError
from .registry import did_you_mean


OPENCLIP = "openclip:"


def check_backbone(name: str) -> None:
    """UnknownNameError for a name timm (or, for "openclip:<arch>", open_clip) does not know, with the closest."""
    if isinstance(name, str) and name.startswith(OPENCLIP):
        open_clip = _open_clip()
        arch = name[len(OPENCLIP):]
        if arch not in open_clip.list_models():
            raise UnknownNameError(f"unknown open_clip architecture {arch!r}{did_you_mean(arch, open_clip.list_models())}"
                                   "; list them with: python -c \"import open_clip; print(open_clip.list_models())\"")
        return
    import timm

    if not isinstance(name, str) or not timm.is_model(name):
        raise UnknownNameError(
            f"unknown backbone {name!r}{did_you_mean(str(name), timm.list_models())}; "
            f"list them with: python -c \"import timm; print(timm.list_models('vit_*'))\""
        )


def create_backbone(name: str, num_classes: int, pretrained: bool | str = False, **kwargs: Any) -> nn.Module:
    """A timm model `name` with a fresh `num_classes` head.

    `pretrained`: False (random init), True (timm's default tag for `name`, from the hub or its cache), or a
    path to a local checkpoint (.npz as Google released ViT-B_16.npz, .pth, .bin or .safetensors), which timm
    loads with its own key mapping. Extra keyword arguments go to `timm.create_model` (img_size, depth,
    drop_path_rate, class_token, ...).
    """
    if name.startswith(OPENCLIP):
        return create_openclip(name[len(OPENCLIP):], num_classes, pretrained, **kwargs)
    import timm

    check_backbone(name)
    if isinstance(pretrained, str) and name.startswith("videomae_"):  # VideoMAE's own key layout
        from .video import load_videomae

        path = os.path.expanduser(pretrained)
        if not os.path.isfile(path):
            raise PETLBenchError(f"pretrained checkpoint {pretrained!r} does not exist")
        return load_videomae(timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs), path)
    if isinstance(pretrained, str):
        path = os.path.expanduser(pretrained)
        if not os.path.isfile(path):
            raise PETLBenchError(f"pretrained checkpoint {pretrained!r} does not exist")
        kwargs["pretrained_cfg_overlay"] = dict(file=path)
        pretrained = True
    try:
        try:
            return timm.create_model(name, pretrained=bool(pretrained), num_classes=num_classes, **kwargs)
        except TypeError as e:
            if "img_size" not in kwargs or "img_size" not in str(e):
                raise
            # convolutional backbones (ConvNeXt) take any input size and have no img_size argument
            kwargs.pop("img_size")
            return timm.create_model(name, pretrained=bool(pretrained), num_classes=num_classes, **kwargs)
    except TypeError as e:  # an unknown timm kwarg
        raise PETLBenchError(f"backbone {name!r} does not accept {sorted(kwargs)}: {e}") from None


def _open_clip():
    try:
        import open_clip
    except ImportError:
        raise PETLBenchError("open_clip backbones need open_clip_torch: pip install open_clip_torch "
                             "(or pip install -e '.[clip]')") from None
    return open_clip


class CLIPClassifier(nn.Module):
    """An open_clip vision tower with a linear head, shaped like a timm classifier (`forward`, `get_classifier`).

    forward(x) = head(normalize(visual(x))): the image embedding (after CLIP's projection), L2-normalised as in
    CLIP's zero-shot classifier, so a head initialised from text embeddings (`zero_shot_weights`) starts as
    CLIP's zero-shot classifier (logit scale included)."""

    def __init__(self, visual: nn.Module, embed_dim: int, num_classes: int, normalize: bool = True):
        super().__init__()
        self.visual = visual
        self.normalize = normalize
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, x):
        import torch.nn.functional as F

        f = self.visual(x)
        return self.head(F.normalize(f, dim=-1) if self.normalize else f)

    def get_classifier(self) -> nn.Module:
        return self.head


def create_openclip(arch: str, num_classes: int, pretrained: bool | str = False, normalize: bool = True,
                    zero_shot_classnames: list[str] | tuple[str, ...] | None = None,
                    zero_shot_templates: tuple[str, ...] = ("a photo of a {}.",), **model_kwargs: Any) -> nn.Module:
    """`CLIPClassifier` around open_clip's vision tower of `arch`.

    `pretrained`: False (random), an open_clip tag ("openai", "laion2b_s34b_b88k", ...; from open_clip's cache
    or hub) or a local checkpoint file. `zero_shot_classnames`: initialise the head from the text embeddings of
    the class names (averaged over `zero_shot_templates`, open_clip's tokenizer) times CLIP's logit scale; the
    text tower is dropped afterwards. Other keyword arguments go to `open_clip.create_model` (e.g. a smaller
    `vision_cfg` for tests)."""
    open_clip = _open_clip()
    check_backbone(OPENCLIP + arch)
    if pretrained is True:
        raise PETLBenchError(f"openclip:{arch}: name the weights, e.g. weights=openai (open_clip tags: "
                             f"{', '.join(open_clip.list_pretrained_tags_by_model(arch)) or 'none'}) or a file")
    if "img_size" in model_kwargs:
        model_kwargs["force_image_size"] = model_kwargs.pop("img_size")
    if model_kwargs.pop("drop_path_rate", 0.0):
        raise PETLBenchError(f"openclip:{arch}: open_clip's vision transformer has no drop path; set drop_path=0")
    tag = pretrained or None
    if isinstance(tag, str) and os.path.sep not in tag and tag not in open_clip.list_pretrained_tags_by_model(arch):
        raise UnknownNameError(f"openclip:{arch}: unknown pretrained tag {tag!r}; known: "
                               f"{', '.join(open_clip.list_pretrained_tags_by_model(arch))}")
    if isinstance(tag, str) and os.path.sep in tag and not os.path.isfile(os.path.expanduser(tag)):
        raise PETLBenchError(f"pretrained checkpoint {tag!r} does not exist")
    try:
        clip = open_clip.create_model(arch, pretrained=tag, **model_kwargs)
    except RuntimeError as e:  # open_clip's download or load failure
        raise PETLBenchError(f"openclip:{arch} weights {tag!r} could not be loaded: {e}") from None
    embed_dim = clip.visual.output_dim
    model = CLIPClassifier(clip.visual, embed_dim, num_classes, normalize)
    if zero_shot_classnames is not None:
        if len(zero_shot_classnames) != num_classes:
            raise PETLBenchError(f"zero-shot head: {len(zero_shot_classnames)} class names for {num_classes} "
                                 "classes")
        with torch.no_grad():
            model.head.weight.copy_(zero_shot_weights(clip, open_clip.get_tokenizer(arch), zero_shot_classnames,
                                                      zero_shot_templates))
            model.head.bias.zero_()
    return model


def zero_shot_weights(clip: nn.Module, tokenizer, classnames, templates) -> torch.Tensor:
    """(classes, embed_dim): per class, the normalised mean of the normalised text embeddings of its
    templates, times CLIP's logit scale: logits = head(normalize(image embedding)) are CLIP's zero-shot logits."""
    import torch.nn.functional as F

    rows = []
    with torch.no_grad():
        for name in classnames:
            emb = F.normalize(clip.encode_text(tokenizer([t.format(name) for t in templates])), dim=-1)
            rows.append(F.normalize(emb.mean(0), dim=-1))
        return torch.stack(rows) * clip.logit_scale.exp()


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters of the classification head (timm's `get_classifier()`)."""
    get = getattr(model, "get_classifier", None)
    head = get() if get is not None else None
    return list(head.parameters()) if isinstance(head, nn.Module) else []


def _register_mini() -> None:
    """`petlbench_vit_mini`: a 32 px ViT (patch 8, width 96, depth 6, 3 heads; 0.67M parameters) for the offline
    mini-benchmark, built by timm's own ViT builder so every method and loader treats it as any timm ViT."""
    from timm.models import register_model
    from timm.models._builder import build_model_with_cfg
    from timm.models._registry import generate_default_cfgs
    from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

    global default_cfgs  # timm's register_model reads the module's `default_cfgs`
    default_cfgs = generate_default_cfgs({"petlbench_vit_mini": {
        "url": "", "num_classes": 0, "input_size": (3, 32, 32), "interpolation": "bicubic", "crop_pct": 1.0,
        "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "first_conv": "patch_embed.proj",
        "classifier": "head"}})

    @register_model
    def petlbench_vit_mini(pretrained: bool = False, **kwargs):
        args = dict(img_size=32, patch_size=8, embed_dim=96, depth=6, num_heads=3, mlp_ratio=4.0)
        args.update(kwargs)
        return build_model_with_cfg(VisionTransformer, "petlbench_vit_mini", pretrained,
                                    pretrained_filter_fn=checkpoint_filter_fn, **args)


_register_mini()
from . import video as _video  # noqa: E402  (importing it registers videomae_vit_base_patch16_224 with timm)

__all__ = ["CLIPClassifier", "check_backbone", "create_backbone", "create_openclip", "head_parameters", "_video"]
