"""Name -> implementation registries, filled by this package's modules and by other installed packages.

Adding a strategy, task adapter or backbone is adding one module to its package: the package
imports every module it holds, and each module registers its names with a decorator.

Another installed package adds its own through an entry point in the registry's group (as
lmms-eval's `lmms_eval.models` and Inspect's `inspect_ai` groups do), for example in its setup.cfg:

    [options.entry_points]
    resadapt_eval.strategies =
        keep-first = my_package.strategies:KeepFirst

The entry point's name is the registered name and its object what `get` returns. It is imported
only when that name is used, so a broken plugin fails with one line naming its entry point and
leaves every other name usable.
"""

from __future__ import annotations

import importlib
import pkgutil
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Callable

from resadapt_eval.core.types import UserError

# The entry-point groups other packages use to add to each registry.
STRATEGY_GROUP = "resadapt_eval.strategies"
ADAPTER_GROUP = "resadapt_eval.adapters"
BACKBONE_GROUP = "resadapt_eval.backbones"
TASK_CARDS_GROUP = "resadapt_eval.tasks"


def plugin_entry_points(group: str) -> list[EntryPoint]:
    """The installed packages' entry points of `group`, by name (the first of a duplicated name wins)."""
    seen: dict[str, EntryPoint] = {}
    for ep in entry_points(group=group):
        seen.setdefault(ep.name, ep)
    return [seen[name] for name in sorted(seen)]


def load_entry_point(ep: EntryPoint) -> Any:
    """The object an entry point names, or a one-line error that names the entry point and its package."""
    try:
        return ep.load()
    except Exception as e:  # any failure inside a plugin's import is the plugin's, reported as such
        dist = getattr(ep, "dist", None)
        package = f" (package {dist.name})" if dist is not None else ""
        cause = str(e).splitlines()[0] if str(e) else ""
        raise UserError(f"plugin entry point {ep.name} = {ep.value} in group {ep.group}{package} failed to load: "
                        f"{type(e).__name__}{': ' + cause if cause else ''}; fix or uninstall that package") from e


class Registry:
    def __init__(self, kind: str, package: str, group: str | None = None):
        self.kind = kind
        self.package = package
        self.group = group  # entry-point group through which other packages add names
        self._items: dict[str, Any] = {}
        self._plugins: dict[str, EntryPoint] = {}
        self._loaded = False

    def register(self, name: str) -> Callable[[Any], Any]:
        def deco(obj: Any) -> Any:
            if name in self._items and self._items[name] is not obj:
                raise RuntimeError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            return obj
        return deco

    def _load(self) -> None:
        if self._loaded:
            return
        pkg = importlib.import_module(self.package)
        for mod in pkgutil.iter_modules(pkg.__path__):
            importlib.import_module(f"{self.package}.{mod.name}")
        if self.group:
            # A built-in name is never shadowed by a plugin of the same name.
            self._plugins = {ep.name: ep for ep in plugin_entry_points(self.group) if ep.name not in self._items}
        self._loaded = True

    def names(self) -> list[str]:
        self._load()
        return sorted({*self._items, *self._plugins})

    def get(self, name: str) -> Any:
        self._load()
        if name not in self._items and name in self._plugins:
            self.register(name)(load_entry_point(self._plugins[name]))
        if name not in self._items:
            raise UserError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        return self._items[name]

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._items or name in self._plugins
