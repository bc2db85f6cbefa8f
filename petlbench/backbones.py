"""Backbone creation: timm names (petlbench's own, in petlbench.models, registered on import), and open_clip vision
towers as "openclip:<arch>" (e.g. "openclip:ViT-B-16"), with weights from a hub tag or a local file."""
from __future__ import annotations

import contextlib
import os
import pickle
import zipfile
import zlib
from typing import Any

import torch
import torch.nn as nn

from . import models  # noqa: F401  (registers petlbench's own backbones with timm: petlbench_vit_mini, videomae_*)
from .errors import PETLBenchError, UnknownNameError
from .registry import did_you_mean
from .weights import cached_hub_file, cached_timm_weights, check_npz, first_line, hub_offline, is_npz

OPENCLIP = "openclip:"
# CLIP's training statistics (open_clip's OPENAI_DATASET_MEAN/STD, its default for every tag without its own)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def check_backbone(name: str) -> None:
    """UnknownNameError for a name timm (or, for "openclip:<arch>", open_clip) does not know, with the closest."""
    if isinstance(name, str) and name.startswith(OPENCLIP):
        open_clip = _open_clip()
        arch = name[len(OPENCLIP):]
        if arch not in open_clip.list_models():
            raise UnknownNameError(f"unknown open_clip architecture {arch!r}"
                                   f"{did_you_mean(arch, open_clip.list_models())}"
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

    `pretrained`: False (random init), True (timm's default tag for `name`, from the local Hugging Face cache
    when it is there, with no request to the hub, otherwise downloaded), or a path to a local checkpoint: .pth,
    .bin or .safetensors (timm's key mapping), or a JAX/Flax .npz as Google released ViT-B_16.npz and the AugReg
    ViTs (timm's `load_pretrained` of the model: ViT, ResNetV2/BiT, MLP-Mixer). The checkpoint's head is kept
    only when it has `num_classes` outputs (timm's rule); otherwise the head is the model's fresh one. Extra
    keyword arguments go to `timm.create_model` (img_size, depth, drop_path_rate, class_token, ...).
    """
    if name.startswith(OPENCLIP):
        return create_openclip(name[len(OPENCLIP):], num_classes, pretrained, **kwargs)
    import timm

    check_backbone(name)
    if isinstance(pretrained, str):
        path = os.path.expanduser(pretrained)
        if not os.path.isfile(path):
            raise PETLBenchError(f"pretrained checkpoint {pretrained!r} does not exist")
        if name.startswith("videomae_"):  # VideoMAE's own key layout
            from .models.videomae import load_videomae

            return load_videomae(timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs), path)
        return _create_from_file(name, num_classes, path, kwargs)
    if pretrained is True and "pretrained_cfg_overlay" not in kwargs:
        cached = cached_timm_weights(name)
        if cached is not None:
            # huggingface_hub reads HF_HUB_OFFLINE at import only, so timm's hub path would still ask the hub
            # (and retry ~30 s offline) for a file that is cached: hand timm the cached file instead. The hub copy
            # is a native state dict, hence custom_load=False.
            kwargs["pretrained_cfg_overlay"] = dict(file=cached, custom_load=False)
    return _timm_create(name, num_classes, bool(pretrained), kwargs)


def _create_from_file(name: str, num_classes: int, path: str, kwargs: dict[str, Any]) -> nn.Module:
    """`create_backbone` with the weights of the existing local checkpoint `path`: a JAX/Flax .npz, or a .pth /
    .bin / .safetensors file; PETLBenchError naming the file when it does not load into `name`."""
    npz = None
    if is_npz(path):
        check_npz(path)
        npz = path
    # timm's builder (load_pretrained in timm/models/_builder.py) hands a `file` to the model's own
    # load_pretrained (the .npz converter, vision_transformer.py _load_weights) only when custom_load is set,
    # and otherwise to torch.load / safetensors. Set it both ways: the registry cfg of a tag such as
    # vit_base_patch16_224.augreg_in21k has custom_load=True (for its .npz URL), which timm 1.0.9 to 1.0.29 at
    # least keep under a `file` overlay (1.0.31 resets it), so a .pth would go to the .npz reader.
    kwargs = dict(kwargs, pretrained_cfg_overlay=dict(file=path, custom_load=npz is not None))
    if npz is None:  # a .pth / .bin / .safetensors file: torch.load(weights_only=True) or safetensors
        try:
            return _timm_create(name, num_classes, True, kwargs)
        except PETLBenchError:
            raise
        except (KeyError, ValueError, RuntimeError, OSError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
            raise PETLBenchError(f"pretrained checkpoint {path} does not load into {name!r}: "
                                 f"{type(e).__name__}: {first_line(e)} (a pickle with objects other than tensors "
                                 "is refused by torch.load(weights_only=True): save its state_dict)") from None
    try:
        return _timm_create(name, num_classes, True, kwargs)
    except PETLBenchError:
        raise
    except AttributeError as e:
        if "load_pretrained" not in str(e):
            raise
        raise PETLBenchError(f"backbone {name!r} cannot read {npz}: timm converts JAX/Flax .npz checkpoints only "
                             "for models with a load_pretrained (ViT, ResNetV2/BiT, MLP-Mixer); convert it to "
                             ".pth or .safetensors") from None
    except (KeyError, ValueError, RuntimeError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        # a missing key (another layout, more blocks than the file has), a shape mismatch, a corrupt member
        raise PETLBenchError(f"pretrained checkpoint {npz} does not load into {name!r}: "
                             f"{type(e).__name__}: {first_line(e)}") from None


def _timm_create(name: str, num_classes: int, pretrained: bool, kwargs: dict[str, Any]) -> nn.Module:
    import timm

    try:
        try:
            return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, **kwargs)
        except TypeError as e:
            if "img_size" not in kwargs or "img_size" not in str(e):
                raise
            # convolutional backbones (ConvNeXt) take any input size and have no img_size argument
            kwargs = {k: v for k, v in kwargs.items() if k != "img_size"}
            return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, **kwargs)
    except TypeError as e:  # an unknown timm kwarg
        raise PETLBenchError(f"backbone {name!r} does not accept {sorted(kwargs)}: {e}") from None


def input_normalization(
        backbone: str, pretrained: bool | str = False, model: nn.Module | None = None,
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """(mean, std) of the input normalisation the weights of `backbone` were trained with, as their config says.

    "openclip:<arch>": the built model's own `image_mean`/`image_std` (CLIPClassifier, or open_clip's
    `visual.image_mean`) when given, else open_clip's pretrained config of the tag `pretrained`, else OpenAI's
    CLIP statistics (open_clip's default, also for a checkpoint file). timm names: the model's `pretrained_cfg`
    when given, else timm's config for the name (its default tag, or the tag in "<arch>.<tag>"). This reports the
    config, not a protocol: timm's vit_base_patch16_224.orig_in21k says (0.5, 0.5, 0.5), while RepAdapter and
    NOAH normalised those weights with ImageNet's statistics."""
    if backbone.startswith(OPENCLIP):
        for holder in (model, getattr(model, "visual", None)):
            mean, std = getattr(holder, "image_mean", None), getattr(holder, "image_std", None)
            if mean is not None and std is not None:
                return _triple(mean), _triple(std)
        open_clip = _open_clip()
        cfg: dict[str, Any] = {}
        if isinstance(pretrained, str) and not os.path.isfile(os.path.expanduser(pretrained)):
            cfg = open_clip.get_pretrained_cfg(backbone[len(OPENCLIP):], pretrained) or {}
        return (_triple(cfg.get("mean") or OPENAI_CLIP_MEAN), _triple(cfg.get("std") or OPENAI_CLIP_STD))
    cfg = getattr(model, "pretrained_cfg", None) if model is not None else None
    if not cfg:
        from timm.models import get_pretrained_cfg

        check_backbone(backbone)
        found = get_pretrained_cfg(backbone)
        cfg = found.to_dict() if found is not None else {}
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    return _triple(cfg.get("mean") or IMAGENET_DEFAULT_MEAN), _triple(cfg.get("std") or IMAGENET_DEFAULT_STD)


def _triple(v) -> tuple[float, float, float]:
    v = tuple(float(x) for x in (v if isinstance(v, (list, tuple)) else (v,)))
    return v * 3 if len(v) == 1 else v  # type: ignore[return-value]


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
    CLIP's zero-shot classifier (logit scale included). `image_mean`/`image_std`: the input normalisation the
    weights were trained with (see `input_normalization`)."""

    def __init__(self, visual: nn.Module, embed_dim: int, num_classes: int, normalize: bool = True,
                 image_mean: tuple[float, float, float] = OPENAI_CLIP_MEAN,
                 image_std: tuple[float, float, float] = OPENAI_CLIP_STD):
        super().__init__()
        self.visual = visual
        self.normalize = normalize
        self.head = nn.Linear(embed_dim, num_classes)
        # the input normalisation the weights expect (open_clip's config of the tag), for the data pipeline
        self.image_mean = tuple(image_mean)
        self.image_std = tuple(image_std)

    def forward(self, x):
        import torch.nn.functional as F

        f = self.visual(x)
        return self.head(F.normalize(f, dim=-1) if self.normalize else f)

    def get_classifier(self) -> nn.Module:
        return self.head


class CLIPTextTower(nn.Module):
    """open_clip CLIP's text tower, kept on a `CLIPClassifier` as `model.text` (`create_openclip(keep_text=True)`)
    for methods that learn prompts (CoOp): token_embedding, positional_embedding, transformer, ln_final,
    text_projection, attn_mask and logit_scale, the modules and tensors of `open_clip.model.CLIP` themselves.

    `forward(embeddings, tokens)` encodes prompts given as *token embeddings* (n, context_length, width), with
    `tokens` the tokenized prompts they stand for, which say where each prompt's EOT token is (the highest id,
    CLIP's pooling): `forward(token_embedding(tokens), tokens) == CLIP.encode_text(tokens)`."""

    def __init__(self, clip: nn.Module):
        super().__init__()
        if not hasattr(clip, "token_embedding") or getattr(clip, "text_pool_type", "argmax") != "argmax":
            raise PETLBenchError(f"{type(clip).__name__}: the text tower is kept for open_clip's CLIP text "
                                 "transformer with EOT (argmax) pooling only")
        if getattr(clip, "logit_bias", None) is not None:
            raise PETLBenchError("the text tower is kept for CLIP's softmax logits only (this model has a logit bias)")
        self.token_embedding = clip.token_embedding
        self.positional_embedding = clip.positional_embedding
        self.transformer = clip.transformer
        self.ln_final = clip.ln_final
        self.text_projection = clip.text_projection  # a Parameter, an nn.Linear or None, as open_clip has it
        self.register_buffer("attn_mask", clip.attn_mask, persistent=False)
        self.logit_scale = clip.logit_scale

    def forward(self, embeddings: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        cast = self.transformer.get_cast_dtype()
        x = embeddings.to(cast) + self.positional_embedding.to(cast)
        batch_first = getattr(self.transformer, "batch_first", False)  # older open_clip runs the stack as LND
        x = self.transformer(x if batch_first else x.permute(1, 0, 2), attn_mask=self.attn_mask)
        x = self.ln_final(x if batch_first else x.permute(1, 0, 2))
        x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]  # the EOT token's feature
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x if self.text_projection is None else x @ self.text_projection

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """CLIP's text embedding of tokenized prompts (open_clip's `encode_text`)."""
        return self(self.token_embedding(tokens), tokens)


def create_openclip(arch: str, num_classes: int, pretrained: bool | str = False, normalize: bool = True,
                    zero_shot_classnames: list[str] | tuple[str, ...] | None = None,
                    zero_shot_templates: tuple[str, ...] = ("a photo of a {}.",), keep_text: bool = False,
                    **model_kwargs: Any) -> nn.Module:
    """`CLIPClassifier` around open_clip's vision tower of `arch`.

    `pretrained`: False (random), an open_clip tag ("openai", "laion2b_s34b_b88k", ...; from open_clip's cache
    or hub) or a local checkpoint file. `zero_shot_classnames`: initialise the head from the text embeddings of
    the class names (averaged over `zero_shot_templates`, open_clip's tokenizer) times CLIP's logit scale. The
    text tower is dropped, unless `keep_text`: then the model also holds it as `model.text` (`CLIPTextTower`,
    frozen by the core like the vision tower), open_clip's tokenizer of `arch` as `model.tokenizer`, and the
    class names, when given, as `model.classnames` (what `PETLMethod.needs_text` methods build on). Other
    keyword arguments go to `open_clip.create_model` (e.g. a smaller `vision_cfg` for tests)."""
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
    if isinstance(tag, str) and (open_clip.get_pretrained_cfg(arch, tag) or {}).get("quick_gelu"):
        # OpenAI's CLIPs were trained with QuickGELU; open_clip (3.x) only warns when the architecture's config
        # (e.g. "ViT-B-16", not "ViT-B-16-quickgelu") says GELU, and builds the GELU model
        model_kwargs.setdefault("force_quick_gelu", True)
    # open_clip loads a tag through the hub even when it is cached (huggingface_hub reads HF_HUB_OFFLINE at
    # import only); a cached tag is loaded in offline mode. A file would lose the tag's config (QuickGELU, mean).
    cached = isinstance(tag, str) and os.path.sep not in tag and cached_openclip_weights(arch, tag) is not None
    try:
        with hub_offline() if cached else contextlib.nullcontext():
            clip = open_clip.create_model(arch, pretrained=tag, **model_kwargs)
    except RuntimeError as e:  # open_clip's download or load failure
        raise PETLBenchError(f"openclip:{arch} weights {tag!r} could not be loaded: {first_line(e)}") from None
    embed_dim = clip.visual.output_dim
    mean, std = input_normalization(OPENCLIP + arch, pretrained, clip)
    model = CLIPClassifier(clip.visual, embed_dim, num_classes, normalize, image_mean=mean, image_std=std)
    if zero_shot_classnames is not None:
        if len(zero_shot_classnames) != num_classes:
            raise PETLBenchError(f"zero-shot head: {len(zero_shot_classnames)} class names for {num_classes} "
                                 "classes")
        with torch.no_grad():
            model.head.weight.copy_(zero_shot_weights(clip, open_clip.get_tokenizer(arch), zero_shot_classnames,
                                                      zero_shot_templates))
            model.head.bias.zero_()
    if keep_text:
        model.text = CLIPTextTower(clip)
        model.tokenizer = open_clip.get_tokenizer(arch)
        if zero_shot_classnames is not None:
            model.classnames = tuple(zero_shot_classnames)
    return model


def cached_openclip_weights(arch: str, tag: str) -> str | None:
    """Local path of open_clip tag `tag` of `arch` in the Hugging Face cache, or None (not cached, or URL-hosted:
    open_clip's own download directory applies)."""
    cfg = _open_clip().get_pretrained_cfg(arch, tag) or {}
    if not cfg.get("hf_hub"):
        return None
    repo, filename = os.path.split(cfg["hf_hub"])  # "org/name/" (open_clip's default file) or "org/name/file"
    filename = filename or "open_clip_pytorch_model.bin"
    # open_clip's download_pretrained_from_hf tries a .safetensors beside the named file first
    files = [filename.rsplit(".", 1)[0] + ".safetensors", filename]
    if filename == "open_clip_pytorch_model.bin":
        files.insert(0, "open_clip_model.safetensors")
    return cached_hub_file(repo, files)


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


__all__ = ["CLIPClassifier", "CLIPTextTower", "check_backbone", "create_backbone", "create_openclip",
           "head_parameters", "input_normalization"]
