"""``KombuTransport``: the original's topology over any kombu broker (RabbitMQ, Redis, files);
over ``amqp://`` it shares one broker with RabbitMQTransport (``docs/transports.md``)."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

import kombu
from kombu import Exchange, Queue, binding

from dj_cqrs import conf, forking
from dj_cqrs.broker_urls import mask_url, split_urls
from dj_cqrs.conf import get_settings
from dj_cqrs.constants import LOGGER_NAME
from dj_cqrs.exceptions import UnroutableError
from dj_cqrs.routing import bindings_for, routing_key_for
from dj_cqrs.transport import kombu_tls
from dj_cqrs.transport.base import PROBE_TIMEOUT, BaseTransport, QueueNotDeclared
from dj_cqrs.transport.mixins import LoggingMixin
from dj_cqrs.transport.retry import produce

if TYPE_CHECKING:
    from dj_cqrs.transport.background import BackgroundPublisher

logger = logging.getLogger(LOGGER_NAME)

DEFAULT_URL = 'amqp://localhost'
ACCEPT = ('json', 'text/plain')
"""Content the consumer accepts (never pickle)."""

PUBLISH_TIMEOUT = 10.0
"""Seconds to wait for the broker to take (confirm) one message."""


def broker_url() -> str:
    return get_settings().url or DEFAULT_URL


def connect() -> kombu.Connection:
    """A new (lazy) connection to the configured broker, publisher confirms on where possible."""
    settings = get_settings()
    options = {'confirm_publish': True, **settings.transport_options}
    url = broker_url()
    if url.split('://', 1)[0] == 'filesystem':
        # Kombu's own, but messages appear in the folder whole (see kombu_filesystem).
        from dj_cqrs.transport.kombu_filesystem import Transport as Filesystem

        return kombu.Connection(url, transport=Filesystem, transport_options=options)
    # Kombu splits a string at every ';': give it the URLs split where a new one starts.
    # amqps:// URLs verify the broker's host name (see kombu_tls).
    return kombu_tls.Connection(split_urls(url), settings.tls, transport_options=options)


def ensure_connected(connection: kombu.Connection) -> None:
    """Connect, trying each failover URL once."""
    connection.ensure_connection(
        max_retries=max(1, len(connection.alt)), interval_start=0, interval_step=0.5
    )


def is_amqp(connection: kombu.Connection) -> bool:
    return connection.transport.driver_type == 'amqp'


def exchange() -> Exchange:
    return Exchange(get_settings().exchange, type='topic', durable=True)


def _selected_ids(cqrs_ids: Any = None) -> list[str]:
    from dj_cqrs.registries import ReplicaRegistry

    ids = sorted(ReplicaRegistry.models)
    return [i for i in ids if i in set(cqrs_ids)] if cqrs_ids else ids


def service_queue(connection: kombu.Connection, cqrs_ids: Any = None) -> Queue:
    """This service's queue, bound with ``<id>`` and ``cqrs.<queue>.<id>`` for each replica."""
    name = get_settings().queue
    keys = [key for cqrs_id in _selected_ids(cqrs_ids) for key in bindings_for(cqrs_id, name)]
    return _queue(connection, name, keys)


def dead_letter_queue(connection: kombu.Connection, cqrs_ids: Any = None) -> Queue:
    """This service's dead-letter queue, bound with ``cqrs.<dlq>.<id>`` for each replica."""
    name = get_settings().dead_letter_queue
    return _queue(connection, name, [f'cqrs.{name}.{i}' for i in _selected_ids(cqrs_ids)])


def _queue(connection: kombu.Connection, name: str | None, keys: list[str]) -> Queue:
    quorum = is_amqp(connection) and get_settings().queue_type == 'quorum'
    return Queue(
        name,
        bindings=[binding(exchange(), routing_key=key) for key in keys],
        durable=True,
        queue_arguments={'x-queue-type': 'quorum'} if quorum else None,
    )


def publish(
    producer: kombu.Producer,
    payload: Any,
    expiration: float | None = None,
    mandatory: bool = False,
    body: bytes | None = None,
) -> str:
    """Publish one payload as the RabbitMQ transport does (persistent, ``text/plain``);
    ``mandatory``: AMQP brokers return it (to ``on_return``) if no queue is bound to its key."""
    settings = get_settings()
    routing_key = routing_key_for(payload, settings.queue, settings.dead_letter_queue)
    producer.publish(
        payload.encode() if body is None else body,
        exchange=settings.exchange,
        routing_key=routing_key,
        content_type='text/plain',
        content_encoding='utf-8',
        delivery_mode=2,
        expiration=expiration,
        mandatory=mandatory,
        retry=False,
        timeout=PUBLISH_TIMEOUT,
        confirm_timeout=PUBLISH_TIMEOUT,
    )
    return routing_key


