"""A queue's ready messages and consumers, through a short connection (``cqrs_status``)."""

from __future__ import annotations

import contextlib

from dj_cqrs.conf import get_settings
from dj_cqrs.transport.base import QueueNotDeclared

PROBE_TIMEOUT = 5.0
"""Seconds to wait for the broker before it counts as unreachable."""


def pika_queue_stats(queue: str) -> tuple[int, int]:
    """(messages, consumers) of ``queue`` on the RabbitMQ broker of ``settings.CQRS``."""
    import pika
    from pika.exceptions import ChannelClosedByBroker

    from dj_cqrs.transport import amqp

    parameters = amqp.connection_parameters(
        get_settings(),
        socket_timeout=PROBE_TIMEOUT,
        blocked_connection_timeout=PROBE_TIMEOUT,
        connection_attempts=1,
        stack_timeout=PROBE_TIMEOUT,
    )
    connection = pika.BlockingConnection(parameters)
    try:
        channel = connection.channel()
        try:
            ok = channel.queue_declare(queue, passive=True)
        except ChannelClosedByBroker as err:
            raise QueueNotDeclared(queue) from err
        return ok.method.message_count, ok.method.consumer_count
    finally:
        with contextlib.suppress(Exception):
            connection.close()


def kombu_queue_stats(queue: str) -> tuple[int, int | None]:
    """(messages, consumers) of ``queue`` on the Kombu broker (consumers: AMQP brokers only)."""
    from dj_cqrs.transport import kombu as kombu_transport

    connection = kombu_transport.connect()
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
        consumers = ok.consumer_count if kombu_transport.is_amqp(connection) else None
        return ok.message_count, consumers
    finally:
        with contextlib.suppress(Exception):
            connection.release()
