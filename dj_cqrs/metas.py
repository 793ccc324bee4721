"""Public import path of the registering metaclasses (as in django-cqrs 3.1)."""

from dj_cqrs.master.meta import MasterMeta
from dj_cqrs.replica.meta import ReplicaMeta

__all__ = ['MasterMeta', 'ReplicaMeta']
