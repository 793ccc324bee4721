"""``BaseTransport``: the class-level API every transport implements (users subclass it), and
the dead-letter commands over a transport's dead-letter queue."""

from __future__ import annotations

import datetime
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, ClassVar

from django.utils import timezone

from dj_cqrs import signals
from dj_cqrs.constants import DEFAULT_MASTER_MESSAGE_TTL, LOGGER_NAME
from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.exceptions import PayloadError, TransportError, UnroutableError
from dj_cqrs.protocols import DeadLetterReport
from dj_cqrs.quoting import body_for_log
from dj_cqrs.threadlocal import local_value

logger = logging.getLogger(LOGGER_NAME)

_confirms = threading.local()


@contextmanager
def waiting_for_confirms() -> Iterator[None]:
    """In this block, ``produce`` returns only once the broker has confirmed the message (for
    the outbox, which deletes its copy when ``produce`` returns)."""
    with local_value(_confirms, 'required', True):
        yield


def confirms_required() -> bool:
    """Whether the current thread is inside :func:`waiting_for_confirms`."""
    return getattr(_confirms, 'required', False)


PROBE_TIMEOUT = 5.0
"""Seconds ``queue_stats`` waits for the broker before it counts as unreachable."""


class QueueNotDeclared(TransportError):
    """The queue asked about does not exist on the broker (yet)."""


class BaseTransport:
    """A transport publishes payloads and runs consumers, through class-level methods; the
    ``supports_*``/``applies_*`` flags declare what else it can do (defining ``queue_stats``,
    or ``dead_letters_count`` or ``_dead_letter_queue``, declares that capability)."""

    consumers: ClassVar[dict[str, Any]] = {}

    supports_queue_stats: ClassVar[bool] = False
    """``queue_stats()`` reads the broker's queues (``manage.py cqrs_status``)."""
    supports_dead_letters: ClassVar[bool] = False
    """The ``dead_letters_*`` methods work (``manage.py cqrs_dead_letters``, ``cqrs_status``)."""
    applies_in_process: ClassVar[bool] = False
    """``produce`` applies the message at once, in the caller's process and transaction."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if 'supports_queue_stats' not in vars(cls) and 'queue_stats' in vars(cls):
            cls.supports_queue_stats = True
        dead_letters = 'dead_letters_count' in vars(cls) or '_dead_letter_queue' in vars(cls)
        if 'supports_dead_letters' not in vars(cls) and dead_letters:
            cls.supports_dead_letters = True

    @classmethod
    def broker_description(cls) -> str:
        """Where this transport's broker is, for people (passwords masked)."""
        return cls.__name__

    @classmethod
    def queue_stats(cls, queue: str) -> tuple[int | None, int | None]:
        """(messages waiting, consumers) of one of this service's queues; None when unknown.
        Raises :class:`QueueNotDeclared` for a queue the broker does not have."""
        raise NotImplementedError(f'{cls.__name__} cannot read its queues.')

    @staticmethod
    def produce(payload: Any) -> Any:
        """Publish one payload (raise :class:`dj_cqrs.exceptions.PublishError` on failure)."""
        raise NotImplementedError

    @staticmethod
    def consume(*args: Any, **kwargs: Any) -> Any:
        """Consume messages for this service's replica models (may run forever)."""
        raise NotImplementedError

    @staticmethod
    def clean_connection(*args: Any, **kwargs: Any) -> None:
        """Close this process's broker connections."""
        raise NotImplementedError

    # Dead letters (``manage.py cqrs_dead_letters``): a transport defines the four methods, or
    # ``_dead_letter_queue()``, which opens the queue: an object with ``count()``,
    # ``take(limit)`` (unacked ``(message, body)`` pairs), ``put_back(messages)``,
    # ``publish(payload, body)`` (confirmed), ``remove(message)`` and ``purge()``.

    @classmethod
    def _dead_letter_queue(cls) -> AbstractContextManager[Any]:
        raise NotImplementedError(f'{cls.__name__} has no dead-letter queue.')

    @classmethod
    def dead_letters_count(cls) -> int:
        """How many messages wait in this service's dead-letter queue."""
        with cls._dead_letter_queue() as queue:
            return queue.count()

    @classmethod
    def dead_letters_dump(cls) -> list[bytes]:
        """The bodies waiting in the dead-letter queue (left in place)."""
        with cls._dead_letter_queue() as queue:
            taken = list(queue.take(queue.count()))
            queue.put_back([message for message, _ in taken])
            return [body for _, body in taken]

    @classmethod
    def dead_letters_retry(cls, report: DeadLetterReport | None = None) -> int:
        """Publish (confirmed) every dead letter back to this service's queue with ``retries``
        0 (:func:`retry_payload`), then remove it; ``report(index, total, body)`` after each.
        Returns how many. A body that is not a message is logged and stays."""
        with cls._dead_letter_queue() as queue:
            total = queue.count()
            kept: list[Any] = []
            retried = 0
            try:
                for index, (message, body) in enumerate(queue.take(total), start=1):
                    try:
                        payload = retry_payload(body)
                    except PayloadError as err:
                        logger.error(
                            "CQRS dead letter couldn't be parsed: %s. (%s) It stays.",
                            body_for_log(body),
                            err,
                        )
                        kept.append(message)
                        continue
                    new_body = payload.encode()
                    started = time.monotonic()
                    try:
                        queue.publish(payload, new_body)
                    except UnroutableError as err:
                        # The message being retried stays in the dead-letter queue (never acked).
                        raise TransportError(
                            'A dead letter could not be republished: no queue is bound to its '
                            f'routing key ({err}). It stays queued.'
                        ) from err
                    duration = time.monotonic() - started
                    signals.message_published.send(cls, payload=payload, duration=duration)
                    queue.remove(message)
                    retried += 1
                    if report is not None:
                        report(index, total, new_body)
                return retried
            finally:
                queue.put_back(kept)

    @classmethod
    def dead_letters_purge(cls) -> int:
        """Drop every dead letter; returns how many there were."""
        with cls._dead_letter_queue() as queue:
            total = queue.count()
            if total:
                queue.purge()
            return total


def retry_payload(body: bytes | str) -> TransportPayload:
    """The message a dead letter is retried with: ``retries`` 0, sent to this service's queue,
    and, if it had an ``expires``, a fresh one a day from now (as the original, whatever the
    settings say: the dead letter is retried by a replica, not by its master)."""
    payload = TransportPayload.decode(body)
    if payload.expires:
        payload._expires = timezone.now() + datetime.timedelta(seconds=DEFAULT_MASTER_MESSAGE_TTL)
    payload.retries = 0
    payload.is_requeue = True
    return payload
