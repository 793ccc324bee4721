"""The Kombu side of a worker: Kombu deliveries in, ack/reject/publish primitives out; and
of ``cqrs_dead_letters``: the dead-letter queue's messages and primitives."""

from __future__ import annotations

import logging
import signal
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from functools import cached_property
from types import FrameType
from typing import Any, TypeVar

import kombu
from kombu.message import Message

from dj_cqrs.broker_urls import mask_url
from dj_cqrs.conf import get_settings
from dj_cqrs.constants import LOGGER_NAME
from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.exceptions import TransportError
from dj_cqrs.transport import kombu as kombu_transport

logger = logging.getLogger(LOGGER_NAME)

T = TypeVar('T')

_running: weakref.WeakSet[KombuWorker] = weakref.WeakSet()


def request_stop() -> None:
    """Ask every worker running in this process to stop (safe in a signal handler)."""
    for worker in list(_running):
        worker.stop()


def prefetch_count() -> int:
    """``CQRS['consumer_prefetch_count']`` when set, else ``CQRS_BATCH_SIZE`` (not Kombu's 10)."""
    settings = get_settings()
    if 'consumer_prefetch_count' in settings.raw:
        return settings.consumer_prefetch_count
    return max(1, settings.replica.batch_size)


def _warn_about_filesystem_folders(connection: kombu.Connection) -> None:
    if connection.transport.driver_type != 'filesystem':
        return
    options = connection.transport_options or {}
    if options.get('data_folder_in', 'data_in') != options.get('data_folder_out', 'data_out'):
        logger.warning(
            "CQRS over filesystem:// needs the same folder in CQRS['transport_options'] "
            "'data_folder_in' and 'data_folder_out': this worker's retries and dead letters "
            'go to data_folder_out, which it does not read.'
        )


class KombuDelivery:
    """One Kombu message taken from the queue, with its body as bytes."""

    __slots__ = ('message', 'body', 'routing_key', 'content_type')

    def __init__(self, message: Message) -> None:
        body = message.body
        self.message = message
        self.body: bytes = body.encode('utf-8') if isinstance(body, str) else body
        self.routing_key: str | None = message.delivery_info.get('routing_key')
        self.content_type: str | None = message.content_type


class KombuDeliveries:
    """The deliveries and settle primitives of one open Kombu connection."""

    def __init__(self, connection: kombu.Connection, cqrs_ids: set[str] | None) -> None:
        self.connection = connection
        self.connection_errors: tuple[type[BaseException], ...] = tuple(
            connection.connection_errors
        )
        self.pending: deque[KombuDelivery] = deque()
        self.copies = kombu_transport.Producer(connection)
        kombu_transport.dead_letter_queue(connection, cqrs_ids)(
            self.copies.producer.channel
        ).declare()
        self.consumer = kombu.Consumer(
            connection.channel(),
            queues=[kombu_transport.service_queue(connection, cqrs_ids)],
            on_message=self._on_message,
            accept=list(kombu_transport.ACCEPT),
            prefetch_count=prefetch_count(),
        )
        if connection.transport.driver_type == 'redis':
            self.take_ready = self._take_ready_redis  # type: ignore[method-assign]

    def _on_message(self, message: Message) -> None:
        # Only queue it: deliveries also arrive while we wait for a publish confirm, and
        # handling them there would nest one message's handling inside another's.
        self.pending.append(KombuDelivery(message))

    def wait(self, timeout: float) -> None:
        with suppress(TimeoutError):
            self.connection.drain_events(timeout=timeout)

    def take_ready(self, size: int) -> None:
        """Add the messages already there to ``pending``, up to ``size``; idle ends it."""
        for _ in range(size):  # bounded: a wake-up delivers at least one message
            if len(self.pending) >= size:
                return
            try:
                self.connection.drain_events(timeout=0)
            except TimeoutError:
                return

    def _take_ready_redis(self, size: int) -> None:
        """Redis: ``BRPOP`` brings one message per round trip, so take the waiting ones with
        ``RPOP``, each tracked as unacknowledged (Kombu restores it if we die), within prefetch."""
        channel: Any = self.consumer.channel
        names = [queue.name for queue in self.consumer.queues or ()]
        while len(self.pending) < size and names and channel.qos.can_consume():
            message = channel.basic_get(names[0])
            if message is None:
                names.pop(0)  # this queue is empty now
                continue
            self.pending.append(KombuDelivery(message))

    def call(
        self, decide: Callable[[Sequence[KombuDelivery]], T], deliveries: Sequence[KombuDelivery]
    ) -> T:
        return decide(deliveries)

    # Settle primitives ----------------------------------------------------------------------

    def ack(self, delivery: KombuDelivery) -> None:
        delivery.message.ack()

    remove = ack

    def ack_all(self, deliveries: Sequence[KombuDelivery]) -> None:
        # One by one: the virtual transports (Redis, memory, files) have no multi-ack.
        for delivery in deliveries:
            delivery.message.ack()

    def reject(self, delivery: KombuDelivery) -> None:
        delivery.message.reject()

    def give_back(self, delivery: KombuDelivery) -> None:
        delivery.message.requeue()

    def publish(self, payload: TransportPayload, expiration: float | None) -> None:
        self.copies.publish_copy(payload, expiration)


