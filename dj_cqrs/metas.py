"""Public import path of the registering metaclasses (as in django-cqrs 3.1)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the real classes for type checkers
    from dj_cqrs.master.meta import MasterMeta
    from dj_cqrs.replica.meta import ReplicaMeta

__all__ = ['MasterMeta', 'ReplicaMeta']

# Each name is loaded on first use: a replica-only service that imports a replica class
# from here never loads the master's code (nor the outbox), and the reverse.
_HOMES = {
    'MasterMeta': 'dj_cqrs.master.meta',
    'ReplicaMeta': 'dj_cqrs.replica.meta',
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
