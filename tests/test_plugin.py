"""Adding a method is one file under methods/: the registry, the CLI and the test matrix pick it up."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import petlbench.methods

PLUGIN = textwrap.dedent('''
    """A test plug-in: a learnable per-channel scale on each MLP output (mergeable through folding.py)."""
    from dataclasses import dataclass

    import torch
    import torch.nn as nn

    from petlbench.folding import fold_output_affine
    from petlbench.method import PETLMethod, Wrapper, register_method


    @dataclass
    class Cfg:
        init: float = 1.0


    class Scale(Wrapper):
        def __init__(self, base, init):
            super().__init__(base)
            self.gamma = nn.Parameter(torch.full((base.out_features,), init))

        def forward(self, x):
            return self.base(x) * self.gamma

        def merged(self):
            return fold_output_affine(self.base, self.gamma, None)


    @register_method("zz_plugin_scale")
    class PluginScale(PETLMethod):
        config_cls = Cfg
        sites = ("mlp_out",)

        def wrap(self, site):
            return Scale(site.module, self.cfg.init)
''')


def test_a_file_in_methods_is_a_method():
    folder = os.path.dirname(petlbench.methods.__file__)
    path = os.path.join(folder, "zz_plugin_scale.py")
    with open(path, "w") as f:
        f.write(PLUGIN)
    try:
        listing = subprocess.run([sys.executable, "-m", "petlbench.cli", "methods"], capture_output=True,
                                 text=True, timeout=120)
        assert listing.returncode == 0, listing.stderr
        assert "zz_plugin_scale" in listing.stdout and "init=1.0" in listing.stdout
        # The whole method matrix runs on it with no other edit.
        tests = os.path.join(os.path.dirname(__file__), "test_methods.py")
        run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", tests, "-k",
                              "zz_plugin_scale"], capture_output=True, text=True, timeout=300,
                             cwd=os.path.dirname(os.path.dirname(__file__)))
        assert run.returncode == 0, run.stdout[-2000:]
        summary = run.stdout.strip().splitlines()[-1]
        assert "failed" not in summary and int(summary.split()[0]) >= 18, summary
    finally:
        os.unlink(path)
