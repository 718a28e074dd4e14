"""name → implementation, for generators, targets and scorers.

Built-ins and third-party plugins share one path: a built-in is registered by its dotted
`module:attr` string (imported lazily, so optional dependencies load only when used) and a
plugin by the entry-point group `synthloop.<kind>s` (e.g. `synthloop.scorers`), or directly
with `Registry.register(name, obj)` / the decorator `Registry.add(name)`.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from synthloop.errors import ConfigError, MissingDependency

T = TypeVar("T")


def import_object(ref: str, *, what: str = "object") -> Any:
    """Import `package.module:attr` (or `package.module.attr`) with a clear error."""
    if ":" in ref:
        mod_name, _, attr = ref.partition(":")
    else:
        mod_name, _, attr = ref.rpartition(".")
    if not mod_name or not attr:
        raise ConfigError(f"{what} '{ref}' is not of the form module:function")
    try:
        module = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        if e.name and not mod_name.startswith(e.name) and e.name != mod_name:
            raise MissingDependency(e.name, f"{what} '{ref}'") from None
        raise ConfigError(f"{what} '{ref}': module '{mod_name}' not found",
                          hint="check the module path and that it is importable (PYTHONPATH)") from None
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"{what} '{ref}': '{mod_name}' has no attribute '{attr}'") from None
    return obj


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._lazy: dict[str, str] = {}
        self._loaded: dict[str, T] = {}
        self._entry_points_read = False

    def register(self, name: str, obj: T | str) -> None:
        """Register an implementation, or a lazy `module:attr` reference to one."""
        if isinstance(obj, str):
            self._lazy[name] = obj
            self._loaded.pop(name, None)
        else:
            self._loaded[name] = obj

    def add(self, name: str) -> Callable[[T], T]:
        """Decorator form of `register`."""

        def deco(obj: T) -> T:
            self.register(name, obj)
            return obj

        return deco

    def _read_entry_points(self) -> None:
        if self._entry_points_read:
            return
        self._entry_points_read = True
        for ep in entry_points(group=f"synthloop.{self.kind}s"):
            if ep.name not in self._loaded and ep.name not in self._lazy:
                self._lazy[ep.name] = ep.value

    def names(self) -> list[str]:
        self._read_entry_points()
        return sorted(set(self._lazy) | set(self._loaded))

    def get(self, name: str) -> T:
        if name in self._loaded:
            return self._loaded[name]
        self._read_entry_points()
        if name in self._lazy:
            obj: T = import_object(self._lazy[name], what=f"{self.kind} '{name}'")
            self._loaded[name] = obj
            return obj
        close = difflib.get_close_matches(name, self.names(), n=1)
        hint = f"did you mean `{close[0]}`?" if close else f"known: {', '.join(self.names())}"
        raise ConfigError(f"unknown {self.kind} kind '{name}'", hint=hint)


generators: Registry[Any] = Registry("generator")
targets: Registry[Any] = Registry("target")
scorers: Registry[Any] = Registry("scorer")
