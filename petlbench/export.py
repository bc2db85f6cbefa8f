"""Tuned models out of petlbench: a merged model as a timm checkpoint folder (and on the Hugging Face Hub, through
timm's own hub helpers), LoRA-family tuned tensors as a PEFT adapter, and, for a configuration that does not merge,
its tuned file with a note on loading it.

    src = find_source("results/runs/vtab/cifar_lora_0123456789abcdef.safetensors")  # or a record, or its hash
    export_merged(src, "out/cifar-lora")        # model.safetensors + config.json + README.md
    timm.create_model("local-dir:out/cifar-lora", pretrained=True)                  # the tuned model's outputs
    export_peft(src, "out/cifar-lora-peft")     # adapter_config.json + adapter_model.safetensors
    peft.PeftModel.from_pretrained(timm.create_model(backbone, num_classes=...), "out/cifar-lora-peft")

The timm folder is what timm's `save_for_hf` writes (timm/models/_hub.py:449-477: the state dict as
`model.safetensors`, then `save_config_for_hf`, :345-446: `config.json` with the architecture, the model's
construction arguments and its pretrained config), with the run's input pipeline as the data config: its image
size, interpolation, test crop (petlbench's square resize and centre crop is timm's crop_mode "squash") and the
mean/std the run normalised with. Every export is written into a temporary folder beside its target and renamed
into place when complete; a merged one is loaded back through timm and its outputs compared with the tuned model's
before it is kept or pushed.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
import types
from typing import Any

import torch
import torch.nn as nn

from .errors import PETLBenchError

HASH = re.compile(r"[0-9a-f]{16}")
PEFT_METHODS = ("lora", "peft")  # methods with a PEFT form


class ExportError(PETLBenchError):
    """A tuned model that cannot be exported as asked (no record for it, a non-timm backbone, no hub token)."""


@dataclasses.dataclass
class Source:
    """A tuned-weights file and what is known of its run: the file's metadata (`checkpoint.read_tuned`), the
    run's record when one is found, and the `weights` value it was tuned on (the record's, or given)."""

    tuned: str
    meta: dict[str, str]
    record: dict[str, Any] | None
    weights: str | None

    @property
    def backbone(self) -> str:
        return self.meta["backbone"]

    def build_args(self) -> dict[str, Any]:
        """`petlbench.create_model`'s arguments, less `pretrained`."""
        return {"backbone": self.backbone, "method": self.meta["method"], "num_classes": int(self.meta["num_classes"]),
                "method_cfg": json.loads(self.meta["method_cfg"]), **json.loads(self.meta["backbone_kwargs"])}


def find_source(ref: str, store: str = os.path.join("results", "store"), out: str = os.path.join("results", "runs"),
                weights: str | None = None) -> Source:
    """The tuned file named by `ref`: a tuned `.safetensors` file (its record is looked up in `store` by the
    config hash its name ends with, under the benchmark folder it lies in), a record's `.json` file, or a config
    hash (a record in `store`); a record's tuned file is `out`/its `tuned_file`. `weights` overrides the record's."""
    from .checkpoint import read_tuned
    from .store import ResultStore, record_problem

    record = None
    if ref.endswith(".safetensors"):
        tuned = ref
        chash = os.path.splitext(os.path.basename(ref))[0].rpartition("_")[2]
        benchmark = os.path.basename(os.path.dirname(os.path.abspath(ref)))
        record = ResultStore(store).get(benchmark, chash) if HASH.fullmatch(chash) else None
    else:
        if ref.endswith(".json"):
            try:
                with open(ref, encoding="utf-8") as f:
                    record = json.load(f)
            except (OSError, ValueError) as e:
                raise ExportError(f"{ref}: not a readable record ({e})") from None
            problem = record_problem(record)
            if problem:
                raise ExportError(f"{ref}: {problem}")
        elif HASH.fullmatch(ref):
            record = next((r for r in ResultStore(store).records() if r["config_hash"] == ref), None)
            if record is None:
                raise ExportError(f"no record with config hash {ref} in the store {store}")
        else:
            raise ExportError(f"{ref!r}: expected a tuned .safetensors file, a record's .json file or a config hash")
        if record.get("status") != "ok" or not record.get("tuned_file"):
            raise ExportError(f"record {record['config_hash']}: a run that did not finish with tuned weights "
                              f"(status {record.get('status')!r})")
        tuned = os.path.join(out, record["tuned_file"])
        if not os.path.isfile(tuned):
            raise ExportError(f"record {record['config_hash']}: its tuned file {tuned} is not there (--out is the "
                              "folder the run wrote to)")
    meta, _ = read_tuned(tuned)
    if weights is None and record is not None:
        weights = record.get("protocol", {}).get("weights", "")
    return Source(tuned, meta, record, weights)


