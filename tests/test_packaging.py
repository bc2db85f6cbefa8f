"""What an installed petlbench carries and how it is started: `python -m petlbench`, `--version` from the one
place it is written, the shipped sweeps by name (a path still works), and a wheel built from the sources holding
every package, the sweeps, the reference CSVs, the protocols and the bundled weights."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import petlbench
from petlbench.cli import main
from petlbench.errors import ConfigError
from petlbench.sweep import load_sweep, shipped_sweeps, sweep_path

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = sorted(p.stem for p in (ROOT / "tasks" / "sweeps").glob("*.yaml"))


def test_python_dash_m_is_the_console_script():
    out = subprocess.run([sys.executable, "-m", "petlbench", "--version"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"petlbench {petlbench.__version__}"
    listed = subprocess.run([sys.executable, "-m", "petlbench", "sweeps"], capture_output=True, text=True,
                            timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()] == SWEEPS


def test_shipped_sweeps_are_the_files_under_tasks_sweeps():
    assert len(SWEEPS) >= 5 and "vtab1k" in SWEEPS
    shipped = shipped_sweeps()
    assert list(shipped) == SWEEPS
    for name, path in shipped.items():
        assert os.path.samefile(path, ROOT / "tasks" / "sweeps" / f"{name}.yaml")


def test_a_sweep_by_name_with_or_without_yaml_and_a_path_still_works(tmp_path, monkeypatch):
    packaged = shipped_sweeps()["vtab1k"]
    assert sweep_path("vtab1k") == sweep_path("vtab1k.yaml") == packaged
    assert load_sweep("vtab1k") == load_sweep(packaged)
    own = tmp_path / "mine.yaml"
    own.write_text("tasks: [mini/digits]\nmethods: [linear]\n")
    assert sweep_path(str(own)) == str(own)
    assert load_sweep(str(own))["methods"] == ["linear"]
    # a file of that name in the working directory is the user's, not the shipped one
    monkeypatch.chdir(tmp_path)
    (tmp_path / "vtab1k.yaml").write_text("tasks: [mini/digits]\nmethods: [bitfit]\n")
    assert load_sweep("vtab1k.yaml")["methods"] == ["bitfit"]
    assert sweep_path("vtab1k") == packaged  # the bare name: no file "vtab1k" here


def test_an_unknown_sweep_name_lists_the_shipped_ones(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"sweep file vtab1: no such file, nor a shipped sweep \(shipped: .*"
                                          r"vtab1k.*did you mean 'vtab1k'"):
        sweep_path("vtab1")
    with pytest.raises(ConfigError, match="No such file"):  # a path is never looked up among the shipped sweeps
        load_sweep(str(tmp_path / "vtab1k.yaml"))
    assert main(["sweep", "nosuch", "--store", str(tmp_path / "s"), "--out", str(tmp_path / "o")]) == 2
    assert "nosuch: no such file, nor a shipped sweep" in capsys.readouterr().err


def _build_wheel(dest: Path) -> Path:
    """A wheel of a copy of the sources (a build writes build/ and *.egg-info beside its sources), built with the
    setuptools of this environment (the test extra), so no package index is asked."""
    src = dest / "src"
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in ("petlbench", "methods", "tasks"):
        shutil.copytree(ROOT / name, src / name, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                          "--disable-pip-version-check", "-q", "-w", str(dest / "whl"), str(src)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    (wheel,) = (dest / "whl").glob("petlbench-*.whl")
    return wheel


def test_the_wheel_holds_every_package_and_data_file(tmp_path):
    with zipfile.ZipFile(_build_wheel(tmp_path)) as z:
        names = set(z.namelist())
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = z.read(metadata).decode()
    # every folder with an __init__.py (a new subpackage missing from pyproject's list would be absent here)
    want = set()
    for top, installed in (("petlbench", "petlbench"), ("methods", "petlbench/methods"), ("tasks", "petlbench/tasks")):
        for init in (ROOT / top).rglob("__init__.py"):
            want.add(f"{installed}/{init.relative_to(ROOT / top).as_posix()}")
    data = {
        "tasks/sweeps": ("petlbench/tasks/sweeps", "*.yaml"),
        "tasks/protocols": ("petlbench/tasks/protocols", "*"),
        "tasks/reference": ("petlbench/tasks/reference", "*"),
        "petlbench/weights": ("petlbench/weights", "*.safetensors"),
        "tasks/segmentation/configs": ("petlbench/tasks/segmentation/configs", "*.py"),
    }
    for folder, (installed, pattern) in data.items():
        files = [p for p in (ROOT / folder).glob(pattern) if p.is_file()]
        assert files, folder
        want |= {f"{installed}/{p.name}" for p in files}
    assert {n for n in want if n not in names} == set()
    assert any(n.endswith(".csv") for n in want if n.startswith("petlbench/tasks/reference/"))
    assert "petlbench/__main__.py" in names
    # the version is written once (petlbench.__version__); the wheel's metadata reads it from there
    assert f"\nVersion: {petlbench.__version__}\n" in meta
    for extra in ("test", "plots", "mini", "clip", "video", "seg", "slurm"):
        assert f"\nProvides-Extra: {extra}\n" in meta
