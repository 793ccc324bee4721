"""The relay: publishes the messages kept in the outbox, oldest first, then deletes them.

Several relays may run at once: each claims a batch with a lease (``next_attempt_at`` set
``LEASE_SECONDS`` ahead), publishes outside any transaction (no lock held while the broker
confirms) and deletes a row only once the broker confirmed it. A relay that dies loses its
lease and another sends the rest; a message sent twice is ignored by replicas (same revision).
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
from django.db.models import Count, Max, Min, Q
from django.utils import timezone

from dj_cqrs.broker_urls import mask_url
from dj_cqrs.constants import LOGGER_NAME, SignalType
from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.outbox import store
from dj_cqrs.routing import queue_from_routing_key
from dj_cqrs.transport import get_transport
from dj_cqrs.transport.base import waiting_for_confirms

logger = logging.getLogger(LOGGER_NAME)

LEASE_SECONDS = 60.0
DEFAULT_BATCH = 100


@dataclass
class RelayResult:
    """What one relay pass did."""

    sent: int = 0
    failed: int = 0


def _due(now: datetime.datetime) -> Q:
    return Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)


def relay_once(*, batch: int = DEFAULT_BATCH, using: str | None = None) -> RelayResult:
    """Publish up to ``batch`` due messages in id order; stop at the first failure."""
    alias = store.outbox_db(using)
    transport = get_transport()
    rows = _claim(alias, batch)
    sent: list[int] = []
    try:
        for index, (row_id, routing_key, body) in enumerate(rows):
            try:
                payload = TransportPayload.decode(body, check_keys=False)
                if payload.signal_type == SignalType.SYNC:  # a direct SYNC keeps its queue
                    payload._queue = queue_from_routing_key(routing_key, payload.cqrs_id)
                # The row is deleted below: wait for the broker's confirm even where the
                # transport would collect it in the background.
                with waiting_for_confirms():
                    transport.produce(payload)
            except Exception as error:
                logger.warning(
                    'CQRS outbox relay could not publish message %s: %s.',
                    row_id,
                    store.error_text(error),
                )
                store.mark_failed(row_id, error, using=alias)
                # Give the claimed but unsent rows back (due at once, order kept by id).
                unsent = [r[0] for r in rows[index + 1 :]]
                store.rows(alias).filter(pk__in=unsent).update(next_attempt_at=None)
                break
            sent.append(row_id)
    finally:
        # Deleted only now: a relay that dies before sends its batch again (replicas ignore
        # a message they already applied).
        store.delete(sent, using=alias)
    return RelayResult(len(sent), failed=int(len(sent) < len(rows)))  # stopped at a failure


def _claim(alias: str, batch: int) -> list[tuple[int, str, str]]:
    """Take up to ``batch`` due rows for this relay (a lease: due again if it dies)."""
    now = timezone.now()
    lease = now + datetime.timedelta(seconds=LEASE_SECONDS)
    manager = store.rows(alias)
    due = manager.filter(_due(now)).order_by('id')
    if connections[alias].features.has_select_for_update_skip_locked:
        with transaction.atomic(using=alias):
            due = due.select_for_update(skip_locked=True)
            rows = list(due.values_list('id', 'routing_key', 'body')[:batch])
            manager.filter(pk__in=[r[0] for r in rows]).update(next_attempt_at=lease)
        return rows
    # No SKIP LOCKED: claim row by row with a conditional update; a row another relay claimed
    # first no longer matches and is skipped.
    rows = []
    for row_id, routing_key, body, seen in due.values_list(
        'id', 'routing_key', 'body', 'next_attempt_at'
    )[:batch]:
        if manager.filter(pk=row_id, next_attempt_at=seen).update(next_attempt_at=lease):
            rows.append((row_id, routing_key, body))
    return rows


def relay(
    *,
    batch: int = DEFAULT_BATCH,
    interval: float = 1.0,
    using: str | None = None,
    once: bool = False,
    stop: threading.Event | None = None,
    report: Callable[[RelayResult], None] | None = None,
) -> RelayResult:
    """Relay until stopped (``once``: until nothing due is left or a publish fails), sleeping
    ``interval`` seconds after a pass with nothing to send or a failure."""
    stop = stop or threading.Event()
    total = RelayResult()
    while not stop.is_set():
        try:
            result = relay_once(batch=batch, using=using)
        except DatabaseError:
            logger.exception('CQRS outbox relay: database error.')
            result = RelayResult(failed=1)
        total.sent += result.sent
        total.failed += result.failed
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
    queryset = store.rows(using)
    totals = queryset.aggregate(
        count=Count('id'), oldest=Min('created'), max_attempts=Max('attempts')
    )
    due = queryset.filter(_due(timezone.now())).count()
    last_error = (
        queryset.exclude(last_error='').order_by('-id').values_list('last_error', flat=True).first()
    )
    by_cqrs_id = dict(queryset.values_list('cqrs_id').annotate(n=Count('id')).order_by('cqrs_id'))
    return {
        'count': totals['count'],
        'due': due,
        'oldest': totals['oldest'],
        'max_attempts': totals['max_attempts'] or 0,
        # Masked again: rows written before the masker knew every password shape.
        'last_error': mask_url(last_error or ''),
        'by_cqrs_id': by_cqrs_id,
        'age': (time.time() - totals['oldest'].timestamp()) if totals['oldest'] else None,
    }
