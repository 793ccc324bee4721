"""What ``manage.py cqrs_status`` knows: queue, dead letters, outbox, last applied and lag.

:func:`collect` gathers a :class:`Status`; :func:`problems` compares it with thresholds;
:func:`render` is the human table the command prints.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from django.db import DatabaseError
from django.utils import timezone

from dj_cqrs.broker_urls import mask_url
from dj_cqrs.conf import CQRSSettings, get_settings
from dj_cqrs.transport.base import BaseTransport, QueueNotDeclared
from dj_cqrs.values import map_leaves


@dataclass
class QueueStats:
    """A broker queue: messages waiting (ready) and consumers; None when unknown."""

    name: str
    messages: int | None = None
    consumers: int | None = None
    exists: bool = True


@dataclass
class CqrsIdStatus:
    """One ``cqrs_id`` of this service (master side: outbox; replica side: last applied)."""

    cqrs_id: str
    master: bool = False
    replica: bool = False
    outbox: int = 0
    last_pk: str | None = None
    last_revision: int | None = None
    last_master_updated: datetime | None = None
    last_applied_at: datetime | None = None
    last_lag: float | None = None
    applied_count: int = 0
    since_applied: float | None = None


@dataclass
class Status:
    """Everything ``cqrs_status`` knows about this service at ``collected_at``."""

    collected_at: datetime
    transport: str | None
    broker: str | None = None
    broker_error: str | None = None
    queue: QueueStats | None = None
    dead_letters: QueueStats | None = None
    outbox_count: int | None = None
    outbox_oldest_age: float | None = None
    outbox_error: str | None = None
    lag: float | None = None
    state_error: str | None = None
    cqrs_ids: list[CqrsIdStatus] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: datetimes as ISO 8601 strings, seconds as floats."""
        return map_leaves(asdict(self), _jsonable)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float):
        return round(value, 3)
    return value


def collect() -> Status:
    """Gather the status of this service (never raises for broker or table problems)."""
    from dj_cqrs.registries import MasterRegistry, ReplicaRegistry
    from dj_cqrs.transport import resolve

    settings = get_settings()
    now = timezone.now()
    transport = resolve(settings.transport) if settings.transport else None
    status = Status(collected_at=now, transport=transport.__name__ if transport else None)
    ids: dict[str, CqrsIdStatus] = {}
    for cqrs_id in MasterRegistry.models:
        ids.setdefault(cqrs_id, CqrsIdStatus(cqrs_id)).master = True
    for cqrs_id in ReplicaRegistry.models:
        ids.setdefault(cqrs_id, CqrsIdStatus(cqrs_id)).replica = True

    # Only a replica consumes a queue; a master's ``queue`` is just its name.
    if settings.queue and transport is not None and ReplicaRegistry.models:
        _collect_broker(status, transport, settings)
    if MasterRegistry.models:
        _collect_outbox(status, ids)
    if ReplicaRegistry.models:
        _collect_replica_state(status, ids, now)
    status.cqrs_ids = [ids[key] for key in sorted(ids)]
    status.lag = estimate_lag(status)
    return status


def _collect_broker(status: Status, transport: type[BaseTransport], settings: CQRSSettings) -> None:
    queue, dead_letters = settings.queue or '', settings.dead_letter_queue
    where = transport.broker_description() if transport.supports_queue_stats else transport.__name__
    status.broker = where
    try:
        if transport.supports_queue_stats:
            stats = [_stats(transport, queue), _stats(transport, dead_letters)]
        else:
            # The queue cannot be read; its dead letters maybe.
            stats = [QueueStats(queue), _dead_letters_of(transport, dead_letters)]
    except Exception as err:
        # The broker could not be asked (connection refused, timeout, bad credentials).
        status.broker_error = _error_text(err)
        return
    status.queue, status.dead_letters = stats


def _collect_outbox(status: Status, ids: dict[str, CqrsIdStatus]) -> None:
    from dj_cqrs.outbox import status as outbox_status

    try:
        backlog = outbox_status()
    except DatabaseError as err:
        status.outbox_error = f'{type(err).__name__}: {err} (did you run migrate?)'
        return
    status.outbox_count = backlog['count']
    status.outbox_oldest_age = backlog['age']
    for cqrs_id, count in backlog['by_cqrs_id'].items():
        ids.setdefault(cqrs_id, CqrsIdStatus(cqrs_id)).outbox = count


def _collect_replica_state(status: Status, ids: dict[str, CqrsIdStatus], now: datetime) -> None:
    from dj_cqrs.models import ReplicaState

    try:
        rows = list(ReplicaState.objects.all())
    except DatabaseError as err:
        status.state_error = f'{type(err).__name__}: {err} (did you run migrate?)'
        return
    for row in rows:
        item = ids.setdefault(row.cqrs_id, CqrsIdStatus(row.cqrs_id))
        item.last_pk = row.last_pk or None
        item.last_revision = row.last_revision
        item.last_master_updated = row.last_master_updated
        item.last_applied_at = row.last_applied_at
        item.last_lag = row.last_lag
        item.applied_count = row.applied_count
        if row.last_applied_at is not None:
            item.since_applied = (now - row.last_applied_at).total_seconds()


