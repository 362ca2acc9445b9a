"""Run a function on chosen modules right after they load, in a child interpreter that runs a command.

A meta path finder wraps the loader of the named modules, so the command still imports everything itself,
when it would, and the hook sees each module before its first use. scripts/bench_startup.py times start-up
phases this way and tests/integration/test_paper_startup.py records the collector's state; both children
append this directory to ``sys.path`` and import this module, which imports nothing of the project.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Callable, Collection, Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType


class _Loader(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader, on_load: Callable[[ModuleType], None]) -> None:
        self.inner, self.on_load = inner, on_load

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self.inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.inner.exec_module(module)
        self.on_load(module)


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self, names: Collection[str], on_load: Callable[[ModuleType], None]) -> None:
        self.names, self.on_load = names, on_load

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if fullname not in self.names:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader, self.on_load)
        return spec


def install(names: Collection[str], on_load: Callable[[ModuleType], None]) -> None:
    """Call ``on_load(module)`` once each module of ``names`` has been executed, from now on."""
    sys.meta_path.insert(0, _Finder(names, on_load))
