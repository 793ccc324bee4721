"""The Kombu worker: consumes the service queue and carries out each message's outcome.

What happens to a message is decided by :func:`dj_cqrs.consumer.handler.handle`; this module
acks, rejects, holds failed messages in the in-memory delay queue until their retry time
(other messages keep flowing meanwhile), republishes them with ``retries + 1`` and moves
dead letters. A copy is always published (confirmed where the broker confirms) before the
original is acked, so a crash in between duplicates a message but never loses one.

Messages are applied in batches, as by the RabbitMQ worker: after each wake-up the worker
also takes what has already arrived, without waiting for more, and applies up to
``CQRS['replica']['CQRS_BATCH_SIZE']`` messages at once through
:func:`dj_cqrs.consumer.batch.apply_batch` (one transaction for plain models; a bad message
still fails alone). A partial batch goes as soon as the queue is idle. Over Redis, which hands
out one message per ``BRPOP``, the rest of a batch is taken with non-blocking ``RPOP`` calls
(no wait to gather). The batch size decides the batch: the broker's prefetch follows it
(``CQRS_BATCH_SIZE`` unacknowledged messages) unless ``CQRS['consumer_prefetch_count']`` is
set, which then bounds the batch too. ``CQRS_BATCH_SIZE = 1`` or ``CQRS_BATCH_APPLY = False``
keep one message per transaction.
"""

from __future__ import annotations

import collections
import datetime
import logging
import signal
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import kombu
from django.utils import timezone

from dj_cqrs import signals
from dj_cqrs.broker_urls import mask_url
from dj_cqrs.conf import get_settings
from dj_cqrs.constants import LOGGER_NAME
from dj_cqrs.consumer import batch, handler
from dj_cqrs.consumer.batch import Delivery, apply_batch
from dj_cqrs.consumer.handler import Action, Outcome
from dj_cqrs.delay import DelayMessage, DelayQueue
from dj_cqrs.quoting import body_for_log, quote_for_log
from dj_cqrs.transport import kombu as kombu_transport

logger = logging.getLogger(LOGGER_NAME)

ACCEPTED_CONTENT_TYPES = frozenset(('application/json', 'text/plain'))
"""MIME types of the bodies a worker reads (no pickle, no YAML): JSON text only."""


_running: weakref.WeakSet[KombuWorker] = weakref.WeakSet()


def request_stop() -> None:
    """Ask every worker running in this process to stop (safe in a signal handler)."""
    for worker in list(_running):
        worker.stop()


def _warn_about_filesystem_folders(connection: kombu.Connection) -> None:
    if connection.transport.driver_type != 'filesystem':
        return
    options = connection.transport_options
    if options.get('data_folder_in', 'data_in') != options.get('data_folder_out', 'data_out'):
        logger.warning(
            "CQRS over filesystem:// needs the same folder in CQRS['transport_options'] "
            "'data_folder_in' and 'data_folder_out': this worker's retries and dead letters "
            'go to data_folder_out, which it does not read.'
        )


def prefetch_count() -> int:
    """Unacknowledged messages the broker hands a worker: ``CQRS['consumer_prefetch_count']``
    when set, else ``CQRS_BATCH_SIZE`` (so that the batch size, not a prefetch default of 10,
    decides how many messages a batch holds)."""
    settings = get_settings()
    if 'consumer_prefetch_count' in settings.raw:
        return settings.consumer_prefetch_count
    return max(1, settings.replica.batch_size)


def _body_size(message: Any) -> int:
    return len(message.body)


def _body_of(message: Any) -> bytes:
    body = message.body
    return body.encode('utf-8') if isinstance(body, str) else body


