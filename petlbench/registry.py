"""Name -> class registries. One per kind (methods now; tasks and backbone families later).

Duplicate names are errors; an unknown name lists the known ones and the closest match.
"""
from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from .errors import UnknownNameError

T = TypeVar("T")


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """'; did you mean 'x'?' for the closest known names (prefix matches first), or '' when nothing is close."""
    known = sorted(known)
    close = [k for k in known if k.startswith(name)][:3] if name else []
    close = close or difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f"; did you mean {' or '.join(map(repr, close))}?" if close else ""


def load_plugins(package: str, group: str) -> Callable[[], None]:
    """A registry loader: import every public module of `package` (a folder such as methods/ or tasks/), then
    every entry point of `group`, through which other packages add theirs."""

    def load() -> None:
        import importlib
        import pkgutil
        from importlib.metadata import entry_points

        pkg = importlib.import_module(package)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{package}.{info.name}")
        for ep in entry_points(group=group):
            ep.load()

    return load


class Registry(Generic[T]):
    """Maps names to registered objects. `loader` imports the modules that fill it, on first lookup."""

    def __init__(self, kind: str, loader: Callable[[], None] | None = None):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._loader = loader
        self._loaded = loader is None

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: `@METHODS.register("lora")`. Sets `obj.name = name` when the object allows it."""

        def deco(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice: {self._items[name]!r} and {obj!r}")
            self._items[name] = obj
            try:
                obj.name = name  # type: ignore[attr-defined]
            except (AttributeError, TypeError):
                pass
            return obj

        return deco

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self._loaded = True  # set first: the loader's imports call register()
            assert self._loader is not None
            self._loader()

    def get(self, name: str) -> T:
        """The object registered as `name`; `UnknownNameError` naming the known ones otherwise."""
        self._ensure_loaded()
        if not isinstance(name, str) or name not in self._items:
            known = self.names()
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; known: {', '.join(known)}{did_you_mean(str(name), known)}"
            )
        return self._items[name]

    def names(self) -> list[str]:
        self._ensure_loaded()
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        self._ensure_loaded()
        return name in self._items
