"""``RabbitMQTransport``: the original's AMQP topology and wire format, over pika.

Publishing uses one confirmed connection per process (:mod:`dj_cqrs.transport.publisher`),
retried with backoff ``CQRS['master']['CQRS_PUBLISH_RETRIES']`` times; a message that still
cannot be published raises :class:`~dj_cqrs.exceptions.PublishError`, which the producer keeps
in the outbox. Consuming is :mod:`dj_cqrs.transport.rabbit_consumer`; connection settings and
topology are :mod:`dj_cqrs.transport.amqp`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

import pika

from dj_cqrs import conf, signals
from dj_cqrs.conf import get_settings
from dj_cqrs.constants import LOGGER_NAME
from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.exceptions import CQRSError, PublishError, TransportError
from dj_cqrs.transport.amqp import Topology, connection_parameters, describe, mask_url, topology_for
from dj_cqrs.transport.base import BaseTransport, confirms_required
from dj_cqrs.transport.dead_letters import Report, retry_all
from dj_cqrs.transport.mixins import LoggingMixin, log_unroutable
from dj_cqrs.transport.publisher import Outgoing, Publisher, Unroutable, message_properties
from dj_cqrs.transport.rabbit_consumer import CONNECTION_ERRORS, RabbitConsumer, request_stop
from dj_cqrs.transport.retry import backoff, is_permanent
from dj_cqrs.transport.routing import routing_key_for

logger = logging.getLogger(LOGGER_NAME)

__all__ = ['RabbitMQTransport']


def _parameters() -> list[pika.ConnectionParameters]:
    return connection_parameters(get_settings(), blocked_connection_timeout=10)


_publisher = Publisher(_parameters, lambda: get_settings().exchange)
conf.on_reset(_publisher.close)


class RabbitMQTransport(LoggingMixin, BaseTransport):
    CONSUMER_RETRY_TIMEOUT = 5
    PRODUCER_RETRIES = 1  # the original's name; the count is CQRS['master']['CQRS_PUBLISH_RETRIES']
    consumer_class: type[RabbitConsumer] = RabbitConsumer

    supports_queue_stats = True
    supports_dead_letters = True

    @classmethod
    def broker_description(cls) -> str:
        return describe(get_settings())

    @classmethod
    def queue_stats(cls, queue: str) -> tuple[int | None, int | None]:
        """(messages ready, consumers) of ``queue``, through a short connection of its own."""
        from dj_cqrs.transport.probes import pika_queue_stats

        return pika_queue_stats(queue)

    @classmethod
    def produce(cls, payload: TransportPayload) -> bool:
        """Publish; raise PublishError if the broker cannot take it.

        With ``CQRS_PUBLISH_CONFIRMS = 'async'`` (the default) the message is handed to this
        process's publishing thread (:mod:`dj_cqrs.transport.async_publisher`), which collects
        the confirm; with ``'sync'``, or inside :func:`~dj_cqrs.transport.base.waiting_for_confirms`
        (the outbox relay and the transactional outbox), this call waits for it.
        """
        settings = get_settings()
        routing_key = routing_key_for(payload, settings.queue, settings.dead_letter_queue)
        # The outbox deletes its row once produce() returns (waiting_for_confirms): there,
        # wait for the confirm, so a message is never out of both the outbox and the broker.
        if settings.master.publish_confirms == 'async' and not confirms_required():
            from dj_cqrs.transport import async_publisher

            if async_publisher.submit(cls, payload, routing_key):
                return True  # confirmed (or kept in the outbox) by the background thread
        retries = settings.master.publish_retries
        started = time.monotonic()
        for attempt in range(retries + 1):
            try:
                _publisher.publish(Outgoing(routing_key, payload.encode()))
            except Unroutable:
                # No queue is bound to this key (no replica of it yet, or a sync to a queue
                # that does not exist): the broker has nowhere to keep it. Say so, loudly.
                log_unroutable(payload, routing_key)
                return False
            except CONNECTION_ERRORS as err:
                # A 403/406 refusal (no permission, exchange of another type, message too
                # large) is final: the outbox keeps the message, no retry here.
                if attempt < retries and not is_permanent(getattr(err, 'reply_code', None)):
                    logger.warning(
                        "CQRS couldn't be published: pk = %s (%s). Error: %s. Reconnect...",
                        payload.pk,
                        payload.cqrs_id,
                        type(err).__name__,
                    )
                    time.sleep(backoff(attempt))
                    continue
                raise cls._publish_failed(payload, err, settings) from err
            except (CQRSError, Exception) as err:
                raise cls._publish_failed(payload, err, settings) from err
            else:
                signals.message_published.send(
                    cls, payload=payload, duration=time.monotonic() - started
                )
                return True
        raise AssertionError('unreachable')  # pragma: no cover

    @staticmethod
    def check_connection_settings(settings: Any) -> None:
        """Raise ConfigurationError for a connection option that cannot be honoured (the
        system check ``dj_cqrs.E030``, and the publishers before they connect)."""
        connection_parameters(settings)

    @classmethod
    def _publish_failed(cls, payload: Any, err: BaseException, settings: Any) -> PublishError:
        error = PublishError(
            f"CQRS couldn't be published: pk = {payload.pk} ({payload.cqrs_id}) "
            f'to {describe(settings)}: {type(err).__name__}: {mask_url(str(err))}',
            payload,
        )
        error.__cause__ = err
        # No message_publish_failed here: the caller (the outbox, dj_cqrs.outbox.sending)
        # decides what happens to the message and announces the failure once, with ``kept``.
        return error

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

    # Dead letters (manage.py cqrs_dead_letters) -------------------------------------------------

    @classmethod
    @contextlib.contextmanager
    def _dead_letters(cls) -> Iterator[tuple[Any, Topology, int]]:
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
            yield channel, topology, dead
        except pika.exceptions.UnroutableError as err:
            # The message being retried stays in the dead-letter queue (never acked).
            raise TransportError(
                'A dead letter could not be republished: no queue is bound to its routing key '
                f'({", ".join(m.method.routing_key for m in err.messages)}). It stays queued.'
            ) from err
        except CONNECTION_ERRORS as err:
            raise TransportError(
                f'Dead letters on {describe(settings)} failed: '
                f'{type(err).__name__}: {mask_url(str(err))}'
            ) from err
        finally:
            with contextlib.suppress(Exception):
                connection.close()

    @classmethod
    def dead_letters_count(cls) -> int:
        with cls._dead_letters() as (_, _, count):
            return count

    @classmethod
    def dead_letters_dump(cls) -> list[bytes]:
        """Bodies in the dead-letter queue; they stay there (unacked, returned on close)."""
        bodies = []
        with cls._dead_letters() as (channel, topology, count):
            for _ in range(count):
                method, _, body = channel.basic_get(topology.dead_letter_queue, auto_ack=False)
                if method is None:
                    break
                bodies.append(body)
        return bodies

    @classmethod
    def dead_letters_retry(cls, report: Report | None = None) -> int:
        """Publish each dead letter back (``retries`` = 0, fresh ``expires``), then remove it."""
        with cls._dead_letters() as (channel, topology, count):
            channel.confirm_delivery()

            def taken() -> Iterator[tuple[int, bytes]]:
                for _ in range(count):
                    method, _, body = channel.basic_get(topology.dead_letter_queue, auto_ack=False)
                    if method is None:
                        return
                    yield method.delivery_tag, body

            def publish(payload: TransportPayload, body: bytes) -> None:
                key = routing_key_for(payload, topology.queue, topology.dead_letter_queue)
                channel.basic_publish(
                    topology.exchange, key, body, message_properties(), mandatory=True
                )

            def remove(tag: int) -> None:
                channel.basic_nack(tag, requeue=False)

            # A body that is not a message stays: unacked, it returns to the queue on close.
            return retry_all(taken(), count, publish, remove, cls, report, [])

    @classmethod
    def dead_letters_purge(cls) -> int:
        with cls._dead_letters() as (channel, topology, count):
            if count:
                channel.queue_purge(topology.dead_letter_queue)
            return count
