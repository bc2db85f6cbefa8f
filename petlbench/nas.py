"""Sub-network search with a weight-sharing supernet, as three runs of the store (NOAH, Zhang et al. 2022,
arXiv:2206.04673; the stages of its supernet_train_prompt.py --mode super, evolution.py, --mode retrain):

    1. supernet  the method with its supernet configuration, trained under the task's recipe + "-supernet"
                 (NOAH VTAB-1k: train800, lr 5e-4, 500 epochs), every step a random sub-network; an ordinary run
                 with selection=trial (it reads no test data), recorded with stage "supernet".
    2. search    the supernet's evolutionary search (the method's `Evolution`) under a parameter limit, every
                 candidate scored on the validation split with the supernet's tuned weights. Its state is saved
                 after every evolution epoch (a killed search resumes there); the record (stage "search") keeps
                 every epoch's top accuracies, every scored candidate and the best sub-network.
    3. retrain   the found sub-network as a plain configuration of the method (its option `arch`), trained from
                 the pretrained backbone under the task's recipe; its record gains "nas": the supernet's and the
                 search's hashes, the sub-network and its validation score.

A method joins by setting the class attribute `supernet` (a `Supernet`) and returning `run_pipeline` from
`PETLMethod.runner` for its supernet configuration; `petlbench run --method noah` then runs all three stages
(each finished stage is taken from the store), and `stage=supernet|search|retrain` stops after (or, with the
earlier stages in the store, runs only) that stage. Search options are `search.KEY=VALUE` (the fields of the
method's evolution settings, e.g. search.param_limit=0.5, search.max_epochs=15; search.split, search.normalize).
The entry configuration (the supernet under the task's recipe) gets a pointer record (stage "pipeline"), so a
sweep sees a finished pipeline as done.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError, PETLBenchError

log = logging.getLogger(__name__)

STAGES = ("supernet", "search", "retrain")


@dataclass(frozen=True)
class Supernet:
    """What a supernet method gives the pipeline."""

    set_arch: Callable  # (model, arch | None): the active sub-network
    arch_params: Callable  # (model, arch) -> int: the sub-network's parameter count (the limit's)
    search_space: Callable  # (cfg, depth) -> the evolution's choices
    format_arch: Callable  # arch -> the text of the method option `arch`
    evolution: type  # Evolution(choices, settings, rng, state).run(evaluate, count, on_epoch) -> state
    settings: type  # the evolution's settings dataclass (search.KEY=VALUE)
    arch_option: str = "arch"
    # The authors' search options per benchmark (NOAH's VTAB-1k search: --max-epochs=15 --inception), under the
    # user's search.KEY=VALUE
    search_defaults: dict[str, dict[str, Any]] = field(default_factory=dict)


def _supernet_spec(spec, run_over: dict[str, Any]):
    """The supernet stage's spec for the entry `spec` (the supernet under the task's recipe): the recipe + "-supernet"
    (a task without a recipe: its own protocol), selection=trial."""
    from .recipe import RECIPES
    from .spec import resolve

    over = {k: v for k, v in run_over.items() if k != "recipe"}
    if not spec.protocol.recipe:  # a task without a recipe (the mini-benchmark): its own protocol
        return resolve(spec.task.name, spec.method.name, {**over, "selection": "trial"})
    name = spec.protocol.recipe + "-supernet"
    if name not in RECIPES:
        raise ConfigError(f"{spec.method.name} on {spec.task.name}: no supernet recipe {name!r} for recipe "
                          f"{spec.protocol.recipe!r} (registered: "
                          f"{', '.join(n for n in RECIPES.names() if n.endswith('-supernet')) or 'none'})")
    return resolve(spec.task.name, spec.method.name, {**over, "recipe": name})


def run_pipeline(spec, data_root: str, store, out_dir: str, force: bool = False, progress=None) -> dict[str, Any]:
    """Run the stages of `spec` (a supernet configuration; `spec.pipeline`: stage, search.KEY options) up to
    its stage (default: all three); returns the last stage's record. `run.execute`'s signature."""
    from .run import execute
    from .spec import resolve

    hooks = spec.method.supernet
    stage = spec.pipeline.get("stage", "retrain")
    if stage not in STAGES:
        raise ConfigError(f"override stage={stage!r}: one of {', '.join(STAGES)}")
    search_options = {k[len("search."):]: v for k, v in spec.pipeline.items() if k.startswith("search.")}
    run_over = {k: v for k, v in spec.overrides.items() if k != "stage" and not k.startswith("search.")}
    _settings(hooks, spec.task.benchmark, search_options)  # a bad search option fails before the supernet trains
    entry = store.get(spec.task.benchmark, spec.config_hash)
    if entry is not None and entry.get("status") == "ok" and stage == "retrain" and not force:
        final = store.get(spec.task.benchmark, entry.get("final_hash", ""))
        if final is not None and final.get("status") == "ok":
            return final
    sup_spec = _supernet_spec(spec, run_over)
    sup = execute(sup_spec, data_root, store, out_dir, force=force, progress=progress)
    _mark(store, sup, "supernet")
    if stage == "supernet":
        return sup
    found = search_stage(sup_spec, sup, hooks, data_root, store, out_dir, search_options, force)
    if stage == "search":
        return found
    over = {k: v for k, v in run_over.items() if k != hooks.arch_option}
    ret_spec = resolve(spec.task.name, spec.method.name, {**over, hooks.arch_option: found["nas"]["arch"]})
    final = execute(ret_spec, data_root, store, out_dir, force=force, progress=progress)
    nas = {"supernet": sup["config_hash"], "search": found["config_hash"], "arch": found["nas"]["arch"],
           "val_top1": found["value"], "params": found["nas"]["params"], "settings": found["nas"]["settings"]}
    if final.get("nas") != nas:
        final["nas"] = nas
        store.append(final)
    pointer = {k: final[k] for k in ("benchmark", "task", "group", "method", "status", "metric", "value",
                                     "metrics", "params", "seed") if k in final}
    pointer.update(config_hash=spec.config_hash, stage="pipeline", final_hash=final["config_hash"], nas=nas,
                   method_cfg=dataclasses.asdict(spec.method.cfg), protocol=dataclasses.asdict(spec.protocol))
    if entry != pointer:
        store.append(pointer)
    return final


def _mark(store, record: dict[str, Any], stage: str) -> None:
    if record.get("stage") != stage:
        record["stage"] = stage
        store.append(record)


def _settings(hooks: Supernet, benchmark: str, options: dict[str, Any]):
    """(evolution settings, split or None, normalize or None) from the authors' defaults for `benchmark` under
    the user's search options; ConfigError naming a bad one."""
    from typing import get_args, get_type_hints

    from .config import build_config
    from .task import ClassificationProtocol

    opts = {**hooks.search_defaults.get(benchmark, {}), **options}
    split, normalize = opts.pop("split", None), opts.pop("normalize", None)
    accepted = get_args(get_type_hints(ClassificationProtocol)["normalize"])  # the protocol field's own values
    if normalize is not None and normalize not in accepted:
        raise ConfigError(f"search.normalize={normalize!r}: one of {', '.join(accepted)}")
    fields = [f.name for f in dataclasses.fields(hooks.settings)] + ["split", "normalize"]
    for key in opts:
        if key not in fields:
            from .registry import did_you_mean

            raise ConfigError(f"search.{key}=...: unknown search option; accepted: "
                              f"{', '.join('search.' + f for f in fields)}{did_you_mean(key, fields)}")
    return build_config(hooks.settings, opts, "search options (search.KEY=VALUE)"), split, normalize


