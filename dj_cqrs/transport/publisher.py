"""One confirmed AMQP publishing channel per process, shared by its threads.

The connection is opened on first use and kept. A child created by ``fork`` (gunicorn, celery
workers) forgets it (:mod:`dj_cqrs.forking`) and opens its own instead of writing into its
parent's socket; a lock guards it, so threads never interleave frames. The channel
is in confirm mode: ``publish`` returns only once the broker has taken the message, and
raises when it did not (nack, unroutable, connection lost).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pika
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import UnroutableError

from dj_cqrs import forking
from dj_cqrs.constants import LOGGER_NAME

logger = logging.getLogger(LOGGER_NAME)

PROPERTIES = {'content_type': 'text/plain', 'delivery_mode': 2}


def message_properties(expiration: str | None = None) -> pika.BasicProperties:
    """The original's properties: text/plain, persistent, and an expiration for dead letters."""
    return pika.BasicProperties(**PROPERTIES, expiration=expiration)


@dataclass(frozen=True)
class Outgoing:
    """One message to publish."""

    routing_key: str
    body: bytes
    expiration: str | None = None


class Unroutable(Exception):
    """The broker returned a message: no queue is bound to its routing key."""


class Publisher:
    """Publishes on a lazily opened, confirmed channel (see the module docstring)."""

    def __init__(
        self,
        parameters: Callable[[], Sequence[pika.ConnectionParameters]],
        exchange: Callable[[], str],
    ) -> None:
        self._parameters = parameters
        self._exchange = exchange
        self._lock = threading.RLock()
        self._connection: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        forking.after_fork_in_child(self._forget_after_fork)

    def _forget_after_fork(self) -> None:
        # Never close (nor wait on the locks of) what belongs to the parent process.
        self._lock = threading.RLock()
        self._connection = self._channel = None

    def publish(self, message: Outgoing) -> None:
        """Publish one message and wait for the broker's confirm."""
        self.publish_many([message])

    def publish_many(self, messages: Sequence[Outgoing]) -> None:
        """Publish several messages, each confirmed (one lock for the whole group).

        Raises :class:`Unroutable` if one is returned by the broker, or a pika error if the
        connection or channel failed (the connection is dropped; the next call reconnects).
        """
        forking.check()
        with self._lock:
            channel = self._open_channel()
            exchange = self._exchange()
            try:
                for message in messages:
                    channel.basic_publish(
                        exchange,
                        message.routing_key,
                        message.body,
                        message_properties(message.expiration),
                        mandatory=True,
                    )
            except UnroutableError as err:
                raise Unroutable(', '.join(_returned_keys(err))) from err
            except BaseException:
                self.close()
                raise

    def close(self) -> None:
        """Close this process's connection (if it has one)."""
        forking.check()
        with self._lock:
            connection = self._connection
            self._connection = self._channel = None
            if connection is None:
                return
            with contextlib.suppress(Exception):
                if connection.is_open:
                    connection.close()

    def _open_channel(self) -> BlockingChannel:
        connection, channel = self._connection, self._channel
        if connection is not None and channel is not None and _both_open(connection, channel):
            try:
                # Answers heartbeats and notices a connection the broker closed while idle.
                connection.process_data_events(0)
                return channel
            except Exception:
                logger.debug('Publisher connection was lost while idle; reconnecting.')
        self.close()
        connection = pika.BlockingConnection(list(self._parameters()))
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            channel.exchange_declare(self._exchange(), exchange_type='topic', durable=True)
        except BaseException:
            with contextlib.suppress(Exception):
                connection.close()
            raise
        self._connection, self._channel = connection, channel
        return channel


def _both_open(connection: pika.BlockingConnection, channel: BlockingChannel) -> bool:
    return bool(connection.is_open and channel.is_open)


def _returned_keys(err: UnroutableError) -> list[str]:
    keys = []
    for returned in getattr(err, 'messages', None) or []:
        method = getattr(returned, 'method', None)
        keys.append(getattr(method, 'routing_key', '?'))
    return keys or ['?']
