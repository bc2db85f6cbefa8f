"""Recipes: how a published table's rows were trained, as data, each field citing the authors' code.

A `Recipe` names the training procedure of one published table (RepAdapter's VTAB-1k, NOAH's few-shot, ...):
protocol fields (schedule, optimizer and its decay groups, augmentation, test transform, loss, evaluation
cadence), the settings of the baseline methods it ran (NOAH's LoRA is a fused-qkv update with dropout 0.1), and
per-method protocol changes (NOAH's VPT normalises with Inception mean/std). Every value is a `Cited`: the value
and the file:line of the authors' repository it comes from.

A run's configuration resolves as

    task protocol (dataset facts: splits, classes, image size)  <- recipe.protocol  <- recipe.method_protocol[m]
    method defaults  <- recipe.methods[m]  <- task.method_defaults (per-dataset values, e.g. RepAdapter's s)
    <- key=value overrides

`recipe=NAME` picks a recipe; every task names its default (`Task.recipe`). The resolved protocol carries the
recipe's name, so records, tables and the published rows beside them say which recipe they used.

Recipes are registered by modules under tasks/recipes/ (`RECIPES.add(Recipe(...))`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .registry import Registry, load_plugins


@dataclass(frozen=True)
class Cited:
    """A value and where the authors' code sets it ("train.py:133", "argparse default, line 84")."""

    value: Any
    source: str


@dataclass(frozen=True)
class Recipe:
    """One published training procedure. `repo`: the authors' repository ("owner/name@commit"); each `Cited`
    source is a path:line in it unless it names another file. `benchmarks`: the task families it is written for
    (a recipe for another family is an error naming the accepted ones). `deviations`: what petlbench does
    differently on purpose, and why (printed by `petlbench recipes` and the docs)."""

    name: str
    summary: str
    repo: str
    benchmarks: tuple[str, ...]
    protocol: dict[str, Cited] = field(default_factory=dict)
    methods: dict[str, dict[str, Cited]] = field(default_factory=dict)
    method_protocol: dict[str, dict[str, Cited]] = field(default_factory=dict)
    # Per-dataset values (a task name -> fields): protocol fields, or "METHOD.KEY" for a method option, e.g.
    # {"vtab/cifar": {"lr": Cited(...), "vpt.tokens": Cited(...)}}. They win over the recipe's general values.
    per_task: dict[str, dict[str, Cited]] = field(default_factory=dict)
    deviations: tuple[str, ...] = ()

    def _per_task(self, task: str | None, method: str | None, want_method: bool) -> dict[str, Cited]:
        out = {}
        for k, c in self.per_task.get(task or "", {}).items():
            m, dot, key = k.partition(".")
            if dot and want_method and m == method:
                out[key] = c
            elif not dot and not want_method:
                out[k] = c
        return out

    def protocol_cited(self, method: str | None = None, task: str | None = None) -> dict[str, Cited]:
        out = dict(self.protocol)
        if method is not None:
            out.update(self.method_protocol.get(method, {}))
        out.update(self._per_task(task, method, want_method=False))
        return out

    def method_cited(self, method: str, task: str | None = None) -> dict[str, Cited]:
        return {**self.methods.get(method, {}), **self._per_task(task, method, want_method=True)}

    def protocol_values(self, method: str | None = None, task: str | None = None) -> dict[str, Any]:
        return {k: c.value for k, c in self.protocol_cited(method, task).items()}

    def method_values(self, method: str, task: str | None = None) -> dict[str, Any]:
        return {k: c.value for k, c in self.method_cited(method, task).items()}

    def sources(self, method: str | None = None, task: str | None = None) -> dict[str, str]:
        """field -> "recipe NAME: <source>" for every protocol field (and `method`'s options, as method.KEY)."""
        tag = f"recipe {self.name}"
        out = {k: f"{tag}: {c.source}" for k, c in self.protocol_cited(method, task).items()}
        if method is not None:
            out.update({f"method.{k}": f"{tag}: {c.source}" for k, c in self.method_cited(method, task).items()})
        return out

    def describe(self) -> dict[str, Any]:
        def cited(d: dict[str, Cited]) -> dict[str, Any]:
            return {k: {"value": c.value, "source": c.source} for k, c in d.items()}

        return {"name": self.name, "summary": self.summary, "repo": self.repo, "benchmarks": list(self.benchmarks),
                "protocol": cited(self.protocol), "methods": {m: cited(v) for m, v in self.methods.items()},
                "method_protocol": {m: cited(v) for m, v in self.method_protocol.items()},
                "per_task": {t: cited(v) for t, v in self.per_task.items()},
                "deviations": list(self.deviations)}


def check_recipe(recipe: Recipe) -> None:
    """ValueError when a recipe names a protocol field or a method option that does not exist (a typo in a
    recipe file would otherwise be a silent no-op)."""
    from .method import METHODS
    from .task import TASKS

    # the fields of the protocol classes of the tasks it is written for (each family's own class)
    classes = {type(TASKS.get(n).protocol) for n in TASKS.names() if TASKS.get(n).benchmark in recipe.benchmarks}
    proto = {f.name for c in classes for f in dataclasses.fields(c)}
    bad = [k for k in recipe.protocol if k not in proto]
    bad += [f"{m}:{k}" for m, d in recipe.method_protocol.items() for k in d if k not in proto]
    methods = {m: dict(opts) for m, opts in recipe.methods.items()}
    for task, d in recipe.per_task.items():
        for k, c in d.items():
            m, dot, key = k.partition(".")
            if dot:
                methods.setdefault(m, {})[key] = c
            elif k not in proto:
                bad.append(f"{task}:{k}")
    for m, opts in methods.items():
        if m not in METHODS:
            bad.append(f"method {m}")
            continue
        known = {f.name for f in dataclasses.fields(METHODS.get(m).config_cls)}
        bad += [f"{m}.{k}" for k in opts if k not in known]
    if bad:
        raise ValueError(f"recipe {recipe.name!r} names unknown fields: {', '.join(bad)}")


def side_by_side(recipes: list[Recipe]) -> list[list[str]]:
    """Rows [field, value under each recipe] for every protocol field any of `recipes` sets (then their method
    settings as METHOD.KEY), "" where a recipe leaves the field to the task. A per-method protocol value shows as
    "value (METHOD: other)"; per-dataset values as "per dataset"."""
    fields: list[str] = []
    for r in recipes:
        fields += [k for k in r.protocol if k not in fields]
    out = []
    for k in fields:
        row = [k]
        for r in recipes:
            cell = repr(r.protocol[k].value) if k in r.protocol else ""
            extra = [f"{m}: {d[k].value!r}" for m, d in r.method_protocol.items() if k in d]
            if any(k in d for d in r.per_task.values()):
                extra.append("per dataset")
            row.append(cell + (f" ({'; '.join(extra)})" if extra else ""))
        out.append(row)
    keys: list[str] = []
    for r in recipes:
        keys += [f"{m}.{k}" for m, d in r.methods.items() for k in d if f"{m}.{k}" not in keys]
    for mk in keys:
        m, k = mk.split(".", 1)
        out.append([mk] + [repr(r.methods[m][k].value) if k in r.methods.get(m, {}) else "" for r in recipes])
    return out


class RecipeRegistry(Registry[Recipe]):
    def add(self, recipe: Recipe) -> Recipe:
        return self.register(recipe.name)(recipe)


# The modules under tasks/recipes/, then other packages' recipes (the `petlbench.recipes` entry-point group).
RECIPES: RecipeRegistry = RecipeRegistry("recipe", loader=load_plugins("petlbench.tasks.recipes", "petlbench.recipes"))
