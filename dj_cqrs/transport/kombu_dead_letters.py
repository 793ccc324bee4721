"""Dead-letter queue operations of ``KombuTransport`` (``manage.py cqrs_dead_letters``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import kombu
from kombu.message import Message

from dj_cqrs.broker_urls import mask_url
from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.exceptions import TransportError, UnroutableError
from dj_cqrs.transport import kombu as kombu_transport
from dj_cqrs.transport.dead_letters import Report, retry_all
from dj_cqrs.transport.kombu import KombuTransport
from dj_cqrs.transport.kombu_consumer import CopyPublisher, KombuDelivery


@contextmanager
def _dead_letters() -> Iterator[tuple[kombu.Connection, kombu.Queue]]:
    """A connection and the declared (bound) dead-letter queue, as the original's command."""
    connection = kombu_transport.connect()
    try:
        try:
            kombu_transport.ensure_connected(connection)
        except Exception as err:
            raise TransportError(
                mask_url(
                    f'Cannot connect to {kombu_transport.broker_url()}: {type(err).__name__}: {err}'
                )
            ) from err
        channel = connection.channel()
        kombu_transport.service_queue(connection)(channel).declare()
        queue = kombu_transport.dead_letter_queue(connection)(channel)
        queue.declare()
        yield connection, queue
    finally:
        connection.release()


def _count(queue: kombu.Queue) -> int:
    return queue.queue_declare().message_count


def _take(queue: kombu.Queue, limit: int) -> Iterator[Message]:
    """Up to ``limit`` messages, unacked (each is delivered once while we hold it)."""
    for _ in range(limit):
        message = queue.get(no_ack=False)
        if message is None:
            return
        yield message


def _put_back(messages: list[Message]) -> None:
    # In order: RabbitMQ puts them back where they were, the virtual transports (Redis,
    # memory, files) at the end, so either way the queue keeps its order.
    for message in messages:
        message.requeue()


def count() -> int:
    """How many messages wait in the dead-letter queue."""
    with _dead_letters() as (_, queue):
        return _count(queue)


def dump() -> list[bytes]:
    """The dead letters' bodies; the messages stay in the queue."""
    with _dead_letters() as (_, queue):
        messages = list(_take(queue, _count(queue)))
        bodies = [KombuDelivery(message).body for message in messages]
        _put_back(messages)
        return bodies


def retry(report: Report | None = None) -> int:
    """Publish each dead letter to the service queue, then remove it from the dead letters."""
    with _dead_letters() as (connection, queue):
        copies = CopyPublisher(connection)

        def publish(payload: TransportPayload, body: bytes) -> None:
            try:
                copies.publish(payload, body=body)
            except UnroutableError as err:
                raise TransportError(
                    'A dead letter could not be republished: no queue is bound to its routing '
                    f'key ({err}). It stays queued.'
                ) from err

        total = _count(queue)
        kept: list[Message] = []
        try:
            messages = ((m, KombuDelivery(m).body) for m in _take(queue, total))
            return retry_all(messages, total, publish, Message.ack, KombuTransport, report, kept)
        finally:
            _put_back(kept)


def purge() -> int:
    """Drop every dead letter; returns how many there were."""
    with _dead_letters() as (_, queue):
        total = _count(queue)
        if total:
            queue.purge()
        return total
