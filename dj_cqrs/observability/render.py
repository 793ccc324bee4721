"""The human table ``manage.py cqrs_status`` prints from a :class:`~.status.Status`."""

from __future__ import annotations

from dj_cqrs.observability.status import QueueStats, Status


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
