"""Public import path of the model mixins (as in django-cqrs 3.1)."""

from dj_cqrs.master.mixin import MasterMixin, RawMasterMixin
from dj_cqrs.replica.mixin import RawReplicaMixin, ReplicaMixin

__all__ = ['MasterMixin', 'RawMasterMixin', 'RawReplicaMixin', 'ReplicaMixin']
