"""``KombuTransport``'s dead-letter queue (what ``BaseTransport.dead_letters_*`` use)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property

import kombu
from kombu.message import Message

from dj_cqrs.broker_urls import mask_url
from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.exceptions import TransportError, UnroutableError
from dj_cqrs.transport import kombu as kombu_transport
from dj_cqrs.transport.kombu_consumer import CopyPublisher, KombuDelivery


@contextmanager
def dead_letter_queue() -> Iterator[_DeadLetters]:
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
        yield _DeadLetters(connection, queue)
    finally:
        connection.release()


class _DeadLetters:
    def __init__(self, connection: kombu.Connection, queue: kombu.Queue) -> None:
        self.connection = connection
        self.queue = queue

    @cached_property
    def copies(self) -> CopyPublisher:
        return CopyPublisher(self.connection)

    def count(self) -> int:
        return self.queue.queue_declare().message_count

    def take(self, limit: int) -> Iterator[tuple[Message, bytes]]:
        """Up to ``limit`` messages, unacked (each is delivered once while we hold it)."""
        for _ in range(limit):
            message = self.queue.get(no_ack=False)
            if message is None:
                return
            yield message, KombuDelivery(message).body

    def put_back(self, messages: list[Message]) -> None:
        # In order: RabbitMQ puts them back where they were, the virtual transports (Redis,
        # memory, files) at the end, so either way the queue keeps its order.
        for message in messages:
            message.requeue()

    def publish(self, payload: TransportPayload, body: bytes) -> None:
        try:
            self.copies.publish(payload, body=body)
        except UnroutableError as err:
            raise TransportError(
                'A dead letter could not be republished: no queue is bound to its routing '
                f'key ({err}). It stays queued.'
            ) from err

    def remove(self, message: Message) -> None:
        message.ack()

    def purge(self) -> None:
        self.queue.purge()
