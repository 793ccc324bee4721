"""Public import path of the registering metaclasses (as in django-cqrs 3.1)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dj_cqrs.lazy import lazy_exports

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

__getattr__ = lazy_exports(__name__, _HOMES)