def _pretrained(src: Source) -> bool | str:
    from .weights import resolve_weights

    if src.weights is None:
        raise ExportError(f"{src.tuned}: no record of its run in the store, so the backbone weights it was tuned on "
                          "are unknown: give them (--weights, the run's weights=...: a timm tag, a file, none)")
    backbone = (src.record or {}).get("protocol", {}).get("backbone") or src.backbone
    name, pretrained = resolve_weights(backbone, src.weights)
    if name != src.backbone:
        raise ExportError(f"{src.tuned}: tuned on backbone {src.backbone!r}, but weights {src.weights!r} name {name!r}")
    return pretrained


def tuned_model(src: Source) -> nn.Module:
    """The tuned model: backbone with its weights, method, tuned tensors loaded (checked against the weights they
    were tuned on: `checkpoint.load_tuned`), in eval mode."""
    from .api import create_model
    from .checkpoint import load_tuned

    model = create_model(pretrained=_pretrained(src), **src.build_args())
    return load_tuned(model, src.tuned).eval()


def skeleton(src: Source) -> nn.Module:
    """The tuned model's architecture with random weights (its family, module names and head; no weights read)."""
    from .api import create_model

    return create_model(pretrained=False, **src.build_args())


@dataclasses.dataclass
class Exported:
    """What an export wrote: `kind` "timm" (a merged timm checkpoint), "tuned" (the tuned file and a loader note,
    `reason` saying why it is not merged) or "peft"; `max_diff`, for "timm", the largest difference between the
    reloaded folder's outputs and the tuned model's."""

    path: str
    kind: str
    reason: str = ""
    max_diff: float | None = None


def _prepared(src: Source):
    """(why the tuned model of `src` is not exported merged, None), or (None, (tuned model, merged model, timm data
    config)). A method that never merges is answered without building anything."""
    from .api import get_method, merge
    from .backbones import OPENCLIP

    if src.backbone.startswith(OPENCLIP):
        return "open_clip backbones are not timm models", None
    method = get_method(src.meta["method"], json.loads(src.meta["method_cfg"]))
    if not method.mergeable:
        return method.merge_blocker(""), None
    model = tuned_model(src)
    why = method.merge_blocker(model.petl.family)
    return (why, None) if why else (None, (model, merge(model).eval(), _data_config(src, model)))


def export_merged(src: Source, out_dir: str) -> Exported:
    """Write the merged tuned model to `out_dir` as a timm checkpoint folder that
    `timm.create_model("local-dir:<out_dir>", pretrained=True)` loads, or, where the configuration does not merge,
    the tuned file and a README saying how to load it with petlbench."""
    from timm.models import save_for_hf

    _check_target(out_dir)
    why, built = _prepared(src)
    if why:
        with _staged(out_dir) as tmp:
            _write_loader_note(src, tmp, why)
        return Exported(out_dir, "tuned", why)
    model, merged, data_config = built
    with _staged(out_dir) as tmp:
        save_for_hf(merged, tmp, safe_serialization=True, data_config=data_config)
        with open(os.path.join(tmp, "README.md"), "w", encoding="utf-8") as f:
            f.write(_timm_readme(src, model, os.path.basename(os.path.abspath(out_dir)), f"local-dir:{out_dir}"))
        diff = _check_reload(tmp, model)
    return Exported(out_dir, "timm", max_diff=diff)


def hub_token() -> str:
    """The Hugging Face token (HF_TOKEN, or the one `hf auth login` stored); ExportError, one line, without it."""
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise ExportError("--hub needs a Hugging Face token: set HF_TOKEN or run `hf auth login` "
                          "(huggingface_hub.login()); nothing was pushed")
    return token


