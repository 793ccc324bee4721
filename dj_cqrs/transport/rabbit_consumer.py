"""The RabbitMQ worker loop: deliveries in, the handler's decisions carried out.

One process runs one :class:`RabbitConsumer`. Per connection it declares the original's
topology, consumes with ``prefetch = delay_queue_max_size + 1`` and loops:

1. wait (up to a second) for deliveries; take the ones already there, up to a batch;
2. :meth:`RabbitConsumer.decide` their outcomes (``dj_cqrs.consumer.handler``) in a helper
   thread, while this thread keeps answering the broker's heartbeats;
3. carry the outcomes out: ack, reject, hold for a delayed retry, or dead-letter. A retry or a
   dead letter is published (confirmed) *before* the original is removed, so a failure in
   between duplicates a message at worst, never loses it;
4. requeue the held messages whose retry time has come.

A lost connection is logged (``AMQP connection error. Reconnecting...``) and reopened after
``RabbitMQTransport.CONSUMER_RETRY_TIMEOUT`` seconds, until :func:`request_stop` is called.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

import pika
from django.utils import timezone

from dj_cqrs import signals
from dj_cqrs.conf import get_settings
from dj_cqrs.constants import LOGGER_NAME
from dj_cqrs.consumer.batch import apply_batch, take_batch
from dj_cqrs.consumer.handler import Action, Outcome, crash_outcome
from dj_cqrs.delay import DelayMessage, DelayQueue
from dj_cqrs.transport.amqp import connection_parameters, topology_for
from dj_cqrs.transport.publisher import Outgoing, Unroutable, message_properties
from dj_cqrs.transport.routing import routing_key_for
from dj_cqrs.utils import get_messages_prefetch_count_per_worker

logger = logging.getLogger(LOGGER_NAME)

# What a lost or refused broker connection raises (pika wraps most; sockets may leak through).
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    pika.exceptions.AMQPError,
    pika.exceptions.ChannelError,
    pika.exceptions.ReentrancyError,
    OSError,
)

_stop = threading.Event()


def _noop() -> None:
    return None


def _body_size(delivery: Delivery) -> int:
    return len(delivery.body)


def request_stop() -> None:
    """Ask the running consumer loop to finish its current step and return (signal-safe)."""
    _stop.set()


class Delivery:
    """One message taken from the queue (not yet acknowledged).

    A plain ``__slots__`` class: one is built per message on the receive path.
    """

    __slots__ = ('delivery_tag', 'routing_key', 'body', 'redelivered')

    def __init__(
        self, delivery_tag: int, routing_key: str | None, body: bytes, redelivered: bool = False
    ) -> None:
        self.delivery_tag = delivery_tag
        self.routing_key = routing_key
        self.body = body
        self.redelivered = redelivered

    def __eq__(self, other: object) -> bool:
        if type(other) is not Delivery:
            return NotImplemented
        return (self.delivery_tag, self.routing_key, self.body, self.redelivered) == (
            other.delivery_tag,
            other.routing_key,
            other.body,
            other.redelivered,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f'Delivery(delivery_tag={self.delivery_tag!r}, routing_key={self.routing_key!r}, '
            f'body={self.body!r}, redelivered={self.redelivered!r})'
        )


class RabbitConsumer:
    """Consumes this service's queue until stopped (see the module docstring)."""

    idle_tick = 1.0
    batch_size = 1
    handler_thread = True

    def __init__(self, transport: Any, cqrs_ids: Iterable[str] | None = None) -> None:
        self.transport = transport
        self.cqrs_ids = set(cqrs_ids) if cqrs_ids else None
        self.connection: Any = None
        self.channel: Any = None
        self.publish_channel: Any = None
        self.pending: deque[Delivery] = deque()
        self.delay_queue = DelayQueue()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._warned_prefetch = False

    # The loop ---------------------------------------------------------------------------------

    def run(self) -> None:
        _stop.clear()
        try:
            while not _stop.is_set():
                try:
                    self.open()
                    self.loop()
                except CONNECTION_ERRORS:
                    logger.warning('AMQP connection error. Reconnecting...', exc_info=True)
                    _stop.wait(self.transport.CONSUMER_RETRY_TIMEOUT)
                finally:
                    self.close()
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None

    def open(self) -> None:
        settings = get_settings()
        if 'consumer_prefetch_count' in settings.raw and not self._warned_prefetch:
            # The original's words (it wrote them on every lookup; once is enough).
            logger.warning(
                "The 'consumer_prefetch_count' setting is ignored for RabbitMQTransport."
            )
            self._warned_prefetch = True
        topology = topology_for(settings, self.cqrs_ids)
        self.settings, self.topology = settings, topology
        self.delay_queue = DelayQueue(max_size=settings.replica.delay_queue_max_size)
        self.pending.clear()
        self.connection = pika.BlockingConnection(
            connection_parameters(settings, blocked_connection_timeout=10)
        )
        self.channel = self.connection.channel()
        self.channel.basic_qos(prefetch_count=get_messages_prefetch_count_per_worker())
        topology.declare(self.channel)
        self.publish_channel = self.connection.channel()
        self.publish_channel.confirm_delivery()
        self.channel.basic_consume(
            topology.queue, self._on_message, auto_ack=False, exclusive=False
        )

    def loop(self) -> None:
        size = max(self.batch_size, self.settings.replica.batch_size)
        while not _stop.is_set():
            if not self.pending:
                self.connection.process_data_events(time_limit=self.idle_tick)
            if self.pending and len(self.pending) < size:
                # Take what else is already there, without waiting: a partial batch goes now.
                self.connection.process_data_events(time_limit=0)
            if self.pending:
                self.process(take_batch(self.pending, size, _body_size))
            self.requeue_due()

    def close(self) -> None:
        connection, self.connection = self.connection, None
        self.channel = self.publish_channel = None
        if connection is not None:
            with contextlib.suppress(Exception):
                if connection.is_open:
                    connection.close()

    def _on_message(self, channel: Any, method: Any, properties: Any, body: Any) -> None:
        self.pending.append(
            Delivery(
                method.delivery_tag,
                getattr(method, 'routing_key', None),
                body if type(body) is bytes else bytes(body or b''),
                bool(getattr(method, 'redelivered', False)),
            )
        )

    # One step ---------------------------------------------------------------------------------

    def decide(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        """The outcome of each delivery (runs in the helper thread), applied as one batch."""
        return apply_batch(deliveries, sender=self.transport)

    def process(self, deliveries: Sequence[Delivery]) -> None:
        try:
            outcomes = self.call_with_heartbeats(self.decide, deliveries)
        except CONNECTION_ERRORS:
            raise
        except Exception as err:
            # A bug, not a bad message (the handler turns those into outcomes). In a batch, each
            # delivery is tried again alone, so that one message's failure costs no other; a
            # delivery that fails alone is kept in the dead letters (never dropped).
            logger.exception('CQRS service exception')
            if len(deliveries) > 1:
                for delivery in deliveries:
                    self.process([delivery])
                return
            (delivery,) = deliveries
            outcomes = [crash_outcome(delivery.body, delivery.routing_key, err)]
        if len(deliveries) > 1 and self.delay_queue.qsize() == 0:
            if all(outcome.action is Action.ACK for outcome in outcomes):
                # One multi-ack: no unsettled delivery older than this batch is held back.
                self.channel.basic_ack(deliveries[-1].delivery_tag, multiple=True)
                return
        for delivery, outcome in zip(deliveries, outcomes, strict=True):
            self.safely(delivery.delivery_tag, self.carry_out, delivery, outcome)

    def safely(self, tag: int, step: Any, *args: Any) -> None:
        """Run a step for one delivery; an unexpected error returns the message to the queue
        (it was not moved to the dead letters, so it must not be dropped); the worker goes on."""
        try:
            step(*args)
        except CONNECTION_ERRORS:
            raise
        except Exception:
            logger.exception("CQRS couldn't be handled; the message is returned to the queue.")
            self.channel.basic_nack(tag, requeue=True)

    def call_with_heartbeats(self, function: Any, *args: Any) -> Any:
        """``function(*args)`` in the helper thread, answering heartbeats until it returns."""
        if not self.handler_thread:
            return function(*args)
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix='cqrs-handler'
            )
        future = self._executor.submit(function, *args)
        connection = self.connection
        # Wake the wait below as soon as the handler is done, not at the end of its time slice.
        future.add_done_callback(lambda _: connection.add_callback_threadsafe(_noop))
        try:
            while not future.done():
                self.connection.process_data_events(time_limit=0.05)
        except BaseException:
            # Never leave a message being applied while the connection is reopened.
            concurrent.futures.wait([future])
            raise
        return future.result()

    def carry_out(self, delivery: Delivery, outcome: Outcome) -> None:
        tag = delivery.delivery_tag
        if outcome.action is Action.ACK:
            self.channel.basic_ack(tag)
        elif outcome.action is Action.RETRY and outcome.payload is not None:
            self.delay(tag, outcome.payload, outcome.delay)
        elif outcome.action is Action.DEAD_LETTER and outcome.payload is not None:
            self.dead_letter(tag, outcome.payload, outcome.reason)
        else:
            self.channel.basic_reject(tag, requeue=False)

    # Retries and dead letters ------------------------------------------------------------------

    def delay(self, tag: int, payload: Any, delay: float) -> None:
        if self.delay_queue.full():
            earliest = self.delay_queue.get()
            self.safely(earliest.delivery_tag, self.requeue, earliest)
        eta = timezone.now() + timedelta(seconds=delay)
        self.delay_queue.put(DelayMessage(tag, payload, eta))
        signals.message_delayed.send(
            self.transport, payload=payload, delay=delay, eta=eta, retries=payload.retries
        )

    def requeue_due(self) -> None:
        for delay_message in self.delay_queue.get_ready():
            self.safely(delay_message.delivery_tag, self.requeue, delay_message)

    def requeue(self, delay_message: DelayMessage) -> None:
        """Publish the retry (``retries + 1``) to this queue, then drop the original."""
        payload, tag = delay_message.payload, delay_message.delivery_tag
        payload.retries += 1
        payload.is_requeue = True
        try:
            self.publish(Outgoing(self.key_for(payload), payload.encode()), payload)
        except Unroutable:
            payload.retries -= 1
            payload.is_requeue = False
            self.dead_letter(tag, payload, 'requeue unroutable')
            return
        self.channel.basic_nack(tag, requeue=False)
        signals.message_requeued.send(self.transport, payload=payload)

    def dead_letter(self, tag: int, payload: Any, reason: str) -> None:
        """Publish to the dead-letter queue (with ``dead_message_ttl``), then drop the original."""
        payload.is_dead_letter = True
        ttl = self.settings.replica.dead_message_ttl
        expiration = None if ttl is None else str(int(ttl * 1000))
        try:
            outgoing = Outgoing(self.key_for(payload), payload.encode(), expiration)
            # As the original: a dead letter is logged as added to the DLQ, not as published.
            self.publish(outgoing, payload, announce=False)
        except Unroutable:
            logger.error(
                "CQRS couldn't be added to dead letter queue: pk = %s (%s), correlation_id = %s. "
                'No queue is bound to its routing key; the message is rejected.',
                payload.pk,
                payload.cqrs_id,
                payload.correlation_id,
            )
            self.channel.basic_reject(tag, requeue=False)
            return
        self.channel.basic_nack(tag, requeue=False)
        signals.message_dead_lettered.send(self.transport, payload=payload, reason=reason)

    def key_for(self, payload: Any) -> str:
        return routing_key_for(payload, self.topology.queue, self.topology.dead_letter_queue)

    def publish(self, message: Outgoing, payload: Any, announce: bool = True) -> None:
        started = timezone.now()
        try:
            self.publish_channel.basic_publish(
                self.topology.exchange,
                message.routing_key,
                message.body,
                message_properties(message.expiration),
                mandatory=True,
            )
        except pika.exceptions.UnroutableError as err:
            raise Unroutable(message.routing_key) from err
        if announce:
            duration = (timezone.now() - started).total_seconds()
            signals.message_published.send(self.transport, payload=payload, duration=duration)
