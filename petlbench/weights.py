"""Pretrained weights: a timm hub tag (from the local cache), a local file, or none; failing at once, with
the fix, when a tag is neither cached nor reachable (timm alone retries the hub for ~30 s offline)."""
from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterable, Iterator

from .errors import PETLBenchError

WEIGHTS_DIR = os.path.join(os.path.dirname(__file__), "weights")


def resolve_weights(backbone: str, weights: str) -> tuple[str, bool | str]:
    """(name for timm.create_model, `pretrained` argument) for a protocol's `weights` value:

    ""/"none"/"random"   -> (backbone, False): random initialisation
    "petlbench:<name>"   -> a file shipped in petlbench/weights/<name>.safetensors
    a path to a file     -> (backbone, path): .pth, .bin, .safetensors, or Google's JAX/Flax .npz (ViT-B_16.npz)
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
        path = os.path.expanduser(weights)
        if not os.path.isfile(path):
            raise PETLBenchError(f"weights {weights!r}: no such file")
        return backbone, path  # read (and an .npz checked: check_npz) when the model is built
    if backbone.startswith("openclip:"):  # an open_clip pretrained tag ("openai", "laion2b_s34b_b88k", ...)
        return backbone, weights
    ensure_hub_weights(weights)
    return weights, True


def is_npz(path: str) -> bool:
    """Whether `path` names a NumPy archive (Google's JAX/Flax checkpoints), by its extension."""
    return str(path).lower().endswith(".npz")


def check_npz(path: str) -> None:
    """PETLBenchError, one line naming `path`, unless it opens as a NumPy .npz archive (keys readable)."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as archive:
            archive.files  # noqa: B018  (reading the zip directory is what fails on a corrupt file)
    except AttributeError:  # np.load returned an array: an .npy saved under an .npz name
        raise PETLBenchError(f"pretrained checkpoint {path}: a single .npy array, not an .npz archive of named "
                             "weights") from None
    except Exception as e:  # numpy raises ValueError, OSError, EOFError, zipfile.BadZipFile, ... by content
        raise PETLBenchError(f"pretrained checkpoint {path} is not a readable NumPy .npz archive (a corrupt or "
                             f"incomplete download?): {type(e).__name__}: {first_line(e)}") from None


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (timm's and numpy's can run over several)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def cached_hub_file(repo: str, filenames: Iterable[str]) -> str | None:
    """Local path of the first of `filenames` of hub repository `repo` ("org/name" or "org/name@revision") in
    the Hugging Face cache (HF_HOME / HF_HUB_CACHE), or None. Reads the cache only; no request."""
    from huggingface_hub import try_to_load_from_cache

    repo, _, revision = repo.partition("@")
    for f in filenames:
        path = try_to_load_from_cache(repo, f, revision=revision or None)
        if isinstance(path, str):  # a sentinel object marks a file the hub said does not exist
            return path
    return None


def cached_timm_weights(name: str) -> str | None:
    """Local path of the cached hub weights of timm model `name` ("<arch>.<tag>" or an arch's default tag), or
    None when they are not cached or not hub-hosted (a URL: timm's own download cache applies). The hub copy is
    a native state dict even where the tag's `custom_load` describes its original .npz URL."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not repo:
        return None
    filename = getattr(cfg, "hf_hub_filename", None)
    # timm's load_state_dict_from_hf prefers a .safetensors next to the named file
    files = [filename.rsplit(".", 1)[0] + ".safetensors", filename] if filename else [
        "model.safetensors", "pytorch_model.bin"]
    if filename == "open_clip_pytorch_model.bin":
        files.insert(0, "open_clip_model.safetensors")
    return cached_hub_file(repo, files)


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """Hugging Face hub offline mode inside the block, restored after it. huggingface_hub reads HF_HUB_OFFLINE
    once, at import, into `huggingface_hub.constants.HF_HUB_OFFLINE` (what its requests check), so setting the
    environment variable later does nothing: both are set here, for loaders (open_clip) that take a hub tag
    rather than a file."""
    from huggingface_hub import constants

    env, const = os.environ.get("HF_HUB_OFFLINE"), constants.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = const
        if env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = env


def _offline_requested() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES",
                                                                                              "TRUE")


def ensure_hub_weights(name: str) -> None:
    """Raise at once when timm's weights for `name` are neither in the local Hugging Face cache nor
    downloadable. Cached weights need nothing more: `create_backbone` loads them from the cache file, with no
    request to the hub."""
    import timm

    if not timm.is_model(name):
        from .backbones import check_backbone

        check_backbone(name)
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if not (getattr(cfg, "hf_hub_id", None) if cfg is not None else None):
        return  # a URL-hosted checkpoint: timm's own download path and cache apply
    if cached_timm_weights(name) is not None:
        return
    if _offline_requested() or not _hub_reachable():
        raise PETLBenchError(
            f"weights {name!r} are not in the local cache and the Hugging Face hub is unreachable. Fix: on a "
            f"connected machine run  python -c \"import timm; timm.create_model('{name}', pretrained=True)\"  and "
            f"copy ~/.cache/huggingface here (or set HF_HOME), or pass weights=/path/to/checkpoint "
            f"(.npz such as Google's ViT-B_16.npz, .pth or .safetensors)"
        )