def search_stage(sup_spec, sup: dict[str, Any], hooks: Supernet, data_root: str, store, out_dir: str,
                 options: dict[str, Any], force: bool = False) -> dict[str, Any]:
    """The evolutionary search over `sup_spec`'s trained supernet (`sup`, its record); its record, from the
    store when finished."""
    import torch

    from .checkpoint import load_tuned
    from .engine import EvalSet, evaluate, resolve_device, seed_everything
    from .loaders import input_normalization, load_split
    from .run import base_record, build_model
    from .store import config_hash, data_identity

    settings, split, normalize = _settings(hooks, sup_spec.task.benchmark, options)
    split = split or sup_spec.protocol.val_split
    normalize = normalize or sup_spec.protocol.normalize
    p = dataclasses.replace(sup_spec.protocol, normalize=normalize)
    ident = {"stage": "search", "supernet": sup["config_hash"], "settings": dataclasses.asdict(settings),
             "split": split, "normalize": normalize, "seed": p.seed}
    chash = config_hash(ident)
    done = store.get(sup_spec.task.benchmark, chash)
    if done is not None and done.get("status") == "ok" and not force:
        return done
    task, ex = sup_spec.task, sup_spec.execution
    device = resolve_device(ex.device)
    seed_everything(p.seed)
    model = build_model(sup_spec, data_root)
    load_tuned(model, os.path.join(out_dir, sup["tuned_file"]))
    model.to(device).eval()
    samples = task.samples(data_root, split)
    batches, _ = load_split(task, data_root, split, p, ex, False, device, samples)
    norm = input_normalization(p, model)
    depth = len(getattr(model, "blocks", [])) or None
    choices = hooks.search_space(sup_spec.method.cfg, depth)
    state_path = os.path.join(out_dir, task.benchmark, f"{task.name.split('/', 1)[1]}_search_{chash}.state.json")
    state = None
    if os.path.isfile(state_path) and not force:
        with open(state_path, encoding="utf-8") as f:
            state = json.load(f)

    def score(arch) -> float:
        hooks.set_arch(model, arch)
        with torch.no_grad():
            return evaluate(model, EvalSet(split, batches, task.logit_subset), device, norm, ex.amp)["top1"]

    def save(s: dict[str, Any]) -> None:
        from .atomic import atomic_write_text

        os.makedirs(os.path.dirname(state_path), exist_ok=True)
        atomic_write_text(state_path, json.dumps(s))

    evo = hooks.evolution(choices, settings, random.Random(p.seed), state)
    result = evo.run(score, lambda arch: hooks.arch_params(model, arch), on_epoch=save)
    hooks.set_arch(model, None)
    if result.get("best") is None:
        raise PETLBenchError(f"{task.name} {sup_spec.method.name}: the search found no sub-network within the "
                             f"parameter limit ({settings})")
    record = {**base_record(sup_spec), "config_hash": chash, "stage": "search", "status": "ok", "metric": "top1",
              "value": result["best_acc"], "metrics": {"top1": result["best_acc"], "split": split},
              "data": data_identity(data_root, {split: samples}),
              "nas": {"arch": hooks.format_arch(result["best"]), "params": result["best_params"],
                      "settings": ident, "history": result.get("history", []),
                      "scored": len(result.get("vis", result.get("vis_dict", {})))}}
    store.append(record)
    if os.path.exists(state_path):
        os.unlink(state_path)
    return record
