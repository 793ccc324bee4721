"""Tombstones: the revision and master time of the rows a replica deleted.

They keep a late SAVE of an older state from bringing a row back and a late DELETE from removing
a newer row (rules: ``docs/replica-models.md``). Pruned after ``CQRS_TOMBSTONE_TTL`` seconds by
``cqrs_prune_tombstones`` and, at most hourly, by the workers that apply deletes.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError, connections, router, transaction
from django.utils import timezone

from dj_cqrs.conf import get_settings
from dj_cqrs.constants import LOGGER_NAME
from dj_cqrs.replica import rowlocks

if TYPE_CHECKING:
    from dj_cqrs.replica.mixin import ReplicaMixin

logger = logging.getLogger(LOGGER_NAME)

_PRUNE_EVERY = 3600.0


def pk_text(model: type[ReplicaMixin], value: Any) -> str:
    """The primary key as tombstones store it (the pk field's Python value, as text)."""
    try:
        value = model._meta.pk.to_python(value)
    except Exception:  # noqa: BLE001 (keep the raw value: the lookup by pk will fail anyway)
        pass
    return str(value)


def lock_row(model: type[ReplicaMixin], pk: Any, using: str) -> bool:
    """Serialise DELETE and create of one row across workers; whether a lock was taken."""
    return lock_rows(model, [pk], using)


def lock_rows(model: type[ReplicaMixin], pks: Iterable[Any], using: str) -> bool:
    """:func:`lock_row` of many rows at once (taken in key order: no deadlock)."""
    cqrs_id = str(model.CQRS_ID)  # registered models have one
    return rowlocks.lock(connections[using], cqrs_id, [pk_text(model, pk) for pk in pks])


def tombstoned(model: type[ReplicaMixin], pks: Sequence[Any], using: str) -> set[str]:
    """Which of these rows (as :func:`pk_text`) the replica deleted and remembers."""
    from dj_cqrs.models import Tombstone
    from dj_cqrs.replica.writes import in_chunk

    stones = Tombstone.objects.using(using).filter(cqrs_id=model.CQRS_ID)
    if not stones.exists():
        return set()  # the usual case: no pk to convert, no long IN list to send
    size = in_chunk(connections[using])
    texts = [pk_text(model, pk) for pk in pks]
    found: set[str] = set()
    for start in range(0, len(texts), size):
        part = texts[start : start + size]
        found.update(stones.filter(instance_pk__in=part).values_list('instance_pk', flat=True))
    return found


def _of_row(model: type[ReplicaMixin], pk: Any, using: str) -> Any:
    from dj_cqrs.models import Tombstone

    stones = Tombstone.objects.using(using)
    return stones.filter(cqrs_id=model.CQRS_ID, instance_pk=pk_text(model, pk))


def find(model: type[ReplicaMixin], pk: Any, using: str) -> Any:
    """The tombstone of row ``pk`` of ``model``, if the replica deleted it."""
    return _of_row(model, pk, using).first()


def not_newer(revision: int, moment: Any, delete_revision: int, deleted_at: Any) -> bool:
    """Whether a state of a row (revision, master time) is not newer than a DELETE's: a SAVE
    that would undo the delete, or the replica's row that the delete would remove.

    The master's times decide when both are known, whatever the revisions (a row created again
    on the master restarts at 0; a 3.1 master deleting through a stale object sends a lower
    revision); else the revisions.
    """
    if moment is not None and deleted_at is not None:
        return bool(moment <= deleted_at)
    return revision <= delete_revision


def record(
    model: type[ReplicaMixin],
    pk: Any,
    revision: int,
    deleted_at: datetime.datetime | None,
    using: str,
) -> None:
    """Remember that row ``pk`` was deleted (keeps the most recent delete of the row)."""
    from dj_cqrs.models import Tombstone

    deleted_at = deleted_at or timezone.now()
    key = {'cqrs_id': model.CQRS_ID, 'instance_pk': pk_text(model, pk)}
    values = {'cqrs_revision': revision, 'deleted_at': deleted_at}
    manager = Tombstone.objects.using(using)
    stone = manager.filter(**key).first()
    if stone is None:
        try:
            with transaction.atomic(using=using):
                manager.create(**key, **values)
        except IntegrityError:
            # Another worker recorded it first (databases without the advisory lock).
            stone = manager.filter(**key).first()
        else:
            _maybe_prune(using)
            return
    if stone is not None and (stone.deleted_at, stone.cqrs_revision) < (deleted_at, revision):
        manager.filter(pk=stone.pk).update(**values)


def forget(model: type[ReplicaMixin], pk: Any, using: str) -> None:
    """Drop the tombstone of a row the master created again."""
    _of_row(model, pk, using).delete()


def prune(ttl: float | None = None, *, using: str | None = None) -> int:
    """Delete tombstones older than ``ttl`` seconds (default ``CQRS_TOMBSTONE_TTL``)."""
    from dj_cqrs.models import Tombstone

    if ttl is None:
        ttl = get_settings().replica.tombstone_ttl
        if ttl is None:
            return 0
    alias = using or router.db_for_write(Tombstone)
    cutoff = timezone.now() - datetime.timedelta(seconds=ttl)
    deleted, _ = Tombstone.objects.using(alias).filter(deleted_at__lt=cutoff).delete()
    return deleted


class _Pruning:
    # The first delete a process records prunes (not only once the machine has been up an
    # hour, as a start at 0.0 on the monotonic clock would).
    last = float('-inf')
    lock = threading.Lock()


def _maybe_prune(using: str) -> None:
    now = time.monotonic()
    if now - _Pruning.last < _PRUNE_EVERY or not _Pruning.lock.acquire(blocking=False):
        return
    try:
        _Pruning.last = now
        if get_settings().replica.tombstone_ttl is not None:
            prune(using=using)
    finally:
        _Pruning.lock.release()
