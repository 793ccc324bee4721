"""``RabbitMQTransport``: the original's AMQP topology and wire format, over pika."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pika

from dj_cqrs import conf
from dj_cqrs.conf import get_settings
from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.exceptions import TransportError
from dj_cqrs.transport.amqp import Topology, connection_parameters, describe, mask_url, topology_for
from dj_cqrs.transport.base import PROBE_TIMEOUT, BaseTransport, QueueNotDeclared
from dj_cqrs.transport.mixins import LoggingMixin
from dj_cqrs.transport.publisher import Publisher
from dj_cqrs.transport.rabbit_consumer import (
    CONNECTION_ERRORS,
    RabbitConsumer,
    publish_copy,
    request_stop,
)
from dj_cqrs.transport.retry import backoff as backoff  # importable here, as before
from dj_cqrs.transport.retry import is_permanent, produce

if TYPE_CHECKING:
    from dj_cqrs.transport.background import BackgroundPublisher

__all__ = ['RabbitMQTransport']


def _parameters() -> list[pika.ConnectionParameters]:
    return connection_parameters(get_settings(), blocked_connection_timeout=10)


_publisher = Publisher(_parameters, lambda: get_settings().exchange)
conf.on_reset(_publisher.close)


def _background() -> BackgroundPublisher:
    from dj_cqrs.transport import async_publisher  # loaded when this process first publishes

    return async_publisher._publisher


def _retryable(err: Exception) -> bool:
    # A 403/406 refusal (no permission, exchange of another type, message too large) is
    # final: the outbox keeps the message, no retry here.
    return isinstance(err, CONNECTION_ERRORS) and not is_permanent(getattr(err, 'reply_code', None))


class RabbitMQTransport(LoggingMixin, BaseTransport):
    CONSUMER_RETRY_TIMEOUT = 5
    PRODUCER_RETRIES = 1  # the original's name; the count is CQRS['master']['CQRS_PUBLISH_RETRIES']
    consumer_class: type[RabbitConsumer] = RabbitConsumer

    @classmethod
    def broker_description(cls) -> str:
        return describe(get_settings())

    @classmethod
    def queue_stats(cls, queue: str) -> tuple[int | None, int | None]:
        """(messages ready, consumers) of ``queue``, through a short connection of its own."""
        parameters = connection_parameters(
            get_settings(),
            socket_timeout=PROBE_TIMEOUT,
            blocked_connection_timeout=PROBE_TIMEOUT,
            connection_attempts=1,
            stack_timeout=PROBE_TIMEOUT,
        )
        connection = pika.BlockingConnection(parameters)
        try:
            channel = connection.channel()
            try:
                ok = channel.queue_declare(queue, passive=True)
            except pika.exceptions.ChannelClosedByBroker as err:
                raise QueueNotDeclared(queue) from err
            return ok.method.message_count, ok.method.consumer_count
        finally:
            with contextlib.suppress(Exception):
                connection.close()

    @classmethod
    def produce(cls, payload: TransportPayload) -> bool:
        """Publish; raise PublishError if the broker cannot take it. With async confirms the
        publishing thread (:mod:`~dj_cqrs.transport.async_publisher`) waits for the confirm."""
        return produce(
            cls,
            payload,
            _background,
            lambda payload, routing_key: _publisher.publish(routing_key, payload.encode()),
            _retryable,
        )

    @staticmethod
    def check_connection_settings(settings: Any) -> None:
        """Raise ConfigurationError for a connection option that cannot be honoured (the
        system check ``dj_cqrs.E030``, and the publishers before they connect)."""
        connection_parameters(settings)

    @classmethod
    def consume(cls, cqrs_ids: Any = None, **kwargs: Any) -> None:
        """Consume this service's queue until stopped (reconnecting after broker loss)."""
        cls.consumer_class(cls, cqrs_ids=cqrs_ids).run()

    @staticmethod
    def request_stop() -> None:
        """Make a running ``consume`` return after its current step (safe in a signal handler)."""
        request_stop()

    @staticmethod
    def clean_connection(*args: Any, **kwargs: Any) -> None:
        """Close this process's publishing connection (reopened on the next publish)."""
        _publisher.close()

    @classmethod
    @contextlib.contextmanager
    def _dead_letter_queue(cls) -> Iterator[_DeadLetters]:
        settings = get_settings()
        topology = topology_for(settings)
        try:
            connection = pika.BlockingConnection(_parameters())
        except CONNECTION_ERRORS as err:
            raise TransportError(
                f'Cannot connect to {describe(settings)}: '
                f'{type(err).__name__}: {mask_url(str(err))}'
            ) from err
        try:
            channel = connection.channel()
            _, dead = topology.declare(channel)
            channel.confirm_delivery()
            yield _DeadLetters(channel, topology, dead)
        except CONNECTION_ERRORS as err:
            raise TransportError(
                f'Dead letters on {describe(settings)} failed: '
                f'{type(err).__name__}: {mask_url(str(err))}'
            ) from err
        finally:
            with contextlib.suppress(Exception):
                connection.close()


class _DeadLetters:
    """The dead-letter queue on a confirmed channel; a message is its delivery tag."""

    def __init__(self, channel: Any, topology: Topology, count: int) -> None:
        self.channel = channel
        self.topology = topology
        self._count = count

    def count(self) -> int:
        return self._count

    def take(self, limit: int) -> Iterator[tuple[int, bytes]]:
        for _ in range(limit):
            method, _, body = self.channel.basic_get(
                self.topology.dead_letter_queue, auto_ack=False
            )
            if method is None:
                return
            yield method.delivery_tag, body

    def put_back(self, messages: list[int]) -> None:
        """Nothing to do: unacked, they return to the queue when the connection closes."""

    def publish(self, payload: TransportPayload, body: bytes) -> None:
        publish_copy(self.channel, self.topology, payload, body)

    def remove(self, message: int) -> None:
        self.channel.basic_nack(message, requeue=False)

    def purge(self) -> None:
        self.channel.queue_purge(self.topology.dead_letter_queue)
