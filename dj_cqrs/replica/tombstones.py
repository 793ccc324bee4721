"""Tombstones: what a replica remembers about the rows it deleted.

A DELETE message carries the revision the row was deleted at and the master's time of the
delete (``cqrs_updated``). The replica keeps both in a :class:`~dj_cqrs.models.Tombstone`, so:

* a late SAVE of an older state of the row (lower revision, changed before the delete) does not
  bring the row back;
* a late DELETE does not remove a row that is newer than the delete: a row with a higher
  revision, or a row the master created again after the delete (its revision restarts at 0 but
  its ``cqrs_updated`` is later than the delete).

Tombstones are removed after ``CQRS['replica']['CQRS_TOMBSTONE_TTL']`` seconds (default 7 days;
``None`` keeps them) by ``manage.py cqrs_prune_tombstones`` and, at most hourly, by the workers
while they apply deletes. Keep the TTL longer than the longest time a message can be delayed
(retries, dead letters replayed with ``cqrs_dead_letters retry``).

On PostgreSQL and MariaDB/MySQL, applying a DELETE and creating a missing row take a lock on
(cqrs_id, pk) until the transaction ends (:mod:`dj_cqrs.replica.rowlocks`), so a DELETE and a
SAVE of the same row on two workers are applied one after the other and the tombstone is always
seen.
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
from dj_cqrs.values import master_time

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
    """Serialise DELETE and create of one row across workers (:mod:`dj_cqrs.replica.rowlocks`).

    Returns whether a lock was taken (it is released when the transaction ends).
    """
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


def find(model: type[ReplicaMixin], pk: Any, using: str) -> Any:
    """The tombstone of row ``pk`` of ``model``, if the replica deleted it."""
    from dj_cqrs.models import Tombstone

    return (
        Tombstone.objects.using(using)
        .filter(cqrs_id=model.CQRS_ID, instance_pk=pk_text(model, pk))
        .first()
    )


def blocks_save(tombstone: Any, revision: int, updated: Any) -> bool:
    """Whether a SAVE (revision, master time) is older than the delete it would undo.

    The master's times decide when the SAVE has one: a state changed after the delete is the
    row created again on the master (its revisions restart at 0), anything else predates the
    delete, whatever its revision (a master on django-cqrs 3.1 that deletes through a stale
    object sends a revision below the row's). Without a time, the revisions decide.
    """
    moment = master_time(updated)
    if moment is None:
        return revision <= tombstone.cqrs_revision
    return moment <= tombstone.deleted_at


def delete_allowed(
    row_revision: int, row_updated: Any, revision: int, deleted_at: datetime.datetime | None
) -> bool:
    """Whether a DELETE (revision, master time) is not older than the replica's row.

    With both master times known, they decide: a row changed after the delete (created again
    on the master) stays; any other row goes, whatever the revisions (a master on django-cqrs
    3.1 deleting through a stale object sends that object's revision + 1: the row's revision,
    or below it). Without them, a revision at least the row's deletes.
    """
    if deleted_at is not None and row_updated is not None:
        return row_updated <= deleted_at
    return revision >= row_revision


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
    current = manager.filter(**key).first()
    if current is None:
        try:
            with transaction.atomic(using=using):
                manager.create(**key, **values)
        except IntegrityError:
            # Another worker recorded it first (databases without the advisory lock).
            current = manager.filter(**key).first()
        else:
            _maybe_prune(using)
            return
    if current is not None and (current.deleted_at, current.cqrs_revision) < (
        deleted_at,
        revision,
    ):
        manager.filter(pk=current.pk).update(**values)


def forget(model: type[ReplicaMixin], pk: Any, using: str) -> None:
    """Drop the tombstone of a row the master created again."""
    from dj_cqrs.models import Tombstone

    Tombstone.objects.using(using).filter(
        cqrs_id=model.CQRS_ID, instance_pk=pk_text(model, pk)
    ).delete()


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
