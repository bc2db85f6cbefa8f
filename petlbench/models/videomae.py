"""A video ViT in the VideoMAE layout, built from timm's VisionTransformer so every method applies unchanged;
registered with timm as `videomae_vit_base_patch16_224`.

    x (B, 3, T, H, W) -> tubelet embedding: Conv3d with kernel = stride = (2, 16, 16) -> (B, T/2 * H/16 * W/16, D)
      + a fixed sinusoidal position table (VideoMAE's get_sinusoid_encoding_table; a buffer, never trained)
      -> timm's ViT blocks: joint space-time attention over all tokens (no class token)
      -> mean over tokens, fc_norm (VideoMAE's use_mean_pooling) -> head: BatchNorm1d(affine=False) + Linear
         (AdaptFormer's video head)

Because the model is a timm `VisionTransformer` (family "vit", sites `blocks.N.attn.qkv`, ...), RepAdapter, LoRA,
SSF, BitFit, Adapter and VPT attach and merge exactly as on an image ViT; the test matrix checks it on a tiny one.

Checkpoints (`load_videomae`): the official VideoMAE files (github.com/MCG-NJU/VideoMAE; the K400 self-supervised
ViT-B used by AdaptFormer), as their `model` or `module` dict. Key mapping:
  encoder.<k>               -> <k>                     (pre-training checkpoints wrap the encoder)
  decoder.*, mask_token, encoder_to_decoder.*           dropped (the pre-training decoder)
  blocks.N.attn.q_bias + v_bias -> blocks.N.attn.qkv.bias = [q_bias, 0, v_bias]  (VideoMAE has no k bias)
  pos_embed                 dropped (the same fixed sinusoid is computed here)
  head.*                    dropped (a new task head)
  norm.*                    dropped when the model pools with fc_norm (VideoMAE fine-tuning starts fc_norm fresh)
Anything else that does not match is an error listing the keys.
"""
from __future__ import annotations

import math
import re
from functools import partial

import torch
import torch.nn as nn
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer

from ..errors import ConfigError, PETLBenchError

__all__ = ["TubeletEmbed", "VideoVisionTransformer", "is_video_model", "load_videomae", "videomae_state_dict"]


