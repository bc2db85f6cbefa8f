"""Benchmarks: what a family of tasks declares, so the core never names one.

A benchmark family lives in `tasks/<family>` (a module or a folder). It registers its tasks in `TASKS` and one
`Benchmark` here, which carries everything the suite does differently for it: its published rows, its tables and
plots, extra sweep axes, how its samples become batches, extra model arguments, its own runner, the data it can
generate, and commands of its own. The core asks the benchmark of a task (`of(task)`), never tests a name:

    BENCHMARKS.register("fewshot")(Benchmark(
        "fewshot", "Few-shot FGVC (NOAH's splits)",
        published=read_fewshot_published, tables=fewshot_tables, plots=fewshot_plots,
        sweep_axes={"shots": shots_axis}))

Benchmarks load like methods: every module of the `petlbench.tasks` package (the repository's tasks/ folder),
then plug-ins declared under the `petlbench.benchmarks` entry-point group.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .registry import Registry, load_plugins

if TYPE_CHECKING:  # annotations only: the registry itself imports nothing heavy
    from .task import Task


@dataclass(frozen=True)
class Command:
    """A subcommand a benchmark adds to `petlbench` (`petlbench <name> ...`): `configure(parser)` adds its
    arguments, `run(args, ui)` does the work and returns the exit status; `ui` (cli.CommandUI) is how it talks to
    a person (say, warn, progress, close) and opens the result store (`--store`, `--out`, `--quiet` are added
    when `uses_store`)."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, Any], int]
    uses_store: bool = True


@dataclass
class Benchmark:
    """One benchmark family. Only `name` and `title` are required; every other field has the behaviour of an
    image-classification benchmark with a VTAB-style table (a column per dataset, group means).

    Tables (records -> `tables.Table`, no training code involved):
      table_name    file stem of its main table under results/<name>/ (default: `name`).
      table_title   the main table's caption (default: `title`).
      order         position among the suite's tables (lower first).
      always        write its table even with nothing measured (published rows alone).
      columns       the datasets every table shows, in order, with their groups ((dataset, group), ...); the
                    default is the measured datasets. A fixed list keeps an average over fewer datasets missing.
      only_measured show only measured datasets (the default table with `columns` unset already does).
      published     reference_dir -> the long frame of published numbers (`tables.PUBLISHED_COLUMNS`), or None.
      data_source   one phrase for the protocol footer: where the data comes from.
      notes         footer lines put first on its table.
      row_fields    record -> extra columns of its row in the results frame (few-shot: shots, split seed).
      tables        (benchmark, frame, search, reference_dir, results_dir) -> [Table]: its own table builder;
                    None: `tables.grouped_table` with the fields above.
      plots         (table, out_dir) -> [paths]: its plots; None: accuracy vs parameters; `no_plots` for none.
    Runs:
      method_recipes  method -> the recipe its runs use unless `recipe=` says otherwise: a method whose
                    authors ship settings per dataset of this benchmark (else the task's `recipe`).
      sweep_axes    extra sweep-file keys: {"shots": fn(value, seed, task) -> overrides}, applied to this family's
                    tasks only (few-shot: the k-shot split of a seed).
      dataset       (task, samples, protocol, train, on_bad) -> a torch Dataset of (input, label) read per epoch
                    (video: clips decoded by decord); None: images (decoded once, or augmented per epoch).
      model_kwargs  (task, protocol) -> extra keyword arguments of the backbone (video: num_frames).
      runner        a training loop of its own, with `run.execute`'s signature (segmentation: mmengine's Runner).
      sample_kind   what `check-data` opens: "images" or "videos".
      prepare_data  data_root or None -> the root to run on (the mini-benchmark generates its data when None).
      unrecorded_data_ok  (spec, data identity) -> whether a stored record that predates data digests may stand.
      commands      subcommands of its own (`Command`).
    """

    name: str
    title: str
    table_name: str = ""
    table_title: str = ""
    order: int = 50
    always: bool = False
    columns: Callable[[], list[tuple[str, str]]] | None = None
    only_measured: bool = False
    published: Callable[[str], Any] | None = None
    data_source: str = ""
    notes: tuple[str, ...] = ()
    row_fields: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    tables: Callable[..., list] | None = None
    plots: Callable[[Any, str], list[str]] | None = None
    sweep_axes: dict[str, Callable[[int, int | None, Any], dict[str, Any]]] = field(default_factory=dict)
    method_recipes: dict[str, str] = field(default_factory=dict)
    dataset: Callable[..., Any] | None = None
    model_kwargs: Callable[[Task, Any], dict[str, Any]] | None = None
    runner: Callable[..., dict[str, Any]] | None = None
    sample_kind: str = "images"
    prepare_data: Callable[[str | None], str] | None = None
    unrecorded_data_ok: Callable[[Any, dict[str, Any]], bool] | None = None
    commands: tuple[Command, ...] = ()

    @property
    def stem(self) -> str:
        return self.table_name or self.name


def no_plots(table, out_dir: str) -> list[str]:
    """`Benchmark.plots` for a benchmark without plots."""
    return []


class BenchmarkRegistry(Registry[Benchmark]):
    def add(self, bench: Benchmark) -> Benchmark:
        return self.register(bench.name)(bench)


BENCHMARKS: BenchmarkRegistry = BenchmarkRegistry(
    "benchmark", loader=load_plugins("petlbench.tasks", "petlbench.benchmarks"))


def of(task: Task) -> Benchmark:
    """The benchmark of `task`; a task whose family declares none gets the defaults (a plain image benchmark)."""
    return get(task.benchmark)


def get(name: str) -> Benchmark:
    """The benchmark `name`, or the defaults for a name only records know (a benchmark no longer installed)."""
    return BENCHMARKS.get(name) if name in BENCHMARKS else Benchmark(name, f"{name}: top1", only_measured=True)
