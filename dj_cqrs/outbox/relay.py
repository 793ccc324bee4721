"""The relay: publishes the messages kept in the outbox, oldest first, then deletes them.

Several relays may run at once (one per master host, or one in each worker). On databases with
``SELECT ... FOR UPDATE SKIP LOCKED`` (PostgreSQL, MySQL 8, Oracle) each relay locks the batch
it took, so two relays never hold the same row: no message is sent twice by two relays and
none is skipped. Elsewhere (SQLite) a relay first claims each row with a conditional update of
its ``next_attempt_at`` (a lease); a relay that died mid-batch loses its lease after
``LEASE_SECONDS`` and another relay takes the rows over.

A row is deleted only after the transport returned, i.e. after the broker confirmed it (the
transports publish with confirms). A relay killed between the confirm and the delete sends the
message again later: replicas ignore it (same revision).
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import DatabaseError, connections, transaction
from django.db.models import Q
from django.utils import timezone

from dj_cqrs.constants import LOGGER_NAME, SignalType
from dj_cqrs.outbox import store

logger = logging.getLogger(LOGGER_NAME)

LEASE_SECONDS = 60.0
DEFAULT_BATCH = 100


@dataclass
class RelayResult:
    """What one relay pass did."""

    sent: int = 0
    failed: int = 0

    def __iadd__(self, other: RelayResult) -> RelayResult:
        self.sent += other.sent
        self.failed += other.failed
        return self


def payload_from_row(routing_key: str, body: str) -> Any:
    """The payload of a kept message, as it was published (direct SYNCs keep their queue)."""
    from dj_cqrs.dataclasses import TransportPayload
    from dj_cqrs.transport.routing import queue_from_routing_key

    payload = TransportPayload.decode(body, check_keys=False)
    if payload.signal_type == SignalType.SYNC:
        payload._queue = queue_from_routing_key(routing_key, payload.cqrs_id)
    return payload


def _due(now: datetime.datetime) -> Q:
    return Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)


def _publish(transport: Any, row: tuple[int, str, str]) -> BaseException | None:
    row_id, routing_key, body = row
    try:
        payload = payload_from_row(routing_key, body)
    except Exception as err:
        return err
    try:
        transport.produce(payload)
    except Exception as err:
        return err
    return None


def _log_failure(row_id: int, error: BaseException) -> None:
    logger.warning(
        'CQRS outbox relay could not publish message %s: %s.', row_id, store.error_text(error)
    )


def relay_once(*, batch: int = DEFAULT_BATCH, using: str | None = None) -> RelayResult:
    """Publish up to ``batch`` due messages in id order; stop at the first failure."""
    from dj_cqrs.transport import get_transport

    alias = store.outbox_db(using)
    transport = get_transport()
    if connections[alias].features.has_select_for_update_skip_locked:
        return _relay_locked(alias, transport, batch)
    return _relay_leased(alias, transport, batch)


def _relay_locked(alias: str, transport: Any, batch: int) -> RelayResult:
    from dj_cqrs.models import OutboxMessage

    result = RelayResult()
    with transaction.atomic(using=alias):
        rows = list(
            OutboxMessage.objects.using(alias)
            .select_for_update(skip_locked=True)
            .filter(_due(timezone.now()))
            .order_by('id')
            .values_list('id', 'routing_key', 'body')[:batch]
        )
        sent: list[int] = []
        for row in rows:
            error = _publish(transport, row)
            if error is not None:
                _log_failure(row[0], error)
                store.mark_failed(row[0], error, using=alias)
                result.failed += 1
                break
            sent.append(row[0])
        store.delete(sent, using=alias)
        result.sent = len(sent)
    return result


def _relay_leased(alias: str, transport: Any, batch: int) -> RelayResult:
    from dj_cqrs.models import OutboxMessage

    result = RelayResult()
    now = timezone.now()
    lease = now + datetime.timedelta(seconds=LEASE_SECONDS)
    candidates = list(
        OutboxMessage.objects.using(alias)
        .filter(_due(now))
        .order_by('id')
        .values_list('id', 'routing_key', 'body', 'next_attempt_at')[:batch]
    )
    for row_id, routing_key, body, seen_at in candidates:
        claimed = (
            OutboxMessage.objects.using(alias)
            .filter(pk=row_id, next_attempt_at=seen_at)
            .update(next_attempt_at=lease)
        )
        if not claimed:
            continue  # another relay took it
        error = _publish(transport, (row_id, routing_key, body))
        if error is not None:
            _log_failure(row_id, error)
            store.mark_failed(row_id, error, using=alias)
            result.failed += 1
            break
        store.delete([row_id], using=alias)
        result.sent += 1
    return result


def relay(
    *,
    batch: int = DEFAULT_BATCH,
    interval: float = 1.0,
    using: str | None = None,
    once: bool = False,
    stop: threading.Event | None = None,
    report: Callable[[RelayResult], None] | None = None,
) -> RelayResult:
    """Relay until stopped (``once``: until nothing due is left or a publish fails).

    Between passes with nothing to send (or after a failure) it sleeps ``interval`` seconds.
    """
    stop = stop or threading.Event()
    total = RelayResult()
    while not stop.is_set():
        try:
            result = relay_once(batch=batch, using=using)
        except DatabaseError:
            logger.exception('CQRS outbox relay: database error.')
            result = RelayResult(failed=1)
        total += result
        if report is not None and (result.sent or result.failed):
            report(result)
        if once:
            if result.failed or not result.sent:
                break
            continue
        if result.failed or result.sent < batch:
            stop.wait(interval)
    return total


def status(using: str | None = None) -> dict[str, Any]:
    """Backlog of the outbox: counts, oldest message, most failed message."""
    from django.db.models import Count, Max, Min

    from dj_cqrs.models import OutboxMessage

    alias = store.outbox_db(using)
    queryset = OutboxMessage.objects.using(alias)
    totals = queryset.aggregate(
        count=Count('id'), oldest=Min('created'), max_attempts=Max('attempts')
    )
    due = queryset.filter(_due(timezone.now())).count()
    last_error = (
        queryset.exclude(last_error='').order_by('-id').values_list('last_error', flat=True).first()
    )
    by_cqrs_id = dict(
        queryset.values_list('cqrs_id').annotate(n=Count('id')).order_by('cqrs_id')
    )
    return {
        'count': totals['count'],
        'due': due,
        'oldest': totals['oldest'],
        'max_attempts': totals['max_attempts'] or 0,
        'last_error': last_error or '',
        'by_cqrs_id': by_cqrs_id,
        'age': (time.time() - totals['oldest'].timestamp()) if totals['oldest'] else None,
    }
