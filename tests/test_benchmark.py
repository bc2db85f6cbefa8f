"""Benchmarks are declarations in their families: the core names none of them, and a new family (tasks, its table
title, a sweep axis of its own, extra frame columns) plugs in with one module and nothing else."""
from __future__ import annotations

import ast
import importlib.util
import os
import sys

import pytest

from petlbench.benchmark import BENCHMARKS, Benchmark, of
from petlbench.method import METHODS
from petlbench.task import TASKS

CORE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "petlbench")


def _core_files():
    for root, _, files in os.walk(CORE):
        for f in files:
            if f.endswith(".py"):
                yield os.path.join(root, f)


def test_every_task_has_its_benchmark():
    for name in TASKS.names():
        task = TASKS.get(name)
        assert name.split("/", 1)[0] == task.benchmark, name
        assert task.benchmark in BENCHMARKS, f"{name}: its family declares no Benchmark"
        assert of(task) is BENCHMARKS.get(task.benchmark)


def test_core_tests_no_benchmark_name_and_imports_no_task_family():
    """No `x == "vtab"`, `in ("fewshot", ...)` or dict key on a benchmark name in petlbench/, and no import of
    petlbench.tasks (the registries load it by package name)."""
    names = set(BENCHMARKS.names())
    # a word that is also a benchmark's name, used as a media kind ("image" / "video" files in check-data)
    allowed = {("check.py", "video")}
    found = []
    for path in _core_files():
        tree = ast.parse(open(path, encoding="utf-8").read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                for c in [node.left, *node.comparators]:
                    elts = c.elts if isinstance(c, (ast.Tuple, ast.List, ast.Set)) else [c]
                    found += [f"{path}:{node.lineno} compares with {e.value!r}" for e in elts
                              if isinstance(e, ast.Constant) and e.value in names
                              and (os.path.basename(path), e.value) not in allowed]
            elif isinstance(node, ast.Dict):
                found += [f"{path}:{node.lineno} keys on {k.value!r}" for k in node.keys
                          if isinstance(k, ast.Constant) and k.value in names]
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                mod = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                if mod and (mod == "tasks" or mod.startswith("tasks.") or "petlbench.tasks" in mod):
                    found.append(f"{path}:{node.lineno} imports {mod}")
    assert not found, "\n".join(found)


def test_core_names_the_task_package_only_in_registry_loaders():
    hits = [f"{p}:{i}" for p in _core_files() for i, line in enumerate(open(p, encoding="utf-8"), 1)
            if '"petlbench.tasks' in line and "load_plugins(" not in line and "files(" not in line]
    assert not hits, hits


FAMILY = '''
from petlbench.benchmark import BENCHMARKS, Benchmark
from petlbench.task import TASKS, ClassificationProtocol, Task
from petlbench.tasks.vtab import list_file_samples


def depth_axis(depth, seed, task):
    return {"epochs": int(depth)}


BENCHMARKS.add(Benchmark("toybench", "A toy family", table_title="Toy benchmark: top-1 (%)",
                         sweep_axes={"depth": depth_axis}, row_fields=lambda r: {"toy_column": 7}))
TASKS.add(Task(name="toybench/blobs", benchmark="toybench", num_classes=3, splits=("train", "test"),
               samples_fn=list_file_samples, protocol=ClassificationProtocol(train_split="train", epochs=5,
               warmup_epochs=0, backbone="petlbench_vit_mini", weights="none", img_size=32)))
'''


@pytest.fixture
def toy_family(tmp_path):
    """A benchmark family as a user writes it, in a module of its own (outside the repository), imported as
    an entry point would be; its registrations are removed afterwards."""
    path = tmp_path / "toy_family.py"
    path.write_text(FAMILY)
    spec = importlib.util.spec_from_file_location("toy_family", path)
    module = importlib.util.module_from_spec(spec)
    TASKS.names(), BENCHMARKS.names()  # the shipped families first, as the loaders would
    spec.loader.exec_module(module)
    yield module
    TASKS._items.pop("toybench/blobs", None)
    BENCHMARKS._items.pop("toybench", None)
    sys.modules.pop("toy_family", None)


def test_a_new_family_is_one_module(toy_family, tmp_path):
    from petlbench.report import suite_tables
    from petlbench.sweep import expand, load_sweep
    from petlbench.tables import run_frame

    from records import record

    assert "toybench" in BENCHMARKS and "toybench/blobs" in TASKS
    # its sweep axis is a sweep key, applied to its tasks only
    sweep = tmp_path / "toy.yaml"
    sweep.write_text("tasks: [toybench/*, mini/digits]\nmethods: [linear]\ndepth: [2, 3]\n")
    runs = expand(load_sweep(str(sweep)), str(sweep))
    epochs = sorted(r.overrides.get("epochs", 0) for r in runs if r.task == "toybench/blobs")
    assert epochs == [2, 3]
    assert [r.overrides for r in runs if r.task == "mini/digits"] == [{}]
    # its records make its table, with its title and its own frame column
    frame = run_frame([record("toybench/blobs", "linear", 50.0), record("toybench/blobs", "lora", 60.0)])
    assert set(frame["toy_column"]) == {7}
    tables = dict(suite_tables(frame))
    assert tables["toybench"].title == "Toy benchmark: top-1 (%)"
    assert [r.label for r in tables["toybench"].rows] == ["Linear probing", "LoRA"]


def test_unknown_benchmark_of_old_records_gets_the_default_table():
    from petlbench.benchmark import get

    b = get("gone")
    assert isinstance(b, Benchmark) and b.tables is None and b.published is None and "gone" not in BENCHMARKS


def test_benchmark_commands_are_cli_subcommands():
    from petlbench.cli import build_parser

    sub = next(a for a in build_parser()._actions
               if a.dest == "command" or getattr(a, "choices", None) and "run" in a.choices)
    commands = [c.name for n in BENCHMARKS.names() for c in BENCHMARKS.get(n).commands]
    assert commands and set(commands) <= set(sub.choices)


def test_a_method_with_its_authors_per_dataset_settings_runs_them_by_default():
    """`petlbench run --task vtab/<d> --method convpass` runs the authors' setting for <d>, and its row pairs with
    the published row of that recipe; an explicit recipe= still wins."""
    from petlbench.run import resolve
    from petlbench.tables import published, recipe_key, run_frame

    from records import record

    own = BENCHMARKS.get("vtab").method_recipes
    assert own and all(m in METHODS for m in own)
    for method, recipe in own.items():
        assert resolve("vtab/svhn", method).protocol.recipe == recipe
    assert resolve("vtab/svhn", "convpass", {"recipe": "repadapter-vtab"}).protocol.recipe == "repadapter-vtab"
    assert resolve("vtab/svhn", "lora").protocol.recipe == TASKS.get("vtab/svhn").recipe  # others: the task's
    key = run_frame([record("vtab/svhn", "convpass", 90.0)])["key"].iloc[0]
    assert key == recipe_key("convpass", "convpass-vtab") and key in set(published("vtab")["key"])
