"""Public import path of the managers (as in django-cqrs 3.1)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the real classes for type checkers
    from dj_cqrs.master.manager import MasterManager
    from dj_cqrs.replica.manager import ReplicaManager

__all__ = ['MasterManager', 'ReplicaManager']

# Each name is loaded on first use: a replica-only service that imports a replica class
# from here never loads the master's code (nor the outbox), and the reverse.
_HOMES = {
    'MasterManager': 'dj_cqrs.master.manager',
    'ReplicaManager': 'dj_cqrs.replica.manager',
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
