"""Public import path of the managers (as in django-cqrs 3.1)."""

from dj_cqrs.master.manager import MasterManager
from dj_cqrs.replica.manager import ReplicaManager

__all__ = ['MasterManager', 'ReplicaManager']