def push(src: Source, repo: str, token: str, private: bool = False) -> Exported:
    """Push the merged model to hub repository `repo` with timm's `push_to_hf_hub` (timm/models/_hub.py:480-542:
    the repository is created if needed, then one commit uploads weights, config and, where the repository has
    none, the model card), or, where the configuration does not merge, its tuned file and loader note in one
    commit. Everything is built and checked before the first request."""
    from timm.models import push_to_hf_hub, save_for_hf

    why, built = _prepared(src)
    if why:
        from huggingface_hub import HfApi

        with tempfile.TemporaryDirectory() as tmp:
            _write_loader_note(src, tmp, why)
            api = HfApi(token=token)
            repo_id = api.create_repo(repo, private=private, exist_ok=True).repo_id
            api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message="petlbench tuned weights")
        return Exported(repo, "tuned", why)
    model, merged, data_config = built
    with tempfile.TemporaryDirectory() as tmp:  # the folder export_merged writes, checked before pushing
        save_for_hf(merged, tmp, safe_serialization=True, data_config=data_config)
        diff = _check_reload(tmp, model)
    push_to_hf_hub(merged, repo, token=token, private=private, model_card=_card(src, model, f"hf-hub:{repo}"),
                   safe_serialization=True, data_config=data_config, commit_message="petlbench merged model")
    return Exported(repo, "timm", max_diff=diff)


def _data_config(src: Source, model: nn.Module) -> dict[str, Any] | None:
    """timm's data config of the run's test pipeline (decode.resize_to_uint8 and loaders.input_normalization),
    or None without a record (timm then writes the weights' own config)."""
    from .batches import IMAGENET_MEAN, IMAGENET_STD
    from .loaders import input_normalization

    p = (src.record or {}).get("protocol") or {}
    if "img_size" not in p:
        return None
    norm = input_normalization(types.SimpleNamespace(normalize=p.get("normalize", "imagenet"),
                                                     backbone=p.get("backbone", src.backbone),
                                                     weights=p.get("weights", "")), model)
    mean, std = ((IMAGENET_MEAN, IMAGENET_STD) if norm is True else ((0.0,) * 3, (1.0,) * 3) if norm is None
                 else norm)
    return {"input_size": (3, p["img_size"], p["img_size"]), "interpolation": p.get("interpolation", "bicubic"),
            "crop_pct": p.get("test_crop_pct", 1.0), "crop_mode": "squash", "mean": tuple(mean), "std": tuple(std)}


