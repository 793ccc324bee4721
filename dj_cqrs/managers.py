"""Public import path of the managers (as in django-cqrs 3.1), loaded on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dj_cqrs.lazy import lazy_exports

if TYPE_CHECKING:  # the real classes for type checkers
    from dj_cqrs.master.manager import MasterManager
    from dj_cqrs.replica.manager import ReplicaManager

__all__ = ['MasterManager', 'ReplicaManager']

__getattr__ = lazy_exports(
    __name__,
    {
        'MasterManager': 'dj_cqrs.master.manager',
        'ReplicaManager': 'dj_cqrs.replica.manager',
    },
)
