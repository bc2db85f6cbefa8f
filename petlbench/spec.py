"""A run's specification and identity: task + method + overrides -> `RunSpec`, resolved in one order (task
protocol <- recipe <- per-method and per-dataset values <- overrides), each value with its source, and hashed
into the configuration hash that names the run's record."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .api import get_method
from .benchmark import of as benchmark_of
from .config import build_config, hashed_view
from .data import Sample
from .engine import Execution, resolve_device
from .errors import ConfigError, PETLBenchError
from .method import METHODS, PETLMethod
from .registry import did_you_mean
from .store import config_hash, data_identity
from .task import TASKS, Protocol, Task


@dataclass
class RunSpec:
    """Everything that defines a run's result. Execution options are recorded, not hashed, except the numerics
    (mixed precision, torch.compile): a bf16 result is never returned for an fp32 request.

    A run's identity has two parts. The configuration (`identity`, `config_hash`: task, method, protocol,
    numerics) is known before any data is read; it names the record's file, so one configuration has one record.
    The data (`data_identity`: a digest of the samples of the splits the run reads, see store.data_identity) is
    known once the lists are read; it is stored in the record, and `finished_record` returns a stored record only
    when its data digest is the current one: a run on other data (another root, a list with fewer lines) reruns
    and replaces the record instead of being answered with another data set's number."""

    task: Task
    method: PETLMethod
    protocol: Protocol
    execution: Execution
    # Where each resolved value came from (protocol field or "method.KEY" -> "task ...", "recipe ...: file:line",
    # "override"); for `petlbench run --dry-run`, not part of the identity.
    sources: dict[str, str] = dataclasses.field(default_factory=dict)
    # The overrides it was resolved from, and a supernet method's pipeline options (`stage`, `search.KEY`:
    # nas.py); the search options are part of the identity, the stage (where the pipeline stops) is not.
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    pipeline: dict[str, Any] = dataclasses.field(default_factory=dict)

    def numerics(self) -> dict[str, Any]:
        """{"amp": "bf16"|"fp16", "compile": True} where the run computes other than in eager fp32; {} otherwise."""
        out: dict[str, Any] = {}
        amp = effective_amp(self.execution)
        if amp != "off":
            out["amp"] = amp
        if self.execution.compile:
            out["compile"] = True
        return out

    def identity(self) -> dict[str, Any]:
        """What the config hash is taken of: task, method, method options and protocol (fields declared
        `added_later` only when set otherwise, see config.hashed_view), and the numerics when not eager fp32."""
        out = {"task": self.task.name, "method": self.method.name, "method_cfg": hashed_view(self.method.cfg),
               "protocol": hashed_view(self.protocol)}
        numerics = self.numerics()
        if numerics:  # eager fp32 runs keep the hashes they had before numerics were part of the identity
            out["numerics"] = numerics
        search = {k: v for k, v in self.pipeline.items() if k != "stage"}
        if search:
            out["pipeline"] = search
        return out

    @property
    def config_hash(self) -> str:
        """The configuration's hash (not the data's): the record's file name, computable before data is read."""
        return config_hash(self.identity())

    def data_splits(self) -> tuple[str, ...]:
        """The splits a run reads (`Protocol.splits_read`)."""
        return self.protocol.splits_read()

    def data_identity(self, data_root: str, samples: dict[str, list[Sample]] | None = None) -> dict[str, Any]:
        """The record's "data" part for `data_root` (store.data_identity over `data_splits`); `samples`: splits
        already read. Raises DataError, as the run would, when a split cannot be read."""
        samples = dict(samples or {})
        for split in self.data_splits():
            if split not in samples:
                samples[split] = self.task.samples(data_root, split)
        return data_identity(data_root, {s: samples[s] for s in self.data_splits()})


def effective_amp(ex: Execution) -> str:
    """The autocast mode a run uses: "off", "bf16" or "fp16" ("auto": bf16 on CUDA, off on the CPU)."""
    if ex.amp != "auto":
        return ex.amp
    try:
        return "bf16" if resolve_device(ex.device).type == "cuda" else "off"
    except PETLBenchError:
        return "off"


def task_method_defaults(task: Task, method: str, explicit: dict[str, Any]) -> dict[str, Any]:
    """The task's published defaults for `method`. A key "method key=value" applies only when the chosen
    config has key=value (RepAdapter_attn's scale differs from RepAdapter's)."""
    out: dict[str, Any] = {}
    cls = METHODS.get(method)
    base = {**dataclasses.asdict(cls.config_cls()), **explicit}
    for key, values in task.method_defaults.items():
        name, _, cond = key.partition(" ")
        if name != method:
            continue
        if cond:
            k, _, v = cond.partition("=")
            if str(base.get(k)) != v:
                continue
        out.update(values)
    return out


def variant_of_spec(task_name: str, method: str, cfg: dict[str, Any], proto: dict[str, Any]) -> dict[str, Any]:
    """The record's "variant": its published-table key and what differs from the defaults of the task under the
    record's recipe (see tables.variant_fields). A task, method or recipe not registered here compares with
    nothing."""
    from .tables import variant_fields

    defaults: dict[str, Any] = {}
    task_proto: dict[str, Any] = {}
    key, name, key_options = method, method, ()
    if method in METHODS:
        cls = METHODS.get(method)
        key = cls.variant_key(cfg)
        name, key_options = cls.variant_name(key), cls.key_options + cls.searched_options
        defaults = dataclasses.asdict(cls.config_cls())
        if task_name in TASKS:
            try:
                base = resolve(task_name, method, {"recipe": proto["recipe"]} if "recipe" in proto else {})
            except PETLBenchError:
                base = None
            if base is not None:
                defaults = dataclasses.asdict(base.method.cfg)
                task_proto = dataclasses.asdict(base.protocol)
    return variant_fields(key, name, key_options, cfg, proto, defaults, task_proto)


