"""``KombuTransport``: the original's topology over any kombu broker (RabbitMQ, Redis, files).

Settings: ``url`` (a kombu URL; several ``;``-separated URLs fail over, default
``amqp://localhost``), ``exchange``, ``queue``, ``consumer_prefetch_count`` and
``transport_options`` (passed to ``kombu.Connection``, e.g. the ``filesystem://`` folders).

``filesystem://`` (one machine, no broker): Kombu routes the topic exchange across processes
through the bindings it writes to ``control_folder``. Give every process the same absolute
folders, and the same folder as ``data_folder_in`` and ``data_folder_out`` (a worker publishes
its retries and dead letters to queues it reads itself)::

    CQRS['url'] = 'filesystem://'
    CQRS['transport_options'] = {
        'data_folder_in': '/var/cqrs/messages', 'data_folder_out': '/var/cqrs/messages',
        'control_folder': '/var/cqrs/control',
    }

The exchange, queues, routing keys and bodies are the RabbitMQ transport's, so over ``amqp://``
both transports (and the original's services) share one broker. Unlike the original's Kombu
transport, messages keep ``meta``, ``expires`` and ``retries``, and failures are retried and
dead-lettered like on RabbitMQ (see :mod:`dj_cqrs.transport.kombu_consumer`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import kombu
from kombu import Exchange, Queue, binding

from dj_cqrs import conf, forking, signals
from dj_cqrs.broker_urls import mask_url, split_urls
from dj_cqrs.conf import get_settings
from dj_cqrs.constants import LOGGER_NAME
from dj_cqrs.exceptions import PublishError
from dj_cqrs.transport import kombu_tls
from dj_cqrs.transport.base import BaseTransport, confirms_required
from dj_cqrs.transport.mixins import LoggingMixin, log_unroutable
from dj_cqrs.transport.retry import backoff
from dj_cqrs.transport.routing import bindings_for, routing_key_for

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


def is_amqp(connection: kombu.Connection) -> bool:
    return connection.transport.driver_type == 'amqp'


def exchange() -> Exchange:
    return Exchange(get_settings().exchange, type='topic', durable=True)


def _selected_ids(cqrs_ids: Any = None) -> list[str]:
    from dj_cqrs.registries import ReplicaRegistry

    ids = sorted(ReplicaRegistry.models)
    return [i for i in ids if i in set(cqrs_ids)] if cqrs_ids else ids


def _queue_arguments(connection: kombu.Connection) -> dict[str, Any] | None:
    if is_amqp(connection) and get_settings().queue_type == 'quorum':
        return {'x-queue-type': 'quorum'}
    return None


def service_queue(connection: kombu.Connection, cqrs_ids: Any = None) -> Queue:
    """This service's queue, bound with ``<id>`` and ``cqrs.<queue>.<id>`` for each replica."""
    name, ex = get_settings().queue, exchange()
    keys = [key for cqrs_id in _selected_ids(cqrs_ids) for key in bindings_for(cqrs_id, name)]
    return Queue(
        name,
        bindings=[binding(ex, routing_key=key) for key in keys],
        durable=True,
        queue_arguments=_queue_arguments(connection),
    )


def dead_letter_queue(connection: kombu.Connection, cqrs_ids: Any = None) -> Queue:
    """This service's dead-letter queue, bound with ``cqrs.<dlq>.<id>`` for each replica."""
    name, ex = get_settings().dead_letter_queue, exchange()
    keys = [f'cqrs.{name}.{cqrs_id}' for cqrs_id in _selected_ids(cqrs_ids)]
    return Queue(
        name,
        bindings=[binding(ex, routing_key=key) for key in keys],
        durable=True,
        queue_arguments=_queue_arguments(connection),
    )


def publish(
    producer: kombu.Producer,
    payload: Any,
    expiration: float | None = None,
    mandatory: bool = False,
    body: bytes | None = None,
) -> str:
    """Publish one payload as the RabbitMQ transport does (persistent, ``text/plain``).

    ``mandatory``: the broker returns the message if no queue is bound to its key (AMQP
    brokers; the producer needs an ``on_return`` callback to hear of it). ``body``: the
    payload already encoded.
    """
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


