"""Helpers of the RabbitMQ publishing tests: a private exchange with a capture queue, and a
minimal ``golden_parent`` payload."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import pika

from dj_cqrs.constants import SignalType
from dj_cqrs.dataclasses import TransportPayload

URL = 'amqp://guest:guest@127.0.0.1:5672/%2F'


def payload(
    pk: int = 1,
    signal_type: str = SignalType.SAVE,
    queue: str | None = None,
    cqrs_id: str = 'golden_parent',
) -> TransportPayload:
    data = {'id': pk, 'name': 'n', 'cqrs_revision': 0, 'cqrs_updated': '2024-01-01 00:00:00+00:00'}
    return TransportPayload(signal_type, cqrs_id, data, pk, queue=queue)


@contextlib.contextmanager
def capture_queue(prefix: str, routing_keys: Iterable[str]) -> Iterator[Any]:
    """A fresh topic exchange and a queue bound to it with ``routing_keys``, deleted after.

    Yields ``drain()``: the ``(routing_key, properties, body)`` of every message queued since
    the last call; ``drain.exchange`` is the exchange's name, ``drain.count()`` the queue depth.
    """
    exchange = f'{prefix}_{uuid.uuid4().hex[:8]}'
    queue = f'{exchange}_capture'
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    channel = connection.channel()
    channel.exchange_declare(exchange, exchange_type='topic', durable=True)
    channel.queue_declare(queue, arguments={'x-expires': 600_000})
    for key in routing_keys:
        channel.queue_bind(queue, exchange, routing_key=key)

    def drain() -> list[tuple[str, Any, bytes]]:
        out = []
        while True:
            method, props, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return out
            out.append((method.routing_key, props, body))

    def count() -> int:
        return channel.queue_declare(queue, passive=True).method.message_count

    drain.exchange = exchange  # type: ignore[attr-defined]
    drain.count = count  # type: ignore[attr-defined]
    try:
        yield drain
    finally:
        with contextlib.suppress(Exception):
            channel.queue_delete(queue)
            channel.exchange_delete(exchange)
            connection.close()
