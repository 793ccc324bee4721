"""Writing and reading outbox rows: the durable copy of a message that is not (yet) confirmed.

A row holds the exact body and routing key of one message.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from django.db import router
from django.db.models import F, QuerySet
from django.utils import timezone

from dj_cqrs.broker_urls import mask_url
from dj_cqrs.conf import get_settings
from dj_cqrs.routing import routing_key_for

if TYPE_CHECKING:
    from dj_cqrs.dataclasses import TransportPayload
    from dj_cqrs.models import OutboxMessage

_MAX_ERROR_TEXT = 2000
_MAX_BACKOFF = 300.0


def outbox_db(using: str | None = None) -> str:
    """The database alias that holds the outbox rows for a change written on ``using``."""
    from dj_cqrs.models import OutboxMessage

    return using or router.db_for_write(OutboxMessage)


def rows(using: str | None = None) -> QuerySet[OutboxMessage]:
    """The outbox rows on that database."""
    from dj_cqrs.models import OutboxMessage

    return OutboxMessage.objects.using(outbox_db(using))


def row_fields(payload: TransportPayload) -> dict[str, Any]:
    """Column values of an outbox row for ``payload`` (raises if the body can't be encoded)."""
    settings = get_settings()
    return {
        'cqrs_id': payload.cqrs_id,
        'signal_type': str(payload.signal_type),
        'instance_pk': str(payload.pk),
        'routing_key': routing_key_for(payload, settings.queue, settings.dead_letter_queue),
        'body': payload.encode().decode('ascii'),
    }


def error_text(error: BaseException | str | None) -> str:
    if error is None:
        return ''
    text = f'{type(error).__name__}: {error}' if isinstance(error, BaseException) else str(error)
    return mask_url(text)[:_MAX_ERROR_TEXT]


def insert(
    payload: TransportPayload,
    *,
    using: str | None = None,
    error: BaseException | str | None = None,
    attempts: int = 0,
    not_before: datetime.datetime | None = None,
) -> int:
    """Write one message; returns the row id. Runs in the caller's transaction, if any."""
    row = rows(using).create(
        **row_fields(payload),
        attempts=attempts,
        last_error=error_text(error),
        next_attempt_at=not_before,
    )
    return row.pk


def replace_body(row_id: int, payload: TransportPayload, *, using: str | None = None) -> bool:
    """Point an existing row at a newer body of the same message (same transaction)."""
    fields = row_fields(payload)
    row = rows(using).filter(pk=row_id)
    return bool(row.update(body=fields['body'], routing_key=fields['routing_key']))


def delete(row_ids: list[int], *, using: str | None = None) -> None:
    """Remove rows whose messages the broker confirmed."""
    if row_ids:
        rows(using).filter(pk__in=row_ids).delete()


def mark_failed(
    row_id: int, error: BaseException | str | None, *, using: str | None = None
) -> None:
    """Count a failed try and push the row's next try back (exponential, capped)."""
    queryset = rows(using).filter(pk=row_id)
    attempts = queryset.values_list('attempts', flat=True).first()
    if attempts is None:
        return
    delay = min(get_settings().master.outbox_retry_delay * 2**attempts, _MAX_BACKOFF)
    queryset.update(
        attempts=F('attempts') + 1,
        last_error=error_text(error),
        next_attempt_at=timezone.now() + datetime.timedelta(seconds=delay),
    )