def recipe_for(task: Task, name: str):
    """The registered recipe `name` for `task` (None for ""); ConfigError when it is written for another
    benchmark, UnknownNameError (listing the recipes) when there is none of that name."""
    if not name:
        return None
    from .recipe import RECIPES

    recipe = RECIPES.get(name)
    if task.benchmark not in recipe.benchmarks:
        fitting = [n for n in RECIPES.names() if task.benchmark in RECIPES.get(n).benchmarks]
        raise ConfigError(f"recipe={name}: written for {', '.join(recipe.benchmarks)} tasks, not {task.name!r}; "
                          f"recipes for {task.benchmark}: {', '.join(fitting) or 'none'}")
    return recipe


def resolve(task_name: str, method: str, overrides: dict[str, Any] | None = None) -> RunSpec:
    """Build a RunSpec. Override keys: protocol fields (epochs, lr, selection, recipe, ...), execution fields
    (device, amp, compile, ...), method options (dim, scale, ... or method.dim); an unknown or ambiguous key is an
    error listing the accepted ones.

    Resolution order (later wins): the task's protocol, the recipe's protocol (`recipe=NAME`, default the task's
    `recipe`) and its per-method and per-dataset values, the overrides; method options: the method's defaults,
    the recipe's settings for the method, the task's per-dataset defaults, the overrides. open_clip backbones
    normalise with their weights' own mean/std (normalize=model) unless the recipe or an override says otherwise."""
    task = TASKS.get(task_name)
    cls = METHODS.get(method)
    proto_cls = type(task.protocol)  # the family's protocol class (shared fields and its own)
    proto_keys = {f.name for f in dataclasses.fields(proto_cls)}
    exec_keys = {f.name for f in dataclasses.fields(Execution)}
    method_keys = {f.name for f in dataclasses.fields(cls.config_cls)}
    proto, exe, meth, pipeline = {}, {}, {}, {}
    for key, value in (overrides or {}).items():
        if key == "stage" or key.startswith("search."):
            if cls.supernet is None:
                raise ConfigError(f"override {key}=...: only for methods searched with a supernet (nas.py), "
                                  f"not {method!r}")
            pipeline[key] = value
            continue
        if key.startswith("method."):
            meth[key[len("method."):]] = value
            continue
        owners = [n for n, ks in (("protocol", proto_keys), ("execution", exec_keys), ("method", method_keys))
                  if key in ks]
        if len(owners) > 1:
            raise ConfigError(f"override {key}=...: ambiguous ({' and '.join(owners)}); write method.{key}=...")
        if not owners:
            known = sorted(proto_keys | exec_keys | {f"method.{k}" for k in method_keys} | method_keys)
            raise ConfigError(f"override {key}=...: unknown key; accepted: {', '.join(known)}"
                              f"{did_you_mean(key, known)}")
        {"protocol": proto, "execution": exe, "method": meth}[owners[0]][key] = value
    # the recipe: an override, else the method's own on this benchmark (its authors' per-dataset settings), else
    # the task's default
    own = benchmark_of(task).method_recipes.get(method)
    recipe_name = proto.get("recipe", own if own is not None else task.recipe)
    if not isinstance(recipe_name, str):
        raise ConfigError(f"override recipe={recipe_name!r}: a recipe name (see `petlbench recipes`)")
    recipe = recipe_for(task, recipe_name)
    sources = {k: f"task {task.name}" for k in proto_keys}
    values = dataclasses.asdict(task.protocol)
    if recipe is not None:
        values.update(recipe.protocol_values(method, task.name), recipe=recipe.name)
        sources.update(recipe.sources(method, task.name))
        sources["recipe"] = (f"method {method}'s recipe on {task.benchmark}" if own is not None else
                             f"task {task.name} default")
    backbone = proto.get("backbone", values["backbone"])
    if "normalize" in proto_keys and isinstance(backbone, str) and backbone.startswith("openclip:") and (
            "normalize" not in proto) and (
            recipe is None or "normalize" not in recipe.protocol_cited(method, task.name)):
        values["normalize"] = "model"  # CLIP's own mean/std, from open_clip's pretrained config
        sources["normalize"] = "open_clip backbone: the weights' own mean/std"
    own_proto = {k: v for k, v in cls.protocol.items() if k in proto_keys}  # what the method itself requires
    values.update(own_proto)
    sources.update({k: f"method {method}" for k in own_proto})
    values.update(proto)
    sources.update({k: "override" for k in proto})
    protocol = build_config(proto_cls, values, f"task {task.name!r} protocol")
    execution = build_config(Execution, exe, "execution")
    recipe_meth = recipe.method_values(method, task.name) if recipe is not None else {}
    task_meth = task_method_defaults(task, method, {**recipe_meth, **meth})
    m = get_method(method, {**recipe_meth, **task_meth, **meth})
    for k in dataclasses.asdict(m.cfg):
        sources[f"method.{k}"] = ("override" if k in meth else f"task {task.name}" if k in task_meth else
                                  sources.get(f"method.{k}", f"method {method} default"))
    return RunSpec(task, m, protocol, execution, sources, dict(overrides or {}), pipeline)


def run_name(spec: RunSpec) -> str:
    """The file stem of a run's outputs under <out>/<benchmark>/: "<dataset>_<method>_<config hash>"."""
    return f"{spec.task.name.split('/', 1)[1]}_{spec.method.name}_{spec.config_hash}"


