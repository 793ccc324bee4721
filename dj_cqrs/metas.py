"""Public import path of the registering metaclasses (django-cqrs 3.1), loaded on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dj_cqrs.lazy import lazy_exports

if TYPE_CHECKING:  # the real classes for type checkers
    from dj_cqrs.master.meta import MasterMeta
    from dj_cqrs.replica.mixin import ReplicaMeta

__all__ = ['MasterMeta', 'ReplicaMeta']

__getattr__ = lazy_exports(
    __name__,
    {
        'MasterMeta': 'dj_cqrs.master.meta',
        'ReplicaMeta': 'dj_cqrs.replica.mixin',
    },
)