def _check_reload(folder: str, model: nn.Module) -> float:
    """Load `folder` through timm and compare its outputs with the tuned model's on random inputs; ExportError
    past fp32 rounding (1e-4 relative to the largest logit, as the merge tests)."""
    import timm

    reloaded = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    size = tuple(reloaded.pretrained_cfg["input_size"])
    frames = (model.petl.backbone_kwargs.get("num_frames"),) if "num_frames" in model.petl.backbone_kwargs else ()
    x = torch.randn(2, size[0], *frames, *size[1:], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model(x)
        diff = (reloaded(x) - want).abs().max().item()
    tol = 1e-4 * max(1.0, want.abs().max().item())
    if not diff <= tol:
        raise ExportError(f"the exported folder's outputs differ from the tuned model's by {diff:.2e} (> {tol:.1e})")
    return diff


# --- PEFT -------------------------------------------------------------------------------------------------------
def export_peft(src: Source, out_dir: str) -> Exported:
    """Write the tuned tensors of a `lora` or `peft` run as a PEFT adapter folder (`adapter_config.json`,
    `adapter_model.safetensors`, written by PEFT's own `save_pretrained`) that `peft.PeftModel.from_pretrained`
    loads onto `timm.create_model(backbone, num_classes=...)` with the backbone's weights. The head is the
    adapter's `modules_to_save`. No backbone weights are read."""
    from .backbones import OPENCLIP, create_backbone
    from .checkpoint import read_tuned

    method = src.meta["method"]
    if method not in PEFT_METHODS:
        raise ExportError(f"--peft: method {method!r} has no PEFT form (methods with one: {', '.join(PEFT_METHODS)})")
    if src.backbone.startswith(OPENCLIP):
        raise ExportError(f"--peft: {src.backbone} is an open_clip backbone; the PEFT adapter is for timm models")
    _check_target(out_dir)
    _, tensors = read_tuned(src.tuned)
    ours = skeleton(src)
    config, adapter = (_lora_adapter if method == "lora" else _peft_method_adapter)(ours, tensors)
    head = next(n for n, m in ours.named_modules() if m is ours.get_classifier())
    for leaf, _ in ours.get_classifier().named_parameters():
        adapter[f"{head}.modules_to_save.default.{leaf}"] = tensors.pop(f"{head}.{leaf}")
    if tensors:
        raise ExportError(f"--peft: tuned tensors with no place in a PEFT adapter: {', '.join(sorted(tensors)[:3])}")
    import peft

    args = src.build_args()
    base = create_backbone(args.pop("backbone"), args.pop("num_classes"), False,
                           **{k: v for k, v in args.items() if k not in ("method", "method_cfg")})
    config = dataclasses.replace(config, modules_to_save=[head])
    wrapped = peft.get_peft_model(base, config)
    params = {n.removeprefix("base_model.model."): p for n, p in wrapped.named_parameters()
              if p.requires_grad and not n.startswith(f"base_model.model.{head}.original_module.")}
    if set(params) != set(adapter):
        missing, extra = sorted(set(params) - set(adapter)), sorted(set(adapter) - set(params))
        raise ExportError(f"--peft: the adapter's tensors do not match PEFT's model (missing {missing[:3]}, "
                          f"unexpected {extra[:3]})")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(adapter[name])
    with _staged(out_dir) as tmp:
        wrapped.save_pretrained(tmp)
        with open(os.path.join(tmp, "README.md"), "w", encoding="utf-8") as f:
            f.write(_peft_readme(src, out_dir))
    return Exported(out_dir, "peft")


def _lora_adapter(model: nn.Module, tensors: dict[str, torch.Tensor]):
    """(PEFT LoraConfig, {name in PEFT's model: tensor}) of petlbench's LoRA (methods/lora.py), taking its tensors
    out of `tensors`. PEFT's LoRA on a Linear adds scaling * B A x, scaling = lora_alpha / r, A: r x in, B: out x r
    (peft 0.21.2 src/peft/tuners/lora/layer.py:263-264, :281, :1102), over the whole output of the module it
    targets. `fused=True` is that on qkv. The split form (targets "qv": B_q A_q on q's third, B_v A_v on v's) is
    one PEFT LoRA of rank k * r on qkv, k the number of targets: A' = [A_q; A_v] (stacked rows), B' block-diagonal
    into q's and v's rows of qkv (zeros elsewhere), lora_alpha' = k * alpha, so that B' A' and the scaling are
    LoRA's own."""
    from peft import LoraConfig

    from .methods.lora import LoRAQKV

    cfg = model.petl.method_cfg
    sites = [(n, m) for n, m in model.named_modules() if isinstance(m, LoRAQKV)]
    if any(isinstance(m.base, nn.MultiheadAttention) for _, m in sites):
        raise ExportError("--peft: LoRA on nn.MultiheadAttention (open_clip) has no timm model to go with")
    adapter = {}
    for name, m in sites:
        a = [tensors.pop(f"{name}.lora_A.{i}") for i in range(len(m.slots))]
        b = [tensors.pop(f"{name}.lora_B.{i}") for i in range(len(m.slots))]
        if m.fused:
            a_, b_ = a[0], b[0]
        else:
            d, r = m.dim, a[0].shape[0]
            a_ = torch.cat(a)
            b_ = torch.zeros(3 * d, len(a) * r, dtype=b[0].dtype)
            for i, (slot, bi) in enumerate(zip(m.slots, b)):
                b_[slot * d:(slot + 1) * d, i * r:(i + 1) * r] = bi
        adapter[f"{name}.lora_A.default.weight"] = a_
        adapter[f"{name}.lora_B.default.weight"] = b_
    k = 1 if cfg["fused"] else len(cfg["targets"])
    alpha = k * float(cfg["alpha"])
    return LoraConfig(r=k * cfg["rank"], lora_alpha=int(alpha) if alpha.is_integer() else alpha,
                      target_modules=[n for n, _ in sites], lora_dropout=cfg["dropout"], fan_in_fan_out=False,
                      bias="none"), adapter


def _peft_method_adapter(model: nn.Module, tensors: dict[str, torch.Tensor]):
    """(the PEFT config, {name in PEFT's model: tensor}) of a `peft` run: its own config, and its tensors with the
    `PEFTLayer` wrapping dropped from their names ("<site>.base.lora_A.default.weight" ->
    "<site>.lora_A.default.weight"); other tuned biases (bias="all") keep theirs."""
    from .api import method_of
    from .methods.peft_method import PEFTLayer

    wrappers = [n for n, m in model.named_modules() if isinstance(m, PEFTLayer)]
    head = {f"{n}.{leaf}" for n, m in model.named_modules() if m is model.get_classifier()
            for leaf, _ in m.named_parameters()}
    adapter = {}
    for name in [n for n in tensors if n not in head]:
        site = next((w for w in wrappers if name.startswith(f"{w}.base.")), None)
        adapter[name if site is None else f"{site}.{name.removeprefix(f'{site}.base.')}"] = tensors.pop(name)
    return method_of(model).peft_config(model.petl.family), adapter


# --- folders and cards ------------------------------------------------------------------------------------------
def _check_target(out_dir: str) -> None:
    if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
        raise ExportError(f"{out_dir} exists and is not an empty folder: choose another or remove it")


class _staged:
    """`with _staged(out_dir) as tmp:` a new folder beside `out_dir`, renamed to `out_dir` when the block ends
    without an error and removed when it raises: no half-written export at `out_dir`."""

    def __init__(self, out_dir: str):
        self.out_dir = os.path.abspath(out_dir)

    def __enter__(self) -> str:
        parent = os.path.dirname(self.out_dir)
        os.makedirs(parent, exist_ok=True)
        self.tmp = tempfile.mkdtemp(prefix=".tmp-export-", dir=parent)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o777 & ~umask)  # mkdtemp's 0o700 otherwise
        return self.tmp

    def __exit__(self, kind, value, tb) -> None:
        if kind is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        _check_target(self.out_dir)
        if os.path.isdir(self.out_dir):
            os.rmdir(self.out_dir)  # empty (checked)
        os.rename(self.tmp, self.out_dir)