class _ProducerConnection:
    """The long-lived publishing connection of one process (re-created after a fork)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.connection: kombu.Connection | None = None
        self.producer: kombu.Producer | None = None
        self.mandatory = False
        self.returned: list[str] = []

    def get_producer(self) -> kombu.Producer:
        if self.producer is None:
            connection = connect()
            connection.ensure_connection(
                max_retries=max(1, len(connection.alt)), interval_start=0, interval_step=0.5
            )
            self.connection = connection
            # On AMQP brokers publish as mandatory, as RabbitMQTransport does: a message no
            # queue is bound to comes back (before its confirm) instead of vanishing silently.
            self.mandatory = is_amqp(connection)
            self.producer = kombu.Producer(
                connection.channel(),
                exchange=exchange(),
                on_return=self._on_return if self.mandatory else None,
            )
        return self.producer

    def _on_return(self, exception: Any, exchange: Any, routing_key: str, message: Any) -> None:
        self.returned.append(routing_key)

    def close(self) -> None:
        connection, self.connection, self.producer = self.connection, None, None
        if connection is not None:
            try:
                connection.release()
            except Exception:  # a broken connection cannot always close cleanly
                logger.debug('Closing the Kombu producer connection failed.', exc_info=True)

    def publish_once(
        self, payload: Any, body: bytes | None = None
    ) -> tuple[Exception | None, bool]:
        """One try under the lock (a back-off is the caller's, outside it, so that the other
        threads of a web worker do not queue behind a sleeping one): the error, if any, and
        whether the broker returned the message as unroutable."""
        with self.lock:
            try:
                self.returned.clear()
                publish(self.get_producer(), payload, mandatory=self.mandatory, body=body)
            except Exception as err:  # connection, channel and confirm errors alike
                self.close()
                return err, False
            return None, bool(self.returned)


_state_lock = threading.Lock()
_state: _ProducerConnection | None = None


def _producer_connection() -> _ProducerConnection:
    global _state
    forking.check()
    with _state_lock:
        if _state is None:
            _state = _ProducerConnection()
        return _state


@forking.after_fork_in_child
def _forget_after_fork() -> None:
    # The parent's socket is not ours: start afresh, never close it (nor wait on its locks).
    global _state, _state_lock
    _state, _state_lock = None, threading.Lock()


@conf.on_reset
def _forget_connection() -> None:
    global _state
    forking.check()
    with _state_lock:
        state, _state = _state, None
    if state is not None:
        with state.lock:
            state.close()


class KombuTransport(LoggingMixin, BaseTransport):
    """Publishes and consumes through kombu; the broker is chosen by the URL.

    A ``LoggingMixin`` as in the original: a subclass overriding ``log_consumed`` & co. gets
    them called for its messages (see :mod:`dj_cqrs.observability.logging`).
    """

    supports_queue_stats = True
    supports_dead_letters = True

    @classmethod
    def broker_description(cls) -> str:
        return mask_url(broker_url())

    @classmethod
    def queue_stats(cls, queue: str) -> tuple[int | None, int | None]:
        """(messages ready, consumers) of ``queue``, through a short connection of its own."""
        from dj_cqrs.transport.probes import kombu_queue_stats

        return kombu_queue_stats(queue)

    @classmethod
    def produce(cls, payload: Any) -> bool:
        """Publish (confirmed where the broker confirms), retrying on a fresh connection.

        With ``CQRS_PUBLISH_CONFIRMS = 'async'`` (the default) the message is handed to this
        process's publishing thread (:mod:`dj_cqrs.transport.kombu_publisher`) and this call
        returns at once; with ``'sync'``, or inside
        :func:`~dj_cqrs.transport.base.waiting_for_confirms` (the outbox relay and the
        transactional outbox), it waits for the broker.
        """
        settings = get_settings()
        if settings.master.publish_confirms == 'async' and not confirms_required():
            from dj_cqrs.transport import kombu_publisher

            routing_key = routing_key_for(payload, settings.queue, settings.dead_letter_queue)
            if kombu_publisher.submit(cls, payload, routing_key):
                return True  # published (or kept in the outbox) by the background thread
        state = _producer_connection()
        retries = settings.master.publish_retries
        started = time.monotonic()
        for attempt in range(retries + 1):
            error, returned = state.publish_once(payload)
            if error is None:
                break
            if attempt < retries:
                logger.warning(
                    "CQRS couldn't be published: pk = %s (%s). Error: %s. Reconnect...",
                    payload.pk,
                    payload.cqrs_id,
                    type(error).__name__,
                )
                time.sleep(backoff(attempt))
                continue
            cls._publish_failed(payload, error)
        if returned:
            log_unroutable(
                payload, routing_key_for(payload, settings.queue, settings.dead_letter_queue)
            )
            return False
        signals.message_published.send(cls, payload=payload, duration=time.monotonic() - started)
        return True

    @classmethod
    def _publish_failed(cls, payload: Any, err: Exception) -> None:
        error = PublishError(
            mask_url(
                f"CQRS couldn't be published: pk = {payload.pk} ({payload.cqrs_id}) "
                f'to {broker_url()}: {type(err).__name__}: {err}'
            ),
            payload,
        )
        error.__cause__ = err
        # No message_publish_failed here: the caller (the outbox, dj_cqrs.outbox.sending)
        # decides what happens to the message and announces the failure once, with ``kept``.
        raise error

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
        _forget_connection()

    @classmethod
    def dead_letters_count(cls) -> int:
        from dj_cqrs.transport import kombu_dead_letters

        return kombu_dead_letters.count()

    @classmethod
    def dead_letters_dump(cls) -> list[bytes]:
        from dj_cqrs.transport import kombu_dead_letters

        return kombu_dead_letters.dump()

    @classmethod
    def dead_letters_retry(cls, report: Callable[[int, int, bytes], Any] | None = None) -> int:
        from dj_cqrs.transport import kombu_dead_letters

        return kombu_dead_letters.retry(report)

    @classmethod
    def dead_letters_purge(cls) -> int:
        from dj_cqrs.transport import kombu_dead_letters

        return kombu_dead_letters.purge()
