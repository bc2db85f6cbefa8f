"""Pretrained weights: a timm hub tag (from the local cache), a local file, or none; failing at once, with
the fix, when a tag is neither cached nor reachable (timm alone retries the hub for ~30 s offline)."""
from __future__ import annotations

import os
import socket

from .errors import PETLBenchError

WEIGHTS_DIR = os.path.join(os.path.dirname(__file__), "weights")


def resolve_weights(backbone: str, weights: str) -> tuple[str, bool | str]:
    """(name for timm.create_model, `pretrained` argument) for a protocol's `weights` value:

    ""/"none"/"random"   -> (backbone, False): random initialisation
    "petlbench:<name>"   -> a file shipped in petlbench/weights/<name>.safetensors
    a path to a file     -> (backbone, path)
    "<arch>.<tag>"       -> (that timm name, True), checked against the Hugging Face cache first
    "<tag>" with an "openclip:<arch>" backbone -> (backbone, tag): open_clip's pretrained tag
    """
    if weights in ("", "none", "random"):
        return backbone, False
    if weights.startswith("petlbench:"):
        path = os.path.join(WEIGHTS_DIR, weights.split(":", 1)[1] + ".safetensors")
        if not os.path.isfile(path):
            raise PETLBenchError(f"weights {weights!r}: shipped file {path} is missing")
        return backbone, path
    if os.path.sep in weights or os.path.splitext(weights)[1] in (".npz", ".pth", ".bin", ".safetensors", ".pt"):
        if not os.path.isfile(os.path.expanduser(weights)):
            raise PETLBenchError(f"weights {weights!r}: no such file")
        return backbone, os.path.expanduser(weights)
    if backbone.startswith("openclip:"):  # an open_clip pretrained tag ("openai", "laion2b_s34b_b88k", ...)
        return backbone, weights
    ensure_hub_weights(weights)
    return weights, True


def _hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def ensure_hub_weights(name: str) -> None:
    """Raise at once when timm's weights for `name` are neither in the local Hugging Face cache nor
    downloadable; when they are cached, switch the hub to offline mode so timm loads them without retries."""
    import timm
    from timm.models import get_pretrained_cfg

    if not timm.is_model(name):
        from .backbones import check_backbone

        check_backbone(name)
    cfg = get_pretrained_cfg(name)
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not repo:
        return  # a URL-hosted checkpoint: timm's own download path and cache apply
    from huggingface_hub import try_to_load_from_cache

    files = [cfg.hf_hub_filename] if getattr(cfg, "hf_hub_filename", None) else [
        "model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"]
    if any(isinstance(try_to_load_from_cache(repo, f), str) for f in files):
        os.environ["HF_HUB_OFFLINE"] = "1"
        return
    if os.environ.get("HF_HUB_OFFLINE") == "1" or not _hub_reachable():
        raise PETLBenchError(
            f"weights {name!r} are not in the local cache and the Hugging Face hub is unreachable. Fix: on a "
            f"connected machine run  python -c \"import timm; timm.create_model('{name}', pretrained=True)\"  and "
            f"copy ~/.cache/huggingface here (or set HF_HOME), or pass weights=/path/to/checkpoint "
            f"(.npz such as Google's ViT-B_16.npz, .pth or .safetensors)"
        )