class KombuWorker:
    """One consumer, reconnecting with a bounded back-off; ``stop()`` (or SIGTERM/SIGINT with
    ``handle_signals``) ends it."""

    IDLE_TICK = 1.0
    """Seconds between checks of the stop flag when the queue is idle."""

    MAX_RECONNECT_DELAY = 30.0

    def __init__(self, cqrs_ids: Any = None, sender: type | None = None) -> None:
        self.cqrs_ids: set[str] | None = set(cqrs_ids) if cqrs_ids else None
        self.sender = sender or kombu_transport.KombuTransport
        self.consuming = threading.Event()
        """Set while the worker is connected and consuming (tests wait on it)."""
        self._stop = threading.Event()
        self._failures = 0
        self.connection: kombu.Connection | None = None
        """The broker connection in use (None between connections)."""

    def stop(self) -> None:
        """Ask the loop to end (within about a second); held messages return to the queue."""
        self._stop.set()

    def run(self, handle_signals: bool = False) -> None:
        """Consume until stopped, reconnecting with a bounded backoff whenever anything breaks."""
        _running.add(self)
        try:
            with self._stop_on_signals(handle_signals):
                while not self._stop.is_set():
                    try:
                        self._consume_one_connection()
                    except Exception as err:
                        self._wait_before_reconnecting(err)
        finally:
            _running.discard(self)

    def _wait_before_reconnecting(self, err: Exception) -> None:
        self._failures += 1
        delay = min(2.0 ** (self._failures - 1), self.MAX_RECONNECT_DELAY)
        logger.warning(
            'CQRS consumer connection error: %s. Reconnecting in %s sec...',
            mask_url(f'{type(err).__name__}: {err}'),
            delay,
            exc_info=True,
        )
        self._stop.wait(delay)

    def _consume_one_connection(self) -> None:
        from dj_cqrs.consumer.loop import ConsumerLoop

        connection = self.connection = kombu_transport.connect()
        try:
            kombu_transport.ensure_connected(connection)
            _warn_about_filesystem_folders(connection)
            # Messages held by a previous connection are redelivered by the broker.
            source = KombuDeliveries(connection, self.cqrs_ids)
            with source.consumer:
                self._failures = 0
                self.consuming.set()
                ConsumerLoop(self.sender, source, self._stop, self.IDLE_TICK).run()
        finally:
            self.consuming.clear()
            self.connection = None
            try:
                connection.release()
            except Exception:  # closing a dead connection may fail too; nothing to keep
                logger.debug('Closing the Kombu consumer connection failed.', exc_info=True)

    @contextmanager
    def _stop_on_signals(self, enabled: bool) -> Iterator[None]:
        if not enabled or threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

        def on_signal(signum: int, frame: FrameType | None) -> None:
            self.stop()
            for sig, old in previous.items():  # a second signal acts as it did before
                signal.signal(sig, old)

        for sig in previous:
            signal.signal(sig, on_signal)
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)


@contextmanager
def open_dead_letters() -> Iterator[_DeadLetters]:
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
    """The dead-letter queue (``BaseTransport.dead_letters_*``)."""

    def __init__(self, connection: kombu.Connection, queue: kombu.Queue) -> None:
        self.connection = connection
        self.queue = queue

    @cached_property
    def copies(self) -> kombu_transport.Producer:
        return kombu_transport.Producer(self.connection)

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
        self.copies.publish_copy(payload, body=body)

    def remove(self, message: Message) -> None:
        message.ack()

    def purge(self) -> None:
        self.queue.purge()
