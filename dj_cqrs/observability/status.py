"""What ``manage.py cqrs_status`` reports: queue, dead letters, outbox, last applied and lag.

:func:`collect` gathers a :class:`Status` (broker numbers through a short connection of its
own, database numbers through the ORM); :func:`problems` compares it with thresholds;
:func:`render` prints it as a table and :meth:`Status.to_dict` as JSON.

Broker numbers come from a passive ``queue_declare`` (ready messages and consumers; messages a
worker holds unacked are not "waiting"). A custom transport can provide them with a classmethod
``queue_stats(queue: str) -> tuple[int, int | None]`` (messages, consumers).

The replication lag of the service is an estimate made from ``ReplicaState``: when nothing is
waiting in the queue it is the lag of the last applied message; when messages wait, the replica
is at least as far behind as the master's change of the newest applied message, so it is the
time since that change (it grows while a worker is stopped).
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from django.db import DatabaseError
from django.utils import timezone

from dj_cqrs.broker_urls import mask_url
from dj_cqrs.conf import CQRSSettings, get_settings

PROBE_TIMEOUT = 5.0
"""Seconds to wait for the broker before reporting it unreachable."""


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
        return _jsonable(asdict(self))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_jsonable(item) for item in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float):
        return round(value, 3)
    return value


class BrokerUnreachable(Exception):
    """The broker could not be asked (connection refused, timeout, bad credentials)."""


# Collection --------------------------------------------------------------------------------


def collect(now: datetime | None = None) -> Status:
    """Gather the status of this service (never raises for broker or table problems)."""
    from dj_cqrs.registries import MasterRegistry, ReplicaRegistry

    settings = get_settings()
    now = now or timezone.now()
    transport = _transport(settings)
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


def _transport(settings: CQRSSettings) -> type | None:
    from dj_cqrs.transport import resolve

    if not settings.transport:
        return None
    return resolve(settings.transport)


def _collect_broker(status: Status, transport: type, settings: CQRSSettings) -> None:
    names = (settings.queue, settings.dead_letter_queue)
    try:
        status.broker, stats = queue_stats(transport, names)
    except BrokerUnreachable as err:
        status.broker, status.broker_error = err.args[0], err.args[1]
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
    """Seconds this replica is behind its masters (None when it never applied anything)."""
    applied = [item for item in status.cqrs_ids if item.last_applied_at is not None]
    if not applied:
        return None
    newest = max(applied, key=lambda item: item.last_applied_at)
    last_lag = newest.last_lag
    waiting = status.queue.messages if status.queue is not None else None
    if not waiting:
        return last_lag
    changes = [item.last_master_updated for item in applied if item.last_master_updated]
    if not changes:
        return last_lag
    behind = (status.collected_at - max(changes)).total_seconds()
    return max(behind, last_lag or 0.0)


# Broker probes -----------------------------------------------------------------------------


def queue_stats(transport: type, names: tuple[str, ...]) -> tuple[str, list[QueueStats]]:
    """(where, stats of each queue) for the configured transport; raises BrokerUnreachable."""
    from dj_cqrs.transport.inprocess import InProcessTransport

    custom = getattr(transport, 'queue_stats', None)
    if custom is not None:
        return transport.__name__, [_custom_stats(custom, name) for name in names]
    if issubclass(transport, InProcessTransport):
        # Nothing waits in process: messages are applied when published.
        queue = QueueStats(names[0], messages=0, consumers=None)
        dead = QueueStats(names[1], messages=len(InProcessTransport.dead_letters))
        return 'in process', [queue, dead]
    if _is(transport, 'dj_cqrs.transport.kombu', 'KombuTransport'):
        return _kombu_stats(names)
    if _is(transport, 'dj_cqrs.transport.rabbit_mq', 'RabbitMQTransport'):
        return _pika_stats(names)
    # Unknown transport: the queue cannot be read; its dead letters maybe.
    return transport.__name__, [QueueStats(names[0]), _dead_letters_of(transport, names[1])]


def _dead_letters_of(transport: Any, name: str) -> QueueStats:
    try:
        return QueueStats(name, messages=transport.dead_letters_count())
    except NotImplementedError:
        return QueueStats(name)
    except Exception as err:
        raise BrokerUnreachable(transport.__name__, _error_text(err)) from err


def _is(transport: type, module: str, name: str) -> bool:
    try:
        base = getattr(__import__(module, fromlist=[name]), name)
    except (ImportError, AttributeError):
        return False
    return issubclass(transport, base)


def _custom_stats(function: Any, name: str) -> QueueStats:
    try:
        messages, consumers = function(name)
    except Exception as err:
        raise BrokerUnreachable(name, _error_text(err)) from err
    return QueueStats(name, messages, consumers)


def _pika_stats(names: tuple[str, ...]) -> tuple[str, list[QueueStats]]:
    import pika
    from pika.exceptions import AMQPError, ChannelClosedByBroker

    from dj_cqrs.transport import amqp

    settings = get_settings()
    where = amqp.describe(settings)
    options = {
        'socket_timeout': PROBE_TIMEOUT,
        'blocked_connection_timeout': PROBE_TIMEOUT,
        'connection_attempts': 1,
        'stack_timeout': PROBE_TIMEOUT,
    }
    try:
        connection = pika.BlockingConnection(amqp.connection_parameters(settings, **options))
    except (AMQPError, OSError) as err:
        raise BrokerUnreachable(where, _error_text(err)) from err
    stats = []
    try:
        for name in names:
            channel = connection.channel()
            try:
                ok = channel.queue_declare(name, passive=True)
            except ChannelClosedByBroker:
                stats.append(QueueStats(name, exists=False))
                continue
            stats.append(QueueStats(name, ok.method.message_count, ok.method.consumer_count))
            channel.close()
    except (AMQPError, OSError) as err:
        raise BrokerUnreachable(where, _error_text(err)) from err
    finally:
        with contextlib.suppress(Exception):
            connection.close()
    return where, stats


def _kombu_stats(names: tuple[str, ...]) -> tuple[str, list[QueueStats]]:
    from kombu.exceptions import KombuError

    from dj_cqrs.transport import kombu as kombu_transport

    where = mask_url(kombu_transport.broker_url())
    connection = kombu_transport.connect()
    failures = (KombuError, OSError, *connection.connection_errors)
    stats = []
    try:
        connection.ensure_connection(
            max_retries=1, interval_start=0, interval_step=0, timeout=PROBE_TIMEOUT
        )
        for name in names:
            stats.append(_kombu_queue(connection, name))
    except failures as err:
        raise BrokerUnreachable(where, _error_text(err)) from err
    finally:
        with contextlib.suppress(Exception):
            connection.release()
    return where, stats


def _kombu_queue(connection: Any, name: str) -> QueueStats:
    channel = connection.channel()
    try:
        ok = channel.queue_declare(queue=name, passive=True)
    except connection.channel_errors:
        return QueueStats(name, exists=False)
    finally:
        with contextlib.suppress(Exception):
            channel.close()
    return QueueStats(name, ok.message_count, _kombu_consumers(connection, ok))


def _kombu_consumers(connection: Any, ok: Any) -> int | None:
    # Virtual transports (Redis, memory) do not track consumers and always say 0.
    if connection.transport.driver_type == 'amqp':
        return ok.consumer_count
    return None


def _error_text(err: BaseException) -> str:
    text = str(err) or repr(err)
    name = type(err).__name__
    return mask_url(text if text.startswith(name) else f'{name}: {text}')


# Thresholds --------------------------------------------------------------------------------


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
    queue = status.queue
    if max_queue is not None and queue is not None and (queue.messages or 0) > max_queue:
        found.append(
            f'queue {queue.name} has {queue.messages} messages waiting, '
            f'more than --max-queue {max_queue}'
        )
    dead = status.dead_letters
    if (
        max_dead_letters is not None
        and dead is not None
        and (dead.messages or 0) > max_dead_letters
    ):
        found.append(
            f'dead-letter queue {dead.name} has {dead.messages} messages, '
            f'more than --max-dead-letters {max_dead_letters}'
        )
    age = status.outbox_oldest_age
    if max_outbox_age is not None and age is not None and age > max_outbox_age:
        found.append(
            f'oldest outbox message is {age:.1f} s old, more than --max-outbox-age '
            f'{max_outbox_age:g} ({status.outbox_count} waiting)'
        )
    return found


# Human output ------------------------------------------------------------------------------


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


def _queue_line(label: str, stats: QueueStats | None, consumers: bool) -> str | None:
    if stats is None:
        return None
    if not stats.exists:
        return f'{label:<13} {stats.name}: not declared yet (start cqrs_consume once)'
    messages = '?' if stats.messages is None else str(stats.messages)
    text = f'{label:<13} {stats.name}: {messages} waiting'
    if consumers and stats.consumers is not None:
        text += f', {stats.consumers} consumer(s)'
    return text


def render(status: Status) -> str:
    """The human table printed by ``cqrs_status``."""
    lines = [f'{"Transport":<13} {status.transport or "-"}' + _where(status)]
    if status.broker_error:
        lines.append(f'{"Broker":<13} UNREACHABLE: {status.broker_error}')
    for label, stats in (('Queue', status.queue), ('Dead letters', status.dead_letters)):
        line = _queue_line(label, stats, consumers=label == 'Queue')
        if line:
            lines.append(line)
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


def _where(status: Status) -> str:
    return f' ({status.broker})' if status.broker else ''


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