def _call(target: str, func: str, args: list[str]) -> str:
    """`target = func(` with one argument a line (an argument's "  # comment" kept after its comma)."""
    parts = [a.partition("  #") for a in args]
    lines = [f"    {code},{'  #' + comment if sep else ''}\n" for code, sep, comment in parts]
    return f"{target} = {func}(\n" + "".join(lines) + ")\n"


def _timm_weights(src: Source) -> list[str]:
    """timm.create_model's arguments for the run's weights (a file through timm's `pretrained_cfg_overlay`)."""
    if src.weights is None:
        return ["pretrained=...  # the weights the run was tuned on (no record of the run)"]
    pretrained = _pretrained(src)
    if isinstance(pretrained, str):
        return ["pretrained=True", f"pretrained_cfg_overlay=dict(file={pretrained!r})  # weights={src.weights}"]
    return [f"pretrained={pretrained!r}"]


def _details(src: Source) -> dict[str, str]:
    """What the model cards say of the run: backbone, weights, method, recipe, task, accuracy, record hash."""
    from .api import get_method

    rec = src.record or {}
    p = rec.get("protocol") or {}
    cls = type(get_method(src.meta["method"], json.loads(src.meta["method_cfg"])))
    cfg = ", ".join(f"{k}={v!r}" for k, v in json.loads(src.meta["method_cfg"]).items()) or "no options"
    m = rec.get("metrics") or {}
    accuracy = (f"{rec['value']:.2f}% {rec.get('metric', 'top1')} on {m.get('split', '?')} (epoch {m.get('epoch')})"
                if rec.get("value") is not None else "not known (no record of the run)")
    return {"Backbone": src.backbone, "Pretrained weights": src.weights if src.weights is not None else "not known",
            "Method": f"{cls.display_name or cls.name} (petlbench `{cls.name}`: {cfg}; {cls.paper})",
            "Recipe": p.get("recipe") or ("the task's protocol" if rec else "not known"),
            "Task": rec.get("task", "not known"), "Accuracy": accuracy,
            "Model selection": rec.get("selection", "not known"),
            "Record (config hash)": rec.get("config_hash", "not known"),
            "Trainable parameters": (f"{rec['params']['trainable']:,} (head excluded)" if rec.get("params")
                                     else "not known")}


