"""Public import path of the model mixins (as in django-cqrs 3.1), loaded on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dj_cqrs.lazy import lazy_exports

if TYPE_CHECKING:  # the real classes for type checkers
    from dj_cqrs.master.mixin import MasterMixin, RawMasterMixin
    from dj_cqrs.replica.mixin import RawReplicaMixin, ReplicaMixin

__all__ = ['MasterMixin', 'RawMasterMixin', 'RawReplicaMixin', 'ReplicaMixin']

__getattr__ = lazy_exports(
    __name__,
    {
        'MasterMixin': 'dj_cqrs.master.mixin',
        'RawMasterMixin': 'dj_cqrs.master.mixin',
        'RawReplicaMixin': 'dj_cqrs.replica.mixin',
        'ReplicaMixin': 'dj_cqrs.replica.mixin',
    },
)