class Producer:
    """A producer on a channel of its own that hears of returned messages: on AMQP brokers it
    publishes as mandatory, as RabbitMQTransport does, so a message no queue is bound to comes
    back (before its confirm) instead of vanishing silently."""

    def __init__(self, connection: kombu.Connection) -> None:
        self.mandatory = is_amqp(connection)
        self.returned: list[str] = []
        self.producer = kombu.Producer(
            connection.channel(),
            exchange=exchange(),
            on_return=self._on_return if self.mandatory else None,
        )

    def _on_return(self, exception: Any, exchange: Any, routing_key: str, message: Any) -> None:
        self.returned.append(routing_key)

    def send(
        self, payload: Any, expiration: float | None = None, body: bytes | None = None
    ) -> bool:
        """Publish; True if the broker returned the message as unroutable."""
        self.returned.clear()
        publish(self.producer, payload, expiration=expiration, mandatory=self.mandatory, body=body)
        return bool(self.returned)

    def publish_copy(
        self, payload: Any, expiration: float | None = None, body: bytes | None = None
    ) -> None:
        """Publish a copy a worker or ``cqrs_dead_letters retry`` makes (a retry, a dead
        letter); raises :class:`~dj_cqrs.exceptions.UnroutableError` for one no queue is bound
        to, on every broker."""
        settings = get_settings()
        key = routing_key_for(payload, settings.queue, settings.dead_letter_queue)
        if not self.mandatory and not self._routable(settings.exchange, key):
            raise UnroutableError(key)
        if self.send(payload, expiration, body):
            raise UnroutableError(key)

    def _routable(self, exchange: str, routing_key: str) -> bool:
        """Virtual transports (Redis, memory, files) would put an unroutable message in a
        queue nobody reads: ask their exchange table first."""
        channel: Any = self.producer.channel
        if not hasattr(channel, 'typeof'):
            return True
        table = channel.get_table(exchange)
        return bool(channel.typeof(exchange).lookup(table, exchange, routing_key, None))


class _ProducerConnection(forking.ProcessConnection):
    """The long-lived publishing connection of one process; its channel is a Producer."""

    def _release(self, connection: kombu.Connection) -> None:
        try:
            connection.release()
        except Exception:  # a broken connection cannot always close cleanly
            logger.debug('Closing the Kombu producer connection failed.', exc_info=True)

    def publish_once(self, payload: Any, body: bytes | None = None) -> bool:
        """One try under the lock (a back-off is the caller's, outside it, so that the other
        threads of a web worker do not queue behind a sleeping one); True if the broker
        returned the message as unroutable. An error drops the connection and is raised."""
        forking.check()
        with self._lock:
            try:
                if self._channel is None:
                    connection = connect()
                    ensure_connected(connection)
                    self._connection, self._channel = connection, Producer(connection)
                return bool(self._channel.send(payload, body=body))
            except Exception:  # connection, channel and confirm errors alike
                self.close()
                raise


_producer = _ProducerConnection()

conf.on_reset(_producer.close)


def _background() -> BackgroundPublisher:
    from dj_cqrs.transport import kombu_publisher  # imports this module: loaded on first use

    return kombu_publisher._publisher


class KombuTransport(LoggingMixin, BaseTransport):
    """Publishes and consumes through kombu; the broker is chosen by the URL."""

    @classmethod
    def broker_description(cls) -> str:
        return mask_url(broker_url())

    @classmethod
    def queue_stats(cls, queue: str) -> tuple[int | None, int | None]:
        """(messages ready, consumers) of ``queue``, through a short connection of its own
        (consumers: AMQP brokers only)."""
        connection = connect()
        try:
            connection.ensure_connection(
                max_retries=1, interval_start=0, interval_step=0, timeout=PROBE_TIMEOUT
            )
            channel = connection.channel()
            try:
                ok = channel.queue_declare(queue=queue, passive=True)
            except connection.channel_errors as err:
                raise QueueNotDeclared(queue) from err
            finally:
                with contextlib.suppress(Exception):
                    channel.close()
            # Virtual transports (Redis, memory) do not track consumers and always say 0.
            return ok.message_count, ok.consumer_count if is_amqp(connection) else None
        finally:
            with contextlib.suppress(Exception):
                connection.release()

    @classmethod
    def produce(cls, payload: Any) -> bool:
        """Publish (confirmed where the broker confirms), retrying on a fresh connection; in
        the background (:mod:`~dj_cqrs.transport.kombu_publisher`) with async confirms."""
        return produce(
            cls,
            payload,
            _background,
            lambda payload, _key: _producer.publish_once(payload),
            lambda err: True,
        )

    @classmethod
    def consume(cls, cqrs_ids: Any = None, **kwargs: Any) -> None:
        """Consume this service's queue until stopped (SIGTERM/SIGINT in the main thread)."""
        from dj_cqrs.transport.kombu_consumer import KombuWorker

        KombuWorker(cqrs_ids=cqrs_ids, sender=cls).run(handle_signals=True)

    @staticmethod
    def request_stop() -> None:
        """Stop this process's consumers after their current message (signal-safe)."""
        from dj_cqrs.transport.kombu_consumer import request_stop

        request_stop()

    @staticmethod
    def clean_connection(*args: Any, **kwargs: Any) -> None:
        """Close this process's publishing connection (a new one opens on the next publish)."""
        _producer.close()

    @staticmethod
    def _dead_letter_queue() -> contextlib.AbstractContextManager[Any]:
        from dj_cqrs.transport.kombu_consumer import open_dead_letters

        return open_dead_letters()
