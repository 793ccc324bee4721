"""The RabbitMQ side of a worker: pika deliveries in, ack/reject/publish primitives out."""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import pika
from pika.adapters.blocking_connection import BlockingChannel

from dj_cqrs.conf import get_settings
from dj_cqrs.constants import LOGGER_NAME
from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.exceptions import UnroutableError
from dj_cqrs.routing import routing_key_for
from dj_cqrs.transport.amqp import Topology, connection_parameters, topology_for
from dj_cqrs.transport.publisher import message_properties

if TYPE_CHECKING:
    from dj_cqrs.consumer.loop import ConsumerLoop

logger = logging.getLogger(LOGGER_NAME)

# What a lost or refused broker connection raises (pika wraps most; sockets may leak through).
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    pika.exceptions.AMQPError,
    pika.exceptions.ChannelError,
    pika.exceptions.ReentrancyError,
    OSError,
)

_stop = threading.Event()
T = TypeVar('T')


def request_stop() -> None:
    """Ask the running consumer loop to finish its current step and return (signal-safe)."""
    _stop.set()


def publish_copy(
    channel: BlockingChannel,
    topology: Topology,
    payload: TransportPayload,
    body: bytes,
    expiration: str | None = None,
) -> None:
    """Publish a copy (a retry, a dead letter) on a confirmed channel; raises
    :class:`~dj_cqrs.exceptions.UnroutableError` if no queue is bound to its routing key."""
    key = routing_key_for(payload, topology.queue, topology.dead_letter_queue)
    try:
        channel.basic_publish(
            topology.exchange, key, body, message_properties(expiration), mandatory=True
        )
    except pika.exceptions.UnroutableError as err:
        raise UnroutableError(key) from err


@dataclass(slots=True, eq=False)
class Delivery:
    """One message taken from the queue, not yet acknowledged (as the original, the content
    type is not looked at)."""

    delivery_tag: int
    routing_key: str | None
    body: bytes
    redelivered: bool = False
    content_type: str | None = None


class RabbitConsumer:
    """Consumes this service's queue until :func:`request_stop`, as the delivery source of
    :class:`dj_cqrs.consumer.loop.ConsumerLoop`. The handler runs in a helper thread while
    this one answers the broker's heartbeats; a lost connection is reopened after
    ``RabbitMQTransport.CONSUMER_RETRY_TIMEOUT`` seconds.
    """

    idle_tick = 1.0
    handler_thread = True
    connection_errors = CONNECTION_ERRORS

    def __init__(self, transport: type, cqrs_ids: Iterable[str] | None = None) -> None:
        self.transport = transport
        self.cqrs_ids = set(cqrs_ids) if cqrs_ids else None
        self.connection: pika.BlockingConnection | None = None
        self.channel: BlockingChannel | None = None
        self.publish_channel: BlockingChannel | None = None
        self.topology: Topology | None = None
        self.pending: deque[Delivery] = deque()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._warned_prefetch = False

    # The connection ---------------------------------------------------------------------------

    def run(self) -> None:
        _stop.clear()
        try:
            while not _stop.is_set():
                try:
                    self.open()
                    self.loop().run()
                except CONNECTION_ERRORS:
                    logger.warning('AMQP connection error. Reconnecting...', exc_info=True)
                    _stop.wait(self.transport.CONSUMER_RETRY_TIMEOUT)  # type: ignore[attr-defined]
                finally:
                    self.close()
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None

    def loop(self) -> ConsumerLoop[Delivery]:
        """The consumer loop serving this connection (a fresh delay queue each time)."""
        from dj_cqrs.consumer.loop import ConsumerLoop

        return ConsumerLoop(self.transport, self, _stop, self.idle_tick)

    def open(self) -> None:
        settings = get_settings()
        if 'consumer_prefetch_count' in settings.raw and not self._warned_prefetch:
            # The original's words (it wrote them on every lookup; once is enough).
            logger.warning(
                "The 'consumer_prefetch_count' setting is ignored for RabbitMQTransport."
            )
            self._warned_prefetch = True
        topology = self.topology = topology_for(settings, self.cqrs_ids)
        self.pending.clear()
        self.connection = pika.BlockingConnection(
            connection_parameters(settings, blocked_connection_timeout=10)
        )
        self.channel = self.connection.channel()
        self.channel.basic_qos(prefetch_count=settings.replica.prefetch_count)
        topology.declare(self.channel)
        self.publish_channel = self.connection.channel()
        self.publish_channel.confirm_delivery()
        self.channel.basic_consume(
            topology.queue, self._on_message, auto_ack=False, exclusive=False
        )

    def close(self) -> None:
        connection, self.connection = self.connection, None
        self.channel = self.publish_channel = None
        if connection is not None:
            with contextlib.suppress(Exception):
                if connection.is_open:
                    connection.close()

    def _on_message(self, channel: object, method: Any, properties: object, body: Any) -> None:
        self.pending.append(
            Delivery(
                method.delivery_tag,
                getattr(method, 'routing_key', None),
                body if type(body) is bytes else bytes(body or b''),
                bool(getattr(method, 'redelivered', False)),
            )
        )

    # Deliveries (the loop's source) -------------------------------------------------------------

    def wait(self, timeout: float) -> None:
        self._connection().process_data_events(time_limit=timeout)

    def take_ready(self, size: int) -> None:
        self._connection().process_data_events(time_limit=0)

    def call(self, decide: Callable[[Sequence[Delivery]], T], deliveries: Sequence[Delivery]) -> T:
        """``decide(deliveries)`` in the helper thread, answering heartbeats until it returns."""
        if not self.handler_thread:
            return decide(deliveries)
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix='cqrs-handler'
            )
        future = self._executor.submit(decide, deliveries)
        connection = self._connection()
        # Wake the wait below as soon as the handler is done, not at the end of its time slice.
        future.add_done_callback(lambda _: connection.add_callback_threadsafe(lambda: None))
        try:
            while not future.done():
                connection.process_data_events(time_limit=0.05)
        except BaseException:
            # Never leave a message being applied while the connection is reopened.
            concurrent.futures.wait([future])
            raise
        return future.result()

    # Settle primitives ----------------------------------------------------------------------

    def ack(self, delivery: Delivery) -> None:
        self._channel().basic_ack(delivery.delivery_tag)

    def ack_all(self, deliveries: Sequence[Delivery]) -> None:
        self._channel().basic_ack(deliveries[-1].delivery_tag, multiple=True)

    def reject(self, delivery: Delivery) -> None:
        self._channel().basic_reject(delivery.delivery_tag, requeue=False)

    def give_back(self, delivery: Delivery) -> None:
        self._channel().basic_nack(delivery.delivery_tag, requeue=True)

    def remove(self, delivery: Delivery) -> None:
        self._channel().basic_nack(delivery.delivery_tag, requeue=False)

    def publish(self, payload: TransportPayload, expiration: float | None) -> None:
        assert self.topology is not None and self.publish_channel is not None, 'not connected'
        ttl = None if expiration is None else str(int(expiration * 1000))
        publish_copy(self.publish_channel, self.topology, payload, payload.encode(), ttl)

    def _connection(self) -> pika.BlockingConnection:
        assert self.connection is not None, 'not connected'
        return self.connection

    def _channel(self) -> BlockingChannel:
        assert self.channel is not None, 'not connected'
        return self.channel
