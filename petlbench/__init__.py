"""petlbench: parameter-efficient transfer learning methods, benchmarks and tables on one footing.

    import petlbench
    petlbench.list_methods()
    model = petlbench.create_model("vit_base_patch16_224", method="repadapter", num_classes=100)
    petlbench.count_trainable(model, include_head=False)
    plain = petlbench.merge(model)
    petlbench.save_tuned(model, "task.safetensors"); petlbench.load_tuned(model, "task.safetensors")
"""
from typing import TYPE_CHECKING

# The public names resolve on first use (PEP 562), so tools that only read results (`petlbench table`, `plot`)
# never import torch or timm (about 4 s).
_EXPORTS = {
    "api": ("apply_method", "count_paper", "count_trainable", "create_model", "get_method", "list_methods", "merge",
            "method_of"),
    "checkpoint": ("load_tuned", "save_tuned"),
    "errors": ("CheckpointError", "ConfigError", "MergeError", "PETLBenchError", "UnknownNameError"),
    "method": ("METHODS", "PETLInfo", "PETLMethod", "Wrapper", "register_method"),
    "sites": ("Site",),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str):
    if name in _WHERE:
        import importlib

        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'petlbench' has no attribute {name!r}")


if TYPE_CHECKING:
    from .api import (
        apply_method,
        count_paper,
        count_trainable,
        create_model,
        get_method,
        list_methods,
        merge,
        method_of,
    )
    from .checkpoint import load_tuned, save_tuned
    from .errors import CheckpointError, ConfigError, MergeError, PETLBenchError, UnknownNameError
    from .method import METHODS, PETLInfo, PETLMethod, Wrapper, register_method
    from .sites import Site

__version__ = "0.1.0"  # the one place it is written: pyproject.toml reads it (dynamic = ["version"])
__all__ = [
    "create_model", "apply_method", "list_methods", "get_method", "method_of", "count_trainable", "count_paper",
    "merge", "save_tuned", "load_tuned", "PETLMethod", "Wrapper", "register_method", "METHODS", "PETLInfo", "Site",
    "PETLBenchError", "ConfigError", "UnknownNameError", "CheckpointError", "MergeError",
]
