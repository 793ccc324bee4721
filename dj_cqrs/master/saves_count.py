"""``cqrs_saves_count``: how many times a Python object was saved in the current transaction.

Every object saved inside a transaction is remembered (weakly) by one on-commit callback per
transaction and database, which calls ``reset_cqrs_saves_count()`` on each of them when the
transaction commits, whether the saves published a message or not. A transaction that rolls
back drops the callback with it: an object saved there counts from 1 again at its next save.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from django.db import connections, transaction

from dj_cqrs.constants import LOGGER_NAME

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

    from dj_cqrs.protocols import MasterModel

logger = logging.getLogger(LOGGER_NAME)

_ATTR = '_cqrs_saved_objects'


class _SavedObjects:
    """The objects saved in one transaction, reset by its commit."""

    __slots__ = ('hooks', 'refs', 'done')

    def __init__(self, hooks: list[tuple[set[str], Callable[[], None]]]) -> None:
        self.hooks = hooks  # the connection's on-commit list this callback was added to
        self.refs: dict[int, weakref.ref[MasterModel]] = {}
        self.done = False

    def __call__(self) -> None:
        self.done = True
        refs, self.refs = self.refs, {}
        for ref in refs.values():
            instance = ref()
            if instance is None:
                continue
            try:
                instance.reset_cqrs_saves_count()
            except Exception:
                # An override that fails must not stop the transaction's other on-commit
                # callbacks (its messages among them).
                logger.exception('CQRS saves count of pk = %s not reset.', instance.pk)


def _current(connection: BaseDatabaseWrapper, using: str) -> _SavedObjects:
    """The callback of the connection's current transaction (registered on first use)."""
    saved = connection.__dict__.get(_ATTR)
    if saved is not None and not saved.done:
        hooks = connection.run_on_commit
        if saved.hooks is hooks:
            return saved
        # Django rebuilds the list when a savepoint rolls back: still ours if still in it.
        if any(item[1] is saved for item in hooks):
            saved.hooks = hooks
            return saved
    saved = connection.__dict__[_ATTR] = _SavedObjects(connection.run_on_commit)
    transaction.on_commit(saved, using=using)
    return saved


def count_save(instance: MasterModel, using: str) -> int:
    """Count a save of ``instance`` on database ``using``: its saves in this transaction."""
    connection = connections[using]
    if not connection.in_atomic_block:
        return 0
    refs = _current(connection, using).refs
    ref = refs.get(id(instance))
    if ref is not None and ref() is instance:
        return instance.cqrs_saves_count + 1
    refs[id(instance)] = weakref.ref(instance)
    return 1