def _card(src: Source, model: nn.Module, load_name: str) -> dict[str, Any]:
    """The model card timm's `generate_readme` writes (timm/models/_hub.py:545-611)."""
    import timm

    pretrained = _pretrained(src) if src.weights is not None else None
    license_ = model.pretrained_cfg.get("license") if pretrained is True else None
    arch = model.pretrained_cfg.get("architecture") or src.backbone.split(".")[0]
    own = timm.models.model_entrypoint(arch).__module__.startswith("petlbench.")
    d = _details(src)
    usage = ("```python\n" + ("import petlbench  # registers the architecture with timm\n" if own else "")
             + f"import timm\n\nmodel = timm.create_model({load_name!r}, pretrained=True).eval()\n"
             "transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))\n```\n")
    return {"tags": ["image-classification", "timm", "petlbench"], "license": license_ or "other",
            "description": (f"{src.backbone} tuned with {d['Method'].split(' (')[0]} on {d['Task']} by petlbench, "
                            "then merged into the plain timm model: the weights hold the tuned update, the "
                            "architecture is timm's own. The input pipeline in config.json is the run's test "
                            "transform." + ("" if license_ else " Its license is that of the pretrained weights.")),
            "details": d, "usage": usage}


def _timm_readme(src: Source, model: nn.Module, name: str, load_name: str) -> str:
    from timm.models._hub import generate_readme

    return generate_readme(_card(src, model, load_name), name)


def _bullets(details: dict[str, str]) -> str:
    return "".join(f"- **{k}:** {v}\n" for k, v in details.items())


def _write_loader_note(src: Source, folder: str, why: str) -> None:
    """Copy the tuned file into `folder` with a README saying how petlbench loads it."""
    name = os.path.basename(src.tuned)
    shutil.copyfile(src.tuned, os.path.join(folder, name))
    args = src.build_args()
    p_backbone = ((src.record or {}).get("protocol") or {}).get("backbone") or src.backbone
    weights = (f"backbone, pretrained = resolve_weights({p_backbone!r}, {src.weights!r})  # the run's weights\n"
               if src.weights is not None else
               f"backbone, pretrained = {src.backbone!r}, ...  # the weights the run was tuned on (no record)\n")
    call = _call("model", "petlbench.create_model", ["backbone", "pretrained=pretrained"] + [
        f"{k}={v!r}" for k, v in args.items() if k != "backbone"])
    text = (f"# {src.meta['method']}: tuned weights for petlbench\n\n"
            f"This configuration does not merge into a plain timm model: {why}. This folder holds its tuned tensors "
            f"(`{name}`: the method's parameters and the head, safetensors) for petlbench to load onto the "
            "backbone:\n\n```python\nimport petlbench\nfrom petlbench.weights import resolve_weights\n\n"
            + weights + call +
            f"petlbench.load_tuned(model, {name!r})  # checks backbone, method, options, classes and weights\n"
            "model.eval()\n```\n\n" + _bullets(_details(src)))
    with open(os.path.join(folder, "README.md"), "w", encoding="utf-8") as f:
        f.write(text)


def _peft_readme(src: Source, out_dir: str) -> str:
    args = src.build_args()
    kwargs = {k: v for k, v in args.items() if k not in ("backbone", "method", "method_cfg", "drop_path_rate")}
    call = _call("base", "timm.create_model", [repr(src.backbone)] + [f"{k}={v!r}" for k, v in kwargs.items()]
                 + _timm_weights(src))
    cfg = args["method_cfg"]
    split = (src.meta["method"] == "lora" and not cfg["fused"] and len(cfg["targets"]) > 1)
    note = (f"\npetlbench's LoRA updated {', '.join(cfg['targets'])} of the fused qkv separately (rank {cfg['rank']} "
            f"each); PEFT holds them as one LoRA of rank {len(cfg['targets']) * cfg['rank']} over the whole qkv "
            "output whose B is zero outside those rows: the same outputs, but trained further in PEFT the zero "
            "blocks would train too.\n") if split else ""
    return (f"# {src.meta['method']} on {(src.record or {}).get('task', 'its task')}: a PEFT adapter for timm's "
            f"{src.backbone}\n\n```python\nimport timm\nfrom peft import PeftModel\n\n" + call +
            f"model = PeftModel.from_pretrained(base, {out_dir!r}).eval()\n```\n{note}\n" + _bullets(_details(src)))
