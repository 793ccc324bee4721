"""Dead-letter queue operations of ``KombuTransport`` (``manage.py cqrs_dead_letters``)."""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import kombu
from django.utils import timezone

from dj_cqrs import signals
from dj_cqrs.broker_urls import mask_url
from dj_cqrs.constants import DEFAULT_MASTER_MESSAGE_TTL, LOGGER_NAME
from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.exceptions import PayloadError, TransportError
from dj_cqrs.transport import kombu as kombu_transport

logger = logging.getLogger(LOGGER_NAME)


@contextmanager
def _dead_letters() -> Iterator[tuple[kombu.Connection, Any]]:
    """A connection and the declared (bound) dead-letter queue, as the original's command."""
    connection = kombu_transport.connect()
    try:
        try:
            connection.ensure_connection(
                max_retries=max(1, len(connection.alt)), interval_start=0, interval_step=0.5
            )
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
        yield connection, queue
    finally:
        connection.release()


def _count(queue: Any) -> int:
    return queue.queue_declare().message_count


def _body(message: Any) -> bytes:
    body = message.body
    return body.encode('utf-8') if isinstance(body, str) else body


def _take(queue: Any, limit: int) -> Iterator[Any]:
    """Up to ``limit`` messages, unacked (each is delivered once while we hold it)."""
    for _ in range(limit):
        message = queue.get(no_ack=False)
        if message is None:
            return
        yield message


def _put_back(messages: list[Any]) -> None:
    # In order: RabbitMQ puts them back where they were, the virtual transports (Redis,
    # memory, files) at the end, so either way the queue keeps its order.
    for message in messages:
        message.requeue()


def count() -> int:
    """How many messages wait in the dead-letter queue."""
    with _dead_letters() as (_, queue):
        return _count(queue)


def dump() -> list[bytes]:
    """The dead letters' bodies; the messages stay in the queue."""
    with _dead_letters() as (_, queue):
        messages = list(_take(queue, _count(queue)))
        bodies = [_body(message) for message in messages]
        _put_back(messages)
        return bodies


def retry_payload(body: bytes) -> TransportPayload:
    """The payload a dead letter is retried with: ``retries`` 0, a fresh ``expires`` if set."""
    old = TransportPayload.decode(body)
    expires = old.expires
    if expires:
        expires = timezone.now() + datetime.timedelta(seconds=DEFAULT_MASTER_MESSAGE_TTL)
    payload = TransportPayload(
        signal_type=old.signal_type,
        cqrs_id=old.cqrs_id,
        instance_data=old.instance_data,
        instance_pk=old.pk,
        previous_data=old.previous_data,
        correlation_id=old.correlation_id,
        expires=expires,
        retries=0,
        meta=old.meta,
    )
    payload.is_requeue = True
    return payload


def retry(report: Callable[[int, int, bytes], Any] | None = None) -> int:
    """Publish each dead letter to the service queue, then remove it from the dead letters.

    A body that is not a message is logged and left in the dead-letter queue.
    """
    retried = 0
    with _dead_letters() as (connection, queue):
        producer = kombu.Producer(connection.channel(), exchange=kombu_transport.exchange())
        total = _count(queue)
        unusable: list[Any] = []
        try:
            for index, message in enumerate(_take(queue, total), start=1):
                try:
                    payload = retry_payload(_body(message))
                except PayloadError as err:
                    logger.error("CQRS dead letter couldn't be parsed, kept: %s.", err)
                    unusable.append(message)
                    continue
                started = time.monotonic()
                kombu_transport.publish(producer, payload)
                signals.message_published.send(
                    kombu_transport.KombuTransport,
                    payload=payload,
                    duration=time.monotonic() - started,
                )
                message.ack()
                retried += 1
                if report is not None:
                    report(index, total, payload.encode())
        finally:
            _put_back(unusable)
    return retried


def purge() -> int:
    """Drop every dead letter; returns how many there were."""
    with _dead_letters() as (_, queue):
        total = _count(queue)
        if total:
            queue.purge()
        return total