def estimate_lag(status: Status) -> float | None:
    """Seconds this replica is behind its masters (None when it never applied anything).

    With an empty queue: the lag of the last applied message. With messages waiting: at least
    the time since the master's change of the newest applied message (it grows while a worker
    is stopped).
    """
    applied = [(item.last_applied_at, item) for item in status.cqrs_ids if item.last_applied_at]
    if not applied:
        return None
    last_lag = max(applied, key=lambda pair: pair[0])[1].last_lag
    changes = [item.last_master_updated for _, item in applied if item.last_master_updated]
    if status.queue is None or not status.queue.messages or not changes:
        return last_lag
    behind = (status.collected_at - max(changes)).total_seconds()
    return max(behind, last_lag or 0.0)


def _stats(transport: type[BaseTransport], name: str) -> QueueStats:
    try:
        messages, consumers = transport.queue_stats(name)
    except QueueNotDeclared:
        return QueueStats(name, exists=False)
    return QueueStats(name, messages, consumers)


def _dead_letters_of(transport: type[BaseTransport], name: str) -> QueueStats:
    if transport.supports_dead_letters:
        with suppress(NotImplementedError):
            return QueueStats(name, messages=transport.dead_letters_count())
    return QueueStats(name)


def _error_text(err: BaseException) -> str:
    text = str(err) or repr(err)
    name = type(err).__name__
    return mask_url(text if text.startswith(name) else f'{name}: {text}')


def problems(
    status: Status,
    *,
    max_lag: float | None = None,
    max_queue: int | None = None,
    max_dead_letters: int | None = None,
    max_outbox_age: float | None = None,
) -> list[str]:
    """One line per exceeded threshold (empty: healthy)."""
    found = []
    if max_lag is not None and status.lag is not None and status.lag > max_lag:
        found.append(f'replication lag {status.lag:.1f} s exceeds --max-lag {max_lag:g}')
    queues = (
        ('queue', status.queue, ' waiting', 'max-queue', max_queue),
        ('dead-letter queue', status.dead_letters, '', 'max-dead-letters', max_dead_letters),
    )
    for kind, stats, waiting, option, limit in queues:
        if limit is not None and stats is not None and (stats.messages or 0) > limit:
            found.append(
                f'{kind} {stats.name} has {stats.messages} messages{waiting}, '
                f'more than --{option} {limit}'
            )
    age = status.outbox_oldest_age
    if max_outbox_age is not None and age is not None and age > max_outbox_age:
        found.append(
            f'oldest outbox message is {age:.1f} s old, more than --max-outbox-age '
            f'{max_outbox_age:g} ({status.outbox_count} waiting)'
        )
    return found


def seconds(value: float | None) -> str:
    """A duration for people: ``-``, ``0.012s``, ``4.2s``, ``3m05s``, ``2h14m``."""
    if value is None:
        return '-'
    if value < 10:
        return f'{value:.3f}s' if value < 1 else f'{value:.1f}s'
    whole = int(round(value))
    if whole < 3600:
        return f'{whole // 60}m{whole % 60:02d}s' if whole >= 60 else f'{whole}s'
    return f'{whole // 3600}h{whole % 3600 // 60:02d}m'


def _queue_line(label: str, stats: QueueStats) -> str:
    if not stats.exists:
        return f'{label:<13} {stats.name}: not declared yet (start cqrs_consume once)'
    messages = '?' if stats.messages is None else str(stats.messages)
    text = f'{label:<13} {stats.name}: {messages} waiting'
    if label == 'Queue' and stats.consumers is not None:
        text += f', {stats.consumers} consumer(s)'
    return text


def render(status: Status) -> str:
    """The human table printed by ``cqrs_status``."""
    where = f' ({status.broker})' if status.broker else ''
    lines = [f'{"Transport":<13} {status.transport or "-"}{where}']
    if status.broker_error:
        lines.append(f'{"Broker":<13} UNREACHABLE: {status.broker_error}')
    for label, stats in (('Queue', status.queue), ('Dead letters', status.dead_letters)):
        if stats is not None:
            lines.append(_queue_line(label, stats))
    if status.outbox_error:
        lines.append(f'{"Outbox":<13} unavailable: {status.outbox_error}')
    elif status.outbox_count is not None:
        oldest = f', oldest {seconds(status.outbox_oldest_age)}' if status.outbox_count else ''
        lines.append(f'{"Outbox":<13} {status.outbox_count} waiting{oldest}')
    if status.state_error:
        lines.append(f'{"Replica state":<13} unavailable: {status.state_error}')
    elif any(item.replica for item in status.cqrs_ids):
        unknown = ' (of the last applied message; the queue is unknown)'
        lines.append(
            f'{"Lag":<13} {seconds(status.lag)}' + (unknown if status.broker_error else '')
        )
    lines.append('')
    lines.extend(_table(status))
    return '\n'.join(lines)


_COLUMNS = ('CQRS_ID', 'SIDE', 'OUTBOX', 'APPLIED', 'LAST PK', 'REV', 'LAST APPLIED', 'LAG')


def _table(status: Status) -> list[str]:
    rows = [_COLUMNS]
    for item in status.cqrs_ids:
        side = '+'.join(
            name for name, on in (('master', item.master), ('replica', item.replica)) if on
        )
        applied = f'{seconds(item.since_applied)} ago' if item.since_applied is not None else '-'
        rows.append(
            (
                item.cqrs_id,
                side or '-',
                str(item.outbox) if item.master else '-',
                str(item.applied_count) if item.replica else '-',
                item.last_pk or '-',
                '-' if item.last_revision is None else str(item.last_revision),
                applied,
                seconds(item.last_lag),
            )
        )
    if len(rows) == 1:
        return ['No replicated models are registered in this service.']
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    return [
        '  '.join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