class KombuWorker:
    """One consumer loop; ``stop()`` (or SIGTERM/SIGINT with ``handle_signals``) ends it.

    Messages are applied in batches of up to ``CQRS_BATCH_SIZE`` (see the module docstring).
    """

    IDLE_TICK = 1.0
    """Seconds between checks of the stop flag when the queue is idle."""

    DELAYED_TICK = 0.25
    """Seconds between checks of the delay queue while messages wait for a retry."""

    MAX_RECONNECT_DELAY = 30.0

    def __init__(self, cqrs_ids: Any = None, sender: Any = None) -> None:
        self.cqrs_ids = set(cqrs_ids) if cqrs_ids else None
        self.sender = sender or kombu_transport.KombuTransport
        self.consuming = threading.Event()
        """Set while the worker is connected and consuming (tests wait on it)."""
        self._stop = threading.Event()
        self._failures = 0
        self._producer: kombu.Producer | None = None
        self._pending: collections.deque[Any] = collections.deque()
        self.connection: kombu.Connection | None = None
        """The broker connection in use (None between connections)."""
        self.delay_queue = self._new_delay_queue()

    @staticmethod
    def _new_delay_queue() -> DelayQueue:
        return DelayQueue(max_size=get_settings().replica.delay_queue_max_size)

    @property
    def should_stop(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        """Ask the loop to end (within about a second); held messages return to the queue."""
        self._stop.set()

    def run(self, handle_signals: bool = False) -> None:
        """Consume until stopped, reconnecting with a bounded backoff whenever anything breaks."""
        _running.add(self)
        try:
            with self._stop_on_signals(handle_signals):
                while not self.should_stop:
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
        connection = self.connection = kombu_transport.connect()
        try:
            connection.ensure_connection(
                max_retries=max(1, len(connection.alt)), interval_start=0, interval_step=0.5
            )
            _warn_about_filesystem_folders(connection)
            # Messages held by a previous connection are redelivered by the broker.
            self.delay_queue = self._new_delay_queue()
            self._pending.clear()
            self._producer = kombu.Producer(
                connection.channel(), exchange=kombu_transport.exchange()
            )
            kombu_transport.dead_letter_queue(connection, self.cqrs_ids)(
                self._producer.channel
            ).declare()
            consumer = kombu.Consumer(
                connection.channel(),
                queues=[kombu_transport.service_queue(connection, self.cqrs_ids)],
                on_message=self._on_message,
                accept=list(kombu_transport.ACCEPT),
                prefetch_count=prefetch_count(),
            )
            with consumer:
                self._failures = 0
                self.consuming.set()
                self._drain(connection, consumer)
        finally:
            self.consuming.clear()
            self._producer = self.connection = None
            try:
                connection.release()
            except Exception:  # closing a dead connection may fail too; nothing to keep
                logger.debug('Closing the Kombu consumer connection failed.', exc_info=True)

    def _drain(self, connection: kombu.Connection, consumer: kombu.Consumer) -> None:
        size = max(1, get_settings().replica.batch_size)
        take_ready = self._take_ready
        if connection.transport.driver_type == 'redis':
            take_ready = self._take_ready_redis
        while not self.should_stop:
            if not self._pending:
                tick = self.DELAYED_TICK if self.delay_queue.qsize() else self.IDLE_TICK
                try:
                    connection.drain_events(timeout=tick)
                except TimeoutError:
                    pass
            if self._pending:
                take_ready(connection, consumer, size)
            while self._pending and not self.should_stop:
                self._apply(batch.take_batch(self._pending, size, _body_size))
            self._release_ready()

    def _take_ready(
        self, connection: kombu.Connection, consumer: kombu.Consumer, size: int
    ) -> None:
        """Add the messages already there to ``_pending``, up to ``size``; idle ends it."""
        for _ in range(size):  # bounded: a wake-up delivers at least one message
            if len(self._pending) >= size:
                return
            try:
                connection.drain_events(timeout=0)
            except TimeoutError:
                return

    def _take_ready_redis(
        self, connection: kombu.Connection, consumer: kombu.Consumer, size: int
    ) -> None:
        """Redis: ``BRPOP`` brings one message per round trip, so a zero-timeout drain seldom
        finds the reply back; take the waiting ones with ``RPOP`` instead, each tracked as
        unacknowledged exactly as a consumed message (Kombu restores it if we die), and no
        more than the prefetch allows."""
        channel = consumer.channel
        names = [queue.name for queue in consumer.queues]
        while len(self._pending) < size and names and channel.qos.can_consume():
            message = channel.basic_get(names[0])
            if message is None:
                names.pop(0)  # this queue is empty now
                continue
            self._pending.append(message)

    def _on_message(self, message: Any) -> None:
        # Only queue it: deliveries also arrive while we wait for a publish confirm, and
        # handling them there would nest one message's handling inside another's.
        self._pending.append(message)

    def _apply(self, messages: list[Any]) -> None:
        """Apply ``messages`` as one batch and carry out each outcome, in delivery order."""
        accepted = []
        for message in messages:
            body = _body_of(message)
            if self._accepts(message, body):
                accepted.append((message, body))
        if len(accepted) <= 1 or batch.one_by_one():
            # Exactly the one-message path (and its crash handling) for each.
            for message, body in accepted:
                self._handle(message, body)
            return
        deliveries = [
            Delivery(body, message.delivery_info.get('routing_key')) for message, body in accepted
        ]
        try:
            outcomes = apply_batch(deliveries, sender=self.sender)
        except Exception:
            # A bug, not a bad message: apply them one by one so that it costs one at most.
            logger.exception('CQRS service exception')
            for message, body in accepted:
                self._handle(message, body)
            return
        for (message, _), outcome in zip(accepted, outcomes, strict=True):
            self._carry_out(outcome, message)

    def _accepts(self, message: Any, body: bytes) -> bool:
        """JSON content types only; any other message is rejected (logged, signalled)."""
        if not message.content_type or message.content_type in ACCEPTED_CONTENT_TYPES:
            return True
        reason = f'content type {message.content_type!r} is not accepted (JSON only)'
        logger.error("CQRS couldn't be parsed: %s. (%s)", body_for_log(body), quote_for_log(reason))
        signals.message_rejected.send(self.sender, payload=None, body=body, reason=reason)
        message.reject()
        return False

    def _handle(self, message: Any, body: bytes) -> None:
        """One message in its own transaction; a crash keeps it (dead letter), see below."""
        routing_key = message.delivery_info.get('routing_key')
        try:
            outcome = handler.handle(body, routing_key, sender=self.sender)
        except Exception as err:
            logger.exception('CQRS service exception')
            outcome = handler.crash_outcome(body, routing_key, err)
        self._carry_out(outcome, message)

    def _carry_out(self, outcome: Outcome, message: Any) -> None:
        if outcome.action is Action.ACK:
            message.ack()
        elif outcome.action is Action.RETRY and outcome.payload is not None:
            self._delay(message, outcome)
        elif outcome.action is Action.DEAD_LETTER and outcome.payload is not None:
            self._dead_letter(message, outcome)
        else:
            message.reject()

    def _delay(self, message: Any, outcome: Outcome) -> None:
        payload, delay = outcome.payload, outcome.delay
        if self.delay_queue.full():
            self._requeue(self.delay_queue.get())
        eta = timezone.now() + datetime.timedelta(seconds=delay)
        self.delay_queue.put(DelayMessage(message, payload, eta))
        signals.message_delayed.send(
            self.sender, payload=payload, delay=delay, retries=payload.retries, eta=eta
        )

    def _release_ready(self) -> None:
        for delayed in self.delay_queue.get_ready():
            self._requeue(delayed)

    def _requeue(self, delayed: DelayMessage) -> None:
        payload, message = delayed.payload, delayed.delivery_tag
        payload.retries += 1
        payload.is_requeue = True
        started = time.monotonic()
        if not self._republish(payload, None, 'requeued'):
            payload.retries -= 1
            payload.is_requeue = False
            reason = 'requeue failed'
            self._dead_letter(message, Outcome(Action.DEAD_LETTER, payload, reason=reason))
            return
        # As the original: a requeue is logged as published, then as requeued.
        signals.message_published.send(
            self.sender, payload=payload, duration=time.monotonic() - started
        )
        message.ack()
        signals.message_requeued.send(self.sender, payload=payload)

    def _dead_letter(self, message: Any, outcome: Outcome) -> None:
        payload = outcome.payload
        payload.is_dead_letter = True
        ttl = get_settings().replica.dead_message_ttl
        if not self._republish(payload, ttl, 'added to dead letter queue'):
            payload.is_dead_letter = False
            # Kept by the broker, never dropped: it comes back and is tried again.
            message.requeue()
            return
        message.ack()
        signals.message_dead_lettered.send(self.sender, payload=payload, reason=outcome.reason)

    def _republish(self, payload: Any, expiration: float | None, what: str) -> bool:
        """Publish a retry or a dead letter; ``False`` (logged) if it failed for another reason
        than the connection. A lost connection raises: the worker reconnects and the broker
        delivers the unacknowledged original again."""
        try:
            kombu_transport.publish(self._producer, payload, expiration=expiration)
        except Exception as err:
            connection = self.connection
            if connection is not None and isinstance(err, connection.connection_errors):
                raise
            logger.exception(
                "CQRS couldn't be %s: pk = %s (%s), correlation_id = %s.",
                what,
                quote_for_log(payload.pk),
                payload.cqrs_id,
                quote_for_log(payload.correlation_id),
            )
            return False
        return True

    @contextmanager
    def _stop_on_signals(self, enabled: bool) -> Iterator[None]:
        if not enabled or threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

        def on_signal(signum: int, frame: Any) -> None:
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
