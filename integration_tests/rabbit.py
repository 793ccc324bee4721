"""Direct RabbitMQ access for the integration tests (pika, outside the services under test)."""

from __future__ import annotations

import contextlib
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pika

URL = 'amqp://guest:guest@127.0.0.1:5672/%2F'
EXCHANGE = 'cqrs'


@dataclass
class Message:
    """A message read off a queue."""

    routing_key: str
    properties: dict[str, Any]
    body: bytes
    redelivered: bool = False


@contextlib.contextmanager
def channel() -> Iterator[Any]:
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    try:
        yield connection.channel()
    finally:
        with contextlib.suppress(Exception):
            connection.close()


def properties_dict(props: pika.BasicProperties) -> dict[str, Any]:
    names = (
        'content_type', 'content_encoding', 'headers', 'delivery_mode', 'priority',
        'correlation_id', 'reply_to', 'expiration', 'message_id', 'timestamp', 'type',
        'user_id', 'app_id', 'cluster_id',
    )  # fmt: skip
    return {name: getattr(props, name) for name in names}


def publish_raw(
    routing_key: str,
    body: bytes,
    properties: dict[str, Any] | None = None,
    exchange: str = EXCHANGE,
) -> None:
    """Publish bytes as they are (confirmed), like a foreign master would."""
    props = {'content_type': 'text/plain', 'delivery_mode': 2}
    if properties is not None:
        props = {k: v for k, v in properties.items() if v is not None}
    with channel() as ch:
        ch.exchange_declare(exchange, exchange_type='topic', durable=True)
        ch.confirm_delivery()
        ch.basic_publish(exchange, routing_key, body, pika.BasicProperties(**props))


def queue_counts(queue: str) -> tuple[int, int] | None:
    """(messages ready, consumers) of a queue; None when it does not exist."""
    try:
        with channel() as ch:
            ok = ch.queue_declare(queue, passive=True)
            return ok.method.message_count, ok.method.consumer_count
    except pika.exceptions.ChannelClosedByBroker:
        return None


def drain(queue: str, limit: int = 10_000) -> list[Message]:
    """Take every message off a queue (acked: they are gone afterwards)."""
    out: list[Message] = []
    with channel() as ch:
        while len(out) < limit:
            method, props, body = ch.basic_get(queue, auto_ack=True)
            if method is None:
                break
            out.append(
                Message(method.routing_key, properties_dict(props), body, method.redelivered)
            )
    return out


def purge(*queues: str) -> None:
    for queue in queues:  # a channel each: purging a missing queue closes the channel
        with contextlib.suppress(pika.exceptions.ChannelClosedByBroker), channel() as ch:
            ch.queue_purge(queue)


def delete(*queues: str) -> None:
    for queue in queues:
        with contextlib.suppress(Exception), channel() as ch:
            ch.queue_delete(queue)


def delete_exchange(exchange: str) -> None:
    with contextlib.suppress(Exception), channel() as ch:
        ch.exchange_delete(exchange)


def bindings_of(queue: str, exchange: str = EXCHANGE) -> set[str]:
    """Routing keys bound from ``exchange`` to ``queue`` (via rabbitmqctl)."""
    import subprocess

    out = subprocess.run(
        ['rabbitmqctl', '-q', 'list_bindings', 'source_name', 'destination_name', 'routing_key'],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    keys = set()
    for line in out.splitlines():
        parts = line.split('\t')
        if len(parts) == 3 and parts[0] == exchange and parts[1] == queue:
            keys.add(parts[2])
    return keys


@dataclass
class Capture:
    """A private queue bound to some routing keys: reads what a master publishes."""

    routing_keys: list[str]
    exchange: str = EXCHANGE
    name: str = field(default_factory=lambda: f'it_capture_{uuid.uuid4().hex[:8]}')

    def __enter__(self) -> Capture:
        with channel() as ch:
            ch.exchange_declare(self.exchange, exchange_type='topic', durable=True)
            ch.queue_declare(self.name, arguments={'x-expires': 3_600_000})
            for key in self.routing_keys:
                ch.queue_bind(self.name, self.exchange, routing_key=key)
        return self

    def __exit__(self, *exc: Any) -> None:
        delete(self.name)

    def messages(self, count: int = 1, timeout: float = 10.0) -> list[Message]:
        """At least ``count`` messages (all that arrived), waiting up to ``timeout``."""
        got: list[Message] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got.extend(drain(self.name))
            if len(got) >= count:
                break
            time.sleep(0.1)
        return got


def peek(queue: str, limit: int = 1000) -> list[Message]:
    """Read messages without removing them (unacked, returned when the connection closes)."""
    out: list[Message] = []
    with channel() as ch:
        while len(out) < limit:
            method, props, body = ch.basic_get(queue, auto_ack=False)
            if method is None:
                break
            out.append(
                Message(method.routing_key, properties_dict(props), body, method.redelivered)
            )
    return out


def body(
    cqrs_id: str,
    pk: object,
    data: dict,
    signal_type: str = 'SAVE',
    expires: str | None = '2100-01-01T00:00:00+00:00',
    retries: int = 0,
) -> bytes:
    """A message body as the original's master writes it."""
    import json

    message = {
        'signal_type': signal_type,
        'cqrs_id': cqrs_id,
        'instance_data': data,
        'previous_data': None,
        'instance_pk': pk,
        'correlation_id': None,
        'retries': retries,
        'expires': expires,
        'meta': None,
    }
    return json.dumps(message, separators=(',', ':')).encode()


def rabbitmqctl(*args: str) -> None:
    """Run ``rabbitmqctl`` on this machine's broker (``stop_app``, ``start_app``, ...)."""
    subprocess.run(['rabbitmqctl', '-q', *args], check=True, timeout=120, capture_output=True)


def broker_up() -> bool:
    """Whether the broker answers AMQP again (after ``start_app``)."""
    try:
        queue_counts('amq.rabbitmq.nonexistent')
        return True
    except Exception:
        return False
