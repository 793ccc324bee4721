"""One confirmed AMQP publishing channel per process, shared by its threads.

The connection is opened on first use and kept. It is checked against the process id, so a
child created by ``fork`` (gunicorn, celery workers) opens its own instead of writing into
its parent's socket, and guarded by a lock, so threads never interleave frames. The channel
is in confirm mode: ``publish`` returns only once the broker has taken the message, and
raises when it did not (nack, unroutable, connection lost).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pika
from pika.exceptions import UnroutableError

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
        self._pid: int | None = None
        self._connection: Any = None
        self._channel: Any = None

    def publish(self, message: Outgoing) -> None:
        """Publish one message and wait for the broker's confirm."""
        self.publish_many([message])

    def publish_many(self, messages: Sequence[Outgoing]) -> None:
        """Publish several messages, each confirmed (one lock for the whole group).

        Raises :class:`Unroutable` if one is returned by the broker, or a pika error if the
        connection or channel failed (the connection is dropped; the next call reconnects).
        """
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
        with self._lock:
            connection = self._connection
            owned = self._pid == os.getpid()
            self._connection = self._channel = None
            self._pid = None
            if connection is None or not owned:
                # A forked child must not close its parent's socket: just forget it.
                return
            with contextlib.suppress(Exception):
                if connection.is_open:
                    connection.close()

    def _open_channel(self) -> Any:
        if self._pid != os.getpid():
            self._connection = self._channel = None
        if self._channel is not None and self._channel.is_open and self._connection.is_open:
            try:
                # Answers heartbeats and notices a connection the broker closed while idle.
                self._connection.process_data_events(0)
                return self._channel
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
        self._connection, self._channel, self._pid = connection, channel, os.getpid()
        return channel


def _returned_keys(err: UnroutableError) -> list[str]:
    keys = []
    for returned in getattr(err, 'messages', None) or []:
        method = getattr(returned, 'method', None)
        keys.append(getattr(method, 'routing_key', '?'))
    return keys or ['?']
