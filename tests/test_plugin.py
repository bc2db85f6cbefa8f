"""A method from another package is one module and one entry point (group `petlbench.methods`): the registry, the
CLI and the whole test matrix pick it up with no edit to petlbench. The plug-in is written under tmp_path, as an
installed distribution would leave it (a module and its `*.dist-info/entry_points.txt`), and found through
PYTHONPATH by fresh interpreters."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

PLUGIN = textwrap.dedent('''
    """A test plug-in: a learnable per-channel scale on each MLP output (an output affine: it merges)."""
    from dataclasses import dataclass

    import torch
    import torch.nn as nn

    from petlbench.method import OutputAffine, PETLMethod, register_method


    @dataclass
    class Cfg:
        init: float = 1.0


    class Scale(OutputAffine):
        def __init__(self, base, init):
            super().__init__(base)
            self.gamma = nn.Parameter(torch.full((self.widths[""],), init))

        def output_affine(self, proj):
            return self.gamma, None


    @register_method("zz_plugin_scale")
    class PluginScale(PETLMethod):
        config_cls = Cfg
        sites = ("mlp_out",)

        def wrap(self, site):
            return Scale(site.module, self.cfg.init)
''')


def _install(root) -> dict[str, str]:
    """The plug-in module and its distribution metadata under `root`; the environment that finds them."""
    (root / "zz_plugin_scale.py").write_text(PLUGIN)
    dist = root / "zz_plugin_scale-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: zz-plugin-scale\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[petlbench.methods]\nzz_plugin_scale = zz_plugin_scale\n")
    path = os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}


def test_an_entry_point_is_a_method(tmp_path):
    import petlbench.methods

    methods_dir = os.path.dirname(petlbench.methods.__file__)
    before = sorted(os.listdir(methods_dir))
    env = _install(tmp_path)
    listing = subprocess.run([sys.executable, "-m", "petlbench.cli", "methods"], capture_output=True, text=True,
                             timeout=120, env=env)
    assert listing.returncode == 0, listing.stderr
    line = next((ln for ln in listing.stdout.splitlines() if ln.startswith("zz_plugin_scale")), "")
    assert "init=1.0" in line and line.split()[1] == "mergeable", listing.stdout
    # The whole method matrix runs on it with no other edit.
    tests = os.path.join(os.path.dirname(__file__), "test_methods.py")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", tests, "-k",
                          "zz_plugin_scale"], capture_output=True, text=True, timeout=300, env=env,
                         cwd=os.path.dirname(os.path.dirname(__file__)))
    assert run.returncode == 0, run.stdout[-2000:]
    summary = run.stdout.strip().splitlines()[-1]
    assert "failed" not in summary and int(summary.split()[0]) >= 18, summary
    assert sorted(os.listdir(methods_dir)) == before  # nothing was written into methods/


def test_without_the_entry_point_there_is_no_such_method():
    """The listing above comes from the entry point: a fresh interpreter without it does not know the name."""
    r = subprocess.run([sys.executable, "-m", "petlbench.cli", "methods"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "zz_plugin_scale" not in r.stdout, r.stderr