def sinusoid_table(n_position: int, dim: int) -> torch.Tensor:
    """VideoMAE's fixed position table (n_position, dim): sin on even, cos on odd channels."""
    pos = torch.arange(n_position, dtype=torch.float64)[:, None]
    i = torch.arange(dim, dtype=torch.float64)[None, :]
    angle = pos / torch.pow(10000.0, 2 * torch.div(i, 2, rounding_mode="floor") / dim)
    table = torch.where(i.long() % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.float()


class TubeletEmbed(nn.Module):
    """(B, C, T, H, W) -> (B, N, D) by a Conv3d over tubelets of `tubelet_size` frames x patch x patch."""

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768,
                 bias: bool = True, num_frames: int = 8, tubelet_size: int = 2, **_):
        super().__init__()
        if num_frames % tubelet_size:
            raise ConfigError(f"num_frames={num_frames} is not a multiple of the tubelet size {tubelet_size}")
        self.patch_size = (patch_size, patch_size)
        self.grid_size = (num_frames // tubelet_size, img_size // patch_size, img_size // patch_size)
        self.num_patches = math.prod(self.grid_size)
        self.proj = nn.Conv3d(in_chans, embed_dim, (tubelet_size, patch_size, patch_size),
                              stride=(tubelet_size, patch_size, patch_size), bias=bias)

    def feat_ratio(self, as_scalar: bool = True):
        return self.patch_size[0] if as_scalar else self.patch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            raise PETLBenchError(f"a video backbone takes (batch, 3, frames, height, width), got {tuple(x.shape)}")
        return self.proj(x).flatten(2).transpose(1, 2)


class VideoVisionTransformer(VisionTransformer):
    """timm's VisionTransformer with a tubelet embedding, a fixed sinusoidal position table, mean pooling and
    AdaptFormer's BatchNorm + Linear head (see the module docstring)."""

    def __init__(self, num_frames: int = 8, tubelet_size: int = 2, **kwargs):
        kwargs.update(class_token=False, global_pool="avg", no_embed_class=True,
                      embed_layer=partial(TubeletEmbed, num_frames=num_frames, tubelet_size=tubelet_size))
        super().__init__(**kwargs)
        self.num_frames = num_frames
        n, dim = self.patch_embed.num_patches, self.embed_dim
        del self.pos_embed  # timm's learned table -> VideoMAE's fixed one, not saved in checkpoints
        self.register_buffer("pos_embed", sinusoid_table(n, dim)[None], persistent=False)
        if self.num_classes:
            self.head = nn.Sequential(nn.BatchNorm1d(dim, affine=False), nn.Linear(dim, self.num_classes))

    def get_classifier(self) -> nn.Module:
        return self.head


default_cfgs = generate_default_cfgs({"videomae_vit_base_patch16_224": {
    "url": "", "num_classes": 0, "input_size": (3, 224, 224), "interpolation": "bicubic", "crop_pct": 1.0,
    "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "first_conv": "patch_embed.proj",
    "classifier": "head"}})


@register_model
def videomae_vit_base_patch16_224(pretrained: bool = False, **kwargs) -> VideoVisionTransformer:
    """VideoMAE ViT-B/16, 8 frames, tubelet 2 (AdaptFormer's video backbone); weights: a local VideoMAE file."""
    args = dict(img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0, qkv_bias=True)
    args.update(kwargs)
    return build_model_with_cfg(VideoVisionTransformer, "videomae_vit_base_patch16_224", pretrained, **args)


def is_video_model(model: nn.Module) -> bool:
    """Whether `model` embeds (B, 3, T, H, W) clips by tubelets (the video ViT of this module)."""
    return isinstance(getattr(model, "patch_embed", None), TubeletEmbed)


def videomae_state_dict(checkpoint: dict, model: nn.Module) -> dict[str, torch.Tensor]:
    """A VideoMAE checkpoint's tensors under this model's names (the mapping in the module docstring)."""
    sd = checkpoint
    for key in ("model", "module", "state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    out: dict[str, torch.Tensor] = {}
    qv: dict[int, dict[str, torch.Tensor]] = {}
    pools_fc_norm = isinstance(getattr(model, "fc_norm", None), nn.LayerNorm)
    for k, v in sd.items():
        if k.startswith(("decoder.", "encoder_to_decoder")) or k == "mask_token":
            continue
        k = k.removeprefix("encoder.")
        if k == "pos_embed" or k.startswith("head.") or (pools_fc_norm and k.startswith("norm.")):
            continue
        m = re.fullmatch(r"blocks\.(\d+)\.attn\.([qv])_bias", k)
        if m:
            qv.setdefault(int(m.group(1)), {})[m.group(2)] = v
            continue
        out[k] = v
    for i, b in qv.items():
        q, v = b["q"], b["v"]
        out[f"blocks.{i}.attn.qkv.bias"] = torch.cat([q, torch.zeros_like(q), v])
    return out


def load_videomae(model: nn.Module, path: str) -> nn.Module:
    """Load a VideoMAE checkpoint file into `model`; the head (and fc_norm, when absent from the file) stay new.
    PETLBenchError naming the file and the keys when anything else is missing or left over."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated file, a pickle of something else
        raise PETLBenchError(f"{path}: not a readable VideoMAE checkpoint ({type(e).__name__}: {e})") from None
    sd = videomae_state_dict(ckpt, model)
    own = model.state_dict()
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
             for k, v in sd.items() if k in own and v.shape != own[k].shape]
    if wrong:
        raise PETLBenchError(f"{path}: does not fit {type(model).__name__} (another size?): {wrong[:4]}")
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.startswith(("head.", "fc_norm."))]
    if missing or unexpected:
        raise PETLBenchError(f"{path}: does not fit {type(model).__name__}; missing {missing[:8]}"
                             f"{' ...' if len(missing) > 8 else ''}, unexpected {list(unexpected)[:8]}")
    return model

