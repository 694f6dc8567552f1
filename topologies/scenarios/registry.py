"""The scenario registry: each scenario module registers its class with `@register`, and
`flatarch scenario` / `flatarch analyse` find them here. Every module of this package is
imported by `load`, so a new scenario is a new module and nothing else.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, TypeVar

from topologies.lab.daemons import LabError

if TYPE_CHECKING:
    from topologies.scenarios.base import Scenario

S = TypeVar("S", bound="type[Scenario]")

SCENARIOS: dict[str, type[Scenario]] = {}
# The modules of the package that hold no scenario; skipping them only saves the imports.
_NOT_SCENARIOS = frozenset({"base", "registry", "progress", "traffic", "routewatch"})


def register(cls: S) -> S:
    """Class decorator: make ``cls`` a `flatarch scenario` under its `name`."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__name__} has no scenario name")
    other = SCENARIOS.get(name)
    if other is not None and other is not cls and other.__qualname__ != cls.__qualname__:
        raise TypeError(f"scenario {name!r} is registered twice ({other.__qualname__}, "
                        f"{cls.__qualname__})")
    SCENARIOS[name] = cls
    return cls


def load() -> dict[str, type[Scenario]]:
    """Every scenario of the package, imported and registered, by name."""
    import topologies.scenarios as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name not in _NOT_SCENARIOS and not info.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{info.name}")
    return dict(sorted(SCENARIOS.items()))


def get(name: str) -> type[Scenario]:
    scenarios = load()
    if name not in scenarios:
        raise LabError(f"no scenario {name!r} (available: {', '.join(scenarios)})")
    return scenarios[name]
