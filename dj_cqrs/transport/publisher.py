"""One confirmed AMQP publishing channel per process, shared by its threads (under a lock);
a forked child opens its own (the holder: :class:`dj_cqrs.forking.ProcessConnection`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import pika
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import UnroutableError

from dj_cqrs import forking
from dj_cqrs.constants import LOGGER_NAME

logger = logging.getLogger(LOGGER_NAME)


def message_properties(expiration: str | None = None) -> pika.BasicProperties:
    """The original's properties: text/plain, persistent, and an expiration for dead letters."""
    return pika.BasicProperties(content_type='text/plain', delivery_mode=2, expiration=expiration)


class Publisher(forking.ProcessConnection):
    """Publishes on a lazily opened, confirmed channel (see the module docstring)."""

    def __init__(
        self,
        parameters: Callable[[], Sequence[pika.ConnectionParameters]],
        exchange: Callable[[], str],
    ) -> None:
        self._parameters = parameters
        self._exchange = exchange
        super().__init__()

    def publish(self, routing_key: str, body: bytes) -> bool:
        """Publish one message and wait for the broker's confirm; True if the broker returned
        it (no queue is bound to its key). A pika error drops the connection and is raised."""
        forking.check()
        with self._lock:
            try:
                channel = self._open_channel()
                channel.basic_publish(
                    self._exchange(),
                    routing_key,
                    body,
                    message_properties(),
                    mandatory=True,
                )
            except UnroutableError:
                return True
            except BaseException:
                self.close()
                raise
        return False

    def _open_channel(self) -> BlockingChannel:
        connection, channel = self._connection, self._channel
        if connection and channel and connection.is_open and channel.is_open:
            try:
                # Answers heartbeats and notices a connection the broker closed while idle.
                connection.process_data_events(0)
                return channel
            except Exception:
                logger.debug('Publisher connection was lost while idle; reconnecting.')
        self.close()
        # Held at once: if opening the channel fails, publish()'s close() releases it.
        self._connection = connection = pika.BlockingConnection(list(self._parameters()))
        channel = self._channel = connection.channel()
        channel.confirm_delivery()
        channel.exchange_declare(self._exchange(), exchange_type='topic', durable=True)
        return channel
