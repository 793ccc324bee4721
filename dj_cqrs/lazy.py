"""Module ``__getattr__`` that loads a public name from its home module on first use.

So a replica-only service that imports a replica class from the original's public paths never
loads the master's code (nor the outbox), and the reverse.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_exports(module: str, homes: dict[str, str]) -> Callable[[str], Any]:
    """The ``__getattr__`` of ``module``: ``homes`` maps each name to the module defining it."""

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f'module {module!r} has no attribute {name!r}')
        value = getattr(importlib.import_module(home), name)
        setattr(sys.modules[module], name, value)
        return value

    return __getattr__
